"""A container with lxc.idmap: spawn into a user namespace, write_id_maps, and the child's
startup and become_userns_root - each enter() alone.

The map files and cgroupfs ownership are the host's: write_map is a recording fake,
and idmap's own os.chown / os.chmod are recorded instead of made, on the tmp cgroupfs.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from pathlib import Path

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import idmap, kernel
from lxcsm.engine.protocol.sync import SyncMsg
from lxcsm.states.child import become_userns_root, setup_autodev
from lxcsm.states.monitor import spawn

MAPS = ("lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536")
ON_CLONE = kernel.CLONE_NEWNS | kernel.CLONE_NEWPID | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC \
    | kernel.CLONE_NEWUSER


@pytest.fixture
def cloned(host, monkeypatch):
    """kernel.clone3 answers as the parent (pid 4242); spawn never runs the child machine."""
    pidfd, _ = host.pipe()
    host.on("kernel.clone3", (4242, pidfd))

    def run_child(*args):
        raise AssertionError("spawn ran the child machine in the monitor")
    monkeypatch.setattr(spawn, "run_child", run_child)


@pytest.fixture
def maps_host(host, monkeypatch, tmp_path):
    """idmap's writes to /proc and its chown/chmod recorded, not made; the kernel's delegate list
    is a file of the test's."""
    monkeypatch.setattr(idmap, "write_map", host.rec.fake("idmap.write_map"))
    host.proxy(idmap, "os", chown=None, chmod=None)
    delegate = tmp_path / "delegate"
    delegate.write_text("cgroup.procs\ncgroup.threads\ncgroup.subtree_control\n")
    monkeypatch.setattr(idmap, "DELEGATE_LIST", str(delegate))


# --- spawn -----------------------------------------------------------------------------


@pytest.mark.state("monitor", "spawn")
def test_spawn_with_an_idmap_clones_a_user_namespace_leaves_the_network_to_the_child_and_does_not_wake_it(
        host, run, make_request, monitor_ctx, cloned):
    ctx = monitor_ctx(make_request(*MAPS))

    assert run("monitor", "spawn", ctx) == "child_cloned"

    [(name, flags, _cgroup_fd)] = host.calls("kernel")
    assert (name, flags) == ("clone3", ON_CLONE)
    # lxc-attach is told every namespace the container has, the child's network one too.
    assert ctx.command_server.clone_flags == ON_CLONE | kernel.CLONE_NEWNET
    assert host.calls("channel") == []   # write_id_maps wakes it, once its ids are mapped


@pytest.mark.state("monitor", "spawn")
def test_spawn_with_an_idmap_and_the_hosts_network_clones_only_the_user_namespace_more(
        host, run, make_request, monitor_ctx, cloned):
    ctx = monitor_ctx(make_request(*MAPS, "lxc.net.0.type = none"))

    assert run("monitor", "spawn", ctx) == "child_cloned"

    assert [call[:2] for call in host.calls("kernel")] == [("clone3", ON_CLONE)]
    assert ctx.command_server.clone_flags == ON_CLONE


# --- write_id_maps ---------------------------------------------------------------------


def spawned(ctx, host):
    """The context as spawn leaves it: a child 4242, payload cgroups made, a channel."""
    from tests.unit.states.fake_host import FakeChannel
    ctx.boot.init_pid = 4242
    ctx.boot.channel = FakeChannel(host.rec)
    for hierarchy in ctx.hierarchies:
        path = os.path.join(hierarchy.home, "lxc.payload.c1")
        os.mkdir(path)
        for name in ("cgroup.procs", *(("tasks",) if hierarchy.version == 1 else
                                       ("cgroup.threads", "cgroup.subtree_control"))):
            open(os.path.join(path, name), "w").close()
        ctx.boot.payload_cgroups.append(path)
    return ctx


@pytest.mark.state("monitor", "write_id_maps")
def test_write_id_maps_writes_both_maps_hands_the_cgroups_to_the_containers_root_group_then_wakes_startup(
        host, run, make_request, monitor_ctx, maps_host):
    ctx = spawned(monitor_ctx(make_request(
        "lxc.idmap = u 0 100000 1000", "lxc.idmap = g 0 200000 65536", "lxc.idmap = u 1000 300000 10")), host)

    assert run("monitor", "write_id_maps", ctx) == "child_spawned"

    assert host.calls("idmap") == [
        ("write_map", 4242, "u", "0 100000 1000\n1000 300000 10\n"),
        ("write_map", 4242, "g", "0 200000 65536\n")]
    cpu, devices, unified = ctx.boot.payload_cgroups
    # Owner stays the host's root (the launcher), the group is the container root's: as LXC.
    chowns = [call[1:] for call in host.calls("os") if call[0] == "chown"]
    assert chowns == [
        (cpu, 0, 200000), (f"{cpu}/cgroup.procs", 0, 200000), (f"{cpu}/tasks", 0, 200000),
        (devices, 0, 200000), (f"{devices}/cgroup.procs", 0, 200000), (f"{devices}/tasks", 0, 200000),
        (unified, 0, 200000), (f"{unified}/cgroup.procs", 0, 200000), (f"{unified}/cgroup.threads", 0, 200000),
        (f"{unified}/cgroup.subtree_control", 0, 200000)]
    modes = {call[1]: call[2] for call in host.calls("os") if call[0] == "chmod"}
    assert modes[cpu] == modes[unified] == 0o775 and modes[f"{unified}/cgroup.procs"] == 0o664
    assert host.names()[-1] == "channel.wake" and host.calls("channel") == [("wake", SyncMsg.STARTUP)]
    assert ctx.boot.undo.changes == []   # the maps die with the namespace, the ownership with the cgroups


@pytest.mark.state("monitor", "write_id_maps")
def test_write_id_maps_refused_by_the_kernel_fails_before_the_child_is_woken(
        host, run, make_request, monitor_ctx, maps_host):
    host.on("idmap.write_map", raises=OSError(errno.EINVAL, "Invalid argument"),
            when=lambda pid, kind, text: kind == "g")
    ctx = spawned(monitor_ctx(make_request(*MAPS)), host)

    error = run.failing("monitor", "write_id_maps", ctx, StateError).value

    assert str(error) == (f"the kernel refused the gid map of lxc.idmap ({ctx.request.config_file}:3): "
                          "Invalid argument (EINVAL)")
    assert host.calls("channel") == []
    assert [call[2] for call in host.calls("idmap")] == ["u", "g"]


# --- the child: startup, become_userns_root --------------------------------------------


@pytest.mark.state("child", "startup")
def test_startup_in_a_user_namespace_goes_on_to_become_its_root(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request(*MAPS))

    assert run("child", "startup", ctx) == "started_in_user_namespace"

    assert host.calls() == [("channel.wait_for", SyncMsg.STARTUP)]


@pytest.fixture
def credentials(host):
    """become_userns_root's os.setgroups / setresgid / setresuid, recorded instead of made."""
    return host.proxy(become_userns_root, "os", setgroups=None, setresgid=None, setresuid=None)


@pytest.mark.state("child", "become_userns_root")
def test_become_userns_root_unshares_the_network_then_drops_groups_switches_to_root_and_rearms(
        host, run, make_request, child_ctx, credentials):
    ctx = child_ctx(make_request(*MAPS))

    assert run("child", "become_userns_root", ctx) == "root_in_user_namespace"

    assert host.calls() == [("kernel.unshare", kernel.CLONE_NEWNET), ("os.setgroups", []),
                            ("os.setresgid", 0, 0, 0), ("os.setresuid", 0, 0, 0),
                            ("kernel.set_dumpable",), ("kernel.set_pdeathsig", signal.SIGKILL)]


@pytest.mark.state("child", "become_userns_root")
def test_become_userns_root_sharing_the_hosts_network_unshares_nothing(
        host, run, make_request, child_ctx, credentials):
    ctx = child_ctx(make_request(*MAPS, "lxc.namespace.keep = net"))

    assert run("child", "become_userns_root", ctx) == "root_in_user_namespace"

    assert "kernel.unshare" not in host.names()


@pytest.mark.state("child", "become_userns_root")
def test_become_userns_root_refused_a_uid_fails(host, run, make_request, child_ctx, credentials):
    host.on("os.setresuid", raises=PermissionError(errno.EPERM, "Operation not permitted"))

    run.failing("child", "become_userns_root", child_ctx(make_request(*MAPS)), PermissionError)

    assert "kernel.set_pdeathsig" not in host.names()


# --- setup_autodev in a user namespace -------------------------------------------------


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_refused_mknod_binds_the_hosts_nodes_from_that_one_on(host, run, make_request, child_ctx):
    """In a user namespace mknod of a device is EPERM: as LXC, from the first refusal on, every
    node is the host's /dev/NAME bound on an empty file (the nodes before it stay made)."""
    def mknod(path, mode=0o600, device=0, *, dir_fd=None):
        if path != "full":
            raise PermissionError(errno.EPERM, "Operation not permitted")
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd))
    host.proxy(setup_autodev, "os", mknod=mknod)
    ctx = child_ctx(make_request(*MAPS))
    run("child", "setup_mounts", ctx)

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    assert [c[1] for c in host.calls("os") if c[0] == "mknod"] == ["full", "null"]   # no third try
    binds = [m for m in host.mounts.view(ctx.rootfs) if m[1] == "bind" and m[4].startswith("/dev/")
             and m[0] != "/dev/ptmx"]
    assert binds == [(f"/dev/{name}", "bind", "", None, f"/dev/{name}")
                     for name in ("null", "random", "tty", "urandom", "zero")]
    dev = Path(ctx.rootfs, "dev")
    assert stat.S_IMODE((dev / "null").stat().st_mode) == 0   # the bind target: an empty file, as LXC's
    assert stat.S_IMODE((dev / "full").stat().st_mode) == 0o666


# --- sync_configure: the network namespace the child made late -------------------------


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_holds_the_network_namespace_the_child_unshared_for_the_stop_hooks(
        host, run, make_request, monitor_ctx):
    ctx = spawned(monitor_ctx(make_request(*MAPS, "lxc.hook.stop = /bin/true")), host)
    ctx.boot.init_pid = os.getpid()   # a pid whose /proc/PID/ns this unprivileged test may open

    assert run("monitor", "sync_configure", ctx) == "network_ready"

    fd = host.keep(ctx.boot.namespace_fds["net"])
    assert os.readlink(f"/proc/self/fd/{fd}") == os.readlink("/proc/self/ns/net")
    assert [(c.kind, c.target) for c in ctx.boot.undo.changes] == [("kept_fd", str(fd))]


@pytest.mark.state("monitor", "sync_configure")
def test_sync_configure_without_a_stop_hook_holds_nothing(host, run, make_request, monitor_ctx):
    ctx = spawned(monitor_ctx(make_request(*MAPS)), host)

    assert run("monitor", "sync_configure", ctx) == "network_ready"

    assert ctx.boot.namespace_fds == {} and ctx.boot.undo.changes == []


@pytest.mark.state("monitor", "spawn")
def test_spawn_with_an_idmap_and_a_stop_hook_holds_the_user_namespace_first_and_not_yet_the_network(
        host, run, make_request, monitor_ctx, cloned):
    ctx = monitor_ctx(make_request(*MAPS, "lxc.hook.stop = /bin/true"))

    def open_(path, flags):   # the child's namespaces are /dev/null here; the cgroup2 directory is real
        return host.keep(os.open("/dev/null" if path.startswith("/proc/4242/") else path, flags))
    host.proxy(spawn, "os", open=open_)

    assert run("monitor", "spawn", ctx) == "child_cloned"

    # As LXC's stop hook arguments: user:..., mnt:..., pid:..., uts:..., ipc:... (net once unshared).
    assert list(ctx.boot.namespace_fds) == ["user", "mnt", "pid", "uts", "ipc"]
    assert [c[1] for c in host.calls("os") if c[0] == "open" and c[1].startswith("/proc/")] == [
        f"/proc/4242/ns/{kind}" for kind in ("user", "mnt", "pid", "uts", "ipc")]


# --- setup_ttys: the host's pty for the console ----------------------------------------


@pytest.mark.state("child", "setup_ttys")
@pytest.mark.parametrize("pty_max,chowned", [("1", True), ("4", False)], ids=["host-pty", "container-pty"])
def test_setup_ttys_gives_a_host_console_pty_to_the_containers_root_as_lxc(
        host, run, make_request, child_ctx, monkeypatch, pty_max, chowned):
    """LXC chowns the host's pty it allocates for the console (lxc_terminal_map_ids); a pty of
    the container's own devpts is the container root's already."""
    from lxcsm.engine.linux import terminal
    from lxcsm.states.child import setup_ttys

    def open_pty(ptmx):
        master, peer = host.pipe()
        return master, peer, 0
    monkeypatch.setattr(terminal, "open_pty", host.rec.fake("terminal.open_pty", open_pty))
    host.proxy(setup_ttys, "os", fchmod=None, fchown=None)
    ctx = child_ctx(make_request(*MAPS, f"lxc.pty.max = {pty_max}"))
    Path(ctx.rootfs, "dev", "pts").mkdir(parents=True)
    Path(ctx.rootfs, "dev", "ptmx").touch()

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    peer = ctx.console[1]
    assert [c[1:] for c in host.calls("os") if c[0] == "fchown"] == ([(peer, 0, 0)] if chowned else [])


# --- setup_mounts: sysfs as LXC's table mounts it ---------------------------------------


@pytest.mark.state("child", "setup_mounts")
@pytest.mark.parametrize("mode,options", [("rw", ""), ("ro", "ro")])
def test_setup_mounts_mounts_sysfs_with_lxcs_flags(host, run, make_request, child_ctx, mode, options):
    """sys:rw (what userns.conf asks) and sys:ro carry no nosuid, nodev or noexec: LXC's
    lxc_mount_auto_mounts() gives those to sys:mixed only (test_child_dev covers that one)."""
    ctx = child_ctx(make_request(*MAPS, f"lxc.mount.auto = sys:{mode}"))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert [m for m in host.mounts.view(ctx.rootfs) if m[0] == "/sys"] == [("/sys", "sysfs", options, None)]
