"""engine/linux/netlink.py's pure parts: names and MAC addresses (the rest runs in test_network)."""

from __future__ import annotations

import re

from lxcsm.engine.linux import netlink


def test_random_hwaddr_fills_only_the_x_digits():
    for _ in range(50):
        mac = netlink.random_hwaddr("00:16:3e:xx:xx:xx")
        assert re.fullmatch(r"00:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}", mac), mac
    assert netlink.random_hwaddr("02:00:00:00:00:01") == "02:00:00:00:00:01"


def test_a_random_first_byte_is_unicast_and_locally_administered():
    for _ in range(200):
        first = int(netlink.random_hwaddr("xx:xx:xx:xx:xx:xx")[:2], 16)
        assert first & 0x01 == 0 and first & 0x02 == 0x02, hex(first)


def test_host_names_look_like_lxcs_and_fit_ifnamsiz():
    names = {netlink.host_name() for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"veth[A-Za-z0-9]{6}", n) for n in names)


def test_transient_names_are_distinct_and_fit_ifnamsiz():
    names = [netlink.transient_name(p) for p in range(100)]
    assert len(set(names)) == 100 and all(len(n) < 16 for n in names)
