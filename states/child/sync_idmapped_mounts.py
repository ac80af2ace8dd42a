"""sync_idmapped_mounts (child) - receive what the monitor idmapped to our user namespace.

Replaces LXC's lxc_rootfs_prepare_child() (conf.c), the first step of
lxc_setup(), and the receiving half of its idmapped mount entries
(lxc_idmapped_mounts_child()).  Entered with lxc.idmap and
``lxc.rootfs.options = idmap=...``, or with a mount entry bind with an
idmap= option: after POST_CONFIGURE the monitor's sync_idmapped_mounts sends
IDMAPPED_MOUNTS with one fd per idmapped tree - the rootfs's first, then one
per such entry in the order setup_mounts attaches them - each a detached
copy whose files are seen through a user namespace's id map.  We cannot
make them ourselves: idmapping a mount of the host's filesystem takes the
host's root.

Afterwards the kernel sees the same as before, plus those fds in this
process: mounts no mount namespace shows yet, which setup_rootfs (the
rootfs) and setup_mounts (the entries, after the other entries, as LXC)
attach.  Should the start fail first, they go with the process.

LXC's child receives the rootfs here too, but asks for each entry's copy
later, during its mount setup; the difference is when the copies are made,
not what the container's mount namespace ends with (see the monitor's
sync_idmapped_mounts).
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import StateError
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    config = ctx.request.config
    _payload, fds = ctx.channel.wait_for(SyncMsg.IDMAPPED_MOUNTS)
    rootfs = config.rootfs_idmap() is not None
    entries = config.idmapped_mount_entries()
    if len(fds) != rootfs + len(entries):
        for fd in fds:
            os.close(fd)
        expected = ["the rootfs"] if rootfs else []
        expected += [f"{len(entries)} mount entr{'y' if len(entries) == 1 else 'ies'}"] if entries else []
        raise StateError(f"the monitor sent IDMAPPED_MOUNTS with {len(fds)} idmapped trees, not "
                         f"{rootfs + len(entries)} ({' and '.join(expected)})")
    if rootfs:
        ctx.idmapped_rootfs = fds[0]
        ctx.log.trace("idmapped rootfs received", fd=fds[0])
    ctx.idmapped_entries = fds[rootfs:]
    for entry, fd in zip(entries, ctx.idmapped_entries, strict=True):
        ctx.log.trace("idmapped mount entry received", source=entry.source, target=entry.target, fd=fd)
    return "configured"


def plan(request: StartRequest) -> list[str]:
    config = request.config
    if not config.idmaps_mounts():
        return ["(not entered: no idmap= in lxc.rootfs.options with lxc.idmap, nor in a mount entry)"]
    what = ["the rootfs"] if config.rootfs_idmap() is not None else []
    what += [f"{entry.source} for {entry.target}" for entry in config.idmapped_mount_entries()]
    return [f"wait for IDMAPPED_MOUNTS: {', '.join(what)}, idmapped by the monitor"]
