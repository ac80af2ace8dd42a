"""sync_fds (child) - hand the monitor the fds it keeps, then wait for the go.

Replaces LXC's lxc_sync_fds_child() and the READY_START wait of do_start().
The FDS frame carries the master sides of the container's ttys
(setup_ttys), in tty order, which the monitor keeps; the child closes its
copies.  It then blocks until READY_START: after it, the next thing it does
is exec.
"""

import os

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    ctx.channel.wake(SyncMsg.FDS, fds=ctx.tty_masters)
    for fd in ctx.tty_masters:
        os.close(fd)
    ctx.tty_masters.clear()
    ctx.channel.wait_for(SyncMsg.READY_START)
    return "ready_to_start"


def plan(request) -> list[str]:
    return ["send FDS (with the tty masters, if any)", "wait for READY_START"]
