"""write_id_maps (monitor) - the child's user namespace gets its id maps; then STARTUP.

Replaces the lxc_map_ids() call and the cgroup chown of LXC's lxc_spawn()
(conf.c, cgroups/cgfsng.c), which LXC makes between the clone and the
START_SYNC_STARTUP barrier.  Entered only with lxc.idmap: spawn cloned the
child into a new user namespace and left it waiting for STARTUP.

Afterwards the kernel sees:
* /proc/PID/uid_map and /proc/PID/gid_map of the child holding the
  lxc.idmap lines of their kind, each file written once, whole, by the
  monitor as root on the host (so no newuidmap helper is needed, and
  /proc/PID/setgroups stays "allow", as LXC leaves it for a root caller).
  Started by an ordinary user, the maps are written by newuidmap and
  newgidmap, which check them against /etc/subuid and /etc/subgid, as LXC's
  lxc_map_ids() has them written;
  The child's ids are still the host's root, which its namespace does not
  map: it shows as the overflow id (65534) inside until become_userns_root
  switches it to 0, that is to the host id lxc.idmap gives the container's
  root;
* every payload cgroup directory group-owned by the host gid the container's
  root gid maps to, mode 0775, and its cgroup.procs (v1: also tasks; cgroup2:
  the files /sys/kernel/cgroup/delegate lists) likewise, mode 0664, their
  owner left as the host's root - what LXC's cgfsng chown gives the
  container: its root may move processes between its cgroups and manage a
  cgroup2 subtree below them (started by an ordinary user: owned by that
  user, chowned from a user namespace of its own, as LXC's userns_exec_1();
  a failure there is only a warning, as in LXC).  Nothing needs undoing: the
  maps end with the namespace, the ownership with the cgroups, which stopping
  removes;
* the child woken with STARTUP, which to it now also means "your ids are
  mapped".
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.linux import idmap
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    config, boot = ctx.request.config, ctx.boot
    unprivileged = os.geteuid() != 0
    for kind in ("u", "g"):
        ranges = [m[1:] for m in config.id_maps() if m.kind == kind]
        text = idmap.map_text(ranges)
        helper = idmap.find_helper(kind) if unprivileged else None
        try:
            if helper is not None:
                idmap.write_map_with_helper(boot.init_pid, kind, ranges, helper)
            elif unprivileged:   # preflight found it: it was removed since
                raise OSError(f"{idmap.HELPERS[kind]} is not installed")
            else:
                idmap.write_map(boot.init_pid, kind, text)
        except OSError as err:   # the map as a whole: name every line it is made of
            lines = ", ".join(f"{s.file}:{s.line}" for _key, s in config.in_effect("lxc.idmap")
                              if s.value.split()[0] == kind)
            raise StateError(f"the kernel refused the {kind}id map of lxc.idmap ({lines}): {describe(err)}") from err
        ctx.log.trace("id map written", file=f"/proc/{boot.init_pid}/{kind}id_map",
                      map=text.strip().replace("\n", ", "), writer=helper or "monitor")
    group = config.container_root_id("g")
    if group is None:   # preflight refuses such a config; never chown to a guess
        raise StateError("lxc.idmap maps no host gid to the container's gid 0")
    if unprivileged:
        targets = [(path, h.version) for h, path in zip(ctx.hierarchies, boot.payload_cgroups, strict=True)]
        try:
            idmap.delegate_cgroup_unprivileged(targets, config.container_root_id("u") or 0, group)
        except OSError as err:   # LXC only logs this: the container loses the use of its cgroups
            ctx.log.warn("cgroups not handed to the container's root", error=describe(err))
        else:
            ctx.log.trace("cgroup delegated", path=" ".join(p for p, _v in targets), group=group)
    else:
        for hierarchy, path in zip(ctx.hierarchies, boot.payload_cgroups, strict=True):
            files = idmap.delegate_cgroup(path, hierarchy.version, 0, group)
            ctx.log.trace("cgroup delegated", path=path, group=group, files=" ".join(files))
    assert boot.channel is not None   # spawn opened it
    boot.channel.wake(SyncMsg.STARTUP)
    return "child_spawned"


def plan(request: StartRequest) -> list[str]:
    config = request.config
    if not config.id_maps():
        return ["(not entered: no lxc.idmap, the container shares the host's user namespace)"]
    group = config.container_root_id("g")
    if os.geteuid() != 0:   # an ordinary user's start
        return [*(f"{idmap.HELPERS[kind]} CHILD "
                  f"{' '.join(str(n) for m in config.id_maps() if m.kind == kind for n in m[1:])}"
                  for kind in ("u", "g")),
                f"from a user namespace mapping {config.container_root_id('u')}:{group} and you: chown every "
                f"payload cgroup to you:{group} (0775), and its cgroup.procs (cgroup2: the files of "
                "/sys/kernel/cgroup/delegate) (0664)",
                "send STARTUP"]
    return [*(f"write '{idmap.map_text(m[1:] for m in config.id_maps() if m.kind == kind).strip()}'"
              f" to /proc/CHILD/{kind}id_map" for kind in ("u", "g")),
            f"chown every payload cgroup to 0:{group} (0775), and its "
            "cgroup.procs (v1: tasks; cgroup2: the files of /sys/kernel/cgroup/delegate) (0664)",
            "send STARTUP"]
