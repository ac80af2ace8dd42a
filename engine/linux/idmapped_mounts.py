"""Idmapped mounts: a copy of a tree whose files' owners are seen through a user namespace's id map.

An idmapped mount (mount_setattr(2) with MOUNT_ATTR_IDMAP) shows every
file's owner translated by the id map of a user namespace: mapped to one that
says container uid 0 is host uid 100000, a file owned by 0 on disk is seen
through the mount as owned by 100000, and a file that host uid 100000 (the
container's root) creates through it is written to disk as owned by 0.  So an
unprivileged container can run on a rootfs that was never shifted with
``chown``.

The kernel idmaps only a detached mount - one made by
open_tree(OPEN_TREE_CLONE) that no mount namespace shows yet - and only on a
filesystem that supports it (ext4, xfs, btrfs, tmpfs since 6.3...; not ramfs,
nfs or procfs): EINVAL otherwise.  `idmapped_tree` makes such a mount,
`set_bind_options` gives it a mount entry's ro, nosuid... before it is
attached, `user_namespace` the namespace to map it with when no container
provides one, and `check_idmappable` finds out, without changing anything,
whether a path's filesystems allow it.

LXC 5.0.2 does this in create_detached_idmapped_mount() (mount_utils.c), for
``lxc.rootfs.options = idmap=...`` (lxc_rootfs_prepare_parent(), conf.c) and
for ``lxc.mount.entry`` lines with an idmap= option (lxc_idmapped_mounts_parent()).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable

from lxcsm.engine.linux import idmap, kernel, mounts

# One line of an id map: ("u" or "g", first id inside, first id on the host, how many), as
# engine/config/values.py's IdMap (lxc.idmap) is.
IdMapping = tuple[str, int, int, int]


NS_GET_NSTYPE = 0xB703   # <linux/nsfs.h>: _IO(0xb7, 0x3), the CLONE_NEW* type of a namespace's file


class NotIdmappable(Exception):
    """The kernel refused to idmap a tree: its message names the filesystem that does not allow it."""


def user_namespace(maps: Iterable[IdMapping]) -> int:
    """An fd of a new user namespace with the uid and gid maps `maps`, in which no process runs.

    A namespace's maps are written from outside it, by /proc/PID/{uid,gid}_map of a
    process inside: a child is cloned into a new user namespace, where it only waits
    on a pipe; its maps are written from here, its namespace opened, and the pipe
    closed, which ends it.  The fd keeps the namespace alive without it.  (LXC's
    userns_exec_1() makes its mapped namespaces the same way, to run a function in one.)
    """
    maps = list(maps)
    go_on, hold = os.pipe2(os.O_CLOEXEC)
    pid, pidfd = kernel.clone3(kernel.CLONE_NEWUSER)
    if pid == 0:   # the child: wait until the parent closes its end (or dies), then leave
        try:
            os.close(hold)
            os.read(go_on, 1)
        finally:
            os._exit(0)
    os.close(go_on)
    try:
        for kind in ("u", "g"):
            lines = [(inside, outside, count) for k, inside, outside, count in maps if k == kind]
            if lines:
                idmap.write_map(pid, kind, idmap.map_text(lines))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(hold)
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        os.close(pidfd)


def idmapped_tree(source: str | int, userns: int, recursive: bool = True) -> int:
    """A detached copy of the tree at `source` (a host path, or an fd), idmapped to the user
    namespace fd `userns`, with its submounts if `recursive`; ready for mounts.attach.

    It is made a slave, as LXC makes it: a copy of a shared host mount would otherwise be
    a peer of it, and what is mounted under it inside the container would appear on the
    host.  Raises NotIdmappable, naming the filesystem, when one under `source` cannot be
    idmapped."""
    try:
        return _idmapped_copy(source, userns, recursive)
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise NotIdmappable(_refusal(source, userns, recursive)) from None
        raise


# A bind's own flags, which mount(2) takes as MS_* and mount_setattr(2) as MOUNT_ATTR_*; of the
# access time rules one at most, set under the mask of them all.
_MOUNT_ATTRIBUTES = ((kernel.MS_RDONLY, kernel.MOUNT_ATTR_RDONLY), (kernel.MS_NOSUID, kernel.MOUNT_ATTR_NOSUID),
                     (kernel.MS_NODEV, kernel.MOUNT_ATTR_NODEV), (kernel.MS_NOEXEC, kernel.MOUNT_ATTR_NOEXEC),
                     (kernel.MS_NODIRATIME, kernel.MOUNT_ATTR_NODIRATIME))
_ACCESS_TIMES = ((kernel.MS_NOATIME, kernel.MOUNT_ATTR_NOATIME), (kernel.MS_STRICTATIME, kernel.MOUNT_ATTR_STRICTATIME),
                 (kernel.MS_RELATIME, 0))   # MOUNT_ATTR_RELATIME is 0: the mask cleared
MOUNT_ATTR_ACCESS_TIME_MASK = 0x70


def set_bind_options(tree: int, flags: int, propagation: int, recursive: bool) -> None:
    """Give the detached tree `tree` the per-mount flags among mount(2)'s `flags` (ro, nosuid,
    nodev, noexec, noatime...: what a bind honours; its submounts too if `recursive`), then the
    propagation `propagation` (MS_SLAVE..., recursive with MS_REC), as LXC 5.0.2 sets an
    idmapped lxc.mount.entry's options, by mount_setattr before the tree is attached."""
    where = kernel.AT_EMPTY_PATH | (kernel.AT_RECURSIVE if recursive else 0)
    attr_set = sum(attr for flag, attr in _MOUNT_ATTRIBUTES if flags & flag)
    access_time = next((attr for flag, attr in _ACCESS_TIMES if flags & flag), None)
    if access_time is not None:
        kernel.mount_setattr(tree, "", where, attr_set=attr_set | access_time, attr_clr=MOUNT_ATTR_ACCESS_TIME_MASK)
    elif attr_set:
        kernel.mount_setattr(tree, "", where, attr_set=attr_set)
    if propagation:
        below = kernel.AT_RECURSIVE if propagation & kernel.MS_REC else 0
        kernel.mount_setattr(tree, "", kernel.AT_EMPTY_PATH | below, propagation=propagation & ~kernel.MS_REC)


def check_idmappable(path: str, recursive: bool = True) -> None:
    """Raise NotIdmappable if the filesystem at `path` (or, if `recursive`, one mounted below
    it) cannot be idmapped.  Changes nothing: the trial mount is detached and dropped."""
    userns = user_namespace([("u", 0, 0, 1), ("g", 0, 0, 1)])
    try:
        os.close(idmapped_tree(path, userns, recursive))
    finally:
        os.close(userns)


def user_namespace_problem(path: str) -> str | None:
    """Why `path` cannot be the user namespace of idmap=PATH (it cannot be opened, or is not
    a user namespace's file, such as /proc/PID/ns/user), or None if it can."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        return f"cannot open the user namespace {path}: {err.strerror}"
    try:
        try:   # nsfs answers for its files wherever they are, bound into a directory too
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:   # ENOTTY: not a namespace's file
            kind = None
        what = os.readlink(f"/proc/self/fd/{fd}")   # a namespace's reads "user:[INODE]" (not when bound)
    finally:
        os.close(fd)
    return None if kind == kernel.CLONE_NEWUSER else f"{path} is not a user namespace's file (it is {what})"


def _idmapped_copy(source: str | int, userns: int, recursive: bool) -> int:
    tree = mounts.copy_tree(source, recursive)
    try:
        kernel.mount_setattr(tree, "", kernel.AT_EMPTY_PATH | (kernel.AT_RECURSIVE if recursive else 0),
                             attr_set=kernel.MOUNT_ATTR_IDMAP, propagation=kernel.MS_SLAVE, userns_fd=userns)
    except OSError:
        os.close(tree)
        raise
    return tree


def _refusal(source: str | int, userns: int, recursive: bool) -> str:
    """Why the kernel said EINVAL: the first mount of the tree whose filesystem refuses on its own."""
    path = os.path.realpath(source if isinstance(source, str) else f"/proc/self/fd/{source}")
    found = mounts_at_and_below(path)
    for mount_point, fstype in found if recursive else found[:1]:
        alone = path if len(mount_point) < len(path) else mount_point
        try:
            os.close(_idmapped_copy(alone, userns, False))
        except OSError as err:
            if err.errno == errno.EINVAL:
                return (f"cannot idmap {path}: the filesystem mounted on {mount_point} ({fstype}) does not "
                        f"support idmapped mounts (mount_setattr: EINVAL)")
    kinds = ", ".join(sorted({fstype for _point, fstype in found}))
    return f"cannot idmap {path}: the kernel refused (mount_setattr: EINVAL; filesystems there: {kinds})"


def mounts_at_and_below(path: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of the mount `path` is on, then of each mount below it,
    from this process's /proc/self/mountinfo (the last mount on a point is the visible one)."""
    path = os.path.realpath(path)
    table: dict[str, str] = {}
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")   # \040 for a space, as the kernel escapes it
            table[point] = fields[fields.index("-") + 1]
    holding = max((p for p in table if path == p or path.startswith(p.rstrip("/") + "/")), key=len)
    below = sorted(p for p in table if p.startswith(path.rstrip("/") + "/"))
    return [(holding, table[holding])] + [(p, table[p]) for p in below]
