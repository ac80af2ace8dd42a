"""tools/bench's command line: the options, the run (warm-up, the rows asked for, diagnostics),
its cleanup whatever happens, and the output (the table, or JSON).

Needs root; finds lxcsm in the checkout's .venv first, then on PATH.  Ctrl-C,
SIGTERM and SIGHUP stop the measuring, never the cleanup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import REPO, progress
from . import __doc__ as USAGE
from .containers import NAME_PREFIX, Bench
from .diagnostics import measure_imports, measure_phases, render_diagnostics
from .host import mounts_under
from .machine import machine, machine_line
from .report import NOTES, Row, markdown_table
from .rows import ROWS


class Interrupted(Exception):
    """SIGTERM or SIGHUP: clean up like Ctrl-C."""


def _raise_interrupted(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def find_lxcsm() -> tuple[list[str], str] | None:
    """(the lxcsm command, the Python it runs on), the checkout's venv first."""
    venv = REPO / ".venv" / "bin"
    if (venv / "lxcsm").exists():
        return [str(venv / "lxcsm")], str(venv / "python")
    found = shutil.which("lxcsm")
    if found:
        try:
            first = Path(found).read_text(errors="replace").splitlines()[0]
        except (OSError, IndexError):
            first = ""
        return [found], first[2:].strip() if first.startswith("#!") else sys.executable
    return None


def parse_only(text: str | None) -> set[int]:
    """``--only 1,3,5`` -> {1, 3, 5}; None -> every row."""
    if text is None:
        return set(ROWS)
    chosen = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) not in ROWS:
            raise ValueError(f"--only: {part!r} is not one of the rows {', '.join(map(str, ROWS))}")
        chosen.add(int(part))
    if not chosen:
        raise ValueError("--only: no row given")
    return chosen


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tools/bench", description=USAGE.splitlines()[0].split(": ", 1)[1],
                                epilog=USAGE[USAGE.index("Rows of the table"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15, metavar="N", help="runs of rows 1-3 and 6-8 per tool (15)")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="memory samples of row 4 per tool (3)")
    p.add_argument("--parallel", type=int, default=50, metavar="N", help="containers of row 5 (50)")
    p.add_argument("--rounds", type=int, default=2, metavar="N", help="rounds of row 5 per tool (2)")
    p.add_argument("--only", metavar="ROWS", help="comma-separated rows to measure, e.g. 1,3")
    p.add_argument("--baseline", metavar="REV",
                   help="also measure cold lxcsm as of the commit REV (its engine, states and hooks), as a side"
                        " of every row: a before and after in one run")
    p.add_argument("--server", action="store_true",
                   help="also measure lxcsm through a start server (lxcsm serve) the bench runs for itself:"
                        " a third side in every row, next to lxc-start and cold lxcsm")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true",
                     help="print only the table and the machine line (for the README); no diagnostics")
    out.add_argument("--json", action="store_true", help="print everything as JSON")
    args = p.parse_args(argv)
    for option in ("runs", "samples", "parallel", "rounds"):
        if getattr(args, option) < 1:
            p.error(f"--{option} must be at least 1")
    try:
        args.rows = parse_only(args.only)
    except ValueError as err:
        p.error(str(err))
    if args.baseline is not None:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--short",
                                 f"{args.baseline}^{{commit}}"], capture_output=True, text=True)
        if commit.returncode:
            p.error(f"--baseline: {args.baseline!r} is not a commit of {REPO}")
        args.baseline = commit.stdout.strip()
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench: error: needs root (containers: namespaces, cgroups, mounts); run as root", file=sys.stderr)
        return 1
    found = find_lxcsm()
    if found is None:
        print("bench: error: no lxcsm: run tools/setup (it makes .venv/bin/lxcsm)", file=sys.stderr)
        return 1
    lxcsm_cmd, python = found
    lxc_available = shutil.which("lxc-start") is not None and shutil.which("lxc-stop") is not None
    if not lxc_available:
        progress("lxc-start is not installed: lxcsm's numbers alone "
                 "(apt-get install lxc, or tools/setup)")
    info = machine(python, lxc_available)
    if info["loadavg"] > 0.5:
        progress(f"warning: load average {info['loadavg']:.2f}: something else is running, "
                 "the numbers will be noisy")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    tmp = Path(tempfile.mkdtemp(prefix=NAME_PREFIX, dir="/tmp"))
    bench = Bench(args, tmp, lxcsm_cmd, python, lxc_available)
    rows: list[Row] = []
    diag: dict = {}
    interrupted = None
    try:
        if args.baseline:
            bench.extract_baseline()
        if args.server:
            bench.start_server()
        bench.warm_up()
        for number in sorted(args.rows):
            rows += ROWS[number](bench)
        if not args.markdown:
            diag["imports"] = measure_imports(bench, python)
            diag["states"] = measure_phases(bench)
    except (KeyboardInterrupt, Interrupted) as err:
        interrupted = str(err) or "Ctrl-C"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl-C must not stop the cleanup
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        progress("cleaning up: stopping what runs, removing cgroups and " + str(tmp))
        left = bench.cleanup()
        mounted = mounts_under(str(tmp))
        if mounted:
            left += [f"mount {m}" for m in mounted]
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        for item in left:
            print(f"bench: warning: left behind: {item}", file=sys.stderr)
        if not mounted and tmp.exists():
            print(f"bench: warning: could not remove {tmp}", file=sys.stderr)
    if interrupted:
        print(f"bench: interrupted ({interrupted}); cleaned up", file=sys.stderr)
        return 130

    lxc_label = f"lxc-start {info['lxc']}" if info["lxc"] else "lxc-start"
    table = markdown_table(rows, lxc_label, lxc_available, server=args.server, baseline=args.baseline)
    if args.json:
        json.dump({"machine": info, "baseline": args.baseline, "server": args.server,
                   "rows": [r.as_json() for r in rows], "failures": bench.failures,
                   "diagnostics": diag, "left_behind": left}, sys.stdout, indent=2)
        print()
        return 0
    print(table)
    print()
    print(machine_line(info) + " " + NOTES)
    if not lxc_available:
        print()
        print("lxc-start is not installed on this machine: lxcsm's numbers alone, no ratios.")
    if bench.failures:
        print()
        print(f"{len(bench.failures)} failed runs (left out of the medians):")
        for f in bench.failures:
            print(f"  row {f['row']}, {f['tool']}, run {f['run']}: {f['detail']}")
    if not args.markdown:
        print(render_diagnostics(diag))
    return 0
