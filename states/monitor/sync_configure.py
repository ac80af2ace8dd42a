"""sync_configure (monitor) - the child's namespaces exist; configure them from outside.

Replaces the part of LXC's lxc_spawn() between START_SYNC_CONFIGURE and
START_SYNC_POST_CONFIGURE: lxc_create_network_priv() and the host side of
netdev_configure_server_veth().

The child sends CONFIGURE after unsharing its cgroup namespace.  For each
``lxc.net.N.type = veth`` the monitor creates a veth pair whose container
end is born inside the child's network namespace (under a transient name the
child renames in setup_network), with lxc.net.N.mtu, else the bridge's MTU,
else 1500.  Its host end is named lxc.net.N.veth.pair or "veth" and six
random characters, gets a MAC starting with fe (so the bridge keeps the
host's), is attached to the bridge lxc.net.N.link if there is one, and is
set up.  With ``empty`` (or no network) the container keeps the namespace it
was cloned with, holding only lo; with ``none`` it shares the host's.

Afterwards the kernel sees, on the host, one veth per veth device, each
recorded for removal; nothing new for empty/none networks.
"""

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    ctx.boot.channel.wait_for(SyncMsg.CONFIGURE)
    for position, device in enumerate(ctx.request.config.devices("veth")):
        _create_veth(ctx, position, device)
    for device in ctx.request.config.networks:
        if device.type != "veth":
            ctx.log.trace("network", index=device.index, type=device.type)
    return "network_ready"


def _create_veth(ctx, position: int, device) -> None:
    from lxcsm.engine import netlink   # loaded by spawn, for configs with a veth only
    host = device.veth_pair or netlink.host_name()
    mtu = device.mtu or (device.link and netlink.link_mtu(device.link)) or netlink.DEFAULT_MTU
    netlink.create_veth(host, netlink.transient_name(position), ctx.boot.init_pid, mtu)
    ctx.boot.undo.record("netdev", host)
    ctx.commands.running_items[f"lxc.net.{device.index}.veth.pair"] = host
    netlink.attach_host_end(host, device.link)
    ctx.log.trace("veth created", index=device.index, host=host, bridge=device.link, mtu=mtu)


def plan(request) -> list[str]:
    steps = ["wait for CONFIGURE"]
    networks = request.config.networks
    if not networks:
        steps.append("no network configured: the container keeps its empty network namespace (lo only, down)")
    what = {"empty": "nothing on the host: an empty namespace, lo only",
            "none": "nothing: the container shares the host's network namespace"}
    veths = request.config.devices("veth")
    for device in networks:
        if device.type == "veth":
            host = device.veth_pair or "veth + 6 random characters"
            mtu = device.mtu or (f"of {device.link}" if device.link else 1500)
            bridge = f", attach it to bridge {device.link}" if device.link else ""
            steps.append(f"net {device.index}: type veth: create veth {host} with its peer "
                         f"lxcsm{veths.index(device)} in the child's network namespace, mtu {mtu}"
                         f"{bridge}, set it up")
        else:
            steps.append(f"net {device.index}: type {device.type}: "
                         + what.get(device.type, "not supported yet, skipped"))
    return steps
