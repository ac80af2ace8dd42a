"""lxcsm explain: what each state of a start does, read from its module."""

from __future__ import annotations

import sys

from lxcsm.engine.analysis.explain import explanation, listing, lookup
from lxcsm.engine.cli.options import Parser
from lxcsm.engine.start.machine import TABLES

SUMMARY = ("what each state of a start does: its docstring, the LXC 5 function it replaces, its system calls, "
           "sync messages and transitions")


def add_options(parser: Parser) -> None:
    parser.add_argument("state", nargs="?", metavar="STATE",
                        help="a state name, or SIDE:STATE (monitor:sync_fds) where both machines have one")


def run(parser: Parser, args) -> int:
    if args.state is None:
        print(listing())
        return 0
    found = lookup(args.state)
    if not found:
        names = ", ".join(dict.fromkeys(s for table in TABLES.values() for s in table.states))
        print(f"lxcsm: explain: unknown state {args.state!r}; states: {names} "
              f"(SIDE:STATE picks one side)", file=sys.stderr)
        return 2
    print("\n\n".join(explanation(table, state) for table, state in found))
    return 0
