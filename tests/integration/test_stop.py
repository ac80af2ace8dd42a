"""`lxcsm stop` on real containers, flag by flag as lxc-stop 5.0.2 means them.

Init here is a small Python program (INIT, run by the host's python3 through the
hostbind rootfs's /usr) that blocks the signals it is told to, as systemd
blocks SIGRTMIN+3 to read it from a signalfd, handles others, and on the first
one it receives writes its number to /got and exits 0 (with hold=1: once the
test has made /proceed).  A pid namespace's init
never receives a signal it neither blocks nor handles, so /got says exactly
which signal the stop chose.  Where a wrong choice would make a stop wait, the
test uses --nokill: a wrong signal fails the test instead of being covered up
by the kill that follows the timeout.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.integration.harness import LXCSM, wait_for

pytestmark = pytest.mark.root

RUNNING, STOPPED = command_socket.LxcState.RUNNING, command_socket.LxcState.STOPPED

INIT = r"""
import os, signal, sys, time

def signum(name):
    return signal.SIGRTMIN + int(name[6:]) if name.startswith("RTMIN+") else getattr(signal, "SIG" + name)

options = dict(argument.split("=", 1) for argument in sys.argv[1:])
blocked = {signum(name) for name in options.get("block", "").split(",") if name}
handled = {signum(name) for name in options.get("handle", "").split(",") if name}

def finish(got, _frame=None):
    with open("/got", "w") as out:
        out.write(str(int(got)))
    while options.get("hold") and not os.path.exists("/proceed"):   # the test says when to go on
        time.sleep(0.02)
    sys.exit(0)

signal.signal(signal.SIGINT, signal.SIG_DFL)   # Python's KeyboardInterrupt handler is not this init's
for number in handled:
    signal.signal(number, finish)
signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
open("/ready", "w").close()
while True:
    # Polled, as systemd reads its signalfd: sigwait() would unblock the signals while it
    # waits, and a stop looking at init's blocked signals (SigBlk) would see none.
    pending = signal.sigpending() & blocked
    if pending:
        finish(min(pending))
    time.sleep(0.02)
"""


def start_python_init(c, *options: str) -> None:
    """Start `c` with INIT as init and wait until it has set up its signals."""
    (c.rootfs / "init.py").write_text(INIT)
    started = c.run("start", "-d", "--", "/usr/bin/python3", "/init.py", *options)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 30
    while not (c.rootfs / "ready").exists():
        assert time.monotonic() < deadline, "init never got ready"
        time.sleep(0.02)


def got(c) -> int | None:
    """The signal init received, or None if it received none (killed, or still running)."""
    path = c.rootfs / "got"
    return int(path.read_text()) if path.exists() else None




def init_pid(c) -> int:
    return command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value


def test_an_init_that_blocks_sigrtmin_3_is_halted_with_it(make_container):
    """systemd's case: it ignores SIGPWR, blocks SIGRTMIN+3 and shuts down on it."""
    c = make_container()
    start_python_init(c, "block=RTMIN+3")
    stopped = c.run("stop", "--nokill", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert got(c) == signal.SIGRTMIN + 3
    assert c.monitor_exited() and c.leaks() == []


def test_an_init_that_does_not_block_it_gets_sigpwr(make_container):
    c = make_container()
    start_python_init(c, "handle=PWR,RTMIN+3")
    stopped = c.run("stop", "--nokill", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert got(c) == signal.SIGPWR


def test_lxc_signal_halt_in_the_config_wins_over_a_blocked_sigrtmin_3(make_container):
    c = make_container(extra=["lxc.signal.halt = SIGUSR1"])
    start_python_init(c, "block=RTMIN+3,USR1")
    stopped = c.run("stop", "--nokill", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert got(c) == signal.SIGUSR1


@pytest.mark.skipif(shutil.which("lxc-stop") is None, reason="Debian's lxc is not installed")
def test_lxc_stop_makes_the_same_choice(make_container):
    """The rule is lxc-stop's: LXC's own lxc-stop halts the same init with the same signal."""
    c = make_container()
    start_python_init(c, "block=RTMIN+3")
    stopped = subprocess.run(["lxc-stop", "-n", c.name, "-P", c.lxcpath, "--nokill", "-t", "30"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert stopped.returncode == 0, stopped.stderr
    assert got(c) == signal.SIGRTMIN + 3
    assert c.monitor_exited() and c.leaks() == []


def test_nokill_leaves_a_container_that_ignores_the_halt_running_and_fails(make_container):
    c = make_container()
    start_python_init(c)                         # blocks and handles nothing: every halt is dropped
    refused = c.run("stop", "--nokill", "-t", "1")
    assert refused.returncode == 1
    assert "did not stop within 1 s" in refused.stderr and "--nokill" in refused.stderr
    assert command_client.get_state(c.lxcpath, c.name) == RUNNING
    killed = c.run("stop", "-t", "1")            # without --nokill: the halt, then the kill
    assert killed.returncode == 0, killed.stderr
    assert got(c) is None and c.monitor_exited() and c.leaks() == []


@pytest.mark.parametrize("flags", [("-t", "0"), ("-W",)])
def test_t_0_and_nowait_send_the_halt_and_return_without_killing(make_container, flags):
    c = make_container()
    start_python_init(c, "handle=PWR", "hold=1")
    init = init_pid(c)
    sent = c.run("stop", *flags)
    assert sent.returncode == 0, sent.stderr
    assert wait_for(lambda: got(c) == signal.SIGPWR)
    assert command_client.get_state(c.lxcpath, c.name) == RUNNING and init_pid(c) == init
    (c.rootfs / "proceed").touch()
    assert wait_for(lambda: command_client.get_state(c.lxcpath, c.name) == STOPPED)
    assert c.monitor_exited() and c.leaks() == []


def test_t_0_on_an_init_that_ignores_the_halt_neither_waits_nor_kills(make_container):
    c = make_container()
    start_python_init(c)
    assert c.run("stop", "-t", "0").returncode == 0
    assert command_client.get_state(c.lxcpath, c.name) == RUNNING
    assert c.run("stop", "-k").returncode == 0


def test_t_minus_1_waits_as_long_as_the_shutdown_takes(make_container):
    c = make_container()
    start_python_init(c, "handle=PWR", "hold=1")
    with subprocess.Popen([*LXCSM, "stop", "-n", c.name, "-P", c.lxcpath, "-t", "-1"],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as stop:
        assert wait_for(lambda: got(c) == signal.SIGPWR)
        assert stop.poll() is None                # init is holding its shutdown: stop still waits
        (c.rootfs / "proceed").touch()
        assert stop.wait(timeout=60) == 0, stop.stderr.read()
    assert c.monitor_exited() and c.leaks() == []


def test_kill_sends_lxc_signal_stop_at_once(make_container):
    c = make_container()
    start_python_init(c, "handle=PWR")
    killed = c.run("stop", "-k")
    assert killed.returncode == 0, killed.stderr
    assert got(c) is None                         # SIGKILL: no halt handled
    assert c.monitor_exited() and c.leaks() == []


def test_reboot_waits_until_the_container_runs_again(make_container):
    # busybox init reboots on SIGTERM: reboot(2) in a pid namespace ends it by SIGHUP,
    # and the monitor starts the next boot.
    c = make_container("busybox", extra=["lxc.signal.reboot = SIGTERM"])
    assert c.run("start").returncode == 0
    first = init_pid(c)
    rebooted = c.run("stop", "-r", "-t", "30")
    assert rebooted.returncode == 0, rebooted.stderr
    assert command_client.get_state(c.lxcpath, c.name) == RUNNING
    assert init_pid(c) != first
    assert c.run("stop", "-k").returncode == 0
    assert c.monitor_exited() and c.leaks() == []


def test_reboot_that_never_comes_fails_without_killing(make_container):
    c = make_container()
    start_python_init(c)                          # SIGINT, the default reboot signal, is dropped
    refused = c.run("stop", "-r", "-t", "1")
    assert refused.returncode == 1
    assert "did not run again within 1 s of SIGINT" in refused.stderr
    assert command_client.get_state(c.lxcpath, c.name) == RUNNING
    assert c.run("stop", "-k").returncode == 0


def test_reboot_of_an_init_that_halts_instead_says_so(make_container):
    c = make_container(extra=["lxc.signal.reboot = SIGUSR1"])
    start_python_init(c, "handle=USR1")           # exits on it: the container stops
    refused = c.run("stop", "-r", "-t", "30")
    assert refused.returncode == 1
    assert "stopped on SIGUSR1 instead of rebooting" in refused.stderr
    assert c.monitor_exited() and c.leaks() == []


def test_not_running_is_exit_2_and_usage_errors_exit_1(make_container):
    c = make_container()
    assert c.run("stop").returncode == 2
    assert c.run("stop", "-q").stderr == ""
    for flags in (["-k", "--nokill"], ["-k", "-r"], ["-k", "-t", "5"], ["--nolock"], ["-t", "-2"],
                  ["-t", "5x"], ["--no-such-flag"]):
        result = c.run("stop", *flags)
        assert result.returncode == 1, flags
        assert result.stderr.count("\n") == 1, result.stderr
