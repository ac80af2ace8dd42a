"""The value parsers, each through the keys that use it."""
import signal

import pytest

from lxcsm.engine.config.values import parse_signal
from tests.unit.config_text import error_of, load_text

# --- mounts ------------------------------------------------------------------

@pytest.mark.parametrize("entry, message", [
    ("tmpfs tmp tmpfs", "at least 4 fields"),
    ("a b c d 0 0 extra", "at most 6 fields"),
    ("shm dev/shm tmpfs create=pipe 0 0", "create= must be dir or file"),
    ("/a a none bind,idmap= 0 0", "idmap= needs 'container' or the path of a user namespace"),
])
def test_bad_mount_entries(tmp_path, entry, message):
    err = error_of(tmp_path, f"lxc.mount.entry = {entry}\n")
    assert (err.line, err.key) == (1, "lxc.mount.entry")
    assert message in err.message


def test_rootfs_options_are_checked_as_mount_options(tmp_path):
    assert load_text(tmp_path, "lxc.rootfs.options = ro,nodev\n").rootfs_options == "ro,nodev"
    assert load_text(tmp_path, "lxc.rootfs.options = ro,idmap=container\n").rootfs_options == "ro,idmap=container"
    assert "idmap= needs" in error_of(tmp_path, "lxc.rootfs.options = idmap=\n").message


def test_a_mount_entry_may_name_a_user_namespace_to_idmap_its_bind_to(tmp_path):
    entry, = load_text(tmp_path, "lxc.mount.entry = /a a none bind,ro,idmap=container 0 0\n").mount_entries
    assert entry.options == "bind,ro,idmap=container"   # what may be idmapped: preflight's to say


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


@pytest.mark.parametrize("value, layers", [
    # As lxc-copy -s -B overlayfs writes it; the work directory is beside the upper layer.
    ("overlay:/var/lib/lxc/c1/rootfs:/var/lib/lxc/c2/overlay/delta",
     ("/var/lib/lxc/c1/rootfs", "/var/lib/lxc/c2/overlay/delta", "/var/lib/lxc/c2/overlay/work")),
    ("overlayfs:/a/rootfs:/b/layer:/c/delta", ("/a/rootfs:/b/layer", "/c/delta", "/c/work")),
])
def test_overlay_rootfs_as_lxc_splits_it(tmp_path, value, layers):
    cfg = load_text(tmp_path, f"lxc.rootfs.path = {value}\n")
    assert cfg.rootfs_overlay() == layers
    assert cfg.rootfs_path == layers[0].split(":")[0]   # where preflight finds init


@pytest.mark.parametrize("value", ["overlay:/only-one", "overlay:relative:/delta", "overlay:"])
def test_overlay_rootfs_needs_a_lower_and_an_upper_layer(tmp_path, value):
    assert error_of(tmp_path, f"lxc.rootfs.path = {value}\n").message == "an overlay rootfs is overlay:/LOWER:/UPPER"


@pytest.mark.parametrize("storage", ["btrfs", "loop", "lvm", "zfs", "rbd", "nbd"])
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


# --- network values ----------------------------------------------------------

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
