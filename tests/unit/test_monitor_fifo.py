"""engine/protocol/monitor_fifo.py: state changes written to lxc-monitord's FIFO as LXC writes them."""

from __future__ import annotations

import os

import pytest

from lxcsm.engine.protocol import monitor_fifo
from lxcsm.engine.protocol.command_socket import STATE_MSG, LxcState


@pytest.fixture
def fifo(tmp_path):
    """A reader on RUNDIR/lxc/LXCPATH/monitor-fifo, as lxc-monitord makes it."""
    lxcpath = "/var/lib/lxc-test"
    path = monitor_fifo.fifo_path(lxcpath, str(tmp_path))
    os.makedirs(os.path.dirname(path))
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield lxcpath, str(tmp_path), reader
    os.close(reader)


def test_the_fifo_is_where_lxc_looks_for_it():
    assert monitor_fifo.fifo_path("/var/lib/lxc", "/run") == "/run/lxc//var/lib/lxc/monitor-fifo"


def test_a_state_change_is_one_lxc_msg(fifo):
    lxcpath, run, reader = fifo
    assert monitor_fifo.announce_state(lxcpath, "c1", LxcState.RUNNING, run) is None
    assert STATE_MSG.unpack(os.read(reader, 4096)) == (monitor_fifo.MSG_STATE, b"c1".ljust(256, b"\0"), 2)


def test_the_exit_code_is_init_s_wait_status(fifo):
    lxcpath, run, reader = fifo
    assert monitor_fifo.announce_exit_code(lxcpath, "c1", 0x0900, run) is None   # killed by SIGKILL
    kind, _name, value = STATE_MSG.unpack(os.read(reader, 4096))
    assert (kind, value) == (monitor_fifo.MSG_EXIT_CODE, 0x0900)


def test_a_long_name_is_cut_and_stays_nul_terminated(fifo):
    lxcpath, run, reader = fifo
    monitor_fifo.announce_state(lxcpath, "n" * 300, LxcState.STOPPED, run)
    _kind, name, _value = STATE_MSG.unpack(os.read(reader, 4096))
    assert name == b"n" * 255 + b"\0"


def test_nobody_listening_is_not_an_error(tmp_path):
    # No FIFO at all, and a FIFO without a reader (open fails with ENXIO): both silently dropped.
    assert monitor_fifo.announce_state("/var/lib/lxc", "c1", LxcState.RUNNING, str(tmp_path)) is None
    path = monitor_fifo.fifo_path("/x", str(tmp_path))
    os.makedirs(os.path.dirname(path))
    os.mkfifo(path)
    assert monitor_fifo.announce_state("/x", "c1", LxcState.RUNNING, str(tmp_path)) is None


def test_another_failure_is_said(tmp_path):
    path = monitor_fifo.fifo_path("/x", str(tmp_path))
    os.makedirs(path)   # a directory where the FIFO should be: EISDIR
    error = monitor_fifo.announce_state("/x", "c1", LxcState.RUNNING, str(tmp_path))
    assert error is not None and error.startswith(f"cannot open {path}: ")
