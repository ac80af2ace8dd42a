"""Timing a command: started in its own session, timed until a pidfd says it exited; the statistics.

Popen.wait(timeout) polls with sleeps that double up to 50 ms, so a command
would only be seen to end at its next poll and every time measured would be
rounded up to a step.  A pidfd is readable the moment the process exits: that
is the end of every time the bench takes, for its own children (`wait_for`)
and for any process, such as a container's monitor (`wait_exited`).  The
samples are summed up as medians, min-max and the ratio lxcsm / lxc-start.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# --- statistics -----------------------------------------------------------------------------------

def median(values: list[float]) -> float | None:
    """The median of `values`, None for no values."""
    return statistics.median(values) if values else None


def spread(values: list[float]) -> tuple[float, float] | None:
    """(min, max) of `values`, None for no values."""
    return (min(values), max(values)) if values else None


def ratio(lxc: float | None, lxcsm: float | None) -> float | None:
    """lxcsm / lxc-start, None when either is missing or lxc-start's is not positive."""
    if lxc is None or lxcsm is None or lxc <= 0:
        return None
    return lxcsm / lxc


# --- waiting for a process to exit ----------------------------------------------------------------

def wait_for(proc: subprocess.Popen, timeout: float) -> int | None:
    """proc's exit status, or None if it is still running after `timeout` seconds.

    Popen.wait(timeout) polls with sleeps that double up to 50 ms, so a command is
    only seen to end at the next poll (at 15.5, 31.5, 63.5, 113.5, 163.5 ms ...):
    the times it measured came in steps.  A pidfd is readable the moment the
    process exits.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:   # already reaped
        return proc.wait()
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            return None
    finally:
        os.close(pidfd)
    return proc.wait()


def wait_exited(pids: list[int], timeout: float) -> bool:
    """Wait until every pid has exited (pidfds: any process, not only our children)."""
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select(fds, [], [], left)
            for fd in ready:
                fds.remove(fd)
                os.close(fd)
        return True
    finally:
        for fd in fds:
            os.close(fd)


# --- running a command ----------------------------------------------------------------------------

@dataclass
class Result:
    """One command run to its end (or its timeout): whether it succeeded, and how long it took."""
    ok: bool
    seconds: float
    detail: str = ""        # for a failure: the exit status and stderr's first lines
    cpu: float | None = None   # user + system seconds of the command and of every process it waited for
    faults: int | None = None  # page faults of the whole system while it ran (see _page_faults)


def _page_faults() -> int:
    """The page faults the kernel has counted since boot, every process's (/proc/vmstat pgfault).
    System-wide, so a start's faults are counted whoever takes them: the start server's waiter,
    worker and monitor too, which neither the command's rusage nor its children's sees.  A copy-
    on-write fault costs ~1.3 us here, so the count is the CPython-after-fork cost a warm start
    pays, in a unit this machine's noise does not move."""
    with open("/proc/vmstat") as vmstat:
        for line in vmstat:
            if line.startswith("pgfault "):
                return int(line.split()[1])
    raise OSError("no pgfault line in /proc/vmstat")


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runner:
    """Starts commands in their own sessions (a Ctrl-C reaches only the bench, which then
    cleans up), with output to files (a daemon keeping a pipe open cannot block us)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.live: set[subprocess.Popen] = set()
        self.env = env

    def spawn(self, argv: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(out, "wb") as stream:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stream, stderr=stream,
                                    start_new_session=True, env=env or self.env)
        self.live.add(proc)
        return proc

    def finish(self, proc: subprocess.Popen, out: Path, began: float, timeout: float) -> Result:
        # The children's CPU time grows by what the process reaped here used (and what it reaped
        # itself: a foreground monitor reaps init): one command's CPU, when one is reaped at a time.
        cpu_before = _cpu_of_children()
        rc = wait_for(proc, max(0.0, began + timeout - time.perf_counter()))
        seconds = time.perf_counter() - began
        if rc is None:
            self.kill(proc)
            return Result(False, timeout, f"timed out after {timeout:g} s: {' '.join(proc.args)}")
        cpu = _cpu_of_children() - cpu_before
        self.live.discard(proc)
        if rc == 0:
            return Result(True, seconds, cpu=cpu)
        try:
            text = out.read_text(errors="replace").strip().splitlines()
        except OSError:
            text = []
        head = " / ".join(text[:3]) or "(no output)"
        return Result(False, seconds, f"exit status {rc}: {head}")

    def run(self, argv: list[str], out: Path, timeout: float = 60, env: dict[str, str] | None = None) -> Result:
        began = time.perf_counter()
        faults = _page_faults()
        proc = self.spawn(argv, out, env)
        result = self.finish(proc, out, began, timeout)
        if result.ok:   # one command at a time: the system's faults meanwhile are its own, near enough
            result.faults = _page_faults() - faults
        return result

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.live.discard(proc)

    def reap(self, timeout: float = 30) -> None:
        """Let commands still running end on their own, then kill them."""
        deadline = time.monotonic() + timeout
        for proc in list(self.live):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                self.live.discard(proc)
            except subprocess.TimeoutExpired:
                self.kill(proc)

