"""sync_fds (child) - hand the monitor the fds it keeps, then wait for the go.

Replaces LXC's lxc_sync_fds_child() and the READY_START wait of do_start().
The fds the monitor keeps (devpts, tty masters) come with the terminal
issue; until then the FDS frame is empty.  The child then blocks until
READY_START: after it, the next thing it does is exec.
"""

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    ctx.channel.barrier(SyncMsg.FDS, SyncMsg.READY_START)
    return "ready_to_start"


def plan(request) -> list[str]:
    return ["send FDS (no fds yet)", "wait for READY_START"]
