"""lxcsm continue: resume (or abort) a start paused by --break-at or --step."""

from __future__ import annotations

import errno

from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import Cmd

SUMMARY = "resume a start paused by --break-at or --step"


def add_options(parser: Parser) -> None:
    add_name(parser)
    parser.add_argument("--abort", action="store_true", help="abort the paused start instead (cleans up)")


def run(parser: Parser, args) -> int:
    name = container_name(parser, args)
    path = lxcpath(args)
    try:
        if args.abort:
            return 0 if command_client.stop(path, name) else fail(f"{name}: the monitor refused to abort")
        reply = command_client.call(path, name, Cmd.CONTINUE)
    except command_client.MonitorError as err:
        return fail(str(err))
    if reply is None:
        return fail(f"{name} is not running")
    if reply.ret == -errno.EPERM:
        return fail(str(command_client.Refused(name, *reply.peer)))
    if reply.ret != 0:
        return fail(f"{name} is not paused")
    return 0
