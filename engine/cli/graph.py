"""lxcsm graph: diagrams of the two machines, drawn from the tables the engine runs."""

from __future__ import annotations

import subprocess
import sys

from lxcsm.engine.analysis import graph, timeline_picture
from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.cli.options import Parser
from lxcsm.engine.start.machine import TABLES

SUMMARY = "draw the monitor and child state machines from engine/start/machine.py"


def add_options(parser: Parser) -> None:
    parser.add_argument("--machine", choices=("monitor", "child", "both"),
                        help="which machine to draw (default: both)")
    parser.add_argument("--format", choices=graph.TEXT_FORMATS + graph.PICTURE_FORMATS, default="mermaid",
                        help="mermaid and dot are text; svg and png need graphviz's dot (default: mermaid)")
    parser.add_argument("--sequence", action="store_true",
                        help="the monitor/child sequence diagram of the sync messages (mermaid, or drawn as svg/png)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout, text only)")


def run(parser: Parser, args) -> int:
    if args.format in graph.PICTURE_FORMATS and not args.output:
        parser.error(f"--format {args.format} is a picture: give -o FILE")
    if args.sequence and (args.format == "dot" or args.machine):
        parser.error("--sequence draws both machines, as mermaid, svg or png")

    tables = [TABLES[side] for side in TABLES if args.machine in (None, "both", side)]
    try:
        if args.sequence and args.format in graph.PICTURE_FORMATS:
            # Drawn here, not by graphviz; a PNG through the SVG renderer `timeline --png` uses.
            picture = graph.svg_sequence(TABLES["monitor"], TABLES["child"])
            if args.format == "svg":
                with open(args.output, "w") as out:
                    out.write(picture)
            else:
                converter = timeline_picture.find_converter()
                if converter is None:
                    raise RuntimeError(timeline_picture.NO_CONVERTER)
                timeline_picture.write_png(picture, args.output, converter)
            return 0
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
    except (OSError, RuntimeError, ValueError, LogError, subprocess.TimeoutExpired) as err:
        message = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.strerror else str(err)
        print(f"lxcsm: graph: {message}", file=sys.stderr)
        return 1
    return 0
