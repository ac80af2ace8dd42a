"""The command socket against local users: abstract sockets have no permission bits,
so anyone on the host can connect to a container's monitor.

An unprivileged user holding a thousand silent connections must not slow root's
lxc-info or keep the monitor from stopping the container; and such a user has
every command refused (-EPERM), as LXC's monitor refuses them.  Each test makes
its own user (useradd) and removes it afterwards, with every process it ran.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from lxcsm.engine.protocol.command_socket import Cmd, LxcState

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("lxc-info") is None, reason="Debian's lxc is not installed"),
              pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd")]

# Opens `count` connections to the monitor and says nothing on any of them.  "hold": then
# just keeps what the monitor left open; "churn": opens a new one for each the monitor
# closes, for as long as it runs - the harder flood, fighting root for the listen backlog.
FLOOD = r"""
import json, resource, select, signal, socket, sys
address, count, mode = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
running = True
def stop(*_):
    global running
    running = False
signal.signal(signal.SIGTERM, stop)
held, poller = {}, select.poll()
connects = closed = 0
while running:
    while len(held) < count and (mode == "churn" or connects < count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.connect(address)
        except OSError:               # EAGAIN: the listen backlog is full (ECONNREFUSED: stopped)
            sock.close()
            break
        held[sock.fileno()] = sock
        poller.register(sock, select.POLLIN)
        connects += 1
        if connects == count:
            print("flooding", flush=True)
    for fd, _events in poller.poll(10):
        poller.unregister(fd)
        held.pop(fd).close()         # the monitor closed it
        closed += 1
print(json.dumps({"connects": connects, "closed_by_monitor": closed, "held_at_end": len(held)}), flush=True)
"""

# Sends each command on its own connection; prints {cmd: [ret, inline value, fds received]}.
COMMANDS = r"""
import json, socket, struct, sys
address = bytes.fromhex(sys.argv[1])
answers = {}
for cmd, payload in json.loads(sys.argv[2]):
    payload = bytes.fromhex(payload)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(address)
        sock.sendall(struct.pack("<iiq", cmd, len(payload), 0) + payload)
        header, fds, _flags, _addr = socket.recv_fds(sock, 16, 20)
        for fd in fds:
            socket.close(fd)
        ret, _datalen, value = struct.unpack("<iiq", header) if len(header) == 16 else (None, 0, 0)
        answers[cmd] = [ret, value, len(fds)]
print(json.dumps(answers))
"""


class User:
    def __init__(self, name: str) -> None:
        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        self.processes: list[subprocess.Popen] = []

    def popen(self, *command: str, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(command, user=self.uid, group=self.gid, extra_groups=[], cwd="/",
                                   stdin=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def run(self, *command: str) -> subprocess.CompletedProcess:
        process = self.popen(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = process.communicate(timeout=60)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture
def unprivileged_user():
    name = f"lxcsm-u{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    user = None
    try:
        user = User(name)
        yield user
    finally:
        for process in user.processes if user else ():
            if process.poll() is None:
                process.kill()
            process.wait()
        subprocess.run(["userdel", name], check=True, capture_output=True)


def _python() -> str:
    """An interpreter any user may run (the checkout's venv may not be readable to them)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def _address(c) -> str:
    return command_socket.socket_name(c.lxcpath, c.name).hex()


def _lxc_info(c) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    result = subprocess.run(["lxc-info", "-n", c.name, "-P", c.lxcpath], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - began


def _latencies(c, times: int) -> list[float]:
    taken = []
    for _ in range(times):
        result, seconds = _lxc_info(c)
        assert result.returncode == 0 and "RUNNING" in result.stdout, result.stdout + result.stderr
        taken.append(seconds)
    return taken


def _report(record_property, label: str, taken: list[float]) -> None:
    summary = f"median {statistics.median(taken) * 1000:.1f} ms, max {max(taken) * 1000:.1f} ms ({len(taken)} runs)"
    record_property(label, summary)
    print(f"\nlxc-info {label}: {summary}")


@pytest.mark.parametrize("mode", ["hold", "churn"])
def test_a_silent_flood_neither_slows_lxc_info_nor_stops_the_stop(make_container, unprivileged_user,
                                                                    record_property, mode):
    c = make_container(extra=["lxc.signal.halt = SIGUSR1"])
    # sh as init: it halts on SIGUSR1 (after its current sleep), the way `lxcsm stop` asks.
    assert c.run("start", "--", "/bin/sh", "-c", "trap 'exit 0' USR1; while :; do sleep 1; done").returncode == 0
    _report(record_property, "alone", _latencies(c, 10))

    flood = unprivileged_user.popen(_python(), "-I", "-c", FLOOD, _address(c), "1000", mode,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert flood.stdout.readline() == "flooding\n", flood.stderr.read() if flood.poll() is not None else ""
    _report(record_property, f"during a flood of 1000 silent connections ({mode})", _latencies(c, 20))

    stopped = c.run("stop", "-t", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert command_client.get_state(c.lxcpath, c.name) == LxcState.STOPPED
    assert c.monitor_exited()

    flood.send_signal(signal.SIGTERM)
    stdout, stderr = flood.communicate(timeout=30)
    counts = json.loads(stdout.splitlines()[-1])
    print(f"flood: {counts}")
    assert counts["connects"] >= 1000, stderr       # the monitor did see the whole flood


def _ask(c, commands: list[tuple[int, bytes]], user: User | None = None) -> dict[int, list]:
    command = [_python(), "-I", "-c", COMMANDS, _address(c), json.dumps([[n, p.hex()] for n, p in commands])]
    result = user.run(*command) if user else subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {int(cmd): answer for cmd, answer in json.loads(result.stdout).items()}


QUERIES = [
    (Cmd.GET_INIT_PID, b""), (Cmd.GET_STATE, b""), (Cmd.GET_INIT_PIDFD, b""), (Cmd.GET_CLONE_FLAGS, b""),
    (Cmd.GET_CONFIG_ITEM, b"lxc.uts.name\0"), (Cmd.ADD_STATE_CLIENT, bytes(8) + b"\1\0\0\0" + bytes(20)),
    (Cmd.GET_CGROUP_CTX, bytes(command_socket.CGROUP_CTX.size)),
    (Cmd.GET_LIMIT_CGROUP_FD, command_socket.CGROUP_FD.pack(0, 0, 0, -9, b"memory")),
]
# What changes something: the console (tty 0), a paused start, the container's life.
CHANGES = [(Cmd.GET_TTY_FD, b""), (Cmd.CONTINUE, b""), (Cmd.STOP, b"")]


def test_an_unprivileged_peer_is_refused_every_command_root_is_answered(make_container, unprivileged_user):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    init = command_client.call(c.lxcpath, c.name, Cmd.GET_INIT_PID).value

    refused = _ask(c, QUERIES + CHANGES, unprivileged_user)
    assert refused == {cmd: [-errno.EPERM, 0, 0] for cmd, _payload in QUERIES + CHANGES}
    assert command_client.get_state(c.lxcpath, c.name) == LxcState.RUNNING     # STOP did nothing
    tool = unprivileged_user.run("lxc-info", "-n", c.name, "-P", c.lxcpath)
    assert tool.returncode != 0 and "RUNNING" not in tool.stdout, tool.stdout + tool.stderr

    answered = _ask(c, QUERIES)
    assert answered[Cmd.GET_INIT_PID] == [0, init, 0]
    assert answered[Cmd.GET_STATE] == [0, LxcState.RUNNING, 0]
    assert answered[Cmd.GET_INIT_PIDFD] == [0, 0, 1]
    assert answered[Cmd.GET_CLONE_FLAGS][0] == 0 and answered[Cmd.GET_CLONE_FLAGS][1] != 0
    assert answered[Cmd.GET_CONFIG_ITEM] == [0, 0, 0]
    assert answered[Cmd.ADD_STATE_CLIENT] == [LxcState.RUNNING, LxcState.RUNNING, 0]   # already RUNNING
    assert answered[Cmd.GET_CGROUP_CTX][0] == 0 and answered[Cmd.GET_CGROUP_CTX][2] >= 1
    assert answered[Cmd.GET_LIMIT_CGROUP_FD] == [0, 0, 1]
    assert c.run("stop", "-k").returncode == 0


def _closed_by_the_monitor(sock: socket.socket, timeout: float = 20) -> bool:
    """Wait for end-of-file on a connection we never send anything on."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused-at-a-breakpoint"])
def test_a_silent_connection_is_closed_on_its_deadline_with_nothing_else_happening(make_container, paused):
    c = make_container()
    options = ("--break-at", "monitor:sync_post_configure") if paused else ()
    started = c.run("start", *options, "--", "/bin/sleep", "600")
    assert started.returncode == 0, started.stderr
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(command_socket.socket_name(c.lxcpath, c.name))
        assert _closed_by_the_monitor(silent)
    assert c.run("continue", "--abort").returncode == 0 if paused else c.run("stop", "-k").returncode == 0
