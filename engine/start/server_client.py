"""The client side of the start server (`lxcsm serve`): `lxcsm start` (and `lxcsm stop`) run by a
warm process.

A cold `lxcsm start` spends most of its time starting CPython and importing
the engine.  When a start server listens, `lxcsm start` instead sends it its
argv, environment, signal state and its stdin/stdout/stderr (SCM_RIGHTS); the
server forks a process that becomes this caller (cgroups, namespaces,
credentials, cwd, umask, rlimits, signals; see server.py) and runs the very
same `lxcsm start` code there.  Output, errors and exit status are therefore
those of a cold start; `lxcsm stop` goes the same way (cli.WARM).  This side only relays the signals it gets to that
process (Ctrl-C, SIGTERM, SIGHUP, SIGWINCH, Ctrl-Z and fg) and exits as it did.

This module is the whole client: it imports only the standard library's
small C modules, never the engine (checked by test_start_server.py), and not
even the signal and socket modules' Python halves.

LXCSM_START_SERVER=off never asks a server, =require fails instead of falling
back to the cold path (except for a caller the server says it cannot become:
another pid namespace, a seccomp filter...; see server.py); LXCSM_START_SOCKET names
another socket (tests run their own server there).
"""

import _signal as signal  # signal and socket themselves import enum, a few ms of every start
import _socket as socket
import _struct as struct  # struct.py only re-exports it
import os
import sys

SOCKET_PATH = "/run/lxcsm/start.sock"
IN_SERVER = False   # set in the server's own forked process, which runs the start itself
MAGIC = b"lxcsm-start-1"
_LENGTH = struct.Struct("!I")
MAX_FDS = 253   # SCM_MAX_FD: the file descriptors one message can carry
# Replies: PROCESS (+ its pidfd), REFUSED reason (the server failed), COLD reason (a caller the
# server cannot become: it starts cold, whatever LXCSM_START_SERVER says), EXIT wait-status.
PROCESS, REFUSED, COLD, EXIT = b"P", b"R", b"C", b"X"
# What a terminal or a supervisor sends `lxcsm start` that the process doing the start must hear.
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH,
           signal.SIGUSR1, signal.SIGUSR2, signal.SIGPWR, signal.SIGALRM, signal.SIGCONT)


def socket_path() -> str:
    return os.environ.get("LXCSM_START_SOCKET") or SOCKET_PATH


def run(argv: list[str]) -> int | None:
    """Run `lxcsm start` or `lxcsm stop` (sys.argv = argv) through the server: its exit status,
    or None when there is no server to use (the caller then runs cold, as if it never asked)."""
    mode = os.environ.get("LXCSM_START_SERVER", "auto")
    if mode == "off" or os.geteuid() != 0:   # the server serves root only: others hear why from a cold start
        return None
    required = mode == "require"
    path = socket_path()
    fds = _open_fds()   # before the connection has one of its own
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(fds) > MAX_FDS:
            raise OSError(f"{len(fds)} open file descriptors: more than one message carries")
        conn.connect(path)
        payload = encode_request(argv, dict(os.environ), fds, *_signal_state())
        try:
            conn.sendmsg([_LENGTH.pack(len(payload)), payload],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
        except (BrokenPipeError, ConnectionResetError):
            pass   # it answered before reading (a caller it starts cold): the answer waits to be read
        kind, text, received = _receive(conn)
    except OSError as err:
        conn.close()
        if required:
            print(f"lxcsm: the start server at {path}: {err.strerror or err}", file=sys.stderr)
            return 1
        return None
    if kind != PROCESS or not received:
        conn.close()
        if required and kind != COLD:
            print(f"lxcsm: the start server at {path} refused: {text or 'it hung up'}", file=sys.stderr)
            return 1
        return None
    for fd in fds:   # that process holds them now, as the cold `lxcsm start` would: -C and -d close them
        if fd > 2:
            os.close(fd)
    return _follow(conn, received[0])


def _follow(conn, pidfd: int) -> int:
    """Relay signals to the process doing the start until its waiter reports how it ended."""
    def relay(signo, _frame) -> None:
        signal.pidfd_send_signal(pidfd, signo)

    def suspend(_signo, _frame) -> None:   # Ctrl-Z: that process stops, and so do we, as one job
        signal.pidfd_send_signal(pidfd, signal.SIGTSTP)
        os.kill(os.getpid(), signal.SIGSTOP)

    for signo in RELAYED:
        if signal.getsignal(signo) != signal.SIG_IGN:
            signal.signal(signo, relay)
    if signal.getsignal(signal.SIGTSTP) != signal.SIG_IGN:
        signal.signal(signal.SIGTSTP, suspend)
    try:
        kind, text, _fds = _receive(conn)
    except OSError:
        kind = b""
    if kind != EXIT:
        print("lxcsm: the start server's process ended without an exit status", file=sys.stderr)
        return 1
    status = int(text)
    if os.WIFSIGNALED(status):   # die of the same signal, as the cold `lxcsm start` would have
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [os.WTERMSIG(status)])
        os.kill(os.getpid(), os.WTERMSIG(status))
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _receive(conn) -> tuple[bytes, str, list[int]]:
    """One reply: its kind, its text, the fds it carried.  EOF is kind b""."""
    while True:
        try:
            data, ancillary, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4))
            break
        except InterruptedError:
            continue
    fds: list[int] = []
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(blob) // 4}i", blob[: len(blob) // 4 * 4])
    return data[:1], data[1:].decode(errors="replace"), fds


def _signal_state() -> tuple[list[int], list[int]]:
    """(blocked, ignored) signals of this process as it was started (before any relay is set)."""
    blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    ignored = [int(s) for s in signal.valid_signals()
               if s not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(s) == signal.SIG_IGN]
    return blocked, ignored


def _open_fds() -> list[int]:
    """Every open file descriptor of this process (0-2 included when open), ascending."""
    fds = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(entry))
        except OSError:
            continue   # the listing's own, closed again by now
        fds.append(int(entry))
    return sorted(fds)


def encode_request(argv: list[str], environ: dict[str, str], fds: list[int],
                   blocked: list[int], ignored: list[int]) -> bytes:
    fields = [MAGIC, ",".join(map(str, fds)).encode(), ",".join(map(str, blocked)).encode(),
              ",".join(map(str, ignored)).encode(), str(len(argv)).encode(),
              *(os.fsencode(a) for a in argv), *(os.fsencode(f"{k}={v}") for k, v in environ.items())]
    return b"\0".join(fields)


def decode_request(payload: bytes) -> tuple[list[str], dict[str, str], list[int], list[int], list[int]]:
    """(argv, environment, the caller's numbers of the fds passed, blocked, ignored); ValueError for
    anything else."""
    fields = payload.split(b"\0")
    if len(fields) < 5 or fields[0] != MAGIC:
        raise ValueError("not an lxcsm start request")

    def numbers(field: bytes) -> list[int]:
        return [int(n) for n in field.split(b",") if n]

    count = int(fields[4])
    argv = [os.fsdecode(a) for a in fields[5: 5 + count]]
    environ = dict(os.fsdecode(e).partition("=")[::2] for e in fields[5 + count:] if e)
    return argv, environ, numbers(fields[1]), numbers(fields[2]), numbers(fields[3])


def read_request(conn) -> tuple[bytes, list[int]]:
    """The request's payload and the fds sent with it (server side)."""
    data, ancillary, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * 4))
    fds: list[int] = []
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(blob) // 4}i", blob[: len(blob) // 4 * 4])
    if len(data) < _LENGTH.size:
        raise ValueError("a short request")
    (length,) = _LENGTH.unpack_from(data)
    payload = data[_LENGTH.size:]
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            raise ValueError("a short request")
        payload += chunk
    return payload, fds
