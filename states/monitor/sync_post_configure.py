"""sync_post_configure (monitor) - release the child to set itself up.

Replaces LXC's lxc_sync_wake_child(START_SYNC_POST_CONFIGURE) in lxc_spawn().

The host side of the container is complete (cgroups, namespaces, network),
so the child may now build its own view of the world: rootfs, hostname,
/dev, mounts, pivot_root.  Nothing changes on the host; the monitor's next
state waits while the child works.
"""

from lxcsm.engine.protocol.sync import SyncMsg


def enter(ctx) -> str:
    ctx.boot.channel.wake(SyncMsg.POST_CONFIGURE)
    return "child_released"


def plan(request) -> list[str]:
    return ["send POST_CONFIGURE"]
