"""lxcsm start: start a container, like lxc-start.

Everything the user typed or wrote in a config is checked here, before the
monitor exists: a bad flag, key or path ends with one line naming the flag or
the file, line and key, a non-zero exit, and nothing created.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from typing import TextIO

from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath

SUMMARY = "start a container (like lxc-start)"
TAKES_COMMAND = True   # lxcsm start NAME -- COMMAND [ARG...]
# lxc-start's --share-NAMESPACE flags.
SHAREABLE_NAMESPACES = ("net", "ipc", "uts", "pid")


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
    # lxc-start's flags that set config keys or the monitor's fds; their checks are in _lxc_start_flags.
    parser.add_argument("-c", "--console", metavar="FILE",
                        help="put the container's console on the terminal FILE (lxc.console.path): the monitor"
                             " relays between FILE, in raw mode, and the console")
    parser.add_argument("-L", "--console-log", metavar="FILE",
                        help="copy the container's console output to FILE (lxc.console.logfile)")
    parser.add_argument("-C", "--close-all-fds", action="store_true",
                        help="close the file descriptors lxcsm was started with (--daemon always does); init never"
                             " gets them, with or without -C")
    for namespace in SHAREABLE_NAMESPACES:
        parser.add_argument(f"--share-{namespace}", metavar="NAME|PID",
                            help=f"join the {namespace} namespace of the running container NAME (of the same"
                                 f" LXCPATH) or of process PID instead of a new one (lxc.namespace.share.{namespace})")
    parser.add_argument("--lab", action="store_true",
                        help="lab mode, for teaching only: allow --lab-skip (with -F and -- COMMAND)")
    parser.add_argument("--lab-skip", action="append", default=[], metavar="STEP[,STEP...]",
                        help="leave a step of the start out and see what the container then sees: pivot_root,"
                             " proc, pid_ns, net_ns, cgroup_ns, cap_drop, hostname (needs --lab; `lxcsm lab` has"
                             " exercises)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print none of lxcsm's messages (a log file is still written)")
    parser.epilog = "lxcsm start [options] NAME -- COMMAND [ARG...] runs COMMAND instead of lxc.init.cmd."


def run(parser: Parser, args) -> int:
    from lxcsm.engine import log as logmod
    from lxcsm.engine.config import loader, preflight
    from lxcsm.engine.protocol import command_client
    from lxcsm.engine.protocol.command_socket import LxcState
    from lxcsm.engine.start import breakpoints, monitor, postmortem, supervisor
    from lxcsm.engine.start.context import StartRequest

    inherited = _open_fds()   # before this process opens anything of its own
    if args.quiet:
        sys.stderr = open(os.devnull, "w")   # lxcsm's own messages only: init's stderr is fd 2, untouched
    name = container_name(parser, args)
    path = lxcpath(args)
    config_path = args.rcfile or os.path.join(path, name, "config")
    try:
        overrides = [*args.define, *_lxc_start_flags(args)]
    except ValueError as err:
        return fail(str(err))
    try:
        level = logmod.parse_level(args.logpriority) if args.logpriority else None
    except ValueError as err:
        parser.error(f"-l: {err}")
    try:
        pauses = breakpoints.parse(args.break_at, args.step)
    except ValueError as err:
        parser.error(str(err))
    lab_skips: tuple[str, ...] = ()
    if args.lab or args.lab_skip:   # lab mode: the lab module only then
        from lxcsm.engine.start import lab
        try:
            lab_skips = lab.parse(args.lab_skip)
        except ValueError as err:
            parser.error(str(err))
        refused = lab.refusal(lab_skips, args.lab, args.foreground, args.command)
        if refused:
            return fail(refused)
    try:
        config = loader.load(config_path, name, overrides)
        command = tuple(args.command) or config.init_cmd
        if lab_skips:   # checked as the states will read it
            config = lab.config_without(config, lab_skips)
        preflight.check(config, command, command_from_cli=bool(args.command))
    except loader.ConfigError as err:
        fail(str(err))
        postmortem.record_refusal(config_path, path, name, str(err), tuple(args.command))   # for explain-failure
        return 1

    try:
        sync_timeout = float(os.environ["LXCSM_SYNC_TIMEOUT"]) if os.environ.get("LXCSM_SYNC_TIMEOUT") else None
    except ValueError:
        return fail(f"LXCSM_SYNC_TIMEOUT={os.environ['LXCSM_SYNC_TIMEOUT']}: not a number of seconds")
    try:
        supervisor.failpoints(os.environ.get("LXCSM_FAILPOINTS", ""))
    except ValueError as err:
        return fail(str(err))
    request = StartRequest(name=name, lxcpath=path, config=config, command=command,
                           foreground=args.foreground, breakpoints=pauses,
                           # absolute, as lxc-start makes it: a daemon writes it from /
                           pidfile=os.path.abspath(args.pidfile) if args.pidfile else None,
                           sync_timeout=sync_timeout, lab_skips=lab_skips,
                           log_level=level.name if level is not None else None)
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
    if config.namespace_shares():   # spawn joins them; a name not running is refused now, in one line
        from lxcsm.engine.errors import StateError
        from lxcsm.states.monitor import spawn
        for kind, target in config.namespace_shares().items():
            try:
                os.close(spawn.share_source(path, kind, target))
            except StateError as err:
                fail(f"{err}; nothing was started")
                postmortem.record_refusal(config_path, path, name, str(err), tuple(args.command))
                return 1
    if lab_skips:
        print(lab.banner(lab_skips), file=sys.stderr, flush=True)

    logfile = args.logfile or config.log_file
    syslog_facility = config.get_item("lxc.log.syslog")
    if not args.foreground and not logfile and not syslog_facility:
        # A daemon without a log file has nowhere to write lines (its stderr is /dev/null);
        # a failure still reaches the caller, from the flight recorder.
        logmod.set_threshold(logmod.NOTHING)
    else:
        logmod.set_threshold(level if level is not None else
                             logmod.parse_level(config.log_level) if config.log_level else logmod.Level.ERROR)
    stream: postmortem.LogFile | TextIO
    if logfile:
        try:
            stream = postmortem.LogFile(logfile)   # survives a full disk: see postmortem
        except OSError as err:
            return fail(f"-o {logfile}: {err.strerror}")
    else:
        stream = sys.stderr

    def make_log():
        sink: logmod.Sink | logmod.Tee = logmod.Sink(stream, args.log_format)
        if syslog_facility:   # lxc.log.syslog: every line to syslog as well, as LXC's appender
            sink = logmod.Tee(sink, logmod.SyslogSink(syslog_facility))
        log = logmod.logger(sink, name=name, side="monitor", pid=os.getpid())
        if logfile:
            stream.on_error = lambda error: log.error(postmortem.LOG_NOT_WRITTEN, file=logfile, error=error)
        return log

    def log_text(text: str) -> None:
        """Text for the log file itself (the failure report), when there is one."""
        if logfile:
            stream.write(text + "\n")
            stream.flush()

    if args.close_all_fds or not args.foreground:   # as lxc-start: -d implies -C
        for fd in inherited:
            os.close(fd)
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


def _lxc_start_flags(args) -> list[str]:
    """-c, -L and --share-* as the config lines they stand for (applied after -s, as lxc-start
    does); ValueError for what lxcsm cannot honour, rather than a flag accepted and ignored."""
    overrides = [f"lxc.namespace.share.{namespace} = {getattr(args, f'share_{namespace}')}"
                 for namespace in SHAREABLE_NAMESPACES if getattr(args, f"share_{namespace}") is not None]
    if args.console is not None:
        if args.console not in ("none", "auto"):
            args.console = os.path.abspath(args.console)
            from lxcsm.engine.linux import terminal
            try:
                os.close(terminal.open_terminal(args.console))
            except OSError as err:
                raise ValueError(f"-c {args.console}: {err.strerror}; nothing was started") from None
        overrides.append(f"lxc.console.path = {args.console}")
    if args.console_log is not None:
        # Made absolute here: the user means it relative to where they typed it.
        overrides.append(f"lxc.console.logfile = {os.path.abspath(args.console_log)}")
    return overrides


def _open_fds() -> list[int]:
    """This process's open file descriptors above stdio: at the top of run(), the inherited ones."""
    fds = []
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            try:
                os.fstat(fd)
            except OSError:
                continue   # the directory listing's own, closed again by now
            fds.append(fd)
    return fds
