"""Reading config files: line syntax, resets, includes, -s overrides, fstab, the container name."""
import os
import signal

import pytest

from lxcsm.engine.config import keys, loader, model, seccomp_policy
from lxcsm.engine.config.loader import load
from lxcsm.engine.config.model import ConfigError, MountEntry, Setting
from tests.unit.config_text import error_of, lines_run, load_text, write

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
        # lxc.apparmor.allow_nesting = 1: LXC's nesting helpers, after the entries
        ("proc", "dev/.lxc/proc", "proc", "create=dir,optional"),
        ("sys", "dev/.lxc/sys", "sysfs", "create=dir,optional"),
    ]
    assert cfg.mount_entries[0].origin == Setting(
        path, 27, "lxc.mount.entry", "shm dev/shm tmpfs defaults,create=dir 0 0")
    (net,) = cfg.networks
    assert (net.index, net.type, net.link, net.flags) == (0, "veth", "lxcbr0", "up")
    assert net.origin == Setting(path, 9, "lxc.net.0.type", "veth")
    # LXC ignores AppArmor keys on a host without AppArmor (preflight refuses them on one with it).
    apparmor = [(12, "lxc.apparmor.profile"), (13, "lxc.apparmor.allow_nesting")]
    assert [(s.line, s.key) for s in cfg.unsupported] == (apparmor if keys.lsm_enabled("apparmor") else [])
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


def test_byte_order_mark_before_a_comment_or_blank_line(tmp_path):
    """LXC reads a file that starts with a UTF-8 byte-order mark: the first line, mark
    included, is skipped, which is only right for a comment or a blank line."""
    path = tmp_path / "config"
    for first in (b"# made on another system\n", b"\n", b"   \n"):
        path.write_bytes(b"\xef\xbb\xbf" + first + b"lxc.uts.name = a\n")
        cfg = load(str(path), "bb")
        assert cfg.uts_name == "a"
        assert [s.line for s in cfg.settings] == [2]


def test_byte_order_mark_in_an_included_file(tmp_path):
    (tmp_path / "common.conf").write_bytes(b"\xef\xbb\xbf# common\nlxc.uts.name = common\n")
    assert load_text(tmp_path, "lxc.include = common.conf\n").uts_name == "common"


def test_byte_order_mark_before_a_setting_is_refused(tmp_path):
    """LXC would skip the setting without a word; lxcsm says so instead of reading the
    config differently."""
    path = tmp_path / "config"
    path.write_bytes(b"\xef\xbb\xbflxc.uts.name = a\nlxc.init.cmd = /bin/sh\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path), "bb")
    assert (caught.value.line, caught.value.key) == (1, "lxc.uts.name")
    assert "LXC would skip it" in caught.value.message


def test_byte_order_mark_only_counts_at_the_start(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"# first\n\xef\xbb\xbf# not at the start\n")
    err = pytest.raises(ConfigError, load, str(path), "bb").value
    assert (err.line, err.key, err.message) == (2, "\ufeff#", "line is not 'key = value'")


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


def test_a_line_of_garbage_names_no_key(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"lxc.uts.name = a\n\x7fELF\x02\x01\x01\x00\xff\xfe = x\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path), "bb")
    assert (caught.value.line, caught.value.key) == (2, model.FILE_KEY)
    assert str(caught.value) == f"{path}:2: line is not valid UTF-8"


def test_an_unknown_key_with_escapes_is_shown_escaped(tmp_path):
    err = error_of(tmp_path, "lxc.uts\x1b[31m.name = a\n")
    assert err.key == "lxc.uts\x1b[31m.name"
    assert str(err).endswith(":1: lxc.uts\\x1b[31m.name: unknown key")


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
    assert [key for key, _s in cfg.in_effect("lxc.cgroup.dir")] == ["lxc.cgroup.dir"]
    cfg = load_text(tmp_path, (
        "lxc.cgroup.dir = lxc/bb\n"
        "lxc.cgroup.cpu.shares = 100\n"
        "lxc.cgroup =\n"))
    assert cfg.in_effect("lxc.cgroup") == ()
    assert [key for key, _s in cfg.in_effect("lxc.cgroup.dir")] == ["lxc.cgroup.dir"]


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


def test_include_directory_skips_sub_directories_named_conf(tmp_path):
    """LXC 5.0.2 fails to read such a directory, logs that, and goes on with the next file."""
    write(tmp_path / "d" / "a.conf", "lxc.environment = A\n")
    write(tmp_path / "d" / "b.conf" / "inner.conf", "lxc.environment = INNER\n")
    (tmp_path / "d" / "c.conf").symlink_to("b.conf")
    write(tmp_path / "d" / "d.conf", "lxc.environment = D\n")
    assert load_text(tmp_path, "lxc.include = d\n").environment == ("A", "D")


def test_absent_include_directory_with_a_trailing_slash_includes_nothing(tmp_path):
    """As under LXC, whose common.conf includes common.conf.d/ whether it exists or not."""
    cfg = load_text(tmp_path, "lxc.include = common.conf.d/\nlxc.uts.name = a\n")
    assert cfg.uts_name == "a"
    write(tmp_path / "plain", "lxc.uts.name = b\n")
    err = error_of(tmp_path, "lxc.include = plain/\n")
    assert (err.line, err.key) == (1, "lxc.include")
    assert err.message == f"cannot list {tmp_path / 'plain'}/: Not a directory"


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


def test_includes_nested_too_deep_are_one_error_not_a_crash(tmp_path):
    for depth in range(1, loader.MAX_INCLUDE_DEPTH):
        write(tmp_path / f"{depth}.conf", f"lxc.include = {depth + 1}.conf\n")
    write(tmp_path / f"{loader.MAX_INCLUDE_DEPTH}.conf", "lxc.uts.name = deep\n")
    assert load(str(tmp_path / "1.conf"), "bb").uts_name == "deep"
    err = error_of(tmp_path, "lxc.include = 1.conf\n")   # one file more
    last = loader.MAX_INCLUDE_DEPTH - 1
    assert (err.file, err.line, err.key) == (str(tmp_path / f"{last}.conf"), 1, "lxc.include")
    assert err.message == f"includes are nested more than {loader.MAX_INCLUDE_DEPTH} files deep"


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


# --- fstab -------------------------------------------------------------------

@pytest.mark.skipif(any(keys.lsm_enabled(lsm) for lsm in keys.LSM_PRESENT),
                    reason="lxc.apparmor.* is refused on a host running AppArmor or SELinux")
@pytest.mark.parametrize("entries, nesting, helped", [
    (["lxc.mount.entry = tmpfs tmp tmpfs size=1M 0 0"], "1", True),
    (["lxc.mount.entry = tmpfs tmp tmpfs size=1M 0 0"], "0", False),
    ([], "1", False),   # LXC's setup_mount_entries() is not called without an lxc.mount.entry line
])
def test_apparmor_allow_nesting_appends_lxcs_nesting_helpers_to_the_mount_entries(tmp_path, entries, nesting, helped):
    cfg = load_text(tmp_path, "".join(f"{line}\n" for line in entries) + f"lxc.apparmor.allow_nesting = {nesting}\n")
    origin = Setting(str(tmp_path / "config"), len(entries) + 1, "lxc.apparmor.allow_nesting", nesting)
    helpers = (MountEntry("proc", "dev/.lxc/proc", "proc", "create=dir,optional", origin),
               MountEntry("sys", "dev/.lxc/sys", "sysfs", "create=dir,optional", origin))
    assert cfg.mount_entries[len(entries):] == (helpers if helped else ())


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


# --- container name ----------------------------------------------------------

@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "x" * (loader.MAX_NAME_BYTES + 1)])
def test_bad_container_names(tmp_path, name):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "", name=name)
    assert (caught.value.line, caught.value.key) == (0, "name")


def test_longest_container_name(tmp_path):
    name = "x" * loader.MAX_NAME_BYTES
    assert load_text(tmp_path, "", name=name).name == name


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


# --- the work grows with the config, not with its square ---------------------

# Configs of any length, line i of each kind (a few thousand lines used to take seconds).
GROWING_CONFIGS = {
    "a list key": lambda i: [f"lxc.environment = V{i}=x"],
    "distinct single-valued keys": lambda i: [f"lxc.sysctl.net.k{i} = 1", f"lxc.prlimit.nofile = {i}"],
    "one key set again and again": lambda i: [f"lxc.tty.max = {i}"],
    "keys that exclude others": lambda i: ["lxc.cap.drop = sys_time", "lxc.namespace.clone = uts"],
    "network devices": lambda i: [f"lxc.net.{i}.type = veth", f"lxc.net.{i}.veth.pair = v{i}",
                                  f"lxc.net.{i}.ipv4.address = 198.51.100.{i % 250}/24"],
    "resets": lambda i: [f"lxc.cgroup.memory.limit_in_bytes = {i}", f"lxc.environment = V{i}",
                         "lxc.cgroup.memory =", f"lxc.net.{i}.type = empty", f"lxc.net.{i} =",
                         f"lxc.sysctl.a.b{i} = 1", "lxc.sysctl.a ="],
    "includes": lambda i: ["lxc.include = common.conf"],
    "mount entries": lambda i: [f"lxc.mount.entry = /srv/{i} mnt/{i} none bind,create=dir 0 0"],
}


def work_of_loading(tmp_path, count: int, lines_of) -> int:
    text = "".join(line + "\n" for i in range(count) for line in lines_of(i))
    write(tmp_path / str(count) / "common.conf", "lxc.environment = C=1\n")
    path = write(tmp_path / str(count) / "config", text)
    return lines_run(lambda: load(path, "bb"))


@pytest.mark.parametrize("kind", sorted(GROWING_CONFIGS))
def test_four_times_the_lines_is_four_times_the_work(tmp_path, kind):
    """Counted in lines of Python run, not timed: the count is the same on any machine and
    under any load.  Linear loading gives a ratio just under 4 (fixed costs included in
    both); work that grows with the square of the lines gives ~16 at this size."""
    lines_of = GROWING_CONFIGS[kind]
    work_of_loading(tmp_path, 5, lines_of)   # once first: regular expressions compiled, modules imported
    small, large = (work_of_loading(tmp_path, count, lines_of) for count in (200, 800))
    assert large < 5 * small, f"{kind}: 4 times the lines took {large / small:.1f} times the work"
