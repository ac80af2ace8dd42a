"""Running the monitor: in the foreground, or as a daemon that reports back to its caller.

`run` is the monitor's whole life: build its context, run the MONITOR machine
to `stopped`, and turn the outcome into an exit status (init's status, 128+N
when init was killed by signal N, 0 for a clean halt).

`daemonize` is lxc-start's default mode: the caller forks, the child starts a
new session and forks the monitor, which is reparented away from the caller
and titled ``[lxcsm monitor] LXCPATH NAME`` in ps.  The monitor tells the
caller over a pipe when the container is RUNNING or why its start failed, so
`lxcsm start` returns 0 only for a container that really runs.
"""

from __future__ import annotations

import gc
import os
import signal
import sys

from lxcsm.engine import log as logmod
from lxcsm.engine.errors import describe
from lxcsm.engine.linux import kernel
from lxcsm.engine.start import breakpoints, postmortem, undo
from lxcsm.engine.start.context import MonitorContext, StartRequest
from lxcsm.engine.start.machine import CHILD, MONITOR
from lxcsm.engine.start.supervisor import Supervisor


def exit_status(ctx: MonitorContext) -> int:
    if ctx.failure is not None:
        return 0 if ctx.failure.already_running else 1
    status = ctx.boot.init_status
    assert status is not None   # no failure: the start ran, and poll reaped init
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 0 if sig == signal.SIGINT else 128 + sig   # SIGINT: the container halted
    return os.WEXITSTATUS(status)


def run(request: StartRequest, log, on_running=lambda: None,
        on_paused=lambda text: print(text, file=sys.stderr, flush=True)) -> MonitorContext:
    """The monitor's life; afterwards ctx.saved_events is where the flight record was kept."""
    def running() -> None:
        on_running()
        # The collector was off for the start (cli.run).  What exists now lives as long as
        # the monitor: frozen, later collections skip it and leave its pages shared with
        # the next boot's child.
        gc.freeze()
        gc.enable()

    record = postmortem.FlightRecord(postmortem.last_start_path(request.config_file))
    record.on_error = lambda error: log.error(postmortem.NOT_KEPT, file=record.path, error=error)
    logmod.flight_recorder.file = record
    # Called at the first change journalled, in init_handler: logged as that state's.
    journal = undo.Journal(undo.journal_path(request.config_file),
                           on_leftovers=lambda changes: _undo_leftovers(changes, record, ctx.log))
    ctx = MonitorContext(request=request, log=log, on_running=running, on_paused=on_paused,
                         undo=undo.UndoLog(journal))
    if not request.foreground:
        # As lxc-start's daemonized monitor: in /, which its hooks inherit (measured: their
        # cwd, and so the PWD their shell exports), holding none of its caller's directories.
        os.chdir("/")
    ctx.pause = lambda side, state: breakpoints.pause(ctx, side, state)

    def on_enter(state: str) -> None:
        if request.breakpoints and request.breakpoints.wants("monitor", state):
            ctx.pause("monitor", state)

    # The child's state modules are imported here, once: every child (one per boot) is
    # forked with them loaded instead of importing them between clone and STARTUP.
    for state in CHILD.states:
        CHILD.module(state)
    own_log = log.bind(category="monitor")   # this module's events, outside any state
    try:
        Supervisor(MONITOR, ctx, log, on_enter=on_enter, lab_skips=request.lab_skips).run()
    except Exception as err:   # a bug outside any state: the record says so before it ends
        own_log.error(postmortem.MONITOR_FAILED, error=describe(err))
        raise
    finally:
        # Normally empty by now; after a way-out state failed (or was made to fail), or an
        # error escaped the machine, the monitor's last act is still to leave nothing
        # behind.  What cannot be undone stays in the journal.
        ctx.boot.undo.unwind(log)
        ctx.undo.unwind(log)
        journal.finish()
        already_running = bool(ctx.failure and ctx.failure.already_running)
        if not already_running:   # otherwise the record on disk is the running monitor's
            own_log.trace(postmortem.MONITOR_EXITED, failed=ctx.failure is not None, left_on_host=journal.outstanding)
        logmod.flight_recorder.file = None
        ctx.saved_events = record.close(claim=not already_running)
    return ctx


def _undo_leftovers(changes: list[undo.Change], record: postmortem.FlightRecord, log) -> list[undo.Change]:
    """What a monitor that died left on the host, undone before this start changes anything
    (see undo.Journal); its flight record, the only account of how it died, is kept aside."""
    try:
        if not postmortem.read(record.path).finished:
            os.replace(record.path, postmortem.died_start_path(record.path))
    except OSError:
        pass   # no record of it: nothing to keep
    return undo.undo_after_crash(changes, log)


def failure_report(ctx: MonitorContext, with_error_line: bool = True) -> str:
    return postmortem.report(ctx.request.name, ctx.failure, ctx.saved_events, with_error_line)


def daemonize(request: StartRequest, make_log, log_text) -> int:
    """Start the monitor in the background; return the caller's exit status."""
    status_read, status_write = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(status_read)
        os.setsid()
        if os.fork():
            os._exit(0)
        _monitor_main(request, make_log, log_text, status_write)
    os.close(status_write)
    os.waitpid(first, 0)
    # One report, ended by a NUL: the container child holds a copy of the pipe until it
    # execs, so end-of-file may come much later than the report (at a breakpoint, never).
    report = b""
    with os.fdopen(status_read, "rb", buffering=0) as status:
        while not report.endswith(b"\0"):
            chunk = status.read(4096)
            if not chunk:
                break
            report += chunk
    verdict, _, detail = report.rstrip(b"\0").decode(errors="replace").partition(" ")
    if verdict == "RUNNING":
        return 0
    if verdict == "PAUSED":
        print(detail, file=sys.stderr)
        return 0
    if verdict == "ALREADY":
        print(f"lxcsm: {request.name}: {detail}", file=sys.stderr)
        return 0
    print(detail or f"lxcsm: {request.name}: the monitor died before reporting", file=sys.stderr)
    return 1


def _monitor_main(request: StartRequest, make_log, log_text, status_fd: int) -> None:
    def report(text: str) -> None:
        nonlocal status_fd
        if status_fd >= 0:
            os.write(status_fd, text.encode() + b"\0")
            os.close(status_fd)
            status_fd = -1

    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        kernel.set_comm("lxcsm monitor")
        kernel.set_cmdline(f"[lxcsm monitor] {request.lxcpath} {request.name}")
        log = make_log()

        def paused(text: str) -> None:
            # The first pause goes to the caller, which prints it and returns; later ones
            # (--step) are in the log.
            report(f"PAUSED {text}")
            log_text(text)

        ctx = run(request, log, on_running=lambda: report("RUNNING"), on_paused=paused)
        if ctx.failure is not None and ctx.failure.already_running:
            report(f"ALREADY {ctx.failure.error}")
        elif ctx.failure is not None:
            text = failure_report(ctx)
            log_text(text)
            report(f"FAILED {text}")
    except Exception as err:   # a bug: its stderr is /dev/null, so the caller hears what it was
        report(f"FAILED lxcsm: {request.name}: the monitor failed: {describe(err)}")
    finally:
        os._exit(0)
