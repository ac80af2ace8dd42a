"""poll (monitor) - supervise init until it exits.

Replaces LXC's lxc_poll() and its mainloop handlers (signal_handler,
lxc_cmd_handler) in start.c, the console's in terminal.c:
lxc_terminal_ptx_io_handler(), lxc_terminal_peer_io_handler() and
lxc_terminal_peer_proxy_alloc(), and seccomp.c's lxc_seccomp_setup_proxy()
and seccomp_notify_handler().

The monitor waits on five things at once: init's pidfd (readable when init
exits), the signalfd of init_handler (every watched signal but SIGCHLD is
forwarded to init, as LXC forwards it), the command socket (answered
only now, so a client never sees a half-started container), the
container's console, and the console's peer, if it has one.  The console
is drained into lxc.console.logfile, within lxc.console.size (truncated,
or rotated with lxc.console.rotate, as LXC does), kept in the ring buffer
of lxc.console.buffer.size (CONSOLE_LOG reads it) and relayed to its peer,
whose input goes to the console - as LXC's lxc_terminal_ptx_io_handler and
lxc_terminal_peer_io_handler do.  The
peer is one at a time: a terminal for the whole boot (below), or the
proxy pty of an lxc-console -t 0 (LXC's lxc_terminal_peer_proxy_alloc):
GET_TTY_FD 0 makes a pty of the host's, the client gets its master, the
monitor relays between the console and the pty's other end, and when the
client's connection ends the pty is closed and the next lxc-console may
attach.  Its window size reaches the console with the client's next
input.  Output the client does not take yet waits, and the console is not
read meanwhile (the container's writes there wait, as under LXC, whose
write blocks; the monitor itself never waits on a client).  When init has ended, what
nobody has read from that buffer replaces the log's content, as LXC's
lxc_terminal_write_ringbuffer() does at the end of a boot: the log is
truncated, then gets that output, within lxc.console.size - with no size
set, that is nothing, so the log is left empty, as LXC 5.0.2 leaves it.  A
console log that cannot be written (its disk is full)
loses that output, and says so once, at WARN: as under LXC, the container
runs on.  A foreground start from a terminal (lxc-start -F) relays that
terminal, in raw mode, to the console, as does any start whose
lxc.console.path names a terminal (lxc-start -c) - the console's output goes to it as
well - and restores it when init ends; its window size follows SIGWINCH.
The console then belongs to that terminal: lxc-console -t 0 is refused, as
LXC refuses a second peer, and as it refuses a second lxc-console -t 0.

With lxc.seccomp.notify.proxy and a policy with notify rules, the monitor
first connects to the proxy - one that is not there fails the start, which
kills init, as LXC's lxc_poll() fails - and then waits on the seccomp
listener (sync_fds) as well: each notified syscall is forwarded to the proxy
and answered with its reply (engine/protocol/seccomp_notify.py), until no
task is left under the filter.  The connection is closed when init ends;
the listener with the rest of the boot's fds.

How init ended is the trigger: killed by SIGHUP means reboot(2) was called
with RB_AUTOBOOT inside the pid namespace, SIGINT means halt or power-off,
anything else is an ordinary exit.

Each command served, each signal forwarded and init's end are TRACE events;
at init's end, before stopping removes the container's cgroup, the limits it
hit are read from it (pids.events, memory.events, and cgroup v1's
memory.oom_control) and recorded, so `lxcsm explain-failure` can tell a fork
bomb or the OOM killer from an ordinary exit.
"""

import os
import select
import signal
import stat

from lxcsm.engine import log as logmod
from lxcsm.engine.errors import describe
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.command_socket import Cmd

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.linux.terminal import ConsoleProxy, ProxyPty

# The counters that say a limit was hit, by file: (cgroup v2 or v1) file -> its keys that count.
LIMIT_COUNTERS = {"pids.events": ("max",), "memory.events": ("max", "oom", "oom_kill"),
                  "memory.oom_control": ("oom_kill",)}


def enter(ctx) -> str:
    boot = ctx.boot
    poller = select.poll()
    for fd in (boot.init_pidfd, ctx.signal_fd, ctx.command_server.fileno()):
        poller.register(fd, select.POLLIN)
    console = ctx.command_server.ttys.get(0, -1)
    console_log = ConsoleLog(ctx)
    relay = _seccomp_relay(ctx)
    peers = None
    try:   # from here on the relay is closed whatever fails, the console's peers too
        if relay is not None:
            poller.register(relay.listener.fd, select.POLLIN)
        peers = ConsolePeers(ctx, console, poller) if console >= 0 else None
        ctx.command_server.console_peers = peers
        return _supervise(ctx, poller, console, console_log, peers, relay)
    finally:
        ctx.command_server.console_peers = None
        if peers is not None:
            peers.close()
        if relay is not None:
            relay.close()


def _seccomp_relay(ctx):
    """The connection to lxc.seccomp.notify.proxy for the filter's listener; None without
    notify rules or a proxy (LXC's condition).  OSError if the proxy is not there."""
    seccomp = ctx.seccomp
    address = ctx.request.config.get_item("lxc.seccomp.notify.proxy")
    if seccomp is None or seccomp.listener < 0 or not address:
        return None
    from lxcsm.engine.linux.seccomp import Listener
    from lxcsm.engine.protocol import seccomp_notify
    relay = seccomp_notify.ProxyRelay(Listener(seccomp.listener), address,
                                      ctx.request.config.get_item("lxc.seccomp.notify.cookie"),
                                      ctx.boot.init_pid, ctx.log)
    ctx.log.trace("seccomp proxy connected", proxy=address, listener=seccomp.listener)
    return relay


class ConsolePeers:
    """Who the console is relayed to, one at a time, as LXC's console has one peer: the
    terminal of lxc-start -F or -c for the whole boot (sync_fds opened it), or else the
    proxy pty of the lxc-console -t 0 attached just now (the command server attaches and
    detaches it: GET_TTY_FD 0, the client's connection ending)."""

    def __init__(self, ctx, console: int, poller) -> None:
        self.ctx, self.console, self.poller = ctx, console, poller
        self.peer: ConsoleProxy | ProxyPty | None = None
        if ctx.console_peer >= 0:
            from lxcsm.engine.linux import terminal
            self.peer = terminal.ConsoleProxy(ctx.console_peer, console)
            poller.register(ctx.console_peer, select.POLLIN)

    def attach(self) -> int:
        """A proxy pty for an lxc-console -t 0: its master, for the client; -1 if the console
        has a peer already (LXC's "Terminal already in use") or no pty can be had."""
        if self.peer is not None:
            return -1
        from lxcsm.engine.linux import terminal
        try:
            proxy = terminal.ProxyPty(self.console)
        except OSError as err:
            self.ctx.log.warn("no proxy pty for lxc-console", error=describe(err))
            return -1
        self.poller.register(proxy.user, select.POLLIN)
        self.peer = proxy
        self.ctx.log.trace("lxc-console attached", proxy_master=proxy.master, proxy=proxy.user)
        return proxy.master

    def detach(self) -> None:
        """The lxc-console has left: its proxy pty closes, the console is free again."""
        from lxcsm.engine.linux import terminal
        if isinstance(self.peer, terminal.ProxyPty):
            try:
                self.poller.unregister(self.peer.user)
            except KeyError:
                pass   # already dropped by _supervise when its end stopped taking input
            self.peer.close()
            self.peer = None
            self.ctx.log.trace("lxc-console detached")

    def backlogged(self) -> bool:
        """Whether the peer has yet to take console output (the console waits meanwhile; a
        terminal's writes block instead, as LXC's do)."""
        from lxcsm.engine.linux import terminal
        return isinstance(self.peer, terminal.ProxyPty) and bool(self.peer.backlog)

    def close(self) -> None:
        """At init's end: the terminal's settings restored, a proxy pty closed."""
        from lxcsm.engine.linux import terminal
        if isinstance(self.peer, terminal.ConsoleProxy):
            self.peer.restore()
        self.detach()


def _supervise(ctx, poller, console: int, console_log, peers, relay) -> str:
    boot = ctx.boot
    ctx.command_server.on_request = lambda cmd, uid: ctx.log.trace(
        "command served", command=Cmd(cmd).name if cmd in Cmd._value2member_map_ else cmd, uid=uid)
    draining = False
    while True:
        logmod.flight_recorder.flush()   # what the last wakeup recorded, before waiting again
        # The console is drained, into the log, the ring buffer and its peer, except while
        # that peer (an lxc-console's proxy pty) has yet to take what it was given.
        held = peers is not None and peers.backlogged()
        if console >= 0 and draining == held:
            if held:
                poller.unregister(console)
                ctx.log.trace("console held up by its peer", waiting=len(peers.peer.backlog))
            else:
                poller.register(console, select.POLLIN)
            draining = not held
        # Woken by the command socket, or by its next deadline: a connection silent too long.
        deadline = ctx.command_server.timeout()
        events = poller.poll(None if deadline is None else deadline * 1000)
        if not events:
            ctx.command_server.serve_ready()
        for fd, revents in events:
            peer = None if peers is None else peers.peer
            if relay is not None and fd == relay.listener.fd:
                if not relay.handle(hung_up=bool(revents & (select.POLLHUP | select.POLLERR))):
                    poller.unregister(fd)
                continue
            if fd == console:
                shown = console_log.drain(console)
                if peer is not None:
                    peer.show(shown)
                    if peers.backlogged():
                        poller.modify(peer.user, select.POLLIN | select.POLLOUT)
                continue
            if peer is not None and fd == peer.user:
                if revents & select.POLLOUT:
                    peer.flush()
                    if not peers.backlogged():
                        poller.modify(fd, select.POLLIN)
                if revents & (select.POLLIN | select.POLLHUP | select.POLLERR) and not peer.typed():
                    poller.unregister(fd)   # the terminal is gone: the container runs on
                continue
            if fd == ctx.signal_fd:
                signo, sender = kernel.read_signalfd(fd)
                if signo == signal.SIGWINCH and peer is not None and peer.user == ctx.console_peer:
                    peer.resize()   # lxc-start -F's terminal changed its size
                if signo != signal.SIGCHLD:
                    ctx.log.trace("forwarding signal", signal=signal.Signals(signo).name, sender=sender)
                    try:
                        signal.pidfd_send_signal(boot.init_pidfd, signo)
                    except ProcessLookupError:
                        pass   # init is exiting; its pidfd is about to say so
            elif fd == boot.init_pidfd:
                _pid, status = os.waitpid(boot.init_pid, 0)
                boot.init_status = status
                ctx.command_server.on_request = lambda cmd, uid: None
                _record_limits_hit(ctx)
                # Init's last words (poweroff's), still in the console: to the log and the relayed
                # terminal, as LXC's monitor drains the console once more after init's end.
                while draining and select.select([console], [], [], 0)[0] and (shown := console_log.drain(console)):
                    if peers is not None and peers.peer is not None:
                        peers.peer.show(shown)
                console_log.write_unread()
                return _why_init_ended(ctx, status)
            else:
                ctx.command_server.serve_ready()


class ConsoleLog:
    """What the container writes to its console, into lxc.console.logfile (if there is one),
    kept within lxc.console.size as LXC keeps it (lxc_terminal_write_log_file): a log that
    would grow past it is truncated, or with lxc.console.rotate = 1 renamed to LOGFILE.1 and
    begun anew; a log that is no regular file gets nothing once a size is set."""

    def __init__(self, ctx) -> None:
        from lxcsm.engine.config.values import console_size
        self.ctx = ctx
        self.dropping = False   # said, until a write succeeds again
        config = ctx.request.config
        self.size = console_size(config.get_item("lxc.console.size"))
        self.rotate = config.get_item("lxc.console.rotate") == "1"

    def drain(self, console: int) -> bytes:
        """Read what the console has, keep and log it, and return it (b"" if nothing could be read)."""
        try:
            data = os.read(console, 65536)
        except OSError:   # EIO: nobody has the console open just now (EAGAIN: nothing to read)
            return b""
        ring = self.ctx.command_server.console_buffer
        if ring is not None:
            ring.write(data)
        if self.ctx.console_log >= 0:
            self._logged(self._write, data)
        return data

    def write_unread(self) -> None:
        """The ring buffer's unread output, within lxc.console.size, as the log's whole content."""
        ring = self.ctx.command_server.console_buffer
        if ring is not None and len(ring) and self.ctx.console_log >= 0:
            self._logged(self._replace, ring.data[:self.size])

    def _replace(self, data: bytes) -> None:
        os.ftruncate(self.ctx.console_log, 0)
        _write_all(self.ctx.console_log, data)

    def _logged(self, write, data: bytes) -> None:
        try:
            write(data)
            self.dropping = False
        except OSError as err:
            if not self.dropping:
                self.dropping = True
                self.ctx.log.warn("console output dropped", error=describe(err),
                                  file=self.ctx.request.config.get_item("lxc.console.logfile"))

    def _write(self, data: bytes) -> None:
        log = self.ctx.console_log
        if self.size:
            status = os.fstat(log)
            if not stat.S_ISREG(status.st_mode):
                return   # LXC neither rotates nor limits a device or a pipe: it writes nothing
            room = self.size - status.st_size
            if len(data) > room:
                if room > 0:
                    _write_all(log, data[:room])
                    data = data[room:]
                self._start_anew()
                data = data[:self.size]   # more than the whole log may hold: the rest is lost
        _write_all(log, data)

    def _start_anew(self) -> None:
        """The full log truncated, or rotated to LOGFILE.1 (keeping its fd number, which the
        undo log closes at the end)."""
        log = self.ctx.console_log
        if not self.rotate:
            os.ftruncate(log, 0)
            return
        path = self.ctx.request.config.get_item("lxc.console.logfile")
        os.rename(path, f"{path}.1")
        fresh = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.dup2(fresh, log, inheritable=False)
        os.close(fresh)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _record_limits_hit(ctx) -> None:
    """One event per cgroup file whose counters say the container hit a limit."""
    for cgroup in ctx.boot.payload_cgroups:
        for file, keys in LIMIT_COUNTERS.items():
            try:
                with open(os.path.join(cgroup, file)) as counters:
                    found = dict(line.split() for line in counters if len(line.split()) == 2)
            except OSError:
                continue   # not this hierarchy's controller
            hit = {key: int(found[key]) for key in keys if found.get(key, "0").isdigit() and int(found[key])}
            if hit:
                ctx.log.info("cgroup limit hit", file=os.path.join(cgroup, file), **hit)


def _why_init_ended(ctx, status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        ctx.log.info("init killed", signal=signal.Signals(sig).name, core_dumped=os.WCOREDUMP(status))
        if sig == signal.SIGHUP:
            return "init_rebooted"
        if sig == signal.SIGINT:
            return "init_halted"
    else:
        ctx.log.info("init exited", status=os.WEXITSTATUS(status))
    return "init_exited"


def plan(request) -> list[str]:
    steps = ["wait on init's pidfd, the signalfd and the command socket"]
    if request.config.get_item("lxc.seccomp.notify.proxy"):
        steps = [f"connect to the seccomp proxy {request.config.get_item('lxc.seccomp.notify.proxy')}"
                 " (with notify rules)",
                 "wait on init's pidfd, the signalfd, the command socket and the seccomp listener",
                 "forward each seccomp notification to the proxy, answer it with the proxy's reply"]
    return [*steps,
            "forward every watched signal but SIGCHLD to init",
            "init killed by SIGHUP: reboot; by SIGINT: halt; otherwise: exit",
            "record the limits the container hit (pids.events, memory.events) before its cgroup goes"]
