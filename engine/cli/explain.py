"""lxcsm explain: what each state of a start does, read from its module."""

from __future__ import annotations

import sys

from lxcsm.engine.analysis import lxc_functions
from lxcsm.engine.analysis.explain import explanation, listing, lookup
from lxcsm.engine.cli.options import Parser
from lxcsm.engine.start.machine import TABLES

SUMMARY = ("what each state of a start does: its docstring, the LXC 5 function it replaces, its system calls, "
           "sync messages and transitions; or, for an LXC function (lxc_spawn, do_start ...), the states "
           "that do its work and the lines it writes in LXC's trace")


def add_options(parser: Parser) -> None:
    parser.add_argument("state", nargs="?", metavar="STATE",
                        help="a state name, SIDE:STATE (monitor:sync_fds) where both machines have one, "
                             "or a function of LXC 5 (lxc_spawn, do_start, lxc_setup, lxc_poll, lxc_end ...)")


def run(parser: Parser, args) -> int:
    if args.state is None:
        print(listing())
        return 0
    found = lookup(args.state)
    if found:
        print("\n\n".join(explanation(table, state) for table, state in found))
        return 0
    function = args.state.removesuffix("()").rpartition(".c:")[2]
    counterpart = lxc_functions.counterpart(function) if function else None
    if counterpart is not None:
        print(lxc_functions.explanation(counterpart))
        return 0
    near = lxc_functions.near(function)
    if near:
        hint = f"did you mean {', '.join(near)}?"
    else:
        hint = "states: " + ", ".join(dict.fromkeys(s for table in TABLES.values() for s in table.states))
    print(f"lxcsm: explain: {args.state!r} is no state and no LXC function lxcsm knows; {hint} "
          f"(lxcsm explain lists the states)", file=sys.stderr)
    return 2
