"""sync_fds (monitor) - collect the file descriptors the child opened for us.

Replaces LXC's lxc_sync_fds_parent(): after FDS the child sends the fds the
monitor keeps for the boot: the master sides of the container's ttys
(lxc.tty.max), in tty order.  Afterwards the command socket hands them out
to lxc-console (GET_TTY_FD); each is recorded, closed when the boot ends.
Any fd beyond lxc.tty.max is closed rather than leaked.
"""

import os

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    channel = ctx.boot.channel
    channel.wake(SyncMsg.FDS)
    _payload, fds = channel.wait_for(SyncMsg.FDS)
    ttys = int(ctx.request.config.get_item("lxc.tty.max") or 0)
    for fd in fds[ttys:]:
        os.close(fd)
    for fd in fds[:ttys]:
        ctx.boot.undo.record("kept_fd", fd)
    ctx.commands.new_ttys(fds[:ttys])
    if fds[:ttys]:
        ctx.log.trace("tty masters received", ttys=len(fds[:ttys]))
    return "fds_received"


def plan(request) -> list[str]:
    return ["send FDS", "wait for FDS (the tty masters, if lxc.tty.max is set)"]
