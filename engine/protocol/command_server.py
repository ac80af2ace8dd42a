"""The monitor's end of the command socket (the wire format is command_socket.py).

Binding the name is also how a second start of the same container learns it
is already running.  The monitor answers GET_INIT_PID, GET_INIT_PIDFD,
GET_STATE, GET_CLONE_FLAGS, GET_CONFIG_ITEM, GET_TTY_FD, STOP and
ADD_STATE_CLIENT, plus lxcsm's own CONTINUE; every other command is answered
-ENOSYS, which LXC's clients handle.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import struct

from lxcsm.engine.protocol.command_socket import (
    HEADER,
    MAX_PAYLOAD,
    REGISTERED,
    STATE_MSG,
    Cmd,
    LxcState,
    socket_name,
)


class AlreadyRunning(Exception):
    def __str__(self) -> str:
        return "container is already running"


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
        self.pausing = False              # a start paused at a breakpoint (engine/start/breakpoints.py)
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
                    conn.send(STATE_MSG.pack(0, self.name.encode(), state))
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
            header = conn.recv(HEADER.size)
            if len(header) < HEADER.size:
                conn.close()
                return
            cmd, datalen, inline = HEADER.unpack(header)
            payload = conn.recv(datalen) if 0 < datalen <= MAX_PAYLOAD else b""
            pid, uid, gid = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != 0 and (uid, gid) != (os.getuid(), os.getgid()):
                self._reply(conn, -errno.EPERM)
            else:
                self._serve(conn, cmd, inline, payload)
        except OSError:
            conn.close()

    def _reply(self, conn, ret: int, value: int = 0, payload: bytes = b"", fds=(), keep=False, states=None) -> None:
        socket.send_fds(conn, [HEADER.pack(ret, len(payload), value) + payload], list(fds))
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
                self._reply(conn, REGISTERED, REGISTERED, keep=True, states=states)
        else:
            self._reply(conn, -errno.ENOSYS)
