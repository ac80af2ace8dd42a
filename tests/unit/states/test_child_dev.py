"""The child's states that fill the rootfs with mounts - setup_mounts, setup_autodev,
setup_ttys - each alone (setup_autodev after the setup_mounts that puts its tmpfs on /dev).

What they mount is checked as the mount table the fake kernel keeps (fake_kernel.MountTable):
where, what, with which options and data, in the order the mounts were attached.  That
holds whether a state mounts with mount(2) on paths or through the new mount API on file
descriptors (fsopen/fsmount/open_tree/move_mount): the table is what the kernel would
show in /proc/self/mountinfo, the calls only how it was asked.  A new filesystem of the
mount API is a directory of the fake's (`host.mounts.contents(target)`), so what a state
makes in it (device nodes, links) can be looked at too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import terminal
from lxcsm.states.child import setup_autodev
from tests.unit.states.conftest import identity, still_open

SAFE = "nodev,noexec,nosuid"

# --- setup_autodev ---------------------------------------------------------------------


@pytest.fixture
def mknod(host):
    """setup_autodev's os.mknod, recorded; it makes an empty regular file where the node would be."""
    def make(path, mode=0o600, device=0, *, dir_fd=None):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd))
    host.proxy(setup_autodev, "os", mknod=make)


def nodes_made(host) -> list[tuple[str, int, int]]:
    return [(os.path.basename(call[1]), call[2], call[3]) for call in host.calls("os") if call[0] == "mknod"]


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_runs_the_autodev_hooks_then_fills_the_tmpfs_with_nodes_its_own_devpts_and_ptmx(
        host, run, make_request, child_ctx, mknod):
    ctx = child_ctx(make_request("lxc.pty.max = 64"))
    assert run("child", "setup_mounts", ctx) == "mounts_done"
    assert host.mounts.view(ctx.rootfs) == [("/dev", "tmpfs", "", "size=500000,mode=755")]
    assert sorted(p.name for p in host.mounts.contents(f"{ctx.rootfs}/dev").iterdir()) == ["pts"]   # LXC's too
    before = len(host.names())

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    # As LXC: the autodev hooks first, on the empty tmpfs; then the nodes.
    assert host.names()[before] == "hooks.run" and host.calls("hooks")[-1] == ("run", "autodev")
    assert host.names().index("os.mknod") > before
    assert host.mounts.view(ctx.rootfs) == [
        ("/dev", "tmpfs", "", "size=500000,mode=755"),
        ("/dev/pts", "devpts", "noexec,nosuid", "newinstance,ptmxmode=0666,mode=0620,gid=5,max=64"),
        ("/dev/ptmx", "bind", "", None, "/dev/pts/ptmx"),
    ]
    assert nodes_made(host) == [(name, stat.S_IFCHR | 0o666, os.makedev(major, minor))
                                for name, (major, minor) in setup_autodev.NODES.items()]
    # Made in /dev as opened inside the rootfs (the real kernel crosses into the tmpfs there;
    # the fake's openat2 does not cross mounts, so they are in the directory under it).
    dev = Path(ctx.rootfs, "dev")
    for name in setup_autodev.NODES:
        assert stat.S_IMODE((dev / name).stat().st_mode) == 0o666   # not cut by the umask
    assert {name: os.readlink(dev / name) for name in setup_autodev.LINKS} == setup_autodev.LINKS
    assert (dev / "pts").is_dir() and (dev / "ptmx").exists()


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_without_lxc_pty_max_leaves_devpts_unlimited(host, run, make_request, child_ctx, mknod):
    ctx = child_ctx(make_request())
    run("child", "setup_mounts", ctx)

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    assert host.mounts.view(ctx.rootfs)[1] == ("/dev/pts", "devpts", "noexec,nosuid",
                                               "newinstance,ptmxmode=0666,mode=0620,gid=5")


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_off_keeps_the_rootfs_dev_adding_only_the_missing_links(
        host, run, make_request, child_ctx, mknod):
    ctx = child_ctx(make_request("lxc.autodev = 0"))
    dev = Path(ctx.rootfs, "dev")
    dev.mkdir()
    (dev / "stdin").write_text("the rootfs's")

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    # No hook, no node, no devpts (no pty wanted); LXC's lxc_setup_dev_symlinks() keeps what is there.
    assert "hooks.run" not in host.names() and nodes_made(host) == [] and host.mounts.view() == []
    assert (dev / "stdin").read_text() == "the rootfs's"
    assert {name: os.readlink(dev / name) for name in ("fd", "stdout", "stderr")} == {
        name: setup_autodev.LINKS[name] for name in ("fd", "stdout", "stderr")}
    assert sorted(p.name for p in dev.iterdir()) == ["fd", "stderr", "stdin", "stdout"]


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_off_with_ttys_alone_mounts_no_devpts_as_lxc_unmounts_it(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.autodev = 0", "lxc.tty.max = 2"))
    Path(ctx.rootfs, "dev").mkdir()

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    assert host.mounts.view() == [] and not Path(ctx.rootfs, "dev", "pts").exists()


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_off_with_pty_max_mounts_the_devpts_on_the_rootfs_dev(host, run, make_request, child_ctx, mknod):
    ctx = child_ctx(make_request("lxc.autodev = 0", "lxc.tty.max = 2", "lxc.pty.max = 10"))
    dev = Path(ctx.rootfs, "dev")
    dev.mkdir()   # a plain directory: no pts, no ptmx

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    # As LXC's lxc_setup_devpts_child(): sized pty.max + tty.max, /dev/pts and /dev/ptmx made in the rootfs.
    assert host.mounts.view(ctx.rootfs) == [
        ("/dev/pts", "devpts", "noexec,nosuid", "newinstance,ptmxmode=0666,mode=0620,gid=5,max=12"),
        ("/dev/ptmx", "bind", "", None, "/dev/pts/ptmx"),
    ]
    assert (dev / "pts").is_dir() and (dev / "ptmx").is_file() and nodes_made(host) == []


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_off_on_a_read_only_dev_warns_for_each_link_as_lxc_does(
        host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.autodev = 0"))
    Path(ctx.rootfs, "dev").mkdir()

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    host.proxy(setup_autodev, "os", symlink=read_only)

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    assert [level for level, _fields in ctx.log.named("dev link not made")] == ["warn"] * 4
    assert host.mounts.view() == [] and list(Path(ctx.rootfs, "dev").iterdir()) == []


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_keeps_a_node_an_autodev_hook_made(host, run, make_request, child_ctx, mknod):
    ctx = child_ctx(make_request())
    run("child", "setup_mounts", ctx)
    Path(ctx.rootfs, "dev", "null").write_text("the hook's")   # /dev as the state opens it (see above)

    assert run("child", "setup_autodev", ctx) == "dev_ready"

    assert Path(ctx.rootfs, "dev", "null").read_text() == "the hook's"
    assert [name for name, _mode, _dev in nodes_made(host)] == list(setup_autodev.NODES)   # null: EEXIST


@pytest.mark.state("child", "setup_autodev")
def test_setup_autodev_failing_mknod_fails_after_the_tmpfs(host, run, make_request, child_ctx, mknod):
    # (EPERM is not a failure: the host's nodes are bound instead, see test_userns.py)
    host.on("os.mknod", raises=OSError(errno.ENOSPC, "No space left on device"))
    ctx = child_ctx(make_request())
    run("child", "setup_mounts", ctx)

    run.failing("child", "setup_autodev", ctx, OSError)

    assert [m[:2] for m in host.mounts.view(ctx.rootfs)] == [("/dev", "tmpfs")]   # no devpts


# --- setup_mounts ----------------------------------------------------------------------


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_mounts_proc_sys_the_entries_then_the_cgroups_then_runs_the_hooks(
        host, run, make_request, child_ctx, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    ctx = child_ctx(make_request("lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed:force",
                                 f"lxc.mount.entry = {share} srv none bind,ro,create=dir 0 0",
                                 "lxc.mount.entry = tmpfs dev/shm tmpfs defaults,create=dir 0 0"))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert host.mounts.view(ctx.rootfs) == [
        # lxc.autodev: an empty tmpfs on /dev first, as LXC's mount_autodev()
        ("/dev", "tmpfs", "", "size=500000,mode=755"),
        # proc:mixed - /proc/sys read-only but for /proc/sys/net, /proc/sysrq-trigger read-only;
        # the read-only binds with "ro" alone (LXC's remount), the net bind with proc's flags
        ("/proc", "proc", SAFE, None),
        ("/proc/sys", "bind", "ro", None, "/proc/sys"),
        ("/proc/sys/net", "bind", SAFE, None, "/proc/sys/net"),
        ("/proc/sysrq-trigger", "bind", "ro", None, "/proc/sysrq-trigger"),
        # sys:mixed - read-only but for /sys/devices/virtual/net
        ("/sys", "sysfs", f"{SAFE},ro", None),
        ("/sys/devices/virtual/net", "bind", SAFE, None, "/sys/devices/virtual/net"),
        # the entries, in order: a bind remounted read-only, a tmpfs
        ("/srv", "bind", "ro", None, str(share)),
        ("/dev/shm", "tmpfs", "", None),
        # cgroup:mixed - each hierarchy on a tmpfs, which stays writable (LXC's does)
        ("/sys/fs/cgroup", "tmpfs", SAFE, "size=10240k,mode=755"),
        ("/sys/fs/cgroup/cpu", "cgroup", SAFE, "cpu,cpuacct"),
        ("/sys/fs/cgroup/devices", "cgroup", SAFE, "devices"),
        ("/sys/fs/cgroup/unified", "cgroup2", SAFE, None),
    ]
    assert Path(ctx.rootfs, "srv").is_dir() and Path(ctx.rootfs, "dev", "shm").is_dir()   # create=dir
    # The mount hooks after every mount; the autodev hooks are setup_autodev's.
    assert host.calls("hooks") == [("run", "mount")]
    assert host.names()[-1] == "hooks.run"


@pytest.mark.state("child", "setup_mounts")
@pytest.mark.parametrize("caps", ["lxc.cap.drop = net_admin", "lxc.cap.keep = sys_admin setuid setgid"])
def test_setup_mounts_leaves_proc_sys_net_read_only_without_cap_net_admin(
        host, run, make_request, child_ctx, caps):
    ctx = child_ctx(make_request("lxc.autodev = 0", "lxc.mount.auto = proc:mixed", caps))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    # LXC's lxc_mount_auto_mounts() skips the net bind for a container that loses CAP_NET_ADMIN.
    assert host.mounts.view(ctx.rootfs) == [
        ("/proc", "proc", SAFE, None),
        ("/proc/sys", "bind", "ro", None, "/proc/sys"),
        ("/proc/sysrq-trigger", "bind", "ro", None, "/proc/sysrq-trigger"),
    ]


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_gives_the_cgroup_mounts_no_source_as_lxc_does(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.mount.auto = proc:mixed sys:ro cgroup:mixed:force"))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    # mountinfo's source: "proc" and "sysfs", as LXC names them; none for the cgroups' tmpfs and
    # hierarchies (LXC's fs_prepare() sets no source), which mountinfo shows as "none".
    sources = {mount.view(ctx.rootfs)[0]: mount.source for mount in host.mounts.mounts
               if mount.fstype not in ("bind", "rbind")}
    assert (sources["/proc"], sources["/sys"]) == ("proc", "sysfs")
    cgroup_mounts = [target for target in sources if target.startswith("/sys/fs/cgroup")]
    assert len(cgroup_mounts) == 4 and all(sources[target] is None for target in cgroup_mounts)


@pytest.mark.state("child", "setup_mounts")
@pytest.mark.parametrize("size, options", [("0", "size=500000,mode=755"), ("1048576", "size=1048576,mode=755")])
def test_setup_mounts_sizes_the_dev_tmpfs_by_lxc_autodev_tmpfs_size(host, run, make_request, child_ctx, size, options):
    ctx = child_ctx(make_request(f"lxc.autodev.tmpfs.size = {size}"))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    # In bytes, as LXC's mount_autodev() passes it; 0 is LXC's default.
    assert host.mounts.view(ctx.rootfs) == [("/dev", "tmpfs", "", options)]


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_with_nothing_to_mount_only_runs_the_mount_hooks(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.autodev = 0"))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert host.mounts.view() == []
    assert host.calls("hooks") == [("run", "mount")]


@pytest.mark.state("child", "setup_mounts")
@pytest.mark.parametrize("token,extra,mounted", [
    ("cgroup:mixed", (), False),                          # keeps CAP_SYS_ADMIN: its init mounts them
    ("cgroup:rw", (), False),
    ("cgroup:mixed:force", (), True),
    ("cgroup:mixed", ("lxc.cap.drop = sys_admin",), True),   # could not mount them itself
    ("cgroup:mixed", ("lxc.namespace.keep = cgroup",), True),
])
def test_setup_mounts_mounts_the_cgroups_where_lxc_does(host, run, make_request, child_ctx, token, extra, mounted):
    ctx = child_ctx(make_request("lxc.autodev = 0", f"lxc.mount.auto = {token}", *extra))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert any(m[0] == "/sys/fs/cgroup" for m in host.mounts.view(ctx.rootfs)) == mounted


@pytest.fixture
def refuse_share(host, tmp_path):
    """Mounting tmp_path/share fails with EPERM, whether asked by path (mount) or by fd (open_tree)."""
    share = tmp_path / "share"
    share.mkdir()
    eperm = PermissionError(errno.EPERM, "Operation not permitted")
    host.on("kernel.mount", raises=eperm, when=lambda source, *args, **kwargs: source == str(share))
    host.on("kernel.open_tree", raises=eperm, when=lambda dirfd, path, flags: path == str(share))
    return share


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_failing_entry_fails_naming_its_file_and_line(
        host, run, make_request, child_ctx, refuse_share):
    ctx = child_ctx(make_request("lxc.mount.auto = proc:rw",
                                 f"lxc.mount.entry = {refuse_share} srv none bind,create=dir 0 0"))

    info = run.failing("child", "setup_mounts", ctx, StateError)

    assert str(info.value) == (f"{ctx.request.config.path}:3: lxc.mount.entry: mounting {refuse_share} on srv: "
                               "Operation not permitted (EPERM)")
    assert host.calls("hooks") == []


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_skips_a_failing_optional_entry(host, run, make_request, child_ctx, refuse_share):
    ctx = child_ctx(make_request(f"lxc.mount.entry = {refuse_share} srv none bind,optional,create=dir 0 0",
                                 "lxc.mount.entry = tmpfs tmp tmpfs defaults,create=dir 0 0"))

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert host.mounts.view(ctx.rootfs)[1:] == [("/tmp", "tmpfs", "", None)]   # after /dev's tmpfs
    [(level, fields)] = ctx.log.named("optional mount skipped")
    assert level == "info" and fields["entry"] == f"{ctx.request.config.path}:2: lxc.mount.entry"


# --- setup_ttys ------------------------------------------------------------------------


@pytest.fixture
def ptys(host, monkeypatch, child_ctx, make_request):
    """terminal.open_pty, recorded: each pty is a pipe (master, peer); `made` keeps (master, peer,
    what the peer's fd points at, the ptmx it was opened through, the peer fd's identity)."""
    made: list[tuple[int, int, str, str, tuple[int, int]]] = []

    def open_pty(ptmx):
        master, peer = host.pipe()
        made.append((master, peer, os.readlink(f"/proc/self/fd/{peer}"), os.path.realpath(ptmx), identity(peer)))
        return master, peer, len(made) - 1

    monkeypatch.setattr(terminal, "open_pty", host.rec.fake("terminal.open_pty", open_pty))
    return made


def with_dev(ctx):
    """The rootfs as setup_autodev leaves it: a /dev with a ptmx and a pts."""
    Path(ctx.rootfs, "dev", "pts").mkdir(parents=True)
    Path(ctx.rootfs, "dev", "ptmx").touch()
    return ctx


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_binds_a_pty_on_dev_console_and_each_dev_ttyN_keeping_masters_and_peers(
        host, run, make_request, child_ctx, ptys):
    ctx = with_dev(child_ctx(make_request("lxc.tty.max = 2", "lxc.pty.max = 2")))

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    console, tty1, tty2 = ptys
    assert {pty[3] for pty in ptys} == {f"{ctx.rootfs}/dev/ptmx"}   # the container's devpts, not the host's
    assert host.mounts.view(ctx.rootfs) == [("/dev/console", "bind", "", None, console[2]),
                                            ("/dev/tty1", "bind", "", None, tty1[2]),
                                            ("/dev/tty2", "bind", "", None, tty2[2])]
    assert all(Path(ctx.rootfs, "dev", name).is_file() for name in ("console", "tty1", "tty2"))
    # The monitor gets masters and peers at FDS, and the devpts for lxc-attach.
    assert ctx.console == (console[0], console[1]) and still_open(console[1], console[4])
    assert ctx.tty_masters == [tty1[0], tty2[0]] and ctx.tty_peers == [tty1[1], tty2[1]]
    assert still_open(tty1[1], tty1[4]) and still_open(tty2[1], tty2[4])
    assert os.readlink(f"/proc/self/fd/{ctx.devpts}") == f"{ctx.rootfs}/dev/pts"


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_takes_the_console_from_the_hosts_devpts_when_pty_max_leaves_no_room(
        host, run, make_request, child_ctx, ptys):
    """LXC's busybox template: lxc.pty.max = 1, lxc.tty.max = 5."""
    ctx = with_dev(child_ctx(make_request("lxc.tty.max = 1", "lxc.pty.max = 1")))

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    console, tty1 = ptys
    assert console[3] == "/dev/ptmx" and tty1[3] == f"{ctx.rootfs}/dev/ptmx"
    assert host.mounts.view(ctx.rootfs) == [("/dev/console", "bind", "", None, console[2]),
                                            ("/dev/tty1", "bind", "", None, tty1[2])]


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_with_lxc_tty_dir_binds_them_in_it_and_links_dev_ttyN_there(
        host, run, make_request, child_ctx, ptys):
    ctx = with_dev(child_ctx(make_request("lxc.tty.max = 2", "lxc.pty.max = 4", "lxc.tty.dir = lxc")))

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    console, tty1, tty2 = ptys
    view = host.mounts.view(ctx.rootfs)
    # As LXC's lxc_setup_ttydir_console() and lxc_setup_ttys().
    assert view[:1] == [("/dev/lxc/console", "bind", "", None, console[2])]
    assert [mount[0] for mount in view[1:]] == ["/dev/console", "/dev/lxc/tty1", "/dev/lxc/tty2"]
    assert view[2:] == [("/dev/lxc/tty1", "bind", "", None, tty1[2]), ("/dev/lxc/tty2", "bind", "", None, tty2[2])]
    assert [os.readlink(Path(ctx.rootfs, "dev", f"tty{n}")) for n in (1, 2)] == ["lxc/tty1", "lxc/tty2"]


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_without_a_console_or_ttys_opens_no_pty(host, run, make_request, child_ctx, ptys):
    ctx = with_dev(child_ctx(make_request("lxc.console.path = none")))

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    assert "terminal.open_pty" not in host.names() and host.mounts.view() == []
    assert ctx.console is None and ctx.tty_masters == []
    assert os.readlink(f"/proc/self/fd/{ctx.devpts}") == f"{ctx.rootfs}/dev/pts"   # for lxc-attach still


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_with_autodev_off_binds_onto_the_rootfs_dev_making_missing_targets(
        host, run, make_request, child_ctx, ptys):
    ctx = with_dev(child_ctx(make_request("lxc.autodev = 0", "lxc.tty.max = 2", "lxc.pty.max = 1")))

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    console, tty1, tty2 = ptys
    assert console[3] == "/dev/ptmx" and {tty1[3], tty2[3]} == {f"{ctx.rootfs}/dev/ptmx"}   # LXC's pty.max <= 1
    assert host.mounts.view(ctx.rootfs) == [("/dev/console", "bind", "", None, console[2]),
                                            ("/dev/tty1", "bind", "", None, tty1[2]),
                                            ("/dev/tty2", "bind", "", None, tty2[2])]
    assert all(Path(ctx.rootfs, "dev", name).is_file() for name in ("console", "tty1", "tty2"))


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_with_autodev_off_and_no_pty_max_takes_the_ttys_from_the_hosts_devpts_as_lxc(
        host, run, make_request, child_ctx, ptys):
    ctx = child_ctx(make_request("lxc.autodev = 0", "lxc.tty.max = 2"))
    Path(ctx.rootfs, "dev").mkdir()   # no devpts of the container's (LXC unmounts it without lxc.pty.max)

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    assert [pty[3] for pty in ptys] == ["/dev/ptmx"] * 3 and ctx.devpts == -1
    assert [mount[0] for mount in host.mounts.view(ctx.rootfs)] == ["/dev/console", "/dev/tty1", "/dev/tty2"]


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_with_autodev_off_and_no_pty_wanted_binds_only_a_host_console(
        host, run, make_request, child_ctx, ptys):
    ctx = child_ctx(make_request("lxc.autodev = 0"))
    Path(ctx.rootfs, "dev").mkdir()   # no devpts was mounted: no pts, no ptmx

    assert run("child", "setup_ttys", ctx) == "ttys_created"

    (console,) = ptys
    assert console[3] == "/dev/ptmx" and ctx.devpts == -1 and ctx.tty_masters == []
    assert host.mounts.view(ctx.rootfs) == [("/dev/console", "bind", "", None, console[2])]


@pytest.mark.state("child", "setup_ttys")
def test_setup_ttys_out_of_ptys_fails(host, run, make_request, child_ctx, ptys):
    host.on("terminal.open_pty", raises=OSError(errno.ENOSPC, "No space left on device"))
    ctx = with_dev(child_ctx(make_request("lxc.tty.max = 1")))

    run.failing("child", "setup_ttys", ctx, OSError)

    assert host.mounts.view() == []
