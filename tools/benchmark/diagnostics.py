"""Where lxcsm's own time goes: the diagnostics printed after the table (not with --markdown).

Two measurements of lxcsm alone: the imports of one ``lxcsm start -F``
(PYTHONPROFILEIMPORTTIME) with the bare interpreter's startup, and a few
``lxcsm start -F -- /bin/true`` cut into phases from their flight records
(``lxcsm-last-start.log``), with ``lxcsm timeline``'s table of the last one.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from . import progress
from .containers import Bench
from .report import fmt_seconds
from .timing import Runner, median, wait_for

# --- reading what was measured --------------------------------------------------------------------

_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def parse_importtime(text: str) -> list[dict]:
    """``-X importtime`` stderr as [{module, self_us, cumulative_us, depth}], in its order."""
    found = []
    for line in text.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            found.append({"module": match[4], "self_us": int(match[1]),
                          "cumulative_us": int(match[2]), "depth": (len(match[3]) - 1) // 2})
    return found


def top_imports(imports: list[dict], count: int = 10) -> list[dict]:
    return sorted(imports, key=lambda i: i["cumulative_us"], reverse=True)[:count]


def total_import_us(imports: list[dict]) -> int:
    """Time of all top-level imports (depth 0): the whole import, nested ones included."""
    return sum(i["cumulative_us"] for i in imports if i["depth"] == 0)


def phases(events: list[dict], launched: float, exited: float) -> dict[str, float] | None:
    """Cut one foreground start into phases (seconds), from its flight record's events.

    ``before_machine``: from launching the command to the monitor's first state (Python
    startup, imports, config, preflight); ``start_machine``: init_handler to poll (the
    container is RUNNING); ``running_and_teardown``: poll to the last recorded event;
    ``exit``: from then to the command's exit (saving the record, interpreter shutdown).
    """
    timed = sorted((e for e in events if isinstance(e.get("time"), (int, float))), key=lambda e: e["time"])
    first = next((e["time"] for e in timed
                  if e.get("event") == "state" and e.get("side") == "monitor"), None)
    poll = next((e["time"] for e in timed if e.get("event") == "state"
                 and e.get("side") == "monitor" and e.get("state") == "poll"), None)
    if first is None or poll is None:
        return None
    last = timed[-1]["time"]
    return {"before_machine": first - launched, "start_machine": poll - first,
            "running_and_teardown": last - poll, "exit": exited - last, "total": exited - launched}


# --- measuring ------------------------------------------------------------------------------------

def measure_imports(bench: Bench, python: str) -> dict:
    """What a real `lxcsm start -F -- /bin/true` imports (PYTHONPROFILEIMPORTTIME), and
    how long the bare interpreter takes to start."""
    progress("diagnostics: the imports of one lxcsm start -F, interpreter startup")
    tool = bench.lxcsm
    name = bench.make(tool, "c")
    out = bench.out(tool, "importtime")
    runner = Runner(dict(tool.env or bench.env, PYTHONPROFILEIMPORTTIME="1"))
    result = runner.run(tool.argv("start", name, "-F", "--", "/bin/true"), out)
    if not result.ok:
        bench.fail("diagnostics", tool, 0, result.detail)
        bench.ensure_stopped(tool, [name])
    imports = parse_importtime(out.read_text(errors="replace"))
    times = []
    for _ in range(7):
        began = time.perf_counter()
        proc = subprocess.Popen([python, "-c", "pass"], stdin=subprocess.DEVNULL, env=bench.env)
        if wait_for(proc, 60) != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args)
        times.append(time.perf_counter() - began)
    return {"top": top_imports(imports, 12), "total_us": total_import_us(imports),
            "startup": {"python -c pass": median(times)}, "python": python}


def measure_phases(bench: Bench, runs: int = 5) -> dict | None:
    """A few default-level foreground starts, cut into phases from their flight records."""
    progress(f"diagnostics: {runs} lxcsm start -F -- /bin/true cut into phases")
    tool = bench.lxcsm
    name = bench.make(tool, "c")
    record = Path(tool.lxcpath) / name / "lxcsm-last-start.log"
    cuts = []
    for run in range(1, runs + 1):
        launched = time.time()
        result = bench.runner.run(tool.argv("start", name, "-F", "--", "/bin/true"), bench.out(tool), env=tool.env)
        exited = time.time()
        if not result.ok:
            bench.fail("diagnostics", tool, run, result.detail)
            bench.ensure_stopped(tool, [name])
            continue
        try:
            events = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as err:
            bench.fail("diagnostics", tool, run, f"cannot read {record}: {err}")
            continue
        cut = phases(events, launched, exited)
        if cut is not None:
            cuts.append(cut)
    if not cuts:
        return None
    timeline = subprocess.run([*bench.lxcsm.start_cmd[:-1], "timeline", str(record)], env=bench.env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return {"runs": len(cuts),
            "phases": {k: median([c[k] for c in cuts]) for k in cuts[0]},
            "timeline": (timeline.stdout if timeline.returncode == 0
                         else f"lxcsm timeline failed: {timeline.stderr.strip()}")}


# --- the text after the table ---------------------------------------------------------------------

def render_diagnostics(diag: dict) -> str:
    lines = []
    imports = diag.get("imports")
    if imports:
        lines += ["", f"Imports of one `lxcsm start -F -- /bin/true` (-X importtime, which slows them), "
                      f"all top-level imports: {imports['total_us'] / 1000:.1f} ms; "
                      "the 12 with the most cumulative time:",
                  f"  {'cumul. ms':>9} {'self ms':>8}  module"]
        for item in imports["top"]:
            lines.append(f"  {item['cumulative_us'] / 1000:>9.1f} {item['self_us'] / 1000:>8.1f}  "
                         f"{'  ' * item['depth']}{item['module']}")
        lines += ["", "Interpreter startup (median of 7):"]
        for label, seconds in imports["startup"].items():
            lines.append(f"  {fmt_seconds(seconds):>8}  {label}")
    states = diag.get("states")
    if states:
        p = states["phases"]
        lines += ["", f"Where one `lxcsm start -F -- /bin/true` spends its time (median of {states['runs']} "
                      "runs, from the flight record lxcsm-last-start.log):"]
        for key, label in (("before_machine", "launch → monitor's first state (Python, imports, config, preflight)"),
                           ("start_machine", "init_handler → poll (the start machine; RUNNING)"),
                           ("running_and_teardown", "poll → last recorded event (init runs, exits; teardown)"),
                           ("exit", "last recorded event → the command exited"),
                           ("total", "total")):
            lines.append(f"  {fmt_seconds(p[key]):>8}  {label}")
        lines += ["", "lxcsm timeline of the last of those runs:", "", states["timeline"].rstrip()]
    return "\n".join(lines)
