"""The sync channel between the monitor and the container child.

A SOCK_SEQPACKET socketpair created before the clone: one message a frame, so
no framing code, and file descriptors ride along as SCM_RIGHTS.  A frame is one
kind byte and a payload.  The kinds are a closed vocabulary:

* LXC 5's start sequences, in the order they happen (sync.h's START_SYNC_*):
  STARTUP (monitor -> child: you are in your cgroups - and, in a user
  namespace, your id maps are written: LXC writes them before this barrier
  too, so a user namespace needs no message of its own), CONFIGURE (child ->
  monitor: my namespaces exist, configure them from outside), POST_CONFIGURE
  (monitor -> child: network is in place), IDMAPPED_MOUNTS (monitor -> child,
  with lxc.idmap and lxc.rootfs.options = idmap=..., or a mount entry bind
  with idmap=: the rootfs and those binds' sources as detached mounts
  idmapped to a user namespace, which only the monitor, root on the host,
  may make; LXC passes the rootfs beside its sync socket and exchanges each
  entry's later, here they are one frame of their own), CGROUP_LIMITS (child -> monitor: set up, apply the
  device limits), FDS (both ways: the fds the monitor keeps) and READY_START
  (monitor -> child: exec init);
* ERROR, which carries the failing side's state and error text, so the other
  side can say what went wrong instead of "an error occurred in another
  process" (LXC sends a bare -1);
* LOG, which carries one of the child's log events for the monitor to render;
* PAUSED (child -> monitor: I stopped before this state, for --break-at or
  --step) and RESUME (monitor -> child: go on), the debugger's pair.  While
  the child is paused its wait has no deadline, and the monitor's restarts
  once the child goes on.

Each end is typed by its owner (`MonitorEnd`, `ChildEnd`) with methods named
for intent; a barrier names both of its messages, there is no ``sequence + 1``.
Every wait treats end-of-file as the peer's death: the child dies with the
monitor (PR_SET_PDEATHSIG) and the monitor reads end-of-file when the child
exits, so a dead peer ends any wait.  A live but slow peer does not: as LXC's
sync waits (sync.c reads without a timeout), waits have no deadline by default
- a hook may take as long as it takes, and is named by its hung-hook warnings
(hooks/) and by `lxcsm info` meanwhile, which the monitor answers from inside
its waits (`serve`).  LXCSM_SYNC_TIMEOUT gives every wait a deadline, for
tests.  The child's end is close-on-exec: once init is exec'd the monitor
reads end-of-file, which is how it learns the exec worked.
"""

from __future__ import annotations

import enum
import json
import os
import select
import socket
import time
from collections.abc import Callable, Sequence

_MAX_FRAME = 64 * 1024
_MAX_FDS = 64


class SyncMsg(enum.IntEnum):
    STARTUP = 1
    CONFIGURE = 2
    POST_CONFIGURE = 3
    IDMAPPED_MOUNTS = 4
    CGROUP_LIMITS = 5
    FDS = 6
    READY_START = 7
    ERROR = 0x80
    LOG = 0x81
    PAUSED = 0x82
    RESUME = 0x83

    @property
    def label(self) -> str:
        """The sequence's name as LXC's trace prints it ("post-configure")."""
        return self.name.lower().replace("_", "-")


class SyncError(Exception):
    """The sync channel broke: the peer died, timed out or said something unexpected."""


class PeerFailed(Exception):
    """The other side reported an error in one of its states."""

    def __init__(self, side: str, state: str, error: str) -> None:
        super().__init__(side, state, error)
        self.side = side
        self.state = state
        self.error = error

    def __str__(self) -> str:
        return self.error


def socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


class _End:
    """What both ends share: framing, deadlines, error and log frames."""

    me = peer = ""

    def __init__(self, sock: socket.socket, log, timeout: float | None) -> None:
        self.sock = sock
        self.log = log
        self.timeout = timeout   # seconds a wait may last (LXCSM_SYNC_TIMEOUT); None: until the peer dies
        self._early: list[tuple[SyncMsg | None, bytes, list[int]]] = []   # read ahead while paused

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _send(self, kind: SyncMsg, payload: bytes = b"", fds: Sequence[int] = ()) -> None:
        try:
            socket.send_fds(self.sock, [bytes([kind]) + payload], list(fds))
        except (BrokenPipeError, ConnectionResetError):
            self._last_words()
            raise SyncError(f"{self.peer} is gone (sending {kind.label})") from None

    def _last_words(self) -> None:
        """The peer closed its end.  If it reported an error before it went, raise that
        (PeerFailed): it is why the peer is gone, the broken pipe only its consequence."""
        while select.select([self.sock], [], [], 0)[0]:
            data, fds = self._recv_frame()
            for fd in fds:
                os.close(fd)
            if not data:
                return
            if data[0] == SyncMsg.LOG:
                self._replay(json.loads(data[1:]))
            elif data[0] == SyncMsg.ERROR:
                report = json.loads(data[1:])
                raise PeerFailed(self.peer, report["state"], report["error"])

    def _replay(self, event: dict) -> None:
        """A log frame read while draining a dead peer's last frames (the child renders none)."""

    def _recv(self, deadline: float | None, waiting_for: str) -> tuple[SyncMsg | None, bytes, list[int]]:
        if self._early:
            return self._early.pop(0)
        return self._read(deadline, waiting_for)

    def _read(self, deadline: float | None, waiting_for: str) -> tuple[SyncMsg | None, bytes, list[int]]:
        remaining = None if deadline is None else deadline - time.monotonic()
        if (remaining is not None and remaining <= 0) or not select.select([self.sock], [], [], remaining)[0]:
            raise SyncError(f"timed out after {self.timeout:g}s waiting for {self.peer} "
                            f"to send {waiting_for} (LXCSM_SYNC_TIMEOUT)")
        data, fds = self._recv_frame()
        if not data:
            return None, b"", []
        return SyncMsg(data[0]), data[1:], fds

    def _recv_frame(self) -> tuple[bytes, list[int]]:
        """One frame, or b"" once the peer is gone and its frames are read.

        A peer that exits with a frame of ours unread (the child failing before it read
        STARTUP) makes the kernel report ECONNRESET once, ahead of the frames the peer sent
        before it went - its error report among them: those are read on, not dropped."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, _MAX_FRAME, _MAX_FDS)
        except ConnectionResetError:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, _MAX_FRAME, _MAX_FDS, socket.MSG_DONTWAIT)
            except (BlockingIOError, ConnectionResetError):
                return b"", []
        return data, fds

    def _on_paused(self, state: str) -> None:
        raise SyncError(f"{self.peer} sent paused, which only the child may send")

    def _wait(self, expected: SyncMsg | None, on_log: Callable[[dict], None],
              deadline: bool = True) -> tuple[bytes, list[int]]:
        """Read frames until `expected` (None: until end-of-file) arrives."""
        waiting_for = expected.label if expected else "end-of-file"
        timeout = self.timeout if deadline else None
        limit = (lambda: time.monotonic() + timeout) if timeout is not None else (lambda: None)
        until = limit()
        while True:
            kind, payload, fds = self._recv(until, waiting_for)
            if kind is SyncMsg.LOG:
                on_log(json.loads(payload))
            elif kind is SyncMsg.PAUSED:
                self._on_paused(payload.decode())
                until = limit()   # the time spent paused does not count
            elif kind is SyncMsg.ERROR:
                report = json.loads(payload)
                raise PeerFailed(self.peer, report["state"], report["error"])
            elif kind is expected:
                return payload, fds
            elif kind is None:
                raise SyncError(f"{self.peer} exited while {self.me} waited for {waiting_for}")
            else:
                for fd in fds:
                    os.close(fd)
                raise SyncError(f"{self.me} expected {waiting_for} but {self.peer} sent {kind.label}")

    def send_error(self, state: str, error: str) -> None:
        self._send(SyncMsg.ERROR, json.dumps({"state": state, "error": error}).encode())


class MonitorEnd(_End):
    me, peer = "monitor", "child"

    def __init__(self, sock: socket.socket, log, timeout: float | None, on_child_log: Callable[[dict], None],
                 on_child_paused: Callable[[str], None] = lambda state: None, serve=None) -> None:
        super().__init__(sock, log, timeout)
        self.on_child_log = on_child_log
        self.on_child_paused = on_child_paused
        # The command server (fileno(), timeout(), serve_ready()), answered while waiting: a
        # start is watched (`lxcsm info`) and stopped (`lxcsm stop`) from inside its waits.
        self.serve = serve

    def _read(self, deadline: float | None, waiting_for: str) -> tuple[SyncMsg | None, bytes, list[int]]:
        while self.serve is not None:
            due = [t for t in (self.serve.timeout(),
                               None if deadline is None else max(0.0, deadline - time.monotonic()))
                   if t is not None]
            ready = select.select([self.sock, self.serve], [], [], min(due) if due else None)[0]
            if self.sock in ready or (deadline is not None and time.monotonic() >= deadline):
                break
            self.serve.serve_ready()   # a command, or a command connection's deadline
        return super()._read(deadline, waiting_for)

    def _replay(self, event: dict) -> None:
        self.on_child_log(event)

    def _on_paused(self, state: str) -> None:
        """The child waits before `state` until the user lets it go on (or aborts: an exception)."""
        self.on_child_paused(state)
        self._send(SyncMsg.RESUME)

    def wake(self, msg: SyncMsg, payload: bytes = b"", fds: Sequence[int] = ()) -> None:
        self.log.trace("sync wake", sequence=msg.label)
        self._send(msg, payload, fds)

    def wait_for(self, msg: SyncMsg) -> tuple[bytes, list[int]]:
        self.log.trace("sync wait", sequence=msg.label)
        return self._wait(msg, self.on_child_log)

    def wait_for_exec(self) -> None:
        """After READY_START: end-of-file means init was exec'd, ERROR that exec failed."""
        self.log.trace("sync wait", sequence="exec")
        self._wait(None, self.on_child_log)


class ChildEnd(_End):
    me, peer = "child", "monitor"

    def wake(self, msg: SyncMsg, payload: bytes = b"", fds: Sequence[int] = ()) -> None:
        self.log.trace("sync wake", sequence=msg.label)
        self._send(msg, payload, fds)

    def wait_for(self, msg: SyncMsg) -> tuple[bytes, list[int]]:
        self.log.trace("sync wait", sequence=msg.label)
        return self._wait(msg, lambda _event: None)

    def barrier(self, wake: SyncMsg, wait_for: SyncMsg, payload: bytes = b"",
                fds: Sequence[int] = ()) -> tuple[bytes, list[int]]:
        """Wake the monitor with `wake`, then block until it answers `wait_for`."""
        self.wake(wake, payload, fds)
        return self.wait_for(wait_for)

    def pause(self, state: str) -> None:
        """Tell the monitor we stopped before `state`; wait, without a deadline, to be resumed.

        A sync message the monitor sent before it saw PAUSED (STARTUP, say) is kept for
        the wait it belongs to.
        """
        self._send(SyncMsg.PAUSED, state.encode())
        while True:
            frame = self._read(None, SyncMsg.RESUME.label)
            if frame[0] is SyncMsg.RESUME:
                return
            if frame[0] is None:
                raise SyncError("monitor exited while the child was paused")
            self._early.append(frame)

    def send_log(self, event: dict) -> None:
        self._send(SyncMsg.LOG, json.dumps(event, default=str).encode())
