"""sync_cgroup_limits (child) - tell the monitor we are set up.

Replaces LXC's lxc_sync_barrier_parent(START_SYNC_CGROUP_LIMITS) at the end of
do_start()'s setup.  The child is complete (rootfs pivoted, /dev and mounts
in place) and blocks until the monitor has applied the limits it must not be
able to undo, and answers FDS.
"""

from __future__ import annotations

from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    ctx.channel.barrier(SyncMsg.CGROUP_LIMITS, SyncMsg.FDS)
    return "limits_applied"


def plan(request: StartRequest) -> list[str]:
    return ["send CGROUP_LIMITS", "wait for FDS"]
