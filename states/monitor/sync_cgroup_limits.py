"""sync_cgroup_limits (monitor) - the child is set up; apply the limits it must not undo.

Replaces the START_SYNC_CGROUP_LIMITS step of LXC's lxc_spawn(), where the
device-controller limits are written: late, so that the child could still
create its /dev nodes, but before init runs.

The child has pivoted into its rootfs, its /dev populated, when it sends
CGROUP_LIMITS.  Afterwards the kernel sees the lxc.cgroup.devices.allow and
lxc.cgroup.devices.deny rules of the config, in order, in the payload cgroup
of the devices hierarchy: from now on the container may open only the
devices they allow.  (The other lxc.cgroup.* limits were written by spawn;
lxc.cgroup2.* keys wait for a cgroup2-only host, which this engine does not
drive yet.)
"""

from __future__ import annotations

from lxcsm.engine.linux import cgroups
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    assert ctx.boot.channel is not None   # spawn opened it
    ctx.boot.channel.wait_for(SyncMsg.CGROUP_LIMITS)
    for path, value in cgroups.write_limits(ctx.request.config, ctx.hierarchies, ctx.boot.payload_cgroups,
                                            devices=True):
        ctx.log.trace("cgroup limit set", file=path, value=value)
    return "limits_applied"


def plan(request: StartRequest) -> list[str]:
    devices = [f"write {setting.value} to lxc.payload.{request.name}/{file}"
               for file, setting in request.config.cgroup_limits(devices=True)]
    return ["wait for CGROUP_LIMITS", *devices]
