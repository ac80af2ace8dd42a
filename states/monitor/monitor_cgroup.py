"""monitor_cgroup (monitor) - the monitor moves into its own cgroups.

Replaces LXC's cgfsng_monitor_create(), cgfsng_monitor_delegate_controllers() and
cgfsng_monitor_enter().

Afterwards the kernel sees a directory ``lxc.monitor.NAME`` in every cgroup
hierarchy (each v1 controller and the cgroup2 tree of a hybrid host, or the one
cgroup2 tree of a unified host), below the base LXC would use (PID 1's cgroup, or
with lxc.cgroup.relative the monitor's own; lxc.cgroup.dir and
lxc.cgroup.dir.monitor move it), with the monitor process in it.  On a unified
host the controllers are enabled in cgroup.subtree_control on the way down to it,
as LXC enables them.  Started by an ordinary user, the base is the cgroup the
monitor started in (delegated to that user), and its processes first move to a
leaf below it, ``init``, as LXC empties its unprivileged scope (cgfsng's
move_and_delegate_unified()): cgroup2 enables no controller for the children of
a cgroup with processes in it.  The leaf stays.  The monitor is kept apart from the container's cgroups so
that limits on the container never throttle the process that supervises it, and
so that LXC's tools see the same layout they see under lxc-start.

Each directory, and each move, is recorded: unwinding moves the monitor back
(to the cgroup it came from, or to lxc.pivot below lxc.cgroup.dir.monitor.pivot
where LXC puts it) first, then removes the directory.
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import cgroups

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    where = cgroups.placement(ctx.request.config, ctx.request.name)
    unified = cgroups.unified_only(ctx.hierarchies)
    if unified and os.geteuid() != 0:   # an ordinary user's base is the cgroup it started in
        ctx.hierarchies[:] = [cgroups.vacate(h) for h in ctx.hierarchies]
        ctx.log.trace("processes moved to a leaf", path=ctx.hierarchies[0].started_in)
    for hierarchy in ctx.hierarchies:
        base = hierarchy.base(where.relative)
        path = cgroups.create(hierarchy, base, where.monitor)
        ctx.boot.undo.record("cgroup", path)
        if unified:
            enabled = cgroups.delegate(hierarchy, base, where.monitor)
            ctx.log.trace("controllers enabled", base=base, controllers=enabled)
        pivot = where.pivot_path(hierarchy)
        if where.pivot is not None:
            cgroups.create(hierarchy, hierarchy.base(where.relative), where.pivot, exist_ok=True)
        cgroups.attach(path, os.getpid())
        ctx.boot.undo.record("cgroup_entered", pivot)
        ctx.log.trace("cgroup entered", hierarchy=hierarchy.label, path=path)
    return "monitor_cgroup_entered"


def plan(request: StartRequest) -> list[str]:
    try:
        where = cgroups.placement(request.config, request.name)
    except StateError as err:   # the start would fail here with this error
        return [f"fail: {err}"]
    if os.geteuid() != 0:   # an ordinary user's start
        return [f"move the processes of the (delegated) cgroup we start in to {cgroups.LEAF} below it",
                f"mkdir {where.monitor} below the cgroup we start in",
                f"enable its controllers in cgroup.subtree_control down to {where.monitor}",
                "move the monitor into it"]
    base = "the monitor's cgroup" if where.relative else "PID 1's cgroup"
    return [f"in every hierarchy: mkdir {where.monitor} below {base} "
            "(cpuset: copy cpus and mems from the parent first)",
            f"cgroup2 only: enable the base's controllers in cgroup.subtree_control down to {where.monitor}",
            "move the monitor into it"]
