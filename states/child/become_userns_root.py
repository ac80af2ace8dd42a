"""become_userns_root (child) - become root of our user namespace, then take our network namespace.

Replaces the steps of LXC's do_start() between the START_SYNC_STARTUP wait
and START_SYNC_CONFIGURE for a container with lxc.idmap: the CLONE_NEWNET
unshare, lxc_drop_groups() and lxc_switch_uid_gid() to the namespace's
root, PR_SET_DUMPABLE and the parent death signal armed again.

Entered only with lxc.idmap, once STARTUP said the monitor wrote our id maps
(write_id_maps).  Afterwards the kernel sees:
* with a network namespace of its own, the child in a new one, made only
  now, after the maps exist, as LXC makes it (LXC moved the unshare here for
  kernels that fixed a namespace's sysfs owners when it was made - before any
  map, the overflow id; this one looks them up later, and both orders give
  the container's root): owned by the user namespace;
* no supplementary groups, then gid 0 and uid 0 in the namespace - on the
  host the ids lxc.idmap maps 0 to (100000 for ``u 0 100000 65536``).  The
  capabilities the clone gave the child over its user namespace (all of
  them, and none over the host) are kept: changing to uid 0 clears none;
* the process dumpable again (a uid change clears it, and a non-dumpable
  process's /proc/self files belong to the host's root, which the
  namespace does not map), and PR_SET_PDEATHSIG armed again (a uid change
  clears it too): the child still dies with the monitor (one that died in
  between is seen at the next sync wait, CONFIGURE's, as end-of-file).
"""

from __future__ import annotations

import os
import signal

from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    config = ctx.request.config
    if config.has_console() or config.has_devpts():
        # Once uid 0 here, the child is the host's uid 100000 or so to the filesystem, and the
        # interpreter's own files may be the host root's alone (a Python under /root): what a
        # later state would import lazily is imported now (setup_ttys' terminal module).
        from lxcsm.engine.linux import terminal  # noqa: F401
    if "net" in config.namespaces():
        kernel.unshare(kernel.CLONE_NEWNET)
        ctx.log.trace("unshared", namespace="net")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    kernel.set_dumpable()
    kernel.set_pdeathsig(signal.SIGKILL)
    ctx.log.trace("switched to the user namespace's root", uid=0, gid=0,
                  host_uid=config.container_root_id("u"), host_gid=config.container_root_id("g"))
    return "root_in_user_namespace"


def plan(request: StartRequest) -> list[str]:
    config = request.config
    if not config.id_maps():
        return ["(not entered: no lxc.idmap)"]
    return [*(["unshare(CLONE_NEWNET)"] if "net" in config.namespaces() else []),
            "setgroups(0, NULL)", "setresgid(0, 0, 0)", "setresuid(0, 0, 0)",
            f"(uid 0 is the host's {config.container_root_id('u')}, gid 0 the host's "
            f"{config.container_root_id('g')})",
            "prctl(PR_SET_DUMPABLE, 1)", "prctl(PR_SET_PDEATHSIG, SIGKILL)"]
