"""netlink: every network device change a start makes, through pyroute2.

Replaces the veth parts of LXC's network.c (lxc_veth_create, the host side of
netdev_configure_server_veth, and lxc_network_setup_in_child_namespaces_common).
The only module that imports pyroute2: importing it costs a start ~200 ms, so
it is imported only for a config that has a device needing netlink (a veth);
a config with an empty network never loads this file.

The monitor (sync_configure) creates each veth pair with its container end
directly inside the child's network namespace, under a transient name both
sides can compute (`transient_name`), so nothing but CONFIGURE and
POST_CONFIGURE needs to cross the sync channel.  The host end is attached to
its bridge and set up.  The child (setup_network) then renames its end, gives
it its MAC address, addresses, state and routes, from inside its namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import string

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

DEFAULT_MTU = 1500
_RT_SCOPE_LINK = 253


def transient_name(position: int) -> str:
    """The name the container end has until the child renames it: the device's position
    among the config's veths.  The namespace is new and holds only `lo`, so it is free."""
    return f"lxcsm{position}"


def host_name() -> str:
    """A host-side name like LXC's: "veth" and six random letters or digits."""
    return "veth" + "".join(random.choices(string.ascii_letters + string.digits, k=6))


def random_hwaddr(template: str) -> str:
    """The MAC address of `template` with each "x" replaced by a random hex digit; when the
    first byte is (partly) random, it is made a unicast, locally administered one."""
    digits = [random.choice("0123456789abcdef") if c in "xX" else c for c in template]
    if template[1] in "xX":
        digits[1] = "%x" % ((int(digits[1], 16) & 0xE) | 0x2)
    return "".join(digits)


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), name)
    return found[0]


def _os_error(err: NetlinkError, what: str) -> OSError:
    """A netlink error as the OSError the rest of the engine reports: errno, text, object."""
    return OSError(err.code, os.strerror(err.code), what)


def link_kind(name: str) -> str | None:
    """The kind of device `name` is ("bridge", "veth" ...; "" for a plain one), None if absent."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        info = ipr.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
        return (info.get_attr("IFLA_INFO_KIND") if info else None) or ""


def link_mtu(name: str) -> int | None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        return ipr.get_links(found[0])[0].get_attr("IFLA_MTU") if found else None


def create_veth(host: str, peer: str, peer_pid: int, mtu: int) -> None:
    """A veth pair: `host` here, `peer` already in the network namespace of `peer_pid`."""
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=host, kind="veth", mtu=mtu,
                     peer={"ifname": peer, "net_ns_pid": peer_pid, "mtu": mtu})
        except NetlinkError as err:
            raise _os_error(err, f"veth {host}") from None


def create_macvlan(name: str, link: str, mode: str, pid: int, mtu: int | None) -> None:
    """A macvlan on the host's `link`, created directly in the network namespace of `pid`
    (the kernel takes IFLA_NET_NS_PID for any new link)."""
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="macvlan", link=_index(ipr, link), net_ns_pid=pid,
                     macvlan_mode=mode, **({"mtu": mtu} if mtu else {}))
        except NetlinkError as err:
            raise _os_error(err, f"macvlan on {link}") from None


def attach_host_end(host: str, bridge: str | None) -> None:
    """Attach the host end to `bridge` (if any) and set it up.

    As LXC does: the host end's MAC gets 0xfe as its first byte, so a bridge, which takes
    the lowest MAC of its ports, keeps the host's; and a bridged host end gets no IPv6
    link-local address (it is a switch port, not a host)."""
    with IPRoute() as ipr:
        index = _index(ipr, host)
        try:
            address = ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
            ipr.link("set", index=index, address="fe" + address[2:])
            if bridge is not None:
                _write(f"/proc/sys/net/ipv6/conf/{host}/disable_ipv6", "1")
                ipr.link("set", index=index, master=_index(ipr, bridge))
            ipr.link("set", index=index, state="up")
        except NetlinkError as err:
            raise _os_error(err, f"veth {host}" + (f" on bridge {bridge}" if bridge else "")) from None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as knob:
            knob.write(value)
    except FileNotFoundError:
        pass   # a kernel without IPv6


def delete(name: str) -> None:
    """Remove a device; one that is gone already (its pair's namespace died) is fine."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as err:
                if err.code != errno.ENODEV:   # gone between the lookup and the delete
                    raise _os_error(err, name) from None


def configure_in_container(device, transient: str) -> str:
    """Inside the container's network namespace: the device `transient` becomes `device`
    (its name, MAC, MTU, addresses, state, default routes); its final name is returned.
    A device without a name gets the kernel's first free ethN, like LXC's "eth%d"."""
    with IPRoute() as ipr:
        index = _index(ipr, transient)
        try:
            ipr.link("set", index=index, ifname=device.name or "eth%d")
            name = ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
            if device.hwaddr:
                ipr.link("set", index=index, address=random_hwaddr(device.hwaddr))
            for text in device.ipv4:
                address, _, broadcast = text.partition(" ")
                interface = ipaddress.IPv4Interface(address)
                ipr.addr("add", index=index, address=str(interface.ip),
                         prefixlen=interface.network.prefixlen,
                         broadcast=broadcast.strip() or str(interface.network.broadcast_address))
            for text in device.ipv6:
                interface6 = ipaddress.IPv6Interface(text)
                ipr.addr("add", index=index, address=str(interface6.ip),
                         prefixlen=interface6.network.prefixlen)
            if device.flags:   # LXC takes any value for "up"
                ipr.link("set", index=index, state="up")
                ipr.link("set", index=_index(ipr, "lo"), state="up")   # the network is up: lo too
            for gateway, bits in ((device.ipv4_gateway, 32), (device.ipv6_gateway, 128)):
                if gateway:
                    _default_route(ipr, index, gateway, bits)
        except NetlinkError as err:
            raise _os_error(err, f"network device {device.name or transient}") from None
    return name


def _default_route(ipr: IPRoute, index: int, gateway: str, bits: int) -> None:
    family = socket.AF_INET6 if bits == 128 else socket.AF_INET
    if gateway == "dev":
        ipr.route("add", dst="::/0" if bits == 128 else "0.0.0.0/0", oif=index, family=family)
        return
    try:
        ipr.route("add", dst="default", gateway=gateway, oif=index, family=family)
    except NetlinkError:
        # A gateway outside the device's subnets is reachable once it has a route of its
        # own on the device (LXC does the same).
        ipr.route("add", dst=f"{gateway}/{bits}", oif=index, family=family, scope=_RT_SCOPE_LINK)
        ipr.route("add", dst="default", gateway=gateway, oif=index, family=family)
