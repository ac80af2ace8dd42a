"""configure (child) - take our own cgroup namespace, then let the monitor configure us.

Replaces the CLONE_NEWCGROUP unshare and the START_SYNC_CONFIGURE /
START_SYNC_POST_CONFIGURE steps of LXC's do_start().

Afterwards the kernel sees a new cgroup namespace whose root is the payload
cgroup (so /proc/self/cgroup inside reads "/"): it must be unshared here,
after STARTUP, because a cgroup namespace takes as its root the cgroup the
process is in at the moment of the unshare.  Then the child blocks until
the monitor has done the host side (network) and answers POST_CONFIGURE.

With lxc.time.offset.boot or lxc.time.offset.monotonic, the child then also
unshares a time namespace, writes the offsets to /proc/self/timens_offsets
(only possible before any process is in it) and enters it through
/proc/self/ns/time_for_children, as LXC's do_start() does right after its
cgroup unshare: init's CLOCK_BOOTTIME and CLOCK_MONOTONIC (uptime, and
every timer set on them) run that much ahead of the host's, or behind.  As
LXC, a kernel without time namespaces (EINVAL) leaves the clocks alone.

A cgroup namespace joined with lxc.namespace.share.cgroup (spawn cloned the
child in it) is left for a new one here all the same, as LXC 5.0.2 does:
sharing any namespace makes its child unshare CLONE_NEWCGROUP
(resolve_cgroup_clone_flags in lxc_spawn), so its init, too, ends up in a
cgroup namespace of its own, rooted at its payload cgroup.
"""

from __future__ import annotations

import errno
import os
import time

from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    if "cgroup" not in ctx.request.config.namespace_keep:
        kernel.unshare(kernel.CLONE_NEWCGROUP)
        ctx.log.trace("unshared", namespace="cgroup")
    offsets = time_offsets(ctx.request.config)
    if offsets:
        _enter_time_namespace(offsets, ctx.log)
    ctx.channel.barrier(SyncMsg.CONFIGURE, SyncMsg.POST_CONFIGURE)
    # With idmap= on the rootfs or a mount entry the monitor sends them next, idmapped
    # (sync_idmapped_mounts).
    return "rootfs_to_receive" if ctx.request.config.idmaps_mounts() else "configured"


# lxc.time.offset.* as LXC's parser reads them: hours, minutes or seconds are whole seconds,
# the rest nanoseconds; LXC writes a clock's seconds when it has any, else its nanoseconds.
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
_UNIT_NANOSECONDS = {"ms": 1_000_000, "us": 1_000, "ns": 1}
_CLOCKS = (("lxc.time.offset.boot", time.CLOCK_BOOTTIME), ("lxc.time.offset.monotonic", time.CLOCK_MONOTONIC))


def time_offsets(config) -> list[tuple[int, int, int]]:
    """(clock id, seconds, nanoseconds) for each clock with a non-zero offset."""
    offsets = []
    for key, clock in _CLOCKS:
        value = (config.get_item(key) or "").strip()
        unit = value.lstrip("-0123456789")   # the loader checked the form: INTEGER [blanks] UNIT
        if not unit:
            continue
        number, unit = int(value[:len(value) - len(unit)]), unit.strip()
        seconds = number * _UNIT_SECONDS.get(unit, 0)
        nanoseconds = number * _UNIT_NANOSECONDS.get(unit, 0)
        if seconds or nanoseconds:
            offsets.append((clock, seconds, nanoseconds))
    return offsets


def _enter_time_namespace(offsets, log) -> None:
    try:
        kernel.unshare(kernel.CLONE_NEWTIME)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        log.info("kernel has no time namespaces: offsets not applied")
        return
    for clock, seconds, nanoseconds in offsets:
        with open("/proc/self/timens_offsets", "w") as timens_offsets:
            timens_offsets.write(f"{clock} {seconds} {nanoseconds}")
    namespace = os.open("/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.setns(namespace, kernel.CLONE_NEWTIME)
    finally:
        os.close(namespace)
    log.trace("unshared", namespace="time", offsets=" ".join(f"{c}:{s}s{n}ns" for c, s, n in offsets))


def plan(request: StartRequest) -> list[str]:
    steps = [] if "cgroup" in request.config.namespace_keep else ["unshare(CLONE_NEWCGROUP)"]
    offsets = time_offsets(request.config)
    if offsets:
        steps += ["unshare(CLONE_NEWTIME); write " + ", ".join(f"'{c} {s} {n}'" for c, s, n in offsets)
                  + " to /proc/self/timens_offsets; setns(/proc/self/ns/time_for_children)"]
    return steps + ["send CONFIGURE", "wait for POST_CONFIGURE"]
