"""lxcsm timeline: each state's offset and duration, and the waits at sync barriers, from a TRACE log."""

from __future__ import annotations

import json
import sys

from lxcsm.engine.analysis import log_reader, timeline, timeline_picture
from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.cli.options import Parser, positive

SUMMARY = ("each state of both machines with its offset and duration, and the time spent waiting at each sync "
           "barrier, from an lxcsm log written at TRACE (LXC line format or JSON); medians over several starts")


def add_options(parser: Parser) -> None:
    parser.add_argument("logfile", metavar="LOGFILE", nargs="+",
                        help="an lxcsm log at TRACE; several logs (or --runs) give medians over their starts")
    parser.add_argument("--start", type=positive, metavar="N",
                        help="which start of the log (reboots and appended runs make several; default 1)")
    parser.add_argument("--runs", type=positive, metavar="N",
                        help="medians of the last N starts that reached RUNNING, in the logs given")
    picture = parser.add_mutually_exclusive_group()
    picture.add_argument("--svg", metavar="FILE", help="also draw the start as an SVG waterfall")
    picture.add_argument("--png", metavar="FILE", help="the same as PNG (needs rsvg-convert or ImageMagick)")
    parser.add_argument("--chrome-trace", metavar="FILE",
                        help="also write the start as Chrome trace-event JSON (open it in ui.perfetto.dev)")


def _medians(args) -> None:
    found = []
    for path in args.logfile:
        log = log_reader.read_log(path)
        starts = timeline.split_starts(log.events)
        if not starts:
            raise LogError(f"{path}: no start in the log (lxcsm start -l TRACE writes them)")
        found += [(path, timeline.analyse(log.events, i)) for i in range(1, len(starts) + 1)]
    print(timeline.median_table(timeline.medians(found, args.runs)))


def run(parser: Parser, args) -> int:
    several = args.runs is not None or len(args.logfile) > 1
    if several and (args.start or args.svg or args.png or args.chrome_trace):
        parser.error("--start, --svg, --png and --chrome-trace are for one start of one log, "
                     "not with --runs or several logs")
    if several:
        try:
            _medians(args)
        except LogError as err:
            print(f"lxcsm: timeline: {err}", file=sys.stderr)
            return 1
        return 0
    args.logfile = args.logfile[0]
    try:
        converter = None
        if args.png:
            converter = timeline_picture.find_converter()
            if converter is None:
                raise LogError(timeline_picture.NO_CONVERTER)
        log = log_reader.read_log(args.logfile)
        try:
            start = timeline.analyse(log.events, args.start or 1)
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
        if args.chrome_trace:
            from lxcsm.engine.analysis import chrome_trace
            try:
                with open(args.chrome_trace, "w") as out:
                    json.dump(chrome_trace.trace_events(start, args.logfile), out, default=str)
            except OSError as err:
                raise LogError(f"--chrome-trace {args.chrome_trace}: {err.strerror}") from None
    except LogError as err:
        print(f"lxcsm: timeline: {err}", file=sys.stderr)
        return 1
    return 0
