"""setup_ttys (child) - the container's ttys, for lxc-console.

Replaces LXC's lxc_create_ttys() (conf.c), before the switch to the new root.

Afterwards the kernel sees, in the container's mount namespace, lxc.tty.max
pseudo-terminals of the container's own devpts, the peer side of the Nth
bind-mounted on /dev/ttyN (where a getty of the container's init finds it).
The child keeps their master sides and hands them to the monitor at FDS; the
monitor gives one to each lxc-console client (the command socket's
GET_TTY_FD).  Without lxc.tty.max nothing happens here.
"""

import os

from lxcsm.engine import kernel
from lxcsm.engine.paths import in_rootfs


def count(config) -> int:
    return int(config.get_item("lxc.tty.max") or 0)


def enter(ctx) -> str:
    ttys = count(ctx.request.config)
    if ttys:
        from lxcsm.engine import terminal   # only configs with ttys pay for it
        for number in range(1, ttys + 1):
            master, peer, index = terminal.open_pty(in_rootfs(ctx.rootfs, "/dev/ptmx"))
            ctx.tty_masters.append(master)
            target = in_rootfs(ctx.rootfs, f"/dev/tty{number}")
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            kernel.mount(f"/proc/self/fd/{peer}", target, None, kernel.MS_BIND)
            os.close(peer)
            ctx.log.trace("tty created", tty=f"/dev/tty{number}", pts=index)
    return "ttys_created"


def plan(request) -> list[str]:
    ttys = count(request.config)
    if not ttys:
        return ["nothing: no lxc.tty.max"]
    return [f"open {ttys} ptys in the container's devpts; bind each on /dev/tty1..{ttys}",
            "keep their master sides for the monitor"]
