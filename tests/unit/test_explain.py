"""`lxcsm explain`: the state docstrings, plus what can be read from the code and the tables."""

from __future__ import annotations

import inspect
import re

import pytest

from lxcsm.engine import cli
from lxcsm.engine.analysis import explain, lxc_functions, lxc_phases
from lxcsm.engine.linux import cgroups, idmap, kernel
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


def test_every_kernel_cgroup_and_idmap_wrapper_has_its_system_call():
    for module in (kernel, cgroups, idmap):
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
def test_an_unknown_name_is_one_line_and_exit_2(name, capsys):
    code, out, err = run(capsys, name)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"lxcsm: explain: {name!r} is no state and no LXC function")


def test_an_unknown_name_lists_the_names_near_it(capsys):
    code, _out, err = run(capsys, "lxc_spwan")
    assert code == 2 and err.count("\n") == 1
    assert "did you mean lxc_spawn" in err
    _code, _out, err = run(capsys, "setup_rootfs_pivot_root")      # LXC 1.x's name, in the seeds
    assert "setup_pivot_root" in err and "setup_rootfs" in err
    _code, _out, err = run(capsys, "frobnicate")                   # nothing near: the states
    assert all(state in err for state in MONITOR.states + CHILD.states)


# --- LXC's function names ------------------------------------------------------------------------

REFERENCE = lxc_functions.REFERENCE_TRACE


def _trace_lines(function: str) -> list[str]:
    """The reference trace's lines written by `function`, as numbers."""
    with open(REFERENCE) as trace:
        return [str(n) for n, line in enumerate(trace, 1) if f":{function}:" in line.split(" - ")[1]]


def _listed(out: str) -> list[tuple[str, str]]:
    return re.findall(r"^  (monitor|child) +(\w+) {2,}", out, re.M)


@pytest.mark.parametrize("function,states", [
    ("lxc_init_handler", {("monitor", "init_handler")}),
    ("lxc_spawn", {("monitor", "spawn"), ("monitor", "sync_configure"), ("monitor", "sync_cgroup_limits")}),
    ("do_start", {("child", "startup"), ("child", "configure"), ("child", "exec")}),
    ("lxc_setup", {("child", "setup_rootfs"), ("child", "setup_network")}),
    ("lxc_poll", {("monitor", "poll")}),
    ("lxc_end", {("monitor", "stopping"), ("monitor", "stopped")}),
    ("setup_utsname", {("child", "setup_hostname")}),
    ("lxc_pivot_root", {("child", "setup_pivot_root")}),
])
def test_an_lxc_function_names_the_states_doing_its_work_and_its_trace_lines(function, states, capsys):
    code, out, _err = run(capsys, function)
    assert code == 0
    assert out.startswith(f"{function}() - LXC 5 (src/lxc/")
    assert states <= set(_listed(out))
    numbers = re.findall(r"^ +(\d+)  (?:monitor|child|client):\S+ +[A-Z]+ ", out, re.M)
    assert numbers == _trace_lines(function)


def test_the_index_is_read_from_the_docstrings_and_the_rules_not_written_again():
    # Every state a docstring says replaces a function is found from that function ...
    for table in TABLES.values():
        for state in table.states:
            for function in explain.describe(table, state).lxc_functions:
                found = lxc_functions.counterpart(function)
                assert found is not None and (table.side, state) in found.states, (function, state)
    # ... and every line of the reference trace is listed under its function, with its phase.
    lines = lxc_functions.reference_lines()
    assert len(lines) > 400
    for line in lines:
        found = lxc_functions.counterpart(line.function)
        assert found is not None and line in found.lines
        if line.phase and lxc_phases.is_lxcsm_state(line.phase):
            assert tuple(line.phase.split(":")) in found.states


def test_a_function_lxcsm_does_before_its_machines_is_such_a_step(capsys):
    code, out, _err = run(capsys, "lxc_cmd")
    assert code == 0
    assert "before the machines: already running? (engine/cli/start.py:run), a step of lxcsm start, no state" in out
    assert _listed(out) == []
    code, out, _err = run(capsys, "wait_on_daemonized_start()")
    assert code == 0 and "before the machines: report pipe" in out


def test_a_function_only_lxc_has_says_why(capsys):
    code, out, _err = run(capsys, "lxc_rootfs_init")
    assert code == 0
    assert f"only in LXC (monitor:rootfs-pin): {lxc_phases.LXC_ONLY['monitor:rootfs-pin']}" in out


def test_a_state_name_still_means_the_state(capsys):
    _code, out, _err = run(capsys, "spawn")
    assert out.startswith("spawn (monitor) - ")
