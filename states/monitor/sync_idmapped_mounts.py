"""sync_idmapped_mounts (monitor) - idmap the rootfs and idmap= mount entries; IDMAPPED_MOUNTS.

Replaces LXC's lxc_rootfs_prepare_parent() (conf.c), which lxc_spawn() calls
right after it wakes the child with START_SYNC_POST_CONFIGURE, and the
parent's half of its idmapped mount entries, lxc_idmapped_mounts_parent().
Entered with lxc.idmap and ``lxc.rootfs.options = idmap=container`` (or
``idmap=PATH``, the file of another user namespace): a rootfs whose files
are owned by 0 on disk, never shifted, for an unprivileged container; or
with an ``lxc.mount.entry`` (or lxc.mount.fstab line) bind with an idmap=
option: a host directory shown to the container through a user namespace's
map.

The copies are made here, not by the child: only the host's root may idmap
a mount of the host's filesystem (the kernel asks for CAP_SYS_ADMIN over the
filesystem's own user namespace), and only a mount no namespace shows yet.

Afterwards the kernel sees detached copies (open_tree with OPEN_TREE_CLONE):
of the rootfs, recursive, and of each idmap= entry's source (a host path, or
with `relative` a path looked up inside the rootfs), recursive for rbind;
each idmapped to the container's user namespace or the one idmap=PATH names
(mount_setattr with MOUNT_ATTR_IDMAP: a file owned by 0 on disk appears
owned by the host id lxc.idmap gives the container's root, so by root
inside) and made a slave, so nothing mounted under it can reach the host.
No mount namespace shows them: their fds go to the child with
IDMAPPED_MOUNTS, the rootfs's first, then one per entry in the order LXC
attaches them (lxc.mount.entry's, then lxc.mount.fstab's); the child's
setup_rootfs and setup_mounts attach them.  The monitor keeps no fd of them,
so there is nothing to undo: a detached mount disappears with its last fd,
an attached one with the child's namespace.

LXC makes the entries' copies later and in the other process: after its
child has made every other mount entry, the child clones each source in its
own mount namespace, the parent idmaps it, and the child attaches it
(LXC_SYNC_IDMAPPED_MOUNTS, one exchange per entry).  Here the monitor copies
them from the host's namespace before the child mounts anything, in the one
exchange that carries the rootfs; setup_mounts attaches them at LXC's point,
after the other entries.  The kernel ends with the same mounts on the same
places, covering the same things, with one visible difference: a namespace's
mounts are listed (/proc/PID/mountinfo) by when each was made, so the
idmapped binds come before the container's other mounts, even its rootfs
when that is not idmapped, where LXC lists them after its other entries.
And a source is copied as the host showed it at this state; a `relative`
one from the rootfs's directory on the host, never idmapped: on an idmapped
rootfs LXC copies it from that idmapped mount, which the kernel will not
idmap again (LXC 5.0.2 fails such a start: "Failed to idmap detached
mount"), lxcsm starts it.
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.linux import idmapped_mounts, kernel, paths
from lxcsm.engine.linux.mount_options import parse_mount_options
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def user_namespace_file(idmap: str, init_pid: int | str) -> str:
    """The file of the user namespace idmap= names: the container's own, or a path."""
    return f"/proc/{init_pid}/ns/user" if idmap == "container" else idmap


def enter(ctx: MonitorContext) -> str:
    config, boot = ctx.request.config, ctx.boot
    assert boot.channel is not None   # spawn opened it
    trees: list[int] = []
    try:
        idmap = config.rootfs_idmap()
        if idmap is not None:
            try:
                trees.append(_idmapped_tree(config.rootfs_path, idmap, boot.init_pid, recursive=True))
            except idmapped_mounts.NotIdmappable as err:
                raise StateError(f"lxc.rootfs.options = idmap={idmap}: {err}") from None
            ctx.log.trace("rootfs idmapped", rootfs=config.rootfs_path,
                          userns=user_namespace_file(idmap, boot.init_pid))
        for entry in config.idmapped_mount_entries():
            options = parse_mount_options(entry.options)
            assert options.idmap is not None   # idmapped_mount_entries' own
            try:
                trees.append(_idmapped_entry(config.rootfs_path, entry.source, options, boot.init_pid))
            except (idmapped_mounts.NotIdmappable, OSError) as err:
                raise StateError(f"{entry.origin.file}:{entry.origin.line}: {entry.origin.key}: idmapping "
                                 f"{entry.source} for {entry.target}: "
                                 f"{err if isinstance(err, idmapped_mounts.NotIdmappable) else describe(err)}"
                                 ) from None
            ctx.log.trace("mount entry idmapped", source=entry.source, target=entry.target,
                          userns=user_namespace_file(options.idmap, boot.init_pid))
        boot.channel.wake(SyncMsg.IDMAPPED_MOUNTS, fds=trees)
    finally:
        for tree in trees:
            os.close(tree)
    return "child_released"


def _idmapped_tree(source: str | int, idmap: str, init_pid: int, recursive: bool) -> int:
    """A detached copy of `source` (a host path or an fd), idmapped to the user namespace idmap= names."""
    userns = os.open(user_namespace_file(idmap, init_pid), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return idmapped_mounts.idmapped_tree(source, userns, recursive)
    finally:
        os.close(userns)


def _idmapped_entry(rootfs_path: str, source: str, options, init_pid: int) -> int:
    """An idmap= entry's copy: of the host path `source`, or with `relative` of that path
    inside the rootfs, looked up there as the child looks up its targets (symlinks followed
    inside it, never out)."""
    assert options.idmap is not None   # idmapped_mount_entries' own
    recursive = bool(options.flags & kernel.MS_REC)
    if not options.relative:
        return _idmapped_tree(source, options.idmap, init_pid, recursive)
    root = paths.open_root(rootfs_path)
    try:
        inside = paths.open_in_root(root, source)
    finally:
        os.close(root)
    try:
        return _idmapped_tree(inside, options.idmap, init_pid, recursive)
    finally:
        os.close(inside)


def plan(request: StartRequest) -> list[str]:
    config = request.config
    if not config.idmaps_mounts():
        return ["(not entered: no idmap= in lxc.rootfs.options with lxc.idmap, nor in a mount entry)"]
    steps = []
    idmap = config.rootfs_idmap()
    if idmap is not None:
        steps += [f"open_tree({config.rootfs_path}, OPEN_TREE_CLONE | AT_RECURSIVE)",
                  f"mount_setattr(MOUNT_ATTR_IDMAP, {user_namespace_file(idmap, 'CHILD')}, MS_SLAVE)"]
    for entry in config.idmapped_mount_entries():
        options = parse_mount_options(entry.options)
        assert options.idmap is not None
        source = f"{config.rootfs_path} {entry.source} (inside)" if options.relative else entry.source
        steps += [f"open_tree({source}, OPEN_TREE_CLONE"
                  f"{' | AT_RECURSIVE' if options.flags & kernel.MS_REC else ''})  "
                  f"[{entry.origin.file}:{entry.origin.line}]",
                  f"mount_setattr(MOUNT_ATTR_IDMAP, {user_namespace_file(options.idmap, 'CHILD')}, MS_SLAVE)"]
    return [*steps, "send IDMAPPED_MOUNTS with the detached copies"]
