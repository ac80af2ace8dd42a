"""`lxcsm stop`'s flags and rules, as lxc-stop 5.0.2 has them (src/lxc/tools/lxc_stop.c,
do_lxcapi_shutdown in lxccontainer.c); the real stops are tests/integration/test_stop.py."""

from __future__ import annotations

import argparse
import signal
import socket

import pytest

from lxcsm.engine.cli import main, stop
from lxcsm.engine.cli.options import Parser
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import STATE_MSG, LxcState


def parse(*argv: str) -> argparse.Namespace:
    parser = Parser(prog="lxcsm stop")
    stop.add_options(parser)
    return parser.parse_args(["-n", "c1", *argv])


@pytest.mark.parametrize("text, seconds", [
    ("0", 0), ("60", 60), ("-1", -1), ("+5", 5), (" 7", 7), ("\t7", 7), ("010", 8), ("0x10", 16), ("-0", 0),
])
def test_timeout_is_read_as_strtol_base_0(text, seconds):
    assert stop.timeout_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "5 ", "1_0", "08", "0x", "1.5", "--1", "five"])
def test_timeout_refuses_what_lxc_stop_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        stop.timeout_seconds(text)


@pytest.mark.parametrize("argv, timeout", [
    ((), 60), (("-k",), 0), (("-t", "5"), 5), (("-t", "-1"), -1), (("-W",), 0), (("-t", "9", "-W"), 0),
    (("-k", "-t", "0"), 0), (("-k", "-W"), 0), (("-k", "--nolock"), 0), (("-r",), 60), (("--nokill", "-t", "3"), 3),
])
def test_effective_timeout(argv, timeout):
    assert stop.effective_timeout(parse(*argv)) == timeout


@pytest.mark.parametrize("argv, message", [
    (("-t", "-2"), "invalid timeout -2"),
    (("-k", "--nokill"), "-k can't be used with --nokill"),
    (("-k", "-r"), "-k can't be used with -r"),
    (("-k", "-t", "5"), "-k doesn't allow timeouts"),
    (("-k", "-t", "-1"), "-k doesn't allow timeouts"),
    (("--nolock",), "--nolock may only be used with -k"),
])
def test_combinations_lxc_stop_refuses(argv, message):
    with pytest.raises(ValueError, match=message):
        stop.effective_timeout(parse(*argv))


@pytest.mark.parametrize("argv", [["-k", "--nokill"], ["-t", "5x"], ["--no-such-flag"], ["-t", "-3"]])
def test_usage_errors_exit_1_not_2_which_means_not_running(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:
        main(["stop", "-n", "c1", "-P", str(tmp_path), *argv])
    assert exited.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_a_container_that_is_not_running_is_exit_2(capsys, tmp_path):
    assert main(["stop", "-n", "c1", "-P", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "lxcsm: c1 is not running\n"


STATUS = """Name:\tsystemd
SigQ:\t0/63432
SigPnd:\t0000000000000000
ShdPnd:\t0000000000000000
SigBlk:\t{blocked:016x}
SigIgn:\t0000000000001000
SigCgt:\t00000001000004ec
"""


def mask(*signals: int) -> int:
    return sum(1 << (s - 1) for s in signals)


def test_blocks_reads_the_sigblk_mask():
    status = STATUS.format(blocked=mask(signal.SIGRTMIN + 3, signal.SIGCHLD))
    assert stop.blocks(status, signal.SIGRTMIN + 3)
    assert stop.blocks(status, signal.SIGCHLD)
    assert not stop.blocks(status, signal.SIGPWR)
    assert not stop.blocks("", signal.SIGRTMIN + 3)   # init gone: nothing read


@pytest.mark.parametrize("explicit, blocked, chosen", [
    (None, mask(signal.SIGRTMIN + 3), signal.SIGRTMIN + 3),      # systemd
    (None, mask(signal.SIGRTMIN + 4), signal.SIGPWR),            # another realtime signal: not systemd's halt
    (None, 0, signal.SIGPWR),                                    # busybox, sysvinit
    (signal.SIGUSR1, mask(signal.SIGRTMIN + 3), signal.SIGUSR1),  # lxc.signal.halt set: always wins
    (signal.SIGPWR, mask(signal.SIGRTMIN + 3), signal.SIGPWR),
])
def test_halt_signal_rule(explicit, blocked, chosen):
    assert stop.halt_signal(explicit, STATUS.format(blocked=blocked)) == chosen


@pytest.fixture
def waiter():
    ours, monitor = socket.socketpair()
    yield command_client.Reply(0, conn=ours), monitor
    monitor.close()


def test_wait_state_reads_the_state_message(waiter):
    reply, monitor = waiter
    monitor.send(STATE_MSG.pack(0, b"c1", LxcState.RUNNING))
    assert command_client.wait_state(reply, 5) == LxcState.RUNNING


def test_wait_state_gives_none_when_nothing_came(waiter):
    reply, _monitor = waiter
    assert command_client.wait_state(reply, 0) is None


def test_wait_state_reads_a_close_without_a_message_as_stopped(waiter):
    reply, monitor = waiter
    monitor.close()
    assert command_client.wait_state(reply, 5) == LxcState.STOPPED


def test_wait_state_refuses_a_state_that_is_none(waiter):
    reply, monitor = waiter
    monitor.send(STATE_MSG.pack(0, b"c1", 99))
    assert command_client.wait_state(reply, 5) is None
