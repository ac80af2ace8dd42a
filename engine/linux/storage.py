"""A container's storage, removed as LXC removes an ephemeral container when it stops.

lxc-copy -e makes a container with lxc.ephemeral = 1; LXC's lxc_end() then
destroys it once it has stopped (lxc_destroy_container_on_signal(), start.c):
its rootfs through the storage driver (a directory rootfs whole; an overlay
snapshot's upper layer, which LXC finds after the first ':' of the layers),
its entry in each origin container's lxc_snapshots (listed in its own
lxc_rdepends), then LXCPATH/NAME.  Like LXC's lxc_rmdir_onedev(), nothing on
another filesystem than the directory removed is entered: a mount point
inside it is left, with the directories above it.
"""

from __future__ import annotations

import errno
import os
import stat


def remove_on_one_device(path: str) -> list[str]:
    """Remove `path` and everything under it on its own filesystem; what was left (a mount
    point, or what could not be removed) is returned, not raised."""
    try:
        device = os.lstat(path).st_dev
    except FileNotFoundError:
        return []
    left: list[str] = []
    _remove(path, device, left)
    return left


def _remove(path: str, device: int, left: list[str]) -> None:
    with os.scandir(path) as entries:
        for entry in entries:
            status = entry.stat(follow_symlinks=False)
            if status.st_dev != device:
                left.append(entry.path)   # another filesystem mounted here: not ours to empty
            elif stat.S_ISDIR(status.st_mode):
                _remove(entry.path, device, left)
            else:
                _unlink(entry.path, left)
    try:
        os.rmdir(path)
    except OSError as err:
        if err.errno != errno.ENOENT:
            left.append(path)


def _unlink(path: str, left: list[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        left.append(path)


def rootfs_to_destroy(rootfs_value: str) -> str:
    """The directory LXC's storage driver removes for lxc.rootfs.path (as written)."""
    kind, colon, rest = rootfs_value.partition(":")
    if not colon:
        return rootfs_value
    if kind in ("overlay", "overlayfs"):
        return rest.partition(":")[2]   # LXC's ovl_destroy(): after the first ':' of the layers
    return rest


def forget_snapshot(lxcpath: str, name: str) -> None:
    """Take this container out of the lxc_snapshots file of each container it was copied
    from (LXC's mod_all_rdeps(c, false)); a file left empty is removed."""
    try:
        with open(os.path.join(lxcpath, name, "lxc_rdepends")) as rdepends:
            lines = rdepends.read().splitlines()
    except OSError:
        return
    entry = f"{lxcpath}\n{name}\n"
    for origin_path, origin_name in zip(lines[0::2], lines[1::2], strict=False):
        snapshots = os.path.join(origin_path, origin_name, "lxc_snapshots")
        try:
            with open(snapshots) as file:
                text = file.read()
        except OSError:
            continue
        if text.strip().lstrip("-").isdigit() and int(text) != 0:   # LXC's old format: a count
            text = f"{int(text) - 1}\n"
        elif text.strip().isdigit():
            text = ""   # a count of 0: LXC drops the file for the new format
        else:
            text = text.replace(entry, "")
        if text:
            with open(snapshots, "w") as file:
                file.write(text)
        else:
            os.unlink(snapshots)
