"""The monitor's sync_* states, each alone, on a FakeChannel: what they wait for and send,
and what they do on the host in between (veths, /proc files, prlimits, device limits,
the fds the child hands over, RUNNING)."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path
from types import SimpleNamespace

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.command_socket import LxcState
from lxcsm.engine.protocol.sync import PeerFailed, SyncError, SyncMsg
from lxcsm.engine.start.undo import Change
from tests.unit.states.conftest import is_open
from tests.unit.states.fake_host import FakeChannel


@pytest.fixture
def synced(host, make_request, monitor_ctx):
    """synced(*CONFIG_LINES) -> a MonitorContext after spawn: init 4242, a FakeChannel to it,
    its payload cgroup in each hierarchy."""
    def make(*lines: str):
        ctx = monitor_ctx(make_request(*lines))
        ctx.boot.init_pid = 4242
        ctx.boot.payload_cgroups = [f"{h.home}/lxc.payload.{ctx.request.name}" for h in ctx.hierarchies]
        ctx.boot.channel = FakeChannel(host.rec)
        return ctx
    return make


def waits_for(msg: SyncMsg):
    return lambda asked: asked is msg


# --- sync_configure --------------------------------------------------------------------


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_waits_for_configure_then_makes_each_device_with_its_end_in_the_child(host, run, synced):
    ctx = synced("lxc.net.0.type = veth", "lxc.net.0.link = br0", "lxc.net.0.veth.pair = vhost0",
                 "lxc.net.1.type = macvlan", "lxc.net.1.link = eth0", "lxc.net.1.macvlan.mode = bridge",
                 "lxc.net.2.type = veth", "lxc.net.2.mtu = 9000")
    host.on("netlink.link_mtu", 1450, when=lambda name: name == "br0")

    assert run("monitor", "sync_configure", ctx) == "network_ready"

    assert host.calls() == [
        ("channel.wait_for", SyncMsg.CONFIGURE),
        # veth 0: named lxc.net.0.veth.pair, the bridge's MTU, attached to the bridge
        ("netlink.link_mtu", "br0"),
        ("netlink.create_veth", "vhost0", "lxcsm0", 4242, 1450),
        ("netlink.attach_host_end", "vhost0", "br0"),
        # macvlan 1: born in the child's namespace, nothing on the host
        ("netlink.create_macvlan", "lxcsm1", "eth0", "bridge", 4242, None),
        # veth 2: a random host name, its own MTU, no bridge
        ("netlink.host_name",),
        ("netlink.create_veth", "vethFAKE00", "lxcsm2", 4242, 9000),
        ("netlink.attach_host_end", "vethFAKE00", None),
    ]
    # The host ends are recorded (the macvlan goes with the child's namespace).
    assert ctx.boot.undo.changes == [Change("netdev", "vhost0"), Change("netdev", "vethFAKE00")]
    assert ctx.command_server.running_items == {"lxc.net.0.veth.pair": "vhost0",
                                                "lxc.net.2.veth.pair": "vethFAKE00"}


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_of_an_empty_network_does_nothing_on_the_host(host, run, synced):
    ctx = synced("lxc.net.0.type = empty")

    assert run("monitor", "sync_configure", ctx) == "network_ready"

    assert host.calls() == [("channel.wait_for", SyncMsg.CONFIGURE)]
    assert ctx.boot.undo.changes == []


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_writes_proc_files_and_sets_resource_limits_on_the_child(
        host, run, synced, monkeypatch):
    monkeypatch.setattr(resource, "prlimit", host.rec.fake("resource.prlimit"))
    ctx = synced("lxc.proc.oom_score_adj = -500", "lxc.prlimit.nofile = 1024:2048", "lxc.prlimit.core = unlimited")

    assert run("monitor", "sync_configure", ctx) == "network_ready"

    assert host.calls() == [
        ("channel.wait_for", SyncMsg.CONFIGURE),
        ("files.write", "/proc/4242/oom_score_adj", "-500"),
        ("resource.prlimit", 4242, kernel.RLIMITS["nofile"], (1024, 2048)),
        ("resource.prlimit", 4242, kernel.RLIMITS["core"], (resource.RLIM_INFINITY, resource.RLIM_INFINITY)),
    ]
    assert host.files.path("/proc/4242/oom_score_adj").read_text() == "-500"


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_refused_prlimit_fails_naming_the_setting(host, run, synced, monkeypatch):
    monkeypatch.setattr(resource, "prlimit", host.rec.fake("resource.prlimit"))
    host.on("resource.prlimit", raises=PermissionError(errno.EPERM, "Operation not permitted"))
    ctx = synced("lxc.prlimit.nofile = 1024:2048")

    info = run.failing("monitor", "sync_configure", ctx, OSError)

    assert info.value.errno == errno.EPERM
    assert info.value.strerror == (f"{ctx.request.config.path}:2: lxc.prlimit.nofile: prlimit 1024:2048: "
                                   "Operation not permitted")


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_reports_the_childs_failure_and_creates_nothing(host, run, synced):
    host.on("channel.wait_for", raises=PeerFailed("child", "configure", "unshare: Operation not permitted (EPERM)"))
    ctx = synced("lxc.net.0.type = veth")

    info = run.failing("monitor", "sync_configure", ctx, PeerFailed)

    assert (info.value.side, info.value.state) == ("child", "configure")
    assert host.names("netlink") == [] and ctx.boot.undo.changes == []


# --- sync_post_configure ---------------------------------------------------------------


@pytest.mark.state("monitor", "sync_post_configure")
def test_sync_post_configure_releases_the_child_and_does_not_wait(host, run, synced):
    ctx = synced()

    assert run("monitor", "sync_post_configure", ctx) == "child_released"

    assert host.calls() == [("channel.wake", SyncMsg.POST_CONFIGURE)]
    assert ctx.boot.undo.changes == []


@pytest.mark.state("monitor", "sync_post_configure")
def test_sync_post_configure_to_a_dead_child_fails(host, run, synced):
    host.on("channel.wake", raises=SyncError("child is gone (sending post-configure)"))

    run.failing("monitor", "sync_post_configure", synced(), SyncError)


# --- sync_cgroup_limits ----------------------------------------------------------------


def payload_cgroups(ctx) -> list[str]:
    """The lxc.payload.NAME directories spawn would have made."""
    paths = [os.path.join(h.home, f"lxc.payload.{ctx.request.name}") for h in ctx.hierarchies]
    for path in paths:
        os.mkdir(path)
    ctx.boot.payload_cgroups = paths
    return paths


@pytest.mark.state("monitor", "sync_cgroup_limits")
def test_sync_cgroup_limits_waits_for_the_child_writes_the_device_rules_in_order_then_runs_start_host(
        host, run, synced):
    ctx = synced("lxc.cgroup.cpu.shares = 512", "lxc.cgroup.devices.deny = a",
                 "lxc.cgroup.devices.allow = c 1:3 rwm")
    _cpu, devices, _unified = payload_cgroups(ctx)

    assert run("monitor", "sync_cgroup_limits", ctx) == "limits_applied"

    assert host.calls() == [
        ("channel.wait_for", SyncMsg.CGROUP_LIMITS),
        ("files.write", os.path.join(devices, "devices.deny"), "a"),
        ("files.write", os.path.join(devices, "devices.allow"), "c 1:3 rwm"),
        ("hooks.run", "start-host"),   # as LXC's lxc_spawn(): after the device limits, before FDS
    ]   # and not cpu.shares: spawn wrote it
    assert Path(devices, "devices.allow").read_text() == "c 1:3 rwm"


@pytest.mark.state("monitor", "sync_cgroup_limits")
def test_sync_cgroup_limits_refused_rule_fails_naming_the_setting(host, run, synced):
    ctx = synced("lxc.cgroup.devices.deny = a")
    _cpu, devices, _unified = payload_cgroups(ctx)
    os.mkdir(os.path.join(devices, "devices.deny"))   # so that writing it fails

    info = run.failing("monitor", "sync_cgroup_limits", ctx, OSError)

    assert info.value.strerror.startswith(f"{ctx.request.config.path}:2: lxc.cgroup.devices.deny: writing 'a': ")
    assert host.calls("hooks") == []


@pytest.mark.state("monitor", "sync_cgroup_limits")
def test_sync_cgroup_limits_failing_start_host_hook_never_sends_fds(host, run, synced):
    host.on("hooks.run", raises=StateError("config:5: lxc.hook.start-host: hook '/bin/false' exited with status 1"))
    ctx = synced()

    run.failing("monitor", "sync_cgroup_limits", ctx, StateError)

    assert host.names("channel") == ["channel.wait_for"]   # CGROUP_LIMITS only: no FDS


# --- sync_fds --------------------------------------------------------------------------


@pytest.mark.state("monitor", "sync_fds")
def test_sync_fds_sends_fds_then_keeps_the_console_ttys_and_devpts_it_receives(host, run, synced):
    ctx = synced("lxc.tty.max = 2")   # and the console: lxc.autodev is on
    # console master and peer, tty1's and tty2's master and peer, the devpts, one too many
    fds = [host.pipe()[0] for _ in range(8)]
    host.on("channel.wait_for", (b"", fds), when=waits_for(SyncMsg.FDS))

    assert run("monitor", "sync_fds", ctx) == "fds_received"

    assert host.calls() == [("channel.wake", SyncMsg.FDS), ("channel.wait_for", SyncMsg.FDS)]
    assert ctx.boot.undo.changes == [Change("kept_fd", str(fd)) for fd in fds[:7]]
    assert [is_open(fd) for fd in fds] == [True] * 7 + [False]   # the extra one is closed
    # tty 0 is the console's master; the peers are only kept open; the devpts is lxc-attach's.
    assert ctx.command_server.ttys == {0: fds[0], 1: fds[2], 2: fds[4]}
    assert ctx.command_server.devpts == fds[6]


@pytest.mark.state("monitor", "sync_fds")
def test_sync_fds_without_a_console_numbers_the_ttys_from_one(host, run, synced):
    ctx = synced("lxc.console.path = none", "lxc.tty.max = 1")
    tty1, peer1 = host.pipe()
    devpts, _ = host.pipe()
    host.on("channel.wait_for", (b"", [tty1, peer1, devpts]), when=waits_for(SyncMsg.FDS))

    assert run("monitor", "sync_fds", ctx) == "fds_received"

    assert ctx.command_server.ttys == {1: tty1} and ctx.command_server.devpts == devpts
    assert ctx.boot.undo.changes == [Change("kept_fd", str(fd)) for fd in (tty1, peer1, devpts)]


@pytest.mark.state("monitor", "sync_fds")
def test_sync_fds_takes_the_seccomp_listener_first_when_the_policy_has_notify_rules(host, run, synced):
    ctx = synced("lxc.console.path = none", "lxc.tty.max = 1")
    ctx.seccomp = SimpleNamespace(wants_listener=True, listener=-1)   # the Filter init_handler built
    listener, tty1, peer1, devpts = (host.pipe()[0] for _ in range(4))
    host.on("channel.wait_for", (b"", [listener, tty1, peer1, devpts]), when=waits_for(SyncMsg.FDS))

    assert run("monitor", "sync_fds", ctx) == "fds_received"

    # Kept for poll to relay to the proxy, closed with the boot's other fds.
    assert ctx.seccomp.listener == listener
    assert ctx.boot.undo.changes == [Change("kept_fd", str(fd)) for fd in (listener, tty1, peer1, devpts)]
    assert ctx.command_server.ttys == {1: tty1} and ctx.command_server.devpts == devpts
    [(_level, fields)] = ctx.log.named("seccomp listener received")
    assert fields["listener"] == listener


@pytest.mark.state("monitor", "sync_fds")
def test_sync_fds_when_the_child_fails_instead_reports_its_error(host, run, synced):
    host.on("channel.wait_for", raises=PeerFailed("child", "setup_pivot_root", "pivot_root: EINVAL"))
    ctx = synced()

    run.failing("monitor", "sync_fds", ctx, PeerFailed)

    assert ctx.boot.undo.changes == [] and ctx.command_server.ttys == {}


# --- sync_ready_start ------------------------------------------------------------------


@pytest.mark.state("monitor", "sync_ready_start")
def test_sync_ready_start_lets_init_exec_and_says_running(host, run, synced):
    ctx = synced()
    ctx.boot.init_pidfd = 77
    channel = ctx.boot.channel
    told = []
    ctx.on_running = lambda: told.append(ctx.command_server.state)

    assert run("monitor", "sync_ready_start", ctx) == "init_started"

    assert host.calls() == [("channel.wake", SyncMsg.READY_START),
                            ("channel.wait_for_exec",), ("channel.close",)]
    assert channel.closed and ctx.boot.channel is None
    server = ctx.command_server
    assert (server.init_pid, server.init_pidfd, server.state) == (4242, 77, LxcState.RUNNING)
    assert server.cgroups == list(zip(ctx.hierarchies, ctx.boot.payload_cgroups, strict=True))   # for lxc-attach
    assert told == [LxcState.RUNNING]   # the daemon's caller hears once clients would see RUNNING
    [(level, fields)] = ctx.log.named("started")
    assert (level, fields["init_pid"]) == ("notice", 4242)


@pytest.mark.state("monitor", "sync_ready_start")
def test_sync_ready_start_when_exec_fails_is_not_running(host, run, synced):
    host.on("channel.wait_for_exec",
            raises=PeerFailed("child", "exec", "No such file or directory (ENOENT): /sbin/init"))
    ctx = synced()
    told = []
    ctx.on_running = lambda: told.append(True)

    info = run.failing("monitor", "sync_ready_start", ctx, PeerFailed)

    assert info.value.state == "exec"
    assert ctx.command_server.state is LxcState.STARTING and told == []
    assert ctx.boot.channel is not None and not ctx.boot.channel.closed   # aborting closes it
