"""The loaded Config: its queries, its network devices, and the text of ConfigError."""

import pytest

from lxcsm.engine.config import values
from lxcsm.engine.config.model import ConfigError
from tests.unit.config_text import load_text

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


# --- in_effect ---------------------------------------------------------------

def test_in_effect_lists_what_was_not_reset(tmp_path):
    cfg = load_text(tmp_path, (
        "lxc.hook.pre-start = /a\nlxc.hook.stop = /b\nlxc.hook.pre-start =\n"
        "lxc.hook.post-stop = /c\nlxc.seccomp.profile = /p\nlxc.seccomp.profile = /q\n"))
    assert [(k, s.value, s.line) for k, s in cfg.in_effect("lxc.hook")] == [
        ("lxc.hook.stop", "/b", 2), ("lxc.hook.post-stop", "/c", 4)]
    assert [(k, s.line) for k, s in cfg.in_effect("lxc.seccomp.profile")] == [("lxc.seccomp.profile", 6)]
    assert cfg.in_effect("lxc.cgroup") == ()


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


# --- errors are one printable line -------------------------------------------

def test_error_text_escapes_control_characters():
    err = ConfigError("/c\nfg", 3, "lxc.uts\x1b[2J\r.name", "bad\tvalue \u2028 here")
    assert str(err) == "/c\\nfg:3: lxc.uts\\x1b[2J\\r.name: bad\\tvalue \\u2028 here"
    assert (err.file, err.key, err.message) == ("/c\nfg", "lxc.uts\x1b[2J\r.name", "bad\tvalue \u2028 here")


def test_error_text_cuts_overlong_keys_and_messages():
    err = ConfigError("f", 1, "k" * 5000, "m" * 5000)
    shown_key, shown_message = str(err).split(": ")[1:]
    assert shown_key == "k" * values.MAX_SHOWN_KEY + "..."
    assert shown_message == "m" * values.MAX_SHOWN_MESSAGE + "..."
    assert len(err.key) == 5000
