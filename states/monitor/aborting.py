"""aborting (monitor) - a state failed: kill the child and undo everything recorded.

Replaces LXC's lxc_abort() and the ``out_*`` labels of lxc_spawn() and
__lxc_start().

The failure (which state, which side, what error) is logged once, at ERROR.
Then the boot's record is unwound, newest first: the child, if there is one,
is killed through its pidfd and reaped, then its cgroups and the monitor's
are removed.  Whatever cannot be undone is logged beside the original error,
never instead of it.
"""

from lxcsm.engine.commands import LxcState


def enter(ctx) -> str:
    failure = ctx.failure
    if failure.already_running:
        ctx.log.info("already running", container=ctx.request.name)
    else:
        ctx.log.error("start failed", failed_state=failure.state, failed_side=failure.side, error=failure.error)
    if ctx.commands is not None:
        ctx.commands.set_state(LxcState.ABORTING)
    if ctx.boot.channel is not None:
        ctx.boot.channel.close()
    ctx.boot.undo.unwind(ctx.log)
    return "cleaned_up"


def plan(request) -> list[str]:
    return ["(only on failure) log the failed state and error; kill the child through its pidfd;"
            " undo every recorded change, newest first"]
