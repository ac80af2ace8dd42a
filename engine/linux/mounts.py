"""Mounts made through file descriptors: a new filesystem, or a copy of a tree, attached onto a target fd.

mount(2) given two path strings looks both up again when it runs, and hands
back nothing: what was just mounted can only be found again by its path,
which a process writing into the rootfs may have changed meanwhile.  Here a
mount is made detached first - fsopen/fsconfig/fsmount for a new filesystem,
open_tree(OPEN_TREE_CLONE) for a bind - and attached with move_mount onto a
target the caller opened inside the rootfs (engine/linux/paths.py).  The
descriptor of the new mount stays valid after the attach and names exactly
it: later changes (bind flags, propagation, what is made inside it) are done
through ``/proc/self/fd/N``, never by path.
"""

from __future__ import annotations

import os

from lxcsm.engine.linux import kernel

# mount(2) flags that become per-mount attributes of fsmount(2)...
_ATTRIBUTES = {
    kernel.MS_RDONLY: kernel.MOUNT_ATTR_RDONLY,
    kernel.MS_NOSUID: kernel.MOUNT_ATTR_NOSUID,
    kernel.MS_NODEV: kernel.MOUNT_ATTR_NODEV,
    kernel.MS_NOEXEC: kernel.MOUNT_ATTR_NOEXEC,
    kernel.MS_NOATIME: kernel.MOUNT_ATTR_NOATIME,
    kernel.MS_STRICTATIME: kernel.MOUNT_ATTR_STRICTATIME,
    kernel.MS_NODIRATIME: kernel.MOUNT_ATTR_NODIRATIME,
}
# ...and those that are the superblock's, set as fsconfig(2) flags by the names mount(8) uses.
# (MS_RDONLY is both, as mount(2) makes it; MS_RELATIME is fsmount's default; MS_SILENT only
# quietens the kernel log.)
_SUPERBLOCK_FLAGS = {
    kernel.MS_RDONLY: "ro",
    kernel.MS_SYNCHRONOUS: "sync",
    kernel.MS_DIRSYNC: "dirsync",
    kernel.MS_LAZYTIME: "lazytime",
    kernel.MS_MANDLOCK: "mand",
}


def new_filesystem(fstype: str, source: str | None, flags: int = 0, data: str | None = None) -> int:
    """A detached mount of a new `fstype` filesystem: what mount(source, -, fstype, flags, data) would mount."""
    context = kernel.fsopen(fstype)
    try:
        if source:
            kernel.fsconfig(context, kernel.FSCONFIG_SET_STRING, "source", source)
        for flag, name in _SUPERBLOCK_FLAGS.items():
            if flags & flag:
                kernel.fsconfig(context, kernel.FSCONFIG_SET_FLAG, name)
        for option in (data or "").split(","):
            key, has_value, value = option.partition("=")
            if key and has_value:
                kernel.fsconfig(context, kernel.FSCONFIG_SET_STRING, key, value)
            elif key:
                kernel.fsconfig(context, kernel.FSCONFIG_SET_FLAG, key)
        kernel.fsconfig(context, kernel.FSCONFIG_CMD_CREATE)
        attributes = 0
        for flag, attribute in _ATTRIBUTES.items():
            if flags & flag:
                attributes |= attribute
        return kernel.fsmount(context, attributes)
    finally:
        os.close(context)


def copy_tree(source: str | int, recursive: bool) -> int:
    """A detached copy of the mount at `source` (a host path, or an fd), with its submounts
    if `recursive`: what a bind (rbind) of it would mount."""
    flags = kernel.OPEN_TREE_CLONE | os.O_CLOEXEC | (kernel.AT_RECURSIVE if recursive else 0)
    if isinstance(source, int):
        return kernel.open_tree(source, "", flags | kernel.AT_EMPTY_PATH)
    return kernel.open_tree(-100, source, flags)   # AT_FDCWD: a bind's source is the host's path


def attach(mount: int, target: int) -> None:
    """Mount the detached mount `mount` onto the file or directory `target` (an fd)."""
    kernel.move_mount(mount, "", target, "", kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_T_EMPTY_PATH)
