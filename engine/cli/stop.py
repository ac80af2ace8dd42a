"""lxcsm stop: stop a running container, like lxc-stop.

Like lxc-stop, the halt signal is the one in the container's config, read
here: whoever answers on the command socket is asked for init's pidfd
(checked to be the container's, command_client.init_pidfd), never for the
signal to send it.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys

from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import LxcState

SUMMARY = "stop a running container (like lxc-stop)"


def add_options(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("-k", "--kill", action="store_true", help="kill init at once (lxc.signal.stop)")
    parser.add_argument("-t", "--timeout", type=_seconds, default=60, metavar="SECS",
                        help="seconds to wait after lxc.signal.halt before killing (default 60)")
    parser.add_argument("-f", "--rcfile", metavar="RCFILE",
                        help="the config the container was started with, if not LXCPATH/NAME/config"
                             " (stop reads lxc.signal.halt from it)")


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def run(parser: Parser, args) -> int:
    name = container_name(parser, args)
    path = lxcpath(args)
    try:
        if command_client.get_state(path, name) == LxcState.STOPPED:
            print(f"lxcsm: {name} is not running", file=sys.stderr)
            return 2
        if not args.kill:
            # Imported here: `stop -k` and a stop of a stopped container need no config (~5 ms of imports).
            from lxcsm.engine.config import loader
            try:
                halt_signal = loader.load(args.rcfile or os.path.join(path, name, "config"), name).signal_halt
            except loader.ConfigError as err:
                return fail(f"{err} (stop reads lxc.signal.halt from it; -f names the start's config,"
                            " -k kills without it)")
            if _shutdown(path, name, halt_signal, args.timeout):
                return 0
        return 0 if command_client.stop(path, name) else fail(f"{name}: the monitor refused to stop the container")
    except command_client.MonitorError as err:
        return fail(str(err))


def _shutdown(path: str, name: str, halt_signal: int, timeout: int) -> bool:
    """halt_signal to init, then wait up to `timeout` seconds for STOPPED."""
    pidfd = command_client.init_pidfd(path, name)
    if pidfd is None:
        return True   # gone meanwhile
    if pidfd < 0:
        return False
    try:
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
