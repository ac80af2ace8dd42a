"""lxcsm autostart: start, stop, reboot or list the containers marked for it, like lxc-autostart.

What it picks and in which order is lxc-autostart 5.0.2's (src/lxc/tools/lxc_autostart.c):

* The containers are LXCPATH's entries that hold a ``config`` (hidden ones
  skipped).  One whose config does not load is skipped with its error line,
  and does not count towards the exit status, as LXC skips it ("Failed to load
  config for NAME").
* Picked: ``lxc.start.auto = 1`` (any container with -A) in a group asked for.
  -g takes group names, comma-separated and repeatable; an empty name stands
  for the containers in no ``lxc.group`` at all; no -g asks for that empty
  name alone, so by default only containers in no group are picked (Debian's
  lxc.service asks for ``-g onboot,``).  -a picks regardless of groups.
* Each name asked for is one pass, in the order given: ``-g onboot,`` takes
  the onboot group first, then the containers in no group.  Within a pass the
  order is ``lxc.start.order`` ascending (lower first), ties by name; -s and -k
  go in the exact reverse.
* LXC's matching rule is kept for drop-in use, odd as it is: a container is in
  the group asked for when one of its groups is a prefix of that name (group
  "web" is in ``-g webserver``), and an asked name is dropped as a duplicate
  when an earlier one is a prefix of it (nothing after an empty name counts:
  ``-g ,onboot`` asks for no group only).
* Start (the default): each picked container that is not running, as ``lxcsm
  start -d`` starts it (it returns once the container runs), then
  ``lxc.start.delay`` seconds of waiting.  -s: each running one shut down as
  ``lxcsm stop -t TIMEOUT`` does (the halt signal, killed after TIMEOUT
  seconds, default 60; negative waits forever).  -k: killed as ``lxcsm stop
  -k``.  -r: sent lxc.signal.reboot without waiting (``lxcsm stop -r -t 0``),
  then the delay.  -s wins over -k, and -k over -r.
* -L prints instead of acting, for the containers the action would touch:
  ``NAME DELAY`` for a start or reboot, ``NAME`` for -s and -k.
* Exit 0; 1 when every picked container failed; 2 when some did.  A picked
  container that needed nothing (a start of a running one) counts as picked.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import namedtuple

from lxcsm.engine.cli.options import DEFAULT_LXCPATH, Parser, fail
from lxcsm.engine.cli.stop import timeout_seconds

SUMMARY = "start, stop or list the containers with lxc.start.auto = 1 (like lxc-autostart)"
DEFAULT_TIMEOUT = 60
# lxc.group = a b: several groups on one line, split as LXC splits them.
_GROUP_SEPARATORS = re.compile(r"[ \t]+")
# "no group": what an empty name in -g, and no -g at all, ask for.
NO_GROUP = ""


class Candidate(namedtuple("Candidate", ("name", "auto", "order", "delay", "groups"))):
    """A container as autostart sees it: lxc.start.auto, .order, .delay and its lxc.group names."""

    __slots__ = ()

    @property
    def listed_delay(self) -> int:
        """lxc.start.delay as -L prints it: LXC reads the unsigned value back as an int, so
        anything above 2^31-1 comes out negative (3000000000 prints -1294967296)."""
        return (self.delay + 2**31) % 2**32 - 2**31


def add_options(parser: Parser) -> None:
    parser.error_status = 1   # lxc-autostart's usage errors exit 1 (its 2 is a partial failure)
    parser.add_argument("-k", "--kill", action="store_true",
                        help="kill the running ones at once (lxc.signal.stop, default SIGKILL), in reverse order,"
                             " instead of starting them")
    parser.add_argument("-L", "--list", action="store_true",
                        help="only print the containers the action would touch, with their lxc.start.delay when"
                             " starting or rebooting")
    parser.add_argument("-r", "--reboot", action="store_true",
                        help="send the running ones lxc.signal.reboot (default SIGINT), waiting lxc.start.delay"
                             " after each")
    parser.add_argument("-s", "--shutdown", action="store_true",
                        help="shut the running ones down, in reverse order, killing each one still running after -t"
                             " seconds")
    parser.add_argument("-a", "--all", action="store_true",
                        help="every container with lxc.start.auto = 1, whatever its groups (-g is then ignored)")
    parser.add_argument("-A", "--ignore-auto", action="store_true",
                        help="ignore lxc.start.auto: every container in the groups asked for")
    parser.add_argument("-g", "--groups", action="append", default=[], metavar="GROUPS",
                        help="the lxc.group names to act on, comma-separated, one pass each in this order; an empty"
                             " name is the containers in no group (default: only those; e.g. -g onboot, for the"
                             " onboot group first, then the rest); repeatable")
    parser.add_argument("-t", "--timeout", type=timeout_seconds, default=DEFAULT_TIMEOUT, metavar="T",
                        help=f"with -s: seconds to wait for each container to shut down before killing it"
                             f" (default {DEFAULT_TIMEOUT}; negative waits forever)")
    parser.add_argument("-P", "--lxcpath", default=DEFAULT_LXCPATH, metavar="LXCPATH",
                        help=f"the directory of the containers (default {DEFAULT_LXCPATH})")
    parser.add_argument("-l", "--logpriority", metavar="LEVEL", help="each start's log level (as lxcsm start -l)")
    parser.add_argument("-o", "--logfile", metavar="FILE", help="each start's log file (as lxcsm start -o)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no error messages")


def run(parser: Parser, args) -> int:
    if args.quiet:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    path = args.lxcpath.rstrip("/") or "/"
    if args.logpriority:
        from lxcsm.engine.log import parse_level
        try:
            parse_level(args.logpriority)   # here, once, rather than by every start
        except ValueError as err:
            parser.error(f"-l: {err}")
    if os.geteuid() != 0 and not args.list:
        return fail("lxcsm autostart must run as root, as lxcsm start and stop do (-L lists as anyone)")
    try:
        names = defined_containers(path)
    except OSError as err:
        return fail(f"-P {path}: cannot list the containers: {err.strerror}")
    stopping = args.shutdown or args.kill
    chosen = picked(_candidates(path, names), asked_groups(args.groups), all_groups=args.all,
                    ignore_auto=args.ignore_auto, reverse=stopping)
    return _act(path, chosen, args)


# --- which containers, in which order ----------------------------------------------------

def defined_containers(lxcpath: str) -> list[str]:
    """LXCPATH's entries holding a config, hidden ones skipped, in byte order (LXC's list is
    sorted by name before it is sorted by lxc.start.order)."""
    return sorted((name for name in os.listdir(lxcpath)
                   if not name.startswith(".") and os.path.exists(os.path.join(lxcpath, name, "config"))),
                  key=os.fsencode)


def _candidates(lxcpath: str, names: list[str]) -> list[Candidate]:
    from lxcsm.engine.config import loader, model

    found = []
    for name in names:
        try:
            config = loader.load(os.path.join(lxcpath, name, "config"), name)
        except model.ConfigError as err:
            print(f"lxcsm: {err}; {name} skipped", file=sys.stderr)
            continue
        groups = [group for line in (config.get_item("lxc.group") or "").splitlines()
                  for group in _GROUP_SEPARATORS.split(line) if group]
        found.append(Candidate(name, _integer(config, "lxc.start.auto"), _integer(config, "lxc.start.order"),
                               _integer(config, "lxc.start.delay"), tuple(groups)))
    return found


def _integer(config, key: str) -> int:
    value = config.get_item(key)
    return int(value) if value else 0   # the loader has checked it is one; unset is 0, as in LXC


def asked_groups(values: list[str]) -> list[str]:
    """-g's values as the list of passes: split at commas, empty names kept, a name dropped
    when an earlier one is a prefix of it (LXC's duplicate check); no -g asks for NO_GROUP."""
    asked: list[str] = []
    for value in values or [NO_GROUP]:
        for name in value.split(","):
            if not any(name.startswith(earlier) for earlier in asked):
                asked.append(name)
    return asked


def in_group(asked: str, groups: tuple[str, ...]) -> bool:
    """LXC's test: NO_GROUP holds the containers in no group; a name holds those with a group
    that is a prefix of it."""
    if not groups:
        return asked == NO_GROUP
    return any(asked.startswith(group) for group in groups)


def picked(candidates: list[Candidate], asked: list[str], all_groups: bool = False,
           ignore_auto: bool = False, reverse: bool = False) -> list[Candidate]:
    """The containers to act on, in the order to act: a pass per asked group, each in
    lxc.start.order's order (reversed for stopping); every container at most once."""
    ordered = sorted(candidates, key=lambda c: c.order)   # stable: ties stay in name order
    if reverse:
        ordered.reverse()
    ordered = [c for c in ordered if ignore_auto or c.auto == 1]
    if all_groups:
        return ordered
    chosen: dict[str, Candidate] = {}
    for group in asked:
        chosen.update((c.name, c) for c in ordered if c.name not in chosen and in_group(group, c.groups))
    return list(chosen.values())


# --- acting on them ------------------------------------------------------------------------

def _act(path: str, chosen: list[Candidate], args) -> int:
    from lxcsm.engine.protocol import command_client
    from lxcsm.engine.protocol.command_socket import LxcState

    acting_on_running = args.shutdown or args.kill or args.reboot
    failed = 0
    for container in chosen:
        try:
            running = command_client.get_state(path, container.name) != LxcState.STOPPED
        except command_client.MonitorError as err:
            fail(str(err))
            failed += 1
            continue
        if running != acting_on_running:
            continue   # nothing to do: a start of a running container, a stop of a stopped one
        if args.list:
            shows_delay = not (args.shutdown or args.kill)
            print(f"{container.name} {container.listed_delay}" if shows_delay else container.name, flush=True)
            continue
        if not _do(path, container, args):
            failed += 1
    if failed and failed == len(chosen):
        return 1
    return 2 if failed else 0


def _do(path: str, container: Candidate, args) -> bool:
    """One container's start, shutdown, kill or reboot, the way lxcsm start and stop do it."""
    if args.shutdown:
        # lxcsm stop -t T shuts down and kills after T, as LXC's shutdown-then-stop; 2 is
        # "not running", which a container that stopped meanwhile is.
        return _subcommand("stop", path, container.name, "-t", str(max(args.timeout, -1))) in (0, 2)
    if args.kill:
        return _subcommand("stop", path, container.name, "-k") in (0, 2)
    if args.reboot:
        done = _subcommand("stop", path, container.name, "-r", "-t", "0") == 0
    else:
        logging = [f"--logpriority={args.logpriority}"] * bool(args.logpriority)
        logging += [f"--logfile={args.logfile}"] * bool(args.logfile)
        done = _subcommand("start", path, container.name, "-d", *logging) == 0
    if done:   # a failure has said why already, in lxcsm start's or stop's words
        time.sleep(container.delay)
    return done


def _subcommand(name: str, path: str, container: str, *options: str) -> int:
    """`lxcsm NAME --name=CONTAINER --lxcpath=PATH OPTIONS...`, run in this process: the same
    checks, messages and exit status as typed by hand."""
    from lxcsm.engine.cli import parser_for

    module, parser = parser_for(name)
    args = parser.parse_args([f"--name={container}", f"--lxcpath={path}", *options])
    args.command = []
    return module.run(parser, args)
