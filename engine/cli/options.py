"""What every lxcsm subcommand shares: argparse with one-line errors, and how a container is named."""

from __future__ import annotations

import argparse
import os
import sys

from lxcsm.engine.config.lxcpath import default_lxcpath

DEFAULT_LXCPATH = default_lxcpath()   # root's /var/lib/lxc; another user's ~/.local/share/lxc, as LXC


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
    """argparse with lxcsm's one-line errors (exit 2, or error_status), for every lxcsm subcommand."""

    error_status = 2

    def __init__(self, **kwargs) -> None:
        super().__init__(formatter_class=_Formatter, **kwargs)

    def error(self, message: str):
        self.exit(self.error_status, f"lxcsm: {message} (see {self.prog} --help)\n")


def add_name(parser: argparse.ArgumentParser) -> None:
    """NAME or -n NAME, and -P LXCPATH: how every lxcsm subcommand names its container."""
    parser.add_argument("-n", "--name", dest="name_flag", metavar="NAME", help="the container's name")
    parser.add_argument("name", nargs="?", metavar="NAME", help="the container's name (or -n NAME)")
    parser.add_argument("-P", "--lxcpath", default=DEFAULT_LXCPATH, metavar="LXCPATH",
                        help=f"the directory of the containers (default {DEFAULT_LXCPATH})")


def container_name(parser: Parser, args: argparse.Namespace) -> str:
    if not (args.name or args.name_flag):
        parser.error("no container name given (NAME or -n NAME)")
    if args.name and args.name_flag and args.name != args.name_flag:
        parser.error(f"two container names given: {args.name_flag} and {args.name}")
    return args.name or args.name_flag


def lxcpath(args: argparse.Namespace) -> str:
    return args.lxcpath.rstrip("/") or "/"


def positive(text: str) -> int:
    """A start number for --start: 1, 2, ..."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a start number (1, 2, ...): {text!r}")
    return int(text)


def fail(message: str) -> int:
    print(f"lxcsm: {message}", file=sys.stderr)
    return 1
