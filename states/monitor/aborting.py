"""aborting (monitor) - a state failed: kill the child and undo everything recorded.

Replaces LXC's lxc_abort() and the ``out_*`` labels of lxc_spawn() and
__lxc_start().

The failure (which state, which side, what error) is logged once, at ERROR.
Then the boot's record is unwound, newest first: the child, if there is one,
is killed through its pidfd and reaped, then its cgroups and the monitor's
are removed.  Whatever cannot be undone is logged beside the original error,
never instead of it.  As LXC's lxc_end() does after an abort, the stop
hooks run before the cleanup and the post-stop hooks after it.
"""

from __future__ import annotations

from lxcsm import hooks
from lxcsm.engine.protocol.command_socket import LxcState

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    failure = ctx.failure
    assert failure is not None   # only the failed trigger leads here, and it carries one
    if failure.already_running:
        ctx.log.info("already running", container=ctx.request.name)
    else:
        ctx.log.error("start failed", failed_state=failure.state, failed_side=failure.side, error=failure.error)
    if ctx.command_server is not None:
        ctx.command_server.set_state(LxcState.ABORTING)
    if ctx.boot.channel is not None:
        ctx.boot.channel.close()
    if not failure.already_running:   # a start refused at once ran no hook to answer
        hooks.run_stop(ctx, "stop")
    ctx.boot.undo.unwind(ctx.log)
    if not failure.already_running:
        hooks.run_post_stop(ctx, "stop")
    return "cleaned_up"


def plan(request: StartRequest) -> list[str]:
    return ["(only on failure) log the failed state and error; kill the child through its pidfd;"
            " undo every recorded change, newest first"]
