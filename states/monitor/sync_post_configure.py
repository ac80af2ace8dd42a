"""sync_post_configure (monitor) - release the child to set itself up.

Replaces LXC's lxc_sync_wake_child(START_SYNC_POST_CONFIGURE) in lxc_spawn().

The host side of the container is complete (cgroups, namespaces, network),
so the child may now build its own view of the world: rootfs, hostname,
/dev, mounts, pivot_root.  Nothing changes on the host; the monitor's next
state waits while the child works - or, with ``idmap=...`` in
lxc.rootfs.options (and lxc.idmap) or in an lxc.mount.entry bind, first
idmaps those for it (sync_idmapped_mounts: `rootfs_to_idmap`).
"""

from __future__ import annotations

from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    assert ctx.boot.channel is not None   # spawn opened it
    ctx.boot.channel.wake(SyncMsg.POST_CONFIGURE)
    return "rootfs_to_idmap" if ctx.request.config.idmaps_mounts() else "child_released"


def plan(request: StartRequest) -> list[str]:
    return ["send POST_CONFIGURE"]
