"""startup (child) - wait until the monitor has put us where we belong.

Replaces the START_SYNC_STARTUP wait at the top of LXC's do_start().

The process exists, as pid 1 of its new pid namespace, inside the payload
cgroup of the cgroup2 tree - but until STARTUP it may not yet be in the v1
hierarchies' payload cgroups, so it does nothing the container should be
charged for.  The kernel sees no change made by this state; before it, the
supervisor armed PR_SET_PDEATHSIG so that this process dies with the monitor.

With lxc.idmap the process is in a user namespace of its own too, and
STARTUP also says the monitor wrote its id maps (write_id_maps): it goes on
to become_userns_root, which it could not do before.
"""

from __future__ import annotations

from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    ctx.channel.wait_for(SyncMsg.STARTUP)
    if ctx.request.config.id_maps():
        return "started_in_user_namespace"
    return "started"


def plan(request: StartRequest) -> list[str]:
    return ["prctl(PR_SET_PDEATHSIG, SIGKILL)", "wait for STARTUP"]
