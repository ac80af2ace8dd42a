"""The child's setup_* states that build the container's world by kernel calls on paths -
rootfs, hostname, network, seccomp, pivot_root, sysctl, capabilities - each alone.

Their mounts, unshares and prctls go to the fake kernel; the rootfs is a directory
under tmp_path; /proc/sys files land under tmp_path/host.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lxcsm.engine.linux import kernel, seccomp
from lxcsm.states.child import setup_hostname, setup_pivot_root

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

    assert host.calls() == [("socket.sethostname", "box")]


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_without_lxc_uts_name_keeps_the_inherited_one(host, run, make_request, child_ctx, sethostname):
    assert run("child", "setup_hostname", child_ctx(make_request())) == "hostname_set"

    assert host.calls() == []


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


@pytest.fixture
def filters(host, monkeypatch):
    """seccomp.Filter(policy, machine), recorded: built, never loaded here."""
    class FakeFilter:
        def __init__(self, policy, machine) -> None:
            host.rec.call("seccomp.Filter", (machine,), {})
            self.policy, self.machine, self.skipped = policy, machine, ["not_a_syscall"]
            self.load = host.rec.fake("seccomp.load")
    monkeypatch.setattr(seccomp, "Filter", FakeFilter)


@pytest.mark.state("child", "setup_seccomp")
def test_setup_seccomp_builds_the_filter_of_the_last_profile_for_exec_to_load(
        host, run, make_request, child_ctx, filters, tmp_path):
    (tmp_path / "first.seccomp").write_text("2\ndenylist\nmount\n")
    (tmp_path / "last.seccomp").write_text("2\ndenylist\n[all]\nmknod errno 1\nnot_a_syscall\n")
    ctx = child_ctx(make_request(f"lxc.seccomp.profile = {tmp_path}/first.seccomp",
                                 f"lxc.seccomp.profile = {tmp_path}/last.seccomp"))

    assert run("child", "setup_seccomp", ctx) == "seccomp_built"

    assert host.calls() == [("seccomp.Filter", os.uname().machine)]   # and no seccomp.load: exec's job
    assert [rule.syscall for rule in ctx.seccomp.policy.rules] == ["mknod", "not_a_syscall"]
    [(_level, fields)] = ctx.log.named("seccomp filter built")
    assert (fields["rules"], fields["skipped"]) == (2, "not_a_syscall")


@pytest.mark.state("child", "setup_seccomp")
def test_setup_seccomp_without_a_profile_builds_nothing(host, run, make_request, child_ctx, filters):
    ctx = child_ctx(make_request())

    assert run("child", "setup_seccomp", ctx) == "seccomp_built"

    assert host.calls() == [] and ctx.seccomp is None


@pytest.mark.state("child", "setup_seccomp")
def test_setup_seccomp_with_its_policy_gone_fails(host, run, make_request, child_ctx, filters, tmp_path):
    policy = tmp_path / "gone.seccomp"
    policy.write_text("2\ndenylist\n")
    ctx = child_ctx(make_request(f"lxc.seccomp.profile = {policy}"))
    policy.unlink()   # between preflight and the child

    run.failing("child", "setup_seccomp", ctx, OSError)

    assert ctx.seccomp is None


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
    assert host.names() == ["os.fchdir", "kernel.pivot_root", "os.fchdir", "kernel.mount", "kernel.umount2",
                            "os.fchdir", "os.chdir"]
    assert cwd_calls == [ctx.rootfs, "/", ctx.rootfs]
    assert host.calls("kernel") == [("pivot_root", ".", "."),
                                    ("mount", None, ".", None, kernel.MS_SLAVE | kernel.MS_REC),
                                    ("umount2", ".", kernel.MNT_DETACH)]
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


@pytest.mark.state("child", "setup_sysctl")
def test_setup_sysctl_writes_each_key_to_proc_sys_in_config_order(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.sysctl.net.ipv4.ip_forward = 1", "lxc.sysctl.kernel.msgmax = 16384"))

    assert run("child", "setup_sysctl", ctx) == "sysctls_set"

    assert host.calls() == [("files.write", "/proc/sys/net/ipv4/ip_forward", "1"),
                            ("files.write", "/proc/sys/kernel/msgmax", "16384")]
    assert host.files.path("/proc/sys/net/ipv4/ip_forward").read_text() == "1"


@pytest.mark.state("child", "setup_sysctl")
def test_setup_sysctl_refused_value_fails_naming_the_setting(host, run, make_request, child_ctx):
    Path(host.files.path("/proc/sys/net/ipv4/ip_forward")).mkdir(parents=True)   # so that the write fails
    ctx = child_ctx(make_request("lxc.sysctl.net.ipv4.ip_forward = 1"))

    info = run.failing("child", "setup_sysctl", ctx, OSError)

    assert info.value.strerror.startswith(f"{ctx.request.config.path}:2: lxc.sysctl.net.ipv4.ip_forward: "
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
