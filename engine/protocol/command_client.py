"""The client's end of the command socket: `lxcsm stop`, `continue`, and start's
"already running" check (the wire format is command_socket.py).

An abstract socket name belongs to whoever binds it first, and any user may
bind a stopped container's name and answer as its monitor.  So the client
believes only what it can check itself:

* the process at the other end (SO_PEERCRED) must be root or the caller's
  own user, as a monitor is; anyone else's answers are never read
  (NotAMonitor);
* a pidfd handed back for init is signalled only if it is a process in the
  container's ``lxc.payload.NAME`` cgroup (`init_pidfd`), and the signal
  that halts init is read from the container's config by the caller
  (`lxcsm stop`), never asked of the other end;
* a monitor's EPERM is "you may not" (Refused), not "not running".
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

from lxcsm.engine.protocol.command_socket import HEADER, REGISTERED, STATE_MSG, Cmd, LxcState, socket_name


class MonitorError(Exception):
    """The other end of the container's socket cannot be talked to; str() is the one line to show."""


class NotAMonitor(MonitorError):
    """The container's socket name is held by a process that is not its monitor."""

    def __init__(self, lxcpath: str, name: str, pid: int, uid: int | None,
                 what: str = "not by an lxcsm or LXC monitor") -> None:
        self.pid, self.uid = pid, uid
        super().__init__(f"{address(lxcpath, name)} is held by {_who(pid, uid)}, {what}")


class Refused(MonitorError):
    """The monitor answered EPERM: it takes commands from root and its own user only."""

    def __init__(self, name: str, pid: int, uid: int) -> None:
        super().__init__(f"permission denied: the monitor of {name} is {_who(pid, uid)} and refuses commands"
                         f" from uid {os.geteuid()} (run as root)")


def _who(pid: int, uid: int | None) -> str:
    process = f"pid {pid}" if pid > 0 else "a process outside this pid namespace"
    return f"{process} (uid {uid})" if uid is not None else process


def address(lxcpath: str, name: str) -> str:
    """The socket's name as ss and /proc/net/unix show it: @LXCPATH/NAME/command."""
    return "@" + socket_name(lxcpath, name)[1:].decode(errors="replace")


def trusted(uid: int) -> bool:
    """Could a process of this user be the monitor we may believe?  Root's, or our own."""
    return uid in (0, os.geteuid())


def _peer(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def _connect(lxcpath: str, name: str) -> tuple[socket.socket, tuple[int, int]] | None:
    """A connection to the monitor and its (pid, uid); None when nobody listens on the name."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_name(lxcpath, name))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None
    peer = _peer(sock)
    if not trusted(peer[1]):
        sock.close()
        raise NotAMonitor(lxcpath, name, *peer)
    return sock, peer


class Reply:
    """A command's answer.  A plain class, not a dataclass: `lxcsm stop` imports this module
    and nothing heavier, and dataclasses costs ~15 ms to import (it brings inspect)."""

    __slots__ = ("ret", "value", "data", "fds", "conn", "monitor", "peer")

    def __init__(self, ret: int | None, value: int = 0, data: bytes = b"", fds: list[int] | None = None,
                 conn: socket.socket | None = None, monitor: int = -1, peer: tuple[int, int] = (0, 0)) -> None:
        self.ret = ret            # None: the monitor closed the connection without replying
        self.value = value        # the inline value (a pid, a state)
        self.data = data
        self.fds = fds or []
        self.conn = conn          # kept open when asked to
        self.monitor = monitor    # with a kept connection: a pidfd for the monitor process
        self.peer = peer          # (pid, uid) of the monitor, from SO_PEERCRED


def _monitor_pidfd(pid: int) -> int:
    """A pidfd for the process at the other end, taken while it is surely alive (connected)."""
    if pid <= 0 or pid == os.getpid():
        return -1   # outside our pid namespace, or a server in this very process (the unit tests)
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


def _send_with_credentials(sock: socket.socket, request: bytes) -> None:
    """The request, its first bytes with our credentials attached (SCM_CREDENTIALS), as LXC's
    own clients send it.  Without them, a request that reaches lxc-start's monitor before it
    has set SO_PASSCRED on the accepted connection carries the overflow ids instead of ours,
    and LXC refuses it with -EPERM ("Message denied for '65534/65534'")."""
    credentials = struct.pack("iII", os.getpid(), os.getuid(), os.getgid())
    sent = sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)])
    if sent < len(request):
        sock.sendall(request[sent:])


def call(lxcpath: str, name: str, cmd: Cmd, payload: bytes = b"", keep: bool = False,
         inline: int = 0) -> Reply | None:
    """Send one command (with `inline`, the request's own data field) and read its reply;
    None when the container is not running.  NotAMonitor when another user holds the name."""
    connected = _connect(lxcpath, name)
    if connected is None:
        return None
    sock, peer = connected
    monitor = _monitor_pidfd(peer[0]) if keep else -1
    try:
        _send_with_credentials(sock, HEADER.pack(cmd, len(payload), inline) + payload)
        header, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 1)
        if len(header) < HEADER.size:
            sock.close()
            return Reply(ret=None, monitor=monitor, peer=peer)
        ret, datalen, value = HEADER.unpack(header)
        data = b""
        while len(data) < datalen:   # CONSOLE_LOG's answer may be larger than one read
            chunk = sock.recv(datalen - len(data))
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        sock.close()
        return None
    if not keep:
        sock.close()
    return Reply(ret, value, data, fds, sock if keep else None, monitor, peer)


def get_state(lxcpath: str, name: str) -> LxcState:
    """The container's state; STOPPED when nobody listens on its name.

    Refused when the monitor will not say (EPERM); NotAMonitor when whoever
    holds the name is not a monitor or answers with no state at all.
    """
    reply = call(lxcpath, name, Cmd.GET_STATE)
    if reply is None or reply.ret is None:
        return LxcState.STOPPED   # nobody there, or gone before it answered (LXC's reading too)
    if reply.ret == -errno.EPERM:
        raise Refused(name, *reply.peer)
    try:
        if reply.ret == 0:
            return LxcState(reply.value)
    except ValueError:
        pass
    raise NotAMonitor(lxcpath, name, *reply.peer, f"which answers GET_STATE with {reply.ret}/{reply.value},"
                      " not a state")


# What a start that could not bind the name learns from `holder`.
RUNS = "runs"                     # the container's monitor holds it: "already running"
NOT_A_MONITOR = "not a monitor"   # another user's process, one answering nonsense, or a monitor refusing us
UNCLEAR = "unclear"               # a monitor between bind and listen, or on its way out, or gone: bind again


def holder(lxcpath: str, name: str) -> tuple[str, str]:
    """Who holds the container's name that a start could not bind: (RUNS|NOT_A_MONITOR|UNCLEAR, who).

    A holder that listens says who it is through SO_PEERCRED and answers
    GET_STATE; one that only bound the name is found through /proc.  A
    monitor is unclear for a moment twice: after binding and before
    listening, and after STOPPED before it exits.  `who` is the line to show
    if it stays so.
    """
    try:
        state = get_state(lxcpath, name)
    except MonitorError as err:
        return NOT_A_MONITOR, str(err)
    if state != LxcState.STOPPED:
        return RUNS, "container is already running"
    found = _bound_by(socket_name(lxcpath, name))
    if found is None:
        return UNCLEAR, f"{address(lxcpath, name)} is held by a process that could not be found"
    pid, uid = found
    if not trusted(uid):
        return NOT_A_MONITOR, str(NotAMonitor(lxcpath, name, pid, uid))
    return UNCLEAR, str(NotAMonitor(lxcpath, name, pid, uid, "which does not answer as a running monitor"))


def _bound_by(name: bytes) -> tuple[int, int] | None:
    """(pid, uid) of a process holding the bound (not connected) socket of this abstract name.

    The uid is the socket's own: the kernel gives a socket's inode the user
    that made it.
    """
    shown = "@" + name[1:].decode(errors="replace").replace("\0", "@")
    inodes = set()
    try:
        with open("/proc/net/unix") as table:
            next(table)
            for line in table:
                # Num RefCount Protocol Flags Type St Inode Path; St 01 is unconnected (bound or listening)
                fields = line.rstrip("\n").split(None, 7)
                if len(fields) == 8 and fields[7] == shown and fields[5] == "01":
                    inodes.add(f"socket:[{fields[6]}]")
    except OSError:
        return None
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    return int(entry), os.stat(f"/proc/{entry}/fd/{fd}").st_uid
        except OSError:
            continue   # gone, or not ours to look into
    return None


def init_pidfd(lxcpath: str, name: str) -> int | None:
    """A pidfd for the container's init, checked to be one: None if the container is gone,
    -1 if the monitor has none to give (init not spawned yet).

    NotAMonitor if what comes back is a process outside the container's
    payload cgroup: that is not signalled, whatever holds the name.
    """
    reply = call(lxcpath, name, Cmd.GET_INIT_PIDFD)
    if reply is None or reply.ret is None:
        return None
    if reply.ret == -errno.EPERM:
        raise Refused(name, *reply.peer)
    if reply.ret != 0 or not reply.fds:
        for fd in reply.fds:
            os.close(fd)
        return -1
    pidfd = reply.fds[0]
    for fd in reply.fds[1:]:
        os.close(fd)
    # Signalled through the pidfd, never by number: while its process lives, the number read
    # here is that process's; once it has exited, a signal to the pidfd reaches no one.
    pid = pidfd_pid(pidfd)
    if pid == EXITED or (pid is not None and pid > 0 and in_payload_cgroup(pid, name)):
        return pidfd
    os.close(pidfd)
    what = ("not a pidfd" if pid is None else "a process outside this pid namespace" if pid == 0
            else f"pid {pid}, a process outside lxc.payload.{name}")
    raise NotAMonitor(lxcpath, name, *reply.peer, f"which hands back {what} as init: not signalling it")


EXITED = -1   # what a pidfd's fdinfo says once its process has exited


def pidfd_pid(fd: int) -> int | None:
    """The pid a pidfd refers to as this process sees it: EXITED once it has exited, 0 if it
    is outside our pid namespace, None if fd is not a pidfd at all."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def in_payload_cgroup(pid: int, name: str) -> bool:
    """Is the process in the container's ``lxc.payload.NAME`` cgroup (or below it) in some hierarchy?

    Only root can move a process there: a squatter cannot put its victim in.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as cgroups:
            return payload_cgroup_in(cgroups.read(), name)
    except OSError:
        return False


def payload_cgroup_in(proc_cgroup: str, name: str) -> bool:
    """Does a /proc/PID/cgroup text (ID:CONTROLLERS:PATH lines) have lxc.payload.NAME in a path?"""
    wanted = f"lxc.payload.{name}"
    return any(wanted in line.split(":", 2)[-1].split("/") for line in proc_cgroup.splitlines())


def wait_closed(waiter: Reply, timeout: float | None) -> bool:
    """Wait until the monitor closes a kept connection (or sends its one state message)."""
    conn = waiter.conn
    assert conn is not None   # a waiter is a kept connection (state_waiter)
    with conn:
        if not select.select([conn], [], [], timeout)[0]:
            return False
        try:
            conn.recv(STATE_MSG.size)
        except ConnectionResetError:
            pass   # closed with our request unread (a monitor that died): closed all the same
    monitor_exited(waiter)
    return True


def state_waiter(lxcpath: str, name: str, state: LxcState, next_time: bool = False) -> Reply | None:
    """ADD_STATE_CLIENT for one state; None if the container is already in it or gone.

    With `next_time`, the container being in that state now does not count:
    the waiter hears of the next time it enters it (LXC's "2" in the request,
    which lxc-stop -r uses to see a running container come back).
    """
    wanted = [0] * 8
    wanted[state] = 2 if next_time else 1
    reply = call(lxcpath, name, Cmd.ADD_STATE_CLIENT, struct.pack("<8i", *wanted), keep=True)
    if reply is None or reply.conn is None:
        return None
    if reply.value != REGISTERED:
        reply.conn.close()
        monitor_exited(reply, timeout=0)
        return None
    return reply


def wait_state(waiter: Reply, timeout: float | None) -> LxcState | None:
    """The state a kept ADD_STATE_CLIENT connection reports, waiting up to `timeout` seconds
    (None: forever); None if nothing came by then.  A connection closed without a message
    is STOPPED: the monitor closes its clients' connections when it is done."""
    conn = waiter.conn
    assert conn is not None   # a waiter is a kept connection (state_waiter)
    with conn:
        if not select.select([conn], [], [], timeout)[0]:
            return None
        try:
            message = conn.recv(STATE_MSG.size, socket.MSG_WAITALL)
        except ConnectionResetError:
            message = b""
    if len(message) < STATE_MSG.size:
        return LxcState.STOPPED
    try:
        return LxcState(STATE_MSG.unpack(message)[2])
    except ValueError:
        return None


def stop(lxcpath: str, name: str) -> bool:
    """STOP: the monitor sends lxc.signal.stop and closes the connection once STOPPED.

    True when the container is stopped (end-of-file, or nobody listening) and
    its monitor has exited; any reply at all means the monitor could not
    signal init (Refused: it would not).
    """
    reply = call(lxcpath, name, Cmd.STOP, keep=True)
    if reply is None:
        return True
    if reply.conn is not None:
        reply.conn.close()
    if reply.ret is not None:
        monitor_exited(reply, timeout=0)
        if reply.ret == -errno.EPERM:
            raise Refused(name, *reply.peer)
        return False
    monitor_exited(reply)
    return True
