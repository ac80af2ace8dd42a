"""What the host says about the bench's containers: monitor processes, their memory, cgroups, mounts.

Read straight from /proc, /sys/fs/cgroup and /proc/self/mountinfo, the same
way for both tools: a monitor is found by the title it gives itself
(``[lxc monitor] LXCPATH NAME`` or ``[lxcsm monitor] LXCPATH NAME``), a
container's cgroups by their names (``lxc.payload.NAME``, ``lxc.monitor.NAME``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# --- monitors -------------------------------------------------------------------------------------

def monitor_title(tool: str, lxcpath: str, name: str) -> bytes:
    """The cmdline a monitor sets: ``[lxc monitor] LXCPATH NAME`` / ``[lxcsm monitor] ...``."""
    return f"[{tool} monitor] {lxcpath} {name}".encode()


def cmdline_title(cmdline: bytes) -> bytes:
    """/proc/PID/cmdline without the NULs a retitled process leaves after its title."""
    return cmdline.rstrip(b"\0")


def is_monitor_cmdline(cmdline: bytes, title: bytes) -> bool:
    """Whether /proc/PID/cmdline is exactly `title` (followed by NULs, not by more name)."""
    return cmdline_title(cmdline) == title



def find_monitors(tool: str, lxcpath: str, names) -> dict[str, list[int]]:
    """{name: [pids]} of the monitors titled for `names` under `lxcpath` (one /proc scan)."""
    titles = {monitor_title(tool, lxcpath, name): name for name in names}
    prefix = f"[{tool} monitor] {lxcpath} ".encode()
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if not cmdline.startswith(prefix):
            continue
        title = cmdline_title(cmdline)
        if title in titles:
            found.setdefault(titles[title], []).append(int(entry))
    return found


def memory_of(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, Pss) of `pid` in bytes; None for what cannot be read."""
    rss = pss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


# --- cgroups and mounts ---------------------------------------------------------------------------

def cgroup_dirs(names) -> list[str]:
    """lxc.payload.NAME / lxc.monitor.NAME directories of `names` in every hierarchy."""
    wanted = {f"lxc.{kind}.{name}" for name in names for kind in ("payload", "monitor")}
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d in wanted:
                found.append(os.path.join(top, d))
        dirs[:] = [d for d in dirs if d not in wanted]
        if top.count("/") > 6:
            dirs[:] = []
    return found


def remove_cgroup(path: str) -> bool:
    """rmdir `path` and what is below it, deepest first (retrying while tasks leave)."""
    for _ in range(50):
        try:
            for top, _dirs, _files in os.walk(path, topdown=False):
                os.rmdir(top)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.02)
    return False


def mounts_under(path: str) -> list[str]:
    """Mount points at or below `path`: a directory with one is not deleted."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path.rstrip("/") + "/")]


def apparmor_enabled() -> bool:
    """Whether AppArmor is on: LXC 5 would then load a profile for each container."""
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False

