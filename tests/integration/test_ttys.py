"""The container's terminals: lxc.tty.max ptys on /dev/ttyN and its /dev/console, whose
masters the monitor hands to lxc-console clients (GET_TTY_FD; for tty 0, the console, a
proxy pty the monitor relays to it), one client per tty at a time; the console is drained
into lxc.console.logfile meanwhile."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import time

import pytest

from lxcsm.engine.protocol import command_client, command_socket

pytestmark = pytest.mark.root

# init: a shell reading commands from /dev/tty1, again and again.
SHELL_ON_TTY1 = "while true; do sh </dev/tty1 >/dev/tty1 2>&1; done"


def _running(c, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while command_client.get_state(c.lxcpath, c.name) != command_socket.LxcState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _tty(c, number: int) -> command_client.Reply:
    """GET_TTY_FD as lxc-console sends it: the tty number, sign-extended, inline."""
    return command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_TTY_FD, inline=number, keep=True)


# busybox's shell asks its terminal where the cursor is (DSR, ESC [ 6 n) right after each
# prompt it shows while no input is pending: the output then ends with that query, not "# ".
CURSOR_QUERY, CURSOR_REPORT = b"\x1b[6n", b"\x1b[1;1R"   # row 1, column 1: nothing for ash to adjust
ESCAPE = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]")         # a CSI sequence (ECMA-48)
PROMPT = re.compile(rb"# ?$")                               # root's prompt, at the end of the output


class Terminal:
    """The far end of a tty, as a person's terminal would be: it reads what the shell writes,
    answers the cursor-position queries in it, and finds the prompt with the escapes left out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = b""
        self.answered = 0   # cursor queries answered so far (one may arrive split across reads)

    def read(self, timeout: float) -> bool:
        """Read what the tty has within `timeout` seconds; False if nothing came."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return False
        self.seen += os.read(self.fd, 4096)
        queries = self.seen.count(CURSOR_QUERY)
        if queries > self.answered:
            os.write(self.fd, CURSOR_REPORT * (queries - self.answered))
            self.answered = queries
        return True

    def prompt(self, timeout: float = 10) -> None:
        """Wait for the shell's prompt: typed before the shell reads its terminal, a line may
        be lost, so a carriage return is sent until a prompt answers."""
        deadline = time.monotonic() + timeout
        while not PROMPT.search(ESCAPE.sub(b"", self.seen).rstrip(b"\r\n")):
            assert time.monotonic() < deadline, self.seen
            os.write(self.fd, b"\r")
            self.read(0.5)

    def converse(self, line: bytes, expect: bytes, timeout: float = 10) -> bytes:
        """Type `line`, then read until `expect` is among what came back (which is returned)."""
        self.seen = b""
        self.answered = 0
        os.write(self.fd, line)
        deadline = time.monotonic() + timeout
        while expect not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0 and self.read(left), self.seen
        return self.seen


def test_a_tty_master_reaches_the_shell_on_dev_tty1_and_is_held_by_one_client(make_container):
    c = make_container("busybox", ["lxc.tty.max = 2"])
    assert c.run("start", "-d", "--", "/bin/sh", "-c", SHELL_ON_TTY1).returncode == 0
    try:
        _running(c)
        first = _tty(c, 1)
        assert first.ret == 0 and first.value == 1 and len(first.fds) == 1
        tty1 = Terminal(first.fds[0])
        tty1.prompt()
        out = tty1.converse(b"echo marker$((6*7)); tty\n", b"marker42")
        assert b"marker42" in out
        busy = _tty(c, 1)
        assert busy.ret < 0 and not busy.fds                       # "Denied access to tty"
        other = _tty(c, -1)
        assert other.ret == 0 and other.value == 2                 # the first free one
        for reply in (first, other):
            os.close(reply.fds[0])
            reply.conn.close()
        deadline = time.monotonic() + 5
        while (again := _tty(c, 1)).ret != 0:                       # freed when its client left
            assert time.monotonic() < deadline
            time.sleep(0.02)
        terminal = Terminal(again.fds[0])
        terminal.prompt()
        assert terminal.converse(b"echo again$((1+1))\n", b"again2")
        os.close(again.fds[0])
        again.conn.close()
        assert _tty(c, 3).ret < 0                                   # there is no tty 3
    finally:
        assert c.run("stop", "-k").returncode == 0


@pytest.mark.skipif(not shutil.which("lxc-console"), reason="LXC's tools are not installed")
def test_lxc_console_talks_to_the_tty(make_container):
    c = make_container("busybox", ["lxc.tty.max = 1"])
    assert c.run("start", "-d", "--", "/bin/sh", "-c", SHELL_ON_TTY1).returncode == 0
    try:
        _running(c)
        # lxc-console wants a terminal: it gets one of its own; Ctrl-a q ends the session.
        pid, terminal = pty.fork()
        if pid == 0:
            os.execvp("lxc-console", ["lxc-console", "-n", c.name, "-P", c.lxcpath, "-t", "1"])
        try:
            console = Terminal(terminal)
            console.converse(b"", b"Ctrl+a q")                       # its banner: connected
            console.prompt()
            assert b"via42console" in console.converse(b"echo via$((40+2))console\r", b"via42console")
            os.write(terminal, b"\x01q")
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        finally:
            os.close(terminal)
    finally:
        assert c.run("stop", "-k").returncode == 0


def test_a_daemons_console_goes_to_the_console_log_and_to_lxc_console_0(make_container, tmp_path):
    """busybox init in a daemonised container writes to its console (stdio, /dev/console):
    the monitor drains it into lxc.console.logfile; tty 0 relays the console to a client."""
    log = tmp_path / "console.log"
    c = make_container("busybox", [f"lxc.console.logfile = {log}"])
    assert c.run("start", "-d").returncode == 0                   # /sbin/init: busybox init
    try:
        _running(c)
        deadline = time.monotonic() + 10
        while b"Please press Enter to activate this console" not in (log.read_bytes() if log.exists() else b""):
            assert time.monotonic() < deadline, log.read_bytes() if log.exists() else "no console log"
            time.sleep(0.05)
        console = _tty(c, 0)
        assert console.ret == 0 and console.value == 0 and len(console.fds) == 1
        assert _tty(c, 0).ret < 0                                   # one client at a time
        terminal = Terminal(console.fds[0])
        terminal.prompt()                                           # Enter activates the askfirst shell
        assert b"onconsole7" in terminal.converse(b"echo onconsole$((3+4))\n", b"onconsole7")
        os.close(console.fds[0])
        console.conn.close()
    finally:
        assert c.run("stop", "-k").returncode == 0


def test_foreground_init_keeps_lxcsms_stdio_and_console_none_makes_none(make_container):
    c = make_container("busybox", ["lxc.console.path = none"])
    result = c.start_fg("/bin/sh", "-c", "echo out; ls /dev/console 2>&1")
    assert result.returncode != 0 and result.stdout.startswith("out\n")
    assert "No such file" in result.stdout
    c = make_container("busybox")
    result = c.start_fg("/bin/sh", "-c", "echo out; test -c /dev/console && echo console-there")
    assert result.returncode == 0 and result.stdout == "out\nconsole-there\n"
