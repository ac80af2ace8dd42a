"""cgroups: one directory per hierarchy, for the monitor and for the container.

Replaces LXC's cgfsng driver for what a start needs: find every mounted
hierarchy (cgroup v1 controllers and the cgroup2 tree, side by side on a
hybrid host), create ``lxc.monitor.NAME`` and ``lxc.payload.NAME`` in each
(LXC's names, so LXC's tools find them), move a process in, and remove them
again.  New directories are made below the cgroup the monitor was started in,
in each hierarchy (LXC's lxc.cgroup.relative behaviour), so the host's
cgroup layout above us is never touched.  Limits come with their own issue.
"""

from __future__ import annotations

import errno
import os
import time
from collections import namedtuple


class Hierarchy(namedtuple("Hierarchy", (
        "mountpoint",   # str
        "controllers",  # tuple[str, ...]: ("memory",), ("name=systemd",); () for cgroup2
        "version",      # int: 1 or 2
        "home",         # str: the directory of the cgroup we started in
    ))):
    __slots__ = ()

    @property
    def label(self) -> str:
        return ",".join(self.controllers) or "unified"


def hierarchies() -> list[Hierarchy]:
    """Every cgroup hierarchy this process is in, from /proc/self/{cgroup,mountinfo}."""
    mounts = []   # (fstype, super options, mountpoint, root of the mount inside the hierarchy)
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, tail = line.partition(" - ")
            fstype, _source, options = tail.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                root, mountpoint = fields.split()[3:5]
                mounts.append((fstype, set(options.split(",")), mountpoint, root))
    found = []
    with open("/proc/self/cgroup") as cgroup:
        for line in cgroup:
            _id, names, path = line.rstrip("\n").split(":", 2)
            controllers = tuple(names.split(",")) if names else ()
            mount = next((m for m in mounts
                          if (m[0] == "cgroup2") == (not controllers) and m[1].issuperset(controllers)), None)
            if mount is None:
                continue   # a hierarchy that is not mounted here cannot be used
            _fstype, _options, mountpoint, root = mount
            relative = path.removeprefix(root) if root != "/" else path
            found.append(Hierarchy(mountpoint, controllers, 1 if controllers else 2,
                                   os.path.normpath(f"{mountpoint}/{relative}")))
    return found


def create(hierarchy: Hierarchy, name: str) -> str:
    """Create `name` below our home cgroup; a stale empty one (a crashed start's) is replaced."""
    path = os.path.join(hierarchy.home, name)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if members(path):
            raise OSError(errno.EBUSY, "cgroup is in use by running processes", path) from None
        remove(path)
        os.mkdir(path, 0o755)
    if "cpuset" in hierarchy.controllers:
        # A v1 cpuset cgroup starts with no cpus and no memory nodes, and
        # refuses processes until both are set: copy them from the parent.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(hierarchy.home, knob)) as parent:
                value = parent.read().strip()
            with open(os.path.join(path, knob), "w") as child:
                child.write(value)
    return path


def write_limits(config, hierarchies: list[Hierarchy], payload_paths: list[str], devices: bool):
    """Write the container's lxc.cgroup.CONTROLLER.FILE = VALUE settings, in config order,
    into its payload cgroups: the devices ones, or all the others.  Yields (path, value).

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


def attach(path: str, pid: int) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as procs:
        procs.write(str(pid))


def members(path: str) -> list[int]:
    with open(os.path.join(path, "cgroup.procs")) as procs:
        return [int(pid) for pid in procs.read().split()]


def remove(path: str, patience: float = 2.0) -> None:
    """rmdir a cgroup and the cgroups the container made below it (a cgroup mount lets it),
    deepest first, waiting briefly while the kernel finishes releasing dead members."""
    if os.path.isdir(path):
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
