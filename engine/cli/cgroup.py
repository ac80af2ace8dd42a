"""lxcsm cgroup: read or set a running container's cgroup file, like lxc-cgroup.

`lxcsm cgroup NAME KEY` prints the container's KEY (memory.max, pids.current,
cpuacct.usage...), `lxcsm cgroup NAME KEY VALUE` writes VALUE there; -n NAME
takes the name's place.  As lxc-cgroup 5.0.2 does it (cgfsng.c cgroup_get /
cgroup_set): the container's monitor is asked for the directory of the
container's cgroup in the hierarchy with KEY's controller (the part before the
first dot), GET_LIMIT_CGROUP_FD, or on a cgroup2-only host whose monitor does
not answer that, GET_LIMIT_CGROUP2_FD; and the file is read or written here,
in that directory, which must be on a cgroup filesystem mounted here.  Exit 0
done, 1 failed (not running, no such controller or file, a value the kernel
refuses).
"""

from __future__ import annotations

import errno
import os
import sys

from lxcsm.engine.cli.options import DEFAULT_LXCPATH, Parser, fail
from lxcsm.engine.linux import cgroup_files
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import CGROUP2_SUPER_MAGIC, CGROUP_FD, Cmd

SUMMARY = "read or set a running container's cgroup file (like lxc-cgroup)"


def add_options(parser: Parser) -> None:
    parser.error_status = 1   # lxc-cgroup's usage errors exit 1
    parser.add_argument("-n", "--name", dest="name_flag", metavar="NAME", help="the container's name")
    parser.add_argument("-P", "--lxcpath", default=DEFAULT_LXCPATH, metavar="LXCPATH",
                        help=f"the directory of the containers (default {DEFAULT_LXCPATH})")
    parser.add_argument("words", nargs="*", metavar="NAME KEY [VALUE]",
                        help="the container (unless -n names it), the cgroup file (e.g. memory.max), and the"
                             " value to write to it (none: print it)")


def split_words(parser: Parser, args) -> tuple[str, str, str | None]:
    """(name, key, value or None) from NAME KEY [VALUE], or KEY [VALUE] after -n NAME."""
    words = ([args.name_flag] if args.name_flag else []) + args.words
    if len(words) < 2:
        parser.error("give the container's name and a cgroup file (NAME KEY [VALUE])")
    if len(words) > 3:
        parser.error(f"too many arguments: {' '.join(words[3:])}")
    name, key, *value = words
    try:
        cgroup_files.check_key(key)
    except ValueError as err:
        parser.error(str(err))
    return name, key, value[0] if value else None


class NoCgroup(command_client.MonitorError):
    """The container has no cgroup for that controller, or is not running."""


def cgroup_dir(path: str, name: str, controller: str) -> tuple[int, int]:
    """(directory fd, cgroup version) of the container's cgroup with `controller`, checked to
    be on a cgroup filesystem mounted here.  NoCgroup if there is none; Refused, NotAMonitor
    from the command client."""
    request = CGROUP_FD.pack(0, 0, 0, -errno.EBADF, controller.encode()[:63])
    reply = command_client.call(path, name, Cmd.GET_LIMIT_CGROUP_FD, request)
    if reply is None or reply.ret is None:
        raise NoCgroup(f"{name} is not running")
    if reply.ret == -errno.EPERM:
        raise command_client.Refused(name, *reply.peer)
    if reply.ret in (-errno.ENOSYS, -errno.EOPNOTSUPP):   # a monitor without it: ask for the cgroup2 one
        reply = command_client.call(path, name, Cmd.GET_LIMIT_CGROUP2_FD)
        if reply is None or reply.ret is None:
            raise NoCgroup(f"{name} is not running")
        version = 2
    else:
        magic = CGROUP_FD.unpack(reply.data.ljust(CGROUP_FD.size, b"\0"))[2]
        version = 2 if magic == CGROUP2_SUPER_MAGIC else 1
    fds = reply.fds
    if reply.ret != 0 or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise NoCgroup(f"{name} has no cgroup with the {controller} controller"
                       + (f" ({os.strerror(-reply.ret)})" if reply.ret is not None and reply.ret < 0 else ""))
    try:
        cgroup_files.check_directory(fds[0])
    except (ValueError, OSError) as err:
        os.close(fds[0])
        raise command_client.NotAMonitor(path, name, *reply.peer, f"which hands back a directory that {err}")\
            from None
    return fds[0], version


def run(parser: Parser, args) -> int:
    name, key, value = split_words(parser, args)
    path = args.lxcpath.rstrip("/") or "/"
    try:
        fd, _version = cgroup_dir(path, name, cgroup_files.controller_of(key))
    except command_client.MonitorError as err:
        return fail(str(err))
    try:
        if value is None:
            sys.stdout.write(cgroup_files.read(fd, key).rstrip("\n") + "\n")
        else:
            cgroup_files.write(fd, key, value)
    except OSError as err:
        action = f"read {key}" if value is None else f"write {value!r} to {key}"
        return fail(f"{name}: cannot {action}: {err.strerror}")
    finally:
        os.close(fd)
    return 0
