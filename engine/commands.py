"""The container's command socket, speaking LXC 5's wire protocol.

LXC's tools (lxc-info, lxc-stop, lxc-wait, ...) talk to a running container's
monitor over an abstract unix socket named ``@LXCPATH/NAME/command``; so does
`lxcsm stop`.  This module is both ends of the subset a start needs: binding
the name (which is also how a second start of the same container learns it is
already running), the monitor's answers to GET_INIT_PID, GET_INIT_PIDFD,
GET_STATE, GET_CLONE_FLAGS, GET_CONFIG_ITEM, STOP and ADD_STATE_CLIENT, and
the client calls `lxcsm stop` makes.  Layouts and numbers follow
shared/reference/lxc-5.0.2/command-protocol.md; every other command is
answered -ENOSYS, which LXC's clients handle.

One request per connection; STOP and state-client connections stay open and
are closed when the container has stopped, which their clients read as
"stopped".
"""

from __future__ import annotations

import enum
import errno
import os
import select
import selectors
import signal
import socket
import struct

_HEADER = struct.Struct("<iiq")        # cmd or ret, datalen, inline value
_STATE_MSG = struct.Struct("<i256si")  # struct lxc_msg: type, name, value
_MAX_PAYLOAD = 8192


class Cmd(enum.IntEnum):
    GET_TTY_FD = 0
    STOP = 2
    GET_STATE = 3
    GET_INIT_PID = 4
    GET_CLONE_FLAGS = 5
    GET_CONFIG_ITEM = 7
    ADD_STATE_CLIENT = 10
    GET_INIT_PIDFD = 18
    # lxcsm's own, far above LXC's numbers (LXC answers -ENOSYS from 27 on):
    CONTINUE = 1000   # resume a start paused by --break-at or --step


class LxcState(enum.IntEnum):
    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    ABORTING = 4
    FREEZING = 5
    FROZEN = 6
    THAWED = 7


_REGISTERED = 8   # ADD_STATE_CLIENT's "registered, wait for a message" (MAX_STATE)


class AlreadyRunning(Exception):
    def __str__(self) -> str:
        return "container is already running"


def socket_name(lxcpath: str, name: str) -> bytes:
    """The abstract address, hashed (FNV-1a 64) when too long, exactly as LXC builds it."""
    lxcpath = lxcpath.rstrip("/") or "/"
    path = f"{lxcpath}/{name}/command"
    if len(path.encode()) < 106:
        return b"\0" + path.encode()
    digest = 0xCBF29CE484222325
    for byte in f"{lxcpath}/{name}".encode():
        digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return b"\0" + f"lxc/{digest:016x}/command".encode()


def bind(lxcpath: str, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(socket_name(lxcpath, name))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise AlreadyRunning() from None
        raise
    sock.listen(100)
    return sock


class CommandServer:
    """The monitor's side.  Its fileno() is readable whenever a connection needs serving."""

    def __init__(self, sock: socket.socket, name: str, config) -> None:
        self.sock = sock
        self.name = name
        self.config = config
        self.state = LxcState.STARTING
        self.init_pid = 0
        self.init_pidfd = -1
        self.clone_flags = 0
        # Config items only known while the container runs (a veth's host name): what LXC's
        # monitor answers get_running_config_item with, and lxc-info prints as "Link:".
        self.running_items: dict[str, str] = {}
        # The master sides of the container's ttys (tty N at index N-1) and who holds each.
        # The master sides of the container's terminals by tty number (0: /dev/console), and
        # the lxc-console client holding each.
        self.ttys: dict[int, int] = {}
        self.tty_users: dict[int, socket.socket] = {}
        self.stop_signal = config.signal_stop
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, self._accept)
        self.waiters: dict[socket.socket, list[int] | None] = {}   # kept connections -> states asked for
        self.pausing = False              # a start paused at a breakpoint (engine/breakpoints.py)
        self.pause_decision: str | None = None   # what the user said: "continue" or "abort"

    def fileno(self) -> int:
        return self.selector.fileno()

    def new_ttys(self, ttys: dict[int, int]) -> None:
        """A boot's terminals (none before FDS): the previous boot's lxc-console clients
        are let go."""
        for conn in set(self.tty_users.values()):
            self._drop(conn)
        self.ttys = ttys

    def _free_tty(self, asked: int) -> int | None:
        """The tty an lxc-console may have: tty N if it exists and is free, for -1 the first
        free one of 1..N; 0 is the console."""
        free = [n for n in sorted(self.ttys) if n not in self.tty_users]
        if asked == -1:
            return next((n for n in free if n > 0), None)
        return asked if asked in free else None

    def serve_ready(self) -> None:
        for key, _events in self.selector.select(0):
            key.data(key.fileobj)

    def set_state(self, state: LxcState) -> None:
        """Enter `state` and tell the clients that asked for it (one message each, then close)."""
        self.state = state
        for conn, states in list(self.waiters.items()):
            if states is not None and states[state]:
                try:
                    conn.send(_STATE_MSG.pack(0, self.name.encode(), state))
                except OSError:
                    pass
                self._drop(conn)

    def close(self) -> None:
        """Stop listening, then close every kept connection: its client reads STOPPED."""
        self.selector.unregister(self.sock)
        self.sock.close()
        for conn in list(self.waiters):
            self._drop(conn)
        self.selector.close()

    def _drop(self, conn: socket.socket) -> None:
        for tty, user in list(self.tty_users.items()):
            if user is conn:   # an lxc-console left: its tty is free again
                del self.tty_users[tty]
        self.waiters.pop(conn, None)
        self.selector.unregister(conn)
        conn.close()

    def _keep(self, conn: socket.socket, states: list[int] | None) -> None:
        self.waiters[conn] = states
        self.selector.register(conn, selectors.EVENT_READ, self._drop)   # EOF: the client left

    def _accept(self, _sock) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(1.0)   # a client that connects and says nothing must not stall the monitor
        try:
            header = conn.recv(_HEADER.size)
            if len(header) < _HEADER.size:
                conn.close()
                return
            cmd, datalen, inline = _HEADER.unpack(header)
            payload = conn.recv(datalen) if 0 < datalen <= _MAX_PAYLOAD else b""
            pid, uid, gid = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != 0 and (uid, gid) != (os.getuid(), os.getgid()):
                self._reply(conn, -errno.EPERM)
            else:
                self._serve(conn, cmd, inline, payload)
        except OSError:
            conn.close()

    def _reply(self, conn, ret: int, value: int = 0, payload: bytes = b"", fds=(), keep=False, states=None) -> None:
        socket.send_fds(conn, [_HEADER.pack(ret, len(payload), value) + payload], list(fds))
        if keep:
            self._keep(conn, states)
        else:
            conn.close()

    def _serve(self, conn, cmd: int, inline: int, payload: bytes) -> None:
        if cmd == Cmd.GET_TTY_FD:
            tty = self._free_tty(inline)
            if tty is None:
                self._reply(conn, -errno.EBADF)   # lxc-console: "Denied access to tty"
            else:
                self.tty_users[tty] = conn
                self._reply(conn, 0, tty, fds=[self.ttys[tty]], keep=True)
        elif cmd == Cmd.GET_INIT_PID:
            self._reply(conn, 0, self.init_pid)
        elif cmd == Cmd.GET_INIT_PIDFD:
            if self.init_pidfd >= 0:
                self._reply(conn, 0, fds=[self.init_pidfd])
            else:
                self._reply(conn, -errno.EBADF)
        elif cmd == Cmd.GET_STATE:
            self._reply(conn, 0, self.state)
        elif cmd == Cmd.GET_CLONE_FLAGS:
            self._reply(conn, 0, self.clone_flags)
        elif cmd == Cmd.GET_CONFIG_ITEM:
            key = payload.rstrip(b"\0").decode(errors="replace")
            try:
                value = self.running_items.get(key) or self.config.get_item(key)
            except KeyError:
                value = None   # not a key LXC knows: LXC answers -1 too
            if value:
                self._reply(conn, 0, payload=value.encode() + b"\0")
            else:
                self._reply(conn, -1)
        elif cmd == Cmd.CONTINUE:
            if self.pausing:
                self.pause_decision = "continue"
                self._reply(conn, 0)
            else:
                self._reply(conn, -errno.EINVAL)
        elif cmd == Cmd.STOP and self.pausing:
            self.pause_decision = "abort"
            self._keep(conn, None)   # closed once the abort has cleaned up: the client reads success
        elif cmd == Cmd.STOP:
            try:
                signal.pidfd_send_signal(self.init_pidfd, self.stop_signal)
            except OSError as err:
                self._reply(conn, -err.errno)
                return
            self._keep(conn, None)   # no reply: the client waits for end-of-file
        elif cmd == Cmd.ADD_STATE_CLIENT:
            if len(payload) != 32:
                self._reply(conn, -errno.EINVAL)
                return
            states = list(struct.unpack("<8i", payload))
            if states[self.state] == 1:
                self._reply(conn, self.state, self.state)
            else:
                self._reply(conn, _REGISTERED, _REGISTERED, keep=True, states=states)
        else:
            self._reply(conn, -errno.ENOSYS)


# --- the client side (lxcsm stop, lxcsm start's "already running" check) ------------


def _connect(lxcpath: str, name: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_name(lxcpath, name))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None
    return sock


class Reply:
    """A command's answer.  A plain class, not a dataclass: `lxcsm stop` imports this module
    and nothing heavier, and dataclasses costs ~15 ms to import (it brings inspect)."""

    __slots__ = ("ret", "value", "data", "fds", "conn", "monitor")

    def __init__(self, ret: int | None, value: int = 0, data: bytes = b"", fds: list[int] | None = None,
                 conn: socket.socket | None = None, monitor: int = -1) -> None:
        self.ret = ret            # None: the monitor closed the connection without replying
        self.value = value        # the inline value (a pid, a state)
        self.data = data
        self.fds = fds or []
        self.conn = conn          # kept open when asked to
        self.monitor = monitor    # with a kept connection: a pidfd for the monitor process


def _monitor_pidfd(sock: socket.socket) -> int:
    """A pidfd for the process at the other end, taken while it is surely alive (connected)."""
    pid, _uid, _gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if pid == os.getpid():
        return -1   # a server in this very process (the unit tests): nothing to wait for
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1


def monitor_exited(reply: Reply, timeout: float = 10.0) -> None:
    """Wait for the monitor behind a kept connection to exit.

    LXC's protocol says STOPPED by closing the connection once everything is
    undone; the monitor still writes its record and exits a moment later.
    `lxcsm stop` returns only after that, so a start right after it never
    races the old monitor's last write.
    """
    if reply.monitor >= 0:
        select.select([reply.monitor], [], [], timeout)
        os.close(reply.monitor)
        reply.monitor = -1


def call(lxcpath: str, name: str, cmd: Cmd, payload: bytes = b"", keep: bool = False,
         inline: int = 0) -> Reply | None:
    """Send one command (with `inline`, the request's own data field) and read its reply;
    None when the container is not running."""
    sock = _connect(lxcpath, name)
    if sock is None:
        return None
    monitor = _monitor_pidfd(sock) if keep else -1
    try:
        sock.sendall(_HEADER.pack(cmd, len(payload), inline) + payload)
        header, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 1)
        if len(header) < _HEADER.size:
            sock.close()
            return Reply(ret=None, monitor=monitor)
        ret, datalen, value = _HEADER.unpack(header)
        data = sock.recv(datalen) if datalen else b""
    except (ConnectionResetError, BrokenPipeError):
        sock.close()
        return None
    if not keep:
        sock.close()
        sock = None
    return Reply(ret, value, data, fds, sock, monitor)


def get_state(lxcpath: str, name: str) -> LxcState:
    reply = call(lxcpath, name, Cmd.GET_STATE)
    return LxcState.STOPPED if reply is None or reply.ret is None or reply.ret < 0 else LxcState(reply.value)


def wait_closed(waiter: Reply, timeout: float | None) -> bool:
    """Wait until the monitor closes a kept connection (or sends its one state message)."""
    with waiter.conn:
        if not select.select([waiter.conn], [], [], timeout)[0]:
            return False
        waiter.conn.recv(_STATE_MSG.size)
    monitor_exited(waiter)
    return True


def state_waiter(lxcpath: str, name: str, state: LxcState) -> Reply | None:
    """ADD_STATE_CLIENT for one state; None if the container is already in it or gone."""
    wanted = [0] * 8
    wanted[state] = 1
    reply = call(lxcpath, name, Cmd.ADD_STATE_CLIENT, struct.pack("<8i", *wanted), keep=True)
    if reply is None or reply.conn is None:
        return None
    if reply.value != _REGISTERED:
        reply.conn.close()
        monitor_exited(reply, timeout=0)
        return None
    return reply


def stop(lxcpath: str, name: str) -> bool:
    """STOP: the monitor sends lxc.signal.stop and closes the connection once STOPPED.

    True when the container is stopped (end-of-file, or nobody listening) and
    its monitor has exited; any reply at all means the monitor could not
    signal init.
    """
    reply = call(lxcpath, name, Cmd.STOP, keep=True)
    if reply is None:
        return True
    if reply.conn is not None:
        reply.conn.close()
    if reply.ret is not None:
        monitor_exited(reply, timeout=0)
        return False
    monitor_exited(reply)
    return True
