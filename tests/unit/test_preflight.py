"""preflight: what a start checks before it changes anything (what LXC would fail on halfway)."""

import pytest

from lxcsm.engine.config import preflight
from lxcsm.engine.config.model import ConfigError
from lxcsm.engine.linux import cgroups
from tests.unit.config_text import COMMON_SECCOMP, lines_run, load_text


@pytest.fixture
def start_checks(tmp_path, monkeypatch):
    """check(lines) runs preflight on a config with a minimal rootfs (/bin/true in it)
    and a made-up host: interfaces lo and br0, cgroup v1 memory and cgroup2 with pids."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "true").write_text("")
    (rootfs / "bin" / "true").chmod(0o755)
    interfaces = {"lo": "", "br0": "bridge", "eth9": ""}   # br0 is a bridge, eth9 is not
    monkeypatch.setattr(preflight, "_interface_exists", lambda name: name in interfaces)
    monkeypatch.setattr(preflight, "_is_bridge", lambda name: interfaces.get(name) == "bridge")
    memory, unified = tmp_path / "cg" / "memory", tmp_path / "cg" / "unified"
    memory.mkdir(parents=True)
    unified.mkdir()
    (memory / "memory.limit_in_bytes").write_text("")
    # Some files only cgroups below the root have: the root is the home here, a child tells.
    (memory / "other").mkdir()
    for name in ("memory.limit_in_bytes", "memory.soft_limit_in_bytes"):
        (memory / "other" / name).write_text("")
    (unified / "cgroup.controllers").write_text("pids\n")
    (unified / "cgroup.max.depth").write_text("")
    hierarchies = [cgroups.Hierarchy(str(memory), ("memory",), 1, str(memory)),
                   cgroups.Hierarchy(str(tmp_path / "cg" / "systemd"), ("name=systemd",), 1, "/x"),
                   cgroups.Hierarchy(str(unified), (), 2, str(unified))]
    monkeypatch.setattr(cgroups, "hierarchies", lambda: hierarchies)

    def check(*lines: str) -> None:
        text = f"lxc.rootfs.path = {rootfs}\n" + "".join(line + "\n" for line in lines)
        preflight.check(load_text(tmp_path, text), ("/bin/true",), command_from_cli=True)

    check.dir = tmp_path
    check.rootfs = rootfs
    return check


def preflight_error(check, *lines: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        check(*lines)
    return caught.value


def test_preflight_passes_a_config_with_working_extras(start_checks):
    hook = start_checks.dir / "hook.sh"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    (start_checks.dir / "policy").write_text(COMMON_SECCOMP)
    start_checks(
        f"lxc.hook.pre-start = {hook} --flag", "lxc.hook.stop = true",
        "lxc.hook.start = /bin/true",
        "lxc.hook.clone = /no/such/clone-hook",   # not run by a start
        "lxc.seccomp.profile = policy",
        "lxc.net.0.type = veth", "lxc.net.0.link = br0",
        "lxc.net.1.type = veth",                  # no bridge: allowed
        "lxc.net.2.type = empty", "lxc.net.2.link = nosuch0",   # ignored by empty devices
        "lxc.cgroup.memory.limit_in_bytes = 1G",
        "lxc.cgroup2.pids.max = 10",              # not in the root, but the controller is there
        "lxc.cgroup2.cgroup.max.depth = 2",       # in the root
        "lxc.cgroup2.devices.allow = c 1:3 rwm",  # a BPF program on cgroup2, no file
    )


@pytest.mark.parametrize("lines, line, key, message", [
    (["lxc.net.0.type = veth", "lxc.net.0.link = eth9"], 4, "lxc.net.0.link", "eth9 is not a bridge"),
    (["lxc.net.0.type = veth", "lxc.net.0.veth.pair = br0"], 4, "lxc.net.0.veth.pair",
     "br0 already exists on the host"),
    (["lxc.net.0.type = veth", "lxc.net.0.ipv4.address = 192.0.2.2/24",
      "lxc.net.0.ipv4.gateway = 192.0.2.1"], 5, "lxc.net.0.ipv4.gateway", "needs the device up"),
    (["lxc.net.0.type = veth", "lxc.net.0.flags = up", "lxc.net.0.ipv6.gateway = 2001:db8::1"],
     5, "lxc.net.0.ipv6.gateway", "needs an address"),
    (["lxc.namespace.keep = net", "lxc.net.0.type = veth"], 4, "lxc.net.0.type",
     "needs the container's own network namespace"),
])
def test_preflight_veth_problems(start_checks, lines, line, key, message):
    err = preflight_error(start_checks, "lxc.uts.name = a", *lines)
    assert (err.line, err.key) == (line, key)
    assert message in err.message


def test_preflight_hook_problems(start_checks):
    hook = start_checks.dir / "hook.sh"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o644)
    err = preflight_error(start_checks, "lxc.uts.name = a", f"lxc.hook.start-host = {hook}")
    assert (err.line, err.key) == (3, "lxc.hook.start-host")
    assert err.message == f"hook {hook} is not executable (mode 0644)"
    err = preflight_error(start_checks, f"lxc.hook.pre-start = {hook}.missing")
    assert err.message == f"hook {hook}.missing does not exist"
    err = preflight_error(start_checks, f"lxc.hook.mount = {start_checks.dir}")
    assert err.message == f"hook {start_checks.dir} is not a file"
    err = preflight_error(start_checks, "lxc.hook.post-stop = lxcsm-no-such-program")
    assert err.message == "hook lxcsm-no-such-program is not in PATH"
    err = preflight_error(start_checks, "lxc.hook.start = /sbin/hook")
    assert err.message == f"hook /sbin/hook not found in rootfs {start_checks.rootfs}"
    (start_checks.rootfs / "bin" / "true").chmod(0o644)
    err = preflight_error(start_checks, "lxc.hook.start = /bin/true")
    assert "is not executable" in err.message


def test_preflight_seccomp_problems(start_checks):
    err = preflight_error(start_checks, "lxc.seccomp.profile = absent")
    assert (err.line, err.key) == (2, "lxc.seccomp.profile")
    assert err.message == f"cannot read seccomp policy {start_checks.dir / 'absent'}: No such file or directory"
    (start_checks.dir / "policy").write_text("2\ndenylist\nmount errno\n")
    err = preflight_error(start_checks, "lxc.seccomp.profile = policy")
    assert err.message == f"seccomp policy {start_checks.dir / 'policy'}:3: errno needs a number, e.g. 'errno 1'"
    start_checks("lxc.seccomp.profile = policy", "lxc.seccomp.profile =")   # reset: not checked


def test_preflight_network_problems(start_checks):
    err = preflight_error(start_checks, "lxc.net.0.type = veth", "lxc.net.0.link = nosuchbr")
    assert (err.line, err.key) == (3, "lxc.net.0.link")
    assert err.message.startswith("no network interface nosuchbr on the host")
    err = preflight_error(start_checks, "lxc.net.3.type = phys", "lxc.net.3.link = eth7")
    assert (err.line, err.key) == (3, "lxc.net.3.link")
    for kind in ("macvlan", "ipvlan", "vlan", "phys"):
        err = preflight_error(start_checks, f"lxc.net.0.type = {kind}")
        assert (err.line, err.key) == (2, "lxc.net.0.type")
        assert err.message.startswith(f"a {kind} device needs lxc.net.0.link")
    start_checks("lxc.net.0.type = macvlan", "lxc.net.0.link = lo")


def test_preflight_cgroup_problems(start_checks):
    err = preflight_error(start_checks, "lxc.cgroup.cpu.shares = 100")
    assert (err.line, err.key) == (2, "lxc.cgroup.cpu.shares")
    assert err.message == "cgroup v1 controller 'cpu' is not mounted on this host (mounted: memory)"
    err = preflight_error(start_checks, "lxc.cgroup.memory.limit_in_byte = 1")
    assert err.message.startswith("no file memory.limit_in_byte in the memory hierarchy")
    start_checks("lxc.cgroup.memory.soft_limit_in_bytes = 1")   # not in the root cgroup, in its child
    # A hybrid host keeps its controllers on v1: cgroup2 limits are ignored there, as LXC does.
    start_checks("lxc.cgroup2.memory.max = 1G", "lxc.cgroup2.bogus.file = 1")
    start_checks("lxc.cgroup.cpu.shares = 100", "lxc.cgroup.cpu =")   # cleared: not checked


def test_preflight_cgroups_on_a_cgroup2_only_host(start_checks, monkeypatch, tmp_path):
    unified = tmp_path / "cg" / "unified"
    monkeypatch.setattr(cgroups, "hierarchies", lambda: [cgroups.Hierarchy(str(unified), (), 2, str(unified))])
    start_checks("lxc.cgroup.memory.limit_in_bytes = 1")   # v1 limits are ignored there, as LXC does
    start_checks("lxc.cgroup2.pids.max = 10")               # a controller cgroup.controllers lists
    err = preflight_error(start_checks, "lxc.cgroup2.memory.max = 1")
    assert (err.line, err.key) == (2, "lxc.cgroup2.memory.max")
    assert err.message.startswith("cgroup2 controller 'memory' is not available on this host")
    monkeypatch.setattr(cgroups, "hierarchies", list)
    err = preflight_error(start_checks, "lxc.cgroup2.memory.max = 1")
    assert err.message == "this host has no cgroup2 hierarchy (use lxc.cgroup.*)"


def test_preflight_symlink_loops_in_the_rootfs_are_not_found(start_checks):
    (start_checks.rootfs / "bin" / "loop1").symlink_to("loop2")
    (start_checks.rootfs / "bin" / "loop2").symlink_to("loop1")
    err = preflight_error(start_checks, "lxc.hook.start = /bin/loop1")
    assert err.message == f"hook /bin/loop1 not found in rootfs {start_checks.rootfs}"
    cfg = load_text(start_checks.dir, f"lxc.rootfs.path = {start_checks.rootfs}\n")
    with pytest.raises(ConfigError, match="not found in rootfs"):
        preflight.check(cfg, ("/bin/loop2",), command_from_cli=True)


def test_four_times_the_devices_and_hooks_is_four_times_the_work(start_checks):
    """As test_four_times_the_lines_is_four_times_the_work (test_config_loader): preflight checks each device
    and hook without looking through all the others (counted in lines of Python run)."""
    def lines(count: int) -> list[str]:
        return [line for i in range(count) for line in (
            f"lxc.net.{i}.type = veth", f"lxc.net.{i}.veth.pair = v{i}", f"lxc.environment = V{i}=x",
            "lxc.hook.start = /bin/true")]

    start_checks(*lines(5))   # once first: regular expressions compiled, modules imported
    small, large = (lines_run(lambda count=count: start_checks(*lines(count))) for count in (250, 1000))
    assert large < 5 * small, f"4 times the devices took {large / small:.1f} times the work"


# --- what would weaken the container if ignored --------------------------------

@pytest.mark.parametrize("lsm, line", [
    ("apparmor", "lxc.apparmor.profile = generated"),
    ("apparmor", "lxc.apparmor.raw = deny /proc/** w,"),
    ("selinux", "lxc.selinux.context = system_u:system_r:lxc_t:s0:c22"),
])
def test_preflight_refuses_lsm_keys_on_a_host_that_runs_the_lsm(start_checks, monkeypatch, lsm, line):
    from lxcsm.engine.config import keys
    start_checks(line)   # a host without the LSM: ignored, as LXC's nop LSM does
    monkeypatch.setattr(keys, "lsm_enabled", lambda name: name == lsm)

    err = preflight_error(start_checks, line)

    assert (err.line, err.key) == (2, line.split(" =")[0])
    assert err.message == f"this host runs {lsm}, whose confinement lxcsm does not apply yet (LXC would)"


def test_preflight_refuses_core_scheduling_without_a_pid_namespace_of_its_own(start_checks):
    err = preflight_error(start_checks, "lxc.namespace.keep = pid", "lxc.sched.core = 1")
    assert (err.key, err.message) == ("lxc.sched.core", "core scheduling needs the container's own pid namespace")
