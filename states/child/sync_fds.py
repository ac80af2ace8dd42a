"""sync_fds (child) - hand the monitor the fds it keeps, then wait for the go.

Replaces LXC's lxc_sync_fds_child() and the READY_START wait of do_start().
The FDS frame carries the console's master and peer sides, then the master
sides of the container's ttys (setup_ttys), in tty order, which the monitor
keeps; the child closes its copies (all but the console's peer, for exec).
It then blocks until READY_START: after it, the next thing it does is exec.
"""

from __future__ import annotations

import os

from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    fds = [*(ctx.console or ()), *ctx.tty_masters]
    ctx.channel.wake(SyncMsg.FDS, fds=fds)
    for fd in ctx.tty_masters:
        os.close(fd)
    ctx.tty_masters.clear()
    if ctx.console is not None:   # exec still needs the peer: init's stdio in a daemon
        os.close(ctx.console[0])
    ctx.channel.wait_for(SyncMsg.READY_START)
    return "ready_to_start"


def plan(request: StartRequest) -> list[str]:
    return ["send FDS (with the tty masters, if any)", "wait for READY_START"]
