"""Cleanup is data: what a start changed on the host, and how each change is undone.

Every state that changes the host records the change in an `UndoLog` the
moment it is made (``undo.record("cgroup", path)``).  Nothing else remembers
it: the stopping, aborting and reboot states unwind the log, newest change
first, and the undo of each kind lives in the `UNDO` table below.  That
replaces LXC's ladder of ``goto out_*`` labels, and it means a failure at any
point is cleaned up by the same code as a normal stop.

A change is plain data (a kind and a target such as a path or pid), plus an
optional live handle (an fd) that only the recording process can use.

Unwinding never stops at a failed undo: each failure is logged and returned,
so it is reported beside, never instead of, the error that caused the abort.

The record is also kept on disk as it is made, in a `Journal` next to the
container's config: one JSON line per change made and per change undone.  A
monitor that ends normally has undone everything and removes it; one that
was killed leaves it behind, and `lxcsm cleanup NAME` undoes what it lists
with `UNDO_AFTER_CRASH` - the same record, read by another process, so each
kind has an undo that needs no live handle.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
from collections import namedtuple
from collections.abc import Callable

from lxcsm.engine.linux import cgroups


class Change(namedtuple("Change", (
        "kind",    # str
        "target",  # str
        "handle",  # object: a live fd, only meaningful in the recording process
    ), defaults=(None,))):
    __slots__ = ()

    # A change is its kind and target: the same change read back from the journal has no handle.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and self[:2] == other[:2]

    def __hash__(self) -> int:
        return hash(self[:2])


def _reap_child(change: Change) -> None:
    """Kill the container's first process (if it still runs) and reap it."""
    pid, pidfd = int(change.target), change.handle
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass   # it has exited already; it may still need reaping
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass   # the poll state reaped it
    os.close(pidfd)


def _leave_cgroup(change: Change) -> None:
    """Move the monitor back into the cgroup it started in (target) so its own can be removed."""
    cgroups.attach(change.target, os.getpid())


def _close_socket(change: Change) -> None:
    sock: socket.socket = change.handle
    sock.close()


def _unlink(change: Change) -> None:
    try:
        os.unlink(change.target)
    except FileNotFoundError:
        pass


def _delete_netdev(change: Change) -> None:
    from lxcsm.engine.linux import netlink  # only starts that made a device have one to delete
    netlink.delete(change.target)


UNDO: dict[str, Callable[[Change], None]] = {
    "child": _reap_child,
    "cgroup": lambda change: cgroups.remove(change.target),
    "cgroup_entered": _leave_cgroup,
    "command_socket": _close_socket,
    "kept_fd": lambda change: os.close(int(change.target)),   # a namespace or tty master of the boot
    "netdev": _delete_netdev,
    "pidfile": _unlink,
}


JOURNAL = "lxcsm-host-changes.log"


def journal_path(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), JOURNAL)


class Journal:
    """The host changes of one monitor, appended to a file as they happen."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.file = None
        self.outstanding = 0   # changes written and not (yet) undone

    def write(self, entry: dict) -> None:
        if self.path is None:
            return
        if self.file is None:   # created on the first change: a start refused early writes nothing
            self.file = open(self.path, "a", buffering=1)
        self.file.write(json.dumps(entry) + "\n")
        self.outstanding += 1 if "change" in entry else -1

    def finish(self) -> None:
        """Close; remove the file when nothing is left for `lxcsm cleanup` to do."""
        if self.file is not None:
            self.file.close()
            self.file = None
            if self.outstanding == 0:
                os.unlink(self.path)


class UndoLog:
    """The changes one scope (a start, or the monitor's lifetime) made, oldest first."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.changes: list[Change] = []
        self.journal = journal or Journal(None)

    def record(self, kind: str, target: str | int, handle: object = None) -> None:
        assert kind in UNDO, kind
        self.changes.append(Change(kind, str(target), handle))
        self.journal.write({"change": kind, "target": str(target)})

    def unwind(self, log) -> list[str]:
        """Undo every change, newest first; return what could not be undone."""
        failures = []
        while self.changes:
            change = self.changes.pop()
            try:
                UNDO[change.kind](change)
                self.journal.write({"undone": change.kind, "target": change.target})
                log.trace("undo", kind=change.kind, target=change.target)
            except Exception as err:   # an undo that fails must not keep older changes in place
                text = str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
                log.error("undo failed", kind=change.kind, target=change.target, error=text)
                failures.append(f"undo {change.kind} {change.target}: {text}")
        return failures


# --- after a crash: lxcsm cleanup NAME ---------------------------------------------------


def _kill_orphan(pid: int, payload: str) -> None:
    """SIGKILL `pid` if it is still a process of this container (its cgroup says so), and wait."""
    try:
        with open(f"/proc/{pid}/cgroup") as cgroup:
            if payload not in cgroup.read():
                return   # that pid belongs to someone else now
        pidfd = os.pidfd_open(pid)
    except (FileNotFoundError, ProcessLookupError):
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], 5)
    finally:
        os.close(pidfd)


def _remove_orphan_cgroup(change: Change) -> None:
    payload = os.path.basename(change.target)
    if os.path.isdir(change.target):
        for pid in cgroups.members(change.target):
            _kill_orphan(pid, payload)
    cgroups.remove(change.target)


UNDO_AFTER_CRASH: dict[str, Callable[[Change], None]] = {
    "child": lambda change: None,          # its cgroup's undo kills whatever is left in it
    "cgroup": _remove_orphan_cgroup,
    "cgroup_entered": lambda change: None,  # the monitor that entered is gone
    "command_socket": lambda change: None,  # the kernel freed the name with the monitor
    "kept_fd": lambda change: None,         # closed with the monitor
    "netdev": _delete_netdev,               # a veth whose container end is gone is gone too
    "pidfile": _unlink,
}


def pending(path: str) -> list[Change]:
    """The changes a journal lists as made and not undone, oldest first."""
    made: list[Change] = []
    with open(path) as journal:
        for line in journal:
            entry = json.loads(line)
            if "change" in entry:
                made.append(Change(entry["change"], entry["target"]))
            elif Change(entry["undone"], entry["target"]) in made:
                made.remove(Change(entry["undone"], entry["target"]))
    return made
