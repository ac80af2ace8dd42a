"""configure (child) - take our own cgroup namespace, then let the monitor configure us.

Replaces the CLONE_NEWCGROUP unshare and the START_SYNC_CONFIGURE /
START_SYNC_POST_CONFIGURE steps of LXC's do_start().

Afterwards the kernel sees a new cgroup namespace whose root is the payload
cgroup (so /proc/self/cgroup inside reads "/"): it must be unshared here,
after STARTUP, because a cgroup namespace takes as its root the cgroup the
process is in at the moment of the unshare.  Then the child blocks until
the monitor has done the host side (network) and answers POST_CONFIGURE.
"""

from __future__ import annotations

from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    if "cgroup" not in ctx.request.config.namespace_keep:
        kernel.unshare(kernel.CLONE_NEWCGROUP)
        ctx.log.trace("unshared", namespace="cgroup")
    ctx.channel.barrier(SyncMsg.CONFIGURE, SyncMsg.POST_CONFIGURE)
    return "configured"


def plan(request: StartRequest) -> list[str]:
    steps = [] if "cgroup" in request.config.namespace_keep else ["unshare(CLONE_NEWCGROUP)"]
    return steps + ["send CONFIGURE", "wait for POST_CONFIGURE"]
