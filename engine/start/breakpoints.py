"""Break and step: stop a start right before a state, look around, go on.

`lxcsm start --break-at STATE` (either machine's states; ``monitor:NAME`` or
``child:NAME`` when both have one, and a prefix such as ``setup`` for the
first of the ``setup_*`` states) and ``--step`` (before every state) pause
the start and print where it stands: the monitor's and the child's pids, the
namespaces the child has so far, the cgroups made so far, and the commands to
look inside with; then the plan of the state it pauses before (the state
module's plan(request), as `lxcsm plan` shows it) and what changed since the
previous pause (the first one: since the monitor's own view): the child's
mounts (its /proc/PID/mountinfo), the cgroups made, the network links of its
namespace (/proc/PID/net/dev) and its namespaces.  All of it read-only.
`lxcsm continue NAME` (or Enter, in the foreground) resumes and prints where
the start pauses next; `lxcsm continue --abort NAME`, Ctrl-C or SIGTERM
aborts, and the aborting state cleans up as after any failure.

A monitor state pauses in the monitor itself.  A child state pauses in the
child, which tells the monitor over the sync channel (PAUSED) and waits for
RESUME; the monitor runs the same pause there, from inside whatever sync wait
it was in.  Either way the monitor serves the command socket while paused,
which is how `lxcsm continue` reaches it.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from collections import namedtuple

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import kernel
from lxcsm.engine.start.machine import TABLES, states_named

_ABORTING_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
# Where no pause is possible: before init_handler the command socket `lxcsm continue`
# talks to does not exist yet; aborting and stopped are the way out of a start.
UNPAUSABLE = {("monitor", "init_handler"), ("monitor", "aborting"), ("monitor", "stopped"), ("child", "aborting")}


class Breakpoints(namedtuple("Breakpoints", (
        "states",  # frozenset[tuple[str, str]]: (side, state) pairs
        "step",    # bool
    ), defaults=(frozenset(), False))):
    __slots__ = ()

    def wants(self, side: str, state: str) -> bool:
        return (self.step and (side, state) not in UNPAUSABLE) or (side, state) in self.states

    def __bool__(self) -> bool:
        return self.step or bool(self.states)


def parse(names: list[str], step: bool) -> Breakpoints:
    """`--break-at` names to (side, state) pairs; ValueError names the valid ones."""
    chosen = set()
    for name in names:
        found = [f for f in states_named(name) if f not in UNPAUSABLE]
        if not found:
            valid = ", ".join(f"{s}:{st}" for s, t in TABLES.items() for st in t.states if (s, st) not in UNPAUSABLE)
            raise ValueError(f"--break-at {name}: no such state to pause at (states: {valid})")
        chosen.update(found)
    return Breakpoints(frozenset(chosen), step)


def _namespaces(pid: int) -> list[str]:
    """The namespaces `pid` does not share with the monitor."""
    own = []
    for ns in sorted(kernel.NAMESPACE_FLAGS):
        try:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                own.append(ns)
        except OSError:
            pass
    return own


class View(namedtuple("View", ("mounts", "cgroups", "links", "namespaces"))):
    """What a pause sees of the start, to say what changed by the next one."""
    mounts: frozenset[str]       # "MOUNT POINT (FSTYPE SOURCE)", one a mount
    cgroups: frozenset[str]      # directories made
    links: frozenset[str]        # network interfaces
    namespaces: frozenset[str]   # not shared with the monitor

    __slots__ = ()


SHOWN_CHANGES = 12   # of each kind; the rest is counted


def _mounts(pid: int | str) -> frozenset[str]:
    try:
        with open(f"/proc/{pid}/mountinfo") as mountinfo:
            lines = mountinfo.read().splitlines()
    except OSError:
        return frozenset()
    mounts = set()
    for line in lines:
        fields = line.split()
        dash = fields.index("-") if "-" in fields else len(fields) - 3
        if dash + 2 < len(fields):
            mounts.add(f"{fields[4]} ({fields[dash + 1]} {fields[dash + 2]})")
    return frozenset(mounts)


def _links(pid: int | str) -> frozenset[str]:
    """The interfaces of pid's network namespace: /proc/PID/net is that namespace's view."""
    try:
        with open(f"/proc/{pid}/net/dev") as dev:
            return frozenset(line.split(":")[0].strip() for line in dev.read().splitlines()[2:] if ":" in line)
    except OSError:
        return frozenset()


def view(ctx) -> View:
    """The start as it stands: the child's, or before there is one the monitor's, view."""
    pid = ctx.boot.init_pid or "self"
    return View(_mounts(pid), frozenset(c.target for c in ctx.boot.undo.changes if c.kind == "cgroup"),
                _links(pid), frozenset(_namespaces(ctx.boot.init_pid)) if ctx.boot.init_pid else frozenset())


def changes(before: View, after: View) -> list[str]:
    """Lines saying what `after` has that `before` had not, and the other way round."""
    lines = []
    for field, what in (("namespaces", "namespaces"), ("cgroups", "cgroups"), ("links", "network links"),
                        ("mounts", "mounts")):
        added = sorted(getattr(after, field) - getattr(before, field))
        gone = sorted(getattr(before, field) - getattr(after, field))
        for sign, items in (("+", added), ("-", gone)):
            if items:
                lines.append(f"    {what} {sign}{len(items)}:")
                lines += [f"      {sign} {item}" for item in items[:SHOWN_CHANGES]]
                if len(items) > SHOWN_CHANGES:
                    lines.append(f"      ... and {len(items) - SHOWN_CHANGES} more")
    return lines or ["    nothing"]


def _plan(ctx, side: str, state: str) -> list[str]:
    try:
        steps = TABLES[side].module(state).plan(ctx.request)
    except Exception as err:   # a plan is teaching text: its failure must not fail the start
        steps = [f"(no plan: {err})"]
    if ctx.request.lab_skips:
        from lxcsm.engine.start import lab
        steps = lab.plan(ctx.request.lab_skips, side, state, steps)
    return [f"    - {step}" for step in steps]


def describe(ctx, side: str, state: str, previous: View | None = None, now: View | None = None) -> str:
    request, boot = ctx.request, ctx.boot
    lines = [f"lxcsm: {request.name}: paused before the {side} state {state}",
             f"  monitor pid {os.getpid()}"]
    made: dict[str, int] = {}   # cgroup name -> in how many hierarchies
    for change in boot.undo.changes:
        if change.kind == "cgroup":
            made[os.path.basename(change.target)] = made.get(os.path.basename(change.target), 0) + 1
    if boot.init_pid:
        pid = boot.init_pid
        lines.append(f"  child pid {pid}, with its own namespaces: {' '.join(_namespaces(pid)) or 'none'}")
        lines.append(f"  look inside: nsenter -t {pid} -m -u -i -n -p sh   |   cat /proc/{pid}/mountinfo")
    else:
        lines.append("  no child yet")
    lines.append("  cgroups made so far: " + (", ".join(f"{name} (in {count} hierarchies)"
                                                      for name, count in made.items()) or "none"))
    lines.append(f"  go on: lxcsm continue {request.name} -P {request.lxcpath}"
                 + ("   (or press Enter)" if _stdin_is_terminal(request) else ""))
    lines.append(f"  abort: lxcsm continue --abort {request.name} -P {request.lxcpath}   (or Ctrl-C)")
    lines.append(f"  {side}:{state} will:")
    lines += _plan(ctx, side, state)
    if now is not None:
        lines.append("  changed since the " + ("previous pause:" if previous is not None else "monitor's own view:"))
        baseline = previous if previous is not None else View(_mounts("self"), frozenset(), _links("self"),
                                                                frozenset())
        lines += changes(baseline, now)
    return "\n".join(lines)


def _stdin_is_terminal(request) -> bool:
    return request.foreground and sys.stdin is not None and sys.stdin.isatty()


# What the previous pause of this monitor saw (one start at a time per monitor process);
# a new boot (a reboot) starts from the monitor's own view again.
_previous: tuple[int, View] | None = None


def pause(ctx, side: str, state: str) -> None:
    """Block until the user continues; raise StateError if they abort instead."""
    global _previous
    now = view(ctx)
    previous = _previous[1] if _previous is not None and _previous[0] == ctx.boot.number else None
    _previous = (ctx.boot.number, now)
    text = describe(ctx, side, state, previous, now)
    server = ctx.command_server
    server.start_status.pause_text = text   # what `lxcsm continue` prints of the next pause
    ctx.log.notice("paused", before=f"{side}:{state}")
    ctx.on_paused(text)
    server.pausing, server.pause_decision = True, None
    # Until init runs, the child dying is a failed start; after that, init exiting is poll's news.
    child = ctx.boot.init_pidfd if ctx.boot.channel is not None else -1
    watched = [server.fileno(), ctx.signal_fd] + ([child] if child >= 0 else []) \
        + ([sys.stdin.fileno()] if _stdin_is_terminal(ctx.request) else [])
    try:
        while server.pause_decision is None:
            ready = select.select(watched, [], [], server.timeout())[0]
            if not ready:   # a command connection's deadline: serve_ready closes it
                server.serve_ready()
            for fd in ready:
                if fd == server.fileno():
                    server.serve_ready()
                elif fd == ctx.signal_fd:
                    signo, _sender = kernel.read_signalfd(fd)
                    if signo in _ABORTING_SIGNALS:
                        server.pause_decision = "abort"
                elif fd == child:
                    raise StateError(f"the child died while paused before the {side} state {state}")
                else:
                    sys.stdin.readline()
                    server.pause_decision = "continue"
    finally:
        decision, server.pausing, server.pause_decision = server.pause_decision, False, None
    if decision == "abort":
        raise StateError(f"aborted by the user while paused before the {side} state {state}")
    ctx.log.notice("resumed", before=f"{side}:{state}")
