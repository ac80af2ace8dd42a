"""setup_mounts (child) - lxc.mount.auto, then lxc.mount.fstab and lxc.mount.entry.

Replaces LXC's lxc_mount_auto_mounts(), setup_mount() and
setup_mount_entries() (conf.c).

Afterwards the kernel sees, inside the rootfs and only in the container's
mount namespace:
* proc (proc:mixed: /proc/sys read-only but for /proc/sys/net, which belongs
  to the container's own network namespace, and /proc/sysrq-trigger
  read-only; proc:rw: all writable);
* sysfs (sys:ro read-only; sys:mixed read-only but for
  /sys/devices/virtual/net; sys:rw writable);
* each mount entry, in LXC's order (the fstab file's lines, then the
  lxc.mount.entry lines), with its targets created when create=dir|file asks
  for it, bind mounts remounted to honour ro/nosuid/..., and `optional`
  entries skipped when they fail.  Targets are resolved inside the rootfs, so
  a symlink in the rootfs cannot send a mount onto the host.

A failing entry names its file and line.  Then the lxc.hook.mount hooks run,
and with lxc.autodev on the lxc.hook.autodev hooks, as in LXC: after the
mounts, before pivot_root (LXC_ROOTFS_MOUNT is where the rootfs is).
"""

import os

from lxcsm import hooks
from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.linux import cgroups, kernel
from lxcsm.engine.linux.mount_options import parse_mount_options
from lxcsm.engine.linux.paths import container_path, in_rootfs


class MountEntryError(StateError):
    """A mount entry failed; the message names its file and line."""


_SAFE = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC


def _bind_over(path: str, readonly: bool) -> None:
    """Bind `path` onto itself and set its own read-only flag (if the kernel has that file)."""
    if not os.path.exists(path):
        return   # e.g. /proc/sysrq-trigger on kernels built without magic SysRq
    kernel.mount(path, path, None, kernel.MS_BIND)
    kernel.mount(None, path, None, kernel.MS_REMOUNT | kernel.MS_BIND | _SAFE | (kernel.MS_RDONLY if readonly else 0))


def mount_proc(rootfs: str, mode: str) -> None:
    proc = in_rootfs(rootfs, "/proc")
    os.makedirs(proc, exist_ok=True)
    kernel.mount("proc", proc, "proc", _SAFE)
    if mode == "mixed":
        _bind_over(f"{proc}/sys", readonly=True)
        _bind_over(f"{proc}/sys/net", readonly=False)
        _bind_over(f"{proc}/sysrq-trigger", readonly=True)


def mount_sys(rootfs: str, mode: str) -> None:
    sys_dir = in_rootfs(rootfs, "/sys")
    os.makedirs(sys_dir, exist_ok=True)
    kernel.mount("sysfs", sys_dir, "sysfs", _SAFE | (0 if mode == "rw" else kernel.MS_RDONLY))
    if mode == "mixed":
        _bind_over(f"{sys_dir}/devices/virtual/net", readonly=False)


def cgroup_mode(token: str, config) -> str:
    """"ro", "rw" or "mixed" for an lxc.mount.auto cgroup token.  A bare "cgroup" is rw for a
    container that keeps CAP_SYS_ADMIN and mixed for one that does not, as LXC decides."""
    words = token.split(":")
    for mode in ("ro", "rw", "mixed"):
        if mode in words:
            return mode
    dropped = config.dropped_capabilities(kernel.last_capability())
    return "mixed" if kernel.CAPABILITIES["sys_admin"] in dropped else "rw"


def mount_cgroups(rootfs: str, token: str, mode: str) -> None:
    """The container's cgroups on /sys/fs/cgroup, as LXC's cgfsng_mount() does under a cgroup
    namespace: each hierarchy's mount shows only the container's own cgroup as its root.
    "ro" makes everything read-only, "mixed" only the tmpfs that holds the mounts."""
    base = in_rootfs(rootfs, "/sys/fs/cgroup")
    os.makedirs(base, exist_ok=True)
    readonly = kernel.MS_RDONLY if mode == "ro" else 0
    if token.startswith("cgroup2"):   # the unified hierarchy alone, on /sys/fs/cgroup itself
        kernel.mount("cgroup2", base, "cgroup2", _SAFE | readonly)
        return
    kernel.mount("cgroup", base, "tmpfs", _SAFE, "size=10240k,mode=755")
    for hierarchy in cgroups.hierarchies():
        target = os.path.join(base, os.path.basename(hierarchy.mountpoint))
        os.makedirs(target, exist_ok=True)
        if hierarchy.version == 2:
            kernel.mount("cgroup2", target, "cgroup2", _SAFE | readonly)
        else:
            named = [c for c in hierarchy.controllers if c.startswith("name=")]
            options = ",".join(["none", *named] if named else hierarchy.controllers)
            kernel.mount("cgroup", target, "cgroup", _SAFE | readonly, options)
    if mode != "rw":
        kernel.mount(None, base, None, kernel.MS_REMOUNT | _SAFE | kernel.MS_RDONLY, "size=10240k,mode=755")


def mount_entry(rootfs: str, rootfs_path: str, entry) -> None:
    options = parse_mount_options(entry.options)
    target = in_rootfs(rootfs, container_path(rootfs_path, entry.target))
    source = in_rootfs(rootfs, entry.source) if options.relative else entry.source
    if options.create == "dir":
        os.makedirs(target, exist_ok=True)
    elif options.create == "file" and not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    if options.bind:
        kernel.mount(source, target, None, options.flags & (kernel.MS_BIND | kernel.MS_REC))
        extra = options.flags & ~(kernel.MS_BIND | kernel.MS_REC)
        if extra:
            kernel.mount(None, target, None, kernel.MS_REMOUNT | kernel.MS_BIND | extra)
    else:
        kernel.mount(source, target, entry.fstype, options.flags, options.data or None)
    if options.propagation:
        kernel.mount(None, target, None, options.propagation)


def enter(ctx) -> str:
    config = ctx.request.config
    if config.mount_proc:
        mount_proc(ctx.rootfs, config.mount_proc)
        ctx.log.trace("mounted", what="proc", mode=config.mount_proc)
    if config.mount_sys:
        mount_sys(ctx.rootfs, config.mount_sys)
        ctx.log.trace("mounted", what="sys", mode=config.mount_sys)
    for entry in config.mount_entries:
        try:
            mount_entry(ctx.rootfs, config.rootfs_path, entry)
        except OSError as err:
            where = f"{entry.origin.file}:{entry.origin.line}: {entry.origin.key}"
            if parse_mount_options(entry.options).optional:
                ctx.log.info("optional mount skipped", entry=where, error=describe(err))
                continue
            raise MountEntryError(f"{where}: mounting {entry.source} on {entry.target}: {describe(err)}") from None
        ctx.log.trace("mounted", source=entry.source, target=entry.target, fstype=entry.fstype,
                      options=entry.options)
    if config.mount_cgroup:   # after the entries, as LXC mounts them
        mode = cgroup_mode(config.mount_cgroup, config)
        mount_cgroups(ctx.rootfs, config.mount_cgroup, mode)
        ctx.log.trace("mounted", what="cgroup", token=config.mount_cgroup, mode=mode)
    hooks.run(config, "mount", ctx.log)
    if config.autodev:
        hooks.run(config, "autodev", ctx.log)
    return "mounts_done"


def plan(request) -> list[str]:
    config = request.config
    steps = []
    if config.mount_proc:
        steps.append(f"mount proc on /proc ({config.mount_proc})")
    if config.mount_sys:
        steps.append(f"mount sysfs on /sys ({config.mount_sys})")
    for entry in config.mount_entries:
        steps.append(f"mount {entry.source} on {container_path(config.rootfs_path, entry.target)} "
                     f"type {entry.fstype} ({entry.options})  [{entry.origin.file}:{entry.origin.line}]")
    if config.mount_cgroup:
        steps.append(f"mount the container's cgroups on /sys/fs/cgroup ({config.mount_cgroup}: "
                     f"{cgroup_mode(config.mount_cgroup, config)})")
    for kind in ("mount", "autodev") if config.autodev else ("mount",):
        steps += [f"run lxc.hook.{kind}: {s.value}" for _key, s in hooks.configured(config, kind)]
    return steps or ["nothing to mount"]
