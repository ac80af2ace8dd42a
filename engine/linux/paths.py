"""Paths inside a rootfs, resolved the way the container will see them.

A path inside a container must be resolved against the container's root, not
the host's: an absolute symlink in the rootfs (``/bin -> /usr/bin``) points
into the rootfs, and ``..`` stops at its top.

Whatever is mounted or created in the rootfs is found with `open_in_root`: the
kernel resolves the path under those rules (openat2 with RESOLVE_IN_ROOT) and
hands back a file descriptor, and missing directories and files are made
relative to descriptors of their parents.  No path string is looked up twice,
so a process that writes into the rootfs meanwhile - swapping a directory for
a symlink to the host between a check and a mount - can send nothing outside
the rootfs: the symlink is followed inside it, like every other.

`in_rootfs` answers the same question with a path string, one component at a
time, for preflight: before the container's mounts exist it is given a map of
bind mounts (container path -> host source), so that for example /bin/sh is
found through ``lxc.mount.entry = /usr usr none ro,bind``.  Nothing is mounted
or created on its answers.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

from lxcsm.engine.linux import kernel

_MAX_SYMLINKS = 40   # the kernel's own limit (ELOOP)


def in_rootfs(rootfs: str, path: str, binds: Mapping[str, str] = {}) -> str:
    """The host path of container path `path`, following symlinks inside `rootfs`."""
    def host(parts: list[str]) -> str:
        inside = "/" + "/".join(parts)
        for target in sorted(binds, key=len, reverse=True):
            if inside == target or inside.startswith(target.rstrip("/") + "/"):
                return os.path.join(binds[target], inside[len(target):].lstrip("/"))
        return os.path.join(rootfs, inside.lstrip("/"))

    pending = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = host(resolved + [part])
        if os.path.islink(candidate):
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(40, "Too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p] + pending
        else:
            resolved.append(part)
    return host(resolved)


def container_path(rootfs_path: str, target: str) -> str:
    """A mount entry's target as a path inside the container.

    LXC accepts targets relative to the rootfs (``dev/shm``) and absolute
    ones; an absolute target under the rootfs's host path (as fstab files
    written for LXC often have) is taken relative to the rootfs.
    """
    if target.startswith("/") and rootfs_path and target.startswith(rootfs_path.rstrip("/") + "/"):
        target = target[len(rootfs_path.rstrip("/")):]
    return "/" + target.lstrip("/")


# Symlinks are followed, inside the rootfs; /proc/PID/fd-style links, which could
# name anything the resolving process has open, are not.
IN_ROOT = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS
# A name in one directory (of /dev), as LXC opens its tty targets: no symlinks at all.
NO_SYMLINKS_BENEATH = kernel.RESOLVE_BENEATH | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS
_O_PATH = os.O_PATH | os.O_CLOEXEC


def open_root(rootfs: str) -> int:
    """An O_PATH descriptor of the rootfs's top directory (a host path, chosen by the config)."""
    return os.open(rootfs, _O_PATH | os.O_DIRECTORY)


def proc_fd(fd: int) -> str:
    """The /proc/self/fd path of `fd`: what mount(2) takes to mean exactly that file."""
    return f"/proc/self/fd/{fd}"


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _open(root: int, parts: list[str], flags: int = 0) -> int:
    try:
        return kernel.openat2(root, "/".join(parts) or ".", _O_PATH | flags, 0, IN_ROOT)
    except OSError as err:
        raise OSError(err.errno, err.strerror, "/" + "/".join(parts)) from None


def _made(root: int, parts: list[str], flags: int) -> int:
    """The descriptor of what was just made (or found) at `parts`; a name that exists but
    resolves to nothing is a dangling symlink, which create= does not make anything through."""
    try:
        return _open(root, parts, flags)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "a symlink to nothing in the rootfs (or removed meanwhile); "
                                "create= makes nothing through it", "/" + "/".join(parts)) from None


def open_in_root(root: int, path: str, create: str = "") -> int:
    """An O_PATH descriptor of container path `path` in the rootfs whose top is `root`.

    Symlinks are followed inside the rootfs, ``..`` stops at its top (RESOLVE_IN_ROOT).
    create="dir" makes the missing directories of `path`; create="file" those of its
    parent and then an empty file (mode 0644) for its last component, never through a
    symlink: a dangling symlink there is refused (ENOENT), as is any other failure.
    """
    parts = _components(path)
    if create == "dir":
        _make_dirs(root, parts)
    elif create == "file" and parts:
        _make_dirs(root, parts[:-1])
        try:
            return _open(root, parts)
        except FileNotFoundError:
            pass
        parent = _open(root, parts[:-1], os.O_DIRECTORY)
        try:
            created = os.open(parts[-1], os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC,
                              0o644, dir_fd=parent)
            os.close(created)
        except FileExistsError:
            pass   # made meanwhile, or a dangling symlink
        finally:
            os.close(parent)
        return _made(root, parts, 0)
    return _open(root, parts)


def _make_dirs(root: int, parts: list[str]) -> None:
    """mkdir -p inside the rootfs: each missing directory made in its parent's descriptor."""
    try:
        os.close(_open(root, parts, os.O_DIRECTORY))
        return
    except FileNotFoundError:
        pass
    for depth in range(1, len(parts) + 1):
        try:
            os.close(_open(root, parts[:depth], os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        parent = _open(root, parts[:depth - 1], os.O_DIRECTORY)
        try:
            os.mkdir(parts[depth - 1], 0o755, dir_fd=parent)
        except FileExistsError:
            pass   # made meanwhile, or a dangling symlink
        finally:
            os.close(parent)
        os.close(_made(root, parts[:depth], os.O_DIRECTORY))


def create_beneath(directory: int, name: str, mode: int) -> int:
    """An O_PATH descriptor of file `name` in `directory`, made empty (with `mode`) if missing;
    a symlink there is refused (ELOOP), not followed."""
    try:
        return kernel.openat2(directory, name, _O_PATH, 0, NO_SYMLINKS_BENEATH)
    except FileNotFoundError:
        pass
    try:
        os.close(kernel.openat2(directory, name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, mode,
                                NO_SYMLINKS_BENEATH))
    except FileExistsError:
        pass
    return kernel.openat2(directory, name, _O_PATH, 0, NO_SYMLINKS_BENEATH)
