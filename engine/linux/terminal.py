"""terminal: pseudo-terminals of the container's own devpts, for its ttys.

Replaces the tty parts of LXC's terminal.c and conf.c (lxc_devpts_terminal,
lxc_allocate_ttys).  A pty is opened through the container's /dev/ptmx - not
os.openpty(), which would use the /dev/ptmx of the root the process still
has, the host's - and its other end through TIOCGPTPEER, so no path is looked
up in a devpts that may not be ours.  Imported only for a config with
lxc.tty.max.
"""

from __future__ import annotations

import fcntl
import os
import struct

TIOCGPTN = 0x80045430      # the pty's number in its devpts
TIOCSPTLCK = 0x40045431    # (un)lock the peer side
TIOCGPTPEER = 0x5441       # open the peer side from the master
TIOCSCTTY = 0x540E         # make a terminal the caller's controlling terminal


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


def take_as_controlling(fd: int) -> None:
    """Make the terminal `fd` the controlling terminal of this (session leader) process."""
    fcntl.ioctl(fd, TIOCSCTTY, 0)
