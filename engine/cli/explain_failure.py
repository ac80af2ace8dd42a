"""lxcsm explain-failure: why did the last start of a container end?"""

from __future__ import annotations

import importlib
import json
import os

from lxcsm.engine import log as logmod
from lxcsm.engine.cli.options import DEFAULT_LXCPATH, Parser, fail
from lxcsm.engine.start import postmortem

SUMMARY = "why did the last start of NAME end? (its saved flight record)"


def add_options(parser: Parser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-P", "--lxcpath", default=DEFAULT_LXCPATH)
    parser.add_argument("-f", "--rcfile", help="the config file the start used, if not LXCPATH/NAME/config")


def run(parser: Parser, args) -> int:
    path = postmortem.last_start_path(args.rcfile or os.path.join(args.lxcpath, args.name, "config"))
    try:
        with open(path) as saved:
            events = [json.loads(line) for line in saved if line.strip()]
    except (OSError, ValueError) as err:
        return fail(f"{path}: no record of a start ({getattr(err, 'strerror', err)})")
    for event in events:
        event["level"] = logmod.Level[event["level"]]
    failed = [e for e in events if e["event"] == "start failed"]
    if failed:
        f = failed[-1]
        print(f"{args.name}: the last start failed in the {f['failed_side']} state {f['failed_state']}: {f['error']}")
        state = f["failed_state"]
        module = importlib.import_module(f"lxcsm.states.{f['failed_side']}.{state}")
        print(f"\nWhat {state} does:\n\n{(module.__doc__ or '').strip()}\n")
    else:
        started = [e for e in events if e["event"] == "started"]
        print(f"{args.name}: the last start did not fail" + (" (init ran)" if started else ""))
    shown = postmortem.SHOWN_EVENTS
    print(f"The last {min(len(events), shown)} recorded events, from {path}:")
    for event in events[-shown:]:
        print(f"  {logmod.render_lxc(event)}")
    return 0
