"""engine/protocol/command_client.py: what the client checks before it believes the other end.

Each fake monitor here is a socket of this test bound to a unique name, answering
one request from a thread with whatever the test says; it is closed at the end,
and no name stays bound.  Fakes of another user need root and live in
tests/integration/test_fake_monitors.py.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import subprocess
import threading
import uuid

import pytest

from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import HEADER, Cmd, LxcState, socket_name


@pytest.fixture
def lxcpath(tmp_path):
    return f"{tmp_path}/lxc-{uuid.uuid4().hex[:8]}"


class FakeMonitor:
    """Bound to LXCPATH/NAME's command name; answers each request with `answer(cmd) -> (ret, value, fds)`."""

    def __init__(self, lxcpath: str, name: str, answer, listen: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(socket_name(lxcpath, name))
        self.requests: list[int] = []
        self.thread = None
        if listen:
            self.sock.listen(8)
            self.thread = threading.Thread(target=self._serve, args=(answer,), daemon=True)
            self.thread.start()

    def _serve(self, answer) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return   # closed: the test is over
            with conn:
                header = conn.recv(HEADER.size)
                cmd = HEADER.unpack(header)[0]
                self.requests.append(cmd)
                ret, value, fds = answer(cmd)
                socket.send_fds(conn, [HEADER.pack(ret, 0, value)], fds)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR) if self.thread else None
        self.sock.close()
        if self.thread:
            self.thread.join(5)


@pytest.fixture
def fake(lxcpath):
    made: list[FakeMonitor] = []

    def make(answer=lambda cmd: (0, LxcState.RUNNING, []), name: str = "c1", listen: bool = True):
        made.append(FakeMonitor(lxcpath, name, answer, listen))
        return made[-1]

    yield make
    for monitor in made:
        monitor.close()
    with open("/proc/net/unix") as table:
        assert lxcpath not in table.read()


@pytest.fixture
def sleeper():
    """A process of this test's own: the victim a lying monitor would hand back."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


# --- who may be believed -------------------------------------------------------------------


def test_root_and_the_callers_own_user_are_trusted():
    assert command_client.trusted(0)
    assert command_client.trusted(os.geteuid())
    assert not command_client.trusted(os.geteuid() + 12345)


def test_not_a_monitor_names_the_socket_the_pid_and_the_uid():
    err = command_client.NotAMonitor("/var/lib/lxc", "web", 1234, 1000)
    assert str(err) == "@/var/lib/lxc/web/command is held by pid 1234 (uid 1000), not by an lxcsm or LXC monitor"
    assert (err.pid, err.uid) == (1234, 1000)
    hidden = command_client.NotAMonitor("/var/lib/lxc", "web", 0, 1000)
    assert "held by a process outside this pid namespace (uid 1000)" in str(hidden)


def test_refused_says_permission_denied_and_run_as_root():
    text = str(command_client.Refused("web", 77, 0))
    assert text.startswith("permission denied: the monitor of web is pid 77 (uid 0) and refuses commands")
    assert text.endswith(f"from uid {os.geteuid()} (run as root)")


# --- GET_STATE ------------------------------------------------------------------------------


def test_a_monitor_of_our_own_user_is_asked_its_state(lxcpath, fake):
    fake(lambda cmd: (0, LxcState.FROZEN, []))
    assert command_client.get_state(lxcpath, "c1") is LxcState.FROZEN


def test_eperm_is_refused_not_stopped(lxcpath, fake):
    fake(lambda cmd: (-errno.EPERM, 0, []))
    with pytest.raises(command_client.Refused, match=rf"pid {os.getpid()} \(uid {os.geteuid()}\)"):
        command_client.get_state(lxcpath, "c1")


@pytest.mark.parametrize("ret, value", [(0, 99), (0, -1), (-errno.EINVAL, 2)])
def test_an_answer_that_is_no_state_is_not_a_monitor(lxcpath, fake, ret, value):
    fake(lambda cmd: (ret, value, []))
    with pytest.raises(command_client.NotAMonitor, match=f"answers GET_STATE with {ret}/{value}, not a state"):
        command_client.get_state(lxcpath, "c1")


def test_a_name_bound_without_listening_reads_as_stopped(lxcpath, fake):
    fake(listen=False)
    assert command_client.get_state(lxcpath, "c1") is LxcState.STOPPED


# --- who holds a name a start could not bind ----------------------------------------------------


def test_holder_of_a_running_monitors_name_runs(lxcpath, fake):
    fake()
    assert command_client.holder(lxcpath, "c1") == (command_client.RUNS, "container is already running")


def test_holder_that_only_bound_the_name_is_found_through_proc(lxcpath, fake):
    fake(listen=False)
    verdict, who = command_client.holder(lxcpath, "c1")
    assert verdict == command_client.UNCLEAR    # our own user: maybe a monitor about to listen
    assert who == (f"@{lxcpath}/c1/command is held by pid {os.getpid()} (uid {os.geteuid()}),"
                   " which does not answer as a running monitor")


def test_holder_answering_stopped_is_unclear_and_named(lxcpath, fake):
    fake(lambda cmd: (0, LxcState.STOPPED, []))
    verdict, who = command_client.holder(lxcpath, "c1")
    assert verdict == command_client.UNCLEAR
    assert f"held by pid {os.getpid()}" in who


def test_holder_answering_nonsense_is_not_a_monitor(lxcpath, fake):
    fake(lambda cmd: (0, 1234, []))
    verdict, who = command_client.holder(lxcpath, "c1")
    assert verdict == command_client.NOT_A_MONITOR and "answers GET_STATE with 0/1234" in who


def test_bound_by_finds_the_bound_socket_not_a_connected_one(lxcpath, fake):
    monitor = fake(listen=False)
    name = socket_name(lxcpath, "c1")
    assert command_client._bound_by(name) == (os.getpid(), os.geteuid())
    assert command_client._bound_by(socket_name(lxcpath, "nobody")) is None
    monitor.close()
    assert command_client._bound_by(name) is None


# --- init's pidfd ----------------------------------------------------------------------------------


def test_pidfd_pid_of_a_live_an_exited_and_a_non_pidfd(sleeper):
    pidfd = os.pidfd_open(sleeper.pid)
    read_end, write_end = os.pipe()
    try:
        assert command_client.pidfd_pid(pidfd) == sleeper.pid
        assert command_client.pidfd_pid(read_end) is None
        sleeper.kill()
        sleeper.wait()
        assert command_client.pidfd_pid(pidfd) == command_client.EXITED
    finally:
        for fd in (pidfd, read_end, write_end):
            os.close(fd)


@pytest.mark.parametrize("text, inside", [
    ("0::/lxc.payload.web\n", True),
    ("12:memory:/user.slice/lxc.payload.web\n0::/user.slice/lxc.payload.web/init.scope\n", True),
    ("1:name=systemd:/lxc.payload.web\n0::/\n", True),
    ("0::/lxc.payload.web2\n", False),            # another container whose name starts alike
    ("0::/x-lxc.payload.web\n", False),
    ("0::/lxc.monitor.web\n", False),              # the monitor's cgroup is not init's
    ("0::/user.slice/session-1.scope\n", False),
])
def test_payload_cgroup_is_a_whole_path_component(text, inside):
    assert command_client.payload_cgroup_in(text, "web") is inside


def test_this_process_is_in_no_payload_cgroup():
    assert not command_client.in_payload_cgroup(os.getpid(), "web")
    assert not command_client.in_payload_cgroup(2 ** 22 + 1, "web")   # above pid_max: no such process


def test_init_pidfd_outside_the_payload_cgroup_is_refused_and_closed(lxcpath, fake, sleeper):
    victim = os.pidfd_open(sleeper.pid)
    try:
        fake(lambda cmd: (0, 0, [victim]) if cmd == Cmd.GET_INIT_PIDFD else (0, LxcState.RUNNING, []))
        with pytest.raises(command_client.NotAMonitor,
                           match=rf"hands back pid {sleeper.pid}, a process outside lxc.payload.c1"):
            command_client.init_pidfd(lxcpath, "c1")
        assert _pidfds_of(sleeper.pid) == [victim]   # the copy received is not kept
    finally:
        os.close(victim)
    assert sleeper.poll() is None


def _pidfds_of(pid: int) -> list[int]:
    return [int(fd) for fd in os.listdir("/proc/self/fd") if command_client.pidfd_pid(int(fd)) == pid]


def test_init_pidfd_that_is_no_pidfd_is_refused(lxcpath, fake):
    read_end, write_end = os.pipe()
    try:
        fake(lambda cmd: (0, 0, [read_end]))
        with pytest.raises(command_client.NotAMonitor, match="hands back not a pidfd as init"):
            command_client.init_pidfd(lxcpath, "c1")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_init_pidfd_of_an_exited_process_is_harmless_and_given(lxcpath, fake, sleeper):
    victim = os.pidfd_open(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    try:
        fake(lambda cmd: (0, 0, [victim]))
        pidfd = command_client.init_pidfd(lxcpath, "c1")
        assert command_client.pidfd_pid(pidfd) == command_client.EXITED
        os.close(pidfd)
    finally:
        os.close(victim)


def test_init_pidfd_without_a_pidfd_and_without_a_monitor(lxcpath, fake):
    assert command_client.init_pidfd(lxcpath, "c1") is None             # nobody there
    fake(lambda cmd: (-errno.EBADF, 0, []))
    assert command_client.init_pidfd(lxcpath, "c1") == -1               # init not spawned yet


def test_stop_refused_with_eperm_raises(lxcpath, fake):
    fake(lambda cmd: (-errno.EPERM, 0, []))
    with pytest.raises(command_client.Refused):
        command_client.stop(lxcpath, "c1")


def test_a_request_carries_our_credentials_even_to_a_monitor_that_asks_for_them_late(lxcpath):
    # lxc-start's monitor sets SO_PASSCRED on a connection after accepting it; a request already
    # queued by then carries the credentials its sender attached - none, unless sent explicitly,
    # and the kernel then reports the overflow ids, which LXC answers with -EPERM.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind(socket_name(lxcpath, "late"))
    sock.listen(1)
    seen: dict[str, tuple[int, int, int]] = {}

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            select.select([conn], [], [], 10)   # the request is queued before SO_PASSCRED
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            _data, ancillary, _flags, _addr = conn.recvmsg(HEADER.size, socket.CMSG_SPACE(12))
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                    seen["credentials"] = struct.unpack("iII", payload)
            conn.sendall(HEADER.pack(0, 0, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        reply = command_client.call(lxcpath, "late", Cmd.GET_STATE)
        thread.join(10)
    finally:
        sock.close()
    assert reply is not None and reply.ret == 0
    assert seen["credentials"] == (os.getpid(), os.getuid(), os.getgid())
