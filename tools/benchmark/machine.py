"""What the bench was measured on: the machine line under the table (date, kernel, CPU, cgroups, versions)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from . import REPO


def _command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO,
                              stdin=subprocess.DEVNULL).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(python: str, lxc_available: bool) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mountinfo = Path("/proc/self/mountinfo").read_text()
    v2 = " - cgroup2 " in mountinfo
    v1 = " - cgroup " in mountinfo
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    if commit and _command_output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " + local changes"
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "kernel": platform.release(),
        "cpu": cpu or platform.processor() or "unknown CPU",
        "cores": os.cpu_count(),
        # The version and the interpreter the venv was made from: a distribution's build (PGO,
        # LTO, libpython linked in) and a plain ./configure one differ by ~15% of a cold start.
        "python": _command_output([python, "-c", "import os, platform, sys; "
                                   "print(platform.python_version(), f'({os.path.realpath(sys._base_executable)})')"]),
        "lxc": _command_output(["lxc-start", "--version"]) if lxc_available else None,
        "cgroups": "hybrid (v1 + v2)" if v1 and v2 else "v2" if v2 else "v1" if v1 else "none",
        "loadavg": os.getloadavg()[0],
        "lxcsm_commit": commit or None,
    }


def machine_line(m: dict) -> str:
    lxc = f"LXC {m['lxc']}" if m["lxc"] else "lxc-start not installed"
    commit = f", lxcsm {m['lxcsm_commit']}" if m.get("lxcsm_commit") else ""
    return (f"Measured {m['date']} by `tools/bench` on Linux {m['kernel']}, {m['cpu']}, "
            f"{m['cores']} cores, cgroups {m['cgroups']}, Python {m['python']}, {lxc}{commit}; "
            f"load average {m['loadavg']:.2f} at the start.")
