"""`lxcsm`: the command line, shaped like lxc-start and lxc-stop.

argv in, exit status out.  Each subcommand is one module of this package
with a SUMMARY, ``add_options(parser)`` and ``run(parser, args)``; only the
module of the subcommand asked for is imported, so `lxcsm stop` never pays for
what `lxcsm start` or the teaching tools import.  Nothing imports this
package: it sits on top of every other layer (ARCHITECTURE.md).
"""

import gc
import os
import sys

# Subcommand -> module of this package, in the order `lxcsm --help` lists them.
SUBCOMMANDS = {
    "start": "start",
    "continue": "resume",
    "stop": "stop",
    "autostart": "autostart",
    "cgroup": "cgroup",
    "freeze": "freeze",
    "unfreeze": "unfreeze",
    "info": "info",
    "cleanup": "cleanup",
    "serve": "serve",
    "plan": "plan",
    "explain": "explain",
    "explain-failure": "explain_failure",
    "graph": "graph",
    "timeline": "timeline",
    "trace-diff": "trace_diff",
    "lab": "lab",
}


# The subcommands a start server (`lxcsm serve`) runs when one answers: a start, and the stop
# that so often follows it.
WARM = ("start", "stop")
# (module, parser) of a subcommand made ahead: `lxcsm serve` builds start's once, before it
# forks, rather than in each start it runs (~2 ms, and pages of its heap written).
PREBUILT: dict[str, tuple] = {}


def _subcommand(name: str):
    import importlib  # here, not above: `lxcsm start` through a start server never needs it

    return importlib.import_module(f"lxcsm.engine.cli.{SUBCOMMANDS[name]}")


def parser_for(name: str):
    """(module, parser) of a subcommand: what main() runs, and what tools/cli-docs documents."""
    from lxcsm.engine.cli.options import Parser

    module = _subcommand(name)
    parser = Parser(prog=f"lxcsm {name}", description=module.SUMMARY)
    module.add_options(parser)
    _add_version(parser)
    return module, parser


def _add_version(parser) -> None:
    """--version on every parser, as every LXC tool has it (lxc-start --version prints "5.0.2")."""
    from lxcsm.engine import __version__

    parser.add_argument("--version", action="version", version=__version__,
                        help="print lxcsm's version and exit")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = usage_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"{argv[0]!r} is not a command (commands: {', '.join(SUBCOMMANDS)})")
        parser.parse_args(argv)   # --help, --version, or the one-line error for a missing command
        return 2
    name = argv[0]
    if name in WARM:   # through `lxcsm serve`, when one answers: before argparse or the engine is imported
        from lxcsm.engine.start import server_client
        if not server_client.IN_SERVER:
            status = server_client.run([sys.argv[0], *argv])
            if status is not None:
                return status
    # Everything after `--` is init's command line, options and all.
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    options = argv[1: argv.index("--")] if "--" in argv else argv[1:]
    module, parser = PREBUILT.get(name) or parser_for(name)
    args = parser.parse_args(options)
    if command and not getattr(module, "TAKES_COMMAND", False):
        parser.error(f"takes no command after --: {' '.join(command)}")
    args.command = command
    try:
        return module.run(parser, args)
    except BrokenPipeError:   # `lxcsm explain | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


DESCRIPTION = "Start LXC containers through explicit state machines."


def usage_parser(summaries: bool | None = None):
    """The top-level parser: it only says which subcommands there are (with their summaries
    for --help, which imports every subcommand's module)."""
    from lxcsm.engine.cli.options import Parser

    if summaries is None:
        summaries = "-h" in sys.argv or "--help" in sys.argv
    parser = Parser(prog="lxcsm", description=DESCRIPTION)
    _add_version(parser)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name in SUBCOMMANDS:
        sub.add_parser(name, help=_subcommand(name).SUMMARY if summaries else None)
    return parser


def _undo_locale_coercion() -> None:
    """LC_CTYPE as exec(2) gave it (/proc/self/environ), or unset: started without a locale,
    Python sets LC_CTYPE=C.UTF-8 in its own environment (PEP 538), which lxc-start does not
    do - and the hooks, a start server and `lxc.environment = NAME` take lxcsm's environment.
    (Python's own encoding was chosen before this: it stays UTF-8.)"""
    if "LC_CTYPE" not in os.environ:
        return
    with open("/proc/self/environ", "rb") as environ:
        given = [entry for entry in environ.read().split(b"\0") if entry.startswith(b"LC_CTYPE=")]
    if given:
        os.environ["LC_CTYPE"] = os.fsdecode(given[0].partition(b"=")[2])
    else:
        del os.environ["LC_CTYPE"]


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
    _undo_locale_coercion()
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
