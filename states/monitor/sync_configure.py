"""sync_configure (monitor) - the child's namespaces exist; configure them from outside.

Replaces the part of LXC's lxc_spawn() between START_SYNC_CONFIGURE and
START_SYNC_POST_CONFIGURE: the work only the host side can do once the
child's namespaces exist.

The child sends CONFIGURE after unsharing its cgroup namespace.  Network
devices are created here and moved into the child's network namespace; with
``lxc.net.N.type = empty`` (or no network configured) the container keeps
the empty namespace it was cloned with, holding only a loopback device, and
with ``none`` it shares the host's.  Other network types are the network
issue's; the config reports them as not supported yet.

Afterwards the kernel sees: nothing new for empty/none networks.
"""

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    ctx.boot.channel.wait_for(SyncMsg.CONFIGURE)
    for net in ctx.request.config.networks:
        ctx.log.trace("network", index=net.index, type=net.type)
    return "network_ready"


def plan(request) -> list[str]:
    steps = ["wait for CONFIGURE"]
    networks = request.config.networks
    if not networks:
        steps.append("no network configured: the container keeps its empty network namespace (lo only, down)")
    for net in networks:
        what = {"empty": "nothing on the host: an empty namespace, lo only",
                "none": "nothing: the container shares the host's network namespace"}
        steps.append(f"net {net.index}: type {net.type}: " + what.get(net.type, "not supported yet, skipped"))
    return steps
