"""lxcsm graph: diagrams of the two machines, drawn from the tables the engine runs."""

from __future__ import annotations

import subprocess
import sys

from lxcsm.engine.analysis import graph
from lxcsm.engine.cli.options import Parser
from lxcsm.engine.start.machine import TABLES

SUMMARY = "draw the monitor and child state machines from engine/start/machine.py"


def add_options(parser: Parser) -> None:
    parser.add_argument("--machine", choices=("monitor", "child", "both"),
                        help="which machine to draw (default: both)")
    parser.add_argument("--format", choices=graph.TEXT_FORMATS + graph.PICTURE_FORMATS, default="mermaid",
                        help="mermaid and dot are text; svg and png need graphviz's dot (default: mermaid)")
    parser.add_argument("--sequence", action="store_true",
                        help="the monitor/child sequence diagram of the sync messages (mermaid)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout, text only)")


def run(parser: Parser, args) -> int:
    if args.format in graph.PICTURE_FORMATS and not args.output:
        parser.error(f"--format {args.format} is a picture: give -o FILE")
    if args.sequence and (args.format != "mermaid" or args.machine):
        parser.error("--sequence draws both machines, in mermaid only")

    tables = [TABLES[side] for side in TABLES if args.machine in (None, "both", side)]
    try:
        if args.sequence:
            text = graph.mermaid_sequence(TABLES["monitor"], TABLES["child"])
        else:
            text = (graph.mermaid if args.format == "mermaid" else graph.dot)(tables)
        if args.format in graph.PICTURE_FORMATS:
            graph.render(text, args.format, args.output)
        elif args.output:
            with open(args.output, "w") as out:
                out.write(text)
        else:
            sys.stdout.write(text)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
        message = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.strerror else str(err)
        print(f"lxcsm: graph: {message}", file=sys.stderr)
        return 1
    return 0
