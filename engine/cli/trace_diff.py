"""lxcsm trace-diff: an LXC 5 trace and an lxcsm trace of the same container, phase by phase."""

from __future__ import annotations

import sys

from lxcsm.engine.analysis import trace_diff
from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.cli.options import Parser, positive

SUMMARY = ("line up an LXC 5 trace (lxc-start -l TRACE -o FILE) with an lxcsm trace of the same container, "
           "phase by phase: where the order or the work differs")


def add_options(parser: Parser) -> None:
    parser.add_argument("lxc_trace", metavar="LXC_TRACE")
    parser.add_argument("lxcsm_log", metavar="LXCSM_LOG")
    parser.add_argument("--start", type=positive, default=1, metavar="N",
                        help="which start of the lxcsm log (default 1)")
    parser.add_argument("--lxc-start", type=positive, default=1, metavar="N",
                        help="which start of the LXC trace (default 1)")
    parser.add_argument("--annotate", action="store_true", help="also print LXC's lines with their phases")


def run(parser: Parser, args) -> int:
    try:
        d = trace_diff.diff(args.lxc_trace, args.lxcsm_log, args.start, args.lxc_start)
        print(trace_diff.report(d, args.annotate))
    except LogError as err:
        print(f"lxcsm: trace-diff: {err}", file=sys.stderr)
        return 1
    return 0
