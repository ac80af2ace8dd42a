"""stopped (monitor) - the end: release what the monitor held for its whole life.

Replaces the end of LXC's lxc_end().

Afterwards the command socket's name is free (a client now gets
ECONNREFUSED, which LXC's tools read as STOPPED), every client still
connected reads end-of-file - also STOPPED - and the pid file is gone.
Then, as LXC does once its socket is closed, lxc-monitor is told STOPPED.

Last, for a container with lxc.ephemeral = 1 (lxc-copy -e makes them), the
container itself is gone, as at the end of LXC's lxc_end(): its rootfs as
LXC's storage driver removes it (a directory whole, an overlay snapshot's
upper layer), its entry in its origin's lxc_snapshots, and LXCPATH/NAME -
never entering another filesystem mounted inside.  What cannot be removed
is logged, and the rest left, as LXC does.
"""

from __future__ import annotations

import os

from lxcsm.engine.protocol.command_socket import LxcState

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> None:
    server = ctx.command_server
    if server is not None:
        server.set_state(LxcState.STOPPED, announce=False)
    ctx.boot.undo.unwind(ctx.log)   # empty, unless the way out failed before it was done
    ctx.undo.unwind(ctx.log)
    if server is not None:
        server.announce(LxcState.STOPPED)
    if ephemeral(ctx.request.config):
        _destroy(ctx)
    return None


def ephemeral(config) -> bool:
    return config.get_item("lxc.ephemeral") == "1"


def _destroy(ctx: MonitorContext) -> None:
    from lxcsm.engine.linux import storage  # only ephemeral containers are ever destroyed
    request = ctx.request
    rootfs = request.config.in_effect("lxc.rootfs.path")
    if rootfs:
        left = storage.remove_on_one_device(storage.rootfs_to_destroy(rootfs[-1][1].value))
        if left:
            ctx.log.error("ephemeral container's rootfs not destroyed", left=" ".join(left))
            return
    storage.forget_snapshot(request.lxcpath, request.name)
    left = storage.remove_on_one_device(os.path.join(request.lxcpath, request.name))
    if left:
        ctx.log.error("ephemeral container's directory not destroyed", left=" ".join(left))
    else:
        ctx.log.info("ephemeral container destroyed", directory=os.path.join(request.lxcpath, request.name))


def plan(request: StartRequest) -> list[str]:
    steps = ["container state STOPPED; close the command socket"]
    if request.pidfile:
        steps.append(f"remove {request.pidfile}")
    if ephemeral(request.config):
        steps.append(f"lxc.ephemeral: remove the rootfs, then {os.path.join(request.lxcpath, request.name)}")
    return steps
