"""sync_idmapped_mounts (monitor) - idmap the rootfs to the container's user namespace; IDMAPPED_MOUNTS.

Replaces LXC's lxc_rootfs_prepare_parent() (conf.c), which lxc_spawn() calls
right after it wakes the child with START_SYNC_POST_CONFIGURE.  Entered only
with lxc.idmap and ``lxc.rootfs.options = idmap=container`` (or
``idmap=PATH``, the file of another user namespace): a rootfs whose files
are owned by 0 on disk, never shifted, for an unprivileged container.

The copy is made here, not by the child: only the host's root may idmap a
mount of the host's filesystem (the kernel asks for CAP_SYS_ADMIN over the
filesystem's own user namespace), and only a mount no namespace shows yet.

Afterwards the kernel sees a detached copy of the rootfs (open_tree with
OPEN_TREE_CLONE, recursive), idmapped to the container's user namespace
(mount_setattr with MOUNT_ATTR_IDMAP: a file owned by 0 on disk appears owned
by the host id lxc.idmap gives the container's root, so by root inside) and
made a slave, so nothing mounted under it can reach the host.  No mount
namespace shows it: its fd goes to the child with IDMAPPED_MOUNTS, and the
child's setup_rootfs attaches it where it would have bound the rootfs.  The
monitor keeps no fd of it, so there is nothing to undo: a detached mount
disappears with its last fd, and an attached one with the child's namespace.
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import idmapped_mounts
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def user_namespace_file(idmap: str, init_pid: int | str) -> str:
    """The file of the user namespace idmap= names: the container's own, or a path."""
    return f"/proc/{init_pid}/ns/user" if idmap == "container" else idmap


def enter(ctx: MonitorContext) -> str:
    config, boot = ctx.request.config, ctx.boot
    idmap = config.rootfs_idmap()
    assert idmap is not None and boot.channel is not None   # the table enters this state only then
    userns_file = user_namespace_file(idmap, boot.init_pid)
    userns = os.open(userns_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        tree = idmapped_mounts.idmapped_tree(config.rootfs_path, userns)
    except idmapped_mounts.NotIdmappable as err:
        raise StateError(f"lxc.rootfs.options = idmap={idmap}: {err}") from None
    finally:
        os.close(userns)
    try:
        ctx.log.trace("rootfs idmapped", rootfs=config.rootfs_path, userns=userns_file)
        boot.channel.wake(SyncMsg.IDMAPPED_MOUNTS, fds=[tree])
    finally:
        os.close(tree)
    return "child_released"


def plan(request: StartRequest) -> list[str]:
    idmap = request.config.rootfs_idmap()
    if idmap is None:
        return ["(not entered: no lxc.idmap, or no idmap= in lxc.rootfs.options)"]
    return [f"open_tree({request.config.rootfs_path}, OPEN_TREE_CLONE | AT_RECURSIVE)",
            f"mount_setattr(MOUNT_ATTR_IDMAP, {user_namespace_file(idmap, 'CHILD')}, MS_SLAVE)",
            "send IDMAPPED_MOUNTS with the detached rootfs"]
