"""A user namespace's id maps, written from outside it, and the cgroups handed to its root.

A process cloned with CLONE_NEWUSER starts in a namespace that maps no id at
all: until someone in the parent namespace writes /proc/PID/uid_map and
/proc/PID/gid_map, it cannot become any user there, and each file may be
written only once.  The monitor, root on the host, writes them itself, as
LXC's lxc_map_ids() does when no newuidmap/newgidmap helper is involved (a
root caller that maps host ids it owns needs none).  Root leaves
/proc/PID/setgroups at "allow": only a writer without CAP_SETGID over the
parent namespace must deny setgroups(2) before writing a gid map, and LXC
writes "deny" only then (write_id_mapping()).

`delegate_cgroup` gives the namespace's root what LXC's cgfsng chown gives it:
the payload cgroup and the files a process needs to move or a delegated
cgroup2 tree needs to be managed become group-owned by the container's root
gid and group-writable, their owner staying the host's root, the launcher.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

# The kernel takes at most this much in one write of a map file (it refuses the rest).
MAP_FILE_LIMIT = 4096
# A cgroup2 directory's files that a delegated subtree needs; the kernel lists them
# (since 4.15) in /sys/kernel/cgroup/delegate, and LXC reads that list too.
DELEGATE_LIST = "/sys/kernel/cgroup/delegate"


def map_text(lines: Iterable[tuple[int, int, int]]) -> str:
    """The map file's content for (inside id, outside id, count) triples, one line each."""
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines)


def write_map(pid: int, kind: str, text: str) -> None:
    """Write `text` to /proc/PID/{kind}id_map in one write(2), as the kernel requires.

    The kernel checks the whole map at this write: ranges that overlap, more lines than
    it allows, or ids the writer may not map are an error here (EINVAL, EPERM), and the
    file then stays unwritten."""
    data = text.encode()
    if len(data) > MAP_FILE_LIMIT:
        raise ValueError(f"the {kind}id map is {len(data)} bytes; the kernel takes at most {MAP_FILE_LIMIT}")
    fd = os.open(f"/proc/{pid}/{kind}id_map", os.O_WRONLY | os.O_CLOEXEC)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"short write to /proc/{pid}/{kind}id_map: {written} of {len(data)} bytes")


def delegated_files(version: int) -> list[str]:
    """The files of a payload cgroup that its container's root must be able to write."""
    files = ["cgroup.procs"] + (["tasks"] if version == 1 else [])
    if version == 2:
        try:
            with open(DELEGATE_LIST) as listing:
                files += [name for name in listing.read().split() if name not in files]
        except FileNotFoundError:
            pass   # a kernel before 4.15: cgroup.procs is all there is to give
    return files


def delegate_cgroup(path: str, version: int, owner: int, group: int) -> list[str]:
    """chown the cgroup `path` and its delegated files to owner:group (directory 0775,
    files 0664), returning the files changed.  A file the kernel does not offer in this
    cgroup is skipped, as LXC skips it: the container only loses that use of it."""
    os.chown(path, owner, group)
    os.chmod(path, 0o775)
    changed = []
    for name in delegated_files(version):
        file = os.path.join(path, name)
        try:
            os.chown(file, owner, group)
            os.chmod(file, 0o664)
        except FileNotFoundError:
            continue
        changed.append(name)
    return changed
