"""A full disk under what lxcsm writes: its journal, its logs, the console log.

Each test makes its own small disks - tmpfs mounts under its tmp_path, over the
container's directory in LXCPATH or as the console log's directory - fills
them up for real (written until ENOSPC) and unmounts them afterwards, whatever
the test's outcome.  A start on a full LXCPATH must fail in one line naming
the file it could not write and leave nothing behind; a stop, a console log
and `lxcsm cleanup` must do their work regardless.

The disks are mounted in a mount namespace of the test's own (`PrivateMounts`),
and the lxcsm commands run in it: other test runs on the host, which check that
the host's mount table is the same after each test as before, never see them.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.integration.harness import LXCSM, monitor_pids

pytestmark = pytest.mark.root

ENOSPC = "No space left on device (ENOSPC)"
JOURNAL = "lxcsm-host-changes.log"


class PrivateMounts:
    """A mount namespace held by a sleeping process of the test's own.  Paths are the same
    inside as outside; `seen` turns one into the path through which the test process reaches
    what the namespace sees there (/proc/PID/root/...)."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        self.mounted: list[Path] = []
        deadline = time.monotonic() + 10
        while self._namespace() == os.readlink("/proc/self/ns/mnt"):   # until unshare has run
            assert time.monotonic() < deadline, "unshare did not make a mount namespace"
            time.sleep(0.01)

    def _namespace(self) -> str:
        return os.readlink(f"/proc/{self.holder.pid}/ns/mnt")

    def command(self, *argv: str) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--", *argv]

    def seen(self, path: Path) -> Path:
        return Path(f"/proc/{self.holder.pid}/root") / path.relative_to("/")

    def mount_disk(self, point: Path, size: str) -> Path:
        """A tmpfs of `size` on `point` (which exists), in the namespace only."""
        subprocess.run(self.command("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                    f"lxcsm-test-{uuid.uuid4().hex[:8]}", str(point)), check=True)
        self.mounted.append(point)
        return point

    def lxcsm(self, c, action: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`lxcsm ACTION -n NAME -P LXCPATH ARGS...` for container `c`, run in the namespace."""
        return subprocess.run(self.command(*LXCSM, action, "-n", c.name, "-P", c.lxcpath, *args),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        try:
            for point in reversed(self.mounted):
                if subprocess.run(self.command("umount", str(point))).returncode != 0:
                    subprocess.run(self.command("umount", "--lazy", str(point)), check=True)
        finally:
            self.holder.kill()   # the namespace, and anything still mounted in it, goes with it
            self.holder.wait()


# Requested before make_container: its teardown (leak checks, killing what a failed test left
# running in the namespace) then runs before the disks are unmounted.
@pytest.fixture
def private_mounts():
    mounts = PrivateMounts()
    try:
        yield mounts
    finally:
        mounts.close()


def on_small_disk(mounts: PrivateMounts, c, size: str = "4m") -> Path:
    """The container's directory in LXCPATH (config, rootfs; journal, logs, pid file to come)
    moved onto a disk of `size` of its own; the disk as the test process reaches it."""
    directory = c.config.parent
    mounts.mount_disk(directory, size)
    disk = mounts.seen(directory)
    for entry in os.listdir(directory):      # the host's copy, hidden in the namespace by the disk
        source = directory / entry
        if source.is_dir():
            shutil.copytree(source, disk / entry, symlinks=True)
        else:
            shutil.copy2(source, disk / entry)
    return disk


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


@pytest.mark.parametrize("mode", ["-d", "-F"])
def test_a_start_on_a_full_lxcpath_fails_naming_the_journal_and_leaves_nothing(private_mounts, make_container, mode):
    c = make_container()
    disk = on_small_disk(private_mounts, c)
    fill(disk)
    before = sorted(os.listdir(disk))
    result = private_mounts.lxcsm(c, "start", mode, "--", "/bin/true")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # -d: the report's first line; -F: the log's ERROR line, on stderr before the report
    first = result.stderr.splitlines()[0]
    assert "failed_state=init_handler" in first or "monitor state init_handler failed" in first, result.stderr
    assert f"{ENOSPC}: {c.config.parent / JOURNAL}" in first, result.stderr
    assert "the journal of host changes cannot be written" in first
    assert sorted(os.listdir(disk)) == before                   # no journal, no half-written record
    assert c.monitor_exited()                                   # -d: it reports, then exits
    assert c.leaks() == []


def test_a_stop_on_a_full_disk_removes_everything(private_mounts, make_container):
    """The log (-o, at TRACE), the pid file, the journal and the flight record all live on the
    disk that fills up while the container runs: the stop still undoes every change."""
    c = make_container()
    disk = on_small_disk(private_mounts, c)
    log, pidfile = c.config.parent / "lxcsm.log", c.config.parent / "monitor.pid"
    started = private_mounts.lxcsm(c, "start", "-d", "-o", str(log), "-l", "TRACE", "-p", str(pidfile),
                                   "--", "/bin/sleep", "600")
    assert started.returncode == 0, started.stderr
    _running(c)
    assert (disk / JOURNAL).exists() and (disk / pidfile.name).exists()
    fill(disk)
    stopped = private_mounts.lxcsm(c, "stop", "-k")
    assert stopped.returncode == 0, stopped.stderr
    assert c.monitor_exited()
    assert c.leaks() == []                                      # the 8 lxc.monitor.* cgroups too
    assert not (disk / JOURNAL).exists() and not (disk / pidfile.name).exists()
    assert "Traceback" not in (disk / log.name).read_text(errors="replace")


def test_cleanup_reads_past_a_cut_short_and_a_corrupt_journal_line(private_mounts, make_container):
    """The monitor is killed on a full disk; its journal's last line was cut short and one
    line is garbage.  Cleanup names both lines, undoes everything else, and keeps the journal."""
    c = make_container()
    disk = on_small_disk(private_mounts, c)
    assert private_mounts.lxcsm(c, "start", "-d", "--", "/bin/sleep", "600").returncode == 0
    _running(c)
    fill(disk)
    (monitor,) = monitor_pids(c.lxcpath, c.name)
    os.kill(monitor, signal.SIGKILL)
    assert c.monitor_exited()
    assert any(leak.startswith("cgroup ") for leak in c.leaks())
    journal = disk / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    # Only lines whose change is gone with the monitor anyway are damaged (the socket, a kept
    # fd): everything the cgroup lines list must still be undone.
    assert b'"command_socket"' in lines[0] and b'"kept_fd"' in lines[-1], lines
    with open(journal, "r+b") as damaged:                        # in place: the disk is full
        damaged.write(b"\x00garbage" + b"#" * (len(lines[0]) - 9) + b"\n")
        damaged.truncate(sum(map(len, lines)) - 5)

    result = private_mounts.lxcsm(c, "cleanup")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    named = re.escape(str(c.config.parent / JOURNAL))
    assert re.search(rf"{named}: line 1 is not a journal entry", result.stderr), result.stderr
    assert re.search(rf"{named}: line {len(lines)} is cut short", result.stderr), result.stderr
    assert "undid cgroup " in result.stdout
    assert c.leaks() == []
    assert journal.exists()                                      # for a person to read the two lines


def test_a_console_log_filling_its_disk_drops_output_and_the_container_runs_on(private_mounts, make_container,
                                                                               tmp_path):
    (tmp_path / "console").mkdir()
    console_disk = private_mounts.mount_disk(tmp_path / "console", "256k")
    console_log = console_disk / "console.log"
    c = make_container(extra=[f"lxc.console.logfile = {console_log}"])
    log = tmp_path / "lxcsm.log"
    flooded = c.rootfs / "tmp" / "flooded"
    # 2 MB to the console, 8 times its disk: the pty holds far less, so by the time the flood is
    # written the monitor has failed to log most of it, drain after drain.  To /dev/console: a
    # daemon whose console is a pty of the host's has /dev/null as stdout, as under lxc-start -d.
    flood = "exec >/dev/console; head -c 2000000 /dev/zero | tr '\\0' x; touch /tmp/flooded; exec sleep 600"
    started = private_mounts.lxcsm(c, "start", "-d", "-o", str(log), "-l", "WARN", "--", "/bin/sh", "-c", flood)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 30
        while not flooded.exists():
            assert time.monotonic() < deadline, log.read_text()
            assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING, log.read_text()
            time.sleep(0.05)
        assert os.statvfs(private_mounts.seen(console_disk)).f_bavail == 0   # the log filled its disk
        assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING
        assert monitor_pids(c.lxcpath, c.name)
        warnings = [line for line in log.read_text().splitlines() if "console output dropped" in line]
        assert len(warnings) == 1, warnings
        assert " WARN " in warnings[0] and f"file={console_log}" in warnings[0] and ENOSPC in warnings[0]
    finally:
        assert private_mounts.lxcsm(c, "stop", "-k").returncode == 0


def test_a_pid_file_on_a_full_disk_fails_the_start_naming_it_and_is_not_left_behind(private_mounts, make_container,
                                                                                    tmp_path):
    (tmp_path / "run").mkdir()
    run_disk = private_mounts.mount_disk(tmp_path / "run", "64k")
    fill(private_mounts.seen(run_disk))
    c = make_container()
    pidfile = run_disk / "monitor.pid"
    result = private_mounts.lxcsm(c, "start", "-d", "-p", str(pidfile), "--", "/bin/sleep", "600")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"monitor state init_handler failed: {ENOSPC}: {pidfile}" in result.stderr.splitlines()[0], result.stderr
    assert not private_mounts.seen(pidfile).exists()
    assert not (c.config.parent / JOURNAL).exists()
