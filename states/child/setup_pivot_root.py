"""setup_pivot_root (child) - the rootfs becomes /, and the host's root goes away.

Replaces LXC's lxc_pivot_root() (conf.c).

pivot_root(".", ".") from inside the new root stacks the old root on top of
the new one at "/"; the old root is then made a slave (so unmounting it
cannot propagate to the host) and detached lazily (MNT_DETACH), which
leaves the new root visible.  No directory for the old root is needed.

Afterwards the kernel sees: the container's / is its rootfs, no path leads
to the host's filesystem, and the working directory is /.  Every mount of
the container is shared, in peer groups of its own (not the host's): as LXC
does, because services that run in mount namespaces of their own (systemd's
PrivateTmp=, ProtectSystem=...) are slaves of the container's mounts and
must see what is mounted there later.
"""

from __future__ import annotations

import os

from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(ctx.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        kernel.pivot_root(".", ".")
        os.fchdir(old_root)
        kernel.mount(None, ".", None, kernel.MS_SLAVE | kernel.MS_REC)
        kernel.umount2(".", kernel.MNT_DETACH)
        os.fchdir(new_root)
        kernel.mount(None, ".", None, kernel.MS_SHARED | kernel.MS_REC)
    finally:
        os.close(old_root)
        os.close(new_root)
    os.chdir("/")
    ctx.log.trace("pivoted", rootfs=ctx.rootfs)
    return "root_pivoted"


def plan(request: StartRequest) -> list[str]:
    return ["pivot_root(\".\", \".\") in the rootfs", "make the old root rslave, umount2(MNT_DETACH) it",
            "make / rshared (new peer groups, the container's own)", "chdir /"]
