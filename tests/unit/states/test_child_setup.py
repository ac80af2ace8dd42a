"""The child's setup_* states that build the container's world by kernel calls on paths -
rootfs, hostname, network, seccomp, pivot_root, sysctl, capabilities - each alone.

Their mounts, unshares and prctls go to the fake kernel; the rootfs is a directory
under tmp_path; /proc/sys files land under tmp_path/host.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from lxcsm.engine.linux import kernel
from lxcsm.states.child import setup_hostname, setup_pivot_root, setup_sysctl
from tests.unit.states.fake_kernel import PASS

SLAVE_REC = kernel.MS_SLAVE | kernel.MS_REC

# --- setup_rootfs ----------------------------------------------------------------------


@pytest.mark.state("child", "setup_rootfs")
def test_setup_rootfs_makes_mounts_slaves_runs_pre_mount_then_binds_the_rootfs(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request())
    ctx.rootfs = ""   # not mounted yet
    rootfs = ctx.request.config.rootfs_path

    assert run("child", "setup_rootfs", ctx) == "rootfs_mounted"

    assert host.calls() == [("kernel.mount", None, "/", None, SLAVE_REC),
                            ("hooks.run", "pre-mount"),
                            ("kernel.mount", rootfs, rootfs, None, kernel.MS_BIND | kernel.MS_REC)]
    assert ctx.rootfs == rootfs


@pytest.mark.state("child", "setup_rootfs")
def test_setup_rootfs_binds_at_rootfs_mount_and_remounts_with_rootfs_options(
        host, run, make_request, child_ctx, tmp_path):
    ctx = child_ctx(make_request(f"lxc.rootfs.mount = {tmp_path}/mnt", "lxc.rootfs.options = ro,nosuid"))
    rootfs = ctx.request.config.rootfs_path

    assert run("child", "setup_rootfs", ctx) == "rootfs_mounted"

    assert host.calls("kernel")[1:] == [
        ("mount", rootfs, f"{tmp_path}/mnt", None, kernel.MS_BIND | kernel.MS_REC),
        ("mount", None, f"{tmp_path}/mnt", None,
         kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | kernel.MS_NOSUID)]
    assert ctx.rootfs == f"{tmp_path}/mnt"


@pytest.mark.state("child", "setup_rootfs")
def test_setup_rootfs_mounts_an_overlay_rootfs_as_lxcs_ovl_mount(host, run, make_request, child_ctx, tmp_path):
    lower, upper = tmp_path / "c1" / "rootfs", tmp_path / "c2" / "overlay" / "delta"
    lower.mkdir(parents=True)
    ctx = child_ctx(make_request(f"lxc.rootfs.path = overlay:{lower}:{upper}", "lxc.rootfs.options = nodev"))

    assert run("child", "setup_rootfs", ctx) == "rootfs_mounted"

    work = tmp_path / "c2" / "overlay" / "work"
    assert upper.is_dir() and work.is_dir()   # made when missing, as LXC does
    assert host.calls("kernel")[1:] == [
        ("mount", str(lower), str(lower), "overlay", kernel.MS_NODEV,
         f"upperdir={upper},lowerdir={lower},workdir={work}")]
    assert ctx.rootfs == str(lower)


@pytest.mark.state("child", "setup_rootfs")
def test_setup_rootfs_whose_bind_fails_leaves_no_rootfs(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request())
    ctx.rootfs = ""
    host.on("kernel.mount", raises=FileNotFoundError(errno.ENOENT, "No such file or directory"),
            when=lambda source, *rest: source is not None)

    run.failing("child", "setup_rootfs", ctx, FileNotFoundError)

    assert ctx.rootfs == ""


# --- setup_hostname --------------------------------------------------------------------


@pytest.fixture
def sethostname(host):
    return host.proxy(setup_hostname, "socket", sethostname=None)


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_sets_lxc_uts_name(host, run, make_request, child_ctx, sethostname):
    ctx = child_ctx(make_request("lxc.uts.name = box"))

    assert run("child", "setup_hostname", ctx) == "hostname_set"

    assert host.calls() == [("socket.sethostname", "box"), ("kernel.join_new_session_keyring",)]


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_without_lxc_uts_name_keeps_the_inherited_one(host, run, make_request, child_ctx, sethostname):
    assert run("child", "setup_hostname", child_ctx(make_request())) == "hostname_set"

    assert host.calls() == [("kernel.join_new_session_keyring",)]


@pytest.mark.parametrize("setting", ["lxc.namespace.keep = uts", "lxc.namespace.clone = mnt pid ipc net"])
@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_in_the_hosts_uts_namespace_never_renames_the_host(
        host, run, make_request, child_ctx, sethostname, setting):
    # Without a uts namespace of its own the child is in the host's: lxc.uts.name is not set there.
    request = make_request(setting, "lxc.uts.name = box")

    assert run("child", "setup_hostname", child_ctx(request)) == "hostname_set"

    assert host.calls() == [("kernel.join_new_session_keyring",)]
    assert not any("sethostname" in step for step in setup_hostname.plan(request))


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_with_lxc_keyring_session_1_keeps_the_inherited_keyring(
        host, run, make_request, child_ctx, sethostname):
    # LXC 5.0's parser stores lxc.keyring.session = 1 as "disable the session keyring".
    request = make_request("lxc.keyring.session = 1")
    assert run("child", "setup_hostname", child_ctx(request)) == "hostname_set"

    assert host.calls() == []
    assert "keep the inherited session keyring" in " ".join(setup_hostname.plan(request))


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_where_keyrings_are_refused_goes_on(host, run, make_request, child_ctx, sethostname):
    host.on("kernel.join_new_session_keyring", raises=PermissionError(errno.EACCES, "Permission denied"))
    ctx = child_ctx(make_request())

    assert run("child", "setup_hostname", ctx) == "hostname_set"

    assert ctx.log.named("session keyring kept") == [("debug", {"error": "Permission denied"})]


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_refused_fails(host, run, make_request, child_ctx, sethostname):
    host.on("socket.sethostname", raises=PermissionError(errno.EPERM, "Operation not permitted"))

    run.failing("child", "setup_hostname", child_ctx(make_request("lxc.uts.name = box")), PermissionError)


# --- setup_network ---------------------------------------------------------------------


@pytest.mark.state("child", "setup_network")
def test_setup_network_configures_named_devices_before_kernel_named_ones(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.net.0.type = veth", "lxc.net.0.flags = up",
                                 "lxc.net.1.type = macvlan", "lxc.net.1.link = eth0", "lxc.net.1.name = lan0"))
    veth, macvlan = ctx.request.config.netlink_devices()

    assert run("child", "setup_network", ctx) == "network_configured"

    # lan0 first, so that the kernel-named one cannot take its name; each under its transient name.
    assert host.calls() == [("netlink.configure_in_container", macvlan, "lxcsm1"),
                            ("netlink.configure_in_container", veth, "lxcsm0")]
    assert [fields["name"] for _level, fields in ctx.log.named("network device set up")] == ["lan0", "eth0"]


@pytest.mark.state("child", "setup_network")
def test_setup_network_of_an_empty_network_does_nothing(host, run, make_request, child_ctx):
    assert run("child", "setup_network", child_ctx(make_request("lxc.net.0.type = empty"))) == "network_configured"

    assert host.calls() == []


@pytest.mark.state("child", "setup_network")
def test_setup_network_failing_device_fails(host, run, make_request, child_ctx):
    host.on("netlink.configure_in_container", raises=FileExistsError(errno.EEXIST, "File exists"))

    run.failing("child", "setup_network", child_ctx(make_request("lxc.net.0.type = veth")), FileExistsError)


# --- setup_seccomp ---------------------------------------------------------------------


class FakeFilter:
    """A built seccomp filter (the monitor's init_handler builds it): its load is recorded."""
    def __init__(self, host) -> None:
        self.load = host.rec.fake("seccomp.load")


@pytest.mark.state("child", "setup_seccomp")
def test_setup_seccomp_sets_no_new_privs_loads_the_filter_then_runs_the_start_hooks_under_them(
        host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.no_new_privs = 1", "lxc.hook.start = /bin/true"))
    ctx.seccomp = FakeFilter(host)

    assert run("child", "setup_seccomp", ctx) == "seccomp_loaded"

    # LXC's do_start(): PR_SET_NO_NEW_PRIVS, lxc_seccomp_load(), then the start hooks.
    assert host.names() == ["kernel.set_no_new_privs", "seccomp.load", "hooks.run"]
    assert host.calls("hooks") == [("run", "start")]


@pytest.mark.state("child", "setup_seccomp")
def test_setup_seccomp_without_a_profile_or_no_new_privs_only_runs_the_start_hooks(
        host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.no_new_privs = 0"))

    assert run("child", "setup_seccomp", ctx) == "seccomp_loaded"

    assert host.names() == ["hooks.run"]


@pytest.mark.state("child", "setup_seccomp")
def test_setup_seccomp_refused_load_fails_before_any_start_hook(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.hook.start = /bin/true"))
    ctx.seccomp = FakeFilter(host)
    host.on("seccomp.load", raises=OSError(errno.EINVAL, "seccomp_load: Invalid argument"))

    run.failing("child", "setup_seccomp", ctx, OSError)

    assert host.calls("hooks") == []


# --- setup_pivot_root ------------------------------------------------------------------


@pytest.fixture
def cwd_calls(host, monkeypatch, tmp_path):
    """setup_pivot_root's fchdir and chdir, recorded (not made); `dirs` says where each fchdir
    was to go."""
    monkeypatch.chdir(tmp_path)
    dirs: list[str] = []
    host.proxy(setup_pivot_root, "os", chdir=None,
               fchdir=lambda fd: dirs.append(os.readlink(f"/proc/self/fd/{fd}")))
    return dirs


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.mark.state("child", "setup_pivot_root")
def test_setup_pivot_root_pivots_in_the_rootfs_and_detaches_the_old_root_as_a_slave(
        host, run, make_request, child_ctx, cwd_calls):
    ctx = child_ctx(make_request())
    before = open_fds()

    assert run("child", "setup_pivot_root", ctx) == "root_pivoted"

    # Into the new root, which pivot_root(".", ".") makes / with the old root stacked on it;
    # onto the old root, made a slave (nothing propagates out) and detached; back; chdir /.
    # Then, as LXC, every mount of the new root shared, in peer groups of its own.
    assert host.names() == ["os.fchdir", "kernel.pivot_root", "os.fchdir", "kernel.mount", "kernel.umount2",
                            "os.fchdir", "kernel.mount", "os.chdir"]
    assert cwd_calls == [ctx.rootfs, "/", ctx.rootfs]
    assert host.calls("kernel") == [("pivot_root", ".", "."),
                                    ("mount", None, ".", None, kernel.MS_SLAVE | kernel.MS_REC),
                                    ("umount2", ".", kernel.MNT_DETACH),
                                    ("mount", None, ".", None, kernel.MS_SHARED | kernel.MS_REC)]
    assert host.calls("os")[-1] == ("chdir", "/")
    assert open_fds() == before   # both directory fds closed


@pytest.mark.state("child", "setup_pivot_root")
def test_setup_pivot_root_refused_fails_without_leaking_its_fds(host, run, make_request, child_ctx, cwd_calls):
    host.on("kernel.pivot_root", raises=OSError(errno.EINVAL, "Invalid argument"))
    ctx = child_ctx(make_request())
    before = open_fds()

    run.failing("child", "setup_pivot_root", ctx, OSError)

    assert host.names("kernel") == ["kernel.pivot_root"]   # the host's root is never touched
    assert open_fds() == before


# --- setup_sysctl ----------------------------------------------------------------------


@pytest.fixture
def boot_id_file(host):
    """setup_sysctl's os, recorded: /proc/sys/kernel/random/boot_id exists, and what is written
    to /dev/.lxc-boot-id goes into a pipe whose read end this returns."""
    read, write = host.pipe()
    host.proxy(setup_sysctl, "os", access=lambda path, mode: True, open=lambda path, flags, mode: write,
               write=PASS, fchmod=None, close=None, unlink=None)
    return read


@pytest.mark.state("child", "setup_sysctl")
def test_setup_sysctl_binds_a_fresh_boot_id_read_only_over_the_kernels(host, run, make_request, child_ctx,
                                                                        boot_id_file):
    ctx = child_ctx(make_request())

    assert run("child", "setup_sysctl", ctx) == "sysctls_set"

    fresh, proc = setup_sysctl.FRESH_BOOT_ID, setup_sysctl.BOOT_ID
    written = os.read(boot_id_file, 100).decode()
    assert str(uuid.UUID(written.strip())) == written.strip() and written.endswith("\n")
    assert uuid.UUID(written.strip()).version == 4
    assert host.calls("os")[:2] == [("access", proc, os.F_OK),
                                    ("open", fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o444)]
    assert ("fchmod", host.calls("os")[2][1], 0o444) in host.calls("os")
    assert host.calls("kernel") == [
        ("mount", fresh, proc, None, kernel.MS_BIND),
        ("mount", None, proc, None, kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID
         | kernel.MS_NOEXEC | kernel.MS_NODEV)]


@pytest.mark.state("child", "setup_sysctl")
def test_setup_sysctl_leaves_the_boot_id_alone_without_autodev_or_if_binding_fails(
        host, run, make_request, child_ctx, boot_id_file):
    ctx = child_ctx(make_request("lxc.autodev = 0"))
    assert run("child", "setup_sysctl", ctx) == "sysctls_set"
    assert host.calls() == []

    host.on("kernel.mount", raises=OSError(errno.EPERM, "Operation not permitted"))
    ctx = child_ctx(make_request())
    assert run("child", "setup_sysctl", ctx) == "sysctls_set"   # best-effort, as LXC
    assert host.calls("os")[-1] == ("unlink", setup_sysctl.FRESH_BOOT_ID)
    [(level, _fields)] = ctx.log.named("boot id left as the host's")
    assert level == "info"


@pytest.mark.state("child", "setup_sysctl")
def test_setup_sysctl_writes_each_key_to_proc_sys_in_config_order(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.autodev = 0", "lxc.sysctl.net.ipv4.ip_forward = 1",
                                 "lxc.sysctl.kernel.msgmax = 16384"))

    assert run("child", "setup_sysctl", ctx) == "sysctls_set"

    assert host.calls() == [("files.write", "/proc/sys/net/ipv4/ip_forward", "1"),
                            ("files.write", "/proc/sys/kernel/msgmax", "16384")]
    assert host.files.path("/proc/sys/net/ipv4/ip_forward").read_text() == "1"


@pytest.mark.state("child", "setup_sysctl")
@pytest.mark.parametrize("arch, persona", [("i686", 0x0008), ("armhf", 0x0008), ("x86_64", 0), ("arm64", 0)])
def test_setup_sysctl_sets_lxc_archs_personality_after_the_boot_id_before_the_sysctls(
        host, run, make_request, child_ctx, arch, persona):
    ctx = child_ctx(make_request("lxc.autodev = 0", f"lxc.arch = {arch}", "lxc.sysctl.kernel.msgmax = 16384"))

    assert run("child", "setup_sysctl", ctx) == "sysctls_set"

    # As LXC's lxc_setup(): setup_personality() between the boot id and the sysctls.
    assert host.calls() == [("kernel.set_personality", persona), ("files.write", "/proc/sys/kernel/msgmax", "16384")]


@pytest.mark.state("child", "setup_sysctl")
def test_setup_sysctl_refused_value_fails_naming_the_setting(host, run, make_request, child_ctx):
    Path(host.files.path("/proc/sys/net/ipv4/ip_forward")).mkdir(parents=True)   # so that the write fails
    ctx = child_ctx(make_request("lxc.autodev = 0", "lxc.sysctl.net.ipv4.ip_forward = 1"))

    info = run.failing("child", "setup_sysctl", ctx, OSError)

    assert info.value.strerror.startswith(f"{ctx.request.config.path}:3: lxc.sysctl.net.ipv4.ip_forward: "
                                          "writing '1': ")


# --- setup_capabilities ----------------------------------------------------------------


@pytest.mark.state("child", "setup_capabilities")
def test_setup_capabilities_drops_lxc_cap_drop_from_the_bounding_set(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.cap.drop = sys_module mknod", "lxc.cap.drop = sys_time"))

    assert run("child", "setup_capabilities", ctx) == "capabilities_set"

    caps = kernel.CAPABILITIES
    assert host.calls() == [("kernel.last_capability",),
                            ("kernel.drop_bounding_capability", caps["sys_module"]),
                            ("kernel.drop_bounding_capability", caps["sys_time"]),
                            ("kernel.drop_bounding_capability", caps["mknod"])]
    [(_level, fields)] = ctx.log.named("capabilities dropped")
    assert fields["caps"] == "sys_module sys_time mknod"


@pytest.mark.state("child", "setup_capabilities")
def test_setup_capabilities_with_lxc_cap_keep_drops_every_other_capability_the_kernel_has(
        host, run, make_request, child_ctx):
    host.on("kernel.last_capability", 5)   # a kernel that knows chown..kill
    ctx = child_ctx(make_request("lxc.cap.keep = chown kill"))

    assert run("child", "setup_capabilities", ctx) == "capabilities_set"

    assert host.calls("kernel") == [("last_capability",)] + [("drop_bounding_capability", cap) for cap in (1, 2, 3, 4)]


@pytest.mark.state("child", "setup_capabilities")
def test_setup_capabilities_without_either_key_keeps_the_set_whole(host, run, make_request, child_ctx):
    assert run("child", "setup_capabilities", child_ctx(make_request())) == "capabilities_set"

    assert host.names() == ["kernel.last_capability"]


@pytest.mark.state("child", "setup_capabilities")
def test_setup_capabilities_refused_drop_fails(host, run, make_request, child_ctx):
    host.on("kernel.drop_bounding_capability", raises=PermissionError(errno.EPERM, "Operation not permitted"))

    run.failing("child", "setup_capabilities", child_ctx(make_request("lxc.cap.drop = mknod")), PermissionError)
