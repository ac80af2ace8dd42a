"""setup_mounts (child) - /dev's tmpfs, lxc.mount.auto, lxc.mount.fstab, lxc.mount.entry.

Replaces LXC's mount_autodev(), lxc_mount_auto_mounts(), setup_mount() and
setup_mount_entries() (conf.c).

Afterwards the kernel sees, inside the rootfs and only in the container's
mount namespace:
* with lxc.autodev on: an empty tmpfs on /dev (mode 0755, holding only the
  directory pts, of lxc.autodev.tmpfs.size bytes, 500000 when unset or 0),
  hiding whatever the rootfs has there; setup_autodev fills it after the
  hooks below, as LXC does;
* proc, nosuid, nodev and noexec (proc:mixed: /proc/sys read-only but for
  /proc/sys/net, which belongs to the container's own network namespace - unless
  the container loses CAP_NET_ADMIN, as LXC decides - and
  /proc/sysrq-trigger read-only - those two read-only binds with no other
  flag, as LXC remounts them; proc:rw: all writable);
* sysfs (sys:ro read-only; sys:mixed read-only but for
  /sys/devices/virtual/net; sys:rw writable - userns.conf's), nosuid, nodev
  and noexec with sys:mixed only, as LXC mounts them;
* each mount entry, in LXC's order (the fstab file's lines, then the
  lxc.mount.entry lines), with its targets created when create=dir|file asks
  for it, bind mounts remounted to honour ro/nosuid/..., and `optional`
  entries skipped when they fail;
* each bind entry with an idmap= option after all the others, as LXC 5.0.2
  attaches them (the lxc.mount.entry lines', then the fstab's): not a bind
  made here but the detached copy of its source the monitor idmapped to the
  user namespace idmap= names (sync_idmapped_mounts), given the entry's ro,
  nosuid, ... and propagation by mount_setattr, then attached on the target,
  which create=dir|file made in the entries' order (mountinfo lists these
  before the other mounts: it goes by when a mount was made, and the monitor
  made them first);
* the container's cgroups on /sys/fs/cgroup (lxc.mount.auto = cgroup*) only
  where LXC 5.0.2 mounts them: inside its own cgroup namespace a container
  that keeps CAP_SYS_ADMIN mounts them itself (systemd does, with its own
  layout) unless the token says :force, or the host has cgroup2 only.

Every target is opened inside the rootfs by the kernel (openat2 with
RESOLVE_IN_ROOT: symlinks followed inside it, ``..`` stopping at its top),
made there relative to its parent's descriptor when missing, and mounted on
through its descriptor: each mount is made detached (fsmount, or open_tree
for a bind) and attached with move_mount, and later changes go through the
new mount's own descriptor.  No path is looked up twice, so a process writing
into the rootfs meanwhile cannot send a mount or a created file onto the host.

A failing entry names its file and line.  Then the lxc.hook.mount hooks run,
as in LXC: after the mounts, before /dev is filled and before pivot_root
(LXC_ROOTFS_MOUNT is where the rootfs is).
"""

import os

from lxcsm import hooks
from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.linux import cgroups, idmapped_mounts, kernel, mounts, paths
from lxcsm.engine.linux.mount_options import parse_mount_options
from lxcsm.engine.linux.paths import container_path, proc_fd


class MountEntryError(StateError):
    """A mount entry failed; the message names its file and line."""


_SAFE = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
DEV_TMPFS_SIZE = 500000   # LXC's default lxc.autodev.tmpfs.size, in bytes (the key is bytes, too)


def dev_tmpfs_options(config) -> str:
    return f"size={int(config.get_item('lxc.autodev.tmpfs.size') or 0) or DEV_TMPFS_SIZE},mode=755"


def _bind_over(filesystem: int, name: str, flags: int) -> None:
    """Bind `name` of a fresh proc or sysfs (the fd `filesystem`) onto itself, then remount the
    bind with exactly `flags` (LXC's MS_REMOUNT|MS_BIND: what is not in them is cleared)."""
    try:
        target = kernel.openat2(filesystem, name, os.O_PATH | os.O_CLOEXEC, 0, paths.NO_SYMLINKS_BENEATH)
    except FileNotFoundError:
        return   # e.g. /proc/sysrq-trigger on kernels built without magic SysRq
    copy = None
    try:
        copy = mounts.copy_tree(target, recursive=False)
        mounts.attach(copy, target)
        kernel.mount(None, proc_fd(copy), None, kernel.MS_REMOUNT | kernel.MS_BIND | flags)
    finally:
        for fd in (target, copy):
            if fd is not None:
                os.close(fd)


def _proc_sys_read_only(proc: int, writable_net: bool) -> None:
    """proc:mixed's /proc/sys, read-only but for /proc/sys/net, as LXC 5.0.2's
    lxc_mount_auto_mounts() leaves it: LXC binds /proc/sys/net aside, binds /proc/sys onto
    itself and remounts that with MS_RDONLY alone (so it is "ro", without the nosuid, nodev
    and noexec of proc's mount, which the net bind keeps), then moves the net bind back on
    /proc/sys/net.  The net copy is made first here too: mountinfo lists mounts in the order
    they were made, so it lists the two in LXC's order.  A container without CAP_NET_ADMIN
    (lxc.cap.drop, lxc.cap.keep) gets no writable net: LXC skips those two steps then."""
    opened = []
    net = None
    try:
        if writable_net:
            net_source = kernel.openat2(proc, "sys/net", os.O_PATH | os.O_CLOEXEC, 0, paths.NO_SYMLINKS_BENEATH)
            opened.append(net_source)
            net = mounts.copy_tree(net_source, recursive=False)
            opened.append(net)
        sys_target = kernel.openat2(proc, "sys", os.O_PATH | os.O_CLOEXEC, 0, paths.NO_SYMLINKS_BENEATH)
        opened.append(sys_target)
        sys_copy = mounts.copy_tree(sys_target, recursive=False)
        opened.append(sys_copy)
        mounts.attach(sys_copy, sys_target)
        kernel.mount(None, proc_fd(sys_copy), None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY)
        if net is None:
            return
        net_target = kernel.openat2(sys_copy, "net", os.O_PATH | os.O_CLOEXEC, 0, paths.NO_SYMLINKS_BENEATH)
        opened.append(net_target)
        mounts.attach(net, net_target)
        # writable, with proc's own flags (which the bind has anyway: said, not relied upon)
        kernel.mount(None, proc_fd(net), None, kernel.MS_REMOUNT | kernel.MS_BIND | _SAFE)
    finally:
        for fd in opened:
            os.close(fd)


def _mount_new(root: int, path: str, fstype: str, flags: int, data: str | None = None,
               source: str | None = "") -> int:
    """A new `fstype` filesystem on directory `path` of the rootfs (made if missing); its mount's fd.
    Its source is `fstype` unless given (None: none at all, which mountinfo shows as "none")."""
    target = paths.open_in_root(root, path, "dir")
    try:
        mount = mounts.new_filesystem(fstype, fstype if source == "" else source, flags, data)
        try:
            mounts.attach(mount, target)
        except OSError:
            os.close(mount)
            raise
        return mount
    finally:
        os.close(target)


def mount_proc(root: int, mode: str, net_admin: bool = True) -> None:
    """proc on /proc; proc:mixed's read-only parts, its /proc/sys/net writable only for a
    container that keeps CAP_NET_ADMIN (`net_admin`), as LXC's lxc_wants_cap() decides."""
    proc = _mount_new(root, "/proc", "proc", _SAFE)
    try:
        if mode == "mixed":
            _proc_sys_read_only(proc, writable_net=net_admin)
            _bind_over(proc, "sysrq-trigger", kernel.MS_RDONLY)   # LXC's remount: MS_RDONLY alone too
    finally:
        os.close(proc)


def mount_sys(root: int, mode: str) -> None:
    # sys:mixed makes the mount read-only, never the superblock (LXC's first sysfs mount of the
    # container's network namespace is read-write): /sys/devices/virtual/net, bound from it,
    # must stay writable, and a read-only superblock would make it EROFS whatever its mount says.
    # The flags of LXC's lxc_mount_auto_mounts() table: sys:rw (userns.conf's) none at all,
    # sys:ro read-only only, sys:mixed nosuid, nodev and noexec (then read-only, below).
    flags = {"rw": 0, "ro": kernel.MS_RDONLY, "mixed": _SAFE}[mode]
    sysfs = _mount_new(root, "/sys", "sysfs", flags)
    try:
        if mode == "mixed":
            _bind_over(sysfs, "devices/virtual/net", _SAFE)
            kernel.mount(None, proc_fd(sysfs), None, kernel.MS_REMOUNT | kernel.MS_BIND | _SAFE | kernel.MS_RDONLY)
    finally:
        os.close(sysfs)


def cgroup_mode(token: str, config) -> str:
    """"ro", "rw" or "mixed" for an lxc.mount.auto cgroup token.  A bare "cgroup" is rw for a
    container that keeps CAP_SYS_ADMIN and mixed for one that does not, as LXC decides."""
    words = token.split(":")
    for mode in ("ro", "rw", "mixed"):
        if mode in words:
            return mode
    dropped = config.dropped_capabilities(kernel.last_capability())
    return "mixed" if kernel.CAPABILITIES["sys_admin"] in dropped else "rw"


def cgroups_wanted(token: str, config) -> bool:
    """Whether lxcsm mounts the cgroups of an lxc.mount.auto cgroup token, as LXC's cgfsng_mount()
    decides: in its own cgroup namespace a container keeping CAP_SYS_ADMIN mounts them itself,
    unless the token ends in :force or the host has the unified hierarchy only."""
    if "force" in token.split(":") or "cgroup" in config.namespace_keep:
        return True
    if cgroups.unified_only(cgroups.hierarchies()):
        return True
    return kernel.CAPABILITIES["sys_admin"] in config.dropped_capabilities(kernel.last_capability())


def mount_cgroups(root: int, token: str, mode: str) -> None:
    """The container's cgroups on /sys/fs/cgroup, as LXC's cgfsng_mount() does under a cgroup
    namespace: each hierarchy's mount shows only the container's own cgroup as its root.
    "ro" makes the hierarchies read-only.  The tmpfs that holds them stays writable whatever
    the mode, as LXC 5.0.2 leaves it: systemd makes its controller links there (net_cls ->
    net_cls,net_prio...), then makes it read-only itself."""
    readonly = kernel.MS_RDONLY if mode == "ro" else 0
    found = cgroups.hierarchies()
    # No source, for the tmpfs and every hierarchy, as LXC's fs_prepare() sets none: mountinfo says "none".
    # The unified hierarchy alone, on /sys/fs/cgroup itself: asked for, or (as LXC, whatever
    # the token) all a cgroup2-only host has.
    if token.startswith("cgroup2") or cgroups.unified_only(found):
        os.close(_mount_new(root, "/sys/fs/cgroup", "cgroup2", _SAFE | readonly, source=None))
        return
    base = _mount_new(root, "/sys/fs/cgroup", "tmpfs", _SAFE, "size=10240k,mode=755", source=None)
    try:
        for hierarchy in found:
            name = os.path.basename(hierarchy.mountpoint)
            os.mkdir(name, 0o755, dir_fd=base)
            target = kernel.openat2(base, name, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                                    paths.NO_SYMLINKS_BENEATH)
            try:
                if hierarchy.version == 2:
                    mount = mounts.new_filesystem("cgroup2", None, _SAFE | readonly)
                else:
                    named = [c for c in hierarchy.controllers if c.startswith("name=")]
                    options = ",".join(["none", *named] if named else hierarchy.controllers)
                    mount = mounts.new_filesystem("cgroup", None, _SAFE | readonly, options)
                mounts.attach(mount, target)
                os.close(mount)
            finally:
                os.close(target)
    finally:
        os.close(base)


def mount_entry(root: int, rootfs_path: str, entry) -> None:
    """One lxc.mount.entry: its target opened (or made) inside the rootfs, then mounted on by fd."""
    options = parse_mount_options(entry.options)
    target = paths.open_in_root(root, container_path(rootfs_path, entry.target), options.create or "")
    opened = [target]
    try:
        source = entry.source
        if options.relative:
            source = paths.open_in_root(root, entry.source)
            opened.append(source)
        if options.flags & kernel.MS_REMOUNT:   # changes a mount already there: nothing new to attach
            kernel.mount(proc_fd(source) if options.relative else source, proc_fd(target), entry.fstype,
                         options.flags, options.data or None)
            mount = target
        elif options.bind:
            mount = mounts.copy_tree(source, recursive=bool(options.flags & kernel.MS_REC))
            opened.append(mount)
            mounts.attach(mount, target)
            extra = options.flags & ~(kernel.MS_BIND | kernel.MS_REC)
            if extra:
                kernel.mount(None, proc_fd(mount), None, kernel.MS_REMOUNT | kernel.MS_BIND | extra)
        else:
            mount = mounts.new_filesystem(entry.fstype, proc_fd(source) if options.relative else source,
                                          options.flags, options.data or None)
            opened.append(mount)
            mounts.attach(mount, target)
        if options.propagation:
            kernel.mount(None, proc_fd(mount), None, options.propagation)
    finally:
        for fd in opened:
            os.close(fd)


def create_target(root: int, rootfs_path: str, entry) -> None:
    """An idmapped entry's target, made now if create=dir|file asks, in the order of all the
    entries, as LXC makes it before it skips the entry; its tree is attached later."""
    options = parse_mount_options(entry.options)
    if options.create:
        os.close(paths.open_in_root(root, container_path(rootfs_path, entry.target), options.create))


def attach_idmapped(root: int, rootfs_path: str, entry, tree: int) -> None:
    """An idmap= entry: the tree the monitor idmapped for it (sync_idmapped_mounts) given the
    entry's other options (ro, nosuid..., propagation) and attached on its target."""
    options = parse_mount_options(entry.options)
    idmapped_mounts.set_bind_options(tree, options.flags, options.propagation,
                                     recursive=bool(options.flags & kernel.MS_REC))
    target = paths.open_in_root(root, container_path(rootfs_path, entry.target), options.create or "")
    try:
        mounts.attach(tree, target)
    finally:
        os.close(target)


def _attach_idmapped(ctx, root: int) -> None:
    """The idmap= entries, after all the others (LXC's lxc_idmapped_mounts_child(): the
    lxc.mount.entry lines', then the fstab's); each fd is spent whatever happens."""
    config = ctx.request.config
    trees, ctx.idmapped_entries = ctx.idmapped_entries, []
    try:
        for entry, tree in zip(config.idmapped_mount_entries(), trees, strict=True):
            try:
                attach_idmapped(root, config.rootfs_path, entry, tree)
            except OSError as err:
                where = f"{entry.origin.file}:{entry.origin.line}: {entry.origin.key}"
                if parse_mount_options(entry.options).optional:
                    ctx.log.info("optional mount skipped", entry=where, error=describe(err))
                    continue
                raise MountEntryError(f"{where}: attaching the idmapped {entry.source} on {entry.target}: "
                                      f"{describe(err)}") from None
            ctx.log.trace("mounted", source=entry.source, target=entry.target, fstype=entry.fstype,
                          options=entry.options, idmapped=True)
    finally:
        for tree in trees:
            os.close(tree)


def mount_dev_tmpfs(root: int, options: str) -> None:
    """An empty tmpfs on the rootfs's /dev, with the directory pts, as LXC's mount_autodev(): with no
    mount flag (neither nosuid nor noexec), as there."""
    target = paths.open_in_root(root, "/dev", "dir")
    dev = None
    try:
        dev = mounts.new_filesystem("tmpfs", "none", 0, options)
        mounts.attach(dev, target)
        os.mkdir("pts", 0o755, dir_fd=dev)
    finally:
        for fd in (target, dev):
            if fd is not None:
                os.close(fd)


def enter(ctx) -> str:
    root = paths.open_root(ctx.rootfs)
    try:
        _mount_all(ctx, root)
    finally:
        os.close(root)
    hooks.run(ctx.request.config, "mount", ctx.log)
    return "mounts_done"


def _mount_all(ctx, root: int) -> None:
    config = ctx.request.config
    if config.autodev:
        options = dev_tmpfs_options(config)
        mount_dev_tmpfs(root, options)
        ctx.log.trace("mounted", what="dev", options=options)
    if config.mount_proc:
        net_admin = kernel.CAPABILITIES["net_admin"] not in config.dropped_capabilities(kernel.last_capability())
        mount_proc(root, config.mount_proc, net_admin)
        ctx.log.trace("mounted", what="proc", mode=config.mount_proc)
    if config.mount_sys:
        mount_sys(root, config.mount_sys)
        ctx.log.trace("mounted", what="sys", mode=config.mount_sys)
    for entry in config.mount_entries:
        try:
            if parse_mount_options(entry.options).idmap is not None:
                create_target(root, config.rootfs_path, entry)   # attached below, as LXC: after the others
                continue
            mount_entry(root, config.rootfs_path, entry)
        except OSError as err:
            where = f"{entry.origin.file}:{entry.origin.line}: {entry.origin.key}"
            if parse_mount_options(entry.options).optional:
                ctx.log.info("optional mount skipped", entry=where, error=describe(err))
                continue
            raise MountEntryError(f"{where}: mounting {entry.source} on {entry.target}: {describe(err)}") from None
        ctx.log.trace("mounted", source=entry.source, target=entry.target, fstype=entry.fstype,
                      options=entry.options)
    _attach_idmapped(ctx, root)
    if config.mount_cgroup and not cgroups_wanted(config.mount_cgroup, config):
        ctx.log.trace("cgroups left to the container", token=config.mount_cgroup,
                      why="own cgroup namespace and CAP_SYS_ADMIN")
    elif config.mount_cgroup:   # after the entries, as LXC mounts them
        mode = cgroup_mode(config.mount_cgroup, config)
        mount_cgroups(root, config.mount_cgroup, mode)
        ctx.log.trace("mounted", what="cgroup", token=config.mount_cgroup, mode=mode)


def plan(request) -> list[str]:
    config = request.config
    steps = [f"mount tmpfs on /dev ({dev_tmpfs_options(config)}); mkdir /dev/pts"] if config.autodev else []
    if config.mount_proc:
        steps.append(f"mount proc on /proc ({config.mount_proc})")
    if config.mount_sys:
        steps.append(f"mount sysfs on /sys ({config.mount_sys})")
    for entry in config.mount_entries:
        if parse_mount_options(entry.options).idmap is None:
            steps.append(f"mount {entry.source} on {container_path(config.rootfs_path, entry.target)} "
                         f"type {entry.fstype} ({entry.options})  [{entry.origin.file}:{entry.origin.line}]")
    for entry in config.idmapped_mount_entries():
        steps.append(f"move_mount(the idmapped {entry.source} from the monitor, "
                     f"{container_path(config.rootfs_path, entry.target)}) ({entry.options})  "
                     f"[{entry.origin.file}:{entry.origin.line}]")
    if config.mount_cgroup and not cgroups_wanted(config.mount_cgroup, config):
        steps.append(f"no cgroup mounts ({config.mount_cgroup}): the container keeps CAP_SYS_ADMIN in its own "
                     "cgroup namespace and mounts them itself, as under LXC")
    elif config.mount_cgroup:
        steps.append(f"mount the container's cgroups on /sys/fs/cgroup ({config.mount_cgroup}: "
                     f"{cgroup_mode(config.mount_cgroup, config)})")
    steps += [f"run lxc.hook.mount: {s.value}" for _key, s in hooks.configured(config, "mount")]
    return steps or ["nothing to mount"]
