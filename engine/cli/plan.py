"""lxcsm plan: what a start would do, state by state, without doing it (= lxcsm start --plan)."""

from __future__ import annotations

from lxcsm.engine.cli import start
from lxcsm.engine.cli.options import Parser

SUMMARY = "print what a start would do, state by state, and change nothing"
TAKES_COMMAND = True


def add_options(parser: Parser) -> None:
    start.add_options(parser)


def run(parser: Parser, args) -> int:
    args.plan = True
    return start.run(parser, args)
