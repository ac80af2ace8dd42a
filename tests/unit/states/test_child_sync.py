"""The child's states that talk to the monitor - startup, configure, sync_cgroup_limits,
sync_fds, aborting - and exec, which ends the child by becoming init; each alone.

exec's process-wide calls (setsid, dup2, closerange, sigmask, execvpe) are fakes on the
state's own `os` and `signal`, so the test process keeps its fds, its session and its
signal mask.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from types import SimpleNamespace

import pytest

from lxcsm.engine.linux import kernel, terminal
from lxcsm.engine.protocol.sync import SyncError, SyncMsg
from lxcsm.engine.start.context import Failure
from lxcsm.engine.start.machine import CHILD
from lxcsm.states.child import configure as configure_state
from lxcsm.states.child import exec as exec_state
from tests.unit.states.conftest import is_open
from tests.unit.states.fake_kernel import PASS

# --- startup ---------------------------------------------------------------------------


@pytest.mark.state("child", "startup")
def test_startup_waits_for_startup_and_changes_nothing(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request())

    assert run("child", "startup", ctx) == "started"

    assert host.calls() == [("channel.wait_for", SyncMsg.STARTUP)]


@pytest.mark.state("child", "startup")
def test_startup_fails_when_the_monitor_is_gone(host, run, make_request, child_ctx):
    host.on("channel.wait_for", raises=SyncError("monitor exited while child waited for startup"))

    run.failing("child", "startup", child_ctx(make_request()), SyncError)


# --- configure -------------------------------------------------------------------------


@pytest.mark.state("child", "configure")
def test_configure_unshares_its_cgroup_namespace_then_waits_for_the_network(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request())

    assert run("child", "configure", ctx) == "configured"

    assert host.calls() == [("kernel.unshare", kernel.CLONE_NEWCGROUP),
                            ("channel.wake", SyncMsg.CONFIGURE), ("channel.wait_for", SyncMsg.POST_CONFIGURE)]


@pytest.mark.state("child", "configure")
def test_configure_keeping_the_cgroup_namespace_only_syncs(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.namespace.keep = cgroup"))

    assert run("child", "configure", ctx) == "configured"

    assert host.names() == ["channel.wake", "channel.wait_for"]


@pytest.mark.state("child", "configure")
def test_configure_whose_unshare_fails_never_asks_for_the_network(host, run, make_request, child_ctx):
    host.on("kernel.unshare", raises=PermissionError(errno.EPERM, "Operation not permitted"))

    run.failing("child", "configure", child_ctx(make_request()), PermissionError)

    assert host.names("channel") == []


@pytest.mark.state("child", "configure")
def test_configure_with_time_offsets_enters_a_time_namespace_after_the_cgroup_one(
        host, run, make_request, child_ctx, monkeypatch, tmp_path):
    offsets = tmp_path / "timens_offsets"
    written = []

    def fake_open(path, mode="r"):   # one write per clock, as the kernel wants them
        assert (path, mode) == ("/proc/self/timens_offsets", "w")
        written.append(offsets)
        return open(offsets, "a")

    monkeypatch.setattr(configure_state, "open", fake_open, raising=False)
    host.proxy(configure_state, "os", open=lambda path, flags: 99, close=None)
    ctx = child_ctx(make_request("lxc.time.offset.boot = 2h", "lxc.time.offset.monotonic = -5ms"))

    assert run("child", "configure", ctx) == "configured"

    # As LXC's do_start(): right after the cgroup namespace, before the monitor configures us.
    assert host.calls() == [("kernel.unshare", kernel.CLONE_NEWCGROUP), ("kernel.unshare", kernel.CLONE_NEWTIME),
                            ("os.open", "/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC),
                            ("kernel.setns", 99, kernel.CLONE_NEWTIME), ("os.close", 99),
                            ("channel.wake", SyncMsg.CONFIGURE), ("channel.wait_for", SyncMsg.POST_CONFIGURE)]
    assert offsets.read_text() == "7 7200 01 0 -5000000"
    assert len(written) == 2


@pytest.mark.state("child", "configure")
def test_configure_on_a_kernel_without_time_namespaces_leaves_the_clocks(host, run, make_request, child_ctx):
    host.on("kernel.unshare", raises=OSError(errno.EINVAL, "Invalid argument"),
            when=lambda flags: flags == kernel.CLONE_NEWTIME)
    ctx = child_ctx(make_request("lxc.time.offset.boot = 10s"))

    assert run("child", "configure", ctx) == "configured"   # as LXC: told, not failed

    [(level, _fields)] = ctx.log.named("kernel has no time namespaces: offsets not applied")
    assert level == "info"


# --- sync_cgroup_limits ----------------------------------------------------------------


@pytest.mark.state("child", "sync_cgroup_limits")
def test_sync_cgroup_limits_tells_the_monitor_it_is_set_up_and_waits_for_fds(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request())

    assert run("child", "sync_cgroup_limits", ctx) == "limits_applied"

    assert host.calls() == [("channel.wake", SyncMsg.CGROUP_LIMITS), ("channel.wait_for", SyncMsg.FDS)]


@pytest.mark.state("child", "sync_cgroup_limits")
def test_sync_cgroup_limits_fails_when_the_monitor_fails(host, run, make_request, child_ctx):
    host.on("channel.wait_for", raises=SyncError("monitor exited while child waited for fds"))

    run.failing("child", "sync_cgroup_limits", child_ctx(make_request()), SyncError)


# --- sync_fds --------------------------------------------------------------------------


@pytest.mark.state("child", "sync_fds")
def test_sync_fds_hands_over_the_console_ttys_and_devpts_keeping_only_the_console_peer(
        host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.tty.max = 2"))
    console_master, console_peer = host.pipe()
    tty1, peer1 = host.pipe()
    tty2, peer2 = host.pipe()
    devpts, _ = host.pipe()
    ctx.console, ctx.tty_masters, ctx.tty_peers, ctx.devpts = (console_master, console_peer), [tty1, tty2], \
        [peer1, peer2], devpts
    open_when_sent = []
    host.on("channel.wake", effect=lambda msg, fds=(): open_when_sent.extend(is_open(fd) for fd in fds))

    assert run("child", "sync_fds", ctx) == "ready_to_start"

    sent = [console_master, console_peer, tty1, peer1, tty2, peer2, devpts]
    assert host.calls() == [("channel.wake", SyncMsg.FDS, {"fds": sent}),
                            ("channel.wait_for", SyncMsg.READY_START)]
    assert open_when_sent == [True] * 7
    # The monitor has its copies now: the child keeps only what exec needs, the console's peer.
    assert [is_open(fd) for fd in sent] == [False, True, False, False, False, False, False]
    assert ctx.tty_masters == [] and ctx.tty_peers == [] and ctx.devpts == -1


@pytest.mark.state("child", "sync_fds")
def test_sync_fds_hands_over_the_seccomp_listener_first_and_closes_it(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.autodev = 0"))
    listener, _ = host.pipe()
    ctx.seccomp = SimpleNamespace(listener=listener)   # as Filter.load() left it

    assert run("child", "sync_fds", ctx) == "ready_to_start"

    assert host.calls() == [("channel.wake", SyncMsg.FDS, {"fds": [listener]}),
                            ("channel.wait_for", SyncMsg.READY_START)]
    # Only the monitor holds it now: init must not keep a way to answer its own notifications.
    assert not is_open(listener) and ctx.seccomp.listener == -1


@pytest.mark.state("child", "sync_fds")
def test_sync_fds_without_terminals_sends_an_empty_fds(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.autodev = 0"))

    assert run("child", "sync_fds", ctx) == "ready_to_start"

    assert host.calls() == [("channel.wake", SyncMsg.FDS), ("channel.wait_for", SyncMsg.READY_START)]


@pytest.mark.state("child", "sync_fds")
def test_sync_fds_to_a_monitor_that_is_gone_fails(host, run, make_request, child_ctx):
    host.on("channel.wake", raises=SyncError("monitor is gone (sending fds)"))

    run.failing("child", "sync_fds", child_ctx(make_request()), SyncError)

    assert host.names() == ["channel.wake"]   # no wait for READY_START


# --- exec ------------------------------------------------------------------------------

PTY = os.makedev(136, 0)   # /dev/pts/0's device: what init's stdio is in these tests, unless said


def _char_device(rdev: int) -> SimpleNamespace:
    return SimpleNamespace(st_rdev=rdev, st_mode=stat.S_IFCHR | 0o620)


@pytest.fixture
def process(host, monkeypatch):
    """exec's os and signal calls that would change the test process, as recording fakes
    (os.close for real); lxcsm's stdin is no terminal (a foreground start from pipes); init's
    stdio is a pty (fstat: not /dev/null's device)."""
    host.proxy(exec_state, "os", chdir=None, setsid=None, dup2=None, close=PASS, closerange=None, execvpe=None,
               setgroups=None, setresgid=None, setresuid=None, fchown=None, fchmod=None,
               fstat=lambda fd: _char_device(PTY), getppid=lambda: 4242, kill=None)
    host.proxy(exec_state, "signal", signal=None, pthread_sigmask=None)
    monkeypatch.setattr(terminal.os, "isatty", lambda fd: False)


class FakeFilter:
    """A filter setup_seccomp already loaded: a load() here would be recorded."""

    def __init__(self, rec) -> None:
        self.load = rec.fake("seccomp.load")


@pytest.mark.state("child", "exec")
def test_exec_of_a_daemon_gives_init_the_console_a_clean_process_and_its_environment(
        host, run, make_request, child_ctx, process, monkeypatch):
    monkeypatch.setenv("HOME", "/home/caller")
    request = make_request("lxc.environment = TERM=linux", "lxc.environment = HOME", "lxc.init.cwd = /srv",
                           "lxc.pty.max = 8",   # a console of the container's devpts
                           command=("/sbin/init", "--log-level=debug"))
    ctx = child_ctx(request)
    master, peer = host.pipe()
    ctx.console = (master, peer)
    ctx.seccomp = FakeFilter(host.rec)
    channel = ctx.channel.fileno()

    assert run("child", "exec", ctx) is None
    assert "exec" in CHILD.final   # execve does not return: the machine ends here

    # No hook and no filter here: setup_seccomp ran the start hooks and loaded the filter.
    assert host.calls() == [
        ("os.chdir", "/srv"),
        ("os.setsid",),
        ("os.dup2", peer, 0), ("os.dup2", peer, 1), ("os.dup2", peer, 2),   # not its controlling tty
        ("os.close", peer),
        # as LXC's fix_stdio_permissions() for any init: stdio (the console) root's, mode 0700
        *[call for fd in (0, 1, 2) for call in
          (("os.fstat", fd), ("os.fchown", fd, -1, -1), ("os.fchmod", fd, 0o700))],
        ("os.setgroups", []),   # as LXC: no supplementary group of lxcsm's is left to init
        ("kernel.set_dumpable",), ("kernel.clear_ambient_capabilities",),
        ("signal.signal", signal.SIGPIPE, signal.SIG_DFL), ("signal.signal", signal.SIGXFSZ, signal.SIG_DFL),
        ("signal.pthread_sigmask", signal.SIG_SETMASK, ctx.signal_mask),
        ("os.closerange", 3, channel), ("os.closerange", channel + 1, 1 << 20),   # all but the channel
        ("os.execvpe", "/sbin/init", ["/sbin/init", "--log-level=debug"],
         {"container": "lxc", "TERM": "linux", "HOME": "/home/caller"}),
    ]
    assert not is_open(peer)


@pytest.mark.state("child", "exec")
@pytest.mark.parametrize("console", ["host pty", "none"])
def test_exec_of_a_daemon_whose_console_is_the_hosts_or_none_gives_init_dev_null(
        host, run, make_request, child_ctx, process, console):
    # As lxc-start -d: LXC closes a host pty it made init's stdio, then gives a daemon /dev/null.
    host.proxy(exec_state, "os", chdir=None, setsid=None, dup2=None, open=PASS, close=PASS, closerange=None,
               execvpe=None, setgroups=None, fchown=None, fchmod=None, fstat=lambda fd: _char_device(PTY))
    ctx = child_ctx(make_request(*(["lxc.console.path = none"] if console == "none" else [])))
    if console == "host pty":
        ctx.console = host.pipe()

    assert run("child", "exec", ctx) is None

    calls = host.calls("os")
    assert calls[2][:2] == ("open", "/dev/null")
    dups = [call for call in calls if call[0] == "dup2"]
    (null,) = {call[1] for call in dups}   # one fd, /dev/null's, never the console's peer
    assert [call[2] for call in dups] == [0, 1, 2] and calls[6] == ("close", null)
    if console == "host pty":
        assert null != ctx.console[1] and ("close", ctx.console[1]) in calls
    assert "dup2 /dev/null" in "\n".join(exec_state.plan(ctx.request))


@pytest.mark.state("child", "exec")
def test_exec_in_the_foreground_keeps_lxcsms_stdio(
        host, run, make_request, child_ctx, process):
    ctx = child_ctx(make_request(foreground=True))
    master, peer = host.pipe()
    ctx.console = (master, peer)

    assert run("child", "exec", ctx) is None

    assert "os.dup2" not in host.names()
    assert host.calls("os")[:3] == [("chdir", "/"), ("setsid",), ("close", peer)]
    assert host.calls("os")[-1] == ("execvpe", "/sbin/init", ["/sbin/init"], {"container": "lxc"})


@pytest.mark.state("child", "exec")
def test_exec_takes_lxc_init_uid_gid_groups_and_the_pdeath_signal(
        host, run, make_request, child_ctx, process):
    ctx = child_ctx(make_request("lxc.init.uid = 1000", "lxc.init.gid = 100", "lxc.init.groups = 5,27",
                                 "lxc.monitor.signal.pdeath = SIGTERM", foreground=True))

    assert run("child", "exec", ctx) is None

    calls = host.calls()
    credentials = calls[calls.index(("os.setsid",)) + 1:calls.index(("signal.signal", signal.SIGPIPE, signal.SIG_DFL))]
    # stdio first (LXC's fix_stdio_permissions), then groups, gid, and uid last: after it, none
    # of the others would be allowed; the pdeath signal after the uid change, which resets it.
    assert [call for call in credentials if call[0] in ("os.fchown", "os.fchmod")] == [
        call for fd in (0, 1, 2) for call in (("os.fchown", fd, 1000, -1), ("os.fchmod", fd, 0o700))]
    assert [call for call in credentials if call[0] not in ("os.fstat", "os.fchown", "os.fchmod")] == [
        ("os.setgroups", [5, 27]),
        ("os.setresgid", 100, 100, 100),
        ("os.setresuid", 1000, 1000, 1000),
        ("kernel.set_dumpable",), ("kernel.clear_ambient_capabilities",),
        ("os.getppid",), ("kernel.set_pdeathsig", signal.SIGTERM), ("os.getppid",),
    ]
    assert "setresuid(1000)" in exec_state.plan(ctx.request)


@pytest.mark.state("child", "exec")
def test_exec_leaves_stdio_on_dev_null_alone(host, run, make_request, child_ctx, process):
    null = os.stat("/dev/null").st_rdev
    host.proxy(exec_state, "os", chdir=None, setsid=None, close=PASS, closerange=None, execvpe=None,
               setgroups=None, fchown=None, fchmod=None, fstat=lambda fd: _char_device(null))

    assert run("child", "exec", child_ctx(make_request(foreground=True))) is None

    assert [name for name in host.names() if name in ("os.fchown", "os.fchmod")] == []


@pytest.mark.state("child", "exec")
def test_exec_never_changes_the_hosts_dev_null_when_the_containers_is_a_plain_file(
        host, run, make_request, child_ctx, process):
    # lxc.autodev = 0 on a rootfs whose /dev/null is an empty file (no device number): a
    # foreground init started from </dev/null has the host's null device as its stdin.
    stdio = {0: os.makedev(1, 3), 1: PTY, 2: PTY}
    host.proxy(exec_state, "os", chdir=None, setsid=None, close=PASS, closerange=None, execvpe=None,
               setgroups=None, fchown=None, fchmod=None, fstat=lambda fd: _char_device(stdio[fd]),
               stat=lambda path: SimpleNamespace(st_rdev=0))

    assert run("child", "exec", child_ctx(make_request(foreground=True))) is None

    assert [call for call in host.calls("os") if call[0] in ("fchown", "fchmod")] == [
        call for fd in (1, 2) for call in (("fchown", fd, -1, -1), ("fchmod", fd, 0o700))]


@pytest.mark.state("child", "exec")
def test_exec_leaves_the_files_and_pipes_of_a_foreground_caller_alone(host, run, make_request, child_ctx, process):
    # lxcsm start -F >out 2>&1 </dev/null: init keeps the caller's stdio, which lxc-start would
    # have replaced by the console; a file of the host's must keep its owner and mode.
    stdio = {0: _char_device(os.makedev(1, 3)), 1: SimpleNamespace(st_rdev=0, st_mode=stat.S_IFREG | 0o644),
             2: SimpleNamespace(st_rdev=0, st_mode=stat.S_IFIFO | 0o600)}
    host.proxy(exec_state, "os", chdir=None, setsid=None, close=PASS, closerange=None, execvpe=None,
               setgroups=None, fchown=None, fchmod=None, fstat=lambda fd: stdio[fd])

    assert run("child", "exec", child_ctx(make_request(foreground=True))) is None

    assert [name for name in host.names() if name in ("os.fchown", "os.fchmod")] == []


@pytest.mark.state("child", "exec")
def test_exec_without_dev_null_in_the_container_changes_no_stdio(host, run, make_request, child_ctx, process):
    # As LXC, which gives up: init's stdio may be the host's own /dev/null, whose mode must stay.
    host.proxy(exec_state, "os", chdir=None, setsid=None, close=PASS, closerange=None, execvpe=None,
               setgroups=None, fchown=None, fchmod=None, fstat=lambda fd: _char_device(PTY), stat=None)
    host.on("os.stat", raises=FileNotFoundError(errno.ENOENT, "No such file or directory"))

    assert run("child", "exec", child_ctx(make_request(foreground=True))) is None

    assert [name for name in host.names() if name in ("os.fstat", "os.fchown", "os.fchmod")] == []


@pytest.mark.state("child", "exec")
def test_exec_whose_monitor_died_before_the_pdeath_signal_was_set_kills_itself(
        host, run, make_request, child_ctx, process):
    parents = iter((4242, 1))
    host.proxy(exec_state, "os", chdir=None, setsid=None, close=PASS, closerange=None, execvpe=None,
               setgroups=None, fchown=None, fchmod=None, fstat=lambda fd: _char_device(PTY),
               getppid=lambda: next(parents), kill=None, getpid=lambda: 7)
    ctx = child_ctx(make_request("lxc.monitor.signal.pdeath = SIGTERM", foreground=True))

    run("child", "exec", ctx)

    assert ("os.kill", 7, signal.SIGKILL) in host.calls()


@pytest.mark.state("child", "exec")
def test_exec_of_a_missing_init_fails(host, run, make_request, child_ctx, process):
    host.on("os.execvpe", raises=FileNotFoundError(errno.ENOENT, "No such file or directory"))

    run.failing("child", "exec", child_ctx(make_request()), FileNotFoundError)


# --- aborting --------------------------------------------------------------------------


@pytest.mark.state("child", "aborting")
def test_aborting_sends_the_failed_state_and_error_to_the_monitor(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request())
    ctx.failure = Failure("setup_mounts", "child", "mount: Operation not permitted (EPERM)")

    assert run("child", "aborting", ctx) is None
    assert "aborting" in CHILD.final

    assert host.calls() == [("channel.send_error", "setup_mounts", "mount: Operation not permitted (EPERM)")]


@pytest.mark.state("child", "aborting")
def test_aborting_with_the_monitor_gone_still_ends_quietly(host, run, make_request, child_ctx):
    host.on("channel.send_error", raises=SyncError("monitor is gone (sending error)"))
    ctx = child_ctx(make_request())
    ctx.failure = Failure("startup", "child", "timed out")

    assert run("child", "aborting", ctx) is None
