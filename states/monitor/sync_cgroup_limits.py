"""sync_cgroup_limits (monitor) - the child is set up; apply the limits it must not undo.

Replaces the START_SYNC_CGROUP_LIMITS step of LXC's lxc_spawn(), where the
device limits are put in force (cgfsng_devices_activate, and the v1 devices
settings of setup_limits_legacy): late, so that the child could still create its
/dev nodes, but before init runs.

The child has pivoted into its rootfs, its /dev populated, when it sends
CGROUP_LIMITS.  Afterwards the kernel sees, from now on for every open() or
mknod() of a device by the container:
* on a host with v1 controllers: the lxc.cgroup.devices.allow and
  lxc.cgroup.devices.deny rules of the config, in order, in the payload cgroup
  of the devices hierarchy;
* on a cgroup2-only host: an eBPF program of type CGROUP_DEVICE built from the
  lxc.cgroup2.devices.allow/deny rules (LXC's rule semantics, see
  engine/linux/cgroup_devices.py), attached to the payload cgroup; none without
  such rules, as with LXC.
(The other limits were written by spawn.)
Then the lxc.hook.start-host hooks run in the host's namespaces, as in LXC's
lxc_spawn(): after the device limits, before FDS; the child's start hooks
have already run.
"""

from __future__ import annotations

from lxcsm import hooks
from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import cgroups
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    assert ctx.boot.channel is not None   # spawn opened it
    ctx.boot.channel.wait_for(SyncMsg.CGROUP_LIMITS)
    config = ctx.request.config
    where = cgroups.placement(config, ctx.request.name)
    limits = [where.limit_of(path) for path in ctx.boot.payload_cgroups]
    if cgroups.unified_only(ctx.hierarchies):
        rules = cgroups.cgroup2_limits(config, devices=True)
        if rules:
            from lxcsm.engine.linux import cgroup_devices  # only configs with cgroup2 device rules pay for it
            devices = cgroup_devices.DeviceList()
            for file, setting in rules:
                try:
                    devices.add(cgroup_devices.parse_rule(file, setting.value))
                except (ValueError, OSError) as err:
                    raise StateError(f"{setting.file}:{setting.line}: {setting.key}: {err}") from None
            (unified,) = limits
            count = cgroup_devices.apply(devices, unified)
            ctx.log.trace("device program attached", cgroup=unified, instructions=count,
                          default="allow" if devices.default_allow else "deny", rules=len(devices.effective()))
    else:
        for path, value in cgroups.write_limits(config, ctx.hierarchies, limits, devices=True):
            ctx.log.trace("cgroup limit set", file=path, value=value)
    hooks.run(config, "start-host", ctx.log, serve=ctx.command_server)
    return "limits_applied"


def plan(request: StartRequest) -> list[str]:
    v1 = [f"v1: write {setting.value} to the payload's {file}"
          for file, setting in request.config.cgroup_limits(devices=True)]
    v2 = [f"{setting.key} = {setting.value}" for _file, setting in cgroups.cgroup2_limits(request.config, True)]
    if v2:
        v2 = [f"cgroup2 only: load and attach an eBPF device program for: {'; '.join(v2)}"]
    start_host = [f"run lxc.hook.start-host: {s.value}" for _key, s in hooks.configured(request.config, "start-host")]
    return ["wait for CGROUP_LIMITS", *v1, *v2, *start_host]
