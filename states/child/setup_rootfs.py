"""setup_rootfs (child) - make every mount dependent, then mount the rootfs.

Replaces turn_into_dependent_mounts() and lxc_mount_rootfs() (conf.c), the
start of LXC's lxc_setup().

Afterwards the kernel sees, in the container's mount namespace only:
* every mount inherited from the host turned into a slave (MS_SLAVE |
  MS_REC): mounts made on the host still propagate in, but nothing mounted
  here can propagate back out - this is what keeps the host's mount table
  unchanged by everything that follows;
* whatever the lxc.hook.pre-mount hooks did, run now, in the container's
  mount namespace before its rootfs is mounted;
* the rootfs (lxc.rootfs.path) bind-mounted, recursively, at lxc.rootfs.mount
  (or onto itself when that is unset), and remounted with
  lxc.rootfs.options (e.g. ro).  pivot_root needs the new root to be a mount
  point, which the bind makes it;
* or, with lxc.idmap and ``lxc.rootfs.options = idmap=container``, instead
  of the bind the detached copy of the rootfs the monitor idmapped to our
  user namespace (received by sync_idmapped_mounts), attached by fd there:
  its files, owned by 0 on disk, are root's inside, and what root makes in
  it is owned by 0 on disk;
* or, for an overlay rootfs (``overlay:LOWER:UPPER``, as ``lxc-copy -s -B
  overlayfs`` writes it), an overlayfs there instead, as LXC's ovl_mount():
  the upper layer and its work directory beside it created when missing
  (on the host's filesystem: they are the snapshot's own), LOWER read-only
  beneath, every change the container makes landing in UPPER, and
  lxc.rootfs.options' flags and data on the mount itself.  Without
  lxc.rootfs.mount it is mounted over the top lower layer, in this mount
  namespace only.
"""

import os

from lxcsm import hooks
from lxcsm.engine.linux import kernel, mounts
from lxcsm.engine.linux.mount_options import parse_mount_options


def enter(ctx) -> str:
    config = ctx.request.config
    kernel.mount(None, "/", None, kernel.MS_SLAVE | kernel.MS_REC)
    hooks.run(config, "pre-mount", ctx.log)
    target = config.rootfs_mount or config.rootfs_path
    overlay = config.rootfs_overlay()
    if overlay is not None:
        _mount_overlay(overlay, target, config.rootfs_options)
    elif ctx.idmapped_rootfs is not None:
        _attach(ctx, target)
    else:
        kernel.mount(config.rootfs_path, target, None, kernel.MS_BIND | kernel.MS_REC)
    if config.rootfs_options and overlay is None:
        options = parse_mount_options(config.rootfs_options)
        extra = options.flags & ~(kernel.MS_BIND | kernel.MS_REC)
        if extra:
            kernel.mount(None, target, None, kernel.MS_REMOUNT | kernel.MS_BIND | extra)
    ctx.rootfs = target
    ctx.log.trace("rootfs mounted", source=config.rootfs_path, target=target,
                  options=config.rootfs_options or "")
    return "rootfs_mounted"


def _attach(ctx, target: str) -> None:
    """Mount the idmapped rootfs the monitor sent onto `target`; its fd is spent either way."""
    tree, ctx.idmapped_rootfs = ctx.idmapped_rootfs, None
    try:
        where = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            mounts.attach(tree, where)
        finally:
            os.close(where)
    finally:
        os.close(tree)


def overlay_options(overlay: tuple[str, str, str], rootfs_options: str | None) -> tuple[int, str]:
    lower, upper, work = overlay
    options = parse_mount_options(rootfs_options or "")
    data = f"upperdir={upper},lowerdir={lower},workdir={work}"
    return options.flags, data + (f",{options.data}" if options.data else "")


def _mount_overlay(overlay: tuple[str, str, str], target: str, rootfs_options: str | None) -> None:
    _lower, upper, work = overlay
    for directory in (upper, work):
        os.makedirs(directory, 0o755, exist_ok=True)
    flags, data = overlay_options(overlay, rootfs_options)
    kernel.mount(overlay[0].split(":")[0], target, "overlay", flags, data)


def plan(request) -> list[str]:
    config = request.config
    target = config.rootfs_mount or config.rootfs_path
    steps = ["mount --make-rslave /"]
    steps += [f"run lxc.hook.pre-mount: {s.value}" for _key, s in hooks.configured(config, "pre-mount")]
    overlay = config.rootfs_overlay()
    if overlay is not None:
        flags, data = overlay_options(overlay, config.rootfs_options)
        steps.append(f"mkdir -p {overlay[1]} {overlay[2]}; mount -t overlay -o {data} overlay {target}"
                     + (f" (flags {flags:#x})" if flags else ""))
        return steps
    if config.rootfs_idmap() is not None:
        steps.append(f"move_mount(the idmapped rootfs from the monitor, {target})")
    else:
        steps.append(f"mount --rbind {config.rootfs_path} {target}")
    if config.rootfs_options:
        steps.append(f"remount {target} with {config.rootfs_options}")
    return steps
