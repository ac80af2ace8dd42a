"""lxcsm stop: stop a running container, like lxc-stop."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys

from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import Cmd, LxcState

SUMMARY = "stop a running container (like lxc-stop)"


def add_options(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("-k", "--kill", action="store_true", help="kill init at once (lxc.signal.stop)")
    parser.add_argument("-t", "--timeout", type=_seconds, default=60, metavar="SECS",
                        help="seconds to wait after lxc.signal.halt before killing (default 60)")


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def run(parser: Parser, args) -> int:
    name = container_name(parser, args)
    path = lxcpath(args)
    if command_client.get_state(path, name) == LxcState.STOPPED:
        print(f"lxcsm: {name} is not running", file=sys.stderr)
        return 2
    if not args.kill and _shutdown(path, name, args.timeout):
        return 0
    return 0 if command_client.stop(path, name) else fail(f"{name}: the monitor refused to stop the container")


def _shutdown(path: str, name: str, timeout: int) -> bool:
    """lxc.signal.halt to init, then wait up to `timeout` seconds for STOPPED."""
    reply = command_client.call(path, name, Cmd.GET_INIT_PIDFD)
    if reply is None:
        return True   # gone meanwhile
    if not reply.fds:
        return False
    pidfd = reply.fds[0]
    try:
        halt = command_client.call(path, name, Cmd.GET_CONFIG_ITEM, b"lxc.signal.halt\0")
        halt_signal = int(halt.data.rstrip(b"\0")) if halt and halt.ret == 0 else signal.SIGPWR
        waiter = command_client.state_waiter(path, name, LxcState.STOPPED)
        if waiter is None:
            return True
        try:
            signal.pidfd_send_signal(pidfd, halt_signal)
        except ProcessLookupError:
            pass
        if not select.select([pidfd], [], [], timeout)[0]:
            waiter.conn.close()
            command_client.monitor_exited(waiter, timeout=0)
            return False
        return command_client.wait_closed(waiter, timeout)
    finally:
        os.close(pidfd)
