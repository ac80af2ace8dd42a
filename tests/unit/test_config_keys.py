"""The key table: every key of LXC 5.0.2 is known, checked, and honoured or reported."""

import pytest

from lxcsm.engine.config import keys
from lxcsm.engine.config.model import Setting
from tests.unit.config_text import error_of, load_text, write

# The 86 keys of LXC 5.0.2's parser (config-keys.txt), each with a line that
# uses it. Prefix keys are shown with one member.
KEY_EXAMPLES = {
    "lxc.apparmor.allow_incomplete": "lxc.apparmor.allow_incomplete = 1",
    "lxc.apparmor.allow_nesting": "lxc.apparmor.allow_nesting = 0",
    "lxc.apparmor.profile": "lxc.apparmor.profile = unconfined",
    "lxc.apparmor.raw": "lxc.apparmor.raw = mount fstype=proc,",
    "lxc.arch": "lxc.arch = x86_64",
    "lxc.autodev": "lxc.autodev = 0",
    "lxc.autodev.tmpfs.size": "lxc.autodev.tmpfs.size = 500000",
    "lxc.cap.drop": "lxc.cap.drop = sys_module mac_admin",
    "lxc.cap.keep": "lxc.cap.keep = sys_admin",
    "lxc.cgroup": "lxc.cgroup.memory.limit_in_bytes = 256M",
    "lxc.cgroup.dir": "lxc.cgroup.dir = lxc/bb",
    "lxc.cgroup.dir.container": "lxc.cgroup.dir.container = lxc.payload/bb",
    "lxc.cgroup.dir.container.inner": "lxc.cgroup.dir.container.inner = inner",
    "lxc.cgroup.dir.monitor": "lxc.cgroup.dir.monitor = lxc.monitor/bb",
    "lxc.cgroup.dir.monitor.pivot": "lxc.cgroup.dir.monitor.pivot = lxc.pivot",
    "lxc.cgroup.relative": "lxc.cgroup.relative = 1",
    "lxc.cgroup2": "lxc.cgroup2.memory.max = 256M",
    "lxc.console.buffer.size": "lxc.console.buffer.size = auto",
    "lxc.console.logfile": "lxc.console.logfile = /var/log/lxc/bb.console",
    "lxc.console.path": "lxc.console.path = none",
    "lxc.console.rotate": "lxc.console.rotate = 1",
    "lxc.console.size": "lxc.console.size = 1MB",
    "lxc.environment": "lxc.environment = TERM=linux",
    "lxc.ephemeral": "lxc.ephemeral = 0",
    "lxc.execute.cmd": "lxc.execute.cmd = /bin/sh -c true",
    "lxc.group": "lxc.group = onboot web",
    "lxc.hook": "lxc.hook =",
    "lxc.hook.autodev": "lxc.hook.autodev = /usr/share/lxc/hooks/autodev",
    "lxc.hook.clone": "lxc.hook.clone = /bin/true",
    "lxc.hook.destroy": "lxc.hook.destroy = /bin/true",
    "lxc.hook.mount": "lxc.hook.mount = /usr/share/lxcfs/lxc.mount.hook",
    "lxc.hook.post-stop": "lxc.hook.post-stop = /bin/true",
    "lxc.hook.pre-mount": "lxc.hook.pre-mount = /bin/true",
    "lxc.hook.pre-start": "lxc.hook.pre-start = /bin/true",
    "lxc.hook.start": "lxc.hook.start = /bin/true",
    "lxc.hook.start-host": "lxc.hook.start-host = /bin/true",
    "lxc.hook.stop": "lxc.hook.stop = /bin/true",
    "lxc.hook.version": "lxc.hook.version = 1",
    "lxc.idmap": "lxc.idmap = u 0 100000 65536",
    "lxc.include": "lxc.include = included.conf",
    "lxc.init.cmd": "lxc.init.cmd = /sbin/init --verbose",
    "lxc.init.cwd": "lxc.init.cwd = /root",
    "lxc.init.gid": "lxc.init.gid = 0",
    "lxc.init.groups": "lxc.init.groups = 10,20",
    "lxc.init.uid": "lxc.init.uid = 1000",
    "lxc.keyring.session": "lxc.keyring.session = 0",
    "lxc.log.file": "lxc.log.file = /var/log/lxc/bb.log",
    "lxc.log.level": "lxc.log.level = DEBUG",
    "lxc.log.syslog": "lxc.log.syslog = daemon",
    "lxc.monitor.signal.pdeath": "lxc.monitor.signal.pdeath = SIGKILL",
    "lxc.monitor.unshare": "lxc.monitor.unshare = 1",
    "lxc.mount.auto": "lxc.mount.auto = proc:mixed sys:ro",
    "lxc.mount.entry": "lxc.mount.entry = tmpfs tmp tmpfs size=10% 0 0",
    "lxc.mount.fstab": "lxc.mount.fstab = included.conf",
    "lxc.namespace.clone": "lxc.namespace.clone = mnt pid uts ipc",
    "lxc.namespace.keep": "lxc.namespace.keep = user net",
    "lxc.namespace.share.": "lxc.namespace.share.net = other",
    "lxc.net": "lxc.net =",
    "lxc.net.": "lxc.net.0.type = phys",
    "lxc.no_new_privs": "lxc.no_new_privs = 1",
    "lxc.prlimit": "lxc.prlimit.nofile = 1024:4096",
    "lxc.proc": "lxc.proc.oom_score_adj = 10",
    "lxc.pty.max": "lxc.pty.max = 10",
    "lxc.rootfs.managed": "lxc.rootfs.managed = 0",
    "lxc.rootfs.mount": "lxc.rootfs.mount = /usr/lib/lxc/rootfs",
    "lxc.rootfs.options": "lxc.rootfs.options = ro",
    "lxc.rootfs.path": "lxc.rootfs.path = /var/lib/lxc/bb/rootfs",
    "lxc.sched.core": "lxc.sched.core = 1",
    "lxc.seccomp.allow_nesting": "lxc.seccomp.allow_nesting = 1",
    "lxc.seccomp.notify.cookie": "lxc.seccomp.notify.cookie = abc",
    "lxc.seccomp.notify.proxy": "lxc.seccomp.notify.proxy = unix:/run/proxy.sock",
    "lxc.seccomp.profile": "lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp",
    "lxc.selinux.context": "lxc.selinux.context = system_u:system_r:lxc_t:s0:c22",
    "lxc.selinux.context.keyring": "lxc.selinux.context.keyring = system_u:system_r:lxc_t:s0",
    "lxc.signal.halt": "lxc.signal.halt = SIGRTMIN+3",
    "lxc.signal.reboot": "lxc.signal.reboot = SIGTERM",
    "lxc.signal.stop": "lxc.signal.stop = 9",
    "lxc.start.auto": "lxc.start.auto = 1",
    "lxc.start.delay": "lxc.start.delay = 5",
    "lxc.start.order": "lxc.start.order = -1",
    "lxc.sysctl": "lxc.sysctl.net.ipv4.ip_forward = 1",
    "lxc.time.offset.boot": "lxc.time.offset.boot = -10s",
    "lxc.time.offset.monotonic": "lxc.time.offset.monotonic = 5ms",
    "lxc.tty.dir": "lxc.tty.dir = lxc",
    "lxc.tty.max": "lxc.tty.max = 4",
    "lxc.uts.name": "lxc.uts.name = bb",
}


# The keys the engine acts on now (lxc.net.N only for types empty and none).
HONOURED_KEYS = {
    "lxc.uts.name", "lxc.rootfs.path", "lxc.rootfs.mount", "lxc.rootfs.options",
    "lxc.mount.auto", "lxc.mount.entry", "lxc.mount.fstab", "lxc.autodev",
    "lxc.init.cmd", "lxc.init.cwd", "lxc.environment", "lxc.namespace.clone",
    "lxc.namespace.keep", "lxc.log.level", "lxc.log.file", "lxc.signal.halt",
    "lxc.signal.reboot", "lxc.signal.stop", "lxc.include", "lxc.hook.version", "lxc.idmap", "lxc.cgroup",
    "lxc.cap.drop", "lxc.cap.keep", "lxc.prlimit", "lxc.proc", "lxc.sysctl", "lxc.pty.max", "lxc.tty.max",
    "lxc.console.logfile", "lxc.console.path", "lxc.console.size", "lxc.console.rotate", "lxc.console.buffer.size",
    "lxc.seccomp.profile", "lxc.cgroup2", "lxc.cgroup.relative",
    "lxc.cgroup.dir", "lxc.cgroup.dir.container", "lxc.cgroup.dir.container.inner", "lxc.cgroup.dir.monitor",
    "lxc.cgroup.dir.monitor.pivot", "lxc.no_new_privs",
    "lxc.group", "lxc.start.auto", "lxc.start.delay", "lxc.start.order",
    "lxc.init.uid", "lxc.init.gid", "lxc.init.groups", "lxc.keyring.session", "lxc.monitor.signal.pdeath",
    "lxc.sched.core", "lxc.time.offset.boot", "lxc.time.offset.monotonic", "lxc.autodev.tmpfs.size",
    "lxc.seccomp.allow_nesting", "lxc.seccomp.notify.proxy", "lxc.seccomp.notify.cookie",
    "lxc.arch", "lxc.execute.cmd", "lxc.rootfs.managed",
    "lxc.monitor.unshare", "lxc.log.syslog", "lxc.ephemeral", "lxc.tty.dir", "lxc.namespace.share.",
    *(f"lxc.hook.{kind}" for kind in ("pre-start", "pre-mount", "mount", "autodev", "start-host",
                                      "start", "stop", "post-stop", "clone", "destroy")),
    # As LXC's "nop" LSM does on a host without AppArmor or SELinux: ignored.
    *(key for key in keys.KEYS for lsm in keys.LSM_PRESENT
      if key.startswith(f"lxc.{lsm}.") and not keys.lsm_enabled(lsm)),
}


# --- the key table -----------------------------------------------------------

def test_table_has_exactly_the_86_keys_of_lxc_5_0_2():
    assert len(KEY_EXAMPLES) == 86
    assert set(keys.KEYS) == set(KEY_EXAMPLES)


@pytest.mark.parametrize("name", sorted(KEY_EXAMPLES))
def test_every_lxc_key_is_accepted(tmp_path, name):
    write(tmp_path / "included.conf", "")
    line = KEY_EXAMPLES[name]
    cfg = load_text(tmp_path, line + "\n")
    key, value = (part.strip() for part in line.split("=", 1))
    assert Setting(str(tmp_path / "config"), 1, key, value) in cfg.settings
    reported = any(setting.key == key for setting in cfg.unsupported)
    # An empty value only resets, so there is nothing to report.
    assert reported == (bool(value) and name not in HONOURED_KEYS)


@pytest.mark.parametrize("line, message", [
    ("lxc.autodev = 2", "not one of 0, 1"),
    ("lxc.tty.max = -1", "not an integer"),
    ("lxc.start.delay = soon", "not an integer"),
    ("lxc.console.size = lots", "not a size"),
    ("lxc.arch = vax", "not one of"),
    ("lxc.idmap = x 0 0 1", "u|g NSID HOSTID RANGE"),
    ("lxc.prlimit.nofiles = 10", "unknown name 'nofiles'"),
    ("lxc.prlimit.nofile = many", "SOFT[:HARD]"),
    ("lxc.cgroup.dir = /abs", "may not be absolute"),
    ("lxc.cgroup.dir = a/../../b", "may not walk upwards"),
    ("lxc.cgroup.dir.container.inner = a/b", "single directory name"),
    ("lxc.time.offset.boot = 10", "with a unit"),
    ("lxc.cap.drop = none", "only valid in lxc.cap.keep"),
    ("lxc.seccomp.notify.proxy = /run/x.sock", "unix:/PATH or unix:@NAME"),
    # As lxc-start 5.0.2 refuses them: a relative path, nothing after / or @, too long.
    ("lxc.seccomp.notify.proxy = unix:run/x.sock", "unix:/PATH or unix:@NAME"),
    ("lxc.seccomp.notify.proxy = unix:/", "unix:/PATH or unix:@NAME"),
    ("lxc.seccomp.notify.proxy = unix:@", "unix:/PATH or unix:@NAME"),
    ("lxc.seccomp.notify.proxy = unix:/" + "x" * 107, "longer than a unix socket address"),
    ("lxc.namespace.share.mount = other", "unknown namespace"),
    ("lxc.cgroup = memory", "must not have a value"),
    ("lxc.net = 1", "must not have a value"),
    ("lxc.hook = /bin/true", "must not have a value"),
    ("lxc.hook.version = 2", "not one of 0, 1"),
    ("lxc.init.cmd = /bin/sh -c 'unclosed", "closing quotation"),
    ("lxc.uts.name = " + "h" * 65, "longer than 64 bytes"),
    ("lxc.environment = =value", "variable name is empty"),
])
def test_values_are_validated(tmp_path, line, message):
    err = error_of(tmp_path, line + "\n")
    assert err.line == 1
    assert err.key == line.split("=")[0].strip()
    assert message in err.message


def test_prefix_without_a_member_is_not_a_key(tmp_path):
    err = error_of(tmp_path, "lxc.net. = x\n")
    assert err.message == "network keys are lxc.net.<index>.<sub-key>"
    assert "missing or malformed name" in error_of(tmp_path, "lxc.sysctl. = 1\n").message


# --- unsupported keys --------------------------------------------------------

def test_unsupported_lists_valid_keys_not_honoured_yet(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.uts.name = a\n"
        "lxc.seccomp.notify.proxy = unix:/run/proxy\n"
        "lxc.net.0.type = phys\n"
        "lxc.net.0.link = br0\n"
        "lxc.net.1.type = empty\n"
        "lxc.seccomp.notify.cookie = x\n"))
    path = str(tmp_path / "config")
    assert cfg.unsupported == (Setting(path, 3, "lxc.net.0.type", "phys"),)


def test_mount_auto_with_shmounts_is_unsupported(tmp_path):
    for value in ("proc sys", "proc cgroup", "cgroup2:ro", "sys:ro cgroup-full:mixed:force"):
        assert load_text(tmp_path, f"lxc.mount.auto = {value}\n").unsupported == ()
    for value in ("shmounts:/srv/shm", "proc shmounts:/srv/shm"):
        cfg = load_text(tmp_path, f"lxc.mount.auto = {value}\n")
        assert [s.value for s in cfg.unsupported] == [value]


# --- cgroup keys and hooks ---------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("lxc.cgroup.memory = 256M", "lxc.cgroup.<controller>.<file>"),
    ("lxc.cgroup2.memory = 256M", "lxc.cgroup2.<controller>.<file>"),
    ("lxc.cgroup2.../../release_agent = /x", "malformed name '../../release_agent'"),
    ("lxc.cgroup.memory/limit = 1", "malformed name 'memory/limit'"),
    ("lxc.cgroup.memory..max = 1", "malformed name 'memory..max'"),
])
def test_cgroup_keys_name_a_controller_and_a_file(tmp_path, line, message):
    err = error_of(tmp_path, line + "\n")
    assert (err.line, err.key) == (1, line.split("=")[0].strip())
    assert message in err.message


@pytest.mark.parametrize("key", [
    "lxc.cgroup.memory.limit_in_bytes", "lxc.cgroup.hugetlb.2MB.limit_in_bytes",
    "lxc.cgroup.net_cls.classid", "lxc.cgroup.blkio.throttle.read_bps_device",
    "lxc.cgroup2.memory.max", "lxc.cgroup2.cpu.weight.nice", "lxc.cgroup2.devices.allow",
])
def test_cgroup_file_names_that_exist_in_the_wild(tmp_path, key):
    cfg = load_text(tmp_path, f"{key} = 1\n")
    family = "lxc.cgroup2" if key.startswith("lxc.cgroup2.") else "lxc.cgroup"
    assert [canonical for canonical, _ in cfg.in_effect(family)] == [key]


def test_controller_alone_still_clears_its_files(tmp_path):
    cfg = load_text(tmp_path, "lxc.cgroup2.memory.max = 1G\nlxc.cgroup2.pids.max = 10\nlxc.cgroup2.memory =\n")
    assert [s.key for _, s in cfg.in_effect("lxc.cgroup2")] == ["lxc.cgroup2.pids.max"]


def test_hooks_are_command_lines(tmp_path):
    cfg = load_text(tmp_path, "lxc.hook.pre-start = /usr/local/bin/prep --name 'my box'\n")
    assert cfg.in_effect("lxc.hook")[0][1].value == "/usr/local/bin/prep --name 'my box'"
    err = error_of(tmp_path, "lxc.hook.pre-start = /bin/sh -c 'echo\n")
    assert (err.line, err.key, err.message) == (1, "lxc.hook.pre-start", "No closing quotation")
