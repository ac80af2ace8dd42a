"""Row 9 of tools/bench: a real distribution - Debian 12 booting systemd - started and stopped
by each tool, the stop being systemd's own halt.

Each tool gets a container made by fixtures/debian.py from its cached rootfs (a copy of it,
with the config a user of LXC writes: LXC's debian.common.conf included).  A run is
`start -d`, then `lxc-attach -- systemctl is-system-running --wait` (asked again until
systemd listens on its socket) until it answers, then `stop` without -k: lxc-stop and lxcsm
stop both see that systemd blocks SIGRTMIN+3 and send it, and systemd halts.  Row 9 is the
stop, until the command returned and the monitor exited; 9a the boot, from the start command
to systemd's "running" (the lxc-attach polling is in it, the same for both tools).  A boot
that ends other than "running" is a failed run.  The bench builds nothing and needs no
network: without the cached rootfs (`python3 fixtures/debian.py build`) the row says so.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from fixtures import debian

from . import progress
from .containers import Bench, Tool
from .report import Row
from .timing import wait_exited

DEBIAN_RUNS = 5           # at most, per tool: each run is a whole systemd boot
BOOT_TIMEOUT = 300
STOP_TIMEOUT = 120


def systemd_state(tool: Tool, name: str) -> str:
    """What `systemctl is-system-running --wait` answers once systemd's boot has ended."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        asked = subprocess.run(["lxc-attach", "-n", name, "-P", tool.lxcpath, "--", "/usr/bin/systemctl",
                                "is-system-running", "--wait"], stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=BOOT_TIMEOUT)
        if asked.stdout.strip():
            return asked.stdout.strip()
        time.sleep(0.05)   # systemd does not listen on its socket yet
    return f"no answer within {BOOT_TIMEOUT} s"


def row_debian(bench: Bench) -> list[Row]:
    runs = min(bench.args.runs, DEBIAN_RUNS)
    stop = Row("9", f"Debian 12 booting systemd: `stop` (systemd's halt) until the monitor exited (n={runs})")
    boot = Row("9a", "… its boot: `start -d` until `systemctl is-system-running --wait` says running")
    if debian.cached_rootfs() is None or not shutil.which("lxc-attach"):
        stop.na = boot.na = "no cached Debian rootfs (python3 fixtures/debian.py build) or no lxc-attach"
        return [stop, boot]
    names = {}
    for tool in bench.tools:
        names[tool.key] = bench.name(tool, "d")
        tool.names.add(names[tool.key])
        config = debian.make_container(Path(tool.lxcpath), names[tool.key])
        with open(config, "a") as extra:
            extra.writelines(f"{line}\n" for line in bench.extra_config)
    progress(f"row 9: {runs} boots of Debian's systemd and stops per tool, alternating")
    for run in range(1, runs + 1):
        for tool in bench.tools:
            measured = _boot_and_stop(bench, tool, names[tool.key], run)
            for row, seconds in zip((stop, boot), measured or (None, None), strict=True):
                if seconds is None:
                    setattr(row, f"{tool.key}_failed", getattr(row, f"{tool.key}_failed") + 1)
                else:
                    getattr(row, tool.key).append(seconds)
    return [stop, boot]


def _boot_and_stop(bench: Bench, tool: Tool, name: str, run: int) -> tuple[float, float] | None:
    """(stop seconds, boot seconds) of one run, or None if it failed (recorded, and stopped)."""
    began = time.perf_counter()
    started = bench.start_stop(tool, name, "9", run)
    if started is None:
        return None
    state = systemd_state(tool, name)
    booted = time.perf_counter() - began
    if state != "running":
        bench.fail("9", tool, run, f"systemd's boot ended {state!r}, not 'running'")
        bench.ensure_stopped(tool, [name])
        return None
    began = time.perf_counter()
    result = bench.runner.run(tool.argv("stop", name), bench.out(tool, "stop"), timeout=STOP_TIMEOUT, env=tool.env)
    exited = result.ok and wait_exited([started[1]], 30)
    stopped = time.perf_counter() - began
    if not exited:
        bench.fail("9", tool, run, result.detail or "stop returned 0 but the monitor did not exit within 30 s")
        bench.ensure_stopped(tool, [name])
        return None
    return stopped, booted
