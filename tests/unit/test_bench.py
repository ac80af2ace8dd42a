"""tools/bench's pure parts: statistics, ratio, formatting, the markdown table, parsing.

Nothing here starts a container or times anything; tools/bench itself is run by hand.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench"


def _load():
    loader = SourceFileLoader("lxcsm_tools_bench", str(BENCH))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module       # dataclasses look their module up
    loader.exec_module(module)
    return module


bench = _load()
MIB = 1024 * 1024


# --- statistics --------------------------------------------------------------------------------

def test_median_odd_even_and_empty():
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert bench.median([]) is None


def test_spread():
    assert bench.spread([0.3, 0.1, 0.2]) == (0.1, 0.3)
    assert bench.spread([]) is None


def test_ratio_is_lxcsm_over_lxc():
    assert bench.ratio(0.010, 0.040) == pytest.approx(4.0)
    assert bench.ratio(None, 0.04) is None
    assert bench.ratio(0.01, None) is None
    assert bench.ratio(0.0, 0.04) is None


# --- formatting --------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0.0083, "8.3 ms"), (0.0123, "12 ms"), (0.2015, "202 ms"), (2.345, "2.35 s"),
])
def test_fmt_seconds(seconds, text):
    assert bench.fmt_seconds(seconds) == text


def test_fmt_bytes_and_ratio():
    assert bench.fmt_bytes(20 * MIB + MIB // 2) == "20.5 MiB"
    assert bench.fmt_ratio(3.96) == "4.0×"
    assert bench.fmt_ratio(123.4) == "123×"
    assert bench.fmt_ratio(None) == "n/a"


# --- rows and the table ------------------------------------------------------------------------

def test_row_cell_median_min_max_and_failures():
    row = bench.Row("1", "x", lxc=[0.010, 0.008, 0.012], lxcsm=[0.2, 0.25], lxcsm_failed=1)
    assert row.cell("lxc") == "10 ms (8.0–12 ms)"
    assert row.cell("lxcsm") == "225 ms (200–250 ms), 1 failed"


def test_row_cell_keeps_both_units_when_they_differ():
    row = bench.Row("5", "x", lxcsm=[0.5, 1.5, 1.0])
    assert row.cell("lxcsm") == "1.00 s (500 ms–1.50 s)"


def test_row_cell_single_value_none_and_missing():
    row = bench.Row("5", "x", lxc=[0.086], lxcsm=[], lxcsm_failed=2)
    assert row.cell("lxc") == "86 ms"
    assert row.cell("lxcsm") == "no successful run, 2 failed"
    assert row.cell("lxc", available=False) == "missing"


def test_ratio_target_met_or_not():
    good = bench.Row("1", "x", lxc=[0.01], lxcsm=[0.039], target=("ratio", 4.0))
    bad = bench.Row("1", "x", lxc=[0.01], lxcsm=[0.2], target=("ratio", 4.0))
    assert good.met() == "yes" and bad.met() == "no"
    assert good.target_text() == "≤ 4×"


def test_ratio_target_cannot_be_told_without_lxc():
    row = bench.Row("1", "x", lxcsm=[0.2], target=("ratio", 4.0))
    assert row.ratio() is None
    assert row.met() == "n/a"


def test_rss_target_is_absolute():
    row = bench.Row("4", "rss", unit="bytes", lxcsm=[20 * MIB], target=("max", 25 * MIB))
    assert row.met() == "yes"            # no lxc-start needed
    assert row.target_text() == "≤ 25.0 MiB"
    row.lxcsm = [26 * MIB]
    assert row.met() == "no"


def test_row_without_target_and_not_measured_row():
    assert bench.Row("3a", "part").met() == ""
    veth = bench.Row("2", "veth", target=("ratio", 4.0), na="n/a (veth not supported yet)")
    assert veth.met() == "n/a"
    assert veth.cell("lxc") == "n/a (veth not supported yet)"
    assert veth.cell("lxcsm") == ""


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_table_shape_and_contents():
    rows = [bench.Row("1", "start -F", lxc=[0.01, 0.012], lxcsm=[0.2, 0.21], target=("ratio", 4.0)),
            bench.Row("2", "veth", target=("ratio", 4.0), na="n/a (veth not supported yet)"),
            bench.Row("4", "rss", unit="bytes", lxc=[3 * MIB], lxcsm=[20 * MIB],
                      target=("max", 25 * MIB))]
    text = bench.markdown_table(rows, "lxc-start 5.0.2")
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
    rows = [bench.Row("1", "start -F", lxcsm=[0.2], target=("ratio", 4.0))]
    line = bench.markdown_table(rows, lxc_available=False).splitlines()[2]
    assert _cells(line) == ["1", "start -F", "missing", "200 ms", "n/a", "≤ 4×", "n/a"]


def test_row_as_json():
    data = bench.Row("1", "x", lxc=[0.01], lxcsm=[0.02], target=("ratio", 4.0)).as_json()
    assert data["ratio"] == pytest.approx(2.0)
    assert data["met"] == "yes" and data["lxcsm_median"] == 0.02


# --- parsing -----------------------------------------------------------------------------------

def test_parse_only():
    assert bench.parse_only(None) == {1, 2, 3, 4, 5}
    assert bench.parse_only("1,3") == {1, 3}
    assert bench.parse_only(" 5 ,") == {5}
    for bad in ("6", "x", ",", "1,0"):
        with pytest.raises(ValueError):
            bench.parse_only(bad)


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
    imports = bench.parse_importtime(IMPORTTIME)
    assert [i["module"] for i in imports] == ["_io", "site", "structlog.stdlib", "structlog",
                                              "lxcsm.engine.log", "lxcsm.engine.cli"]
    assert imports[3] == {"module": "structlog", "self_us": 480, "cumulative_us": 40226, "depth": 2}
    assert imports[-1]["depth"] == 0
    top = bench.top_imports(imports, 2)
    assert [i["module"] for i in top] == ["lxcsm.engine.cli", "lxcsm.engine.log"]
    assert bench.total_import_us(imports) == 17855 + 134692


def test_monitor_cmdline_matching():
    title = bench.monitor_title("lxcsm", "/tmp/b/lxcsm", "lxcsm-bench-1")
    assert title == b"[lxcsm monitor] /tmp/b/lxcsm lxcsm-bench-1"
    assert bench.is_monitor_cmdline(title + b"\0\0\0\0", title)       # lxcsm pads with NULs
    assert bench.is_monitor_cmdline(title + b"\0", title)             # LXC ends with one
    assert bench.is_monitor_cmdline(title, title)
    assert not bench.is_monitor_cmdline(title + b"0\0", title)        # lxcsm-bench-10
    assert not bench.is_monitor_cmdline(b"[lxc monitor] /tmp/b/lxcsm lxcsm-bench-1\0", title)


def test_phases_of_a_start():
    events = [
        {"event": "state", "side": "monitor", "state": "init_handler", "time": 100.200},
        {"event": "state", "side": "child", "state": "startup", "time": 100.220},
        {"event": "state", "side": "monitor", "state": "poll", "time": 100.240},
        {"event": "state", "side": "monitor", "state": "stopped", "time": 100.243},
        {"event": "undo", "side": "monitor", "time": 100.244},
    ]
    cut = bench.phases(list(reversed(events)), launched=100.0, exited=100.300)
    assert cut == pytest.approx({"before_machine": 0.200, "start_machine": 0.040,
                                 "running_and_teardown": 0.004, "exit": 0.056, "total": 0.300})
    assert bench.phases(events[:2], 100.0, 100.3) is None          # never reached poll


def test_bench_env_caches_bytecode(tmp_path):
    env = bench.bench_env({"PATH": "/bin", "PYTHONDONTWRITEBYTECODE": "1"}, tmp_path / "pyc")
    assert env == {"PATH": "/bin", "PYTHONPYCACHEPREFIX": str(tmp_path / "pyc")}


def test_container_names_carry_the_prefix():
    assert bench.NAME_PREFIX == "lxcsm-bench-"


def test_fmt_seconds_rounds_across_unit_boundaries():
    assert bench.fmt_seconds(0.00996) == "10 ms"
    assert bench.fmt_seconds(0.9996) == "1.00 s"


# --- waiting for a command ------------------------------------------------------------------------

def test_wait_for_gives_the_exit_status_or_none_while_running():
    import subprocess
    done = subprocess.Popen(["sh", "-c", "exit 3"])
    assert bench.wait_for(done, 10) == 3
    assert bench.wait_for(done, 10) == 3          # already reaped: still the status
    running = subprocess.Popen(["sleep", "30"])
    try:
        assert bench.wait_for(running, 0.05) is None
    finally:
        running.kill()
        running.wait()
