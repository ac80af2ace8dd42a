"""sync_idmapped_mounts (child) - receive the rootfs the monitor idmapped to our user namespace.

Replaces LXC's lxc_rootfs_prepare_child() (conf.c), the first step of
lxc_setup().  Entered only with lxc.idmap and ``lxc.rootfs.options =
idmap=...``: after POST_CONFIGURE the monitor's sync_idmapped_mounts sends
IDMAPPED_MOUNTS with one fd, a detached copy of the rootfs whose files are
seen through the container's id map.  We cannot make it ourselves: idmapping
a mount of the host's filesystem takes the host's root.

Afterwards the kernel sees the same as before, plus that fd in this process:
a mount no mount namespace shows yet, which setup_rootfs attaches where it
would have bound the rootfs.  Should the start fail first, it goes with the
process.
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import StateError
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    _payload, fds = ctx.channel.wait_for(SyncMsg.IDMAPPED_MOUNTS)
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        raise StateError("the monitor sent IDMAPPED_MOUNTS without the idmapped rootfs")
    ctx.idmapped_rootfs = fds[0]
    ctx.log.trace("idmapped rootfs received", fd=fds[0])
    return "configured"


def plan(request: StartRequest) -> list[str]:
    if request.config.rootfs_idmap() is None:
        return ["(not entered: no lxc.idmap, or no idmap= in lxc.rootfs.options)"]
    return ["wait for IDMAPPED_MOUNTS: the rootfs, idmapped to our user namespace by the monitor"]
