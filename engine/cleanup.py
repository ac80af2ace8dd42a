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
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from lxcsm.engine import cgroups


@dataclass(frozen=True)
class Change:
    kind: str
    target: str
    handle: Any = field(default=None, compare=False)


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


UNDO: dict[str, Callable[[Change], None]] = {
    "child": _reap_child,
    "cgroup": lambda change: cgroups.remove(change.target),
    "cgroup_entered": _leave_cgroup,
    "command_socket": _close_socket,
    "pidfile": _unlink,
}


class UndoLog:
    """The changes one scope (a start, or the monitor's lifetime) made, oldest first."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def record(self, kind: str, target: str | int, handle: Any = None) -> None:
        assert kind in UNDO, kind
        self.changes.append(Change(kind, str(target), handle))

    def unwind(self, log) -> list[str]:
        """Undo every change, newest first; return what could not be undone."""
        failures = []
        while self.changes:
            change = self.changes.pop()
            try:
                UNDO[change.kind](change)
                log.trace("undo", kind=change.kind, target=change.target)
            except Exception as err:   # an undo that fails must not keep older changes in place
                text = str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
                log.error("undo failed", kind=change.kind, target=change.target, error=text)
                failures.append(f"undo {change.kind} {change.target}: {text}")
        return failures
