"""Runs a machine from its table (engine/machine.py): the only code that moves one.

For each state: bind the logger to the state, emit the one `state` trace
event, call the state module's ``enter(ctx)``, and fire the trigger it
returns.  An exception from a state becomes the ``failed`` trigger with a
`Failure` naming the state and side - abort is just another transition, and
the table decides where it leads.  A trigger the table does not allow from
the current state is refused by transitions' Machine, in this one place.

`run_child` is the whole life of the container child: it is called in the
new process right after clone3 and never returns.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from collections.abc import Callable

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from typing import NoReturn

from transitions import MachineError

from lxcsm.engine import kernel, log as logmod
from lxcsm.engine.commands import AlreadyRunning
from lxcsm.engine.handler import Child, Failure, StartRequest, StateError
from lxcsm.engine.machine import CHILD, Table, build, states_named
from lxcsm.engine.sync import ChildEnd, PeerFailed, SyncError

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



def describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno:
        text = f"{err.strerror} ({errno.errorcode.get(err.errno, err.errno)})"
        return f"{text}: {err.filename}" if err.filename else text
    return str(err) or type(err).__name__


class Supervisor:
    def __init__(self, table: Table, ctx, log, on_enter: Callable[[str], None] = lambda state: None) -> None:
        self.table = table
        self.ctx = ctx
        self.log = log
        self.on_enter = on_enter
        self.failpoints = failpoints(os.environ.get("LXCSM_FAILPOINTS", ""))
        # Every state's module is imported now: the child cannot import anything
        # once it has pivoted into the container's rootfs.
        self.modules = {state: table.module(state) for state in table.states}
        self.machine = build(table, model=self)
        # The triggers leading out of each state, from the table.
        self.exits = {state: [trigger for trigger, source, _dest in table.transitions
                              if state == source or (isinstance(source, tuple) and state in source)]
                      for state in table.states}

    def run(self) -> None:
        while True:
            trigger = self._enter(self.state)
            if trigger is None and self.state in self.table.final:
                return
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
            if (self.table.side, state) in self.failpoints:
                raise StateError(f"failpoint: {self.table.side} state {state} made to fail (LXCSM_FAILPOINTS)")
            return module.enter(self.ctx)
        except Exception as err:
            failure = self._failure(state, err)
            if not isinstance(err, (OSError, StateError, PeerFailed, AlreadyRunning, SyncError)):
                import traceback   # only bugs get here
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


def run_child(request: StartRequest, sock: socket.socket, signal_mask: frozenset[int]) -> NoReturn:
    """The container child, from clone3 to exec (or to its error report)."""
    try:
        # If the monitor dies, so does the container: nobody would clean up after it.
        kernel.set_pdeathsig(signal.SIGKILL)
        # The fork inherited the monitor's command line (its ps title): say what this is instead.
        kernel.set_cmdline(f"[lxcsm child] {request.lxcpath} {request.name}")
        channel = ChildEnd(sock, None, request.sync_timeout)
        # The child renders nothing: every event it emits goes to the monitor.
        logmod.record_to(lambda event: channel.send_log(logmod.portable(event)))
        logmod.set_threshold(logmod.NOTHING)
        log = logmod.logger(None, name=request.name, side="child")
        channel.log = log.bind(category="sync")
        ctx = Child(request=request, channel=channel, log=log, signal_mask=signal_mask)

        def on_enter(state: str) -> None:
            kernel.set_comm(f"lxcsm:{state}")   # ps shows where the child is
            if request.breakpoints and request.breakpoints.wants("child", state):
                channel.pause(state)

        Supervisor(CHILD, ctx, log, on_enter=on_enter).run()
    except Exception as err:   # a bug outside any state: still tell the monitor what happened
        try:
            import traceback
            channel.send_error("supervisor", f"{describe(err)}\n{traceback.format_exc()}")
        except Exception:
            pass
    finally:
        # Reaching here means exec did not happen: never fall back into the monitor's code.
        os._exit(1)
