"""The monitor's first states: init_handler, monitor_cgroup, spawn - each enter() alone.

What they would do to the host goes to the fakes of conftest.py: the kernel module,
the command socket's bind, the signal mask, cgroupfs (directories under tmp_path) and
clone3, which answers as the parent would, so nothing is forked.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from pathlib import Path

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import kernel, seccomp
from lxcsm.engine.protocol import command_client, command_server
from lxcsm.engine.protocol.command_server import AlreadyRunning
from lxcsm.engine.protocol.command_socket import LxcState
from lxcsm.engine.protocol.sync import SyncMsg
from lxcsm.engine.start.undo import Change
from lxcsm.states.monitor import init_handler, spawn
from tests.unit.states.conftest import is_open

DEFAULT_NAMESPACES = kernel.CLONE_NEWNS | kernel.CLONE_NEWPID | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC \
    | kernel.CLONE_NEWNET


# --- init_handler ----------------------------------------------------------------------


@pytest.fixture
def bind(host, monkeypatch):
    """command_server.bind, recorded; it answers with one end of a socketpair (no name is bound)."""
    server_end, _client = host.socketpair()
    monkeypatch.setattr(command_server, "bind", host.rec.fake("command_server.bind", lambda lxcpath, name: server_end))
    return server_end


@pytest.fixture
def sigmask(host):
    """init_handler's signal.pthread_sigmask, recorded instead of blocking the test's signals."""
    return host.proxy(init_handler, "signal", pthread_sigmask=lambda how, signals: {signal.SIGUSR1})


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_binds_the_command_socket_routes_signals_to_a_signalfd_and_runs_pre_start(
        host, run, make_request, monitor_ctx, bind, sigmask, tmp_path):
    pidfile = tmp_path / "monitor.pid"
    request = make_request("lxc.console.buffer.size = 1024", "lxc.net.0.type = phys",
                           pidfile=str(pidfile))
    ctx = monitor_ctx(request, fresh=True)
    host.on("kernel.signalfd", 42)

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    assert host.names() == ["command_server.bind", "signal.pthread_sigmask", "kernel.signalfd",
                            "cgroups.hierarchies", "hooks.run"]
    assert host.calls("command_server") == [("bind", request.lxcpath, "c1")]
    assert host.calls("signal") == [("pthread_sigmask", signal.SIG_BLOCK, init_handler.WATCHED)]
    assert host.calls("kernel") == [("signalfd", set(init_handler.WATCHED))]
    assert host.calls("hooks") == [("run", "pre-start")]
    assert signal.SIGCHLD in init_handler.WATCHED and signal.SIGCHLD not in init_handler.FORWARDED
    assert (ctx.signal_fd, ctx.signal_mask) == (42, frozenset({signal.SIGUSR1}))
    assert ctx.hierarchies == host.cgroupfs.hierarchies

    # The monitor's lifetime record: the socket (live handle: the server) and the pid file.
    assert ctx.undo.changes == [Change("command_socket", "c1"), Change("pidfile", str(pidfile))]
    assert ctx.undo.changes[0].handle is ctx.command_server
    assert ctx.command_server.sock is bind and ctx.command_server.state is LxcState.STARTING
    assert pidfile.read_text() == f"{os.getpid()}\n"
    # A fresh boot, whose record goes to the same journal and is empty so far.
    assert ctx.boot.number == 1 and ctx.boot.undo.changes == []
    assert ctx.boot.undo.journal is ctx.undo.journal

    rootfs = request.config.rootfs_path
    assert {k: os.environ[k] for k in ("LXC_NAME", "LXC_CONFIG_FILE", "LXC_ROOTFS_PATH", "LXC_ROOTFS_MOUNT")} == {
        "LXC_NAME": "c1", "LXC_CONFIG_FILE": request.config.path, "LXC_ROOTFS_PATH": rootfs,
        "LXC_ROOTFS_MOUNT": rootfs}
    [(level, fields)] = ctx.log.named("not supported yet")
    assert (level, fields["key"], fields["line"]) == ("warn", "lxc.net.0.type", 3)
    # This boot's console ring buffer: a page at least, as LXC sizes it; empty.
    buffer = ctx.command_server.console_buffer
    assert buffer.size == max(1024, os.sysconf("SC_PAGE_SIZE")) and len(buffer) == 0


@pytest.fixture
def filters(host, monkeypatch):
    """seccomp.Filter(policy, machine), recorded: built, never loaded here."""
    class FakeFilter:
        def __init__(self, policy, machine) -> None:
            host.rec.call("seccomp.Filter", (machine,), {})
            self.policy, self.machine, self.skipped = policy, machine, ["not_a_syscall"]
            self.load = host.rec.fake("seccomp.load")
    monkeypatch.setattr(seccomp, "Filter", FakeFilter)


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_builds_the_seccomp_filter_of_the_last_profile_after_pre_start_for_the_child(
        host, run, make_request, monitor_ctx, bind, sigmask, filters, tmp_path):
    (tmp_path / "first.seccomp").write_text("2\ndenylist\nmount\n")
    (tmp_path / "last.seccomp").write_text("2\ndenylist\n[all]\nmknod errno 1\nnot_a_syscall\n")
    ctx = monitor_ctx(make_request(f"lxc.seccomp.profile = {tmp_path}/first.seccomp",
                                   f"lxc.seccomp.profile = {tmp_path}/last.seccomp"), fresh=True)

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    # As LXC's lxc_init(): read after the pre-start hooks; loaded by the child's setup_seccomp.
    assert host.names()[-2:] == ["hooks.run", "seccomp.Filter"]
    assert host.calls("seccomp") == [("Filter", os.uname().machine)]
    assert [rule.syscall for rule in ctx.seccomp.policy.rules] == ["mknod", "not_a_syscall"]
    [(_level, fields)] = ctx.log.named("seccomp filter built")
    assert (fields["rules"], fields["skipped"]) == (2, "not_a_syscall")


@pytest.mark.state("monitor", "init_handler")
@pytest.mark.parametrize("setting,kept", [("lxc.namespace.keep = uts", True), ("lxc.namespace.clone = mnt pid", True),
                                          ("lxc.namespace.keep = ipc", False)])
def test_init_handler_warns_that_lxc_uts_name_is_not_set_in_the_hosts_uts_namespace(
        host, run, make_request, monitor_ctx, bind, sigmask, setting, kept):
    ctx = monitor_ctx(make_request(setting, "lxc.uts.name = web"), fresh=True)

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    warnings = ctx.log.named("lxc.uts.name not set: the container keeps the host's uts namespace, whose hostname"
                             " lxcsm never changes")
    assert warnings == ([("warn", {"hostname": "web"})] if kept else [])


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_with_lxc_monitor_unshare_takes_a_slave_mount_namespace_before_pre_start(
        host, run, make_request, monitor_ctx, bind, sigmask):
    ctx = monitor_ctx(make_request("lxc.monitor.unshare = 1"), fresh=True)

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    # As lxc-start: after the socket and pid file, before anything the pre-start hooks mount.
    assert host.names()[:3] == ["command_server.bind", "kernel.unshare", "kernel.mount"]
    assert host.calls("kernel")[:2] == [("unshare", kernel.CLONE_NEWNS),
                                        ("mount", None, "/", None, kernel.MS_SLAVE | kernel.MS_REC)]
    assert host.names()[-1] == "hooks.run"
    assert "unshare(CLONE_NEWNS); mount --make-rslave / (lxc.monitor.unshare)" in init_handler.plan(ctx.request)


@pytest.mark.state("monitor", "init_handler")
@pytest.mark.parametrize("allow_nesting", [False, True])
def test_init_handler_already_under_seccomp_builds_a_filter_only_with_allow_nesting(
        host, run, make_request, monitor_ctx, bind, sigmask, filters, tmp_path, monkeypatch, allow_nesting):
    (tmp_path / "policy.seccomp").write_text("2\ndenylist\nmknod errno 1\n")
    monkeypatch.setattr(init_handler, "seccomp_confined", lambda: True)
    ctx = monitor_ctx(make_request(f"lxc.seccomp.profile = {tmp_path}/policy.seccomp",
                                   f"lxc.seccomp.allow_nesting = {int(allow_nesting)}"), fresh=True)

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    # As LXC's use_seccomp(): a nested start keeps the filter it runs under, and stacks its own only if asked.
    assert host.calls("seccomp") == ([("Filter", os.uname().machine)] if allow_nesting else [])
    assert (ctx.seccomp is not None) == allow_nesting
    assert bool(ctx.log.named("already seccomp-confined (or no seccomp): policy not loaded")) != allow_nesting


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_with_its_seccomp_policy_gone_fails(host, run, make_request, monitor_ctx, bind, sigmask,
                                                         filters, tmp_path):
    policy = tmp_path / "gone.seccomp"
    policy.write_text("2\ndenylist\n")
    ctx = monitor_ctx(make_request(f"lxc.seccomp.profile = {policy}"), fresh=True)
    policy.unlink()   # between preflight and the monitor

    run.failing("monitor", "init_handler", ctx, OSError)

    assert ctx.seccomp is None


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_opens_the_console_log_for_appending_and_records_it(
        host, run, make_request, monitor_ctx, bind, sigmask, tmp_path):
    log_file = tmp_path / "console.log"
    log_file.write_text("the previous start\n")
    ctx = monitor_ctx(make_request(f"lxc.console.logfile = {log_file}"), fresh=True)

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    fd = host.keep(ctx.console_log)
    assert ctx.undo.changes[-1] == Change("kept_fd", str(fd))
    os.write(fd, b"this one\n")
    assert log_file.read_text() == "the previous start\nthis one\n"


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_on_a_reboot_keeps_the_socket_and_signalfd_and_starts_a_fresh_boot(
        host, run, make_request, monitor_ctx, sigmask):
    ctx = monitor_ctx(make_request("lxc.console.buffer.size = 1024"))   # as the first boot left it
    ctx.signal_fd = 42
    server = ctx.command_server
    server.init_pid, server.init_pidfd = 4242, 7
    server.running_items["lxc.net.0.veth.pair"] = "vethOLD000"
    server.ttys = {1: 9}
    server.set_state(LxcState.STOPPING)
    first_boot = ctx.boot

    assert run("monitor", "init_handler", ctx) == "handler_ready"

    assert host.names() == ["hooks.run"]   # no bind, no signalfd, hierarchies already known
    assert ctx.command_server is server and ctx.signal_fd == 42
    assert (server.init_pid, server.init_pidfd, server.running_items, server.ttys) == (0, -1, {}, {})
    assert server.state is LxcState.STARTING
    assert ctx.boot is not first_boot and ctx.boot.number == 2 and ctx.boot.undo.changes == []
    assert ctx.log.named("not supported yet") == []   # said once, on the first boot


@pytest.fixture
def name_taken(host, monkeypatch):
    """command_server.bind finds the name taken; command_client.holder says who holds it."""
    monkeypatch.setattr(command_server, "bind", host.rec.fake("command_server.bind"))
    host.on("command_server.bind", raises=AlreadyRunning())
    monkeypatch.setattr(command_client, "holder", host.rec.fake("command_client.holder"))


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_of_a_running_container_fails_already_running_with_nothing_to_undo(
        host, run, make_request, monitor_ctx, name_taken, sigmask):
    host.on("command_client.holder", (command_client.RUNS, "pid 77"))
    ctx = monitor_ctx(make_request(), fresh=True)

    run.failing("monitor", "init_handler", ctx, AlreadyRunning)

    assert host.calls() == [("command_server.bind", ctx.request.lxcpath, "c1"),
                            ("command_client.holder", ctx.request.lxcpath, "c1")]
    assert ctx.undo.changes == [] and ctx.command_server is None


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_whose_name_is_held_by_something_else_fails_naming_it(
        host, run, make_request, monitor_ctx, name_taken, sigmask):
    host.on("command_client.holder", (command_client.NOT_A_MONITOR, "held by pid 77 (nc), uid 1000"))
    ctx = monitor_ctx(make_request(), fresh=True)

    info = run.failing("monitor", "init_handler", ctx, StateError)

    assert str(info.value) == "held by pid 77 (nc), uid 1000"
    assert not isinstance(info.value, AlreadyRunning)
    assert ctx.undo.changes == [] and host.names("kernel", "hooks") == []


@pytest.mark.state("monitor", "init_handler")
def test_init_handler_without_any_cgroup_hierarchy_fails_before_the_pre_start_hooks(
        host, run, make_request, monitor_ctx, bind, sigmask):
    host.on("cgroups.hierarchies", [])
    ctx = monitor_ctx(make_request(), fresh=True)

    info = run.failing("monitor", "init_handler", ctx, StateError)

    assert "no cgroup hierarchy" in str(info.value)
    assert "hooks.run" not in host.names()
    assert [c.kind for c in ctx.undo.changes] == ["command_socket"]   # for aborting/stopped to close


# --- monitor_cgroup --------------------------------------------------------------------


@pytest.mark.state("monitor", "monitor_cgroup")
def test_monitor_cgroup_creates_lxc_monitor_in_every_hierarchy_and_moves_the_monitor_in(
        host, run, make_request, monitor_ctx):
    ctx = monitor_ctx(make_request())

    assert run("monitor", "monitor_cgroup", ctx) == "monitor_cgroup_entered"

    paths = [os.path.join(h.home, "lxc.monitor.c1") for h in ctx.hierarchies]
    assert host.calls("cgroups") == [
        ("create", "cpu,cpuacct", "lxc.monitor.c1"), ("attach", paths[0], os.getpid()),
        ("create", "devices", "lxc.monitor.c1"), ("attach", paths[1], os.getpid()),
        ("create", "unified", "lxc.monitor.c1"), ("attach", paths[2], os.getpid())]
    for path in paths:
        assert Path(path, "cgroup.procs").read_text() == str(os.getpid())
    # Each directory, then the move into it: unwinding moves the monitor home before the rmdir.
    assert ctx.boot.undo.changes == [change for path, h in zip(paths, ctx.hierarchies, strict=True)
                                     for change in (Change("cgroup", path), Change("cgroup_entered", h.home))]
    assert host.calls("kernel") == []


@pytest.mark.state("monitor", "monitor_cgroup")
def test_monitor_cgroup_gives_a_v1_cpuset_cgroup_its_parents_cpus_and_mems(host, run, make_request, monitor_ctx):
    ctx = monitor_ctx(make_request())
    ctx.hierarchies = [host.cgroupfs.cpuset(cpus="0-3", mems="0")]

    assert run("monitor", "monitor_cgroup", ctx) == "monitor_cgroup_entered"

    made = Path(ctx.hierarchies[0].home, "lxc.monitor.c1")
    assert ((made / "cpuset.cpus").read_text(), (made / "cpuset.mems").read_text()) == ("0-3", "0")


@pytest.mark.state("monitor", "monitor_cgroup")
def test_monitor_cgroup_failing_in_one_hierarchy_leaves_the_earlier_ones_recorded(
        host, run, make_request, monitor_ctx):
    host.on("cgroups.create", raises=PermissionError(errno.EACCES, "Permission denied"),
            when=lambda label, name: label == "devices")
    ctx = monitor_ctx(make_request())

    run.failing("monitor", "monitor_cgroup", ctx, PermissionError)

    cpu = ctx.hierarchies[0]
    assert ctx.boot.undo.changes == [Change("cgroup", os.path.join(cpu.home, "lxc.monitor.c1")),
                                     Change("cgroup_entered", cpu.home)]


# --- spawn -----------------------------------------------------------------------------


@pytest.fixture
def no_child_machine(host, monkeypatch):
    """The parent must never run the child's machine: that is clone3's child side only."""
    def run_child(*args):
        raise AssertionError("spawn ran the child machine in the monitor")
    monkeypatch.setattr(spawn, "run_child", run_child)


@pytest.fixture
def clone3(host):
    """kernel.clone3 answers as the parent: (4242, a pipe fd as the pidfd).  `seen` keeps what the
    cgroup2 fd it was given pointed at, and the fd's number."""
    pidfd, _ = host.pipe()
    seen: dict = {"pid": 4242, "pidfd": pidfd}

    def parent(flags, cgroup_fd=None):
        seen["cgroup_fd"] = cgroup_fd
        seen["into"] = os.readlink(f"/proc/self/fd/{cgroup_fd}") if cgroup_fd is not None else None
        return seen["pid"], pidfd

    host.on("kernel.clone3", effect=parent)
    return seen


@pytest.mark.state("monitor", "spawn")
def test_spawn_clones_into_new_namespaces_inside_the_payload_cgroup_and_wakes_startup(
        host, run, make_request, monitor_ctx, clone3, no_child_machine):
    request = make_request("lxc.cgroup.cpu.shares = 512", "lxc.cgroup.devices.deny = a")
    ctx = monitor_ctx(request)

    assert run("monitor", "spawn", ctx) == "child_spawned"

    cpu, devices, unified = (os.path.join(h.home, "lxc.payload.c1") for h in ctx.hierarchies)
    assert host.names() == ["cgroups.create", "cgroups.create", "cgroups.create", "files.write",
                            "kernel.clone3", "cgroups.attach", "cgroups.attach",
                            "sync.MonitorEnd", "channel.wake"]
    # One clone3 into the default namespaces, straight into the cgroup2 payload directory...
    [(name, flags, cgroup_fd)] = host.calls("kernel")
    assert (name, flags) == ("clone3", DEFAULT_NAMESPACES)
    assert clone3["into"] == unified
    assert not is_open(cgroup_fd)
    # ...then moved into every v1 payload cgroup, whose limits (but devices) are written first.
    assert host.calls("cgroups")[3:] == [("attach", cpu, 4242), ("attach", devices, 4242)]
    assert Path(cpu, "cgroup.procs").read_text() == "4242"
    assert host.calls("files") == [("write", os.path.join(cpu, "cpu.shares"), "512")]
    assert Path(cpu, "cpu.shares").read_text() == "512"
    assert not Path(devices, "devices.deny").exists()   # sync_cgroup_limits' job

    assert ctx.boot.payload_cgroups == [cpu, devices, unified]
    assert ctx.boot.undo.changes == [Change("cgroup", cpu), Change("cgroup", devices), Change("cgroup", unified),
                                     Change("child", "4242")]
    assert ctx.boot.undo.changes[-1].handle == clone3["pidfd"]
    assert (ctx.boot.init_pid, ctx.boot.init_pidfd) == (4242, clone3["pidfd"])
    assert ctx.command_server.clone_flags == DEFAULT_NAMESPACES
    assert ctx.boot.namespace_fds == {}   # no stop hook to keep them for

    # The monitor's end of a fresh SOCK_SEQPACKET pair, woken with STARTUP.
    [channel] = host.channels
    assert ctx.boot.channel is channel and channel.built_with["timeout"] == request.sync_timeout
    assert channel.sock.type == socket.SOCK_SEQPACKET
    assert host.calls("channel") == [("wake", SyncMsg.STARTUP)]


@pytest.mark.state("monitor", "spawn")
@pytest.mark.parametrize("lines,flags", [
    (("lxc.net.0.type = none",), DEFAULT_NAMESPACES & ~kernel.CLONE_NEWNET),
    (("lxc.namespace.keep = ipc uts",), DEFAULT_NAMESPACES & ~(kernel.CLONE_NEWIPC | kernel.CLONE_NEWUTS)),
    (("lxc.namespace.clone = mnt pid cgroup",), kernel.CLONE_NEWNS | kernel.CLONE_NEWPID),
], ids=["net-none-shares-the-host-network", "namespace-keep", "namespace-clone-never-cgroup"])
def test_spawn_clones_the_namespaces_the_config_asks_for(
        host, run, make_request, monitor_ctx, clone3, no_child_machine, lines, flags):
    ctx = monitor_ctx(make_request(*lines))

    assert run("monitor", "spawn", ctx) == "child_spawned"

    assert [call[:2] for call in host.calls("kernel")] == [("clone3", flags)]
    assert ctx.command_server.clone_flags == flags


@pytest.mark.state("monitor", "spawn")
def test_spawn_with_a_stop_hook_holds_the_childs_namespaces_open(
        host, run, make_request, monitor_ctx, clone3, no_child_machine):
    clone3["pid"] = os.getpid()   # a pid whose /proc/PID/ns this unprivileged test may open
    ctx = monitor_ctx(make_request("lxc.hook.stop = /bin/true", "lxc.namespace.keep = ipc"))

    assert run("monitor", "spawn", ctx) == "child_spawned"

    fds = ctx.boot.namespace_fds
    for fd in fds.values():
        host.keep(fd)
    assert sorted(fds) == ["mnt", "net", "pid", "uts"]
    for kind, fd in fds.items():
        assert os.readlink(f"/proc/self/fd/{fd}") == os.readlink(f"/proc/self/ns/{kind}")
    assert ctx.boot.undo.changes[4:] == [Change("kept_fd", str(fd)) for fd in fds.values()]


@pytest.mark.state("monitor", "spawn")
def test_spawn_whose_clone3_fails_records_the_cgroups_and_no_child(
        host, run, make_request, monitor_ctx, no_child_machine):
    given = []

    def refuse(flags, cgroup_fd=None):
        given.append(cgroup_fd)
        raise PermissionError(errno.EPERM, "Operation not permitted")

    host.on("kernel.clone3", effect=refuse)
    ctx = monitor_ctx(make_request())

    run.failing("monitor", "spawn", ctx, PermissionError)

    assert [c.kind for c in ctx.boot.undo.changes] == ["cgroup", "cgroup", "cgroup"]
    assert not is_open(given[0])   # the cgroup2 directory's fd is closed on the way out
    assert ctx.boot.channel is None and ctx.boot.init_pid == 0
    assert host.calls("channel") == []
