"""reboot (monitor) - init asked for a reboot: clean up this boot, start the next.

Replaces the ``reboot:`` label and its ``goto`` in LXC's do_lxcapi_start()
(lxccontainer.c).

Everything this boot recorded is undone (payload and monitor cgroups; init
has already been reaped), but what belongs to the monitor stays: the command
socket keeps its name, so clients never see the container vanish, and the
signal fd keeps collecting signals.  The next state is init_handler, which
makes a fresh handler for the new boot.  As under LXC, the stop and
post-stop hooks run around the cleanup, with LXC_TARGET=reboot.  And as
LXC's lxc_end() does on a reboot, the container is STOPPING from before the
stop hooks and STOPPED before the post-stop hooks; its state clients and
lxc-monitor are told (lxc-monitor first of init's wait status), and the
next boot is STARTING again.
"""

from __future__ import annotations

from lxcsm import hooks
from lxcsm.engine.protocol.command_socket import LxcState

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    ctx.log.notice("container requested reboot", boot=ctx.boot.number)
    server = ctx.command_server
    assert server is not None   # init_handler bound it before init could ask
    if ctx.boot.init_status is not None:
        server.announce_exit(ctx.boot.init_status)
    server.set_state(LxcState.STOPPING)
    hooks.run_stop(ctx, "reboot")
    ctx.boot.undo.unwind(ctx.log)
    server.set_state(LxcState.STOPPED)
    hooks.run_post_stop(ctx, "reboot")
    return "boot_cleaned_up"


def plan(request: StartRequest) -> list[str]:
    return ["(only if init asks) undo this boot's changes, keep the command socket, back to init_handler"]
