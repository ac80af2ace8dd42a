"""stopped (monitor) - the end: release what the monitor held for its whole life.

Replaces the end of LXC's lxc_end().

Afterwards the command socket's name is free (a client now gets
ECONNREFUSED, which LXC's tools read as STOPPED), every client still
connected reads end-of-file - also STOPPED - and the pid file is gone.
Then, as LXC does once its socket is closed, lxc-monitor is told STOPPED.
"""

from __future__ import annotations

from lxcsm.engine.protocol.command_socket import LxcState

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> None:
    server = ctx.command_server
    if server is not None:
        server.set_state(LxcState.STOPPED, announce=False)
    ctx.boot.undo.unwind(ctx.log)   # empty, unless the way out failed before it was done
    ctx.undo.unwind(ctx.log)
    if server is not None:
        server.announce(LxcState.STOPPED)
    return None


def plan(request: StartRequest) -> list[str]:
    steps = ["container state STOPPED; close the command socket"]
    if request.pidfile:
        steps.append(f"remove {request.pidfile}")
    return steps
