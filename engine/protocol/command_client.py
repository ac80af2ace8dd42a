"""The client's end of the command socket: `lxcsm stop`, `continue`, and start's
"already running" check (the wire format is command_socket.py)."""

from __future__ import annotations

import os
import select
import socket
import struct

from lxcsm.engine.protocol.command_socket import HEADER, REGISTERED, STATE_MSG, Cmd, LxcState, socket_name


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
        sock.sendall(HEADER.pack(cmd, len(payload), inline) + payload)
        header, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 1)
        if len(header) < HEADER.size:
            sock.close()
            return Reply(ret=None, monitor=monitor)
        ret, datalen, value = HEADER.unpack(header)
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
        waiter.conn.recv(STATE_MSG.size)
    monitor_exited(waiter)
    return True


def state_waiter(lxcpath: str, name: str, state: LxcState) -> Reply | None:
    """ADD_STATE_CLIENT for one state; None if the container is already in it or gone."""
    wanted = [0] * 8
    wanted[state] = 1
    reply = call(lxcpath, name, Cmd.ADD_STATE_CLIENT, struct.pack("<8i", *wanted), keep=True)
    if reply is None or reply.conn is None:
        return None
    if reply.value != REGISTERED:
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
