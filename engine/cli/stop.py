"""lxcsm stop: stop or reboot a running container, like lxc-stop (same flags, same exit codes).

What each flag means is lxc-stop 5.0.2's (src/lxc/tools/lxc_stop.c and
do_lxcapi_shutdown/reboot2 in lxccontainer.c):

* a shutdown sends init the halt signal and waits up to -t seconds (default
  60, -1 forever) for the container to stop, then kills it with
  lxc.signal.stop unless --nokill (then: exit 1, still running);
* the halt signal is lxc.signal.halt if the config sets it; otherwise
  SIGRTMIN+3 if init blocks that signal (systemd does, and reads it as
  "halt", while it ignores SIGPWR), otherwise SIGPWR;
* -t 0 or -W sends the signal and returns at once, exit 0;
* -r sends lxc.signal.reboot (default SIGINT) and waits up to -t seconds for
  the container to be running again, never killing it;
* -k sends lxc.signal.stop at once, and allows no timeout;
* exit 0 done, 1 failed or bad arguments, 2 not running.

The signals come from the container's config, read here: whoever answers on
the command socket is asked for init's pidfd (checked to be the container's,
command_client.init_pidfd), never for the signal to send it.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys

from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import LxcState

SUMMARY = "stop or reboot a running container (like lxc-stop)"
# lxc-stop's exit status for "the container exists but is not running" (its man page).
NOT_RUNNING = 2
DEFAULT_TIMEOUT = 60
FOREVER = -1
# What systemd takes as "halt" (and blocks, to read it from a signalfd).
SYSTEMD_HALT = signal.SIGRTMIN + 3

# strtol(text, base 0) with nothing after the number: how lxc-stop reads -t (leading blanks,
# a sign, 0x for hex and a leading 0 for octal).
_STRTOL = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def add_options(parser: Parser) -> None:
    # lxc-stop's usage errors exit 1: its 2 means "not running", which scripts test for.
    parser.error_status = 1
    add_name(parser)
    parser.add_argument("-r", "--reboot", action="store_true",
                        help="reboot: send lxc.signal.reboot (default SIGINT) and wait until the container runs"
                             " again")
    parser.add_argument("-W", "--nowait", action="store_true",
                        help="send the signal and return at once (-t 0)")
    parser.add_argument("-t", "--timeout", type=timeout_seconds, metavar="T",
                        help=f"seconds to wait for the shutdown or reboot before giving up: then a shutdown kills"
                             f" the container; -1 waits forever, 0 not at all (default {DEFAULT_TIMEOUT};"
                             " with -k, 0)")
    parser.add_argument("-k", "--kill", action="store_true",
                        help="kill the container at once with lxc.signal.stop (default SIGKILL), no shutdown")
    parser.add_argument("--nokill", action="store_true",
                        help="only ask for a clean shutdown: after the timeout, exit 1 instead of killing")
    parser.add_argument("--nolock", action="store_true",
                        help="lxc-stop's 'no API locks', allowed with -k only; lxcsm takes no locks anyway")
    parser.add_argument("-f", "--rcfile", metavar="RCFILE",
                        help="the config the container was started with, if not LXCPATH/NAME/config"
                             " (stop reads lxc.signal.halt and lxc.signal.reboot from it)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no error messages")


def timeout_seconds(text: str) -> int:
    """-t's value as lxc-stop reads it (strtol, base 0, nothing after the number)."""
    match = _STRTOL.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    sign, digits = match.groups()
    value = int(digits, 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10)
    return -value if sign == "-" else value


def effective_timeout(args: argparse.Namespace) -> int:
    """-t after lxc-stop's defaults and checks; argparse-style usage errors as ValueError."""
    timeout = args.timeout if args.timeout is not None else 0 if args.kill else DEFAULT_TIMEOUT
    if args.nowait:
        timeout = 0
    if not args.kill and timeout < FOREVER:
        raise ValueError(f"invalid timeout {timeout} (seconds; -1 waits forever)")
    if args.kill and args.nokill:
        raise ValueError("-k can't be used with --nokill")
    if args.kill and args.reboot:
        raise ValueError("-k can't be used with -r")
    if args.kill and timeout:
        raise ValueError("-k doesn't allow timeouts")
    if args.nolock and not args.kill:
        raise ValueError("--nolock may only be used with -k")
    return timeout


def run(parser: Parser, args) -> int:
    if args.quiet:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    name = container_name(parser, args)
    try:
        timeout = effective_timeout(args)
    except ValueError as err:
        parser.error(str(err))
    path = lxcpath(args)
    try:
        if command_client.get_state(path, name) == LxcState.STOPPED:
            print(f"lxcsm: {name} is not running", file=sys.stderr)
            return NOT_RUNNING
        if args.kill:
            return _kill(path, name)
        # Imported here: `stop -k` and a stop of a stopped container need no config (~5 ms of imports).
        from lxcsm.engine.config import loader, model
        try:
            config = loader.load(args.rcfile or os.path.join(path, name, "config"), name)
        except model.ConfigError as err:
            return fail(f"{err} (stop reads lxc.signal.halt and lxc.signal.reboot from it; -f names the start's"
                        " config, -k kills without it)")
        if args.reboot:
            return _reboot(path, name, config.signal_reboot, timeout)
        explicit_halt = config.signal_halt if config.get_item("lxc.signal.halt") is not None else None
        if _shutdown(path, name, explicit_halt, timeout) or timeout == 0:
            return 0
        if args.nokill:
            return fail(f"{name} did not stop within {timeout} s; not killed (--nokill)")
        return _kill(path, name)
    except command_client.MonitorError as err:
        return fail(str(err))


def _kill(path: str, name: str) -> int:
    return 0 if command_client.stop(path, name) else fail(f"{name}: the monitor refused to stop the container")


def _wait_for(timeout: int) -> float | None:
    """select()'s timeout for lxc-stop's seconds: None waits forever (and so, in effect, does
    anything beyond select's range)."""
    return None if timeout == FOREVER or timeout > _LONGEST_WAIT else timeout


_LONGEST_WAIT = 1 << 30   # seconds: 34 years


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"   # SIGRTMIN+n has no name of its own in Python


def halt_signal(explicit: int | None, init_status: str) -> int:
    """The signal a shutdown sends: lxc.signal.halt when the config sets it, else SIGRTMIN+3
    if init blocks it (init_status: its /proc/PID/status), else SIGPWR."""
    if explicit is not None:
        return explicit
    return SYSTEMD_HALT if blocks(init_status, SYSTEMD_HALT) else signal.SIGPWR


def blocks(proc_status: str, signum: int) -> bool:
    """Is `signum` in the SigBlk mask of a /proc/PID/status text?"""
    for line in proc_status.splitlines():
        if line.startswith("SigBlk:"):
            try:
                return bool(int(line.split(":", 1)[1], 16) >> (signum - 1) & 1)
            except ValueError:
                return False
    return False


def _status_of(pidfd: int) -> str:
    """/proc/PID/status of the process behind a pidfd ("" if it has exited: nothing is signalled then)."""
    pid = command_client.pidfd_pid(pidfd)
    if pid is None or pid <= 0:
        return ""
    try:
        with open(f"/proc/{pid}/status") as status:
            text = status.read()
    except OSError:
        return ""
    # Read by number: if init exited meanwhile the number may be another's, but then the
    # signal chosen from it goes to the pidfd of a process that is gone, and reaches no one.
    return text


def _shutdown(path: str, name: str, explicit_halt: int | None, timeout: int) -> bool:
    """The halt signal to init, then wait up to `timeout` seconds for STOPPED (0: not at all)."""
    pidfd = command_client.init_pidfd(path, name)
    if pidfd is None:
        return True   # gone meanwhile
    if pidfd < 0:
        return False
    try:
        sig = halt_signal(explicit_halt, _status_of(pidfd))
        waiter = None
        if timeout != 0:   # registered before the signal, so the STOPPED it causes is not missed
            waiter = command_client.state_waiter(path, name, LxcState.STOPPED)
            if waiter is None:
                return True
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            pass
        if waiter is None:
            return True
        if not select.select([pidfd], [], [], _wait_for(timeout))[0]:
            assert waiter.conn is not None   # a waiter is a kept connection (state_waiter)
            waiter.conn.close()
            command_client.monitor_exited(waiter, timeout=0)
            return False
        return command_client.wait_closed(waiter, _wait_for(timeout))
    finally:
        os.close(pidfd)


def _reboot(path: str, name: str, reboot_signal: int, timeout: int) -> int:
    """lxc.signal.reboot to init, then wait up to `timeout` seconds for the container to be
    RUNNING again (0: not at all).  Never kills: a reboot that does not come back is exit 1."""
    pidfd = command_client.init_pidfd(path, name)
    if pidfd is None:
        return 0   # stopped meanwhile: lxc-stop -r calls that done too
    if pidfd < 0:
        return fail(f"{name} has no init to signal yet")
    try:
        waiter = None
        if timeout != 0:
            waiter = command_client.state_waiter(path, name, LxcState.RUNNING, next_time=True)
            if waiter is None:
                return fail(f"{name} stopped before the reboot signal was sent")
        try:
            signal.pidfd_send_signal(pidfd, reboot_signal)
        except ProcessLookupError:
            pass
        if waiter is None:
            return 0
        state = command_client.wait_state(waiter, _wait_for(timeout))
        if state == LxcState.RUNNING:
            return 0
        if state == LxcState.STOPPED:
            return fail(f"{name} stopped on {_signal_name(reboot_signal)} instead of rebooting")
        return fail(f"{name} did not run again within {timeout} s of {_signal_name(reboot_signal)}"
                    " (not killed)")
    finally:
        if waiter is not None:
            command_client.monitor_exited(waiter, timeout=0)
        os.close(pidfd)
