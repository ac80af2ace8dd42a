"""lxc.console.buffer.size: the monitor keeps the console's latest output in memory and hands
it out with CONSOLE_LOG (liblxc's console_log(); no LXC tool sends it), as LXC 5.0.2 does.
The same requests go to lxc-start's monitor and to lxcsm's, for the same container, and must
get the same answers; at the stop, what nobody read replaces the console log's content
(within lxc.console.size), as LXC's lxc_terminal_write_ringbuffer() does."""

from __future__ import annotations

import errno
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import CONSOLE_LOG_REQUEST, Cmd

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed"),
              pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")]

# init: numbered lines on the console, then a last marker, then it waits to be stopped.
def _script(lines: int) -> str:
    return (f"exec >/dev/console; i=0; while [ $i -lt {lines} ]; do echo line$i; i=$((i+1)); done; "
            "echo done; exec sleep 1000")


def _console_log(c, clear=False, read=True, read_max=0) -> tuple[int | None, bytes]:
    reply = command_client.call(c.lxcpath, c.name, Cmd.CONSOLE_LOG,
                                CONSOLE_LOG_REQUEST.pack(clear, read, read_max, False))
    assert reply is not None
    return reply.ret, reply.data


def _start(c, lxc: bool, lines: int, log: Path) -> None:
    log.unlink(missing_ok=True)
    command = ["--", "/bin/sh", "-c", _script(lines)]
    if lxc:
        result = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-d", *command],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    else:
        result = c.run("start", "-d", *command)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 30   # the log is written with the buffer: all of it is in once "done" is
    while not (log.exists() and b"done\r\n" in log.read_bytes()):
        assert time.monotonic() < deadline, "the console's output never arrived"
        time.sleep(0.05)


def _stop(c, lxc: bool) -> None:
    if lxc:
        result = subprocess.run(["lxc-stop", "-n", c.name, "-P", c.lxcpath, "-k"],
                                capture_output=True, text=True, timeout=60)
    else:
        result = c.run("stop", "-k")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while command_client.call(c.lxcpath, c.name, Cmd.GET_STATE) is not None:   # the monitor is gone
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _reads(c, lxc: bool, log: Path) -> tuple[list, bytes]:
    """The answers to a run of CONSOLE_LOG requests, and the console log after the stop."""
    _start(c, lxc, 300, log)
    try:
        answers = [_console_log(c, read_max=10), _console_log(c, read=False), _console_log(c),
                   _console_log(c), _console_log(c, clear=True)]
    finally:
        _stop(c, lxc)
    return answers, log.read_bytes()


def test_console_log_answers_as_lxc_starts_monitor_does(make_container, tmp_path):
    log = tmp_path / "console.log"
    c = make_container("busybox", ["lxc.console.buffer.size = 100", f"lxc.console.logfile = {log}"])

    under_lxc = _reads(c, lxc=True, log=log)
    under_lxcsm = _reads(c, lxc=False, log=log)

    assert under_lxcsm == under_lxc
    answers, logged = under_lxcsm
    everything = b"".join(f"line{n}\r\n".encode() for n in range(300)) + b"done\r\n"
    assert answers == [(0, everything[:10]), (0, b""), (0, everything[10:]), (-errno.ENODATA, b""),
                       (-errno.ENODATA, b"")]
    assert logged == everything   # all of it was read: the log is left as written


def _unread_at_stop(c, lxc: bool, log: Path) -> bytes:
    _start(c, lxc, 2000, log)
    _stop(c, lxc)
    return log.read_bytes()


# LXC reads the console in pieces of up to 1 KiB, as they come: which of the oldest bytes a
# full buffer still holds depends on those pieces, so the runs are compared by length and
# place in the output, not byte for byte.
EVERYTHING = b"".join(f"line{n}\r\n".encode() for n in range(2000)) + b"done\r\n"


@pytest.mark.parametrize("size", [None, "4096"])
def test_what_nobody_read_replaces_the_log_at_the_stop_as_under_lxc(make_container, tmp_path, size):
    log = tmp_path / "console.log"
    c = make_container("busybox", ["lxc.console.buffer.size = 8192", f"lxc.console.logfile = {log}",
                                   *([f"lxc.console.size = {size}"] if size else [])])

    under_lxc = _unread_at_stop(c, lxc=True, log=log)
    under_lxcsm = _unread_at_stop(c, lxc=False, log=log)

    if size is None:
        assert under_lxcsm == under_lxc == b""   # LXC 5.0.2 truncates the log, then writes 0 bytes
    else:
        # The oldest 4096 bytes of the 7-8 KiB the buffer holds: a stretch of the output
        # before its end.
        assert len(under_lxcsm) == len(under_lxc) == 4096
        assert under_lxcsm in EVERYTHING and under_lxc in EVERYTHING
        assert not under_lxcsm.endswith(b"done\r\n") and not under_lxc.endswith(b"done\r\n")
