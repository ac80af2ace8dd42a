"""setup_network (child) - our network devices get their names, addresses and routes.

Replaces LXC's lxc_setup_network_in_child_namespaces() (network.c), called
from lxc_setup().

The monitor created each device - a veth's container end or a macvlan -
inside our network namespace under a transient name (netlink.transient_name).  Afterwards the kernel sees,
in the container's network namespace only: each such device renamed to
lxc.net.N.name (or the first free ethN), with its MAC address (an "x" in
lxc.net.N.hwaddr is a random digit), its IPv4 and IPv6 addresses, up when
lxc.net.N.flags says so (and then lo up as well), and a default route through
lxc.net.N.ipv4.gateway / ipv6.gateway.  As in LXC, devices with a name of
their own are done first, so that a kernel-named one cannot take that name.
With none of them (an empty network) nothing happens here and pyroute2 is
never loaded.
"""

from __future__ import annotations

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    devices = ctx.request.config.netlink_devices()
    if devices:
        from lxcsm.engine.linux import netlink  # already loaded: spawn imported it before the clone
        named_first = sorted(enumerate(devices), key=lambda item: item[1].name in (None, "eth%d"))
        for position, device in named_first:
            name = netlink.configure_in_container(device, netlink.transient_name(position))
            ctx.log.trace("network device set up", index=device.index, name=name,
                          ipv4=list(device.ipv4), ipv6=list(device.ipv6), up=bool(device.flags))
    return "network_configured"


def plan(request: StartRequest) -> list[str]:
    steps = []
    for position, device in enumerate(request.config.netlink_devices()):
        what = [f"rename lxcsm{position} to {device.name or 'the first free ethN'}"]
        what += [f"hwaddr {device.hwaddr}"] if device.hwaddr else []
        what += [f"add {address}" for address in (*device.ipv4, *device.ipv6)]
        what += ["set it and lo up"] if device.flags else []
        what += [f"default route via {gw}" for gw in (device.ipv4_gateway, device.ipv6_gateway) if gw]
        steps.append(f"net {device.index} ({device.type}): " + ", ".join(what))
    return steps or ["nothing: no veth or macvlan device (the namespace keeps only lo)"]
