"""lxcsm cleanup: undo what a killed monitor left on the host, from its journal.

It is needed most after the worst ends - a full disk, a crash mid-write - so a
journal line it cannot read is reported by number and skipped, and everything
the other lines list is still undone.  The journal is then kept (with a
non-zero exit): what the unreadable lines recorded is for a person to check.
"""

from __future__ import annotations

import os
import sys

from lxcsm.engine.cli.options import Parser, add_name, container_name, lxcpath
from lxcsm.engine.errors import describe
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import LxcState
from lxcsm.engine.start import undo

SUMMARY = "undo what a crashed monitor left on the host (cgroups, veths, pid file)"


def add_options(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("-f", "--rcfile", help="the config file the start used, if not LXCPATH/NAME/config")


def run(parser: Parser, args) -> int:
    name = container_name(parser, args)
    path = lxcpath(args)
    try:
        running = command_client.get_state(path, name) != LxcState.STOPPED
    except command_client.MonitorError as err:   # a squatter on the name, or a monitor refusing us
        print(f"lxcsm: {err}", file=sys.stderr)
        return 1
    if running:
        print(f"lxcsm: {name} is running: stop it (lxcsm stop) instead of cleaning up", file=sys.stderr)
        return 1
    journal = undo.journal_path(args.rcfile or os.path.join(path, name, "config"))
    if not os.path.exists(journal):
        print(f"{name}: nothing to clean up (no {journal})")
        return 0
    try:
        changes, unreadable = undo.pending(journal)
    except OSError as err:
        print(f"lxcsm: {name}: {describe(err)}", file=sys.stderr)
        return 1
    for problem in unreadable:
        print(f"lxcsm: {name}: {journal}: {problem}; skipped", file=sys.stderr)
    failures = 0
    for change in reversed(changes):
        try:
            undo.UNDO_AFTER_CRASH[change.kind](change)
            print(f"{name}: undid {change.kind} {change.target}")
        except Exception as err:
            failures += 1
            print(f"lxcsm: {name}: could not undo {change.kind} {change.target}: {err}", file=sys.stderr)
    if failures:
        return 1
    if unreadable:
        print(f"lxcsm: {name}: undid what {journal} lists; kept it for the {len(unreadable)} line(s) it could"
              " not read: check the host for what they recorded, then remove it", file=sys.stderr)
        return 1
    os.unlink(journal)
    return 0
