"""lxcsm unfreeze: let a frozen container run again, like lxc-unfreeze.

The way back from `lxcsm freeze` (freeze.py): nothing to do unless the
container is FROZEN; otherwise its monitor and lxc-monitor are told THAWED,
the cgroup is thawed (freezer.state = THAWED, or cgroup.freeze = 0), and
once the kernel says so, RUNNING (FROZEN if it failed).  Exit 0 done, 1
failed or not running.
"""

from __future__ import annotations

from lxcsm.engine.cli import freeze
from lxcsm.engine.cli.options import Parser

SUMMARY = "let a frozen container run again (like lxc-unfreeze)"


def add_options(parser: Parser) -> None:
    freeze.add_options(parser)


def run(parser: Parser, args) -> int:
    return freeze.change(parser, args, freeze=False)
