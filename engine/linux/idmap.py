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

A writer that is not root may itself only map its own uid and gid onto themselves
(LXC's lxc_map_ids() does that for a container that maps nothing else, whose root is
unmapped: lxcsm refuses such a container).  Every map of an ordinary user's container
is written by shadow's setuid helpers newuidmap and newgidmap (Debian's `uidmap`
package), which check it against the user's ranges in /etc/subuid and /etc/subgid
(`write_map_with_helper`).

`delegate_cgroup` gives the namespace's root what LXC's cgfsng chown gives it:
the payload cgroup and the files a process needs to move or a delegated
cgroup2 tree needs to be managed become group-owned by the container's root
gid and group-writable, their owner staying the host's root, the launcher.
An ordinary user may not give a file to a group it is not in: as LXC's
userns_exec_1(), `delegate_cgroup_unprivileged` makes the chown from a user
namespace of its own that maps the container's root and the user, where it has
the capability to.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence

from lxcsm.engine.linux import kernel

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


# The setuid helpers that write an ordinary user's maps, per kind, and the package they are in.
HELPERS = {"u": "newuidmap", "g": "newgidmap"}
HELPERS_PACKAGE = "uidmap"
# The extended attribute holding a file's capabilities (setcap(8)): a helper may have
# CAP_SETUID/CAP_SETGID that way instead of the setuid bit.
FILE_CAPABILITIES = "security.capability"


def find_helper(kind: str) -> str | None:
    """The path of newuidmap ("u") or newgidmap ("g") on PATH, None if there is none."""
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        candidate = os.path.join(directory or ".", HELPERS[kind])
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def helper_privileged(path: str) -> bool:
    """Whether a helper can map ids for us: setuid (as Debian installs it) or with file
    capabilities (as some distributions install it), the two LXC accepts."""
    if os.stat(path).st_mode & stat.S_ISUID:
        return True
    try:
        return bool(os.getxattr(path, FILE_CAPABILITIES))
    except OSError:
        return False


def write_map_with_helper(pid: int, kind: str, lines: Sequence[tuple[int, int, int]], helper: str) -> None:
    """An ordinary user's map, written by `helper` (newuidmap/newgidmap: PID then INSIDE
    OUTSIDE COUNT for each line), which refuses ids the user was not given."""
    import subprocess  # only an ordinary user's start pays for it
    argv = [helper, str(pid), *(str(n) for line in lines for n in line)]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise OSError(f"{' '.join(argv)}: {said[-1] if said else f'exit status {done.returncode}'}")


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


def delegate_cgroup_unprivileged(targets: Sequence[tuple[str, int]], root_uid: int, root_gid: int) -> None:
    """delegate_cgroup for an ordinary user: each (path, version) of `targets` gets the user
    as owner and the host gid `root_gid` as group.  A process forked for it unshares a user
    namespace, which newuidmap/newgidmap map as 0 = the container's root, 1 = the user (the
    helpers let a user map its own uid and primary gid); as uid 0 there it has CAP_CHOWN
    over the user's cgroups and gives them to 1:0, that is user:root_gid on the host."""
    uid, gid = os.geteuid(), os.getegid()
    unshared_r, unshared_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the chowner; it never returns into the monitor's code
        status = 1
        try:
            os.close(unshared_r)
            os.close(mapped_w)
            kernel.unshare(kernel.CLONE_NEWUSER)
            os.write(unshared_w, b"u")
            if os.read(mapped_r, 1) == b"m":
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                for path, version in targets:
                    delegate_cgroup(path, version, 1, 0)
                status = 0
        finally:
            os._exit(status)
    os.close(unshared_w)
    os.close(mapped_r)
    try:
        if os.read(unshared_r, 1) != b"u":
            raise OSError(f"the chown helper process {pid} ended before its user namespace was made")
        for kind, root, own in (("u", root_uid, uid), ("g", root_gid, gid)):
            helper = find_helper(kind)
            if helper is None:
                raise OSError(f"{HELPERS[kind]} is not installed")
            write_map_with_helper(pid, kind, [(0, root, 1), (1, own, 1)], helper)
        os.write(mapped_w, b"m")
    finally:
        os.close(unshared_r)
        os.close(mapped_w)   # unblocks a helper still waiting, which then exits
        _pid, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        raise OSError(f"the chown helper process {pid} failed (exit status {os.waitstatus_to_exitcode(wait_status)})")
