"""aborting (child) - report the failure to the monitor, then exit.

Replaces the ``out_warn_father`` label of LXC's do_start(), which could only
tell the parent "error" (-1).  Here the monitor receives the failed state
and the error text over the sync channel, and logs them as its own abort.
The child changed nothing outside its namespaces, so there is nothing to undo
here: when it exits, its mount namespace and everything mounted in it go
with it.
"""

from __future__ import annotations

from lxcsm.engine.protocol.sync import SyncError

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> None:
    failure = ctx.failure
    assert failure is not None   # only the failed trigger leads here, and it carries one
    try:
        ctx.channel.send_error(failure.state, failure.error)
    except SyncError:
        pass   # the monitor is gone; PR_SET_PDEATHSIG is about to end us too
    return None


def plan(request: StartRequest) -> list[str]:
    return ["(only on failure) send ERROR with the failed state and the error text; exit"]
