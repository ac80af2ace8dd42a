"""cgroup_files: a running container's cgroup files, read and written through a directory fd.

What LXC's runtime tools do on the client side (cgfsng.c cgroup_get /
cgroup_set / cgroup_freeze, freezer.c): the container's monitor hands out an
fd for the container's cgroup directory in the hierarchy that has a
controller, and the tool reads or writes ``KEY`` there itself - lxc-cgroup,
lxc-info's and lxc-top's figures, lxc-freeze.  `lxcsm cgroup`, `freeze` and
`info` do the same with these helpers.

A directory fd comes from whoever answers on the container's socket, so it
is checked before anything is written through it: it must be a directory on
a cgroup filesystem mounted here (`check_directory`).  A key is one file
name in that directory (`check_key`): never a path, so nothing outside the
directory is reached.
"""

from __future__ import annotations

import os
import time

from lxcsm.engine.linux import cgroups

# What a frozen cgroup says: the v1 freezer's freezer.state, and cgroup2's "frozen" in cgroup.events.
FROZEN_V1, THAWED_V1 = "FROZEN", "THAWED"
POLL_INTERVAL = 0.01   # seconds between looks while a freeze completes


def check_key(key: str) -> str:
    """`key` if it is a cgroup file name (controller.file); ValueError saying why not otherwise."""
    if not key or "/" in key or "\0" in key or key in (".", "..") or key.startswith("."):
        raise ValueError(f"{key!r} is not a cgroup file name (like memory.max or pids.current)")
    return key


def controller_of(key: str) -> str:
    """The controller a key belongs to, as LXC takes it: the part before the first dot."""
    return key.split(".", 1)[0]


def check_directory(fd: int) -> str:
    """The path of a directory fd, if it is on a cgroup filesystem mounted here; ValueError otherwise."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    mountpoints = [hierarchy.mountpoint for hierarchy in cgroups.hierarchies()]
    if not any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in mountpoints):
        raise ValueError(f"{path} is not in a cgroup hierarchy mounted here")
    return path


def read(dirfd: int, key: str) -> str:
    fd = os.open(check_key(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def write(dirfd: int, key: str, value: str) -> None:
    """One write(2) of `value`, as LXC's lxc_writeat: the kernel takes or refuses it whole."""
    fd = os.open(check_key(key), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def frozen(dirfd: int, version: int) -> bool:
    """Is every process of the cgroup frozen?  freezer.state (v1), cgroup.events (cgroup2)."""
    if version == 1:
        return read(dirfd, "freezer.state").strip() == FROZEN_V1
    return any(line.split() == ["frozen", "1"] for line in read(dirfd, "cgroup.events").splitlines())


def freeze(dirfd: int, version: int, wanted: bool, timeout: float | None) -> bool:
    """Freeze (wanted) or thaw the cgroup and wait up to `timeout` seconds (None: for ever) until
    it is done; whether it is."""
    if version == 1:
        write(dirfd, "freezer.state", FROZEN_V1 if wanted else THAWED_V1)
    else:
        write(dirfd, "cgroup.freeze", "1" if wanted else "0")
    deadline = None if timeout is None else time.monotonic() + timeout
    while frozen(dirfd, version) != wanted:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True
