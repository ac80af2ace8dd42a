"""sync_fds (child) - hand the monitor the fds it keeps, then wait for the go.

Replaces LXC's lxc_sync_fds_child() and the READY_START wait of do_start().
The FDS frame carries, first, the seccomp filter's listener if its policy
has notify rules (as LXC's lxc_seccomp_send_notifier_fd(): the monitor relays
its notifications to lxc.seccomp.notify.proxy), then the console's master and peer sides, then each of the
container's ttys' master and peer sides (setup_ttys), in tty order, then the
container's devpts (if it has one: Config.has_devpts), all of which the monitor keeps;
the child closes its copies (all but the console's peer, for exec).
It then blocks until READY_START: after it, the next thing it does is exec.
"""

from __future__ import annotations

import os

from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    ttys = [fd for pair in zip(ctx.tty_masters, ctx.tty_peers, strict=True) for fd in pair]
    devpts = [ctx.devpts] if ctx.devpts >= 0 else []
    seccomp = ctx.seccomp
    listener = [seccomp.listener] if seccomp is not None and seccomp.listener >= 0 else []
    ctx.channel.wake(SyncMsg.FDS, fds=[*listener, *(ctx.console or ()), *ttys, *devpts])
    for fd in listener + ttys + devpts:
        os.close(fd)
    if seccomp is not None:
        seccomp.listener = -1
    ctx.tty_masters.clear()
    ctx.tty_peers.clear()
    ctx.devpts = -1
    if ctx.console is not None:   # exec still needs the peer: init's stdio in a daemon
        os.close(ctx.console[0])
    ctx.channel.wait_for(SyncMsg.READY_START)
    return "ready_to_start"


def plan(request: StartRequest) -> list[str]:
    listener = "the seccomp listener, " if request.config.get_item("lxc.seccomp.notify.proxy") else ""
    return [f"send FDS ({listener}the console's and ttys' masters and peers, the devpts)", "wait for READY_START"]
