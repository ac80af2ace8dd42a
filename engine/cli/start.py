"""lxcsm start: start a container, like lxc-start.

Everything the user typed or wrote in a config is checked here, before the
monitor exists: a bad flag, key or path ends with one line naming the flag or
the file, line and key, a non-zero exit, and nothing created.
"""

from __future__ import annotations

import os
import sys

from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath

SUMMARY = "start a container (like lxc-start)"
TAKES_COMMAND = True   # lxcsm start NAME -- COMMAND [ARG...]


def add_options(parser: Parser) -> None:
    from lxcsm.engine.log import RENDERERS
    add_name(parser)
    parser.add_argument("-f", "--rcfile", metavar="RCFILE", help="config file instead of LXCPATH/NAME/config")
    parser.add_argument("-s", "--define", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config key after the file is read (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-F", "--foreground", action="store_true", help="stay in the foreground")
    mode.add_argument("-d", "--daemon", action="store_true", help="run the monitor in the background (default)")
    parser.add_argument("-l", "--logpriority", metavar="LEVEL", help="TRACE DEBUG INFO NOTICE WARN ERROR (default) ...")
    parser.add_argument("-o", "--logfile", metavar="FILE", help="log to FILE instead of stderr")
    parser.add_argument("--log-format", choices=sorted(RENDERERS), default="lxc",
                        help="the log's lines as LXC writes them (lxc, the default) or as JSON objects")
    parser.add_argument("-p", "--pidfile", metavar="FILE", help="write the monitor's pid to FILE")
    parser.add_argument("--plan", action="store_true",
                        help="print what the start would do, state by state, and change nothing")
    parser.add_argument("--break-at", action="append", default=[], metavar="STATE",
                        help="pause right before STATE (monitor:STATE, child:STATE, or a prefix like setup)")
    parser.add_argument("--step", action="store_true", help="pause before every state")
    parser.epilog = "lxcsm start [options] NAME -- COMMAND [ARG...] runs COMMAND instead of lxc.init.cmd."


def run(parser: Parser, args) -> int:
    from lxcsm.engine import log as logmod
    from lxcsm.engine.config import loader, preflight
    from lxcsm.engine.protocol import command_client
    from lxcsm.engine.protocol.command_socket import LxcState
    from lxcsm.engine.start import breakpoints, monitor, postmortem, supervisor
    from lxcsm.engine.start.context import StartRequest

    name = container_name(parser, args)
    path = lxcpath(args)
    config_path = args.rcfile or os.path.join(path, name, "config")
    try:
        level = logmod.parse_level(args.logpriority) if args.logpriority else None
    except ValueError as err:
        parser.error(f"-l: {err}")
    try:
        pauses = breakpoints.parse(args.break_at, args.step)
    except ValueError as err:
        parser.error(str(err))
    try:
        config = loader.load(config_path, name, args.define)
        command = tuple(args.command) or config.init_cmd
        preflight.check(config, command, command_from_cli=bool(args.command))
    except loader.ConfigError as err:
        return fail(str(err))

    try:
        sync_timeout = float(os.environ.get("LXCSM_SYNC_TIMEOUT", StartRequest._field_defaults["sync_timeout"]))
    except ValueError:
        return fail(f"LXCSM_SYNC_TIMEOUT={os.environ['LXCSM_SYNC_TIMEOUT']}: not a number of seconds")
    try:
        supervisor.failpoints(os.environ.get("LXCSM_FAILPOINTS", ""))
    except ValueError as err:
        return fail(str(err))
    request = StartRequest(name=name, lxcpath=path, config=config, command=command,
                           foreground=args.foreground, pidfile=args.pidfile, breakpoints=pauses,
                           sync_timeout=sync_timeout)
    if args.plan:
        from lxcsm.engine.analysis import plan
        print(plan.render(request))
        return 0
    try:
        running = command_client.get_state(path, name) != LxcState.STOPPED
    except command_client.MonitorError as err:   # a squatter on the name, or a monitor refusing us
        return fail(str(err))
    if running:
        print(f"lxcsm: {name}: container is already running", file=sys.stderr)
        return 0

    logfile = args.logfile or config.log_file
    if not args.foreground and not logfile:
        # A daemon without a log file has nowhere to write lines (its stderr is /dev/null);
        # a failure still reaches the caller, from the flight recorder.
        logmod.set_threshold(logmod.NOTHING)
    else:
        logmod.set_threshold(level if level is not None else
                             logmod.parse_level(config.log_level) if config.log_level else logmod.Level.ERROR)
    if logfile:
        try:
            stream = postmortem.LogFile(logfile)   # survives a full disk: see postmortem
        except OSError as err:
            return fail(f"-o {logfile}: {err.strerror}")
    else:
        stream = sys.stderr

    def make_log():
        log = logmod.logger(logmod.Sink(stream, args.log_format), name=name, side="monitor", pid=os.getpid())
        if logfile:
            stream.on_error = lambda error: log.error(postmortem.LOG_NOT_WRITTEN, file=logfile, error=error)
        return log

    def log_text(text: str) -> None:
        """Text for the log file itself (the failure report), when there is one."""
        if logfile:
            stream.write(text + "\n")
            stream.flush()

    if not args.foreground:
        return monitor.daemonize(request, make_log, log_text)
    ctx = monitor.run(request, make_log())
    if ctx.failure is not None:
        if ctx.failure.already_running:
            print(f"lxcsm: {name}: container is already running", file=sys.stderr)
        else:
            # When the log is stderr, its ERROR line about the failure is already on screen.
            error_shown = not logfile and logmod.enabled(logmod.Level.ERROR)
            text = monitor.failure_report(ctx, with_error_line=not error_shown)
            log_text(text)
            print(text, file=sys.stderr)
    return monitor.exit_status(ctx)
