"""The monitor after the start: poll, reboot, stopping, aborting, stopped - each alone.

poll waits on real pipes standing in for init's pidfd, the signalfd and the console (or a
real pty as the console, with lxc-console -t 0 attaching through the command server's
console_peers while poll runs); os.waitpid and pidfd_send_signal are fakes, so init's end
is whatever the test says.
The undo logs are real and unwind for real, on changes made under tmp_path.
"""

from __future__ import annotations

import array
import errno
import os
import signal
import socket
import threading
import tty
from pathlib import Path
from types import SimpleNamespace

import pytest

from lxcsm.engine.linux.seccomp import Listener
from lxcsm.engine.linux.terminal import RingBuffer
from lxcsm.engine.protocol import seccomp_notify
from lxcsm.engine.protocol.command_socket import LxcState
from lxcsm.engine.start import undo as undo_module
from lxcsm.engine.start.context import Failure
from lxcsm.engine.start.machine import MONITOR
from lxcsm.engine.start.undo import Change
from lxcsm.states.monitor import poll, stopped
from tests.unit.states.conftest import is_open
from tests.unit.states.fake_host import FakeChannel
from tests.unit.states.fake_kernel import PASS

# --- poll ------------------------------------------------------------------------------


@pytest.fixture
def running(host, make_request, monitor_ctx):
    """.ctx: a MonitorContext of a running container: init 4242 whose "pidfd" is a pipe (readable
    once init has exited: .init_exits()), its signalfd a pipe too (.signal_sent())."""
    ctx = monitor_ctx(make_request())
    pidfd, init_exits = host.pipe()
    signal_fd, signal_sent = host.pipe()
    ctx.boot.init_pid, ctx.boot.init_pidfd = 4242, pidfd
    ctx.signal_fd = signal_fd
    return SimpleNamespace(ctx=ctx, init_exits=lambda: os.write(init_exits, b"x"),
                           signal_sent=lambda: os.write(signal_sent, b"s"))


def wait_status(signo: int = 0, exit_code: int = 0) -> int:
    """An os.waitpid status: killed by `signo`, or exited with `exit_code`."""
    return signo if signo else exit_code << 8


@pytest.fixture
def reap(host):
    """poll's os.waitpid, answering init's status (`reap.status`)."""
    status = {"status": wait_status(exit_code=0)}
    host.proxy(poll, "os", waitpid=lambda pid, options: (pid, status["status"]), write=PASS)
    return status


@pytest.mark.state("monitor", "poll")
@pytest.mark.parametrize("status,trigger", [
    (wait_status(exit_code=3), "init_exited"),
    (wait_status(exit_code=0), "init_exited"),
    (wait_status(signo=signal.SIGHUP), "init_rebooted"),   # reboot(2) in a pid namespace
    (wait_status(signo=signal.SIGINT), "init_halted"),     # halt / power-off
    (wait_status(signo=signal.SIGKILL), "init_exited"),
], ids=["exit-3", "exit-0", "sighup-reboot", "sigint-halt", "sigkill"])
def test_poll_reaps_init_when_its_pidfd_is_readable_and_says_how_it_ended(host, run, running, reap, status, trigger):
    reap["status"] = status
    running.init_exits()

    assert run("monitor", "poll", running.ctx) == trigger

    assert host.calls() == [("os.waitpid", 4242, 0)]
    assert running.ctx.boot.init_status == status


@pytest.mark.state("monitor", "poll")
def test_poll_forwards_a_signal_from_the_signalfd_to_init(host, run, running, reap):
    host.on("kernel.read_signalfd", effect=lambda fd: (os.read(fd, 1), (signal.SIGTERM, 99))[1])
    host.proxy(poll, "signal", pidfd_send_signal=lambda pidfd, signo: running.init_exits())   # init dies of it
    reap["status"] = wait_status(signo=signal.SIGTERM)
    running.signal_sent()

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert host.calls() == [("kernel.read_signalfd", running.ctx.signal_fd),
                            ("signal.pidfd_send_signal", running.ctx.boot.init_pidfd, signal.SIGTERM),
                            ("os.waitpid", 4242, 0)]


@pytest.mark.state("monitor", "poll")
def test_poll_keeps_sigchld_to_itself(host, run, running, reap):
    def sigchld(fd):
        os.read(fd, 1)
        running.init_exits()
        return signal.SIGCHLD, 1
    host.on("kernel.read_signalfd", effect=sigchld)
    host.proxy(poll, "signal", pidfd_send_signal=None)
    running.signal_sent()

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert host.names() == ["kernel.read_signalfd", "os.waitpid"]


@pytest.mark.state("monitor", "poll")
def test_poll_ignores_a_signal_init_is_already_gone_for(host, run, running, reap):
    def gone(pidfd, signo):
        running.init_exits()
        raise ProcessLookupError
    host.on("kernel.read_signalfd", effect=lambda fd: (os.read(fd, 1), (signal.SIGUSR1, 99))[1])
    host.proxy(poll, "signal", pidfd_send_signal=gone)
    running.signal_sent()

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert host.names() == ["kernel.read_signalfd", "signal.pidfd_send_signal", "os.waitpid"]


@pytest.mark.state("monitor", "poll")
def test_poll_answers_the_command_socket_while_init_runs(host, run, running, reap):
    server = running.ctx.command_server

    def serve_ready():
        server.sock.recv(1)
        running.init_exits()
    server.serve_ready = host.rec.fake("command_server.serve_ready", serve_ready)
    host.command_client.send(b"?")

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert host.names() == ["command_server.serve_ready", "os.waitpid"]


@pytest.mark.state("monitor", "poll")
def test_poll_traces_each_command_it_serves(host, run, running, reap):
    server = running.ctx.command_server

    def serve_ready():
        server.sock.recv(1)
        server.on_request(3, 0)   # as the real server does, before it answers GET_STATE
        running.init_exits()
    server.serve_ready = host.rec.fake("command_server.serve_ready", serve_ready)
    host.command_client.send(b"?")

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert running.ctx.log.named("command served") == [("trace", {"command": "GET_STATE", "uid": 0})]


@pytest.mark.state("monitor", "poll")
def test_poll_records_the_limits_init_hit_before_its_cgroup_goes(host, run, running, reap, tmp_path):
    pids, memory, quiet = tmp_path / "pids", tmp_path / "memory", tmp_path / "cpu"
    for cgroup in (pids, memory, quiet):
        cgroup.mkdir()
    (pids / "pids.events").write_text("max 7\n")
    (memory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (quiet / "pids.events").write_text("max 0\n")                 # a limit not hit says nothing
    running.ctx.boot.payload_cgroups = [str(pids), str(memory), str(quiet)]
    running.init_exits()

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert running.ctx.log.named("cgroup limit hit") == [
        ("info", {"file": str(pids / "pids.events"), "max": 7}),
        ("info", {"file": str(memory / "memory.events"), "max": 3, "oom": 1, "oom_kill": 1})]


@pytest.mark.state("monitor", "poll")
def test_poll_drains_the_console_into_the_console_log(host, run, running, reap, tmp_path):
    console, container_writes = host.pipe()
    running.ctx.command_server.ttys = {0: console}
    log_file = tmp_path / "console.log"
    running.ctx.console_log = host.keep(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC))
    real_write = os.write
    host.on("os.write", effect=lambda fd, data: (real_write(fd, data), running.init_exits())[0])
    os.write(container_writes, b"Welcome to the container\n")

    assert run("monitor", "poll", running.ctx) == "init_exited"

    assert host.calls() == [("os.write", running.ctx.console_log, b"Welcome to the container\n"),
                            ("os.waitpid", 4242, 0)]
    assert log_file.read_bytes() == b"Welcome to the container\n"


@pytest.mark.state("monitor", "poll")
def test_poll_that_cannot_reap_init_fails(host, run, running):
    host.proxy(poll, "os", waitpid=None)
    host.on("os.waitpid", raises=ChildProcessError(10, "No child processes"))
    running.init_exits()

    run.failing("monitor", "poll", running.ctx, ChildProcessError)

    assert running.ctx.boot.init_status is None


@pytest.fixture
def console_pty(host, running):
    """A pty as the console: its master in the command server's ttys; returned, its other end
    (the container's), raw."""
    master, container = os.openpty()
    host.keep(master)
    host.keep(container)
    tty.setraw(container)
    running.ctx.command_server.ttys = {0: master}
    return container


@pytest.mark.state("monitor", "poll")
def test_poll_relays_the_console_to_lxc_console_0_and_logs_and_keeps_its_output_meanwhile(
        host, run, running, reap, console_pty, tmp_path):
    ctx, server = running.ctx, running.ctx.command_server
    server.console_buffer = RingBuffer(4096)
    log_file = tmp_path / "console.log"
    ctx.console_log = host.keep(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC))
    client: dict = {}

    def attach(signalfd: int):
        os.read(signalfd, 1)
        assert server.console_peers.attach() >= 0
        assert server.console_peers.attach() == -1                  # one peer at a time
        client["fd"] = host.keep(os.dup(server.console_peers.peer.master))   # what the client gets
        os.write(client["fd"], b"ls\r")
        os.write(console_pty, b"bin  etc\n")
        return signal.SIGCHLD, 1
    host.on("kernel.read_signalfd", effect=attach)
    logged = []

    def log_write(fd: int, data: bytes) -> int:   # the log's content is replaced at the end (no size: by nothing)
        logged.append((fd, data))
        running.init_exits()
        return len(data)
    host.on("os.write", effect=log_write)
    running.signal_sent()

    assert run("monitor", "poll", ctx) == "init_exited"

    assert logged == [(ctx.console_log, b"bin  etc\n")]             # logged while a client is attached
    assert server.console_buffer.data == b"bin  etc\n"              # and kept for CONSOLE_LOG
    assert os.read(console_pty, 100) == b"ls\r"                          # what the client typed, unchanged
    assert os.read(client["fd"], 100) == b"bin  etc\r\n"            # the output, to the client
    assert server.console_peers is None                             # no lxc-console -t 0 after poll


@pytest.mark.state("monitor", "poll")
def test_poll_under_a_terminal_relay_refuses_lxc_console_0(host, run, running, reap, console_pty):
    ctx, server = running.ctx, running.ctx.command_server
    terminal, user = os.openpty()
    host.keep(terminal)
    ctx.console_peer = host.keep(user)                              # lxc-start -F's terminal
    answers = []

    def attach(signalfd: int):
        os.read(signalfd, 1)
        answers.append(server.console_peers.attach())
        running.init_exits()
        return signal.SIGCHLD, 1
    host.on("kernel.read_signalfd", effect=attach)
    running.signal_sent()

    assert run("monitor", "poll", ctx) == "init_exited"

    assert answers == [-1]


@pytest.fixture
def notified(host, make_request, monitor_ctx, monkeypatch, tmp_path):
    """.ctx: a running container (init 4242) whose policy has notify rules, with
    lxc.seccomp.notify.proxy on `.path`; its listener a pipe: .notify() queues a notification
    (of this test's own process, whose /proc files the relay opens) that the fake
    Listener.receive() then reads; Listener.respond() records into .answers and ends init."""
    path = str(tmp_path / "proxy.sock")
    ctx = monitor_ctx(make_request(f"lxc.seccomp.notify.proxy = unix:{path}",
                                   "lxc.seccomp.notify.cookie = sesame"))
    pidfd, init_exits = host.pipe()
    ctx.boot.init_pid, ctx.boot.init_pidfd = 4242, pidfd
    ctx.signal_fd, _ = host.pipe()
    listener, queue = host.pipe()
    ctx.seccomp = SimpleNamespace(listener=listener)
    host.on("kernel.seccomp_notif_sizes", (80, 24, 64))
    answers: list[bytes] = []

    def receive(self) -> bytes:
        os.read(self.fd, 1)
        return seccomp_notify.NOTIFICATION.pack(7, os.getpid(), 0, 133, 0xC000003E).ljust(80, b"\0")

    def respond(self, response: bytes) -> None:
        answers.append(response)
        os.write(init_exits, b"x")

    monkeypatch.setattr(Listener, "receive", receive)
    monkeypatch.setattr(Listener, "respond", respond)
    monkeypatch.setattr(Listener, "id_valid", lambda self, request_id: request_id == 7)
    return SimpleNamespace(ctx=ctx, path=path, listener=listener, notify=lambda: os.write(queue, b"n"),
                           answers=answers)


def _proxy(path: str, seen: list) -> threading.Thread:
    """A proxy on `path` that answers one message with EPERM (recording it into `seen`)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        with server, server.accept()[0] as conn:
            message, ancillary, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(12))
            fds = array.array("i", ancillary[0][2])
            seen.append((message, len(fds)))
            for fd in fds:
                os.close(fd)
            header = seccomp_notify.HEADER.size
            conn.send(message[:header + 80] + seccomp_notify.RESPONSE.pack(7, 0, -errno.EPERM, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.state("monitor", "poll")
def test_poll_relays_a_seccomp_notification_to_the_proxy_and_answers_with_its_reply(host, run, notified, reap):
    seen: list = []
    proxy = _proxy(notified.path, seen)
    notified.notify()

    assert run("monitor", "poll", notified.ctx) == "init_exited"
    proxy.join(timeout=10)

    [(message, fd_count)] = seen
    assert seccomp_notify.HEADER.unpack_from(message) == (0, os.getpid(), 4242, 80, 24, 64, len("sesame"))
    assert message.endswith(b"sesame") and fd_count == 3   # /proc/PID, /proc/PID/mem, the listener
    assert notified.answers == [seccomp_notify.RESPONSE.pack(7, 0, -errno.EPERM, 0)]
    assert [fields["error"] for _level, fields in notified.ctx.log.named("seccomp notification answered")] == \
        [-errno.EPERM]
    [(_level, fields)] = notified.ctx.log.named("seccomp proxy connected")
    assert fields["listener"] == notified.listener


@pytest.mark.state("monitor", "poll")
def test_poll_whose_seccomp_proxy_is_not_there_fails(host, run, notified, reap):
    info = run.failing("monitor", "poll", notified.ctx, OSError)

    assert info.value.errno == errno.ENOENT and f"unix:{notified.path}" in str(info.value)
    assert notified.answers == []


@pytest.mark.state("monitor", "poll")
def test_poll_that_cannot_relay_the_console_closes_the_seccomp_proxys_connection(host, run, notified, reap,
                                                                                  monkeypatch):
    proxy = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proxy.bind(notified.path)
    proxy.listen(1)
    notified.ctx.command_server.ttys = {0: host.pipe()[0]}

    def no_relay(*_args):
        raise OSError(errno.EIO, "the console's terminal went away")
    monkeypatch.setattr(poll, "ConsolePeers", no_relay)

    run.failing("monitor", "poll", notified.ctx, OSError)

    with proxy, proxy.accept()[0] as relay:
        relay.settimeout(10)
        assert relay.recv(4096) == b""   # end-of-file: the monitor closed its connection


# --- reboot, stopping, aborting, stopped -----------------------------------------------


@pytest.fixture
def booted(host, make_request, monitor_ctx):
    """booted(*CONFIG_LINES) -> .ctx: a MonitorContext whose boot recorded a payload cgroup (the
    directory .payload) and a kept fd (.kept), and whose monitor recorded its command socket."""
    def make(*lines: str, **fields):
        ctx = monitor_ctx(make_request(*lines, **fields))
        payload = Path(ctx.hierarchies[0].home, "lxc.payload.c1")
        payload.mkdir()
        kept, _ = host.pipe()
        ctx.boot.undo.record("cgroup", payload)
        ctx.boot.undo.record("kept_fd", kept)
        ctx.undo.record("command_socket", "c1", handle=ctx.command_server)
        return SimpleNamespace(ctx=ctx, payload=payload, kept=kept)
    return make


@pytest.mark.state("monitor", "reboot")
def test_reboot_undoes_the_boot_between_its_hooks_and_keeps_the_command_socket(host, run, booted):
    scene = booted()
    ctx = scene.ctx

    assert run("monitor", "reboot", ctx) == "boot_cleaned_up"

    assert host.calls() == [("hooks.run_stop", "reboot"), ("cgroups.remove", str(scene.payload)),
                            ("hooks.run_post_stop", "reboot")]
    assert not scene.payload.exists() and not is_open(scene.kept)
    assert ctx.boot.undo.changes == []
    assert ctx.undo.changes == [Change("command_socket", "c1")]   # the monitor's: it stays
    assert ctx.command_server.sock.fileno() != -1
    [(level, fields)] = ctx.log.named("container requested reboot")
    assert (level, fields["boot"]) == ("notice", 1)


def told_lxc_monitor(server) -> list:
    """What the command server announces to lxc-monitor, recorded instead of written to its FIFO:
    ("state", STATE, command socket open?) and ("exit", WAIT_STATUS)."""
    told: list = []
    server.announce = lambda state: told.append(("state", state, server.sock.fileno() != -1))
    server.announce_exit = lambda status: told.append(("exit", status))
    return told


@pytest.mark.state("monitor", "reboot")
def test_reboot_is_stopping_for_the_stop_hooks_and_stopped_for_the_post_stop_hooks_as_lxc_end(host, run, booted):
    ctx = booted().ctx
    ctx.boot.init_status = signal.SIGHUP   # the wait status of an init killed by SIGHUP
    told = told_lxc_monitor(ctx.command_server)
    seen = []
    for hook in ("hooks.run_stop", "hooks.run_post_stop"):
        host.on(hook, effect=lambda target: seen.append(ctx.command_server.state))

    assert run("monitor", "reboot", ctx) == "boot_cleaned_up"

    assert seen == [LxcState.STOPPING, LxcState.STOPPED]
    assert told == [("exit", signal.SIGHUP), ("state", LxcState.STOPPING, True), ("state", LxcState.STOPPED, True)]


@pytest.mark.state("monitor", "stopping")
def test_stopping_says_stopping_then_undoes_the_boot_between_its_hooks(host, run, booted):
    scene = booted()
    ctx = scene.ctx
    ctx.boot.init_status = 3 << 8   # exit(3)
    told = told_lxc_monitor(ctx.command_server)
    seen = []
    host.on("hooks.run_stop", effect=lambda target: seen.append(ctx.command_server.state))

    assert run("monitor", "stopping", ctx) == "cleaned_up"

    assert host.calls() == [("hooks.run_stop", "stop"), ("cgroups.remove", str(scene.payload)),
                            ("hooks.run_post_stop", "stop")]
    assert seen == [LxcState.STOPPING]
    assert told == [("exit", 3 << 8), ("state", LxcState.STOPPING, True)]   # init's end first, as LXC
    assert not scene.payload.exists() and not is_open(scene.kept) and ctx.boot.undo.changes == []
    assert ctx.undo.changes == [Change("command_socket", "c1")]   # stopped's to close


@pytest.mark.state("monitor", "aborting")
def test_aborting_logs_the_failure_kills_the_child_through_its_pidfd_and_undoes_everything(host, run, booted):
    scene = booted()
    ctx = scene.ctx
    ctx.failure = Failure("setup_mounts", "child", "mount: Operation not permitted (EPERM)")
    channel = ctx.boot.channel = FakeChannel(host.rec)
    pidfd, _ = host.pipe()
    ctx.boot.undo.record("child", 4242, handle=pidfd)
    host.proxy(undo_module, "signal", pidfd_send_signal=None)
    host.proxy(undo_module, "os", waitpid=lambda pid, options: (pid, signal.SIGKILL), close=PASS)

    assert run("monitor", "aborting", ctx) == "cleaned_up"

    assert host.calls() == [
        ("channel.close",),
        ("hooks.run_stop", "stop"),
        ("signal.pidfd_send_signal", pidfd, signal.SIGKILL), ("os.waitpid", 4242, 0), ("os.close", pidfd),
        ("os.close", scene.kept),
        ("cgroups.remove", str(scene.payload)),
        ("hooks.run_post_stop", "stop"),
    ]
    assert channel.closed and ctx.command_server.state is LxcState.ABORTING
    assert not scene.payload.exists() and ctx.boot.undo.changes == []
    [(level, fields)] = ctx.log.named("start failed")
    assert (level, fields) == ("error", {"failed_state": "setup_mounts", "failed_side": "child",
                                         "error": "mount: Operation not permitted (EPERM)"})


@pytest.mark.state("monitor", "aborting")
def test_aborting_a_start_refused_as_already_running_runs_no_hooks(host, run, make_request, monitor_ctx):
    ctx = monitor_ctx(make_request(), fresh=True)   # init_handler failed to bind: nothing exists
    ctx.failure = Failure("init_handler", "monitor", "container is already running", already_running=True)

    assert run("monitor", "aborting", ctx) == "cleaned_up"

    assert host.calls() == []
    assert [level for level, _fields in ctx.log.named("already running")] == ["info"]
    assert ctx.log.named("start failed") == []


@pytest.mark.state("monitor", "stopped")
def test_stopped_says_stopped_then_closes_the_command_socket_and_removes_the_pidfile(
        host, run, booted, tmp_path):
    pidfile = tmp_path / "monitor.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    scene = booted(pidfile=str(pidfile))
    ctx = scene.ctx
    ctx.undo.record("pidfile", str(pidfile))
    server = ctx.command_server
    told = told_lxc_monitor(server)

    assert run("monitor", "stopped", ctx) is None
    assert "stopped" in MONITOR.final

    assert server.state is LxcState.STOPPED and server.sock.fileno() == -1
    assert not pidfile.exists()
    assert told == [("state", LxcState.STOPPED, False)]   # as LXC: once nobody can ask any more
    # What a way out left behind (here: the whole boot) goes first, then the monitor's own.
    assert host.calls() == [("cgroups.remove", str(scene.payload))]
    assert ctx.boot.undo.changes == [] and ctx.undo.changes == []


@pytest.mark.state("monitor", "stopped")
def test_stopped_destroys_an_ephemeral_container_after_saying_stopped(host, run, booted):
    scene = booted("lxc.ephemeral = 1")
    ctx = scene.ctx
    container = Path(ctx.request.lxcpath, "c1")
    (container / "rootfs" / "etc").mkdir()
    (container / "rootfs" / "etc" / "hostname").write_text("c1\n")
    told = told_lxc_monitor(ctx.command_server)

    assert run("monitor", "stopped", ctx) is None

    # As LXC's lxc_end(): everyone is told STOPPED first, then the container is gone.
    assert told == [("state", LxcState.STOPPED, False)]
    assert not container.exists()
    [(level, _fields)] = ctx.log.named("ephemeral container destroyed")
    assert level == "info"
    assert any("lxc.ephemeral" in step for step in stopped.plan(ctx.request))
