"""sync_ready_start (monitor) - let the child exec init, and learn whether it did.

Replaces LXC's final lxc_sync_barrier_child(START_SYNC_READY_START) in
lxc_spawn() and the RUNNING step of __lxc_start().

The child's end of the
sync channel is close-on-exec, so a successful exec
closes it: end-of-file here means init is running.  A failed exec sends an
ERROR frame with the reason instead.

Afterwards the container is RUNNING: the command socket answers with init's
pid and pidfd and the container's cgroups (lxc-attach puts what it runs
there), and the daemon's caller is told the start succeeded.
"""

from __future__ import annotations

from lxcsm.engine.protocol.command_socket import LxcState
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    boot, server, channel = ctx.boot, ctx.command_server, ctx.boot.channel
    assert server is not None and channel is not None   # init_handler bound the one, spawn opened the other
    channel.wake(SyncMsg.READY_START)
    channel.wait_for_exec()
    channel.close()
    boot.channel = None
    server.init_pid, server.init_pidfd = boot.init_pid, boot.init_pidfd
    server.cgroups = list(zip(ctx.hierarchies, boot.payload_cgroups, strict=True))
    server.set_state(LxcState.RUNNING)
    ctx.log.notice("started", init=" ".join(ctx.request.command), init_pid=boot.init_pid)
    ctx.on_running()
    return "init_started"


def plan(request: StartRequest) -> list[str]:
    return ["send READY_START", "wait for end-of-file (init was exec'd) or ERROR",
            "container state RUNNING; answer the command socket from now on"]
