"""`lxcsm explain`: the state docstrings, plus what can be read from the code and the tables."""

from __future__ import annotations

import inspect
import re

import pytest

from lxcsm.engine import cli
from lxcsm.engine.analysis import explain
from lxcsm.engine.linux import cgroups, kernel
from lxcsm.engine.start.machine import CHILD, MONITOR, TABLES


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_listing_has_both_machines_states_in_start_order(capsys):
    code, out, _err = run(capsys)
    assert code == 0
    listed, side = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.split()[0] in TABLES:
            side = line.split()[0]
        elif line.startswith("  ") and side:
            listed.setdefault(side, []).append(line.split()[0])
    assert listed == {side: list(table.states) for side, table in TABLES.items()}
    assert "  spawn                the container's first process is created in its namespaces" in out


@pytest.mark.parametrize("side,state", [(t.side, s) for t in TABLES.values() for s in t.states])
def test_every_state_docstring_has_the_shape_explain_reads(side, state):
    info = explain.describe(TABLES[side], state)
    assert info.text.startswith(f"{state} ({side}) - ")
    assert info.summary and not info.summary.endswith(".")
    assert info.replaces.startswith("Replaces ") and "LXC" in info.replaces


def test_spawn_shows_replaces_clone3_and_its_transitions(capsys):
    code, out, _err = run(capsys, "spawn")
    assert code == 0
    assert out.startswith("spawn (monitor) - ")
    assert "Replaces the first half of LXC's lxc_spawn()" in out        # the docstring, whole
    assert re.search(r"^LXC 5 +lxc_spawn\(\), lxc_clone\(\)$", out, re.M)
    assert re.search(r"^ +clone3\(2\) +kernel\.clone3\(", out, re.M)
    assert re.search(r"^Sync +sends STARTUP$", out, re.M)
    assert re.search(r"^In +monitor_cgroup_entered +from monitor_cgroup$", out, re.M)
    assert re.search(r"^Out +child_spawned +to sync_configure$", out, re.M)


def test_setup_rootfs_shows_mount(capsys):
    code, out, _err = run(capsys, "setup_rootfs")
    assert code == 0
    assert re.search(r"^LXC 5 +turn_into_dependent_mounts\(\), lxc_mount_rootfs\(\), lxc_setup\(\)$", out, re.M)
    assert re.search(r"^Calls +mount\(2\) +kernel\.mount\(None, \"/\", None, kernel\.MS_SLAVE", out, re.M)


def test_helpers_called_by_enter_are_followed():
    calls = [call.syscall for call in explain.describe(CHILD, "setup_mounts").calls]
    assert calls.count("mount(2)") >= 5   # through mount_proc, _bind_over, mount_entry...


def test_the_lxc_functions_the_issue_names_are_found():
    found = {f for table in TABLES.values() for s in table.states
             for f in explain.describe(table, s).lxc_functions}
    assert {"lxc_init", "cgfsng_monitor_create", "lxc_spawn", "do_start", "lxc_setup", "lxc_poll"} <= found


def test_every_kernel_and_cgroup_wrapper_has_its_system_call():
    for module in (kernel, cgroups):
        short = module.__name__.rsplit(".", 1)[1]
        public = [name for name, f in inspect.getmembers(module, inspect.isfunction)
                  if f.__module__ == module.__name__ and not name.startswith("_")]
        assert [name for name in public if f"{short}.{name}" not in explain.SYSCALLS] == []


def test_a_name_both_machines_have_shows_both_unless_a_side_is_given(capsys):
    _code, out, _err = run(capsys, "sync_fds")
    assert "sync_fds (monitor) - " in out and "sync_fds (child) - " in out
    _code, out, _err = run(capsys, "child:sync_fds")
    assert "sync_fds (monitor) - " not in out and out.startswith("sync_fds (child) - ")
    assert re.search(r"^Sync +sends FDS, then waits for READY_START$", out, re.M)


@pytest.mark.parametrize("name", ["frobnicate", "monitor:startup", "parent:spawn", ""])
def test_an_unknown_state_is_one_line_and_exit_2(name, capsys):
    code, out, err = run(capsys, name)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lxcsm: explain: unknown state")
    assert all(state in err for state in MONITOR.states + CHILD.states)
