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

A start that finds such a journal does what `lxcsm cleanup` would, before it
changes anything itself: the leftovers are undone, and what cannot be undone
(or read) is carried over into the new journal, which then outlives a clean
stop for `lxcsm cleanup` to report.  Refusing to start until someone runs
cleanup would be the other way, but a host that lost power leaves a journal
behind for every container that ran, whose changes the reboot undid already:
each autostart would be refused for nothing.  Appending to the old journal,
as starts once did, was wrong: the clean stop that removed it forgot what the
dead monitor had left (a veth with a random name, say).  This happens when the
first change is journalled - the command socket - because only then does this
monitor hold the container's name, so no live monitor's changes can be taken
for a dead one's.

A start refuses to go on without its journal (a full disk, a read-only
LXCPATH): a change the journal does not list could not be found by `lxcsm
cleanup` after a crash, so a change that cannot be journalled fails its state
and is undone at once, by the abort, from the record in memory.  The first
change journalled is the command socket, which the kernel frees with the
monitor anyway: a journal that cannot be written at all fails the start
before it has changed anything a crash would leave behind.  Undoing, on the
other hand, never stops for the journal: a change that was undone is gone
whether or not the journal could say so.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
from collections import namedtuple
from collections.abc import Callable

from lxcsm.engine.errors import StateError, describe
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
    """The host changes of one monitor, appended to a file as they happen, one line each.

    Each line is one write(2) to a file opened O_APPEND; a write the disk cut short is
    truncated away again, so the file only ever holds whole lines.
    """

    def __init__(self, path: str | None,
                 on_leftovers: Callable[[list[Change]], list[Change]] = lambda changes: changes) -> None:
        self.path = path
        self.fd = -1
        self.size = 0          # bytes of whole lines in the file
        self.outstanding = 0   # changes made and not (yet) undone, whatever the file could be told
        self.failed = False    # a write failed and was reported: later failures are the same story
        # Given what a dead monitor's journal lists (oldest first), undoes it and returns what
        # could not be undone: that is carried over.
        self.on_leftovers = on_leftovers

    def made(self, change: Change) -> None:
        """Journal a change; an OSError naming the file if it cannot be."""
        self.outstanding += 1
        self._append({"change": change.kind, "target": change.target})

    def undone(self, change: Change) -> None:
        self.outstanding -= 1
        self._append({"undone": change.kind, "target": change.target})

    def _append(self, entry: dict) -> None:
        if self.path is None:
            return
        line, written = (json.dumps(entry) + "\n").encode(), 0
        try:
            if self.fd < 0:   # created on the first change: a start refused early writes nothing
                self._open()
            while written < len(line):
                written += os.write(self.fd, line[written:])
        except OSError as err:
            if written:   # no half line for `lxcsm cleanup` to stumble on
                try:
                    os.ftruncate(self.fd, self.size)
                except OSError:
                    pass      # then `pending` reports the line as cut short
            raise OSError(err.errno, err.strerror, self.path) from None
        self.size += len(line)

    def _open(self) -> None:
        """Open the journal afresh, carrying over what a dead monitor's left undone (see above)."""
        assert self.path is not None   # a journal without a file opens none
        try:
            made, unreadable = _scan(self.path)
        except FileNotFoundError:
            made, unreadable = [], []
        if made:
            made = self.on_leftovers(made)
        carried = b"".join((json.dumps({"change": c.kind, "target": c.target}) + "\n").encode() for c in made)
        carried += b"".join(raw.rstrip(b"\n") + b"\n" for _number, raw in unreadable)
        if carried:
            with open(self.path + ".new", "wb") as new:
                new.write(carried)
            os.replace(self.path + ".new", self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                          | (0 if carried else os.O_TRUNC), 0o644)
        self.size = len(carried)
        self.outstanding += len(made) + len(unreadable)

    def finish(self) -> None:
        """Close; remove the file when nothing is left for `lxcsm cleanup` to do."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if self.outstanding == 0 and self.path is not None:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass


class UndoLog:
    """The changes one scope (a start, or the monitor's lifetime) made, oldest first."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.changes: list[Change] = []
        self.journal = journal or Journal(None)

    def record(self, kind: str, target: str | int, handle: object = None) -> None:
        """Remember a change just made; a StateError if the journal cannot list it (see above).

        Remembered in memory first, so the abort that follows the error undoes it."""
        assert kind in UNDO, kind
        change = Change(kind, str(target), handle)
        self.changes.append(change)
        try:
            self.journal.made(change)
        except OSError as err:
            self.journal.failed = True   # the start's error says it; the unwind need not again
            raise StateError(f"the journal of host changes cannot be written, and a change it does not "
                             f"list could not be undone after a crash: {describe(err)}") from None

    def unwind(self, log) -> list[str]:
        """Undo every change, newest first; return what could not be undone."""
        failures = []
        while self.changes:
            change = self.changes.pop()
            try:
                UNDO[change.kind](change)
            except Exception as err:   # an undo that fails must not keep older changes in place
                text = str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
                log.error("undo failed", kind=change.kind, target=change.target, error=text)
                failures.append(f"undo {change.kind} {change.target}: {text}")
                continue
            log.trace("undo", kind=change.kind, target=change.target)
            try:
                self.journal.undone(change)
            except OSError as err:
                if not self.journal.failed:
                    self.journal.failed = True
                    log.error("journal not written", error=describe(err))   # it names the file
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


def undo_after_crash(changes: list[Change], log) -> list[Change]:
    """Undo what a dead monitor's journal lists (oldest first), newest first, as `lxcsm
    cleanup` does; each is logged.  Returns what could not be undone, oldest first."""
    kept: list[Change] = []
    for change in reversed(changes):
        try:
            UNDO_AFTER_CRASH[change.kind](change)
        except Exception as err:
            log.error("left by a dead monitor, not undone", kind=change.kind, target=change.target,
                      error=describe(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}")
            kept.insert(0, change)
            continue
        log.warn("left by a dead monitor, undone", kind=change.kind, target=change.target)
    return kept


def pending(path: str) -> tuple[list[Change], list[str]]:
    """The changes a journal lists as made and not undone, oldest first, and what it could not
    read: one text per line that is cut short (a full disk, a crash mid-write) or not an entry."""
    made, unreadable = _scan(path)
    texts = []
    for number, raw in unreadable:
        why = "is cut short" if not raw.endswith(b"\n") else "is not a journal entry"
        shown = raw.rstrip(b"\n").decode(errors="replace")
        texts.append(f"line {number} {why}: {shown[:100]!r}")
    return made, texts


def _scan(path: str) -> tuple[list[Change], list[tuple[int, bytes]]]:
    """The changes made and not undone, oldest first, and the (number, bytes) of each line
    that is not a whole entry."""
    made: list[Change] = []
    unreadable: list[tuple[int, bytes]] = []
    with open(path, "rb") as journal:
        for number, raw in enumerate(journal, start=1):
            entry = _entry(raw)
            if entry is None:
                unreadable.append((number, raw))
            elif entry[0] == "change":
                made.append(entry[1])
            elif entry[1] in made:
                made.remove(entry[1])
    return made, unreadable


def _entry(raw: bytes) -> tuple[str, Change] | None:
    """("change" or "undone", the change) from one journal line; None if it is not one."""
    try:
        entry = json.loads(raw)
    except ValueError:   # UnicodeDecodeError too
        return None
    if not isinstance(entry, dict) or len(entry) != 2 or not isinstance(entry.get("target"), str):
        return None
    for what in ("change", "undone"):
        kind = entry.get(what)
        if isinstance(kind, str) and kind in UNDO_AFTER_CRASH:
            return what, Change(kind, entry["target"])
    return None
