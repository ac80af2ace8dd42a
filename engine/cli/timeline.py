"""lxcsm timeline: each state's offset and duration, and the waits at sync barriers, from a TRACE log."""

from __future__ import annotations

import sys

from lxcsm.engine.analysis import log_reader, timeline, timeline_picture
from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.cli.options import Parser, positive

SUMMARY = ("each state of both machines with its offset and duration, and the time spent waiting at each sync "
           "barrier, from an lxcsm log written at TRACE (LXC line format or JSON)")


def add_options(parser: Parser) -> None:
    parser.add_argument("logfile", metavar="LOGFILE")
    parser.add_argument("--start", type=positive, default=1, metavar="N",
                        help="which start of the log (reboots and appended runs make several; default 1)")
    picture = parser.add_mutually_exclusive_group()
    picture.add_argument("--svg", metavar="FILE", help="also draw the start as an SVG waterfall")
    picture.add_argument("--png", metavar="FILE", help="the same as PNG (needs rsvg-convert or ImageMagick)")


def run(parser: Parser, args) -> int:
    try:
        converter = None
        if args.png:
            converter = timeline_picture.find_converter()
            if converter is None:
                raise LogError(timeline_picture.NO_CONVERTER)
        log = log_reader.read_log(args.logfile)
        try:
            start = timeline.analyse(log.events, args.start)
        except LogError as err:
            lxc = any("src/lxc/" in str(e.get("where", "")) for e in log.events)
            raise LogError(f"{args.logfile}: {err}" + ("; it is LXC's own log, which lxcsm trace-diff reads"
                                                       if lxc else "")) from None
        print(timeline.table(start, args.logfile))
        if log.skipped:
            print(f"lxcsm: timeline: {args.logfile}: skipped {len(log.skipped)} lines that are not log lines "
                  f"(first: line {log.skipped[0]})", file=sys.stderr)
        if args.svg or args.png:
            picture_text = timeline_picture.svg(start, args.logfile)
            if args.svg:
                try:
                    with open(args.svg, "w") as out:
                        out.write(picture_text)
                except OSError as err:
                    raise LogError(f"--svg {args.svg}: {err.strerror}") from None
            else:
                timeline_picture.write_png(picture_text, args.png, converter)
    except LogError as err:
        print(f"lxcsm: timeline: {err}", file=sys.stderr)
        return 1
    return 0
