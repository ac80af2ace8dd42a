import os
import signal

import pytest

from lxcsm.engine.config import loader, preflight, seccomp_policy
from lxcsm.engine.config.loader import ConfigError, MountEntry, Setting, load, parse_signal
from lxcsm.engine.linux import cgroups

# The config `lxc-create -n bb -t busybox` wrote with LXC 5.0.2 (a copy of
# /work/shared/reference/lxc-5.0.2/busybox-template.config).
BUSYBOX_CONFIG = """\
# Template used to create this container: /usr/share/lxc/templates/lxc-busybox
# Parameters passed to the template:
# For additional config options, please look at lxc.container.conf(5)

# Uncomment the following line to support nesting containers:
#lxc.include = /usr/share/lxc/config/nesting.conf
# (Be aware this has security implications)

lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1
lxc.rootfs.path = dir:/var/lib/lxc/bb/rootfs
lxc.signal.halt = SIGUSR1
lxc.signal.reboot = SIGTERM
lxc.uts.name = "bb"
lxc.autodev = 1
lxc.tty.max = 5
lxc.pty.max = 1
lxc.cap.drop = sys_module mac_admin mac_override sys_time

# When using LXC with apparmor, uncomment the next line to run unconfined:
#lxc.apparmor.profile = unconfined

lxc.mount.auto = cgroup:mixed proc:mixed sys:ro
lxc.mount.entry = shm dev/shm tmpfs defaults,create=dir 0 0
lxc.mount.entry = mqueue dev/mqueue mqueue defaults,optional,create=dir 0 0
lxc.mount.entry = /lib lib none ro,bind 0 0
lxc.mount.entry = /usr/lib usr/lib none ro,bind 0 0
lxc.mount.entry = /lib64 lib64 none ro,bind 0 0
lxc.mount.entry = /usr/lib64 usr/lib64 none ro,bind 0 0
lxc.mount.entry = /sys/kernel/security sys/kernel/security none ro,bind,optional 0 0
"""

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
    "lxc.signal.reboot", "lxc.signal.stop", "lxc.include", "lxc.hook.version", "lxc.cgroup",
    "lxc.cap.drop", "lxc.cap.keep", "lxc.prlimit", "lxc.proc", "lxc.sysctl", "lxc.pty.max", "lxc.tty.max",
    "lxc.console.logfile", "lxc.console.path", "lxc.seccomp.profile",
    *(f"lxc.hook.{kind}" for kind in ("pre-start", "pre-mount", "mount", "autodev", "start-host",
                                      "start", "stop", "post-stop", "clone", "destroy")),
}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def load_text(tmp_path, text, overrides=(), name="bb"):
    return load(write(tmp_path / "config", text), name, overrides)


def error_of(tmp_path, text, overrides=()):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, overrides)
    return caught.value


# --- the key table -----------------------------------------------------------

def test_table_has_exactly_the_86_keys_of_lxc_5_0_2():
    assert len(KEY_EXAMPLES) == 86
    assert set(loader.KEYS) == set(KEY_EXAMPLES)


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
    ("lxc.seccomp.notify.proxy = /run/x.sock", "unix:PATH"),
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


# --- the busybox template ----------------------------------------------------

def test_busybox_template(tmp_path):
    cfg = load_text(tmp_path, BUSYBOX_CONFIG)
    path = str(tmp_path / "config")
    assert cfg.name == "bb" and cfg.path == path
    assert cfg.uts_name == "bb"
    assert cfg.rootfs_path == "/var/lib/lxc/bb/rootfs"
    assert cfg.rootfs_mount is None and cfg.rootfs_options is None
    assert (cfg.mount_proc, cfg.mount_sys, cfg.mount_cgroup) == ("mixed", "ro", "cgroup:mixed")
    assert cfg.autodev is True
    assert cfg.init_cmd == ("/sbin/init",)
    assert cfg.signal_halt == signal.SIGUSR1
    assert cfg.signal_reboot == signal.SIGTERM
    assert cfg.signal_stop == signal.SIGKILL
    assert cfg.log_level is None and cfg.log_file is None
    assert cfg.namespace_clone == frozenset() and cfg.namespace_keep == frozenset()
    assert [(m.source, m.target, m.fstype, m.options) for m in cfg.mount_entries] == [
        ("shm", "dev/shm", "tmpfs", "defaults,create=dir"),
        ("mqueue", "dev/mqueue", "mqueue", "defaults,optional,create=dir"),
        ("/lib", "lib", "none", "ro,bind"),
        ("/usr/lib", "usr/lib", "none", "ro,bind"),
        ("/lib64", "lib64", "none", "ro,bind"),
        ("/usr/lib64", "usr/lib64", "none", "ro,bind"),
        ("/sys/kernel/security", "sys/kernel/security", "none", "ro,bind,optional"),
    ]
    assert cfg.mount_entries[0].origin == Setting(
        path, 27, "lxc.mount.entry", "shm dev/shm tmpfs defaults,create=dir 0 0")
    (net,) = cfg.networks
    assert (net.index, net.type, net.link, net.flags) == (0, "veth", "lxcbr0", "up")
    assert net.origin == Setting(path, 9, "lxc.net.0.type", "veth")
    assert [(s.line, s.key) for s in cfg.unsupported] == [
        (12, "lxc.apparmor.profile"),
        (13, "lxc.apparmor.allow_nesting"),
    ]
    assert len(cfg.settings) == 21


# --- line syntax -------------------------------------------------------------

@pytest.mark.parametrize("written, value", [
    ('"bb"', "bb"),
    ("'bb'", "bb"),
    ('"b b"', "b b"),
    ("\"bb'", "\"bb'"),
    ('"', '"'),
    ("b#b", "b#b"),
    ("  bb  ", "bb"),
])
def test_values_are_trimmed_and_unquoted(tmp_path, written, value):
    assert load_text(tmp_path, f"lxc.uts.name = {written}\n").uts_name == value


def test_comments_and_blank_lines_are_skipped(tmp_path):
    cfg = load_text(tmp_path, "# lxc.uts.name = a\n\n   \n\t# lxc.bogus\nlxc.uts.name=b\n")
    assert cfg.uts_name == "b"
    assert [s.line for s in cfg.settings] == [5]


def test_line_without_equals_sign(tmp_path):
    err = error_of(tmp_path, "lxc.uts.name = a\nlxc.uts.name b\n")
    assert (err.line, err.key, err.message) == (2, "lxc.uts.name", "line is not 'key = value'")


def test_unknown_key_names_file_line_and_key(tmp_path):
    err = error_of(tmp_path, "lxc.uts.name = a\n\nlxc.utsname = a\n")
    assert str(err) == f"{tmp_path / 'config'}:3: lxc.utsname: unknown key"
    assert (err.file, err.line, err.key, err.message) == (
        str(tmp_path / "config"), 3, "lxc.utsname", "unknown key")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path / "absent"), "bb")
    assert caught.value.line == 0
    assert caught.value.file == str(tmp_path / "absent")


def test_non_utf8_line(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"lxc.uts.name = a\nlxc.init.cwd = /r\xe9p\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path), "bb")
    assert (caught.value.line, caught.value.key) == (2, "lxc.init.cwd")
    assert "UTF-8" in caught.value.message


def test_nul_byte(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"lxc.uts.name = a\n\nlxc.uts.name = b\0c\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path), "bb")
    assert (caught.value.line, caught.value.key) == (3, "lxc.uts.name")
    assert "NUL" in caught.value.message


def test_oversize_file(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"# padding\n" * (loader.MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as caught:
        load(str(path), "bb")
    assert (caught.value.file, caught.value.line) == (str(path), 0)


def test_file_of_exactly_the_limit_is_read(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"#" * (loader.MAX_CONFIG_BYTES - 1) + b"\n")
    assert load(str(path), "bb").settings == ()


# --- repeated keys and resets ------------------------------------------------

def test_last_value_wins_for_single_keys(tmp_path):
    cfg = load_text(tmp_path, "lxc.uts.name = a\nlxc.uts.name = b\n")
    assert cfg.uts_name == "b"
    assert cfg.get_item("lxc.uts.name") == "b"


def test_list_keys_append(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.environment = A=1\n"
        "lxc.mount.entry = a a none bind 0 0\n"
        "lxc.environment = B\n"
        "lxc.mount.entry = b b none bind 0 0\n"))
    assert cfg.environment == ("A=1", "B")
    assert [m.source for m in cfg.mount_entries] == ["a", "b"]


def test_empty_value_resets_single_keys(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.uts.name = a\nlxc.uts.name =\n"
        "lxc.signal.halt = SIGUSR1\nlxc.signal.halt = ''\n"
        "lxc.init.cmd = /bin/sh\nlxc.init.cmd =\n"
        "lxc.rootfs.path = /r\nlxc.rootfs.path =\n"))
    assert cfg.uts_name is None and cfg.get_item("lxc.uts.name") is None
    assert cfg.signal_halt == signal.SIGPWR
    assert cfg.init_cmd == ("/sbin/init",)
    assert cfg.rootfs_path is None


def test_empty_autodev_turns_it_off_as_lxc_does(tmp_path):
    assert load_text(tmp_path, "").autodev is True
    assert load_text(tmp_path, "lxc.autodev = 0\n").autodev is False
    assert load_text(tmp_path, "lxc.autodev = 0\nlxc.autodev = 1\n").autodev is True
    assert load_text(tmp_path, "lxc.autodev =\n").autodev is False


def test_empty_value_clears_a_list_so_far(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.environment = A=1\nlxc.environment =\nlxc.environment = B=2\n"
        "lxc.mount.entry = a a none bind 0 0\nlxc.mount.entry =\n"
        "lxc.cap.drop = sys_time\nlxc.cap.drop =\n"))
    assert cfg.environment == ("B=2",)
    assert cfg.mount_entries == ()
    assert cfg.unsupported == ()


def test_empty_family_key_clears_its_members_only(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.cgroup.dir = lxc/bb\n"
        "lxc.cgroup.memory.limit_in_bytes = 1G\n"
        "lxc.cgroup.cpu.shares = 100\n"
        "lxc.cgroup.memory =\n"))
    assert [key for key, _s in cfg.in_effect("lxc.cgroup")] == ["lxc.cgroup.cpu.shares"]
    assert [s.key for s in cfg.unsupported] == ["lxc.cgroup.dir"]
    cfg = load_text(tmp_path, (
        "lxc.cgroup.dir = lxc/bb\n"
        "lxc.cgroup.cpu.shares = 100\n"
        "lxc.cgroup =\n"))
    assert cfg.in_effect("lxc.cgroup") == ()
    assert [s.key for s in cfg.unsupported] == ["lxc.cgroup.dir"]


def test_empty_hook_key_clears_all_hooks(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.hook.pre-start = /a\nlxc.hook.stop = /b\nlxc.hook.version = 1\nlxc.hook =\n"))
    assert cfg.in_effect("lxc.hook.pre-start") == cfg.in_effect("lxc.hook.stop") == ()
    assert cfg.get_item("lxc.hook.version") == "1"


def test_mutually_exclusive_keys(tmp_path):
    err = error_of(tmp_path, "lxc.namespace.clone = pid\nlxc.namespace.keep = net\n")
    assert (err.line, err.key) == (2, "lxc.namespace.keep")
    assert "cannot be combined with lxc.namespace.clone" in err.message
    err = error_of(tmp_path, "lxc.cap.keep = sys_admin\nlxc.cap.drop = sys_time\n")
    assert "cannot be combined with lxc.cap.keep" in err.message
    # Once one is reset the other may be set.
    cfg = load_text(tmp_path, "lxc.namespace.clone = pid\nlxc.namespace.clone =\n"
                              "lxc.namespace.keep = net\n")
    assert cfg.namespace_keep == {"net"}


# --- includes ----------------------------------------------------------------

def test_include_file_is_read_in_place(tmp_path):
    write(tmp_path / "common.conf", "lxc.uts.name = common\nlxc.environment = B=2\n")
    cfg = load_text(tmp_path, (
        "lxc.environment = A=1\n"
        f"lxc.include = {tmp_path / 'common.conf'}\n"
        "lxc.environment = C=3\n"))
    assert cfg.uts_name == "common"
    assert cfg.environment == ("A=1", "B=2", "C=3")
    assert [(os.path.basename(s.file), s.line, s.key) for s in cfg.settings] == [
        ("config", 1, "lxc.environment"),
        ("config", 2, "lxc.include"),
        ("common.conf", 1, "lxc.uts.name"),
        ("common.conf", 2, "lxc.environment"),
        ("config", 3, "lxc.environment"),
    ]


def test_relative_include_is_relative_to_the_including_file(tmp_path):
    write(tmp_path / "conf.d" / "net.conf", "lxc.include = ../deeper/more.conf\n")
    write(tmp_path / "deeper" / "more.conf", "lxc.uts.name = deep\n")
    assert load_text(tmp_path, "lxc.include = conf.d/net.conf\n").uts_name == "deep"


def test_include_directory_reads_conf_files_sorted(tmp_path):
    write(tmp_path / "d" / "b.conf", "lxc.uts.name = b\nlxc.environment = B\n")
    write(tmp_path / "d" / "a.conf", "lxc.uts.name = a\nlxc.environment = A\n")
    write(tmp_path / "d" / "c.txt", "lxc.uts.name = c\n")
    write(tmp_path / "d" / ".conf", "lxc.uts.name = dot\n")
    cfg = load_text(tmp_path, "lxc.include = d/\n")
    assert cfg.uts_name == "b"
    assert cfg.environment == ("A", "B")


def test_missing_include_is_an_error_on_the_include_line(tmp_path):
    err = error_of(tmp_path, "lxc.uts.name = a\nlxc.include = nowhere.conf\n")
    assert (err.file, err.line, err.key) == (str(tmp_path / "config"), 2, "lxc.include")
    assert "nowhere.conf" in err.message


def test_include_of_itself_is_a_loop(tmp_path):
    err = error_of(tmp_path, "lxc.include = config\n")
    assert (err.file, err.line, err.key) == (str(tmp_path / "config"), 1, "lxc.include")
    assert "loop" in err.message


def test_indirect_include_loop(tmp_path):
    write(tmp_path / "a.conf", "lxc.include = b.conf\n")
    write(tmp_path / "b.conf", "\nlxc.include = a.conf\n")
    err = error_of(tmp_path, "lxc.include = a.conf\n")
    assert (err.file, err.line) == (str(tmp_path / "b.conf"), 2)
    assert "loop" in err.message


def test_same_file_included_twice_is_not_a_loop(tmp_path):
    write(tmp_path / "env.conf", "lxc.environment = X\n")
    cfg = load_text(tmp_path, "lxc.include = env.conf\nlxc.include = env.conf\n")
    assert cfg.environment == ("X", "X")


def test_error_inside_an_include_names_the_included_file(tmp_path):
    write(tmp_path / "bad.conf", "lxc.uts.name = ok\nlxc.bogus = 1\n")
    err = error_of(tmp_path, "lxc.include = bad.conf\n")
    assert (err.file, err.line, err.key) == (str(tmp_path / "bad.conf"), 2, "lxc.bogus")


# --- -s overrides ------------------------------------------------------------

def test_overrides_apply_after_the_file_in_order(tmp_path):
    cfg = load_text(tmp_path, "lxc.uts.name = file\nlxc.environment = A\n",
                    overrides=["lxc.uts.name=first", "lxc.environment = B",
                               "lxc.uts.name = 'second'"])
    assert cfg.uts_name == "second"
    assert cfg.environment == ("A", "B")
    assert cfg.settings[-1] == Setting("-s", 3, "lxc.uts.name", "second")


def test_override_errors_name_their_position(tmp_path):
    err = error_of(tmp_path, "", overrides=["lxc.uts.name=a", "lxc.bogus=1"])
    assert str(err) == "-s:2: lxc.bogus: unknown key"
    err = error_of(tmp_path, "", overrides=["lxc.autodev = 7"])
    assert (err.file, err.line, err.key) == ("-s", 1, "lxc.autodev")
    err = error_of(tmp_path, "", overrides=["lxc.uts.name"])
    assert (err.file, err.line, err.message) == ("-s", 1, "line is not 'key = value'")


def test_override_can_reset_a_key(tmp_path):
    cfg = load_text(tmp_path, "lxc.cap.drop = sys_time\n", overrides=["lxc.cap.drop="])
    assert cfg.unsupported == ()


# --- unsupported keys --------------------------------------------------------

def test_unsupported_lists_valid_keys_not_honoured_yet(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.uts.name = a\n"
        "lxc.console.size = 4096\n"
        "lxc.net.0.type = phys\n"
        "lxc.net.0.link = br0\n"
        "lxc.net.1.type = empty\n"
        "lxc.apparmor.profile = unconfined\n"))
    path = str(tmp_path / "config")
    assert cfg.unsupported == (
        Setting(path, 2, "lxc.console.size", "4096"),
        Setting(path, 3, "lxc.net.0.type", "phys"),
        Setting(path, 6, "lxc.apparmor.profile", "unconfined"),
    )


def test_mount_auto_with_shmounts_is_unsupported(tmp_path):
    for value in ("proc sys", "proc cgroup", "cgroup2:ro", "sys:ro cgroup-full:mixed:force"):
        assert load_text(tmp_path, f"lxc.mount.auto = {value}\n").unsupported == ()
    for value in ("shmounts:/srv/shm", "proc shmounts:/srv/shm"):
        cfg = load_text(tmp_path, f"lxc.mount.auto = {value}\n")
        assert [s.value for s in cfg.unsupported] == [value]


# --- mounts ------------------------------------------------------------------

def test_fstab_entries_come_before_mount_entries(tmp_path):
    write(tmp_path / "fstab", (
        "# comment\n"
        "\n"
        "proc proc proc nodev 0 0\n"
        "/srv/my\\040data data none bind,create=dir\n"))
    cfg = load_text(tmp_path, (
        "lxc.mount.entry = tmpfs tmp tmpfs size=1M 0 0\n"
        "lxc.mount.fstab = fstab\n"))
    fstab = str(tmp_path / "fstab")
    assert cfg.mount_entries == (
        MountEntry("proc", "proc", "proc", "nodev",
                   Setting(fstab, 3, "lxc.mount.fstab", "proc proc proc nodev 0 0")),
        MountEntry("/srv/my data", "data", "none", "bind,create=dir",
                   Setting(fstab, 4, "lxc.mount.fstab",
                           "/srv/my\\040data data none bind,create=dir")),
        MountEntry("tmpfs", "tmp", "tmpfs", "size=1M",
                   Setting(str(tmp_path / "config"), 1, "lxc.mount.entry",
                           "tmpfs tmp tmpfs size=1M 0 0")),
    )


def test_missing_fstab_is_an_error_on_its_line(tmp_path):
    err = error_of(tmp_path, "lxc.uts.name = a\nlxc.mount.fstab = nofstab\n")
    assert (err.line, err.key) == (2, "lxc.mount.fstab")


def test_bad_fstab_line_names_the_fstab(tmp_path):
    write(tmp_path / "fstab", "proc proc proc defaults\nshort line\n")
    err = error_of(tmp_path, "lxc.mount.fstab = fstab\n")
    assert (err.file, err.line) == (str(tmp_path / "fstab"), 2)
    assert "at least 4 fields" in err.message


@pytest.mark.parametrize("entry, message", [
    ("tmpfs tmp tmpfs", "at least 4 fields"),
    ("a b c d 0 0 extra", "at most 6 fields"),
    ("shm dev/shm tmpfs create=pipe 0 0", "create= must be dir or file"),
    ("/a a none bind,idmap=container 0 0", "idmap= mounts are not supported yet"),
])
def test_bad_mount_entries(tmp_path, entry, message):
    err = error_of(tmp_path, f"lxc.mount.entry = {entry}\n")
    assert (err.line, err.key) == (1, "lxc.mount.entry")
    assert message in err.message


def test_rootfs_options_are_checked_as_mount_options(tmp_path):
    assert load_text(tmp_path, "lxc.rootfs.options = ro,nodev\n").rootfs_options == "ro,nodev"
    assert "idmap=" in error_of(tmp_path, "lxc.rootfs.options = idmap=container\n").message


@pytest.mark.parametrize("value, proc, sys, cgroup", [
    ("proc", "mixed", None, None),
    ("proc:mixed", "mixed", None, None),
    ("proc:rw", "rw", None, None),
    ("sys", None, "mixed", None),
    ("sys:ro", None, "ro", None),
    ("sys:mixed", None, "mixed", None),
    ("sys:rw", None, "rw", None),
    ("proc:rw sys:rw proc", "mixed", "rw", None),
    ("cgroup-full:ro:force\tproc", "mixed", None, "cgroup-full:ro:force"),
    ("cgroup", None, None, "cgroup"),
    ("shmounts:/a:/b", None, None, None),
])
def test_mount_auto_tokens(tmp_path, value, proc, sys, cgroup):
    cfg = load_text(tmp_path, f"lxc.mount.auto = {value}\n")
    assert (cfg.mount_proc, cfg.mount_sys, cfg.mount_cgroup) == (proc, sys, cgroup)


def test_mount_auto_lines_accumulate_until_reset(tmp_path):
    cfg = load_text(tmp_path, "lxc.mount.auto = proc\nlxc.mount.auto = sys:ro\n")
    assert (cfg.mount_proc, cfg.mount_sys) == ("mixed", "ro")
    cfg = load_text(tmp_path, "lxc.mount.auto = proc\nlxc.mount.auto =\nlxc.mount.auto = sys\n")
    assert (cfg.mount_proc, cfg.mount_sys) == (None, "mixed")


@pytest.mark.parametrize("token", ["proc:ro", "sys:force", "dev", "shmounts:", "cgroup:bogus"])
def test_unknown_mount_auto_token(tmp_path, token):
    err = error_of(tmp_path, f"lxc.mount.auto = proc {token}\n")
    assert err.key == "lxc.mount.auto"
    assert repr(token) in err.message


# --- single-valued keys ------------------------------------------------------

@pytest.mark.parametrize("value, path", [
    ("/var/lib/lxc/bb/rootfs", "/var/lib/lxc/bb/rootfs"),
    ("dir:/var/lib/lxc/bb/rootfs", "/var/lib/lxc/bb/rootfs"),
])
def test_rootfs_path(tmp_path, value, path):
    cfg = load_text(tmp_path, f"lxc.rootfs.path = {value}\n")
    assert cfg.rootfs_path == path
    assert cfg.get_item("lxc.rootfs.path") == path


@pytest.mark.parametrize("storage", [
    "overlay", "overlayfs", "btrfs", "loop", "lvm", "zfs", "rbd", "nbd"])
def test_other_storage_types_are_refused(tmp_path, storage):
    err = error_of(tmp_path, f"lxc.rootfs.path = {storage}:/srv/bb\n")
    assert err.message == f"storage type {storage} is not supported"


def test_unknown_storage_type(tmp_path):
    assert "unknown storage type" in error_of(tmp_path, "lxc.rootfs.path = ext4:/x\n").message


def test_init_cmd_is_split_like_a_shell(tmp_path):
    cfg = load_text(tmp_path, "lxc.init.cmd = /bin/sh -c 'echo hi; exec init'\n")
    assert cfg.init_cmd == ("/bin/sh", "-c", "echo hi; exec init")


def test_namespaces(tmp_path):
    cfg = load_text(tmp_path, "lxc.namespace.clone = MNT pid\nlxc.namespace.clone = uts\n")
    assert cfg.namespace_clone == {"mnt", "pid", "uts"}
    assert cfg.namespace_keep == frozenset()
    err = error_of(tmp_path, "lxc.namespace.keep = net mount\n")
    assert "unknown namespace mount" in err.message


@pytest.mark.parametrize("value, level", [
    ("TRACE", "TRACE"), ("debug", "DEBUG"), ("Warn", "WARN"), ("0", "TRACE"),
    ("3", "NOTICE"), ("8", "FATAL"),
])
def test_log_level(tmp_path, value, level):
    cfg = load_text(tmp_path, f"lxc.log.level = {value}\n")
    assert cfg.log_level == level
    assert cfg.get_item("lxc.log.level") == level


@pytest.mark.parametrize("value", ["9", "VERBOSE", "-1", "WARNING"])
def test_bad_log_level(tmp_path, value):
    assert error_of(tmp_path, f"lxc.log.level = {value}\n").key == "lxc.log.level"


# --- signals -----------------------------------------------------------------

@pytest.mark.parametrize("text, number", [
    ("SIGPWR", signal.SIGPWR),
    ("PWR", signal.SIGPWR),
    ("sigpwr", signal.SIGPWR),
    ("SigTerm", signal.SIGTERM),
    ("30", 30),
    ("1", 1),
    ("SIGRTMIN+3", signal.SIGRTMIN + 3),
    ("RTMIN+3", signal.SIGRTMIN + 3),
    ("sigrtmin+0", signal.SIGRTMIN),
    ("SIGRTMAX-1", signal.SIGRTMAX - 1),
    ("RTMAX-0", signal.SIGRTMAX),
])
def test_parse_signal(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", [
    "", "0", "65", "SIGFOO", "SIG", "RTMIN", "SIGRTMIN+31", "RTMAX+1", "RTMIN-1",
    "SIGRTMIN+x", "-9", "9x", "SIGRTMIN",
])
def test_parse_signal_rejects(text):
    with pytest.raises(ValueError):
        parse_signal(text)


def test_signals_in_config(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.signal.halt = RTMIN+3\nlxc.signal.reboot = 1\nlxc.signal.stop = SIGTERM\n"))
    assert (cfg.signal_halt, cfg.signal_reboot, cfg.signal_stop) == (
        signal.SIGRTMIN + 3, signal.SIGHUP, signal.SIGTERM)
    assert cfg.get_item("lxc.signal.halt") == str(int(signal.SIGRTMIN) + 3)
    assert cfg.get_item("lxc.signal.stop") == "15"


def test_signal_defaults(tmp_path):
    cfg = load_text(tmp_path, "")
    assert (cfg.signal_halt, cfg.signal_reboot, cfg.signal_stop) == (
        signal.SIGPWR, signal.SIGINT, signal.SIGKILL)
    assert cfg.get_item("lxc.signal.halt") is None


def test_bad_signal(tmp_path):
    err = error_of(tmp_path, "lxc.signal.halt = SIGBOGUS\n")
    assert (err.line, err.key) == (1, "lxc.signal.halt")


# --- get_item ----------------------------------------------------------------

def test_get_item(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.uts.name = bb\n"
        "lxc.environment = A=1\n"
        "lxc.environment = B=2\n"
        "lxc.net.0.type = empty\n"
        "lxc.net.0.flags = up\n"
        "lxc.tty.max = 4\n"))
    assert cfg.get_item("lxc.uts.name") == "bb"
    assert cfg.get_item("lxc.tty.max") == "4"
    assert cfg.get_item("lxc.environment") == "A=1\nB=2\n"
    assert cfg.get_item("lxc.net.0.flags") == "up"
    assert cfg.get_item("lxc.net.00.type") == "empty"
    assert cfg.get_item("lxc.net.0") == "lxc.net.0.type = empty\nlxc.net.0.flags = up\n"
    assert cfg.get_item("lxc.init.cwd") is None
    assert cfg.get_item("lxc.mount.entry") is None
    with pytest.raises(KeyError):
        cfg.get_item("lxc.utsname")


# --- networks ----------------------------------------------------------------

def test_network_devices(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.net.1.type = veth\n"
        "lxc.net.1.link = lxcbr0\n"
        "lxc.net.1.name = eth0\n"
        "lxc.net.1.hwaddr = 00:16:3e:xx:xx:xx\n"
        "lxc.net.1.mtu = 1400\n"
        "lxc.net.1.ipv4.address = 10.0.3.5/24\n"
        "lxc.net.1.ipv4.address = 10.0.4.5/24 10.0.4.255\n"
        "lxc.net.1.ipv4.gateway = auto\n"
        "lxc.net.1.ipv6.address = fd00::5/64\n"
        "lxc.net.1.ipv6.gateway = fd00::1\n"
        "lxc.net.1.veth.pair = vethbb\n"
        "lxc.net.1.veth.mode = router\n"
        "lxc.net.1.veth.ipv4.route = 10.1.0.0/16\n"
        "lxc.net.1.veth.ipv4.route = 10.2.0.0/16\n"
        "lxc.net.0.type = empty\n"
        "lxc.net.0.flags = up\n"))
    empty, veth = cfg.networks
    assert (empty.index, empty.type, empty.flags) == (0, "empty", "up")
    assert veth.index == 1
    assert (veth.type, veth.link, veth.name, veth.mtu) == ("veth", "lxcbr0", "eth0", 1400)
    assert veth.hwaddr == "00:16:3e:xx:xx:xx"
    assert veth.ipv4 == ("10.0.3.5/24", "10.0.4.5/24 10.0.4.255")
    assert veth.ipv4_gateway == "auto"
    assert (veth.ipv6, veth.ipv6_gateway) == (("fd00::5/64",), "fd00::1")
    assert veth.veth_pair == "vethbb"
    assert dict(veth.extra) == {"veth.mode": "router",
                                "veth.ipv4.route": "10.1.0.0/16\n10.2.0.0/16"}
    assert veth.origin.line == 1
    # veth is honoured, but not LXC's "auto" gateway, router mode or host-side routes
    assert [s.key for s in cfg.unsupported] == ["lxc.net.1.ipv4.gateway", "lxc.net.1.veth.mode",
                                                "lxc.net.1.veth.ipv4.route", "lxc.net.1.veth.ipv4.route"]


def test_device_without_type_line_is_empty(tmp_path):
    (net,) = load_text(tmp_path, "lxc.net.0.flags = up\n").networks
    assert net.type == "empty"
    assert net.origin.key == "lxc.net.0.flags"


def test_network_index_is_a_number(tmp_path):
    cfg = load_text(tmp_path, "lxc.net.00.type = veth\nlxc.net.0.type = none\n")
    (net,) = cfg.networks
    assert net.type == "none"
    assert cfg.unsupported == ()


def test_empty_net_keys_remove_devices(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.net.0.type = veth\nlxc.net.1.type = empty\nlxc.net.0 =\n"))
    assert [n.index for n in cfg.networks] == [1]
    assert cfg.unsupported == ()
    cfg = load_text(tmp_path, "lxc.net.0.type = veth\nlxc.net.1.type = empty\nlxc.net =\n")
    assert cfg.networks == ()
    cfg = load_text(tmp_path, "lxc.net.0.type = empty\nlxc.net.0.link = br0\nlxc.net.0.link =\n")
    assert cfg.networks[0].link is None


@pytest.mark.parametrize("line, message", [
    ("lxc.net.0.bogus = 1", "unknown network sub-key 'bogus'"),
    ("lxc.net.x.type = veth", "lxc.net.<index>.<sub-key>"),
    ("lxc.net.0.type = bridge", "not one of"),
    ("lxc.net.0.hwaddr = 00:16:3e:00:00", "xx:xx:xx:xx:xx:xx"),
    ("lxc.net.0.hwaddr = 00:16:3e:00:00:0g", "xx:xx:xx:xx:xx:xx"),
    ("lxc.net.0.mtu = 67", "from 68 to 65535"),
    ("lxc.net.0.mtu = 65536", "from 68 to 65535"),
    ("lxc.net.0.link = averyveryverylongname", "longer than 15 bytes"),
    ("lxc.net.0.ipv4.address = 10.0.0.300/24", "invalid IPv4 address"),
    ("lxc.net.0.ipv4.address = 10.0.0.3/33", "invalid IPv4 address"),
    ("lxc.net.0.ipv6.address = fd00::zz", "invalid IPv6 address"),
    ("lxc.net.0.ipv4.gateway = gw", "invalid IPv4 gateway"),
    ("lxc.net.0.veth.pair = vethbb", "only valid when lxc.net.0.type is veth"),
    ("lxc.net.0 = veth", "must not have a value"),
])
def test_bad_network_settings(tmp_path, line, message):
    err = error_of(tmp_path, "lxc.net.0.type = empty\n" + line + "\n")
    assert (err.line, err.key) == (2, line.split("=")[0].strip())
    assert message in err.message


def test_type_specific_sub_keys_follow_the_type(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.net.0.type = macvlan\nlxc.net.0.macvlan.mode = bridge\n"
        "lxc.net.1.type = vlan\nlxc.net.1.vlan.id = 10\n"))
    assert [dict(n.extra) for n in cfg.networks] == [{"macvlan.mode": "bridge"}, {"vlan.id": "10"}]


# --- container name ----------------------------------------------------------

@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "x" * (loader.MAX_NAME_BYTES + 1)])
def test_bad_container_names(tmp_path, name):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "", name=name)
    assert (caught.value.line, caught.value.key) == (0, "name")


def test_longest_container_name(tmp_path):
    name = "x" * loader.MAX_NAME_BYTES
    assert load_text(tmp_path, "", name=name).name == name


# --- errors are one printable line -------------------------------------------

def test_error_text_escapes_control_characters():
    err = ConfigError("/c\nfg", 3, "lxc.uts\x1b[2J\r.name", "bad\tvalue \u2028 here")
    assert str(err) == "/c\\nfg:3: lxc.uts\\x1b[2J\\r.name: bad\\tvalue \\u2028 here"
    assert (err.file, err.key, err.message) == ("/c\nfg", "lxc.uts\x1b[2J\r.name", "bad\tvalue \u2028 here")


def test_error_text_cuts_overlong_keys_and_messages():
    err = ConfigError("f", 1, "k" * 5000, "m" * 5000)
    shown_key, shown_message = str(err).split(": ")[1:]
    assert shown_key == "k" * loader.MAX_SHOWN_KEY + "..."
    assert shown_message == "m" * loader.MAX_SHOWN_MESSAGE + "..."
    assert len(err.key) == 5000


def test_a_line_of_garbage_names_no_key(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"lxc.uts.name = a\n\x7fELF\x02\x01\x01\x00\xff\xfe = x\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path), "bb")
    assert (caught.value.line, caught.value.key) == (2, loader.FILE_KEY)
    assert str(caught.value) == f"{path}:2: line is not valid UTF-8"


def test_an_unknown_key_with_escapes_is_shown_escaped(tmp_path):
    err = error_of(tmp_path, "lxc.uts\x1b[31m.name = a\n")
    assert err.key == "lxc.uts\x1b[31m.name"
    assert str(err).endswith(":1: lxc.uts\\x1b[31m.name: unknown key")


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "esc\x1b[0m"])
def test_container_names_with_control_characters(tmp_path, name):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "", name=name)
    assert (caught.value.file, caught.value.line, caught.value.key) == ("-n", 0, "name")
    assert "control characters" in caught.value.message
    assert "\n" not in str(caught.value)


def test_name_errors_point_at_the_flag_not_at_a_path_made_from_the_name(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path / "a" / "b" / "config"), "a/b")
    assert str(caught.value) == "-n: name: container name 'a/b' may not contain '/' or NUL"


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


def test_in_effect_lists_what_was_not_reset(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.hook.pre-start = /a\nlxc.hook.stop = /b\nlxc.hook.pre-start =\n"
        "lxc.hook.post-stop = /c\nlxc.seccomp.profile = /p\nlxc.seccomp.profile = /q\n"))
    assert [(k, s.value, s.line) for k, s in cfg.in_effect("lxc.hook")] == [
        ("lxc.hook.stop", "/b", 2), ("lxc.hook.post-stop", "/c", 4)]
    assert [(k, s.line) for k, s in cfg.in_effect("lxc.seccomp.profile")] == [("lxc.seccomp.profile", 6)]
    assert cfg.in_effect("lxc.cgroup") == ()


# --- seccomp policy files ----------------------------------------------------

COMMON_SECCOMP = """\
2
denylist
reject_force_umount  # comment this to allow umount -f;  not recommended
[all]
kexec_load errno 1
open_by_handle_at errno 1
init_module errno 1
finit_module errno 1
delete_module errno 1
"""


def test_lxc_common_seccomp_policy_is_valid():
    policy = seccomp_policy.parse(COMMON_SECCOMP, "common.seccomp")
    assert (policy.version, policy.denylist, policy.default_action) == (2, True, "allow")
    assert [(r.syscall, r.action, r.arch, r.line) for r in policy.rules[:2]] == [
        ("reject_force_umount", "kill", "native", 3), ("kexec_load", "errno 1", "all", 5)]


def test_seccomp_policy_with_everything():
    policy = seccomp_policy.parse(
        "2\nallowlist errno 38\n# only these\n\n[X86_64]\nread\nwrite allow # logs\n"
        "ioctl notify\nkill kill [0,1,SCMP_CMP_EQ] [1,0x10,&=,0xf0]\n[x86]\nread trap\n", "p")
    assert (policy.denylist, policy.default_action, policy.rule_action) == (False, "errno 38", "allow")
    assert [(r.syscall, r.action, r.arch) for r in policy.rules] == [
        ("read", "allow", "x86_64"), ("write", "allow", "x86_64"), ("ioctl", "notify", "x86_64"),
        ("kill", "kill", "x86_64"), ("read", "trap", "x86")]
    assert policy.rules[3].args == (seccomp_policy.Argument(0, 1, "SCMP_CMP_EQ", None),
                                    seccomp_policy.Argument(1, 16, "SCMP_CMP_MASKED_EQ", 240))


def test_seccomp_version_1_and_old_names():
    assert [r.syscall for r in seccomp_policy.parse("1\nallowlist\n0\n1\n60\n", "p").rules] == ["0", "1", "60"]
    assert seccomp_policy.parse("2\nblacklist\nmknod\n", "p").denylist
    assert not seccomp_policy.parse("2\nwhitelist\nread\n", "p").denylist


@pytest.mark.parametrize("text, line, message", [
    ("", 0, "the first line must be the policy version"),
    ("3\ndenylist\n", 1, "not '3'"),
    ("two\ndenylist\n", 1, "not 'two'"),
    ("2\n", 0, "no policy line"),
    ("2\nallowlst\nread\n", 2, "must be allowlist or denylist"),
    ("2\ndenylist # default\n", 2, "unknown default action '#'"),
    ("2\ndenylist errno\n", 2, "errno needs a number"),
    ("2\ndenylist debug\n", 2, "'debug' directive"),
    ("1\ndenylist\n0\n", 2, "version 1 policy must be an allowlist"),
    ("1\nallowlist\n0\nread\n", 4, "one syscall number a line"),
    ("1\nallowlist\n0\n\n1\n", 4, "one syscall number a line"),
    ("2\ndenylist\n[vax]\n", 3, "unknown architecture section '[vax]'"),
    ("2\ndenylist\n[x86_64\nread\n", 3, "unknown architecture section"),
    ("2\ndenylist\n[X86_64]\n[Arm64]\n", 4, "unknown architecture section '[Arm64]'"),
    ("2\ndenylist\nmount kill-everything\n", 3, "unknown action 'kill-everything'"),
    ("2\ndenylist\nmount errno\n", 3, "errno needs a number"),
    ("2\ndenylist\nmount errno one\n", 3, "errno needs a number"),
    ("2\ndenylist\nmount() errno 1\n", 3, "'mount()' is not a syscall name"),
    ("2\ndenylist\nmount [0,1,==]\n", 3, "arguments need an action"),
    ("2\ndenylist\nmount errno 1 [0,1]\n", 3, "is not [INDEX,VALUE,OP]"),
    ("2\ndenylist\nmount errno 1 [6,1,==]\n", 3, "index '6' is not 0..5"),
    ("2\ndenylist\nmount errno 1 [0,x,==]\n", 3, "value 'x' is not an unsigned 64-bit number"),
    ("2\ndenylist\nmount errno 1 [0,08,==]\n", 3, "value '08'"),
    ("2\ndenylist\nmount errno 1 [0,18446744073709551616,==]\n", 3, "not an unsigned 64-bit number"),
    ("2\ndenylist\nmount errno 1 [0,1,&=,zz]\n", 3, "mask 'zz'"),
    ("2\ndenylist\nmount errno 1 [0,1,SCMP_CMP_EQUAL]\n", 3, "unknown comparison 'SCMP_CMP_EQUAL'"),
    ("2\ndenylist\nmount errno 1 [0,1,== ]\n", 3, "unknown comparison '== '"),
    ("2\ndenylist\nmount errno 1 [0,1,==] junk\n", 3, "cannot read 'junk'"),
    ("2\ndenylist\nmount errno 1 " + "[0,1,==] " * 7 + "\n", 3, "more than 6 arguments"),
])
def test_bad_seccomp_policies(text, line, message):
    with pytest.raises(seccomp_policy.PolicyError) as caught:
        seccomp_policy.parse(text, "policy")
    assert caught.value.line == line
    assert message in caught.value.message
    assert str(caught.value).startswith(f"policy:{line}: " if line else "policy: ")


def test_seccomp_file_bytes_are_checked(tmp_path):
    path = tmp_path / "policy"
    path.write_bytes(b"2\ndenylist\nmkn\xf6d\n")
    with pytest.raises(seccomp_policy.PolicyError) as caught:
        seccomp_policy.read(str(path))
    assert (caught.value.line, caught.value.message) == (3, "line is not valid UTF-8")
    path.write_bytes(b"2\ndenylist\n" + b"# x\n" * (seccomp_policy.MAX_POLICY_BYTES // 4))
    with pytest.raises(seccomp_policy.PolicyError, match="larger than"):
        seccomp_policy.read(str(path))


# --- preflight: what LXC would fail on halfway -------------------------------

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


def test_a_fifo_is_read_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "config"
    os.mkfifo(fifo)
    assert load(str(fifo), "bb").settings == ()       # empty, as LXC sees a FIFO's size of 0
    (tmp_path / "policy").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "policy")
    with pytest.raises(seccomp_policy.PolicyError, match="an empty file"):
        seccomp_policy.read(str(tmp_path / "policy"))


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path), "bb")
    assert str(caught.value) == f"{tmp_path}: cannot read config: Is a directory"
