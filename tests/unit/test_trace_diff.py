"""`lxcsm trace-diff`: LXC 5.0.2's trace of the busybox container against lxcsm's, phase by phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxcsm.engine import cli
from lxcsm.engine.analysis import lxc_phases, trace_diff
from lxcsm.engine.start.machine import TABLES

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
LXC = TRACES / "lxc-5.0.2-busybox-start.trace.log"
LXCSM = TRACES / "busybox-start-stop.trace.log"
LXCSM_JSON = TRACES / "busybox-start-stop.trace.json"

# A normal start, init_handler ... exec: every state each machine passes through before RUNNING.
NORMAL_START = ([f"monitor:{s}" for s in TABLES["monitor"].road()[: TABLES["monitor"].road().index("poll")]]
                + [f"child:{s}" for s in TABLES["child"].road()[: TABLES["child"].road().index("exec") + 1]])


@pytest.fixture(scope="module")
def reference() -> trace_diff.Diff:
    return trace_diff.diff(str(LXC), str(LXCSM))


def test_the_mapping_names_only_lxcsm_states_or_explained_lxc_phases():
    assert lxc_phases.check_rules() == []
    for key in lxc_phases.LXC_ONLY:
        assert not lxc_phases.is_lxcsm_state(key), key


def test_a_rule_knows_every_line_of_the_reference_trace(reference):
    assert reference.unmapped == []
    assert all(line.phase for line in reference.lxc_lines)


@pytest.mark.parametrize("number,phase", [
    (3, "monitor:init_handler"),          # lxc_init_handler
    (17, "monitor:init_handler"),         # Created signal file descriptor
    (69, "monitor:monitor_cgroup"),       # cgfsng_monitor_create
    (89, "monitor:monitor_cgroup"),       # cgfsng_monitor_enter
    (116, "monitor:spawn"),               # cgfsng_payload_create
    (118, "monitor:spawn"),               # Cloned child process
    (135, "child:startup"),               # Child waiting for parent with sequence startup
    (144, "child:configure"),             # Unshared CLONE_NEWCGROUP
    (146, "monitor:sync_configure"),      # lxc_spawn: Allocated new network namespace id
    (150, "monitor:sync_post_configure"),
    (158, "child:setup_rootfs"),          # lxc_mount_rootfs
    (155, "child:setup_rootfs"),          # mount_utils, from the line before
    (160, "child:setup_hostname"),        # setup_utsname
    (166, "child:setup_mounts"),          # mount_autodev: /dev's tmpfs, the first mount
    (176, "child:setup_mounts"),          # lxc_mount_auto_mounts
    (185, "child:setup_mounts"),          # mount_entry
    (224, "child:setup_autodev"),         # lxc_fill_autodev
    (241, "child:setup_autodev"),         # lxc_setup_devpts_child
    (265, "child:setup_pivot_root"),      # lxc_pivot_root
    (273, "child:sync_cgroup_limits"),    # Child waking parent with cgroup-limits, waiting for fds
    (274, "monitor:sync_cgroup_limits"),  # legacy device cgroup controller limits
    (278, "monitor:sync_fds"),            # Preserved cgroup namespace
    (291, "child:sync_fds"),
    (298, "monitor:sync_fds"),
    (302, "child:exec"),                  # Exec'ing "/sbin/init"
    (317, "monitor:sync_ready_start"),    # Started "/sbin/init"
    (323, "monitor:poll"),                # Mainloop is ready
    (484, "monitor:stopped"),
])
def test_known_lines_land_in_their_phase(reference, number, phase):
    line = next(line for line in reference.lxc_lines if line.number == number)
    assert line.phase == phase, f"{number}: {line.category}:{line.function} - {line.message}"


def test_sync_lines_are_read_for_their_sequences(reference):
    barrier = next(line for line in reference.lxc_lines if line.number == 142)
    assert [(s, k, q) for s, k, q, _p in barrier.sync] == [("monitor", "wake", "startup"),
                                                           ("monitor", "wait", "configure")]
    assert barrier.phase == "monitor:spawn"
    restart = next(line for line in reference.lxc_lines if line.number == 300)
    assert restart.sync[1][:3] == ("monitor", "wait", "exec")     # LXC's "restart" is lxcsm's exec


@pytest.mark.parametrize("lxcsm_log", [LXCSM, LXCSM_JSON], ids=["lxc-format", "json"])
def test_every_phase_of_a_normal_start_lines_up(lxcsm_log):
    d = trace_diff.diff(str(LXC), str(lxcsm_log))
    in_trace = {f"{s.side}:{s.state}" for s in d.start.spans}
    assert set(NORMAL_START) <= in_trace
    for key in NORMAL_START:
        phase = d.phases[key]
        assert key in d.rows
        assert phase.first_line is not None or key in lxc_phases.LXCSM_ONLY, f"{key}: no LXC counterpart"
    # The states of each side come in the same order in both traces.
    assert d.order_differs == set()
    # Whatever LXC does that lxcsm has no state for is explained.
    for key in d.rows:
        if not d.phases[key].spans:
            assert key in lxc_phases.LXC_ONLY or lxc_phases.is_lxcsm_state(key), key


def test_the_report_marks_what_differs(reference):
    text = trace_diff.report(reference)
    rows = {line.split("|")[0].split()[1]: line for line in text.splitlines()
            if line.startswith("  ") and line.count("|") >= 3 and len(line.split("|")[0].split()) == 2}
    assert rows["idmapped-mounts"].rstrip().endswith("LXC only")
    assert "LXC only" not in rows["setup_network"]   # both configure the child's network devices
    assert "split" not in rows["setup_autodev"]    # both fill /dev after the mounts (and its tmpfs is a mount)
    assert "split" not in rows["setup_rootfs"] and "LXC only" not in rows["exec"]
    assert "every lxcsm state has an LXC counterpart" in text
    sync = text[text.index("sync sequences"):]
    assert [line.split()[0] for line in sync.splitlines()[2:10]] == [
        "startup", "configure", "post-configure", "idmapped-mounts", "cgroup-limits", "fds", "ready-start", "exec"]
    assert "LXC only" in next(line for line in sync.splitlines() if line.startswith("  idmapped-mounts"))
    assert "differs" in next(line for line in sync.splitlines() if line.startswith("  fds"))
    assert "sent in the same order" in sync


def test_the_command_prints_the_table_and_annotates_on_request(capsys):
    assert cli.main(["trace-diff", str(LXC), str(LXCSM), "--annotate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LXC:   ")
    for key in NORMAL_START:
        side, state = key.split(":")
        assert any(line.split()[:2] == [side, state] for line in out.splitlines())
    assert "    302 child:exec" in out


def test_an_lxc_log_with_two_starts(tmp_path, capsys):
    twice = tmp_path / "twice.log"
    twice.write_text(LXC.read_text() * 2)
    d = trace_diff.diff(str(twice), str(LXCSM), lxc_index=2)
    assert (d.lxc_index, d.lxc_count) == (2, 2)
    assert d.lxc_lines[0].number > 484 and d.unmapped == []
    assert cli.main(["trace-diff", str(LXC), str(LXCSM), "--lxc-start", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds 1 start" in err


@pytest.mark.parametrize("argv,expected", [
    ([str(LXCSM), str(LXC)], "give LXC's trace first"),
    ([str(LXC), str(LXC)], "not an lxcsm log written at TRACE"),
    ([str(LXC), "/nonexistent/lxcsm.log"], "No such file"),
    (["/nonexistent/lxc.log", str(LXCSM)], "No such file"),
    ([str(LXC), str(LXCSM), "--start", "2"], "holds 1 start"),
], ids=["swapped", "lxc-twice", "no-lxcsm-log", "no-lxc-log", "no-second-start"])
def test_bad_input_is_one_line_and_a_failure(argv, expected, capsys):
    assert cli.main(["trace-diff", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("lxcsm: trace-diff: ") and expected in captured.err


@pytest.mark.parametrize("content", [b"", b"hello\n", b"\x00\x01\x02\xff\n"], ids=["empty", "text", "binary"])
def test_an_lxc_trace_that_is_not_one(content, tmp_path, capsys):
    bad = tmp_path / "bad.log"
    bad.write_bytes(content)
    assert cli.main(["trace-diff", str(bad), str(LXCSM)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_an_lxc_log_without_a_start(tmp_path, capsys):
    only_commands = tmp_path / "commands.log"
    lines = [line for line in LXC.read_text().splitlines() if "commands.c:lxc_cmd" in line]
    only_commands.write_text("\n".join(lines) + "\n")
    assert cli.main(["trace-diff", str(only_commands), str(LXCSM)]) == 1
    assert "no start" in capsys.readouterr().err


# --- LXC's wrong milliseconds ------------------------------------------------------------------------

def _restamped(tmp_path: Path, fracs: dict[int, str]) -> Path:
    """The reference trace with the fraction of some lines (by number) printed differently."""
    lines = LXC.read_text().splitlines()
    for number, frac in fracs.items():
        words = lines[number - 1].split(" ")
        words[2] = words[2].split(".")[0] + "." + frac
        lines[number - 1] = " ".join(words)
    path = tmp_path / "restamped.trace.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def _second(number: int) -> str:
    return LXC.read_text().splitlines()[number - 1].split(" ")[2].split(".")[0]


def test_times_that_run_backwards_within_a_second_are_blanked(tmp_path):
    """The lines of one second up to stopping's first line (429) printed .990, the next line of that
    second less: they were before the 100 ms mark, printed ten or more times too far in.  Earlier
    seconds are unaffected."""
    assert _second(430) == _second(429) != _second(3)
    first = next(n for n in range(1, 485) if _second(n) == _second(429))
    trace = _restamped(tmp_path, dict.fromkeys(range(first, 430), "990"))
    d = trace_diff.diff(str(trace), str(LXCSM))
    wrong = [line.number for line in d.lxc_lines if line.time_wrong]
    assert wrong == list(range(first, 430))
    assert not d.lxc_t0_wrong
    assert d.phases["monitor:stopping"].first_line.number == 429
    table = trace_diff.phase_table(d)
    stopping = next(line for line in table if " stopping " in line)
    assert stopping.split("|")[1].split()[1] == trace_diff.WRONG_TIME
    init = next(line for line in table if " init_handler " in line)
    assert init.split("|")[1].split()[1] == "0.0"
    assert f"Lines {first}-429 provably do" in trace_diff.report(d)
    # The reference itself has no such step: nothing blanked, and the output says the rest is unchecked.
    untouched = trace_diff.report(trace_diff.diff(str(LXC), str(LXCSM)))
    assert "No line of this start provably does" in untouched and "cannot be checked" in untouched


def test_a_wrong_first_time_blanks_every_offset(tmp_path):
    """When the line offsets are measured from (init_handler's) is wrong, so is every offset."""
    first_second = [n for n in range(1, 485) if _second(n) == _second(3)]
    trace = _restamped(tmp_path, dict.fromkeys(first_second[:10], "999"))
    d = trace_diff.diff(str(trace), str(LXCSM))
    assert d.lxc_t0_wrong
    cells = [line.split("|")[1].split() for line in trace_diff.phase_table(d)[2:] if "|" in line]
    assert {cell[1] for cell in cells if len(cell) == 3} == {trace_diff.WRONG_TIME}
    assert f", {trace_diff.WRONG_TIME} ms to RUNNING" in trace_diff.report(d)


def test_a_fraction_under_three_digits_is_wrong(tmp_path):
    """Under 100 ns into a second LXC prints one or two digits; read as milliseconds they would lie."""
    first = next(n for n in range(2, 485) if _second(n) != _second(n - 1))   # the first line of a second
    trace = _restamped(tmp_path, {first: "45"})
    lines, _other = trace_diff.read_lxc(str(trace))
    assert [line.number for line in lines if line.time_wrong] == [first]
