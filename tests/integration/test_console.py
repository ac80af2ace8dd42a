"""The console and ttys as LXC's users meet them: a container made by LXC's own busybox
template (lxc.pty.max = 1, lxc.tty.max = 5) starts unmodified apart from its network; its
console is a pty of the host's devpts and its devpts is sized pty.max + tty.max, as LXC does;
the askfirst shell on the console has job control under lxc-console -t 0; a tty whose shell
logs out stays connected under lxc-console -t N; an interactive lxc-attach gets its pty from
the container's devpts (GET_DEVPTS_FD); `lxcsm start -F` from a terminal relays it to the
console (boot output, "Please press Enter", Ctrl-C, window size) until poweroff gives it back,
and `-c TERMINAL` relays that terminal the same way (what is no terminal is refused); the
console log kept within lxc.console.size, truncated or rotated (lxc.console.rotate)."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
import time

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.integration.harness import LXCSM, Container
from tests.integration.test_ttys import Terminal, _running, _tty

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not shutil.which("lxc-create"), reason="LXC's tools are not installed")]

ASKFIRST = b"Please press Enter to activate this console"


@pytest.fixture
def busybox_template(tmp_path, request):
    """A container made by `lxc-create -t busybox`, its network lines removed (no lxcbr0 here);
    stopped and its monitor gone at the end, whatever happened."""
    name = f"w4bb{os.getpid()}{request.node.name[-12:].replace('[', '').replace(']', '')}"[:60]
    lxcpath = tmp_path / "lxc"
    lxcpath.mkdir()
    made = subprocess.run(["lxc-create", "-t", "busybox", "-n", name, "-P", str(lxcpath)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    config = lxcpath / name / "config"
    lines = config.read_text().splitlines(keepends=True)
    assert "lxc.tty.max = 5\n" in lines and "lxc.pty.max = 1\n" in lines   # what this test is about
    config.write_text("".join(line for line in lines if not line.startswith("lxc.net.")))
    c = Container(name, str(lxcpath), lxcpath / name / "rootfs", config)
    yield c
    stopped = c.run("stop", "-k")
    assert c.monitor_exited(30), stopped.stderr


def _init_pid(c) -> int:
    return command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value


def _console_rdev(c) -> int:
    return os.stat(f"/proc/{_init_pid(c)}/root/dev/console").st_rdev


def _tty_nr(rdev: int) -> int:
    """A device number as /proc/PID/stat's tty_nr encodes it."""
    major, minor = os.major(rdev), os.minor(rdev)
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def _wait_foreground(rdev: int, comm: str, timeout: float = 10) -> None:
    """Wait until a process named `comm` is the foreground job of the terminal `rdev`: a Ctrl-C
    typed before that would reach the shell's line editor (ISIG off), not the job."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    name, _, rest = stat.read().partition(" (")[2].rpartition(") ")
            except OSError:
                continue
            fields = rest.split()   # state ppid pgrp session tty_nr tpgid ...
            if name == comm and int(fields[4]) == _tty_nr(rdev) and fields[2] == fields[5]:
                return
        assert time.monotonic() < deadline, f"no {comm} in the foreground of the console"
        time.sleep(0.02)


def _interactive(argv: list[str]) -> tuple[int, Terminal]:
    """`argv` on a terminal of its own, as a person would run it."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    return pid, Terminal(fd)


def _end(pid: int, terminal: Terminal) -> None:
    """`pid` killed if it still runs and reaped if not yet; its terminal closed."""
    try:
        if not os.waitpid(pid, os.WNOHANG)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass   # the test reaped it
    os.close(terminal.fd)


def test_the_busybox_template_starts_unmodified_with_the_console_on_the_hosts_devpts(busybox_template):
    c = busybox_template
    assert c.run("start", "-d").returncode == 0
    _running(c)
    root = f"/proc/{_init_pid(c)}/root"
    console, own_ptmx = os.stat(f"{root}/dev/console"), os.stat(f"{root}/dev/pts/ptmx")
    assert console.st_dev == os.stat("/dev/pts/ptmx").st_dev != own_ptmx.st_dev
    with open(f"/proc/{_init_pid(c)}/mountinfo") as mountinfo:
        pts = [line for line in mountinfo if line.split()[4] == "/dev/pts"]
    assert len(pts) == 1 and "max=6" in pts[0]                    # pty.max 1 + tty.max 5
    tty1 = _tty(c, 1)                                               # the template's getty
    assert tty1.ret == 0
    terminal = Terminal(tty1.fds[0])
    deadline = time.monotonic() + 10
    while b"login:" not in terminal.seen:
        assert time.monotonic() < deadline, terminal.seen
        os.write(terminal.fd, b"\r")
        terminal.read(0.5)
    os.close(tty1.fds[0])
    tty1.conn.close()


@pytest.mark.skipif(not shutil.which("lxc-console"), reason="LXC's tools are not installed")
def test_lxc_console_0_gets_the_askfirst_shell_with_job_control(busybox_template):
    c = busybox_template
    assert c.run("start", "-d").returncode == 0
    _running(c)
    pid, console = _interactive(["lxc-console", "-n", c.name, "-P", c.lxcpath, "-t", "0"])
    try:
        console.converse(b"", b"Ctrl+a q")
        console.prompt()
        assert b"job control turned off" not in console.seen and b"can't access tty" not in console.seen
        console.converse(b"sleep 100\r", b"sleep 100")
        _wait_foreground(_console_rdev(c), "sleep")
        os.write(console.fd, b"\x03")                              # Ctrl-C reaches the foreground job
        assert b"back4" in console.converse(b"echo back$((2+2))\r", b"back4")
        os.write(console.fd, b"\x01q")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        _end(pid, console)


@pytest.mark.skipif(not shutil.which("lxc-console"), reason="LXC's tools are not installed")
def test_lxc_console_stays_connected_when_the_ttys_shell_logs_out(make_container):
    c = make_container("busybox", ["lxc.tty.max = 1"])
    # init: a shell on tty1, again and again, with a pause in which nobody has tty1 open.
    loop = "while true; do sh </dev/tty1 >/dev/tty1 2>&1; sleep 0.5; done"
    assert c.run("start", "-d", "--", "/bin/sh", "-c", loop).returncode == 0
    pid, console = _interactive(["lxc-console", "-n", c.name, "-P", c.lxcpath, "-t", "1"])
    try:
        _running(c)
        console.converse(b"", b"Ctrl+a q")
        console.prompt()
        console.converse(b"exit\r", b"exit")                         # the shell logs out
        console.seen = b""
        console.prompt()                                            # and the next one answers
        assert b"again6" in console.converse(b"echo again$((3+3))\r", b"again6")
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)                # lxc-console is still connected
    finally:
        _end(pid, console)
        assert c.run("stop", "-k").returncode == 0


@pytest.mark.skipif(not shutil.which("lxc-attach"), reason="LXC's tools are not installed")
def test_an_interactive_lxc_attach_gets_a_pty_of_the_containers_devpts(busybox_template):
    c = busybox_template
    assert c.run("start", "-d").returncode == 0
    _running(c)
    devpts = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_DEVPTS_FD)
    assert devpts.ret == 0 and len(devpts.fds) == 1
    assert os.fstat(devpts.fds[0]).st_dev == os.stat(f"/proc/{_init_pid(c)}/root/dev/pts/ptmx").st_dev
    os.close(devpts.fds[0])
    check = ('if [ "$(stat -L -c %d /proc/self/fd/0)" = "$(stat -c %d /dev/pts/ptmx)" ];'
             ' then echo own""-devpts; else echo other""-devpts; fi')
    pid, attached = _interactive(["lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", "/bin/sh", "-c", check])
    try:
        out = attached.converse(b"", b"-devpts")
        assert b"own-devpts" in out
    finally:
        _end(pid, attached)


def test_start_F_relays_the_terminal_to_the_console_until_poweroff(busybox_template):
    c = busybox_template
    pid, user = _interactive([*LXCSM, "start", "-F", "-n", c.name, "-P", c.lxcpath])
    cooked = termios.tcgetattr(user.fd)[3]
    try:
        user.converse(b"", ASKFIRST, timeout=30)                     # init's console, boot output and all
        assert not termios.tcgetattr(user.fd)[3] & (termios.ICANON | termios.ECHO | termios.ISIG)   # raw
        user.prompt()
        assert b"job control turned off" not in user.seen
        fcntl.ioctl(user.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))   # SIGWINCH to lxcsm
        assert b"33 111" in user.converse(b"stty size\r", b"33 111")
        user.converse(b"sleep 100\r", b"sleep 100")
        _running(c)
        _wait_foreground(_console_rdev(c), "sleep")
        os.write(user.fd, b"\x03")                                  # Ctrl-C: to the shell's job, not lxcsm
        assert b"back4" in user.converse(b"echo back$((2+2))\r", b"back4")
        os.write(user.fd, b"poweroff\r")
        _, status = os.waitpid(pid, 0)                              # poweroff gives the terminal back
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert termios.tcgetattr(user.fd)[3] == cooked               # as it was before
    finally:
        _end(pid, user)


def test_start_c_relays_a_terminal_to_the_console_and_refuses_what_is_none(busybox_template):
    c = busybox_template
    refused = c.run("start", "-d", "-c", "/dev/null")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("lxcsm: -c /dev/null: not a terminal")
    master, peer = os.openpty()
    user = Terminal(master)
    try:
        started = c.run("start", "-d", "-c", os.ttyname(peer))
        assert started.returncode == 0, started.stderr
        os.close(peer)   # the monitor has its own
        peer = -1
        user.converse(b"", ASKFIRST, timeout=30)
        user.prompt()
        assert b"relayed8" in user.converse(b"echo relayed$((4+4))\r", b"relayed8")
        assert _tty(c, 0).ret < 0                                   # the console is that terminal's
    finally:
        os.close(master)
        if peer >= 0:
            os.close(peer)


@pytest.mark.parametrize("rotate", ["0", "1"])
def test_the_console_log_is_kept_within_lxc_console_size(make_container, tmp_path, rotate):
    log = tmp_path / "console.log"
    c = make_container("busybox", [f"lxc.console.logfile = {log}", "lxc.console.size = 1M",   # LXC reads 1 byte: a page
                                   f"lxc.console.rotate = {rotate}"])
    page = os.sysconf("SC_PAGE_SIZE")
    # to /dev/console: a daemon whose console is the host's pty has /dev/null as stdout (as LXC's)
    lines = "exec >/dev/console; i=0; while [ $i -lt 400 ]; do echo line-$i-of-the-console-log; i=$((i+1)); done"
    assert c.run("start", "-d", "--", "/bin/sh", "-c", lines).returncode == 0
    assert c.monitor_exited(30)
    kept = log.read_bytes()
    assert kept.endswith(b"line-399-of-the-console-log\r\n") and 0 < len(kept) <= page
    assert b"line-0-" not in kept                                   # 400 lines are more than a page
    rotated = tmp_path / "console.log.1"
    if rotate == "1":
        assert rotated.stat().st_size == page and b"line-" in rotated.read_bytes()
    else:
        assert not rotated.exists()
