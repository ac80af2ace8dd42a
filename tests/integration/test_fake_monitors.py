"""Squatters and fake monitors on a container's command socket name.

Any user can bind ``@LXCPATH/NAME/command`` while the container is stopped,
and answer there as its monitor.  The fakes here are a small Python server
(FAKE, below) run by the test - as a user id that no account has (setpriv),
or as root where the test says so - next to a `sleep` of the test's own, the
victim a fake hands back as "init".  Every fake and victim is ended by pid
at the end of its test, every cgroup the test made is removed.
"""

from __future__ import annotations

import os
import pwd
import random
import signal
import subprocess
import sys
import time

import pytest

from lxcsm.engine.linux import cgroups
from lxcsm.engine.protocol import command_client, command_socket
from lxcsm.engine.start import undo
from tests.integration.harness import LXCSM, cgroup_dirs, monitor_pids

pytestmark = pytest.mark.root

FAKE = r"""
import os, socket, struct, sys
name, mode, victim = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3])
HEADER = struct.Struct("<iiq")
GET_STATE, GET_INIT_PID, GET_CONFIG_ITEM, ADD_STATE_CLIENT, GET_INIT_PIDFD = 3, 4, 7, 10, 18
RUNNING, STOPPED, REGISTERED, EPERM, ENOSYS = 2, 0, 8, 1, 38
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(name)
if mode != "bind-only":
    sock.listen(8)
print("ready", flush=True)
if mode == "bind-only":
    os.read(0, 1)   # holds the name until killed
kept = []
while True:
    conn, _ = sock.accept()
    header = conn.recv(HEADER.size)
    if len(header) < HEADER.size:
        print("closed without asking", flush=True)
        conn.close()
        continue
    cmd, datalen, _ = HEADER.unpack(header)
    conn.recv(datalen) if datalen else b""
    print("asked", cmd, flush=True)
    data, fds = b"", []
    if mode == "eperm":
        ret, value = -EPERM, 0
    elif mode == "stopped":
        ret, value = (0, STOPPED) if cmd == GET_STATE else (-ENOSYS, 0)
    elif mode == "garbage":
        ret, value = 0, 77
    elif cmd == GET_STATE:
        ret, value = 0, RUNNING
    elif cmd == GET_INIT_PID:
        ret, value = 0, victim
    elif cmd == GET_INIT_PIDFD:
        ret, value, fds = 0, 0, [os.pidfd_open(victim)]
    elif cmd == GET_CONFIG_ITEM:
        ret, value, data = 0, 0, b"9\0"   # "the halt signal is SIGKILL"
    elif cmd == ADD_STATE_CLIENT:
        ret, value = REGISTERED, REGISTERED
    else:
        ret, value = -ENOSYS, 0
    socket.send_fds(conn, [HEADER.pack(ret, len(data), value) + data], fds)
    conn.close()
    if cmd == ADD_STATE_CLIENT:
        sys.exit(0)   # as a monitor does once its container has stopped
"""


@pytest.fixture
def stranger() -> int:
    """A user id no account has: an unprivileged user that needs no useradd (and no userdel)."""
    while True:
        uid = random.randrange(2_000_000, 3_000_000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


def _as(uid: int | None) -> list[str]:
    return [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


class Fakes:
    """The fake monitors and victims of one test."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def victim(self, *command: str) -> subprocess.Popen:
        process = subprocess.Popen(command or ["sleep", "600"], stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def fake(self, c, mode: str, uid: int | None, victim: int = 0) -> subprocess.Popen:
        name = command_socket.socket_name(c.lxcpath, c.name)
        process = subprocess.Popen([*_as(uid), sys.executable, "-c", FAKE, name.hex(), mode, str(victim)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
        self.processes.append(process)
        assert process.stdout.readline() == "ready\n"
        return process

    @staticmethod
    def heard(fake: subprocess.Popen) -> list[str]:
        """What the fake was asked, once it has been ended."""
        if fake.poll() is None:
            fake.kill()
        out = fake.communicate()[0]
        return [line for line in out.splitlines() if line != "ready"]

    def end(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate() if process.stdout else process.wait()


@pytest.fixture
def fakes(make_container):   # after make_container: ended before its leak check runs
    made = Fakes()
    yield made
    made.end()


def _lxcsm(c, *args: str, uid: int | None = None) -> subprocess.CompletedProcess:
    action, *rest = args
    return subprocess.run([*_as(uid), *LXCSM, action, "-n", c.name, "-P", c.lxcpath, *rest],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/")


def _held_by(c, fake: subprocess.Popen, uid: int) -> str:
    return f"@{c.lxcpath}/{c.name}/command is held by pid {fake.pid} (uid {uid})"


def _nothing_made(c) -> None:
    """What a start may leave, checked while the squatter still holds the name."""
    assert c.monitor_exited()   # a daemon's monitor reports its failure, then exits
    assert cgroup_dirs(c.name) == []
    assert not os.path.exists(undo.journal_path(str(c.config)))


# --- lxcsm stop and continue believe no fake --------------------------------------------------------


def test_a_fake_of_another_user_cannot_make_stop_kill(make_container, fakes, stranger):
    c = make_container()
    sleep = fakes.victim()
    fake = fakes.fake(c, "liar", stranger, victim=sleep.pid)
    for args in (["stop"], ["stop", "-k"], ["stop", "-t", "0"], ["continue"], ["continue", "--abort"]):
        refused = _lxcsm(c, *args)
        assert refused.returncode == 1, (args, refused.stderr)
        assert refused.stderr == (f"lxcsm: {_held_by(c, fake, stranger)}, not by an lxcsm or LXC monitor\n"), args
    assert sleep.poll() is None
    assert fakes.heard(fake) == ["closed without asking"] * 5   # not even asked: nothing to believe


def test_a_root_fake_handing_back_a_process_outside_the_container_is_refused(make_container, fakes):
    c = make_container()
    sleep = fakes.victim()
    fake = fakes.fake(c, "liar", None, victim=sleep.pid)
    refused = _lxcsm(c, "stop")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (f"lxcsm: {_held_by(c, fake, 0)}, which hands back pid {sleep.pid}, a process"
                              f" outside lxc.payload.{c.name} as init: not signalling it\n")
    assert sleep.poll() is None
    asked = fakes.heard(fake)
    assert f"asked {command_socket.Cmd.GET_INIT_PIDFD}" in asked
    assert f"asked {command_socket.Cmd.GET_CONFIG_ITEM}" not in asked   # the halt signal is never asked


@pytest.fixture
def payload_cgroup(make_container):
    """lxc.payload.NAME, made by the test in its own cgroup2 home; removed at the end."""
    made = []

    def make(name: str) -> str:
        unified = next((h for h in cgroups.hierarchies() if h.version == 2), None)
        if unified is None:
            pytest.skip("no cgroup2 hierarchy here")
        made.append(os.path.join(unified.home, f"lxc.payload.{name}"))
        os.mkdir(made[-1])
        return made[-1]

    yield make
    for path in made:
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:
                assert time.monotonic() < deadline, f"{path} stays busy"
                time.sleep(0.05)


def test_stop_halts_with_the_signal_of_its_own_config_not_the_one_it_is_told(make_container, fakes,
                                                                             payload_cgroup):
    c = make_container(extra=["lxc.signal.halt = SIGUSR1"])
    init = fakes.victim("/bin/sh", "-c", "trap 'exit 10' USR1; while :; do sleep 0.05; done")
    with open(os.path.join(payload_cgroup(c.name), "cgroup.procs"), "w") as procs:
        procs.write(str(init.pid))
    fake = fakes.fake(c, "liar", None, victim=init.pid)   # root, and says the halt signal is 9
    stopped = _lxcsm(c, "stop", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert init.wait(timeout=30) == 10                    # SIGUSR1 from the config: its trap ran
    assert f"asked {command_socket.Cmd.GET_CONFIG_ITEM}" not in fakes.heard(fake)


def test_non_root_stop_and_continue_are_told_permission_denied(make_container, stranger):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    try:
        monitor = monitor_pids(c.lxcpath, c.name)
        for args in (["stop"], ["stop", "-k"], ["continue"], ["continue", "--abort"]):
            refused = _lxcsm(c, *args, uid=stranger)
            assert refused.returncode == 1, (args, refused.stderr)
            assert refused.stderr == (f"lxcsm: permission denied: the monitor of {c.name} is pid {monitor[0]}"
                                      f" (uid 0) and refuses commands from uid {stranger} (run as root)\n"), args
        assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING
    finally:
        assert c.run("stop", "-k").returncode == 0


def test_cleanup_does_not_take_a_fake_for_a_running_container(make_container, fakes, stranger):
    c = make_container()
    fake = fakes.fake(c, "liar", stranger)
    refused = _lxcsm(c, "cleanup")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == f"lxcsm: {_held_by(c, fake, stranger)}, not by an lxcsm or LXC monitor\n"


# --- lxcsm start is not fooled into "already running" ----------------------------------------------


@pytest.mark.parametrize("mode", ["bind-only", "eperm", "stopped", "garbage", "liar"])
@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_a_squatter_of_another_user_fails_the_start_naming_it(make_container, fakes, stranger, mode, foreground):
    c = make_container()
    fake = fakes.fake(c, mode, stranger, victim=os.getpid())
    started = _lxcsm(c, "start", *(["-F"] if foreground else []), "--", "/bin/sleep", "600")
    assert started.returncode == 1, started.stderr
    assert "already running" not in started.stderr
    assert f"{_held_by(c, fake, stranger)}, not by an lxcsm or LXC monitor" in started.stderr
    _nothing_made(c)


def test_a_root_process_that_only_binds_the_name_fails_the_start(make_container, fakes):
    c = make_container()
    fake = fakes.fake(c, "bind-only", None)
    started = _lxcsm(c, "start", "--", "/bin/sleep", "600")
    assert started.returncode == 1, started.stderr
    assert f"{_held_by(c, fake, 0)}, which does not answer as a running monitor" in started.stderr
    _nothing_made(c)


def test_once_the_squatter_is_gone_the_container_starts(make_container, fakes, stranger):
    c = make_container()
    fake = fakes.fake(c, "bind-only", stranger)
    assert _lxcsm(c, "start", "--", "/bin/sleep", "600").returncode == 1
    fake.send_signal(signal.SIGKILL)
    fake.wait()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    assert c.run("stop", "-k").returncode == 0
