"""sync_fds (monitor) - collect the file descriptors the child opened for us.

Replaces LXC's lxc_sync_fds_parent(): after FDS the child sends the fds the
monitor keeps for the container's lifetime (its devpts, the tty masters,
seccomp listeners).  None exist yet - the terminal issue adds them - so the
frame arrives empty, and any fd that does arrive is closed rather than leaked.
"""

import os

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    channel = ctx.boot.channel
    channel.wake(SyncMsg.FDS)
    _payload, fds = channel.wait_for(SyncMsg.FDS)
    for fd in fds:
        os.close(fd)
    return "fds_received"


def plan(request) -> list[str]:
    return ["send FDS", "wait for FDS (no fds are passed yet)"]
