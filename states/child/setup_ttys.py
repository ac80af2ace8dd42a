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

/dev and its ptmx are opened inside the rootfs (openat2, RESOLVE_IN_ROOT);
each target is opened - made empty if missing - in /dev's descriptor with
no symlink followed, as LXC does, and bound onto through its descriptor.
"""

import os

from lxcsm.engine.linux import kernel, paths
from lxcsm.engine.linux.paths import proc_fd


def _pty_on(ctx, dev: int, ptmx: int, name: str) -> tuple[int, int, int]:
    """A pty of the container's devpts whose peer is bind-mounted on /dev/NAME."""
    from lxcsm.engine.linux import terminal  # only containers with a console or ttys pay for it
    master, peer, index = terminal.open_pty(proc_fd(ptmx))
    target = paths.create_beneath(dev, name, 0o600)
    try:
        kernel.mount(proc_fd(peer), proc_fd(target), None, kernel.MS_BIND)
    finally:
        os.close(target)
    ctx.log.trace("tty created", tty=f"/dev/{name}", pts=index)
    return master, peer, index


def enter(ctx) -> str:
    config = ctx.request.config
    if not config.has_console() and not config.tty_count():
        return "ttys_created"
    root = paths.open_root(ctx.rootfs)
    dev = ptmx = None
    try:
        dev = paths.open_in_root(root, "/dev")
        ptmx = paths.open_in_root(root, "/dev/ptmx")
        if config.has_console():
            master, peer, _index = _pty_on(ctx, dev, ptmx, "console")
            ctx.console = (master, peer)
        for number in range(1, config.tty_count() + 1):
            master, peer, _index = _pty_on(ctx, dev, ptmx, f"tty{number}")
            ctx.tty_masters.append(master)
            os.close(peer)
    finally:
        for fd in (root, dev, ptmx):
            if fd is not None:
                os.close(fd)
    return "ttys_created"


def plan(request) -> list[str]:
    steps = []
    if request.config.has_console():
        steps.append("open a pty in the container's devpts; bind its peer on /dev/console")
    ttys = request.config.tty_count()
    if ttys:
        steps.append(f"open {ttys} ptys in the container's devpts; bind each on /dev/tty1..{ttys}")
    return steps or ["nothing: no console (lxc.console.path = none or lxc.autodev = 0), no lxc.tty.max"]
