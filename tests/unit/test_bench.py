"""tools/bench's pure parts (tools/benchmark/): statistics, ratio, formatting, the markdown table, parsing.

Nothing here starts a container or times anything; tools/bench itself is run by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.benchmark import cli, containers, diagnostics, host, report, rows, timing

MIB = 1024 * 1024


# --- statistics --------------------------------------------------------------------------------

def test_median_odd_even_and_empty():
    assert timing.median([3.0, 1.0, 2.0]) == 2.0
    assert timing.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert timing.median([]) is None


def test_spread():
    assert timing.spread([0.3, 0.1, 0.2]) == (0.1, 0.3)
    assert timing.spread([]) is None


def test_ratio_is_lxcsm_over_lxc():
    assert timing.ratio(0.010, 0.040) == pytest.approx(4.0)
    assert timing.ratio(None, 0.04) is None
    assert timing.ratio(0.01, None) is None
    assert timing.ratio(0.0, 0.04) is None


# --- formatting --------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0.0083, "8.3 ms"), (0.0123, "12 ms"), (0.2015, "202 ms"), (2.345, "2.35 s"),
])
def test_fmt_seconds(seconds, text):
    assert report.fmt_seconds(seconds) == text


def test_fmt_bytes_and_ratio():
    assert report.fmt_bytes(20 * MIB + MIB // 2) == "20.5 MiB"
    assert report.fmt_ratio(3.96) == "4.0×"
    assert report.fmt_ratio(123.4) == "123×"
    assert report.fmt_ratio(None) == "n/a"


def test_a_count_row_shows_whole_numbers():
    row = report.Row("1p", "faults", unit="count", lxc=[321, 317, 325], lxcsm=[4604.5])
    assert row.cell("lxc") == "321 (317–325)"
    assert row.cell("lxcsm") == "4,604"


# --- rows and the table ------------------------------------------------------------------------

def test_row_cell_median_min_max_and_failures():
    row = report.Row("1", "x", lxc=[0.010, 0.008, 0.012], lxcsm=[0.2, 0.25], lxcsm_failed=1)
    assert row.cell("lxc") == "10 ms (8.0–12 ms)"
    assert row.cell("lxcsm") == "225 ms (200–250 ms), 1 failed"


def test_row_cell_keeps_both_units_when_they_differ():
    row = report.Row("5", "x", lxcsm=[0.5, 1.5, 1.0])
    assert row.cell("lxcsm") == "1.00 s (500 ms–1.50 s)"


def test_row_cell_single_value_none_and_missing():
    row = report.Row("5", "x", lxc=[0.086], lxcsm=[], lxcsm_failed=2)
    assert row.cell("lxc") == "86 ms"
    assert row.cell("lxcsm") == "no successful run, 2 failed"
    assert row.cell("lxc", available=False) == "missing"


def test_ratio_target_met_or_not():
    good = report.Row("1", "x", lxc=[0.01], lxcsm=[0.039], target=("ratio", 4.0))
    bad = report.Row("1", "x", lxc=[0.01], lxcsm=[0.2], target=("ratio", 4.0))
    assert good.met() == "yes" and bad.met() == "no"
    assert good.target_text() == "≤ 4×"


def test_ratio_target_cannot_be_told_without_lxc():
    row = report.Row("1", "x", lxcsm=[0.2], target=("ratio", 4.0))
    assert row.ratio() is None
    assert row.met() == "n/a"


def test_rss_target_is_absolute():
    row = report.Row("4", "rss", unit="bytes", lxcsm=[20 * MIB], target=("max", 25 * MIB))
    assert row.met() == "yes"            # no lxc-start needed
    assert row.target_text() == "≤ 25.0 MiB"
    row.lxcsm = [26 * MIB]
    assert row.met() == "no"


def test_row_without_target_and_not_measured_row():
    assert report.Row("3a", "part").met() == ""
    veth = report.Row("2", "veth", target=("ratio", 4.0), na="n/a (veth not supported yet)")
    assert veth.met() == "n/a"
    assert veth.cell("lxc") == "n/a (veth not supported yet)"
    assert veth.cell("lxcsm") == ""


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_table_shape_and_contents():
    rows = [report.Row("1", "start -F", lxc=[0.01, 0.012], lxcsm=[0.2, 0.21], target=("ratio", 4.0)),
            report.Row("2", "veth", target=("ratio", 4.0), na="n/a (veth not supported yet)"),
            report.Row("4", "rss", unit="bytes", lxc=[3 * MIB], lxcsm=[20 * MIB],
                       target=("max", 25 * MIB))]
    text = report.markdown_table(rows, "lxc-start 5.0.2")
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert _cells(lines[0]) == ["#", "measurement", "lxc-start 5.0.2 median (min–max)",
                                "lxcsm median (min–max)", "lxcsm / lxc-start", "target", "met?"]
    assert set(lines[1]) <= {"|", "-"}
    assert len({len(line) for line in lines}) == 1           # padded: one width
    assert _cells(lines[2]) == ["1", "start -F", "11 ms (10–12 ms)", "205 ms (200–210 ms)",
                                "18.6×", "≤ 4×", "no"]
    assert _cells(lines[3]) == ["2", "veth", "n/a (veth not supported yet)", "", "", "≤ 4×", "n/a"]
    assert _cells(lines[4]) == ["4", "rss", "3.0 MiB", "20.0 MiB", "6.7×", "≤ 25.0 MiB", "yes"]


def test_markdown_table_without_lxc_start():
    rows = [report.Row("1", "start -F", lxcsm=[0.2], target=("ratio", 4.0))]
    line = report.markdown_table(rows, lxc_available=False).splitlines()[2]
    assert _cells(line) == ["1", "start -F", "missing", "200 ms", "n/a", "≤ 4×", "n/a"]


def test_markdown_table_with_the_server_side():
    row = report.Row("1", "start -F", lxc=[0.01], lxcsm=[0.06], warm=[0.02], target=("ratio", 2.0))
    lines = report.markdown_table([row], server=True).splitlines()
    assert _cells(lines[0])[5:] == ["lxcsm + server median (min–max)", "lxcsm + server / lxc-start", "target",
                                    "met?"]
    assert _cells(lines[2]) == ["1", "start -F", "10 ms", "60 ms", "6.0×", "20 ms", "2.0×", "≤ 2×", "yes"]


def test_markdown_table_with_a_baseline_side_before_lxcsm():
    row = report.Row("1", "start -F", lxc=[0.01], lxcsm=[0.06], base=[0.08], target=("ratio", 2.0))
    lines = report.markdown_table([row], baseline="f481b29").splitlines()
    assert _cells(lines[0])[3:7] == ["lxcsm f481b29 median (min–max)", "lxcsm f481b29 / lxc-start",
                                     "lxcsm median (min–max)", "lxcsm / lxc-start"]
    assert _cells(lines[2]) == ["1", "start -F", "10 ms", "80 ms", "8.0×", "60 ms", "6.0×", "≤ 2×", "no"]
    floor = report.Row("1f", "floor", lxc=[0.01], lxcsm=[0.05])
    assert _cells(report.markdown_table([floor], baseline="f481b29").splitlines()[2])[3:5] == ["", ""]


def test_the_target_is_held_to_the_server_side_when_it_was_measured():
    row = report.Row("1", "x", lxc=[0.01], lxcsm=[0.05], target=("ratio", 4.0))
    assert row.met() == "no"                       # cold only: cold is judged
    row.warm = [0.03]
    assert row.ratio("warm") == pytest.approx(3.0) and row.met() == "yes"
    failed_warm = report.Row("1", "x", lxc=[0.01], lxcsm=[0.02], warm_failed=3, target=("ratio", 4.0))
    assert failed_warm.met() == "n/a"               # the server side failed: not met by the cold one


LXC_TRACE = """\
lxc-start c 20261201150340.384 TRACE    sync - ../src/lxc/sync.c:lxc_sync_init:139 - Initialized sync
lxc-start c 20261201150340.389 NOTICE   start - ../src/lxc/start.c:start:2194 - Exec'ing "/bin/true"
lxc-start c 20261201150340.391 DEBUG    start - ../src/lxc/start.c:signal_handler:464 - Container init process 7 exited
lxc-start c 20261201150340.394 TRACE    start - ../src/lxc/start.c:lxc_end:974 - Set container state to "STOPPED"
"""


def test_lxc_own_work_from_its_trace():
    spawn, teardown = rows.lxc_own_work(LXC_TRACE)
    assert spawn == pytest.approx(0.005) and teardown == pytest.approx(0.003)


def test_lxc_own_work_refuses_times_lxc_may_have_printed_wrong():
    # 40 ms into a second LXC 5.0.2 prints ".400": a trace reaching below 100 ms is not trusted,
    # nor one spanning two seconds.
    assert rows.lxc_own_work(LXC_TRACE.replace("40.384", "40.084")) is None
    assert rows.lxc_own_work(LXC_TRACE.replace("40.394", "41.394")) is None
    assert rows.lxc_own_work(LXC_TRACE.splitlines()[0]) is None       # no exec line


def test_lxcsm_own_work_from_its_flight_record():
    events = [{"event": "state", "side": "monitor", "state": "init_handler", "time": 10.0},
              {"event": "state", "side": "monitor", "state": "spawn", "time": 10.010},
              {"event": "exec", "side": "child", "time": 10.014},
              {"event": "init exited", "side": "monitor", "time": 10.020},
              {"event": "monitor exited", "side": "monitor", "time": 10.023}]
    record = "\n".join(json.dumps(e) for e in reversed(events))
    spawn, teardown = rows.lxcsm_own_work(record)
    assert spawn == pytest.approx(0.004) and teardown == pytest.approx(0.003)
    assert rows.lxcsm_own_work("\n".join(json.dumps(e) for e in events[:2])) is None


def test_row_as_json():
    data = report.Row("1", "x", lxc=[0.01], lxcsm=[0.02], target=("ratio", 4.0)).as_json()
    assert data["ratio"] == pytest.approx(2.0)
    assert data["met"] == "yes" and data["lxcsm_median"] == 0.02


# --- parsing -----------------------------------------------------------------------------------

def test_parse_only():
    assert cli.parse_only(None) == {1, 2, 3, 4, 5, 6, 7, 8, 9}
    assert cli.parse_only("1,3") == {1, 3}
    assert cli.parse_only(" 5 ,") == {5}
    for bad in ("10", "x", ",", "1,0"):
        with pytest.raises(ValueError):
            cli.parse_only(bad)


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:      1133 |      17855 | site
import time:       816 |      27505 |       structlog.stdlib
import time:       480 |      40226 |     structlog
import time:      2507 |      42733 |   lxcsm.engine.log
import time:      3181 |     134692 | lxcsm.engine.cli
some other line
"""


def test_parse_importtime_and_top():
    imports = diagnostics.parse_importtime(IMPORTTIME)
    assert [i["module"] for i in imports] == ["_io", "site", "structlog.stdlib", "structlog",
                                              "lxcsm.engine.log", "lxcsm.engine.cli"]
    assert imports[3] == {"module": "structlog", "self_us": 480, "cumulative_us": 40226, "depth": 2}
    assert imports[-1]["depth"] == 0
    top = diagnostics.top_imports(imports, 2)
    assert [i["module"] for i in top] == ["lxcsm.engine.cli", "lxcsm.engine.log"]
    assert diagnostics.total_import_us(imports) == 17855 + 134692


def test_monitor_cmdline_matching():
    title = host.monitor_title("lxcsm", "/tmp/b/lxcsm", "lxcsm-bench-1")
    assert title == b"[lxcsm monitor] /tmp/b/lxcsm lxcsm-bench-1"
    assert host.is_monitor_cmdline(title + b"\0\0\0\0", title)       # lxcsm pads with NULs
    assert host.is_monitor_cmdline(title + b"\0", title)             # LXC ends with one
    assert host.is_monitor_cmdline(title, title)
    assert not host.is_monitor_cmdline(title + b"0\0", title)        # lxcsm-bench-10
    assert not host.is_monitor_cmdline(b"[lxc monitor] /tmp/b/lxcsm lxcsm-bench-1\0", title)


def test_phases_of_a_start():
    events = [
        {"event": "state", "side": "monitor", "state": "init_handler", "time": 100.200},
        {"event": "state", "side": "child", "state": "startup", "time": 100.220},
        {"event": "state", "side": "monitor", "state": "poll", "time": 100.240},
        {"event": "state", "side": "monitor", "state": "stopped", "time": 100.243},
        {"event": "undo", "side": "monitor", "time": 100.244},
    ]
    cut = diagnostics.phases(list(reversed(events)), launched=100.0, exited=100.300)
    assert cut == pytest.approx({"before_machine": 0.200, "start_machine": 0.040,
                                 "running_and_teardown": 0.004, "exit": 0.056, "total": 0.300})
    assert diagnostics.phases(events[:2], 100.0, 100.3) is None          # never reached poll


def test_bench_env_caches_bytecode(tmp_path):
    env = containers.bench_env({"PATH": "/bin", "PYTHONDONTWRITEBYTECODE": "1"}, tmp_path / "pyc")
    assert env == {"PATH": "/bin", "PYTHONPYCACHEPREFIX": str(tmp_path / "pyc")}


def test_container_names_carry_the_prefix():
    assert containers.NAME_PREFIX == "lxcsm-bench-"


def test_each_tool_names_its_containers_apart():
    """Cgroups are named after the container: two tools' containers must never share a name."""
    assert len(set(containers.TOOL_LETTERS.values())) == len(containers.TOOL_LETTERS)


def test_fmt_seconds_rounds_across_unit_boundaries():
    assert report.fmt_seconds(0.00996) == "10 ms"
    assert report.fmt_seconds(0.9996) == "1.00 s"


# --- waiting for a command ------------------------------------------------------------------------

def test_wait_for_gives_the_exit_status_or_none_while_running():
    done = subprocess.Popen(["sh", "-c", "exit 3"])
    assert timing.wait_for(done, 10) == 3
    assert timing.wait_for(done, 10) == 3          # already reaped: still the status
    running = subprocess.Popen(["sleep", "30"])
    try:
        assert timing.wait_for(running, 0.05) is None
    finally:
        running.kill()
        running.wait()


def test_a_run_counts_the_page_faults_the_system_took_meanwhile(tmp_path):
    """A process that writes 8 MiB of fresh memory takes a fault a page (2,048 of them);
    the count is the whole system's, so it is at least that, and not absurdly more."""
    writer = "b = bytearray(8 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"
    result = timing.Runner().run([sys.executable, "-c", writer], tmp_path / "out")
    assert result.ok
    assert result.faults is not None and 2048 <= result.faults < 100_000


# --- the launcher ---------------------------------------------------------------------------------

def test_tools_bench_launches_the_package():
    """tools/bench puts the checkout on sys.path and runs tools.benchmark's command line."""
    launcher = Path(__file__).resolve().parents[2] / "tools" / "bench"
    done = subprocess.run([sys.executable, str(launcher), "--help"], capture_output=True, text=True, timeout=60,
                          cwd="/", stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tools/bench ")
    assert "Rows of the table (the issue's numbering):" in done.stdout
    bad = subprocess.run([sys.executable, str(launcher), "--only", "10"], capture_output=True, text=True, timeout=60,
                         cwd="/", stdin=subprocess.DEVNULL)
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == ("tools/bench: error: --only: '10' is not one of the rows "
                                           "1, 2, 3, 4, 5, 6, 7, 8, 9")


def test_the_debian_row_says_why_it_is_not_measured_without_the_cached_rootfs(monkeypatch):
    from tools.benchmark import debian_row

    class NoBench:
        class args:
            runs = 15
        tools: list = []

    monkeypatch.setattr(debian_row.debian, "cached_rootfs", lambda: None)
    stop, boot = debian_row.row_debian(NoBench())
    assert (stop.key, boot.key) == ("9", "9a") and "(n=5)" in stop.label
    assert stop.na == boot.na and "python3 fixtures/debian.py build" in stop.na
    assert stop.cell("lxc") == stop.na and stop.met() == ""
