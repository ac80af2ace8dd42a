"""`lxcsm`: the command line, shaped like lxc-start and lxc-stop.

Everything the user typed or wrote in a config is checked here, before the
monitor exists: a bad flag, key or path ends with one line naming the flag or
the file, line and key, a non-zero exit, and nothing created.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import select
import signal
import sys

from lxcsm.engine import commands

DEFAULT_LXCPATH = "/var/lib/lxc"


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, at the terminal's width.

    argparse itself asks shutil for the width each time it makes a formatter, which is
    once per add_argument (to check the metavar): importing shutil alone is ~4 ms of
    every start on a small VM.  os.get_terminal_size is the same question, asked once.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    """argparse with lxcsm's one-line errors (exit 2), for every lxcsm command."""

    def __init__(self, **kwargs) -> None:
        super().__init__(formatter_class=_Formatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"lxcsm: {message} (see {self.prog} --help)\n")


def add_name(parser: argparse.ArgumentParser) -> None:
    """NAME or -n NAME, and -P LXCPATH: how every lxcsm command names its container."""
    parser.add_argument("-n", "--name", dest="name_flag", metavar="NAME")
    parser.add_argument("name", nargs="?", metavar="NAME")
    parser.add_argument("-P", "--lxcpath", default=DEFAULT_LXCPATH, metavar="LXCPATH")


def _start_parser(parser: Parser) -> None:
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
    parser.add_argument("--log-format", choices=sorted(RENDERERS), default="lxc")
    parser.add_argument("-p", "--pidfile", metavar="FILE", help="write the monitor's pid to FILE")
    parser.add_argument("--plan", action="store_true",
                        help="print what the start would do, state by state, and change nothing")
    parser.add_argument("--break-at", action="append", default=[], metavar="STATE",
                        help="pause right before STATE (monitor:STATE, child:STATE, or a prefix like setup)")
    parser.add_argument("--step", action="store_true", help="pause before every state")
    parser.epilog = "lxcsm start [options] NAME -- COMMAND [ARG...] runs COMMAND instead of lxc.init.cmd."


def _continue_parser(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("--abort", action="store_true", help="abort the paused start instead (cleans up)")


def _stop_parser(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("-k", "--kill", action="store_true", help="kill init at once (lxc.signal.stop)")
    parser.add_argument("-t", "--timeout", type=_seconds, default=60, metavar="SECS",
                        help="seconds to wait after lxc.signal.halt before killing (default 60)")


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def container_name(parser, args) -> str:
    if not (args.name or args.name_flag):
        parser.error("no container name given (NAME or -n NAME)")
    if args.name and args.name_flag and args.name != args.name_flag:
        parser.error(f"two container names given: {args.name_flag} and {args.name}")
    return args.name or args.name_flag


def _fail(message: str) -> int:
    print(f"lxcsm: {message}", file=sys.stderr)
    return 1


def start(parser, args) -> int:
    # Imported here: `lxcsm stop` and `lxcsm continue` need none of it.
    from lxcsm.engine import breakpoints, config as configmod, log as logmod, monitor, preflight, supervisor
    from lxcsm.engine.handler import StartRequest

    name = container_name(parser, args)
    lxcpath = args.lxcpath.rstrip("/") or "/"
    config_path = args.rcfile or os.path.join(lxcpath, name, "config")
    try:
        level = logmod.parse_level(args.logpriority) if args.logpriority else None
    except ValueError as err:
        parser.error(f"-l: {err}")
    try:
        pauses = breakpoints.parse(args.break_at, args.step)
    except ValueError as err:
        parser.error(str(err))
    try:
        config = configmod.load(config_path, name, args.define)
        command = tuple(args.command) or config.init_cmd
        preflight.check(config, command, command_from_cli=bool(args.command))
    except configmod.ConfigError as err:
        return _fail(str(err))

    try:
        sync_timeout = float(os.environ.get("LXCSM_SYNC_TIMEOUT", StartRequest._field_defaults["sync_timeout"]))
    except ValueError:
        return _fail(f"LXCSM_SYNC_TIMEOUT={os.environ['LXCSM_SYNC_TIMEOUT']}: not a number of seconds")
    try:
        supervisor.failpoints(os.environ.get("LXCSM_FAILPOINTS", ""))
    except ValueError as err:
        return _fail(str(err))
    request = StartRequest(name=name, lxcpath=lxcpath, config=config, command=command,
                           foreground=args.foreground, pidfile=args.pidfile, breakpoints=pauses,
                           sync_timeout=sync_timeout)
    if args.plan:
        from lxcsm.engine import plan
        print(plan.render(request))
        return 0
    if commands.get_state(lxcpath, name) != commands.LxcState.STOPPED:
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
            stream = open(logfile, "a", buffering=1)
        except OSError as err:
            return _fail(f"-o {logfile}: {err.strerror}")
    else:
        stream = sys.stderr

    def make_log():
        return logmod.logger(logmod.Sink(stream, args.log_format), name=name, side="monitor", pid=os.getpid())

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


def resume(parser, args) -> int:
    name = container_name(parser, args)
    lxcpath = args.lxcpath.rstrip("/") or "/"
    if args.abort:
        return 0 if commands.stop(lxcpath, name) else _fail(f"{name}: the monitor refused to abort")
    reply = commands.call(lxcpath, name, commands.Cmd.CONTINUE)
    if reply is None:
        return _fail(f"{name} is not running")
    if reply.ret != 0:
        return _fail(f"{name} is not paused")
    return 0


def stop(parser, args) -> int:
    name = container_name(parser, args)
    lxcpath = args.lxcpath.rstrip("/") or "/"
    if commands.get_state(lxcpath, name) == commands.LxcState.STOPPED:
        print(f"lxcsm: {name} is not running", file=sys.stderr)
        return 2
    if not args.kill and _shutdown(lxcpath, name, args.timeout):
        return 0
    return 0 if commands.stop(lxcpath, name) else _fail(f"{name}: the monitor refused to stop the container")


def _shutdown(lxcpath: str, name: str, timeout: int) -> bool:
    """lxc.signal.halt to init, then wait up to `timeout` seconds for STOPPED."""
    reply = commands.call(lxcpath, name, commands.Cmd.GET_INIT_PIDFD)
    if reply is None:
        return True   # gone meanwhile
    if not reply.fds:
        return False
    pidfd = reply.fds[0]
    try:
        halt = commands.call(lxcpath, name, commands.Cmd.GET_CONFIG_ITEM, b"lxc.signal.halt\0")
        halt_signal = int(halt.data.rstrip(b"\0")) if halt and halt.ret == 0 else signal.SIGPWR
        waiter = commands.state_waiter(lxcpath, name, commands.LxcState.STOPPED)
        if waiter is None:
            return True
        try:
            signal.pidfd_send_signal(pidfd, halt_signal)
        except ProcessLookupError:
            pass
        if not select.select([pidfd], [], [], timeout)[0]:
            waiter.conn.close()
            commands.monitor_exited(waiter, timeout=0)
            return False
        return commands.wait_closed(waiter, timeout)
    finally:
        os.close(pidfd)


COMMANDS = {
    "start": (_start_parser, "start a container (like lxc-start)", start),
    "continue": (_continue_parser, "resume a start paused by --break-at or --step", resume),
    "stop": (_stop_parser, "stop a running container (like lxc-stop)", stop),
}

# Commands for people learning or debugging a start, each in its own module with its
# own `main(argv)`: imported only when asked for, so `lxcsm start` never pays for them.
TOOLS = {
    "graph": "lxcsm.engine.graph",
    "explain": "lxcsm.engine.explain",
    "timeline": "lxcsm.engine.timeline",
    "trace-diff": "lxcsm.engine.trace_diff",
    "explain-failure": "lxcsm.engine.postmortem",
    "plan": "lxcsm.engine.plan",
    "cleanup": "lxcsm.engine.cleanup",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        try:
            return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        except BrokenPipeError:   # `lxcsm explain | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    # Everything after `--` is init's command line, options and all.
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    if argv and argv[0] in COMMANDS:
        # Only the parser of the command asked for: the others would cost every start.
        action, (add_options, help_text, run_command) = argv[0], COMMANDS[argv[0]]
        parser = Parser(prog=f"lxcsm {action}", description=help_text)
        add_options(parser)
        args = parser.parse_args(argv[1:])
    else:
        parser = _usage()
        if argv and not argv[0].startswith("-"):
            parser.error(f"{argv[0]!r} is not a command (commands: {', '.join([*COMMANDS, *TOOLS])})")
        parser.parse_args(argv)   # --help, or the one-line error for a missing command
        return 2
    args.command = command
    # Errors found after parsing point at the command's own --help.
    return run_command(parser, args)


def _usage() -> Parser:
    """The top-level parser: it only says which commands there are."""
    parser = Parser(prog="lxcsm", description="Start LXC containers through explicit state machines.",
                    epilog="Also: " + ", ".join(f"lxcsm {tool} --help" for tool in TOOLS))
    sub = parser.add_subparsers(dest="action", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for action, (_add_options, help_text, _run) in COMMANDS.items():
        sub.add_parser(action, help=help_text)
    return parser


def run() -> None:
    """The `lxcsm` command: main(), then exit at once.

    Everything the monitor owned is undone and every log line flushed by the
    time main() returns; the interpreter's own teardown (tens of ms of freeing
    objects one by one) would change nothing the user can see.
    """
    # Until a container runs, nothing lxcsm makes is garbage: the collector would only walk
    # the tens of thousands of objects the imports and the machines create, several times
    # over (~10 ms of a start).  The monitor turns it back on once the container is RUNNING.
    gc.disable()
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
