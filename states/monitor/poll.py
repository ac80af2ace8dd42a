"""poll (monitor) - supervise init until it exits.

Replaces LXC's lxc_poll() and its mainloop handlers (signal_handler,
lxc_cmd_handler) in start.c.

The monitor waits on four things at once: init's pidfd (readable when init
exits), the signalfd of init_handler (every watched signal but SIGCHLD is
forwarded to init, as LXC forwards it), the command socket (answered
only now, so a client never sees a half-started container), and the
container's console, drained into lxc.console.logfile while no lxc-console
client holds it, within lxc.console.size (truncated, or rotated with
lxc.console.rotate, as LXC does) and kept in the ring buffer of
lxc.console.buffer.size (CONSOLE_LOG reads it).  When init has ended, what
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
LXC refuses a second peer.

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

# The counters that say a limit was hit, by file: (cgroup v2 or v1) file -> its keys that count.
LIMIT_COUNTERS = {"pids.events": ("max",), "memory.events": ("max", "oom", "oom_kill"),
                  "memory.oom_control": ("oom_kill",)}


def enter(ctx) -> str:
    boot = ctx.boot
    poller = select.poll()
    for fd in (boot.init_pidfd, ctx.signal_fd, ctx.command_server.fileno()):
        poller.register(fd, select.POLLIN)
    console, draining = ctx.command_server.ttys.get(0, -1), False
    console_log = ConsoleLog(ctx)
    proxy = _proxy(ctx, console, poller)
    try:
        return _supervise(ctx, poller, console, draining, console_log, proxy)
    finally:
        if proxy is not None:
            proxy.restore()
            ctx.command_server.ttys[0] = console


def _proxy(ctx, console: int, poller):
    """The terminal relayed to the console - lxc.console.path's (lxc-start -c), or lxc-start
    -F's stdin if it is one, which sync_fds opened - or None."""
    user = ctx.console_peer
    if console < 0 or user < 0:
        return None
    from lxcsm.engine.linux import terminal
    del ctx.command_server.ttys[0]   # no lxc-console -t 0 meanwhile
    poller.register(user, select.POLLIN)
    return terminal.ConsoleProxy(user, console)


def _supervise(ctx, poller, console: int, draining: bool, console_log, proxy) -> str:
    boot = ctx.boot
    ctx.command_server.on_request = lambda cmd, uid: ctx.log.trace(
        "command served", command=Cmd(cmd).name if cmd in Cmd._value2member_map_ else cmd, uid=uid)
    while True:
        logmod.flight_recorder.flush()   # what the last wakeup recorded, before waiting again
        # The console is drained while no lxc-console holds it (then the client reads it).
        held = 0 in ctx.command_server.tty_users and proxy is None
        if console >= 0 and draining == held:
            if held:
                poller.unregister(console)
            else:
                poller.register(console, select.POLLIN)
            draining = not held
        # Woken by the command socket, or by its next deadline: a connection silent too long.
        deadline = ctx.command_server.timeout()
        events = poller.poll(None if deadline is None else deadline * 1000)
        if not events:
            ctx.command_server.serve_ready()
        for fd, _events in events:
            if fd == console:
                shown = console_log.drain(console)
                if proxy is not None:
                    proxy.show(shown)
                continue
            if proxy is not None and fd == proxy.user:
                if not proxy.typed():   # the terminal is gone: the container runs on
                    poller.unregister(fd)
                continue
            if fd == ctx.signal_fd:
                signo, sender = kernel.read_signalfd(fd)
                if signo == signal.SIGWINCH and proxy is not None:
                    proxy.resize()
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
                    if proxy is not None:
                        proxy.show(shown)
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
    return ["wait on init's pidfd, the signalfd and the command socket",
            "forward every watched signal but SIGCHLD to init",
            "init killed by SIGHUP: reboot; by SIGINT: halt; otherwise: exit",
            "record the limits the container hit (pids.events, memory.events) before its cgroup goes"]
