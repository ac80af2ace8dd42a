"""setup_ttys (child) - the container's console and ttys, for lxc-console.

Replaces LXC's lxc_setup_console() and lxc_create_ttys() (conf.c), before
the switch to the new root.

Afterwards the kernel sees, in the container's mount namespace, pseudo-
terminals of the container's own devpts: one whose peer side is
bind-mounted on /dev/console (unless lxc.console.path = none), and
lxc.tty.max more, the Nth on /dev/ttyN (where a getty of the container's
init finds it).  The child hands their master sides - and the console's
peer, which keeps it open - to the monitor at FDS; the monitor drains the
console into lxc.console.logfile and gives a tty to each lxc-console client
(GET_TTY_FD; tty 0 is the console).  A daemonised container's init has the
console as its stdin, stdout and stderr; with -F it keeps lxcsm's.  All this
needs the container's own devpts (lxc.autodev = 1).
"""

import os

from lxcsm.engine.linux import kernel
from lxcsm.engine.linux.paths import in_rootfs


def _pty_on(ctx, name: str) -> tuple[int, int, int]:
    """A pty of the container's devpts whose peer is bind-mounted on /dev/NAME."""
    from lxcsm.engine.linux import terminal  # only containers with a console or ttys pay for it
    master, peer, index = terminal.open_pty(in_rootfs(ctx.rootfs, "/dev/ptmx"))
    target = in_rootfs(ctx.rootfs, f"/dev/{name}")
    os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    kernel.mount(f"/proc/self/fd/{peer}", target, None, kernel.MS_BIND)
    ctx.log.trace("tty created", tty=f"/dev/{name}", pts=index)
    return master, peer, index


def enter(ctx) -> str:
    config = ctx.request.config
    if config.has_console():
        master, peer, _index = _pty_on(ctx, "console")
        ctx.console = (master, peer)
    for number in range(1, config.tty_count() + 1):
        master, peer, _index = _pty_on(ctx, f"tty{number}")
        ctx.tty_masters.append(master)
        os.close(peer)
    return "ttys_created"


def plan(request) -> list[str]:
    steps = []
    if request.config.has_console():
        steps.append("open a pty in the container's devpts; bind its peer on /dev/console")
    ttys = request.config.tty_count()
    if ttys:
        steps.append(f"open {ttys} ptys in the container's devpts; bind each on /dev/tty1..{ttys}")
    return steps or ["nothing: no console (lxc.console.path = none or lxc.autodev = 0), no lxc.tty.max"]
