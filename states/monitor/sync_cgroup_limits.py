"""sync_cgroup_limits (monitor) - the child is set up; apply the limits it must not undo.

Replaces the START_SYNC_CGROUP_LIMITS step of LXC's lxc_spawn(), where the
device-controller limits are written: late, so that the child could still
create its /dev nodes, but before init runs.

The child has pivoted into its rootfs when it sends CGROUP_LIMITS.  The
cgroup limits themselves (lxc.cgroup.*, lxc.cgroup2.*) belong to the cgroup
issue and are reported as not supported yet.
"""

from lxcsm.engine.sync import SyncMsg


def enter(ctx) -> str:
    ctx.boot.channel.wait_for(SyncMsg.CGROUP_LIMITS)
    return "limits_applied"


def plan(request) -> list[str]:
    return ["wait for CGROUP_LIMITS", "no cgroup limits are written yet (lxc.cgroup* comes with the cgroup issue)"]
