"""cgroups: one directory per hierarchy, for the monitor and for the container.

Replaces LXC's cgfsng driver for what a start needs: find every mounted
hierarchy (cgroup v1 controllers and the cgroup2 tree side by side on a hybrid
host, or cgroup2 alone on a unified one), create ``lxc.monitor.NAME`` and
``lxc.payload.NAME`` in each (LXC's names, so LXC's tools find them), enable
the controllers cgroup2 must hand down, write the limits, move a process in,
and remove them again.

Where (LXC's rules, cgfsng.c): below each hierarchy's *base*, which for root is
the cgroup PID 1 is in, less a trailing ``init.scope`` (on a systemd host the
root cgroup), and with ``lxc.cgroup.relative = 1`` (or not root) the cgroup the
monitor was started in.  ``lxc.cgroup.dir = D`` puts both below D;
``lxc.cgroup.dir.monitor`` / ``lxc.cgroup.dir.container`` name the two
directories outright, and ``lxc.cgroup.dir.container.inner = I`` puts the
container's processes one level further down, in CONTAINER/I, while its limits
stay on CONTAINER (so the container, rooted at I by its cgroup namespace, cannot
lift them).  Intermediate directories are made as needed and left in place.

On a unified host (cgroup2 only) the controllers listed in the base's
cgroup.controllers are enabled in cgroup.subtree_control of the base and of
every directory on the way down, never in the last one: cgroup2 lets a cgroup
either hold processes or hand controllers to its children, not both.
"""

from __future__ import annotations

import errno
import os
import time
from collections import namedtuple

from lxcsm.engine.errors import StateError

INIT_SCOPE = "init.scope"
PIVOT = "lxc.pivot"
KILL_PATIENCE = 10.0   # seconds the processes cgroup.kill ended may take to exit


class Hierarchy(namedtuple("Hierarchy", (
        "mountpoint",   # str
        "controllers",  # tuple[str, ...]: ("memory",), ("name=systemd",); () for cgroup2
        "version",      # int: 1 or 2
        "home",         # str: the base directory LXC creates below (see the module's docstring)
        "own",          # str | None: the directory of the cgroup we are in (None: home)
    ), defaults=(None,))):
    __slots__ = ()

    @property
    def label(self) -> str:
        return ",".join(self.controllers) or "unified"

    @property
    def started_in(self) -> str:
        return self.own or self.home

    def base(self, relative: bool) -> str:
        return self.started_in if relative else self.home


def _mounts() -> list[tuple[str, set[str], str, str]]:
    """(fstype, super options, mountpoint, root of the mount inside the hierarchy) of each cgroup mount."""
    mounts = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, tail = line.partition(" - ")
            fstype, _source, options = tail.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                root, mountpoint = fields.split()[3:5]
                mounts.append((fstype, set(options.split(",")), mountpoint, root))
    return mounts


def _memberships(pid: str) -> dict[tuple[str, ...], str]:
    """controllers -> cgroup path of a process, from /proc/PID/cgroup (() is cgroup2)."""
    found = {}
    with open(f"/proc/{pid}/cgroup") as cgroup:
        for line in cgroup:
            _id, names, path = line.rstrip("\n").split(":", 2)
            found[tuple(names.split(",")) if names else ()] = path
    return found


def hierarchies() -> list[Hierarchy]:
    """Every cgroup hierarchy this process is in, from /proc/self/{cgroup,mountinfo}."""
    mounts = _mounts()
    ours = _memberships("self")
    # Root's containers escape the cgroup they were started from, as LXC's do: their base is
    # PID 1's cgroup (unreadable, e.g. in a user namespace: our own).
    try:
        inits = _memberships("1") if os.geteuid() == 0 else ours
    except OSError:
        inits = ours
    found = []
    for controllers, path in ours.items():
        mount = next((m for m in mounts
                      if (m[0] == "cgroup2") == (not controllers) and m[1].issuperset(controllers)), None)
        if mount is None:
            continue   # a hierarchy that is not mounted here cannot be used
        _fstype, _options, mountpoint, root = mount
        init_path = inits.get(controllers, path)
        if init_path == f"/{INIT_SCOPE}" or init_path.endswith(f"/{INIT_SCOPE}"):
            init_path = init_path[:-len(INIT_SCOPE)] or "/"
        found.append(Hierarchy(mountpoint, controllers, 1 if controllers else 2,
                               _inside(mountpoint, root, init_path), _inside(mountpoint, root, path)))
    return found


def _inside(mountpoint: str, root: str, cgroup: str) -> str:
    """The directory of `cgroup` (as /proc/PID/cgroup names it) under a mount of its hierarchy."""
    relative = cgroup.removeprefix(root) if root != "/" else cgroup
    return os.path.normpath(f"{mountpoint}/{relative}")


def unified_only(found: list[Hierarchy]) -> bool:
    """Whether the host has cgroup2 alone (LXC's "pure unified" layout): then lxc.cgroup2.*
    applies and lxc.cgroup.* is ignored; on a hybrid or v1 host the other way round."""
    return bool(found) and all(h.version == 2 for h in found)


class Placement(namedtuple("Placement", (
        "relative",  # bool: below the cgroup we started in, not PID 1's
        "monitor",   # str: the monitor's cgroup, relative to the base
        "limit",     # str: the container's cgroup, where its limits go
        "inner",     # str | None: lxc.cgroup.dir.container.inner, where its processes go
        "pivot",     # str | None: where the monitor goes before its cgroup is removed
    ))):
    """Where one container's cgroups go, in every hierarchy."""

    __slots__ = ()

    @property
    def container(self) -> str:
        return os.path.join(self.limit, self.inner) if self.inner else self.limit

    def path(self, hierarchy: Hierarchy, which: str) -> str:
        return os.path.join(hierarchy.base(self.relative), getattr(self, which))

    def limit_of(self, container_path: str) -> str:
        """The limit cgroup of a container cgroup's path (the same without an inner one)."""
        return os.path.dirname(container_path) if self.inner else container_path

    def pivot_path(self, hierarchy: Hierarchy) -> str:
        """Where the monitor returns to: lxc.pivot below lxc.cgroup.dir.monitor.pivot (LXC's
        place, made if needed and left), or else the cgroup it was started in."""
        if self.pivot is None:
            return hierarchy.started_in
        return os.path.join(hierarchy.base(self.relative), self.pivot)


def placement(config, name: str) -> Placement:
    """The Placement the config's lxc.cgroup.dir* and lxc.cgroup.relative keys ask for;
    StateError (naming file, line and key) for a combination LXC refuses."""
    def setting(key: str):
        values = config.in_effect(key)
        return values[-1][1] if values else None

    shared, monitor, container, inner, pivot = (setting(k) for k in (
        "lxc.cgroup.dir", "lxc.cgroup.dir.monitor", "lxc.cgroup.dir.container",
        "lxc.cgroup.dir.container.inner", "lxc.cgroup.dir.monitor.pivot"))
    relative = config.get_item("lxc.cgroup.relative") == "1"
    pivot_dir = pivot.value if pivot else (shared.value if shared else None)
    explicit = [s for s in (monitor, container, inner) if s is not None]
    if not explicit:
        prefix = shared.value if shared else ""
        return Placement(relative, os.path.join(prefix, f"lxc.monitor.{name}"),
                         os.path.join(prefix, f"lxc.payload.{name}"), None,
                         os.path.join(pivot_dir, PIVOT) if pivot_dir else None)
    first = explicit[0]
    where = f"{first.file}:{first.line}: {first.key}"
    if shared is not None:
        raise StateError(f"{where}: lxc.cgroup.dir cannot be combined with lxc.cgroup.dir.monitor, "
                         "lxc.cgroup.dir.container or lxc.cgroup.dir.container.inner (as in LXC)")
    if monitor is None or container is None:
        raise StateError(f"{where}: lxc.cgroup.dir.monitor and lxc.cgroup.dir.container must both be set "
                         "(as in LXC)")
    return Placement(relative, monitor.value, container.value, inner.value if inner else None,
                     os.path.join(pivot_dir, PIVOT) if pivot_dir else None)


LEAF = "init"   # LXC's name for the leaf its processes leave a delegated cgroup2 scope for


def vacate(hierarchy: Hierarchy) -> Hierarchy:
    """Move every process of the cgroup2 cgroup we started in to a leaf below it, LEAF, and
    return the hierarchy with that leaf as the cgroup we are in.

    cgroup2 hands controllers down only from a cgroup with no process in it, and an
    ordinary user's base is the very cgroup it started in (a delegated scope holding
    `lxcsm start` itself).  LXC's move_and_delegate_unified() empties the scope it makes
    for an unprivileged start the same way; the leaf stays, as LXC leaves it.  A hierarchy
    already vacated (a reboot: the monitor is back in the leaf) is returned as it is."""
    here = hierarchy.started_in
    if here != hierarchy.home or not members(here):
        return hierarchy
    leaf = create(hierarchy, here, LEAF, exist_ok=True)
    for pid in members(here):
        try:
            attach(leaf, pid)
        except ProcessLookupError:
            continue   # it exited meanwhile
    return hierarchy._replace(home=here, own=leaf)


def create(hierarchy: Hierarchy, base: str, relative_path: str, exist_ok: bool = False) -> str:
    """Create `relative_path` below `base`, with the directories on the way; the last one
    must be new, but a stale empty one (a crashed start's) is replaced.  Returns its path."""
    path = base
    parts = [p for p in relative_path.split("/") if p]
    for depth, part in enumerate(parts, start=1):
        parent, path = path, os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if depth < len(parts) or exist_ok:
                continue
            if members(path):
                raise OSError(errno.EBUSY, "cgroup is in use by running processes", path) from None
            remove(path)
            os.mkdir(path, 0o755)
        except OSError as err:
            raise _delegation_error(err, parent) from None
        if "cpuset" in hierarchy.controllers:
            # A v1 cpuset cgroup starts with no cpus and no memory nodes, and
            # refuses processes until both are set: copy them from the parent.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(parent, knob)) as above:
                    value = above.read().strip()
                with open(os.path.join(path, knob), "w") as below:
                    below.write(value)
    return path


SYSTEMD_RUN = "systemd-run --scope -p Delegate=yes -- lxcsm start ..."


def _delegation_error(err: OSError, where: str) -> OSError | StateError:
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StateError(f"cannot create cgroups in {where}: {os.strerror(err.errno)}; this cgroup is not "
                          f"delegated to us - start from one that is, e.g.: {SYSTEMD_RUN}")
    return err


def delegate(hierarchy: Hierarchy, base: str, relative_path: str) -> str:
    """On cgroup2, enable the base's controllers in cgroup.subtree_control of the base and of
    every directory down to (not including) `relative_path`'s last one, as LXC does.
    Returns what was written ("" when there is nothing to enable)."""
    with open(os.path.join(base, "cgroup.controllers")) as available:
        controllers = available.read().split()
    if not controllers:
        return ""
    wanted = " ".join(f"+{c}" for c in controllers)
    path = base
    for part in [p for p in relative_path.split("/") if p]:
        try:
            with open(os.path.join(path, "cgroup.subtree_control"), "w") as subtree:
                subtree.write(wanted)
        except OSError as err:
            raise _subtree_error(err, path, wanted) from None
        path = os.path.join(path, part)
    return wanted


def _subtree_error(err: OSError, path: str, wanted: str) -> StateError | OSError:
    if err.errno == errno.EBUSY:
        holders = members(path)
        return StateError(
            f"cannot enable controllers ({wanted}) in {path}/cgroup.subtree_control: that cgroup holds "
            f"processes ({' '.join(map(str, holders[:5]))}{' ...' if len(holders) > 5 else ''}), and cgroup2 "
            "lets a cgroup hand controllers down only when no process is in it (the no-internal-processes "
            "rule) - drop lxc.cgroup.relative, or start from a cgroup of its own, e.g.: " + SYSTEMD_RUN)
    if err.errno in (errno.EACCES, errno.EPERM):
        return StateError(f"cannot enable controllers in {path}: {os.strerror(err.errno)}; this cgroup is not "
                          f"delegated to us - start from one that is, e.g.: {SYSTEMD_RUN}")
    return OSError(err.errno, f"enabling {wanted}: {err.strerror}", os.path.join(path, "cgroup.subtree_control"))


def write_limits(config, hierarchies: list[Hierarchy], payload_paths: list[str], devices: bool):
    """Write the container's lxc.cgroup.CONTROLLER.FILE = VALUE settings, in config order,
    into its payload (limit) cgroups: the devices ones, or all the others.  Yields (path, value).

    As LXC does, they apply to the v1 hierarchies only, so a host without v1 controllers
    (cgroup2 only) ignores them.  A value the kernel refuses is an OSError that names the
    setting's file, line and key."""
    by_controller = {controller: path for hierarchy, path in zip(hierarchies, payload_paths, strict=True)
                     if hierarchy.version == 1 for controller in hierarchy.controllers}
    for file, setting in config.cgroup_limits(devices):
        controller = file.partition(".")[0]
        if controller not in by_controller:
            continue
        path = os.path.join(by_controller[controller], file)
        setting.write_to(path)
        yield path, setting.value


def cgroup2_limits(config, devices: bool) -> list:
    """(FILE, setting) of each lxc.cgroup2.FILE, in config order: the devices.allow/deny
    rules (a BPF program, see cgroup_devices) or all the others."""
    return [(key.removeprefix("lxc.cgroup2."), setting) for key, setting in config.in_effect("lxc.cgroup2")
            if key.removeprefix("lxc.cgroup2.").startswith("devices.") == devices]


def write_cgroup2_limits(config, limit_path: str):
    """Write lxc.cgroup2.* (but the device rules) into the unified limit cgroup, in config
    order; yields (path, value).  A file the cgroup lacks is a controller not handed down
    to it: the error says so."""
    for file, setting in cgroup2_limits(config, devices=False):
        path = os.path.join(limit_path, file)
        controller = file.partition(".")[0]
        if not os.path.exists(path) and controller not in _controllers(limit_path):
            raise StateError(f"{setting.file}:{setting.line}: {setting.key}: the cgroup2 controller "
                             f"{controller!r} is not enabled for {limit_path} (its parent's "
                             f"cgroup.controllers lacks it: the cgroup we start below is not delegated "
                             f"that controller - e.g. {SYSTEMD_RUN})")
        setting.write_to(path)
        yield path, setting.value


def _controllers(path: str) -> list[str]:
    try:
        with open(os.path.join(path, "cgroup.controllers")) as available:
            return available.read().split()
    except OSError:
        return []


def attach(path: str, pid: int) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as procs:
        procs.write(str(pid))


def own_procs_file() -> str | None:
    """cgroup.procs of the cgroup this process is in, on one mounted hierarchy (cgroup2's when
    it is mounted, so that it is there on every layout); None without any."""
    mounts = _mounts()
    for controllers, path in sorted(_memberships("self").items()):   # () - cgroup2 - sorts first
        mount = next((m for m in mounts
                      if (m[0] == "cgroup2") == (not controllers) and m[1].issuperset(controllers)), None)
        if mount is not None:
            return os.path.join(_inside(mount[2], mount[3], path), "cgroup.procs")
    return None


def begin_grace_period(own_procs: str) -> None:
    """Move this process into the cgroup it is already in (own_procs_file()): nothing moves.

    What it is for is the kernel's side of any move.  Every cgroup migration takes the
    global cgroup_threadgroup_rwsem for writing, and the first writer after a quiet moment
    waits for an RCU grace period (rcu_sync: 5-20 ms on this 2-core VM) before it gets it;
    writers that follow within about a grace period of the last one do not wait.  Called as a
    start begins, in a thread of its own, the wait runs alongside that start's other work
    instead of in front of its monitor's first move (monitor_cgroup).  Errors are ignored: the
    move is only a means, and the start that follows moves its processes itself.
    """
    try:
        fd = os.open(own_procs, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, b"0")
    except OSError:
        pass
    finally:
        os.close(fd)


def members(path: str) -> list[int]:
    with open(os.path.join(path, "cgroup.procs")) as procs:
        return [int(pid) for pid in procs.read().split()]


def kill(path: str) -> bool:
    """SIGKILL every process in the cgroup2 tree at `path` at once (cgroup.kill, Linux 5.14+:
    no pid can be reused or escape by forking meanwhile).  False where there is no cgroup.kill
    (cgroup v1, an older kernel)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as knob:
            knob.write("1")
    except FileNotFoundError:
        return False
    return True


def _populated(path: str) -> bool:
    return any(members(below) for below, _dirs, _files in os.walk(path))


def remove(path: str, patience: float = 2.0) -> None:
    """rmdir a cgroup and the cgroups the container made below it (a cgroup mount lets it),
    deepest first, waiting briefly while the kernel finishes releasing dead members.
    Processes still in it (a container that shares the host's pid namespace leaves its
    daemons behind) are killed first where cgroup.kill allows - never the caller."""
    if os.path.isdir(path):
        try:
            leftovers = _populated(path)
        except FileNotFoundError:
            leftovers = False
        if leftovers and os.getpid() not in members(path) and kill(path):
            # SIGKILLed processes take a moment to exit (longer on a slow or loaded machine).
            deadline = time.monotonic() + max(patience, KILL_PATIENCE)
            while _populated(path) and time.monotonic() < deadline:
                time.sleep(0.01)
        for below, dirs, _files in os.walk(path, topdown=False):
            for name in dirs:
                _rmdir(os.path.join(below, name), patience)
    _rmdir(path, patience)


def _rmdir(path: str, patience: float) -> None:
    deadline = time.monotonic() + patience
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
