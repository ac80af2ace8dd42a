"""lxc-console -t 0 through the monitor's relay, as under LXC 5.0.2 (lxc_terminal_peer_proxy_alloc):
the client gets a proxy pty, the monitor goes on reading the console - so what was shown
during the attachment is in lxc.console.logfile and in lxc.console.buffer.size's ring buffer
(CONSOLE_LOG) too; a second lxc-console -t 0 is refused while the first is attached, and
attaches once the first has left (Ctrl-a q).  The same test runs on lxc-start's monitor and
on lxcsm's, for the same container; they differ in one thing: lxcsm gives the console the
client's window size, LXC 5.0.2 leaves it 0x0."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import struct
import subprocess
import termios
import time

import pytest

from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import CONSOLE_LOG_REQUEST, Cmd
from tests.integration.test_console import _end, _interactive
from tests.integration.test_ttys import _running

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed"),
              pytest.mark.skipif(not shutil.which("lxc-console"), reason="LXC's tools are not installed")]

# init: each line typed on the console is run, its output on the console; no prompt.
RUN_LINES = "exec </dev/console >/dev/console 2>&1; while read -r line; do eval \"$line\"; done"


def _start(c, under: str, *options: str) -> None:
    command = ["--", "/bin/sh", "-c", RUN_LINES]
    if under == "lxc-start":
        result = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-d", *command],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    else:
        result = c.run("start", "-d", *options, *command)
    assert result.returncode == 0, result.stderr
    _running(c)


def _stop(c) -> None:
    """Whichever monitor runs the container stops it (nothing to do if none does)."""
    if command_client.call(c.lxcpath, c.name, Cmd.GET_STATE) is None:
        return
    stopped = subprocess.run(["lxc-stop", "-n", c.name, "-P", c.lxcpath, "-k"],
                             capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 10
    while command_client.call(c.lxcpath, c.name, Cmd.GET_STATE) is not None:   # the monitor is gone
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _logged(log, text: bytes) -> bool:
    """Whether `text` is in the console log, once the monitor has written it: LXC's relays
    to the client before it writes the ring buffer and the log, lxcsm's after."""
    deadline = time.monotonic() + 10
    while text not in log.read_bytes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _ring_buffer(c) -> bytes:
    """The whole of the console's ring buffer, as liblxc's console_log() reads it."""
    reply = command_client.call(c.lxcpath, c.name, Cmd.CONSOLE_LOG, CONSOLE_LOG_REQUEST.pack(False, True, 0, False))
    assert reply is not None and reply.ret == 0, reply and reply.ret
    return reply.data


def _console_size(c) -> tuple[int, int]:
    """(rows, columns) of the console, as init's stdin (the console's pty) has them."""
    init = command_client.call(c.lxcpath, c.name, Cmd.GET_INIT_PID).value
    fd = os.open(f"/proc/{init}/fd/0", os.O_RDONLY | os.O_NOCTTY)
    try:
        rows, columns, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    finally:
        os.close(fd)
    return rows, columns


def _attach(c):
    pid, console = _interactive(["lxc-console", "-n", c.name, "-P", c.lxcpath, "-t", "0"])
    console.converse(b"", b"Ctrl+a q")                              # lxc-console's banner: connected
    # lxc-console then sets its terminal raw, flushing what was typed before (TCSAFLUSH).
    deadline = time.monotonic() + 10
    while termios.tcgetattr(console.fd)[3] & termios.ECHO:
        assert time.monotonic() < deadline, "lxc-console never set its terminal raw"
        time.sleep(0.01)
    return pid, console


def _detach(pid: int, console) -> None:
    os.write(console.fd, b"\x01q")                                  # Ctrl-a q
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("under", ["lxc-start", "lxcsm"])
def test_the_log_and_ring_buffer_keep_what_lxc_console_0_showed_and_the_console_is_one_clients(
        make_container, tmp_path, under):
    log = tmp_path / "console.log"
    c = make_container("busybox", ["lxc.console.buffer.size = 64K", f"lxc.console.logfile = {log}"])
    try:
        _start(c, under)
        pid, console = _attach(c)
        try:
            shown = console.converse(b"echo first$((1+1))-attached\r", b"first2-attached")
            # The client's window size: lxcsm passes it on to the console with the next input;
            # LXC 5.0.2 only on a SIGWINCH to its monitor, which nothing sends: it stays 0x0.
            fcntl.ioctl(console.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
            console.converse(b"echo size$((1+1))\r", b"size2")
            assert _console_size(c) == ((0, 0) if under == "lxc-start" else (33, 111))
            refused = subprocess.run(["lxc-console", "-n", c.name, "-P", c.lxcpath, "-t", "0"],
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            assert refused.returncode == 1 and "Denied access to tty" in refused.stderr, refused.stderr
            _detach(pid, console)
        finally:
            _end(pid, console)
        assert b"first2-attached" in shown
        assert _logged(log, b"first2-attached")                      # the relay logged it meanwhile
        assert b"first2-attached" in _ring_buffer(c)

        pid, console = _attach(c)                                   # the console is free again
        try:
            console.converse(b"echo second$((1+2))-attached\r", b"second3-attached")
            _detach(pid, console)
        finally:
            _end(pid, console)
        assert _logged(log, b"second3-attached")
        assert b"second3-attached" in _ring_buffer(c)
    finally:
        _stop(c)


def test_a_client_that_stops_reading_holds_up_the_console_not_the_monitor_and_loses_nothing(
        make_container, tmp_path):
    log, trace = tmp_path / "console.log", tmp_path / "monitor.log"
    c = make_container("busybox", [f"lxc.console.logfile = {log}"])
    lines = 20000   # some 300 KB: more than the console's and the proxy's ptys hold
    try:
        _start(c, "lxcsm", "-l", "TRACE", "-o", str(trace))
        pid, console = _attach(c)
        try:
            flood = f"i=0; while [ $i -lt {lines} ]; do echo flood-$i; i=$((i+1)); done; echo flood$((2+3))-done\r"
            console.converse(flood.encode(), b"flood-1\r")
            os.kill(pid, signal.SIGSTOP)                            # lxc-console reads no more
            try:
                deadline = time.monotonic() + 30                    # the proxy fills up
                while b"console held up by its peer" not in trace.read_bytes():
                    assert time.monotonic() < deadline, "the console was never held up"
                    time.sleep(0.05)
                info = subprocess.run(["lxc-info", "-n", c.name, "-P", c.lxcpath, "-s", "-H"],
                                      capture_output=True, text=True, timeout=30)
                assert info.stdout.strip() == "RUNNING"             # the monitor still answers
                assert b"flood5-done" not in log.read_bytes()       # the container's output waits
            finally:
                os.kill(pid, signal.SIGCONT)
            shown = console.seen + console.converse(b"", b"flood5-done", timeout=60)
            _detach(pid, console)
        finally:
            _end(pid, console)
        numbers = [int(n) for n in re.findall(rb"flood-(\d+)\r", shown)]
        assert numbers == list(range(lines))                        # all of it, in order, once
        logged = [int(n) for n in re.findall(rb"flood-(\d+)\r", log.read_bytes())]
        assert logged == list(range(lines))
    finally:
        _stop(c)
