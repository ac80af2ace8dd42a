"""`lxcsm plan`: the printed sequence, checked against a golden file.

The golden file is fixtures/plans/busybox.plan; when a state's work changes on
purpose, regenerate it with LXCSM_REGENERATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures import rootfs as builders
from lxcsm.engine.linux import cgroups
from lxcsm.engine.start.machine import TABLES

GOLDEN = Path(__file__).parents[2] / "fixtures" / "plans" / "busybox.plan"
EXTRA = [
    "lxc.mount.auto = proc:mixed sys:ro",
    "lxc.signal.halt = SIGUSR1",
    "lxc.mount.entry = shm dev/shm tmpfs defaults,create=dir 0 0",
    "lxc.mount.entry = /usr/share usr/share none ro,bind,optional,create=dir 0 0",
    "lxc.environment = TERM=linux",
    "lxc.cap.drop = sys_module",
]


def _plan(tmp_path: Path) -> subprocess.CompletedProcess:
    lxcpath = tmp_path / "lxc"
    fs = builders.make_busybox_rootfs(lxcpath / "planned" / "rootfs")
    builders.write_config(lxcpath, "planned", fs, EXTRA)
    return subprocess.run([sys.executable, "-m", "lxcsm.engine.cli", "plan", "planned", "-P", str(lxcpath)],
                          capture_output=True, text=True, timeout=30)


def _normalise(text: str, tmp_path: Path) -> str:
    # The cgroup hierarchies are this host's; the paths are this test's.
    lines = [line for line in text.splitlines() if not line.startswith("cgroup hierarchies here:")]
    return "\n".join(lines).replace(str(tmp_path), "<TMP>") + "\n"


def test_plan_matches_the_golden_file(tmp_path):
    result = _plan(tmp_path)
    assert result.returncode == 0, result.stderr
    text = _normalise(result.stdout, tmp_path)
    if os.environ.get("LXCSM_REGENERATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_plan_lists_every_state_of_both_tables_in_order(tmp_path):
    lines = _plan(tmp_path).stdout.splitlines()
    for side, table in TABLES.items():
        start = lines.index(f"{side} machine")
        states = [line.strip() for line in lines[start + 1:] if line.startswith("  ") and not line.startswith("    ")]
        assert states[: len(table.states)] == list(table.states)


def test_plan_changes_nothing(tmp_path):
    # The cgroups a start of "planned" would make, in every hierarchy (whatever the layout).
    would_make = [os.path.join(h.home, f"lxc.{kind}.planned") for h in cgroups.hierarchies()
                  for kind in ("monitor", "payload")]
    result = _plan(tmp_path)
    assert result.returncode == 0
    assert [path for path in would_make if os.path.exists(path)] == []
    assert not (tmp_path / "lxc" / "planned" / "lxcsm-last-start.log").exists()


def test_plan_of_a_veth(tmp_path):
    """Both sides of a veth, as planned; nothing is created (no bridge needed to plan one)."""
    lxcpath = tmp_path / "lxc"
    fs = builders.make_busybox_rootfs(lxcpath / "planned" / "rootfs")
    builders.write_config(lxcpath, "planned", fs, [
        "lxc.net.0.type = veth", "lxc.net.0.flags = up", "lxc.net.0.name = lan0",
        "lxc.net.0.ipv4.address = 198.51.100.9/24", "lxc.net.0.ipv4.gateway = 198.51.100.1"])
    result = subprocess.run([sys.executable, "-m", "lxcsm.engine.cli", "plan", "planned", "-P", str(lxcpath)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert ("    - net 0: type veth: create veth veth + 6 random characters with its peer lxcsm0 in the "
            "child's network namespace, mtu 1500, set it up") in result.stdout
    assert ("    - net 0 (veth): rename lxcsm0 to lan0, add 198.51.100.9/24, set it and lo up, "
            "default route via 198.51.100.1") in result.stdout


def test_plan_shows_the_steps_before_the_machines_as_steps(tmp_path):
    """lxcsm start's own steps (engine/analysis/premachine.py) come first, marked as no states; -F has
    no double fork, report pipe or monitor process of its own."""
    from lxcsm.engine.analysis import premachine
    lxcpath = tmp_path / "lxc"
    fs = builders.make_busybox_rootfs(lxcpath / "planned" / "rootfs")
    builders.write_config(lxcpath, "planned", fs, [])
    for flags, expected in (([], premachine.steps(False)), (["-F"], premachine.steps(True))):
        result = subprocess.run([sys.executable, "-m", "lxcsm.engine.cli", "plan", "planned", "-P", str(lxcpath),
                                 *flags], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        head = lines.index("before the machines: steps of lxcsm start itself, not states "
                           "(engine/analysis/premachine.py)")
        shown = [line[3:-1] for line in lines[head:lines.index("monitor machine")] if line.startswith("  [")]
        assert shown == [step.name for step in expected]
    assert "double fork" not in [step.name for step in premachine.steps(True)]
    assert "double fork" in [step.name for step in premachine.steps(False)]
