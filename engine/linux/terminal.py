"""terminal: pseudo-terminals for the container's console and ttys, and the console's
peers: lxc-start -F's terminal, or lxc-console -t 0's proxy pty.

Replaces the tty parts of LXC's terminal.c and conf.c (lxc_devpts_terminal,
lxc_allocate_ttys, lxc_terminal_peer_default, lxc_terminal_peer_proxy_alloc,
lxc_setup_tios, and the console's ring buffer of ringbuf.c).  A pty is
opened through a given /dev/ptmx - the container's, or the host's for a
console when lxc.pty.max <= 1 - not os.openpty()'s, and its other end
through TIOCGPTPEER, so no path is looked up in a devpts that may not be
ours.  Imported only for a config with a console, lxc.tty.max or
lxc.console.buffer.size.
"""

from __future__ import annotations

import fcntl
import os
import struct

TIOCGPTN = 0x80045430      # the pty's number in its devpts
TIOCSPTLCK = 0x40045431    # (un)lock the peer side
TIOCGPTPEER = 0x5441       # open the peer side from the master
LXC_CONSOLE_READ = 1024    # LXC_TERMINAL_BUFFER_SIZE: the most LXC's monitor reads from a console at once


def open_pty(ptmx: str) -> tuple[int, int, int]:
    """A new pty of the devpts whose ptmx is `ptmx`: (master fd, peer fd, its number)."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        (number,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))
        peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        os.close(master)
        raise
    return master, peer, number


def console_is_stdio(foreground: bool, path: str | None) -> bool:
    """Whether init's stdin, stdout and stderr are the console: in a daemon, with the console
    on a terminal of the user's (lxc.console.path, lxc-start -c), and in the foreground when
    lxcsm's stdin is a terminal (the monitor relays either to the console)."""
    return not foreground or on_terminal(path) or os.isatty(0)


def on_terminal(path: str | None) -> bool:
    """Whether lxc.console.path names a terminal to relay the console to (not auto or none)."""
    return path not in (None, "", "auto", "none")


def open_terminal(path: str) -> int:
    """The terminal lxc.console.path names, opened for the relay (never as a controlling
    terminal); OSError if it cannot be opened or is no terminal."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if not os.isatty(fd):
        os.close(fd)
        raise OSError(25, "not a terminal (lxc.console.path)", path)   # ENOTTY
    return fd


def raw(attributes: list) -> list:
    """`attributes` (tcgetattr's list) changed to ssh's settings, as LXC's lxc_setup_tios takes
    them: no input translation or flow control, no signals, no canonical mode or echo on this
    side; output still gets CR before LF."""
    import termios
    attributes[0] = (attributes[0] | termios.IGNPAR) & ~(
        termios.ISTRIP | termios.INLCR | termios.IGNCR | termios.ICRNL
        | termios.IXON | termios.IXANY | termios.IXOFF | termios.IUCLC)
    attributes[1] |= termios.OPOST | termios.ONLCR
    attributes[3] &= ~(termios.TOSTOP | termios.ISIG | termios.ICANON | termios.ECHO | termios.ECHOE
                       | termios.ECHOK | termios.ECHONL | termios.IEXTEN)
    attributes[6][termios.VMIN], attributes[6][termios.VTIME] = 1, 0
    return attributes


class ConsoleProxy:
    """The user's terminal relayed to the container's console, as lxc-start -F's monitor
    relays it (LXC's lxc_terminal_peer_default and lxc_setup_tios): the terminal in raw
    mode - what is typed, Ctrl-C included, reaches the console's line discipline, whose
    foreground process gets the signal - the console the terminal's window size, and
    the terminal's settings restored at the end."""

    def __init__(self, user: int, console: int) -> None:
        import termios
        self.user, self.console = user, console
        self.saved = termios.tcgetattr(user)
        self._set(raw(termios.tcgetattr(user)))
        self.resize()

    def _set(self, attributes) -> None:
        """tcsetattr, also from a background process group: SIGTTOU ignored meanwhile (not
        for good: a reboot's next init would inherit it)."""
        import signal
        import termios
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            termios.tcsetattr(self.user, termios.TCSAFLUSH, attributes)
        finally:
            signal.signal(signal.SIGTTOU, previous)

    def resize(self) -> None:
        """The console gets the terminal's window size (its foreground process a SIGWINCH)."""
        import termios
        try:
            size = fcntl.ioctl(self.user, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.console, termios.TIOCSWINSZ, size)
        except OSError:
            pass   # the terminal is gone: nothing to size after

    def typed(self) -> bool:
        """Relay what was typed to the console; False once the terminal is gone (EOF, EIO)."""
        try:
            data = os.read(self.user, 4096)
        except OSError:
            return False
        if not data:
            return False
        while data:
            data = data[os.write(self.console, data):]
        return True

    def show(self, data: bytes) -> None:
        """What the console wrote, on the terminal (dropped if the terminal is gone)."""
        try:
            while data:
                data = data[os.write(self.user, data):]
        except OSError:
            pass

    def restore(self) -> None:
        try:
            self._set(self.saved)
        except OSError:
            pass   # the terminal is gone


class ProxyPty:
    """lxc-console -t 0's way to the console, as LXC's lxc_terminal_peer_proxy_alloc makes it:
    a new pty of the host's (the monitor's /dev/ptmx), whose master the client gets (`master`)
    and whose other end (`user`, in raw mode as LXC sets it) the monitor relays to and from
    the console - so the monitor itself goes on reading the console, into its log and ring
    buffer, while a client is attached.  The monitor keeps the master open too, as LXC does:
    `user` never hangs up, whatever the client does with its copy; both close when the
    client's command connection ends (close()).

    The window size: lxc-console sets its terminal's on the master.  LXC passes it on to the
    console only when its monitor gets a SIGWINCH, which nothing sends it; here it is passed
    on before each input from the client reaches the console, so a shell on the console sees
    the client's size from its first keystroke (and after each resize, from the next one).

    `user` is non-blocking: output the client does not read yet waits in `backlog` (the
    monitor stops reading the console meanwhile, which holds up the container's writes
    there, as LXC's blocking write does) - never the monitor itself, which serves its
    command socket throughout."""

    def __init__(self, console: int, ptmx: str = "/dev/ptmx") -> None:
        import termios
        self.console = console
        self.master, self.user, _number = open_pty(ptmx)
        try:
            termios.tcsetattr(self.user, termios.TCSAFLUSH, raw(termios.tcgetattr(self.user)))
            os.set_blocking(self.user, False)
        except OSError:
            self.close()
            raise
        self.size = b""        # the window size last passed on to the console
        self.backlog = b""     # the console's output the client has not taken yet

    def typed(self) -> bool:
        """Relay what the client typed to the console (with its window size first, if it
        changed); False if `user` cannot be read any more."""
        try:
            data = os.read(self.user, LXC_CONSOLE_READ)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self._pass_size()
        while data:
            data = data[os.write(self.console, data):]
        return True

    def _pass_size(self) -> None:
        import termios
        try:
            size = fcntl.ioctl(self.user, termios.TIOCGWINSZ, b"\0" * 8)
            if size != self.size:
                fcntl.ioctl(self.console, termios.TIOCSWINSZ, size)
                self.size = size
        except OSError:
            pass   # the console's size stays; what was typed still goes through

    def show(self, data: bytes) -> None:
        """The console's output, to the client: what `user` does not take now waits."""
        self.backlog += data
        self.flush()

    def flush(self) -> None:
        """Write what waits, as far as `user` takes it now (dropped if `user` fails)."""
        try:
            while self.backlog:
                self.backlog = self.backlog[os.write(self.user, self.backlog):]
        except BlockingIOError:
            pass
        except OSError:
            self.backlog = b""

    def close(self) -> None:
        for fd in (self.user, self.master):
            os.close(fd)


class RingBuffer:
    """lxc.console.buffer.size: the console's latest output, kept in the monitor's memory
    for LXC's CONSOLE_LOG command (liblxc's console_log(); no LXC tool sends it), as LXC's
    lxc_ringbuf.  Each boot has a new, empty one.  The output is taken in pieces of at most
    LXC_CONSOLE_READ bytes, LXC's reads; a piece that does not fit drops that many of the
    oldest bytes, not just the overflow, as lxc_ringbuf_write() does - so a full buffer holds
    up to one piece less than its size, as LXC's does.  Reading takes what it returns out."""

    def __init__(self, size: int) -> None:
        self.size = size           # a power of two, at least a page (values.console_size)
        self.data = bytearray()    # oldest first; a bytearray drops its head without copying

    def __len__(self) -> int:
        return len(self.data)

    def write(self, output: bytes) -> None:
        for start in range(0, len(output), LXC_CONSOLE_READ):
            piece = output[start:start + LXC_CONSOLE_READ]
            if len(piece) > self.size - len(self.data):
                del self.data[:len(piece)]
            self.data += piece

    def take(self, count: int) -> bytes:
        """The `count` oldest bytes (at most all), no longer in the buffer."""
        taken = bytes(self.data[:count])
        del self.data[:count]
        return taken

    def clear(self) -> None:
        self.data.clear()
