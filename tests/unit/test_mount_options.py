import pytest

from lxcsm.engine.linux.mount_options import (
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SILENT,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    MountOptions,
    parse_mount_options,
)

NOTHING = MountOptions(flags=0, propagation=0, data="", create=None, optional=False, relative=False)


def test_kernel_flag_values_match_linux_mount_h():
    assert (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC) == (1, 2, 4, 8)
    assert (MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC) == (16, 32, 64, 128)
    assert (MS_NOATIME, MS_NODIRATIME, MS_BIND) == (1024, 2048, 4096)
    assert (MS_REC, MS_SILENT) == (16384, 32768)
    assert (MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED) == (1 << 17, 1 << 18, 1 << 19, 1 << 20)
    assert (MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME) == (1 << 21, 1 << 24, 1 << 25)


@pytest.mark.parametrize("option, flags", [
    ("defaults", 0),
    ("ro", MS_RDONLY),
    ("nosuid", MS_NOSUID),
    ("nodev", MS_NODEV),
    ("noexec", MS_NOEXEC),
    ("sync", MS_SYNCHRONOUS),
    ("dirsync", MS_DIRSYNC),
    ("remount", MS_REMOUNT),
    ("mand", MS_MANDLOCK),
    ("noatime", MS_NOATIME),
    ("nodiratime", MS_NODIRATIME),
    ("bind", MS_BIND),
    ("rbind", MS_BIND | MS_REC),
    ("relatime", MS_RELATIME),
    ("strictatime", MS_STRICTATIME),
    ("lazytime", MS_LAZYTIME),
    ("silent", MS_SILENT),
])
def test_option_raises_its_flag(option, flags):
    parsed = parse_mount_options(option)
    assert parsed.flags == flags
    assert parsed.data == ""


@pytest.mark.parametrize("raising, lowering", [
    ("ro", "rw"),
    ("nosuid", "suid"),
    ("nodev", "dev"),
    ("noexec", "exec"),
    ("sync", "async"),
    ("mand", "nomand"),
    ("noatime", "atime"),
    ("nodiratime", "diratime"),
    ("relatime", "norelatime"),
    ("strictatime", "nostrictatime"),
    ("lazytime", "nolazytime"),
    ("silent", "loud"),
])
def test_later_option_lowers_the_flag_again(raising, lowering):
    assert parse_mount_options(f"{raising},{lowering}").flags == 0
    assert parse_mount_options(f"{lowering},{raising}").flags != 0


def test_flags_combine():
    parsed = parse_mount_options("ro,nosuid,nodev,noexec,bind")
    assert parsed.flags == MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_BIND
    assert parsed.readonly and parsed.bind


def test_bind_and_readonly_properties():
    assert not parse_mount_options("rw").readonly
    assert not parse_mount_options("defaults").bind
    rbind = parse_mount_options("rbind")
    assert rbind.bind and rbind.flags & MS_REC


def test_unknown_options_are_passed_to_the_filesystem_in_order():
    parsed = parse_mount_options("size=10%,nosuid,mode=755,user_xattr")
    assert parsed.data == "size=10%,mode=755,user_xattr"
    assert parsed.flags == MS_NOSUID


@pytest.mark.parametrize("option, propagation", [
    ("private", MS_PRIVATE),
    ("rprivate", MS_PRIVATE | MS_REC),
    ("slave", MS_SLAVE),
    ("rslave", MS_SLAVE | MS_REC),
    ("shared", MS_SHARED),
    ("rshared", MS_SHARED | MS_REC),
    ("unbindable", MS_UNBINDABLE),
    ("runbindable", MS_UNBINDABLE | MS_REC),
])
def test_propagation_is_kept_apart_from_flags(option, propagation):
    parsed = parse_mount_options(f"bind,{option}")
    assert parsed.propagation == propagation
    assert parsed.flags == MS_BIND
    assert parsed.data == ""


def test_last_propagation_wins():
    assert parse_mount_options("shared,rslave").propagation == MS_SLAVE | MS_REC


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_create(kind):
    parsed = parse_mount_options(f"defaults,create={kind}")
    assert parsed.create == kind
    assert parsed.data == ""


def test_lxc_only_options_never_reach_the_kernel():
    parsed = parse_mount_options("ro,bind,optional,relative,create=dir")
    assert parsed.optional and parsed.relative
    assert parsed.flags == MS_RDONLY | MS_BIND
    assert parsed.data == ""


def test_empty_string_and_empty_items():
    assert parse_mount_options("") == NOTHING
    assert parse_mount_options(",ro,,") == parse_mount_options("ro")


def test_create_must_be_dir_or_file():
    with pytest.raises(ValueError, match="create= must be dir or file"):
        parse_mount_options("create=fifo")


def test_idmap_names_the_user_namespace_and_never_reaches_the_kernel():
    assert parse_mount_options("bind,idmap=container,ro").idmap == "container"
    assert parse_mount_options("idmap=/proc/42/ns/user") == NOTHING._replace(idmap="/proc/42/ns/user")
    assert parse_mount_options("ro").idmap is None
    with pytest.raises(ValueError, match="idmap= needs 'container' or the path of a user namespace"):
        parse_mount_options("bind,idmap=")
