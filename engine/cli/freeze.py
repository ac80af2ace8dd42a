"""lxcsm freeze: freeze every process of a running container, like lxc-freeze.

As lxc-freeze 5.0.2 does it (lxccontainer.c do_lxcapi_freeze, freezer.c,
cgfsng.c cgroup_freeze): nothing to do if the container is FROZEN already;
otherwise its monitor and lxc-monitor are told FREEZING, the container's
cgroup is frozen here - freezer.state = FROZEN on a v1 freezer, cgroup.freeze
= 1 on cgroup2, in the directory the monitor hands out - and once the kernel
says every process is frozen, both are told FROZEN (RUNNING if it failed).
The monitor keeps that state: lxc-info says FROZEN, lxc-wait -s FROZEN
returns.  `lxcsm unfreeze` (unfreeze.py) is the way back.  Exit 0 done, 1
failed or not running.
"""

from __future__ import annotations

import os

from lxcsm.engine.cli.cgroup import cgroup_dir
from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.linux import cgroup_files
from lxcsm.engine.protocol import command_client, monitor_fifo
from lxcsm.engine.protocol.command_socket import Cmd, LxcState

SUMMARY = "freeze every process of a running container (like lxc-freeze)"
# How long the kernel may take to freeze or thaw every process: a task in an uninterruptible
# sleep (a slow disk, NFS) is frozen only when it wakes.
PATIENCE = 60.0


def add_options(parser: Parser) -> None:
    parser.error_status = 1
    add_name(parser)


def run(parser: Parser, args) -> int:
    return change(parser, args, freeze=True)


def change(parser: Parser, args, freeze: bool) -> int:
    """Freeze or thaw, telling the monitor and lxc-monitor each step as LXC's tools do."""
    name, path = container_name(parser, args), lxcpath(args)
    try:
        state = command_client.get_state(path, name)
        if state == LxcState.STOPPED:
            return fail(f"{name} is not running")
        if (state == LxcState.FROZEN) == freeze:
            return 0   # as LXC: freezing a FROZEN container, or thawing one that is not, does nothing
        fd, version = cgroup_dir(path, name, "freezer")
    except command_client.MonitorError as err:
        return fail(str(err))
    try:
        _tell(path, name, LxcState.FREEZING if freeze else LxcState.THAWED)
        try:
            done = cgroup_files.freeze(fd, version, freeze, PATIENCE)
            error = "" if done else f"not done within {PATIENCE:.0f} s"
        except OSError as err:
            done, error = False, err.strerror or str(err)
        _tell(path, name, LxcState.FROZEN if done == freeze else LxcState.RUNNING)
    finally:
        os.close(fd)
    return 0 if done else fail(f"cannot {'freeze' if freeze else 'thaw'} {name}: {error}")


def _tell(path: str, name: str, state: LxcState) -> None:
    """What LXC's lxc_cmd_notify_state_listeners does: the monitor (SERVE_STATE_CLIENTS) keeps the
    state and tells its state clients, lxc-monitor hears it from us.  Neither failing stops us."""
    try:
        command_client.call(path, name, Cmd.SERVE_STATE_CLIENTS, inline=state)
    except command_client.MonitorError:
        pass
    monitor_fifo.announce_state(path, name, state)
