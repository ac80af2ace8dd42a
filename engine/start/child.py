"""The container child's life, from clone3 to exec: the CHILD machine in the new process.

`run_child` is called by the monitor's spawn state in the process clone3()
just created, inside the container's new namespaces; it never returns - the
process either becomes init (exec) or reports its failure to the monitor over
the sync channel and exits.
"""

from __future__ import annotations

import os
import signal
import socket

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from typing import NoReturn

    from lxcsm.engine.linux.seccomp import Filter

from lxcsm.engine import log as logmod
from lxcsm.engine.errors import describe
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.sync import ChildEnd
from lxcsm.engine.start.context import ChildContext, StartRequest
from lxcsm.engine.start.machine import CHILD
from lxcsm.engine.start.supervisor import Supervisor


def run_child(request: StartRequest, sock: socket.socket, signal_mask: frozenset[int],
              seccomp: Filter | None = None) -> NoReturn:
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
        ctx = ChildContext(request=request, channel=channel, log=log, signal_mask=signal_mask, seccomp=seccomp)

        def on_enter(state: str) -> None:
            kernel.set_comm(f"lxcsm:{state}")   # ps shows where the child is
            if request.breakpoints and request.breakpoints.wants("child", state):
                channel.pause(state)

        Supervisor(CHILD, ctx, log, on_enter=on_enter, lab_skips=request.lab_skips).run()
    except Exception as err:   # a bug outside any state: still tell the monitor what happened
        try:
            import traceback
            channel.send_error("supervisor", f"{describe(err)}\n{traceback.format_exc()}")
        except Exception:
            pass
    finally:
        # Reaching here means exec did not happen: never fall back into the monitor's code.
        os._exit(1)
