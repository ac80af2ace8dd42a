"""A full disk under what lxcsm writes: its journal, its logs, the console log.

Each test makes its own small disk - a tmpfs mounted under its tmp_path, as
LXCPATH or as the console log's directory - fills it up for real (written
until ENOSPC) and unmounts it afterwards, whatever the test's outcome.  A
start on a full LXCPATH must fail in one line naming the file it could not
write and leave nothing behind; a stop, a console log and `lxcsm cleanup`
must do their work regardless.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.conftest import _monitor_pids

pytestmark = pytest.mark.root

ENOSPC = "No space left on device (ENOSPC)"


@contextlib.contextmanager
def _small_disk(point: Path, size: str):
    """A tmpfs of `size` at `point`, unmounted on the way out (lazily if something still holds it)."""
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", f"lxcsm-test-{uuid.uuid4().hex[:8]}",
                    str(point)], check=True)
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(point)], check=True)


# Mounted before make_container looks at the host's mount table, unmounted after it has looked
# again: request these before make_container.
@pytest.fixture
def lxcpath_disk(tmp_path):
    """A 4 MiB disk as the tests' LXCPATH (make_container puts it at tmp_path/lxc)."""
    with _small_disk(tmp_path / "lxc", "4m") as disk:
        yield disk


@pytest.fixture
def console_disk(tmp_path):
    with _small_disk(tmp_path / "console", "256k") as disk:
        yield disk


def fill(disk: Path) -> None:
    """Write a file until the disk says ENOSPC, ending with page-sized writes: no byte is left."""
    with open(disk / "filler", "ab", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0" * 4096):
            with pytest.raises(OSError) as full:
                while True:
                    out.write(chunk)
            assert full.value.errno == errno.ENOSPC
    assert os.statvfs(disk).f_bavail == 0


def _running(c, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while command_client.get_state(c.lxcpath, c.name) != command_socket.LxcState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _journal(c) -> Path:
    return c.config.parent / "lxcsm-host-changes.log"


@pytest.mark.parametrize("mode", ["-d", "-F"])
def test_a_start_on_a_full_lxcpath_fails_naming_the_journal_and_leaves_nothing(lxcpath_disk, make_container, mode):
    c = make_container()
    fill(lxcpath_disk)
    before = sorted(os.listdir(c.config.parent))
    result = c.run("start", mode, "--", "/bin/true")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # -d: the report's first line; -F: the log's ERROR line, on stderr before the report
    first = result.stderr.splitlines()[0]
    assert "failed_state=init_handler" in first or "monitor state init_handler failed" in first, result.stderr
    assert f"{ENOSPC}: {_journal(c)}" in first, result.stderr
    assert "the journal of host changes cannot be written" in first
    assert sorted(os.listdir(c.config.parent)) == before        # no journal, no half-written record
    assert c.leaks() == []


def test_a_stop_on_a_full_disk_removes_everything(lxcpath_disk, make_container):
    """The log (-o, at TRACE), the pid file, the journal and the flight record all live on the
    disk that fills up while the container runs: the stop still undoes every change."""
    c = make_container()
    log, pidfile = c.config.parent / "lxcsm.log", c.config.parent / "monitor.pid"
    started = c.run("start", "-d", "-o", str(log), "-l", "TRACE", "-p", str(pidfile), "--", "/bin/sleep", "600")
    assert started.returncode == 0, started.stderr
    _running(c)
    assert _journal(c).exists()
    fill(lxcpath_disk)
    stopped = c.run("stop", "-k")
    assert stopped.returncode == 0, stopped.stderr
    assert c.monitor_exited()
    assert c.leaks() == []                                      # the 8 lxc.monitor.* cgroups too
    assert not _journal(c).exists() and not pidfile.exists()
    assert "Traceback" not in log.read_text(errors="replace")


def test_cleanup_reads_past_a_cut_short_and_a_corrupt_journal_line(lxcpath_disk, make_container):
    """The monitor is killed on a full disk; its journal's last line was cut short and one
    line is garbage.  Cleanup names both lines, undoes everything else, and keeps the journal."""
    c = make_container()
    assert c.run("start", "-d", "--", "/bin/sleep", "600").returncode == 0
    _running(c)
    fill(lxcpath_disk)
    (monitor,) = _monitor_pids(c.lxcpath, c.name)
    os.kill(monitor, signal.SIGKILL)
    assert c.monitor_exited()
    assert any(leak.startswith("cgroup ") for leak in c.leaks())
    journal = _journal(c)
    lines = journal.read_bytes().splitlines(keepends=True)
    # Only lines whose change is gone with the monitor anyway are damaged (the socket, a kept
    # fd): everything the cgroup lines list must still be undone.
    assert b'"command_socket"' in lines[0] and b'"kept_fd"' in lines[-1], lines
    with open(journal, "r+b") as damaged:                        # in place: the disk is full
        damaged.write(b"\x00garbage" + b"#" * (len(lines[0]) - 9) + b"\n")
        damaged.truncate(sum(map(len, lines)) - 5)

    result = c.run("cleanup")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(rf"{re.escape(str(journal))}: line 1 is not a journal entry", result.stderr), result.stderr
    assert re.search(rf"{re.escape(str(journal))}: line {len(lines)} is cut short", result.stderr), result.stderr
    assert "undid cgroup " in result.stdout
    assert c.leaks() == []
    assert journal.exists()                                      # for a person to read the two lines


def test_a_console_log_filling_its_disk_drops_output_and_the_container_runs_on(console_disk, make_container,
                                                                               tmp_path):
    console_log = console_disk / "console.log"
    c = make_container(extra=[f"lxc.console.logfile = {console_log}"])
    log = tmp_path / "lxcsm.log"
    flooded = c.rootfs / "tmp" / "flooded"
    # 2 MB to the console, 8 times its disk: the pty holds far less, so by the time the flood is
    # written the monitor has failed to log most of it, drain after drain.
    flood = "head -c 2000000 /dev/zero | tr '\\0' x; touch /tmp/flooded; exec sleep 600"
    started = c.run("start", "-d", "-o", str(log), "-l", "WARN", "--", "/bin/sh", "-c", flood)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 30
        while not flooded.exists():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert os.statvfs(console_disk).f_bavail == 0               # the console log filled its disk
        assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING
        assert _monitor_pids(c.lxcpath, c.name)
        warnings = [line for line in log.read_text().splitlines() if "console output dropped" in line]
        assert len(warnings) == 1, warnings
        assert " WARN " in warnings[0] and f"file={console_log}" in warnings[0] and ENOSPC in warnings[0]
    finally:
        assert c.run("stop", "-k").returncode == 0
