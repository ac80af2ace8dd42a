"""Paths inside a rootfs, resolved the way the container will see them.

A path inside a container must be resolved against the container's root, not
the host's: an absolute symlink in the rootfs (``/bin -> /usr/bin``) points
into the rootfs, and ``..`` stops at its top.  `in_rootfs` walks a path one
component at a time with those rules (what openat2's RESOLVE_IN_ROOT does in
the kernel, which Python 3.11 cannot call), so a mount target can never
escape onto the host.

Before the container's mounts exist, preflight asks the same question with a
map of bind mounts (container path -> host source), so that for example
/bin/sh is found through ``lxc.mount.entry = /usr usr none ro,bind``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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
