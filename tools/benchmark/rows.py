"""The rows of tools/bench's table: one function per row, measuring both tools in turn.

Each takes the `Bench` and returns its rows of the table (a row and its
parts: 3 is 3a + 3b).  Runs alternate between the tools (lxc-start, lxcsm,
lxc-start, lxcsm ...) so that drift cancels out and no run follows a run of
the same tool; a failed run is recorded, counted in its row and left out of
the medians.  The package's docstring says what each row measures.
"""

from __future__ import annotations

import time

from . import progress
from .containers import Bench, Tool
from .host import memory_of
from .report import MIB, Row
from .timing import wait_exited

RATIO_TARGET = 4.0
RSS_TARGET = 25 * MIB
RUNNING_AT_ONCE = 20          # row 4c
SETTLE_SECONDS = 0.5          # row 4: how long after RUNNING the monitor's memory is read


def alternate(bench: Bench, count: int):
    """(run number, tool) pairs: lxc-start, lxcsm, lxc-start, lxcsm ..."""
    for run in range(1, count + 1):
        for tool in bench.tools:
            yield run, tool


def foreground_run(bench: Bench, row: Row, tool: Tool, name: str, run: int, prefix: tuple[str, ...] = ()) -> None:
    """One timed `start -F -- /bin/true` (under `prefix`, e.g. nsenter), into `row`."""
    result = bench.runner.run([*prefix, *tool.argv("start", name, "-F", "--", "/bin/true")], bench.out(tool))
    if result.ok:
        (row.lxc if tool.key == "lxc" else row.lxcsm).append(result.seconds)
        return
    bench.fail(row.key, tool, run, result.detail)
    if tool.key == "lxc":
        row.lxc_failed += 1
    else:
        row.lxcsm_failed += 1
    bench.ensure_stopped(tool, [name])


def row1(bench: Bench) -> list[Row]:
    row = Row("1", f"`start -F -- /bin/true`, empty network (n={bench.args.runs})",
              target=("ratio", RATIO_TARGET))
    # The floor: a Python process that imports the state-machine package lxcsm must use,
    # and nothing else - no lxcsm code, no container.  Timed right after each lxcsm run.
    floor = Row("1f", "… floor: `python -c 'import transitions'` alone (no lxcsm code)")
    names = {tool.key: bench.make(tool, "c") for tool in bench.tools}
    progress(f"row 1: {bench.args.runs} runs of start -F -- /bin/true per tool, alternating")
    for run, tool in alternate(bench, bench.args.runs):
        if tool.key == "lxcsm":
            result = bench.runner.run([bench.python, "-c", "import transitions"], bench.out(tool, "floor"))
            if result.ok:
                floor.lxcsm.append(result.seconds)
            else:
                floor.lxcsm_failed += 1
        foreground_run(bench, row, tool, names[tool.key], run)
    floor.lxc = row.lxc
    return [row, floor]


def row1b(bench: Bench) -> list[Row]:
    row = Row("1b", f"same as 1, back to back: each tool's runs in a row (n={bench.args.runs})",
              target=("ratio", RATIO_TARGET))
    progress(f"row 1b: {bench.args.runs} runs of start -F -- /bin/true per tool, one tool after the other")
    for tool in bench.tools:
        name = bench.make(tool, "b")
        for run in range(1, bench.args.runs + 1):
            foreground_run(bench, row, tool, name, run)
    return [row]


def row6(bench: Bench) -> list[Row]:
    row = Row("6", f"`start -F -l TRACE -o FILE -- /bin/true` (n={bench.args.runs})", target=("ratio", RATIO_TARGET))
    names = {tool.key: bench.make(tool, "t") for tool in bench.tools}
    progress(f"row 6: {bench.args.runs} traced runs of start -F -- /bin/true per tool, alternating")
    for run, tool in alternate(bench, bench.args.runs):
        log = str(bench.out(tool, "trace-log"))
        result = bench.runner.run(tool.argv("start", names[tool.key], "-F", "-l", "TRACE", "-o", log, "--",
                                            "/bin/true"), bench.out(tool))
        side = "lxc" if tool.key == "lxc" else "lxcsm"
        if result.ok:
            getattr(row, side).append(result.seconds)
        else:
            bench.fail("6", tool, run, result.detail)
            setattr(row, f"{side}_failed", getattr(row, f"{side}_failed") + 1)
            bench.ensure_stopped(tool, [names[tool.key]])
    return [row]


def row2(bench: Bench) -> list[Row]:
    row = Row("2", f"same as 1 with a veth on a bridge (n={bench.args.runs})", target=("ratio", RATIO_TARGET))
    prefix = bench.network_wrapper()    # row 2's network namespace, a bridge in it
    names = {tool.key: bench.make(tool, "v", ["lxc.net.0.type = veth", "lxc.net.0.link = br0"])
             for tool in bench.tools}
    progress(f"row 2: {bench.args.runs} runs of start -F -- /bin/true with a veth per tool, alternating")
    for tool in bench.tools:   # untimed: the first veth start fills the caches (pyroute2's bytecode)
        bench.runner.run([*prefix, *tool.argv("start", names[tool.key], "-F", "--", "/bin/true")],
                         bench.out(tool))
    for run, tool in alternate(bench, bench.args.runs):
        foreground_run(bench, row, tool, names[tool.key], run, prefix)
    return [row]


def row3(bench: Bench) -> list[Row]:
    total = Row("3", f"`start -d` until RUNNING + `stop -k` until stopped (n={bench.args.runs})",
                target=("ratio", RATIO_TARGET))
    start = Row("3a", "… of which `start -d` (returns when RUNNING)")
    stop = Row("3b", "… of which `stop -k` (until the monitor exited)")
    names = {tool.key: bench.make(tool, "c") for tool in bench.tools}
    progress(f"row 3: {bench.args.runs} runs of start -d / stop -k per tool (busybox init), alternating")
    for run, tool in alternate(bench, bench.args.runs):
        name = names[tool.key]
        started = bench.start_stop(tool, name, "3", run)
        stopped = bench.stop_timed(tool, name, started[1], "3", run) if started else None
        side = "lxc" if tool.key == "lxc" else "lxcsm"
        if started and stopped is not None:
            getattr(total, side).append(started[0] + stopped)
            getattr(start, side).append(started[0])
            getattr(stop, side).append(stopped)
        else:
            for row in (total, start, stop):
                setattr(row, f"{side}_failed", getattr(row, f"{side}_failed") + 1)
    return [total, start, stop]


def row4(bench: Bench) -> list[Row]:
    rss = Row("4", f"monitor RSS while init runs `sleep` (n={bench.args.samples})", unit="bytes",
              target=("max", RSS_TARGET))
    pss = Row("4b", "… monitor PSS (smaps_rollup)", unit="bytes")
    names = {tool.key: bench.make(tool, "c") for tool in bench.tools}
    progress(f"row 4: monitor memory, {bench.args.samples} samples per tool")
    for run, tool in alternate(bench, bench.args.samples):
        name = names[tool.key]
        side = "lxc" if tool.key == "lxc" else "lxcsm"
        started = bench.start_stop(tool, name, "4", run, "/bin/sleep", "1000")
        if started is None:
            setattr(rss, f"{side}_failed", getattr(rss, f"{side}_failed") + 1)
            continue
        time.sleep(SETTLE_SECONDS)
        size, proportional = memory_of(started[1])
        if size is not None:
            getattr(rss, side).append(size)
        if proportional is not None:
            getattr(pss, side).append(proportional)
        bench.stop_timed(tool, name, started[1], "4", run)
    return [rss, pss, many_running_pss(bench)]


def many_running_pss(bench: Bench) -> Row:
    """Row 4c: PSS of each monitor while RUNNING_AT_ONCE containers run.  PSS divides a shared page
    among the processes mapping it, so one lone monitor forked by a start server (row 4b) shares
    its pages with the server alone; with many running, each pays its private pages and a share."""
    row = Row("4c", f"… monitor PSS, each of {RUNNING_AT_ONCE} running at once", unit="bytes")
    progress(f"row 4c: {RUNNING_AT_ONCE} containers running at once per tool, their monitors' PSS")
    for tool in bench.tools:
        side = "lxc" if tool.key == "lxc" else "lxcsm"
        names = [bench.make(tool, f"m{i:02d}") for i in range(RUNNING_AT_ONCE)]
        monitors = []
        for run, name in enumerate(names, 1):
            started = bench.start_stop(tool, name, "4c", run, "/bin/sleep", "1000")
            if started is None:
                setattr(row, f"{side}_failed", getattr(row, f"{side}_failed") + 1)
            else:
                monitors.append(started[1])
        time.sleep(SETTLE_SECONDS)
        for pid in monitors:
            _size, proportional = memory_of(pid)
            if proportional is not None:
                getattr(row, side).append(proportional)
        bench.ensure_stopped(tool, names)
    return row


def row5(bench: Bench) -> list[Row]:
    n = bench.args.parallel
    total = Row("5", f"{n} containers in parallel: all `start -d` + all `stop -k` "
                     f"(n={bench.args.rounds})", target=("ratio", RATIO_TARGET))
    start = Row("5a", f"… of which {n} × `start -d` until all returned (RUNNING)")
    stop = Row("5b", f"… of which {n} × `stop -k` until all monitors exited")
    progress(f"row 5: building {n} busybox rootfs per tool")
    names = {tool.key: [bench.make(tool, f"p{i:02d}") for i in range(n)] for tool in bench.tools}
    progress(f"row 5: {bench.args.rounds} rounds of {n} parallel starts and stops per tool, alternating")
    for run, tool in alternate(bench, bench.args.rounds):
        side = "lxc" if tool.key == "lxc" else "lxcsm"
        result = parallel_round(bench, tool, names[tool.key], run)
        if result is None:
            for row in (total, start, stop):
                setattr(row, f"{side}_failed", getattr(row, f"{side}_failed") + 1)
        else:
            getattr(total, side).append(result[0] + result[1])
            getattr(start, side).append(result[0])
            getattr(stop, side).append(result[1])
    return [total, start, stop]


def parallel_round(bench: Bench, tool: Tool, names: list[str], run: int):
    """One round of row 5: every `start -d` at once, then every `stop -k`; (start s, stop s) or None."""
    began = time.perf_counter()
    procs = [(name, bench.runner.spawn(tool.argv("start", name, "-d"), bench.out(tool, f"p-{name}")))
             for name in names]
    results = [(name, bench.runner.finish(p, bench.out(tool, f"p-{name}"), began, 300))
               for name, p in procs]
    start_seconds = time.perf_counter() - began
    failed = [(name, r) for name, r in results if not r.ok]
    monitors = tool.monitors(names)
    missing = [name for name in names if len(monitors.get(name, [])) != 1]
    if failed or missing:
        detail = (f"{len(failed)} of {len(names)} starts failed, first: {failed[0][0]}: "
                  f"{failed[0][1].detail}" if failed else
                  f"{len(missing)} containers have no monitor after start -d, first {missing[0]}")
        bench.fail("5", tool, run, detail)
        bench.ensure_stopped(tool, names)
        return None
    pids = [p for ps in monitors.values() for p in ps]
    began = time.perf_counter()
    procs = [(name, bench.runner.spawn(tool.argv("stop", name, "-k"), bench.out(tool, f"p-{name}")))
             for name in names]
    results = [(name, bench.runner.finish(p, bench.out(tool, f"p-{name}"), began, 300))
               for name, p in procs]
    exited = wait_exited(pids, 60)
    stop_seconds = time.perf_counter() - began
    failed = [(name, r) for name, r in results if not r.ok]
    if failed or not exited:
        detail = (f"{len(failed)} of {len(names)} stops failed, first: {failed[0][0]}: "
                  f"{failed[0][1].detail}" if failed else "monitors still running 60 s after stop -k")
        bench.fail("5", tool, run, detail)
        bench.ensure_stopped(tool, names)
        return None
    return start_seconds, stop_seconds


# Row number (--only) -> the function that measures it, in the table's order.
ROWS = {1: row1, 2: row2, 3: row3, 4: row4, 5: row5, 6: row6, 7: row1b}
