"""lxcsm serve: the start server, a resident process that makes `lxcsm start` warm.

It imports once what every start needs (the engine, every state of both
machines, the child's path, structlog's logger for a traced start, pyroute2 with
--netlink or when a container under the default LXCPATH has a veth), then
listens on a unix socket only root may use (mode 0600, and the peer checked
with SO_PEERCRED).  Each `lxcsm start` that connects (engine/start/server_client.py;
and the same for `lxcsm stop`, cli.WARM) is served by two processes the server forked
before it came (`_Spare`), and handed to them:

* a waiter, in a session of its own, which joins the caller's cgroups on every
  hierarchy, lets the process below run the request, waits for it and sends the
  client its wait status (the caller cannot wait for a process that is not its
  child, and this host's PID 1 may never reap an orphan);
* the process that does the start: it joins the same cgroups, becomes the caller (engine/start/server.py:
  namespaces, root, cwd, credentials, umask, rlimits, environment, signal
  state, its open fds at their numbers, its ps title), sends the client its pidfd for relaying
  signals, and runs `lxcsm start` with the caller's argv - the same code as a
  cold start, so the same output, errors and exit status.  With -F it is the
  monitor; with -d it daemonizes the monitor as a cold start does, which
  leaves it reparented away from the server.

Once they have a request, nothing of theirs is in the server's cgroups and no
parent-death signal ties them to it (the waiter is the server's child, reaped by
SIGCHLD being ignored; the rest are the waiter's): stopping or restarting the
server leaves every running container and its monitor alone.  A spare without a
request reads end-of-file then, and ends.

Socket activation: under systemd (LISTEN_FDS) the socket is fd 3; see
tools/systemd/lxcsm-serve.{socket,service}.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import io
import os
import signal
import socket
import struct
import sys

from lxcsm.engine.cli.options import Parser
from lxcsm.engine.linux import cgroups, kernel
from lxcsm.engine.start import server, server_client

SUMMARY = "serve warm starts: a resident process that runs lxcsm start for root's clients"
SYSTEMD_FIRST_FD = 3
OWNED_SOCKET = "LXCSM_SERVE_OWNS_SOCKET"   # across a re-exec: the socket file is ours to remove
PENDING = "LXCSM_SERVE_PENDING_FD"          # across a re-exec: the accepted request to serve first
TITLE_ROOM = 4096   # bytes of command line each forked process can retitle itself within


def add_options(parser: Parser) -> None:
    parser.add_argument("--socket", metavar="PATH", default=server_client.socket_path(),
                        help=f"listen on PATH (default: $LXCSM_START_SOCKET or {server_client.SOCKET_PATH})")
    parser.add_argument("--netlink", action="store_true",
                        help="import pyroute2 now, for containers with a veth (else only if a config under"
                             " the default LXCPATH has one)")
    parser.add_argument("--title-room", default="", help=argparse.SUPPRESS)


def run(parser: Parser, args) -> int:
    if os.geteuid() != 0:
        print("lxcsm serve: must run as root: it starts root's containers", file=sys.stderr)
        return 1
    if len(args.title_room) < TITLE_ROOM:
        _reexec_with_title_room()
    _preload(args.netlink)
    listener, owned = _listener(args.socket)
    if listener is None:
        return 1

    def stop(_signo, _frame) -> None:
        if owned:
            try:
                os.unlink(args.socket)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # waiters are reaped by the kernel
    sys.stdout.flush()
    sys.stderr.flush()
    code = _CodeOnDisk()
    grace_periods = _GracePeriods(listener)
    gc.collect()
    gc.freeze()   # what the imports made stays shared with every forked process
    pending = os.environ.pop(PENDING, None)   # a request the previous run of this server left to this one
    spare = _Spare(listener, grace_periods)
    while True:
        if pending is not None:
            conn, pending = socket.socket(fileno=int(pending)), None
        else:
            try:
                conn, _ = listener.accept()
            except InterruptedError:
                continue
        grace_periods.begin()
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
        if uid != 0:
            _send(conn, server_client.REFUSED + b"only root may start containers through the server")
            conn.close()
            continue
        if code.changed():
            # lxcsm was upgraded (or edited) under us: a start must not mix the modules loaded
            # here with newer ones it imports later.  The server runs again with the code on
            # disk and serves this request first; the next ones wait in the listen queue.
            _reexec_listening(listener, args.socket if owned else None, conn)
        if not spare.take(conn, pid):   # it died (killed by hand?): one made now serves
            spare = _Spare(listener, grace_periods)
            if not spare.take(conn, pid):
                _send(conn, server_client.REFUSED + b"the server could not fork a process to serve it")
        conn.close()
        spare = _Spare(listener, grace_periods)   # the next request's, made while this one is served


class _GracePeriods:
    """A process of the server's that begins, for each request, the RCU grace period its first
    cgroup move waits for.

    The first move of a start (the monitor's into lxc.monitor.NAME, or the waiter's into the
    caller's cgroups) waits 5-20 ms for one when no process on the host has moved for a moment
    (cgroups.begin_grace_period).  Begun as the request is accepted, that wait passes while the
    request is read, the caller adopted and the config parsed, which take about as long.  Not
    in the accept loop, which must not wait, and not a thread: glibc's first thread leaves a
    handler for one of its own signals (SIGSETXID) in every process forked afterwards, and a
    warm monitor must show the signal state of a cold one.  A request that comes while a
    grace period is being begun shares it.  The process dies with the server.
    """

    def __init__(self, listener: socket.socket) -> None:
        self.wake: int | None = None
        own_procs = cgroups.own_procs_file()
        if own_procs is None:
            return
        asleep, self.wake = os.pipe2(os.O_CLOEXEC)
        if os.fork() == 0:
            listener.close()
            os.close(self.wake)
            for signo in (signal.SIGTERM, signal.SIGINT):   # not the server's handler: it owns the socket
                signal.signal(signo, signal.SIG_DFL)
            kernel.set_pdeathsig(signal.SIGKILL)
            kernel.set_comm("lxcsm grace")
            kernel.set_cmdline("lxcsm serve: grace periods")
            while os.read(asleep, 512):   # end of file: the server is gone
                cgroups.begin_grace_period(own_procs)
            os._exit(0)
        os.close(asleep)
        os.set_blocking(self.wake, False)

    def begin(self) -> None:
        if self.wake is None:
            return
        try:
            os.write(self.wake, b".")
        except BlockingIOError:
            pass   # the requests before this one are being served now: this one shares theirs

    def close(self) -> None:
        """In each forked waiter: only the server wakes it."""
        if self.wake is not None:
            os.close(self.wake)


class _CodeOnDisk:
    """lxcsm's loaded module files, as they were when the server started.

    Asked before every fork; so it touches only what it made here, together: walking
    sys.modules would write to (the reference counts of) a module object and a name on
    as many pages of the heap, and each page the server writes after a fork is one more
    page that every monitor forked before has to itself (PSS).
    """

    def __init__(self) -> None:
        files = (getattr(module, "__file__", None) for name, module in list(sys.modules.items())
                 if name.startswith("lxcsm."))
        self.paths = tuple(os.fsencode(path) for path in files if path)
        self.mtimes = self._mtimes()

    def _mtimes(self) -> tuple[int, ...]:
        mtimes = []
        for path in self.paths:
            try:
                mtimes.append(os.stat(path).st_mtime_ns)
            except OSError:
                mtimes.append(-1)
        return tuple(mtimes)

    def changed(self) -> bool:
        return self._mtimes() != self.mtimes


def _reexec_listening(listener: socket.socket, owned_path: str | None, conn: socket.socket) -> None:
    """Run again, keeping the listening socket (passed as systemd passes one) and the request
    `conn` not served yet."""
    request = conn.fileno() if conn.fileno() != SYSTEMD_FIRST_FD else os.dup(conn.fileno())
    os.set_inheritable(request, True)
    os.environ[PENDING] = str(request)
    if listener.fileno() == SYSTEMD_FIRST_FD:
        os.set_inheritable(SYSTEMD_FIRST_FD, True)
    else:
        os.dup2(listener.fileno(), SYSTEMD_FIRST_FD)   # inheritable
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
    if owned_path:
        os.environ[OWNED_SOCKET] = owned_path
    os.execv(sys.executable, sys.orig_argv)


def _reexec_with_title_room() -> None:
    """Run again with TITLE_ROOM bytes of command line: a forked process retitles itself
    (as the caller's command line, or [lxcsm monitor] ...) within the room its argv has."""
    argv = [a for a in sys.orig_argv if not a.startswith("--title-room")]
    os.execv(sys.executable, [*argv, "--title-room=" + "." * TITLE_ROOM])


def _preload(netlink: bool) -> None:
    """Import everything a start imports, so that no forked process imports anything."""
    from lxcsm.engine import cli, log
    from lxcsm.engine.cli import parser_for
    from lxcsm.engine.config import loader, preflight  # noqa: F401
    from lxcsm.engine.protocol import command_client, command_server  # noqa: F401
    from lxcsm.engine.start import breakpoints, child, machine, monitor, postmortem, supervisor  # noqa: F401
    from lxcsm.engine.start.machine import CHILD, MONITOR

    for table in (MONITOR, CHILD):
        for state in table.states:
            table.module(state)
    machine.prebuild()
    for name in cli.WARM:
        cli.PREBUILT[name] = parser_for(name)
    # What a traced start's first line loads: structlog's bound logger, not the whole package
    # (asyncio, stdlib logging: megabytes of heap no start uses).
    log._bound_logger_class()
    if netlink or _veth_configured():
        from lxcsm.engine.linux import netlink as netlink_module  # noqa: F401


def _veth_configured() -> bool:
    from lxcsm.engine.cli.options import DEFAULT_LXCPATH
    try:
        names = os.listdir(DEFAULT_LXCPATH)
    except OSError:
        return False
    for name in names:
        try:
            with open(os.path.join(DEFAULT_LXCPATH, name, "config")) as config:
                for line in config:
                    key, _, value = line.partition("=")
                    if key.strip().startswith("lxc.net.") and key.strip().endswith(".type") \
                            and value.strip() == "veth":
                        return True
        except OSError:
            continue
    return False


def _listener(path: str) -> tuple[socket.socket | None, bool]:
    """(listening socket, whether we made its path): systemd's, or one bound here, mode 0600."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        listener = socket.socket(fileno=SYSTEMD_FIRST_FD)
        os.set_inheritable(SYSTEMD_FIRST_FD, False)
        return listener, os.environ.pop(OWNED_SOCKET, None) == path
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        print(f"lxcsm serve: {path}: a start server already answers there", file=sys.stderr)
        return None, False
    except OSError:
        pass   # nobody answers: a stale socket file, or none
    finally:
        probe.close()
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)   # the socket is born 0600: no moment where others may connect
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener, True


def _send(conn: socket.socket, message: bytes, fds: tuple[int, ...] = ()) -> None:
    try:
        if fds:
            conn.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
        else:
            conn.sendall(message)
    except OSError:
        pass   # the client is gone: nobody to tell


class _Spare:
    """The next request's waiter and the worker below it, forked before the request comes.

    Forking them, and what a forked Python process does first, took ~5 ms of each warm
    start that nothing else could use; made ahead, while the server waits or while the
    previous request is served, they only need the request handed to them (`take`).  Until
    then the waiter waits on a socket pair from the server and the worker on one from the
    waiter; end-of-file on either (the server gone, or re-run for new code) ends both.
    """

    def __init__(self, listener: socket.socket, grace_periods: _GracePeriods) -> None:
        self.handoff, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.fork() == 0:
            listener.close()
            grace_periods.close()
            self.handoff.close()
            _waiter(theirs)
        theirs.close()

    def take(self, conn: socket.socket, caller: int) -> bool:
        """Hand it a request from `caller`; False if it is not there to take it."""
        try:
            _hand(self.handoff, conn, caller)
            return True
        except OSError:
            return False
        finally:
            self.handoff.close()


def _hand(sock: socket.socket, conn: socket.socket, caller: int) -> None:
    socket.send_fds(sock, [str(caller).encode()], [conn.fileno()])


def _handed(sock: socket.socket) -> tuple[socket.socket, int]:
    """The request handed over `sock` (_hand); at end-of-file, when none will come, this process ends."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 32, 1)
    if not fds:
        os._exit(0)
    return socket.socket(fileno=fds[0]), int(data)


def _waiter(handoff: socket.socket) -> None:
    """A spare waiter: joins the caller's cgroups on every hierarchy, lets its worker run the
    request, waits for it and sends the client its wait status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setsid()
    kernel.set_comm("lxcsm waiter")
    own = server.Itself()   # the worker's too: it is forked from here, into the same places
    go, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = os.fork()
    if worker == 0:
        handoff.close()
        go.close()
        kernel.set_comm("lxcsm worker")   # until it takes on the caller's (server.take_title)
        try:
            conn, caller = _handed(theirs)
            theirs.close()
            _worker(conn, caller, own)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(1)   # only if the worker itself failed before the start ran
    theirs.close()
    conn, caller = _handed(handoff)
    handoff.close()
    try:
        server.check(caller, own)
        server.move_into_cgroups(caller, own)   # first: nothing of this request may run in the server's
        _hand(go, conn, caller)
        go.close()
        _pid, status = os.waitpid(worker, 0)
        _send(conn, server_client.EXIT + str(status).encode())
    except server.StartsCold as err:
        print(f"lxcsm serve: {err}: it starts cold", file=sys.stderr, flush=True)
        _send(conn, server_client.COLD + str(err).encode())
    except server.Refused as err:
        _send(conn, server_client.REFUSED + str(err).encode())
    except BaseException as err:   # a bug: the client falls back to a cold start
        _send(conn, server_client.REFUSED + f"the server failed: {err!r}".encode())
    finally:
        os._exit(0)   # an unused worker reads end-of-file and ends too


def _worker(conn: socket.socket, caller: int, own: server.Itself) -> None:
    from lxcsm.engine import cli

    server_client.IN_SERVER = True   # this process's `lxcsm start` is the one asked for, not a new request
    try:
        server.move_into_cgroups(caller, own)   # as its waiter did: forked before either knew where to go
        payload, fds = server_client.read_request(conn)
        argv, environ, numbers, blocked, ignored = server_client.decode_request(payload)
        if len(argv) < 2 or argv[1] not in cli.WARM:
            raise ValueError(f"not a command this server runs: {argv[1:2]}")
        if len(fds) != len(numbers):
            raise ValueError("the request's fds do not match it")
        # Above every number the caller's fds had: placed there below, nothing of ours is in the way.
        floor = max([*numbers, *fds, conn.fileno()]) + 1
        held = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
        for fd in fds:
            os.close(fd)
        server.enter_namespaces(caller, own)
        server.take_process_settings(caller)
        server.take_title(caller)
    except (server.Refused, ValueError, OSError) as err:
        _send(conn, server_client.REFUSED + str(err).encode())
        os._exit(0)
    server.take_environment(environ)
    pidfd = os.pidfd_open(os.getpid())
    _send(conn, server_client.PROCESS, (pidfd,))
    conn.close()
    os.close(pidfd)
    for entry in os.listdir("/proc/self/fd"):   # the server's: the listing's own fd fails to close
        if int(entry) not in held:
            try:
                os.close(int(entry))
            except OSError:
                pass
    for fd, number in zip(held, numbers, strict=True):   # the caller's, at the numbers it had them
        os.dup2(fd, number)
        os.close(fd)
    server.take_signal_state(blocked, ignored)
    _std_streams()
    sys.argv = argv
    gc.disable()   # as the `lxcsm` command (cli.run): the monitor turns it on once RUNNING
    try:
        status = cli.main(argv[1:])
    except SystemExit as leaving:
        status = leaving.code if isinstance(leaving.code, int) else (0 if leaving.code is None else 1)
        if not isinstance(leaving.code, int | None):
            print(leaving.code, file=sys.stderr)
    except KeyboardInterrupt:
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)   # as a Python process dies of an uncaught Ctrl-C
        status = 130
    except BaseException:
        import traceback
        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def _std_streams() -> None:
    """sys.stdin/stdout/stderr on the caller's fds, set up as a fresh interpreter sets them up."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    # The __std*__ originals too, which the type stubs call final: the start that runs next must
    # find what a fresh interpreter on these fds has, and some code reads the originals.
    sys.stdin = sys.__stdin__ = _stream(0, "r", encoding, "strict", False)  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = _stream(1, "w", encoding, "strict",  # type: ignore[misc]
                                          os.isatty(1) if _open(1) else False)
    sys.stderr = sys.__stderr__ = _stream(2, "w", encoding, "backslashreplace", True)  # type: ignore[misc]


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _stream(fd: int, mode: str, encoding: str, errors: str, line_buffering: bool):
    if not _open(fd):
        return None
    stream = open(fd, mode, encoding=encoding, errors=errors, closefd=False)
    assert isinstance(stream, io.TextIOWrapper)   # a text mode always opens one
    stream.reconfigure(line_buffering=line_buffering)
    return stream
