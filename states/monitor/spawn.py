"""spawn (monitor) - the container's first process is created in its namespaces.

Replaces the first half of LXC's lxc_spawn() (start.c) and lxc_clone().

Afterwards the kernel sees:
* ``lxc.payload.NAME`` in every cgroup hierarchy, where monitor_cgroup put
  ``lxc.monitor.NAME`` (lxc.cgroup.dir.container and .container.inner place it
  otherwise), with the limits written into it, but the device rules (see
  sync_cgroup_limits): lxc.cgroup.* on a host with v1 controllers,
  lxc.cgroup2.* on a cgroup2-only one - after enabling the controllers down to
  it there - the other layout's keys ignored with a warning, as LXC does;
* a new process, created by one clone3() call in new mount, pid, uts, ipc and
  network namespaces (less what lxc.namespace.keep keeps and what a
  ``lxc.net.0.type = none`` shares) - with lxc.idmap also in a new user
  namespace, which owns the others, and then without the network namespace,
  which the child unshares itself once it is root in its user namespace
  (become_userns_root, as LXC) - started directly inside the cgroup2
  payload directory (CLONE_INTO_CGROUP), with a pidfd for it held by the
  monitor (CLONE_PIDFD) so its pid cannot be recycled under us;
* that process moved into the payload cgroup of every v1 hierarchy, then
  woken with STARTUP.  It has not changed anything yet: it waited for
  STARTUP so that everything it creates from now on is accounted to the
  container's cgroups.  A child in a user namespace is not woken here: its
  id maps must be written first, and write_id_maps wakes it;
* with lxc.namespace.share.NAME (lxc-start --share-NAME), for net, ipc, uts,
  pid and cgroup: no new namespace of that kind - the child is made in the
  one of the given process, or of the given container's init (asked for
  over its command socket, in the same LXCPATH), or the namespace file
  given - as LXC's lxc_inherit_namespaces() and do_share_ns(): the monitor
  opens a pidfd (or the file) for each, setns(2)s into them right before
  clone3 and back into its own right after, so only the child stays there
  (a joined cgroup namespace the child leaves for its own in configure, as
  LXC 5.0.2's does).  A name that is not running fails here (and before the
  start, in lxcsm start);
* with lxc.sched.core = 1, the child's threads in a core scheduling group of
  their own (prctl PR_SCHED_CORE_CREATE, right after the clone as LXC's
  core_scheduling()): no task outside the container shares a physical core
  with them, and init and its descendants inherit the cookie.  A kernel
  without SMT in use (ENODEV) skips it, as LXC does; one without core
  scheduling at all was refused by preflight, as LXC fails the start;
* with a stop hook configured, the monitor holding the child's namespaces
  open (/proc/PID/ns/*), for the hook to find after init is gone.

A config with a veth has pyroute2 imported here, before the clone, so that
both sides share the one import.

The child unshares its cgroup namespace itself, after STARTUP: only then is
its cgroup the payload one, which its namespace must take as its root.
"""

import errno
import os

from lxcsm import hooks
from lxcsm.engine import log
from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.linux import cgroups, kernel
from lxcsm.engine.protocol import command_client, sync
from lxcsm.engine.start.child import run_child


def clone_flags(config) -> int:
    """Every namespace the container gets, whether clone3 or the child makes it (what
    lxc-attach is told: LXC's ns_clone_flags), but cgroup: the child's own job, see above."""
    flags = 0
    for name in config.namespaces():
        flags |= kernel.NAMESPACE_FLAGS[name]
    return flags


def unshared_by_child(flags: int) -> int:
    """The namespaces of `flags` the child makes itself rather than clone3: the network
    namespace of a container with a user namespace, made once the id maps are written, as
    LXC makes it (see become_userns_root)."""
    if flags & kernel.CLONE_NEWUSER:
        return flags & kernel.CLONE_NEWNET
    return 0


def share_source(lxcpath: str, kind: str, target: str) -> int:
    """An fd to join the `kind` namespace of `target` (lxc.namespace.share.KIND) with setns(2):
    the namespace file itself for a path, else a pidfd of the pid, or of the init of the
    container of that name in `lxcpath` (LXC's lxc_inherit_namespace)."""
    key = f"lxc.namespace.share.{kind}"
    try:
        if target.startswith("/"):
            return os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        if target.isdigit():
            return os.pidfd_open(int(target))
        pidfd = command_client.init_pidfd(lxcpath, target)
    except OSError as err:
        raise StateError(f"{key} = {target}: {err.strerror}") from None
    except command_client.MonitorError as err:
        raise StateError(f"{key} = {target}: {err}") from None
    if pidfd is None or pidfd < 0:
        raise StateError(f"{key} = {target}: container {target} is not running (in {lxcpath})")
    return pidfd


def _join(request, log) -> list[tuple[int, int]]:
    """setns(2) into every shared namespace; (the monitor's own namespace fd, its type) for each,
    to go back with (_leave), in the order they were joined."""
    own: list[tuple[int, int]] = []
    try:
        for kind, target in request.config.namespace_shares().items():
            source = share_source(request.lxcpath, kind, target)
            try:
                own.append((os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC),
                            kernel.NAMESPACE_FLAGS[kind]))
                kernel.setns(source, kernel.NAMESPACE_FLAGS[kind])
            except OSError as err:   # EINVAL: a file, or a namespace of another kind
                why = f"not a {kind} namespace" if err.errno == errno.EINVAL else describe(err)
                raise StateError(f"lxc.namespace.share.{kind} = {target}: cannot join it: {why}") from None
            finally:
                os.close(source)
            log.trace("namespace joined", namespace=kind, of=target)
    except BaseException:
        _leave(own)
        raise
    return own


def _leave(own: list[tuple[int, int]]) -> None:
    """Back into the monitor's own namespaces (the child, cloned meanwhile, stays)."""
    for fd, flag in reversed(own):
        try:
            kernel.setns(fd, flag)
        finally:
            os.close(fd)


def enter(ctx) -> str:
    request, boot = ctx.request, ctx.boot
    where = cgroups.placement(request.config, request.name)
    unified = cgroups.unified_only(ctx.hierarchies)
    cgroup2_fd = None
    for hierarchy in ctx.hierarchies:
        base = hierarchy.base(where.relative)
        limit = cgroups.create(hierarchy, base, where.limit)
        boot.undo.record("cgroup", limit)
        path = cgroups.create(hierarchy, limit, where.inner) if where.inner else limit
        boot.payload_cgroups.append(path)
        if hierarchy.version == 2:
            if unified:
                cgroups.delegate(hierarchy, base, where.container)
                for file, value in cgroups.write_cgroup2_limits(request.config, limit):
                    ctx.log.trace("cgroup limit set", file=file, value=value)
            cgroup2_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    limits = [where.limit_of(path) for path in boot.payload_cgroups]
    for path, value in cgroups.write_limits(request.config, ctx.hierarchies, limits, devices=False):
        ctx.log.trace("cgroup limit set", file=path, value=value)
    ignored = "lxc.cgroup" if unified else "lxc.cgroup2"
    if boot.number == 1 and request.config.in_effect(ignored):
        # As LXC: each layout takes its own keys and ignores the other's.
        ctx.log.warn(f"{ignored}.* ignored on this host", layout="cgroup2 only" if unified else "cgroup v1",
                     keys=" ".join(key for key, _s in request.config.in_effect(ignored)))

    if request.config.netlink_devices():
        # pyroute2 costs ~200 ms to import: once, here, for both sides - the child
        # configures its network devices with it, in setup_network.
        from lxcsm.engine.linux import netlink  # noqa: F401
    flags = clone_flags(request.config)
    monitor_sock, child_sock = sync.socketpair()
    try:
        own = _join(request, ctx.log)
        try:
            pid, pidfd = kernel.clone3(flags & ~unshared_by_child(flags), cgroup2_fd)
        except BaseException:
            _leave(own)
            raise
    except BaseException:
        monitor_sock.close()   # no child: neither end has a reader
        child_sock.close()
        raise
    finally:
        if cgroup2_fd is not None:
            os.close(cgroup2_fd)
    if pid == 0:   # in the shared namespaces: the child does not go back
        monitor_sock.close()
        run_child(request, child_sock, ctx.signal_mask, ctx.seccomp)   # never returns
    boot.undo.record("child", pid, handle=pidfd)   # first: whatever fails next, aborting kills it
    child_sock.close()
    try:
        _leave(own)
    except BaseException:
        monitor_sock.close()   # the child reads its end-of-file
        raise
    boot.init_pid, boot.init_pidfd = pid, pidfd
    ctx.command_server.clone_flags = flags
    ctx.log.trace("cloned", child=pid, flags=hex(flags), into_cgroup2=cgroup2_fd is not None)
    if request.config.get_item("lxc.sched.core") == "1":
        _core_scheduling(pid, ctx.log)

    for hierarchy, path in zip(ctx.hierarchies, boot.payload_cgroups, strict=True):
        if hierarchy.version == 1:
            cgroups.attach(path, pid)
    hooks.expose_pid(pid)
    if hooks.keeps_namespaces(request.config):
        # The stop hooks run after init is gone: hold the namespaces open for them.
        for kind in hooks.STOP_HOOK_NAMESPACES:
            if flags & ~unshared_by_child(flags) & kernel.NAMESPACE_FLAGS[kind]:
                fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                boot.undo.record("kept_fd", fd)
                boot.namespace_fds[kind] = fd

    def replay_child_event(event: dict) -> None:
        event["pid"] = pid   # the child only knows itself as pid 1
        log.replay(ctx.log, event)

    boot.channel = sync.MonitorEnd(monitor_sock, ctx.log.bind(category="sync"), request.sync_timeout,
                                   on_child_log=replay_child_event,
                                   on_child_paused=lambda state: ctx.pause("child", state),
                                   serve=ctx.command_server)
    if flags & kernel.CLONE_NEWUSER:
        return "child_cloned"   # write_id_maps maps its ids, then wakes it
    boot.channel.wake(sync.SyncMsg.STARTUP)
    return "child_spawned"


def _whose(target: str) -> str:
    return (f"the namespace file {target}" if target.startswith("/") else f"pid {target}" if target.isdigit()
            else f"container {target}'s init")


def _source(kind: str, target: str) -> str:
    return target if target.startswith("/") else f"pidfd of {_whose(target)}"


def _core_scheduling(pid: int, log) -> None:
    try:
        kernel.create_core_scheduling_cookie(pid)
    except OSError as err:
        if err.errno != errno.ENODEV:
            raise
        log.info("no core scheduling: the kernel does not use simultaneous multithreading (SMT)")
        return
    log.trace("core scheduling domain created", cookie=kernel.core_scheduling_cookie(pid))


def plan(request) -> list[str]:
    flags = clone_flags(request.config)
    later = unshared_by_child(flags)
    flags &= ~later
    names = "|".join(f"CLONE_NEW{n.upper()}" if n != "mnt" else "CLONE_NEWNS"
                     for n, bit in kernel.NAMESPACE_FLAGS.items() if flags & bit)
    shares = request.config.namespace_shares()
    joined = [f"join the {kind} namespace of {_whose(target)}, not a new one (lxc.namespace.share.{kind}):"
              f" setns({_source(kind, target)}, CLONE_NEW{kind.upper()}) before clone3, back after"
              + (" (configure then unshares one of its own, as LXC 5.0.2's child does)" if kind == "cgroup" else "")
              for kind, target in shares.items()]
    try:
        where = cgroups.placement(request.config, request.name)
    except StateError:
        return ["(not reached: monitor_cgroup fails on the lxc.cgroup.dir* keys)"]
    v1 = [f"v1: write {setting.value} to {where.limit}/{file}"
          for file, setting in request.config.cgroup_limits(devices=False)]
    v2 = [f"cgroup2 only: write {setting.value} to {where.limit}/{file}"
          for file, setting in cgroups.cgroup2_limits(request.config, devices=False)]
    return [f"in every hierarchy: mkdir {where.container} below the same base as the monitor's",
            f"cgroup2 only: enable the base's controllers in cgroup.subtree_control down to {where.container}",
            *v1, *v2, *joined,
            f"clone3({names}|CLONE_PIDFD|CLONE_INTO_CGROUP) into the cgroup2 {where.container}",
            *(["prctl(PR_SCHED_CORE_CREATE) for the child's thread group (lxc.sched.core)"]
              if request.config.get_item("lxc.sched.core") == "1" else []),
            "write the child's pid into cgroup.procs of every v1 lxc.payload directory",
            "(lxc.idmap: write_id_maps sends STARTUP, the child unshares CLONE_NEWNET)" if later
            else "(lxc.idmap: write_id_maps sends STARTUP)" if flags & kernel.CLONE_NEWUSER
            else "send STARTUP"]
