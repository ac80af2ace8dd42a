"""monitor_cgroup (monitor) - the monitor moves into its own cgroups.

Replaces LXC's cgfsng_monitor_create() and cgfsng_monitor_enter().

Afterwards the kernel sees a directory ``lxc.monitor.NAME`` in every cgroup
hierarchy (each v1 controller and the cgroup2 tree of a hybrid host), below
the cgroup the monitor started in, with the monitor process in it.  The
monitor is kept apart from the container's cgroups so that limits on the
container never throttle the process that supervises it, and so that LXC's
tools see the same layout they see under lxc-start.

Each directory, and each move, is recorded: unwinding moves the monitor back
home first, then removes the directory.
"""

from __future__ import annotations

import os

from lxcsm.engine.linux import cgroups

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    name = f"lxc.monitor.{ctx.request.name}"
    for hierarchy in ctx.hierarchies:
        path = cgroups.create(hierarchy, name)
        ctx.boot.undo.record("cgroup", path)
        cgroups.attach(path, os.getpid())
        ctx.boot.undo.record("cgroup_entered", hierarchy.home)
        ctx.log.trace("cgroup entered", hierarchy=hierarchy.label, path=path)
    return "monitor_cgroup_entered"


def plan(request: StartRequest) -> list[str]:
    return [f"in every hierarchy: mkdir lxc.monitor.{request.name} below the monitor's cgroup, "
            "move the monitor into it (cpuset: copy cpus and mems from the parent first)"]
