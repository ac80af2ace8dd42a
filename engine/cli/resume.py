"""lxcsm continue: resume (or abort) a start paused by --break-at or --step, and say where it went.

After resuming, `continue` waits until the start pauses again (and prints
that pause as the start itself printed it: where, the next state's plan,
what changed), reaches RUNNING, or ends (the monitor exits: it failed, or
init exited already).  The wait is the client's, not the monitor's: CONTINUE
is answered at once with the number of pauses so far, and `continue` then
asks START_STATUS until that number grows or the state is RUNNING.  So the
monitor never holds a reply hostage to the start's progress, each request is
answered from whatever wait the monitor is in, and a monitor that dies ends
the wait (nobody listens any more).  What may take long is only the start
itself - a slow hook, which the wait names once it has run
LXCSM_HOOK_WARN_AFTER seconds; Ctrl-C leaves the start alone.
"""

from __future__ import annotations

import errno
import socket
import sys
import time

from lxcsm import hooks
from lxcsm.engine.cli.info import start_status
from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import Cmd

SUMMARY = "resume a start paused by --break-at or --step, and print where it pauses next"
POLL_INTERVAL = 0.05   # seconds between START_STATUS requests while the start goes on
REQUEST_TIMEOUT = 2.0  # seconds one request may take


def add_options(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("--abort", action="store_true", help="abort the paused start instead (cleans up)")
    parser.add_argument("--no-wait", action="store_true", help="return once resumed, without waiting for "
                                                              "the next pause or RUNNING")


def run(parser: Parser, args) -> int:
    name = container_name(parser, args)
    path = lxcpath(args)
    try:
        if args.abort:
            return 0 if command_client.stop(path, name) else fail(f"{name}: the monitor refused to abort")
        reply = command_client.call(path, name, Cmd.CONTINUE)
        if reply is None:
            return fail(f"{name} is not running")
        if reply.ret == -errno.EPERM:
            return fail(str(command_client.Refused(name, *reply.peer)))
        if reply.ret != 0:
            return fail(f"{name} is not paused")
        return 0 if args.no_wait else _next_stop(path, name, reply.value)
    except command_client.MonitorError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return 130   # the start goes on: only this wait ended


def _next_stop(path: str, name: str, pauses: int) -> int:
    """Wait for the pause after the `pauses`-th, RUNNING or the monitor's end; print which."""
    warn_after, named_hook = hooks.warn_after(), None
    # A monitor that stops answering (stuck writing its log to a full pipe, say) costs
    # one request this long, then the next one is tried: no request waits forever.
    socket.setdefaulttimeout(REQUEST_TIMEOUT)
    while True:
        try:
            status = start_status(path, name)
        except TimeoutError:
            continue
        if status is None:   # resumed all the same: what became of the start is the record's
            print(f"{name}: the monitor has exited: the start failed, or init ended already "
                  f"(lxcsm explain-failure {name} -P {path})", file=sys.stderr)
            return 0
        if status["pauses"] > pauses and status["paused"]:
            print(status["pause_text"], file=sys.stderr)
            return 0
        if status["state"] in ("RUNNING", "FROZEN"):
            print(f"{name}: RUNNING (the start took {status['start_for']:.3f} s)", file=sys.stderr)
            return 0
        hook = status["hook"]
        if hook is not None and warn_after and hook["for"] >= warn_after and named_hook != hook["pid"]:
            named_hook = hook["pid"]
            print(f"{name}: waiting for the {hook['kind']} hook ({hook['side']} state {hook['state']}, "
                  f"pid {hook['pid']}, running for {hook['for']:.0f} s): {hook['command']}", file=sys.stderr)
        time.sleep(POLL_INTERVAL)
