"""Runs a machine from its table (engine/start/machine.py): the only code that moves one.

For each state: bind the logger to the state, emit the one `state` trace
event, call the state module's ``enter(ctx)``, and fire the trigger it
returns.  An exception from a state becomes the ``failed`` trigger with a
`Failure` naming the state and side - abort is just another transition, and
the table decides where it leads.  A trigger the table does not allow from
the current state is refused by transitions' Machine, in this one place.

The container child runs its machine through this too, from start/child.py.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable

from transitions import MachineError

from lxcsm.engine import log as logmod
from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.protocol.command_server import AlreadyRunning
from lxcsm.engine.protocol.sync import PeerFailed, SyncError
from lxcsm.engine.start.context import Failure
from lxcsm.engine.start.machine import Table, build, states_named

# transitions logs every callback through stdlib logging; our trace is the record.
logging.getLogger("transitions").setLevel(logging.WARNING)


def failpoints(spec: str) -> frozenset[tuple[str, str]]:
    """LXCSM_FAILPOINTS=STATE[,STATE...]: the states (named as for --break-at) that fail on
    entry, as if their work had failed - to prove every failure path cleans up.  A name that
    means no state is a ValueError: a mistyped failpoint must not pass silently."""
    chosen = set()
    for name in filter(None, (n.strip() for n in spec.split(","))):
        found = states_named(name)
        if not found:
            raise ValueError(f"LXCSM_FAILPOINTS: {name}: no such state")
        chosen.update(found)
    return frozenset(chosen)


def _lab_states(skips: tuple[str, ...]) -> dict:
    if not skips:
        return {}
    from lxcsm.engine.start import lab  # lab mode only: a normal start never imports it
    return lab.concerned(skips)


class Supervisor:
    def __init__(self, table: Table, ctx, log, on_enter: Callable[[str], None] = lambda state: None,
                 lab_skips: tuple[str, ...] = ()) -> None:
        self.table = table
        self.ctx = ctx
        self.log = log
        self.on_enter = on_enter
        self.failpoints = failpoints(os.environ.get("LXCSM_FAILPOINTS", ""))
        # LXCSM_HANGPOINTS=STATE[,STATE...]: states that, once entered, wait forever - for a
        # test to kill the process there, in states no breakpoint can hold (init_handler, stopped).
        self.hangpoints = failpoints(os.environ.get("LXCSM_HANGPOINTS", ""))
        # Lab mode: the states whose step the start leaves out (request.lab_skips, engine/start/lab.py).
        self.lab = _lab_states(lab_skips)
        # Every state's module is imported now: the child cannot import anything
        # once it has pivoted into the container's rootfs.
        self.modules = {state: table.module(state) for state in table.states}
        self.position = build(table)   # the machine's model: the current state, and its triggers
        # The triggers leading out of each state, from the table.
        self.exits = {state: [trigger for trigger, source, _dest in table.transitions
                              if state == source or (isinstance(source, tuple) and state in source)]
                      for state in table.states}

    @property
    def state(self) -> str:
        return self.position.state

    def trigger(self, name: str) -> bool:
        """Fire the trigger `name`: MachineError (or AttributeError, for a name no table has) if
        the table does not allow it from here."""
        return self.position.trigger(name)

    def run(self) -> None:
        while True:
            trigger = self._enter(self.state)
            if trigger is None:
                if self.state in self.table.final:
                    return
                trigger = "(no trigger)"   # a state that is not final must name its way out
            try:
                self.trigger(trigger)
            except (MachineError, AttributeError) as err:
                # A state module returned a trigger its table does not have from here: a bug, but
                # one that must still end in a clean abort.
                self.ctx.failure = Failure(self.state, self.table.side, f"illegal transition: {err}")
                self.trigger("failed")

    def _enter(self, state: str) -> str | None:
        module = self.modules[state]
        self.ctx.log = self.log.bind(category=state)
        self.ctx.log.trace("state", state=state, where=logmod.where(module.enter.__code__))
        try:
            self.on_enter(state)   # may pause at a breakpoint, and abort from there
            while (self.table.side, state) in self.hangpoints:
                logmod.flight_recorder.flush()
                select.select([], [], [])
            if (self.table.side, state) in self.failpoints:
                raise StateError(f"failpoint: {self.table.side} state {state} made to fail (LXCSM_FAILPOINTS)")
            passed = self.lab.get((self.table.side, state))
            if passed is not None:
                skip = passed.skip
                self.ctx.log.warn("lab skipped", skip=skip.name, left_out=skip.part or "the whole state",
                                  entered=passed.entered, lxc=skip.lxc)
                if not passed.entered:
                    if passed.instead is not None:
                        passed.instead()
                    return next(t for t in self.exits[state] if t != "failed")   # its normal way on
            return module.enter(self.ctx)
        except Exception as err:
            failure = self._failure(state, err)
            if not isinstance(err, (OSError, StateError, PeerFailed, AlreadyRunning, SyncError)):
                import traceback  # only bugs get here
                self.ctx.log.debug("traceback", text=traceback.format_exc())
            if "failed" in self.exits[state]:
                self.ctx.failure = failure
                return "failed"
            # A state on the way out (aborting, stopping, stopped) has nowhere to fail to: say
            # so, keep the first failure as the reason the start ended, and carry on out.
            self.ctx.log.error("state failed on the way out", failed_state=state, error=failure.error)
            self.ctx.failure = self.ctx.failure or failure
            return self.exits[state][0] if self.exits[state] else None

    def _failure(self, state: str, err: Exception) -> Failure:
        if isinstance(err, PeerFailed):
            return Failure(err.state, err.side, err.error)
        return Failure(state, self.table.side, describe(err), already_running=isinstance(err, AlreadyRunning))
