"""What is left to read after a start: the flight record, on screen and on disk.

When a start fails, the user gets - unasked, at any log level - the failed
state and side, the error, and the last events of the start from both
machines, interleaved in time (engine/log.py's flight recorder).  LXC says
"run the container in foreground mode with --logfile and --logpriority"
instead; by then the failure may not happen again.

Every start also leaves its recorded events in ``lxcsm-last-start.log`` (JSON
lines, at most the recorder's 200 events) next to the container's config, so
`lxcsm explain-failure NAME` can show why a daemonised start failed
yesterday, and `lxcsm timeline` can draw it.
"""

from __future__ import annotations

import json
import os
import sys

from lxcsm.engine import cli, log as logmod

LAST_START = "lxcsm-last-start.log"
SHOWN_EVENTS = 50


def last_start_path(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), LAST_START)


def save(config_path: str) -> str | None:
    """Write the flight recorder to the last-start file; its path, or None if it cannot be written."""
    path = last_start_path(config_path)
    events = sorted(logmod.flight_recorder.events, key=lambda e: e["time"])
    try:
        with open(path + ".tmp", "w") as out:
            out.writelines(logmod.render_json(e) + "\n" for e in events)
        os.replace(path + ".tmp", path)
    except OSError:
        return None
    return path


def report(name: str, failure, saved: str | None, with_error_line: bool = True) -> str:
    """The text shown when a start fails: the error, the events that led to it, where they are kept.

    The events shown end with the failure itself; the cleanup that followed is
    summed up in one line (it is in the saved record, event by event).
    """
    events = logmod.recorded()
    failed_at = next((i for i, e in enumerate(events) if e["event"] == "start failed"), len(events) - 1)
    shown = events[max(0, failed_at + 1 - SHOWN_EVENTS): failed_at + 1]
    undone = [e for e in events[failed_at + 1:] if e["event"] in ("undo", "undo failed")]
    lines = [f"lxcsm: {name}: {failure}"] if with_error_line else []
    lines.append(f"lxcsm: the {len(shown)} events that led to it (monitor and child, oldest first):")
    lines += [f"  {logmod.render_lxc(e)}" for e in shown]
    failed_undos = sum(e["event"] == "undo failed" for e in undone)
    lines.append(f"lxcsm: then {len(undone) - failed_undos} changes to the host were undone"
                 + (f", {failed_undos} could not be (see the log)" if failed_undos else ""))
    if saved:
        lines.append(f"lxcsm: this start's events are kept in {saved}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """lxcsm explain-failure NAME [-P LXCPATH]: why did the last start of NAME end?"""
    parser = cli.Parser(prog="lxcsm explain-failure", description=main.__doc__)
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-P", "--lxcpath", default="/var/lib/lxc")
    parser.add_argument("-f", "--rcfile", help="the config file the start used, if not LXCPATH/NAME/config")
    args = parser.parse_args(argv)
    path = last_start_path(args.rcfile or os.path.join(args.lxcpath, args.name, "config"))
    try:
        with open(path) as saved:
            events = [json.loads(line) for line in saved if line.strip()]
    except (OSError, ValueError) as err:
        print(f"lxcsm: {path}: no record of a start ({getattr(err, 'strerror', err)})", file=sys.stderr)
        return 1
    for event in events:
        event["level"] = logmod.Level[event["level"]]
    failed = [e for e in events if e["event"] == "start failed"]
    if failed:
        f = failed[-1]
        print(f"{args.name}: the last start failed in the {f['failed_side']} state {f['failed_state']}: {f['error']}")
        state = f["failed_state"]
        module = __import__(f"lxcsm.states.{f['failed_side']}.{state}", fromlist=["enter"])
        print(f"\nWhat {state} does:\n\n{module.__doc__.strip()}\n")
    else:
        started = [e for e in events if e["event"] == "started"]
        print(f"{args.name}: the last start did not fail" + (" (init ran)" if started else ""))
    print(f"The last {min(len(events), SHOWN_EVENTS)} recorded events, from {path}:")
    for event in events[-SHOWN_EVENTS:]:
        print(f"  {logmod.render_lxc(event)}")
    return 0
