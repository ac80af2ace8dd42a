"""`lxcsm timeline`: one reader for both log formats (log_reader), states and sync waits, the table (timeline)
and the picture (timeline_picture)."""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lxcsm.engine import cli
from lxcsm.engine import log as logmod
from lxcsm.engine.analysis import log_reader, timeline, timeline_picture
from lxcsm.engine.protocol.sync import SyncMsg
from lxcsm.engine.start.machine import TABLES

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
LXC_FORMAT = TRACES / "busybox-start-stop.trace.log"
JSON_FORMAT = TRACES / "busybox-start-stop.trace.json"
LXC_OWN = TRACES / "lxc-5.0.2-busybox-start.trace.log"
BOTH = pytest.mark.parametrize("path", [LXC_FORMAT, JSON_FORMAT], ids=["lxc-format", "json"])
SVG = "{http://www.w3.org/2000/svg}"


def _text(value) -> str:
    """A field value as the LXC line format shows it: what both formats can agree on."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _states(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["side"], e["state"]) for e in events if e.get("event") == "state"]


# --- reading ------------------------------------------------------------------------------------

def test_an_lxc_line_reads_back_as_the_event_it_was_rendered_from():
    """Every event of the JSON fixture, rendered by engine/log.py as an LXC line and read back."""
    for line in JSON_FORMAT.read_text().splitlines():
        event = json.loads(line)
        rendered = logmod.render_lxc({**event, "level": logmod.Level[event["level"]]})
        parsed = log_reader.parse_line(rendered)
        assert parsed is not None, rendered
        assert set(parsed) == set(event), rendered
        assert 0 <= event["time"] - parsed["time"] < 0.001
        assert {k: _text(v) for k, v in parsed.items() if k != "time"} == \
               {k: _text(v) for k, v in event.items() if k != "time"}


def test_both_fixture_formats_give_the_same_events_side_by_side():
    """The two fixtures are two runs of one start: per side, the same events in the same order."""
    def key(event: dict):
        return (event["event"], event["category"], event["level"], event["where"],
                _text(event.get("state")), _text(event.get("sequence")), tuple(sorted(event)))
    lxc, js = log_reader.read_events(str(LXC_FORMAT)), log_reader.read_events(str(JSON_FORMAT))
    assert len(lxc) == len(js) == len(LXC_FORMAT.read_text().splitlines())
    for side in TABLES:
        assert [key(e) for e in lxc if e["side"] == side] == [key(e) for e in js if e["side"] == side]


def test_fields_keep_their_types_and_quoted_values():
    event = log_reader.parse_line('lxcsm bb 20261123081541.553 TRACE    exec - states/child/exec.py:enter:48 - '
                                'exec side=child pid=9401 argv="[\\"/sbin/init\\"]" empty="" ok=True '
                                'note="a b=c"')
    assert event["event"] == "exec"
    assert event["pid"] == 9401 and event["ok"] is True and event["empty"] == ""
    assert event["argv"] == '["/sbin/init"]' and event["note"] == "a b=c"
    assert log_reader.parse_line("lxcsm bb 20261123081541.553 TRACE    x -  - sync wait side=child")["where"] == ""


def test_lxcsm_lines_are_local_time_and_lxc_lines_utc(monkeypatch):
    local = log_reader.lxc_time("20261123081541", "516")
    assert local == pytest.approx(__import__("time").mktime((2026, 11, 23, 8, 15, 41, 0, 0, -1)) + 0.516)
    utc = log_reader.lxc_time("20261123081541", "516", utc=True)
    assert utc == pytest.approx(__import__("calendar").timegm((2026, 11, 23, 8, 15, 41, 0, 0, 0)) + 0.516)


def test_events_are_sorted_by_time_though_child_lines_arrive_late(tmp_path):
    """The child's events reach the log through the monitor, sometimes after later monitor
    lines: the first child line is moved behind the last line here, as a late one would be."""
    lines = LXC_FORMAT.read_text().splitlines()
    first_child = next(i for i, line in enumerate(lines) if " side=child " in line)
    late = tmp_path / "late.log"
    late.write_text("\n".join(lines[:first_child] + lines[first_child + 1:] + [lines[first_child]]) + "\n")
    raw = [log_reader.parse_line(line) for line in late.read_text().splitlines()]
    assert [e["time"] for e in raw] != sorted(e["time"] for e in raw)
    events = log_reader.read_events(str(late))
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert len(events) == len(lines)


def test_one_file_may_mix_both_formats(tmp_path):
    lxc_lines = LXC_FORMAT.read_text().splitlines()
    json_lines = JSON_FORMAT.read_text().splitlines()
    mixed = tmp_path / "mixed.log"
    mixed.write_text("\n".join(lxc_lines[:20] + [""] + json_lines) + "\n")
    log = log_reader.read_log(str(mixed))
    assert len(log.events) == 20 + len(json_lines) and log.skipped == []


# --- states and waits ---------------------------------------------------------------------------

@BOTH
def test_every_state_of_the_trace_is_listed(path, capsys):
    assert cli.main(["timeline", str(path)]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]) for line in out.splitlines() if line.startswith("  ")}
    states = _states(log_reader.read_events(str(path)))
    assert len(states) == 26
    for side, state in states:
        assert (side, state) in rows, f"{side} {state} missing from:\n{out}"


@BOTH
def test_durations_of_each_side_sum_to_the_wall_time(path):
    events = log_reader.read_events(str(path))
    start = timeline.analyse(events)
    first = next(e for e in events if e.get("state") == "init_handler")
    poll = next(e for e in events if e.get("state") == "poll")
    assert start.outcome == "running"
    assert start.wall == pytest.approx(poll["time"] - first["time"])
    assert start.wall > 0.01
    for side in TABLES:
        spans = start.side_spans(side)
        assert spans and all(s.duration >= 0 for s in spans)
        assert abs(start.offset(side) + sum(s.duration for s in spans) - start.wall) <= 0.03 * start.wall
    assert start.offset("monitor") == 0
    assert start.offset("child") > 0                  # the monitor clones the child first
    assert [s.state for s in start.side_spans("child")] == list(TABLES["child"].road()[:-1])
    assert [s.state for s in start.side_spans("monitor")] == list(TABLES["monitor"].road()[:8])
    assert [s.state for s in start.spans if s.tail] == ["poll", "stopping", "stopped"]


@BOTH
def test_barrier_waits_are_named_by_sequence_and_never_negative(path):
    events = log_reader.read_events(str(path))
    start = timeline.analyse(events)
    known = {m.label for m in SyncMsg} | {"exec"}
    assert start.waits
    for wait in start.waits:
        assert wait.sequence in known
        assert wait.waited >= 0
        assert wait.state in TABLES[wait.side].states
    waits = {(e["side"], e["sequence"]) for e in events if e["event"] == "sync wait"}
    assert {(w.side, w.sequence) for w in start.waits} == waits
    configure = next(w for w in start.waits if (w.side, w.sequence) == ("monitor", "configure"))
    # Which side got there first is the recording's timing; either way the wait is explained.
    assert configure.ended_by in ("child wake", "child had woken it already") and configure.waited >= 0
    exec_wait = next(w for w in start.waits if w.sequence == "exec")
    assert exec_wait.wake is None and exec_wait.ended_by.startswith("next monitor event")


def _first_pids(path) -> dict[str, int]:
    """The monitor's and the child's pid in a recorded start (the fixtures are re-recorded
    when a state is added, with new pids)."""
    events = log_reader.read_events(str(path))
    return {side: next(e["pid"] for e in events if e["side"] == side) for side in TABLES}


def test_each_start_of_a_log_is_its_own(tmp_path, capsys):
    """Two runs appended to one file (here in two formats) are two starts; --start picks one."""
    both = tmp_path / "two-runs.log"
    both.write_text(LXC_FORMAT.read_text() + JSON_FORMAT.read_text())
    events = log_reader.read_events(str(both))
    assert len(timeline.split_starts(events)) == 2
    assert timeline.analyse(events, 1).pids == _first_pids(LXC_FORMAT)
    assert timeline.analyse(events, 2).pids == _first_pids(JSON_FORMAT)
    assert cli.main(["timeline", str(both), "--start", "2"]) == 0
    assert "start 2 of 2" in capsys.readouterr().out
    assert cli.main(["timeline", str(both), "--start", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds 2 starts" in err


def test_a_start_that_failed_ends_at_aborting(tmp_path):
    """The child fails in setup_pivot_root: the start's wall time ends where the monitor aborts."""
    lines = LXC_FORMAT.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "state=setup_pivot_root" in line)
    stamp = int(lines[cut].split()[2].replace(".", ""))     # YYYYmmddHHMMSSmmm, in ms
    monitor = _first_pids(LXC_FORMAT)["monitor"]
    failed = [lines[cut].replace("setup_pivot_root", "aborting"),
              f"lxcsm bb {str(stamp + 1)[:14]}.{str(stamp + 1)[14:]} ERROR    aborting - "
              f"states/monitor/aborting.py:enter:20 - state side=monitor pid={monitor} state=aborting",
              f"lxcsm bb {str(stamp + 11)[:14]}.{str(stamp + 11)[14:]} TRACE    stopped - "
              f"states/monitor/stopped.py:enter:13 - state side=monitor pid={monitor} state=stopped"]
    log = tmp_path / "failed.log"
    log.write_text("\n".join(lines[:cut] + failed) + "\n")
    start = timeline.analyse(log_reader.read_events(str(log)))
    assert start.outcome == "aborted"
    assert start.side_spans("child")[-1].state == "aborting"
    assert [s.state for s in start.spans if s.tail] == ["aborting", "stopped"]
    for side in TABLES:
        assert start.covered(side) == pytest.approx(start.wall)


# --- the picture ----------------------------------------------------------------------------------

@BOTH
def test_the_svg_is_well_formed_with_one_rect_per_state(path, tmp_path, capsys):
    picture = tmp_path / "start.svg"
    assert cli.main(["timeline", str(path), "--svg", str(picture)]) == 0
    root = ET.parse(picture).getroot()
    rects = root.iter(f"{SVG}rect")
    drawn = [(r.get("class").split()[1], r.get("data-state")) for r in rects]
    assert sorted(drawn) == sorted(_states(log_reader.read_events(str(path))))
    assert any(line.get("class") == "sync" for line in root.iter(f"{SVG}line"))
    assert int(root.get("width")) > 0 and int(root.get("height")) > 0


def test_png_needs_a_converter(tmp_path, capsys):
    if timeline_picture.find_converter() is None:
        pytest.skip("no SVG renderer here (rsvg-convert, ImageMagick or inkscape)")
    png = tmp_path / "start.png"
    assert cli.main(["timeline", str(LXC_FORMAT), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_a_converter_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    png = tmp_path / "start.png"
    assert cli.main(["timeline", str(LXC_FORMAT), "--png", str(png)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "librsvg2-bin" in captured.err and not png.exists()


def test_png_goes_through_the_converter_found(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "rsvg-convert"
    fake.write_text('#!/bin/sh\n# --format png --output PNG SVG\ngrep -q "<svg" "$5" && '
                    'printf "\\211PNG\\r\\n\\032\\n" > "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    png = tmp_path / "start.png"
    assert cli.main(["timeline", str(JSON_FORMAT), "--png", str(png)]) == 0
    assert png.read_bytes() == b"\x89PNG\r\n\x1a\n"


def test_a_stand_in_convert_is_not_taken_for_imagemagick(tmp_path, monkeypatch):
    fake = tmp_path / "convert"
    fake.write_text("#!/bin/sh\necho 'convert: ImageMagick is not installed here' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert timeline_picture.find_converter() is None


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,expected", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\n\x00\x01", "not an lxcsm log"),
    (b"hello\nworld\n", "not an lxcsm log"),
    (b"", "empty"),
    (LXC_OWN.read_bytes(), "lxcsm trace-diff"),
    (b"".join(line + b"\n" for line in LXC_FORMAT.read_bytes().splitlines() if b" TRACE " not in line),
     "TRACE"),
    (b"".join(line + b"\n" for line in LXC_FORMAT.read_bytes().splitlines()
              if b"state=init_handler" not in line), "init_handler"),
], ids=["binary", "text", "empty", "lxc-own-log", "not-at-trace", "no-init-handler"])
def test_bad_input_is_one_line_and_a_failure(content, expected, tmp_path, capsys):
    bad = tmp_path / "bad.log"
    bad.write_bytes(content)
    assert cli.main(["timeline", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("lxcsm: timeline: ")
    assert expected in captured.err and "Traceback" not in captured.err


def test_a_missing_file_and_bad_options(tmp_path, capsys):
    assert cli.main(["timeline", str(tmp_path / "nope.log")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    for argv in ([], [str(LXC_FORMAT), "--start", "0"], [str(LXC_FORMAT), "--svg", "a", "--png", "b"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["timeline", *argv])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["timeline", str(LXC_FORMAT), "--svg", str(tmp_path / "no" / "dir.svg")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_lines_that_are_not_log_lines_are_skipped_with_a_warning(tmp_path, capsys):
    log = tmp_path / "noisy.log"
    log.write_text("lxcsm: bb: something printed to stderr\n" + LXC_FORMAT.read_text())
    assert cli.main(["timeline", str(log)]) == 0
    captured = capsys.readouterr()
    assert "wall time" in captured.out
    assert captured.err.count("\n") == 1 and "line 1" in captured.err


# --- honest times -------------------------------------------------------------------------------------

def test_json_keeps_sub_millisecond_times_and_the_lxc_format_stays_lxcs():
    event = {"name": "bb", "event": "state", "level": logmod.Level.TRACE, "time": 1795437874.6405813,
             "side": "monitor", "state": "init_handler", "where": "x.py:enter:1"}
    assert json.loads(logmod.render_json(event))["time"] == event["time"]        # every digit survives
    line = logmod.render_lxc(event)
    assert line.split(" ")[2].endswith(".640")    # YYYYmmddHHMMSS.mmm, as LXC writes it
    assert log_reader.parse_line(line)["time"] == pytest.approx(1795437874.640, abs=1e-6)


@BOTH
def test_the_table_says_what_its_timestamps_can_tell(path, capsys):
    assert cli.main(["timeline", str(path)]) == 0
    out = capsys.readouterr().out
    if path == JSON_FORMAT:
        assert "timestamps: microseconds (JSON lines)" in out
        spans = timeline.analyse(log_reader.read_events(str(path))).spans
        assert any(0 < s.duration * 1000 % 1 for s in spans)      # durations that are no whole ms
    else:
        assert "timestamps: whole milliseconds (LXC's line format)" in out


def _stretched(factor: float, shift: float) -> str:
    """The JSON fixture's start with every offset from its first event multiplied by `factor`."""
    events = [json.loads(line) for line in JSON_FORMAT.read_text().splitlines()]
    t0 = events[0]["time"]
    return "".join(json.dumps({**e, "time": t0 + shift + (e["time"] - t0) * factor}) + "\n" for e in events)


def test_runs_give_the_median_of_each_state(tmp_path, capsys):
    """Three starts in one log, the second twice as slow as the first, the third three times: every
    median is the second start's, min the first's and max the third's."""
    log = tmp_path / "three.log"
    log.write_text(_stretched(1, 0) + _stretched(2, 100) + _stretched(3, 200))
    events = log_reader.read_events(str(log))
    starts = [timeline.analyse(events, i) for i in (1, 2, 3)]
    summary = timeline.medians([(str(log), s) for s in starts])
    middle = {(s.side, s.state): s.duration for s in starts[1].spans if not s.tail}
    assert {(side, state) for side, state, _o, _d in summary.rows} == set(middle)
    for side, state, _offsets, durations in summary.rows:
        assert sorted(durations) == pytest.approx(sorted([middle[side, state] / 2, middle[side, state],
                                                          middle[side, state] * 1.5]))
    assert cli.main(["timeline", str(log), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bb: medians of 3 starts that reached RUNNING, from 1 log")
    init = next(line.split() for line in out.splitlines() if line.startswith("  monitor  init_handler"))
    first = next(s for s in starts[1].spans if s.state == "init_handler")
    assert init[3:6] == [timeline.fmt_ms(first.duration), timeline.fmt_ms(first.duration / 2),
                         timeline.fmt_ms(first.duration * 1.5)] and init[6] == "3/3"
    assert "sync barriers: median wait by side and sequence" in out
    # The last N starts: --runs 1 is the third alone.
    assert cli.main(["timeline", str(log), "--runs", "1"]) == 0
    wall = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("wall time"))
    assert wall.startswith(f"wall time: median {timeline.fmt_ms(starts[2].wall)} ms")


def test_several_logs_are_several_runs_and_failed_starts_are_left_out(tmp_path, capsys):
    lines = LXC_FORMAT.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "state=setup_pivot_root" in line)
    failed = tmp_path / "failed.log"
    failed.write_text("\n".join(lines[:cut]) + "\n")      # never reached poll
    assert cli.main(["timeline", str(LXC_FORMAT), str(JSON_FORMAT), str(failed)]) == 0
    out = capsys.readouterr().out
    assert "medians of 2 starts" in out and "from 2 logs" in out
    assert "left out: 1 start that did not reach RUNNING" in out
    assert "whole milliseconds in part of the log" in out
    assert cli.main(["timeline", str(JSON_FORMAT), "--runs", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--runs 2: the logs hold 1 start that reached RUNNING" in err
    with pytest.raises(SystemExit):
        cli.main(["timeline", str(JSON_FORMAT), "--runs", "1", "--svg", str(tmp_path / "x.svg")])
    assert capsys.readouterr().err.count("\n") == 1


# --- Chrome's trace-event format -----------------------------------------------------------------------

@BOTH
def test_the_chrome_trace_has_two_tracks_and_the_shape_perfetto_reads(path, tmp_path, capsys):
    out = tmp_path / "start.json"
    assert cli.main(["timeline", str(path), "--chrome-trace", str(out)]) == 0
    trace = json.loads(out.read_text())
    assert set(trace) == {"traceEvents", "displayTimeUnit", "otherData"} and trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    start = timeline.analyse(log_reader.read_events(str(path)))
    pids = {side: start.pids[side] for side in TABLES}
    assert len(set(pids.values())) == 2
    for event in events:
        assert event["ph"] in ("M", "X", "i", "s", "f") and isinstance(event["name"], str)
        assert isinstance(event["pid"], int) and event["tid"] == event["pid"] and event["pid"] in pids.values()
        if event["ph"] != "M":
            assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0 and isinstance(event["cat"], str)
        if event["ph"] == "X":
            assert event["dur"] >= 0
        if event["ph"] == "i":
            assert event["s"] == "t"
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {pid: f"lxcsm {side} (pid {pid})" for side, pid in pids.items()}
    # One complete event per state, on its side's track, one after the other.
    for side, pid in pids.items():
        states = [e for e in events if e["ph"] == "X" and e["cat"] == "state" and e["pid"] == pid]
        assert [e["name"] for e in states] == [s.state for s in start.spans if s.side == side]
        for a, b in zip(states, states[1:], strict=False):
            assert a["ts"] + a["dur"] <= b["ts"] + 0.001
        # Each wait lies inside a state of its own track.
        for wait in (e for e in events if e["ph"] == "X" and e["cat"] == "sync wait" and e["pid"] == pid):
            assert any(s["ts"] <= wait["ts"] and wait["ts"] + wait["dur"] <= s["ts"] + s["dur"] + 0.001
                       for s in states), wait
    # Messages: an instant where the wake was sent, and a flow from it to the other track.
    wakes = [e for e in events if e["ph"] == "i" and e["cat"] == "sync"]
    assert len(wakes) == sum(1 for e in log_reader.read_events(str(path)) if e["event"] == "sync wake")
    flows = {}
    for e in events:
        if e["ph"] in ("s", "f"):
            flows.setdefault(e["id"], {})[e["ph"]] = e
    assert flows and all(set(pair) == {"s", "f"} and pair["s"]["pid"] != pair["f"]["pid"]
                         and pair["s"]["ts"] <= pair["f"]["ts"] for pair in flows.values())
    assert trace["otherData"]["wall time (ms)"] == pytest.approx(start.wall * 1000, abs=0.001)


def test_a_chrome_trace_that_cannot_be_written_is_one_line(tmp_path, capsys):
    assert cli.main(["timeline", str(JSON_FORMAT), "--chrome-trace", str(tmp_path / "no" / "t.json")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
