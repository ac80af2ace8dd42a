"""The monitor's end of the command socket (the wire format is command_socket.py).

Binding the name is also how a second start of the same container learns it
is already running.

Serving never waits for a client.  The listening socket and every
connection are non-blocking and share one selector, whose fd the monitor
polls (fileno()); serve_ready() does whatever is ready and returns.  A
connection is:

* accepted, and its peer's credentials taken at once (SO_PEERCRED: who
  called connect(2)), before a byte of it is read;
* pending until its whole request - the 16-byte header, then datalen bytes -
  has arrived, in however many pieces.  It has REQUEST_DEADLINE seconds from
  its accept for that, then it is closed unanswered.  timeout() says when
  the next deadline falls: the longest the monitor may poll before calling
  serve_ready() again;
* answered, and closed - or kept, as LXC keeps them: a state client
  (ADD_STATE_CLIENT), a STOP waiting for the end, an lxc-console's tty.
  An answer larger than the socket takes at once (CONSOLE_LOG's, up to
  lxc.console.buffer.size) is sent as the client reads it, each piece
  within REQUEST_DEADLINE of the last, else the connection is closed.

Pending connections are capped, so that silent connections cannot pile up:
MAX_PENDING_PER_UID from any one unprivileged uid - its next connection is
closed as soon as it is accepted, the cheapest way to say no to a flood -
and MAX_PENDING in all, where a new connection closes the oldest pending
unprivileged one, and the oldest privileged one only when no unprivileged
connection is pending.  So a flood by unprivileged users closes only their
own connections, and root's are answered within a wakeup or two: each
serve_ready() accepts up to ACCEPTS_PER_WAKEUP connections, more than the
listen backlog holds.

Who may do what is LXC's rule (af_unix.c, lxc_abstract_unix_rcv_credential,
which commands.c applies to every command alike; no command checks more): a
peer is privileged if it is root or has the monitor's own uid and gid.  A
privileged peer may send every command.  Anyone else has every command
refused with ret = -EPERM, once its request has been read - also the state
queries: LXC answers GET_STATE and GET_INIT_PID to nobody else either, and
its tools rely on that (a refused GET_INIT_PID is their "Insufficient
privileges to control NAME").  Being refused is all an unprivileged peer
ever gets, so it never holds a kept connection.

The monitor answers GET_INIT_PID, GET_INIT_PIDFD, GET_STATE,
GET_CLONE_FLAGS, GET_CONFIG_ITEM, GET_NAME, GET_LXCPATH, GET_TTY_FD (below), STOP,
ADD_STATE_CLIENT, the cgroup commands - GET_CGROUP_CTX (lxc-attach moves its
process into the fds it gets), GET_CGROUP_FD and GET_LIMIT_CGROUP_FD
(lxc-info's, lxc-top's, lxc-ls's statistics and lxc-cgroup's reads and
writes, all done by the client in the directory it gets), GET_CGROUP and
GET_LIMIT_CGROUP (their path fallbacks, and lxc-freeze's freezer on v1) and
GET_CGROUP2_FD / GET_LIMIT_CGROUP2_FD (a cgroup2-only host's) - plus
CONSOLE_LOG (the console's latest output, from the ring buffer of
lxc.console.buffer.size, as LXC's lxc_cmd_console_log_callback: -EFAULT
without a buffer, -ENODATA when asked to read an empty one, else at most
read_max bytes (0: all), taken out of the buffer - or the whole buffer
emptied, with clear), lxcsm's own CONTINUE (its value: how many pauses the start has had) and
START_STATUS (start_status.py's snapshot, as JSON); every other command is
answered -ENOSYS, which LXC's clients handle.  The monitor serves them from
its sync waits and while it runs a hook too, so a start is watched as it goes.

GET_TTY_FD is lxc-console's, one client per terminal, as LXC allocates
them (lxc_terminal_allocate): for tty N (-1: the first free one) the tty's
master itself; for the console (0) the master of a proxy pty the monitor
relays to the console (console_peers, made by poll: LXC's
lxc_terminal_peer_proxy_alloc), so the monitor goes on reading the
console, into its log and ring buffer.  The console has one peer at a
time: while a client is attached, or the console is relayed to a
terminal (lxc-start -F, -c), tty 0 is refused with -EBADF, as LXC
refuses it; before poll too (LXC's monitor answers no command then).  When the client's connection ends its tty is
free again, and for the console its proxy pty is closed.

Freezing is the client's work too, as LXC 5 does it: lxc-freeze writes
freezer.state (v1) or cgroup.freeze (cgroup2) itself and tells the monitor
with SERVE_STATE_CLIENTS - FREEZING, then FROZEN (RUNNING if it failed);
lxc-unfreeze THAWED, then RUNNING.  The monitor takes that as its state
(THAWED is stored as RUNNING), so GET_STATE says FROZEN and lxc-wait -s
FROZEN returns, and tells its state clients; lxc-monitor hears of it from
the tool itself.  FREEZE and UNFREEZE (the monitor freezes; no 5.0.2 tool
sends them) work on a cgroup2-only host only, as LXC's: they write
cgroup.freeze and answer once cgroup.events says it is done - or when the
request's timeout (milliseconds, -1: none) is up, successfully, as LXC's
do.  STOP thaws after it signals, so that a frozen init can die.

Every state the monitor enters itself (set_state) is also announced to
lxc-monitor (monitor_fifo.py); a failed announcement is logged once.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import struct
import time

from lxcsm.engine.protocol import monitor_fifo
from lxcsm.engine.protocol.cgroup_commands import CgroupCommands
from lxcsm.engine.protocol.command_socket import (
    CONSOLE_LOG_REQUEST,
    HEADER,
    MAX_PAYLOAD,
    REGISTERED,
    STATE_MSG,
    Cmd,
    LxcState,
    socket_name,
)
from lxcsm.engine.protocol.start_status import StartStatus

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.linux.cgroups import Hierarchy

REQUEST_DEADLINE = 2.0      # seconds from accept to a complete request
MAX_PENDING = 64            # connections still sending their request, in all
MAX_PENDING_PER_UID = 8     # ... from one unprivileged uid
ACCEPTS_PER_WAKEUP = 128    # more than the listen backlog (100): one wakeup empties it


class AlreadyRunning(Exception):
    def __str__(self) -> str:
        return "container is already running"


def bind(lxcpath: str, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        sock.bind(socket_name(lxcpath, name))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise AlreadyRunning() from None
        raise
    sock.listen(100)
    return sock


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as the kernel recorded them at connect(2)."""
    return struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))


class Pending:
    """A connection whose request has not fully arrived."""

    __slots__ = ("uid", "privileged", "deadline", "received")

    def __init__(self, uid: int, privileged: bool, deadline: float) -> None:
        self.uid = uid
        self.privileged = privileged
        self.deadline = deadline    # time.monotonic() by which the request must be complete
        self.received = b""         # the header and payload so far

    def missing(self) -> int:
        """How many bytes of the request are still to come (the header says how many follow it)."""
        if len(self.received) < HEADER.size:
            return HEADER.size - len(self.received)
        _cmd, datalen, _inline = HEADER.unpack_from(self.received)
        return HEADER.size + datalen - len(self.received)


class CommandServer(CgroupCommands):
    """The monitor's side.  Its fileno() is readable whenever a connection needs serving."""

    def __init__(self, sock: socket.socket, name: str, config, lxcpath: str | None = None, log=None) -> None:
        self.sock = sock
        self.name = name
        self.config = config
        self.lxcpath = lxcpath    # None: no announcements to lxc-monitor (a server in a unit test)
        self.log = log
        self.announce_failed = False   # logged once; later failures are the same one
        self.state = LxcState.STARTING
        self.init_pid = 0
        self.init_pidfd = -1
        self.clone_flags = 0
        # Config items only known while the container runs (a veth's host name): what LXC's
        # monitor answers get_running_config_item with, and lxc-info prints as "Link:".
        self.running_items: dict[str, str] = {}
        # The container's cgroup in each hierarchy, for this boot (spawn sets them): where
        # lxc-attach puts what it runs, and where lxc-info reads the statistics.
        self.cgroups: list[tuple[Hierarchy, str]] = []
        # The master sides of the container's terminals by tty number (0: /dev/console), and
        # the lxc-console client holding each.
        self.ttys: dict[int, int] = {}
        self.tty_users: dict[int, socket.socket] = {}
        # The console's peers while poll relays it (None before and after): attach() -> the
        # fd for an lxc-console -t 0 (a proxy pty's master), or -1 if the console has a peer
        # already; detach() once that client has left.
        self.console_peers = None
        self.devpts = -1   # the container's devpts, where lxc-attach allocates its pty
        # The console's output for CONSOLE_LOG: a terminal.RingBuffer each boot's init_handler
        # makes (with lxc.console.buffer.size) and poll fills, or None.
        self.console_buffer = None
        self.stop_signal = config.signal_stop
        self.request_deadline = REQUEST_DEADLINE
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, self._accept)
        self.pending: dict[socket.socket, Pending] = {}            # in the order they were accepted
        self.waiting_users: dict[int, int] = {}   # unprivileged uid -> its pending connections
        self.waiters: dict[socket.socket, list[int] | None] = {}   # kept connections -> states asked for
        # FREEZE/UNFREEZE waiting for cgroup.events: connection -> (cgroup, frozen wanted, deadline or None)
        self.freezing: dict[socket.socket, tuple[str, bool, float | None]] = {}
        # Answers the socket did not take at once: connection -> [what is left, deadline]
        self.sending: dict[socket.socket, list] = {}
        self.pausing = False              # a start paused at a breakpoint (engine/start/breakpoints.py)
        self.pause_decision: str | None = None   # what the user said: "continue" or "abort"
        self.start_status = StartStatus()   # fed the start's events by init_handler
        self.on_request = lambda cmd, uid: None   # each whole request, before it is served (poll traces it)

    def fileno(self) -> int:
        return self.selector.fileno()

    def new_ttys(self, ttys: dict[int, int], devpts: int = -1) -> None:
        """A boot's terminals and devpts (none before FDS): the previous boot's lxc-console
        clients are let go."""
        for conn in set(self.tty_users.values()):
            self._drop(conn)
        self.ttys = ttys
        self.devpts = devpts

    def _free_tty(self, asked: int) -> int | None:
        """The tty an lxc-console may have: tty N if it exists and is free, for -1 the first
        free one of 1..N; 0 is the console."""
        free = [n for n in sorted(self.ttys) if n not in self.tty_users]
        if asked == -1:
            return next((n for n in free if n > 0), None)
        return asked if asked in free else None

    def serve_ready(self) -> None:
        """Accept, read and answer what is ready, then close the connections whose time is up.
        Never waits; safe to call when nothing is ready."""
        for key, _events in self.selector.select(0):
            conn = key.fileobj   # a socket: the listening one or a connection
            if isinstance(conn, socket.socket) and conn.fileno() >= 0:   # not closed earlier this round
                key.data(conn)
        now = time.monotonic()
        for conn in [conn for conn, pending in self.pending.items() if pending.deadline <= now]:
            self._drop(conn)
        for conn in [conn for conn, (_rest, deadline) in self.sending.items() if deadline <= now]:
            self._drop(conn)
        self._answer_frozen(now)

    def timeout(self) -> float | None:
        """Seconds until serve_ready() must run again (the earliest pending connection's deadline,
        or the next look at a freezing cgroup); None when nothing is due."""
        due = [pending.deadline for pending in self.pending.values()]
        due += [deadline for _rest, deadline in self.sending.values()]
        if self.freezing:
            due.append(self._next_freeze_check())
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def set_state(self, state: LxcState, announce: bool = True) -> None:
        """Enter `state`, tell the clients that asked for it (one message each, then close)
        and, unless told not to, lxc-monitor."""
        self._serve_state_clients(state)
        if announce:
            self.announce(state)

    def announce(self, state: LxcState) -> None:
        """Tell lxc-monitor (lxc-monitord) that the container entered `state`."""
        if self.lxcpath is not None:
            self._announced(monitor_fifo.announce_state(self.lxcpath, self.name, state))

    def announce_exit(self, wait_status: int) -> None:
        """Tell lxc-monitor how init ended (its wait status), as LXC does once init is reaped."""
        if self.lxcpath is not None:
            self._announced(monitor_fifo.announce_exit_code(self.lxcpath, self.name, wait_status))

    def _announced(self, error: str | None) -> None:
        if error is not None and not self.announce_failed:
            self.announce_failed = True
            if self.log is not None:
                self.log.warn("cannot tell lxc-monitor the container's states", reason=error)

    def _serve_state_clients(self, state: int) -> None:
        """The state is `state` (THAWED: RUNNING again); the clients waiting for it hear of it."""
        self.state = LxcState.RUNNING if state == LxcState.THAWED else LxcState(state)
        for conn, states in list(self.waiters.items()):
            if states is not None and states[state]:
                try:
                    conn.send(STATE_MSG.pack(0, self.name.encode(), state))
                except OSError:
                    pass
                self._drop(conn)

    def close(self) -> None:
        """Stop listening, then close every connection: a kept one's client reads STOPPED."""
        self.selector.unregister(self.sock)
        self.sock.close()
        for conn in [*self.pending, *self.waiters, *self.freezing, *self.sending]:
            self._drop(conn)
        self.selector.close()

    def _drop(self, conn: socket.socket) -> None:
        for tty, user in list(self.tty_users.items()):
            if user is conn:   # an lxc-console left: its tty is free again
                del self.tty_users[tty]
                if tty == 0 and self.console_peers is not None:
                    self.console_peers.detach()   # its proxy pty closes: the next one may attach
        self.waiters.pop(conn, None)
        self.freezing.pop(conn, None)
        self.sending.pop(conn, None)
        if conn in self.pending:
            self._unpend(conn)
        if conn.fileno() >= 0:
            try:
                self.selector.unregister(conn)
            except KeyError:
                pass   # already answered, not kept
            conn.close()

    def _keep(self, conn: socket.socket, states: list[int] | None) -> None:
        self.waiters[conn] = states
        self.selector.register(conn, selectors.EVENT_READ, self._drop)   # EOF: the client left

    def _accept(self, _sock) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self.sock.accept()
            except OSError:   # EAGAIN: the backlog is empty (anything else: the next wakeup retries)
                return
            try:
                _pid, uid, gid = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            privileged = uid == 0 or (uid, gid) == (os.getuid(), os.getgid())
            if not privileged and self.waiting_users.get(uid, 0) >= MAX_PENDING_PER_UID:
                conn.close()   # this user has enough connections waiting already: the cheapest no
                continue
            if len(self.pending) >= MAX_PENDING:
                unprivileged = (conn for conn, p in self.pending.items() if not p.privileged)
                self._drop(next(unprivileged, next(iter(self.pending))))
            conn.setblocking(False)
            self.pending[conn] = Pending(uid, privileged, time.monotonic() + self.request_deadline)
            if not privileged:
                self.waiting_users[uid] = self.waiting_users.get(uid, 0) + 1
            self.selector.register(conn, selectors.EVENT_READ, self._read)

    def _unpend(self, conn: socket.socket) -> None:
        pending = self.pending.pop(conn)
        if not pending.privileged:
            self.waiting_users[pending.uid] -= 1
            if not self.waiting_users[pending.uid]:
                del self.waiting_users[pending.uid]

    def _read(self, conn: socket.socket) -> None:
        pending = self.pending[conn]
        while missing := pending.missing():
            try:
                chunk = conn.recv(missing)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:   # the client left before its request was complete: nothing to answer
                self._drop(conn)
                return
            pending.received += chunk
            if len(pending.received) == HEADER.size:
                _cmd, datalen, _inline = HEADER.unpack(pending.received)
                if not 0 <= datalen <= MAX_PAYLOAD:   # LXC closes on these without a reply
                    self._drop(conn)
                    return
        self._unpend(conn)
        self.selector.unregister(conn)
        cmd, _datalen, inline = HEADER.unpack_from(pending.received)
        self.on_request(cmd, pending.uid)
        if pending.privileged:
            self._serve(conn, cmd, inline, pending.received[HEADER.size:])
        else:
            self._reply(conn, -errno.EPERM)

    def _reply(self, conn, ret: int, value: int = 0, payload: bytes = b"", fds=(), keep=False, states=None) -> None:
        """Send one answer, then close the connection or keep it.  An answer with fds, or one
        kept, is a few hundred bytes at most: a fresh connection's socket buffer takes it
        whole.  What a larger one leaves is sent as the client reads it (_send_rest)."""
        message = HEADER.pack(ret, len(payload), value) + payload
        try:
            sent = socket.send_fds(conn, [message], list(fds))
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = -1
        if keep and sent == len(message):
            self._keep(conn, states)
        elif not keep and not fds and 0 <= sent < len(message):
            self.sending[conn] = [message[sent:], time.monotonic() + self.request_deadline]
            self.selector.register(conn, selectors.EVENT_WRITE, self._send_rest)
        else:
            self._drop(conn)

    def _send_rest(self, conn: socket.socket) -> None:
        rest = self.sending[conn]
        try:
            sent = conn.send(rest[0])
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        rest[0] = rest[0][sent:]
        rest[1] = time.monotonic() + self.request_deadline
        if not rest[0]:
            self._drop(conn)

    def _serve(self, conn, cmd: int, inline: int, payload: bytes) -> None:
        if cmd == Cmd.GET_TTY_FD:
            tty = self._free_tty(inline)
            master = -1
            if tty == 0 and self.console_peers is not None:
                master = self.console_peers.attach()
            elif tty is not None and tty > 0:
                master = self.ttys[tty]
            if tty is None or master < 0:
                self._reply(conn, -errno.EBADF)   # lxc-console: "Denied access to tty"
            else:
                self.tty_users[tty] = conn
                self._reply(conn, 0, tty, fds=[master], keep=True)
        elif cmd == Cmd.GET_DEVPTS_FD:
            if self.devpts >= 0:
                self._reply(conn, 0, fds=[self.devpts])
            else:
                self._reply(conn, -errno.EBADF)
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
        elif cmd == Cmd.GET_NAME:
            self._reply(conn, 0, payload=self.name.encode() + b"\0")
        elif cmd == Cmd.GET_LXCPATH and self.lxcpath is not None:
            self._reply(conn, 0, payload=self.lxcpath.encode() + b"\0")
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
        elif cmd == Cmd.CONSOLE_LOG:
            self._console_log(conn, payload)
        elif cmd == Cmd.CONTINUE:
            if self.pausing:
                self.pause_decision = "continue"
                self._reply(conn, 0, self.start_status.pauses)
            else:
                self._reply(conn, -errno.EINVAL)
        elif cmd == Cmd.START_STATUS:
            self._reply(conn, 0, payload=self.start_status.encode(self.state.name))
        elif cmd == Cmd.STOP and self.pausing:
            self.pause_decision = "abort"
            self._keep(conn, None)   # closed once the abort has cleaned up: the client reads success
        elif cmd == Cmd.STOP:
            try:
                signal.pidfd_send_signal(self.init_pidfd, self.stop_signal)
            except OSError as err:
                self._reply(conn, -(err.errno or errno.EIO))
                return
            self._keep(conn, None)   # no reply: the client waits for end-of-file
            self._thaw()
        elif cmd == Cmd.ADD_STATE_CLIENT:
            if len(payload) != 32:
                self._reply(conn, -errno.EINVAL)
                return
            states = list(struct.unpack("<8i", payload))
            if states[self.state] == 1:
                self._reply(conn, self.state, self.state)
            else:
                self._reply(conn, REGISTERED, REGISTERED, keep=True, states=states)
        elif cmd == Cmd.SERVE_STATE_CLIENTS:
            state = _int32(inline)
            if not 0 <= state < len(LxcState):
                self._reply(conn, -errno.EINVAL)
            else:
                self._serve_state_clients(state)
                self._reply(conn, 0)
        elif cmd in (Cmd.FREEZE, Cmd.UNFREEZE):
            self._freeze(conn, cmd == Cmd.FREEZE, _int32(inline))
        elif cmd == Cmd.GET_CGROUP_CTX:
            self._cgroup_ctx(conn, payload)
        elif cmd in (Cmd.GET_CGROUP_FD, Cmd.GET_LIMIT_CGROUP_FD):
            self._cgroup_fd(conn, payload, limit=cmd == Cmd.GET_LIMIT_CGROUP_FD)
        elif cmd in (Cmd.GET_CGROUP, Cmd.GET_LIMIT_CGROUP):
            self._cgroup_path(conn, payload, limit=cmd == Cmd.GET_LIMIT_CGROUP)
        elif cmd in (Cmd.GET_CGROUP2_FD, Cmd.GET_LIMIT_CGROUP2_FD):
            unified = self._unified()
            if unified is None:
                self._reply(conn, -errno.EINVAL)   # as LXC: only on a cgroup2-only host
            else:
                path = self._limit(unified) if cmd == Cmd.GET_LIMIT_CGROUP2_FD else unified
                self._reply_with_dirs(conn, [path], lambda fds: b"")
        else:
            self._reply(conn, -errno.ENOSYS)


    def _console_log(self, conn, payload: bytes) -> None:
        """CONSOLE_LOG, as LXC's lxc_cmd_console_log_callback answers it (see the header)."""
        ring = self.console_buffer
        if ring is None:
            self._reply(conn, -errno.EFAULT)   # LXC's answer without lxc.console.buffer.size
            return
        if len(payload) != CONSOLE_LOG_REQUEST.size:
            self._reply(conn, -errno.EINVAL)
            return
        clear, read, read_max, write_logfile = CONSOLE_LOG_REQUEST.unpack(payload)
        if read and not len(ring):
            self._reply(conn, -errno.ENODATA)
            return
        count = len(ring) if read or write_logfile else 0
        if 0 < read_max <= count:
            count = read_max
        taken = ring.take(count)
        if clear:
            ring.clear()
        # write_logfile alone: LXC takes the bytes out too, then fails to send them; no LXC
        # client asks for it.  Here the answer carries nothing.
        self._reply(conn, 0, payload=taken if read else b"")


def _int32(inline: int) -> int:
    """A request's inline value as the int the client put there (LXC casts through intptr_t)."""
    value = inline & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
