"""lxc-console -t 0's proxy pty (engine/linux/terminal.py ProxyPty), on real ptys of this
host's devpts: a pty standing in for the container's console, the proxy's master for the
client's end.  What the client types reaches the console with the client's window size
first; the console's output reaches the client, and what the client does not read yet
waits rather than blocking the monitor."""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import tty

import pytest

from lxcsm.engine.linux.terminal import ProxyPty


@pytest.fixture
def console():
    """(the console's master, as the monitor holds it; the container's side, raw)."""
    master, container = os.openpty()
    tty.setraw(container)
    os.set_blocking(container, False)
    yield master, container
    os.close(master)
    os.close(container)


@pytest.fixture
def proxy(console):
    made = ProxyPty(console[0])
    os.set_blocking(made.master, False)
    yield made
    made.close()


def read_all(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return data
        if not chunk:
            return data
        data += chunk


def winsize(fd: int) -> tuple[int, int]:
    rows, columns, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, columns


def test_what_the_client_types_reaches_the_console_unchanged_with_its_window_size_first(console, proxy):
    _master, container = console
    fcntl.ioctl(proxy.master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    os.write(proxy.master, b"echo hi\r\x03")          # raw: CR stays CR, Ctrl-C is a byte
    assert proxy.typed()
    assert read_all(container) == b"echo hi\r\x03"
    assert winsize(container) == (33, 111)
    fcntl.ioctl(proxy.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    os.write(proxy.master, b"x")
    assert proxy.typed() and winsize(container) == (40, 120)


def test_the_proxy_end_is_raw_and_never_hangs_up_under_a_client_that_closed_its_copy(console, proxy):
    attributes = termios.tcgetattr(proxy.user)
    assert not attributes[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
    client_copy = os.dup(proxy.master)
    os.close(client_copy)                               # lxc-console left; the monitor's master stays
    assert proxy.typed()                                # nothing to read, and no hang-up either


def test_the_consoles_output_reaches_the_client_and_what_it_does_not_read_waits(proxy):
    proxy.show(b"Welcome")
    assert proxy.backlog == b"" and read_all(proxy.master) == b"Welcome"
    flood = b"x" * (1 << 20)                            # more than a pty holds
    proxy.show(flood)
    assert proxy.backlog and len(proxy.backlog) < len(flood)
    received = b""
    while proxy.backlog:
        received += read_all(proxy.master)
        proxy.flush()
    received += read_all(proxy.master)
    assert received == flood

