"""setup_autodev (child) - the lxc.hook.autodev hooks, then /dev filled (lxc.autodev = 1).

Replaces LXC's lxc_fill_autodev() and lxc_setup_devpts_child() (conf.c), and
the autodev hooks run right before them in lxc_setup().

setup_mounts put an empty tmpfs on /dev; the mounts and the mount hooks are
done.  First the lxc.hook.autodev hooks run (LXC_ROOTFS_MOUNT is where the
rootfs is): they see /dev as the mounts left it and may make nodes of their
own there.  Afterwards the kernel sees, in the rootfs's /dev:
* the device nodes every program expects: null, zero, full, random, urandom,
  tty (mode 0666, as under LXC) - a node a hook already made is kept.  In a
  user namespace (lxc.idmap) the kernel refuses mknod: from the first
  refusal on, the host's node is bind-mounted on an empty file instead, as
  LXC does;
* fd, stdin, stdout and stderr as links into /proc/self/fd;
* a fresh devpts instance on /dev/pts (newinstance, so the container's ptys
  are not the host's), allowing lxc.pty.max + lxc.tty.max ptys when
  lxc.pty.max is set, as LXC sizes it, with
  /dev/ptmx bind-mounted from its ptmx node.  (LXC mounts no devpts at all
  without lxc.pty.max; lxcsm always gives the container its own.)

With lxc.autodev = 0 the rootfs's own /dev is used and no autodev hook runs;
as LXC's lxc_setup_devpts_child() and lxc_setup_dev_symlinks() do there, it
gets the links above where it has none (a read-only /dev: a WARN, as LXC),
and, only with lxc.pty.max > 0, the container's devpts on /dev/pts and its
ptmx on /dev/ptmx (/dev/pts and /dev/ptmx made in the rootfs if missing, as
LXC makes them); LXC unmounts the devpts it mounted for the ttys alone, so
without lxc.pty.max the rootfs's /dev/pts is left as it is.

/dev is opened inside the rootfs (symlinks followed inside it only), and
everything is made relative to that descriptor, never by a path a process
writing into the rootfs could redirect.
"""

import errno
import os
import stat

from lxcsm import hooks
from lxcsm.engine.linux import kernel, mounts, paths

NODES = {  # name: (major, minor), in LXC's order (bound from the host in a user namespace: the mount order)
    "full": (1, 7), "null": (1, 3), "random": (1, 8),
    "tty": (5, 0), "urandom": (1, 9), "zero": (1, 5),
}
LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
         "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}


def _devpts_options(config) -> str:
    # LXC's size: the container's own ptys plus its ttys (which setup_ttys takes from it);
    # the console is one of the ptys, or one of the host's when lxc.pty.max <= 1.
    pty_max = config.get_item("lxc.pty.max")
    return "newinstance,ptmxmode=0666,mode=0620,gid=5" + (
        f",max={int(pty_max) + config.tty_count()}" if pty_max else "")


def enter(ctx) -> str:
    config = ctx.request.config
    if config.autodev:
        hooks.run(config, "autodev", ctx.log)
    root = paths.open_root(ctx.rootfs)
    try:
        dev = paths.open_in_root(root, "/dev", "dir")
    finally:
        os.close(root)
    try:
        bound = config.autodev and _make_nodes(dev)
        hooks.verify_start(config, ctx.rootfs)   # where LXC's lxc_setup() does, after the nodes
        _make_links(ctx, dev)
        if config.has_devpts():
            _mount_devpts(dev, config)
    finally:
        os.close(dev)
    if config.autodev:
        ctx.log.trace("dev populated", path=f"{ctx.rootfs}/dev", nodes=" ".join(NODES),
                      how="the host's nodes bound (no mknod here)" if bound else "mknod")
    else:
        ctx.log.trace("autodev disabled", devpts=config.has_devpts())
    return "dev_ready"


def _make_nodes(dev: int) -> bool:
    """The device nodes, made in the tmpfs whose fd is `dev`; True if they are the host's,
    bound: once the kernel refuses mknod (EPERM: the child is in a user namespace, and
    device nodes need CAP_MKNOD over the host's), the host's node of that name and of
    each one after it is bind-mounted on an empty file, as LXC's lxc_fill_autodev()."""
    bind = False
    for name, (major, minor) in NODES.items():
        if not bind:
            try:
                os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=dev)
            except FileExistsError:
                continue   # made by an autodev hook or a mount entry: theirs, as with LXC
            except PermissionError:
                bind = True
            else:
                os.chmod(name, 0o666, dir_fd=dev)   # mknod's mode is cut by the umask
                continue
        _bind_host_node(dev, name)
    return bind


def _bind_host_node(dev: int, name: str) -> None:
    """The host's /dev/NAME (the child has not pivoted: / is still the host's) bound on an
    empty file NAME in `dev` (mode 0, as LXC makes it: only the bound node counts)."""
    target = paths.create_beneath(dev, name, 0)
    node = None
    try:
        node = mounts.copy_tree(f"/dev/{name}", recursive=False)
        mounts.attach(node, target)
    finally:
        for fd in (target, node):
            if fd is not None:
                os.close(fd)


def _make_links(ctx, dev: int) -> None:
    """fd, stdin, stdout, stderr in `dev`, each unless something of that name is there."""
    for name, target in LINKS.items():
        try:
            os.symlink(target, name, dir_fd=dev)
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno != errno.EROFS:
                raise
            ctx.log.warn("dev link not made", path=f"/dev/{name}", reason="read-only file system")


def _mount_devpts(dev: int, config) -> None:
    """A new devpts on /dev/pts and its ptmx bound on /dev/ptmx, in the /dev whose fd is `dev`."""
    try:
        os.mkdir("pts", 0o755, dir_fd=dev)
    except FileExistsError:
        pass   # setup_mounts made it with the tmpfs
    pts = kernel.openat2(dev, "pts", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, paths.NO_SYMLINKS_BENEATH)
    ptmx = paths.create_beneath(dev, "ptmx", 0o666)
    devpts = devpts_ptmx = ptmx_bind = None
    try:
        devpts = mounts.new_filesystem("devpts", "devpts", kernel.MS_NOSUID | kernel.MS_NOEXEC,
                                       _devpts_options(config))
        mounts.attach(devpts, pts)
        devpts_ptmx = kernel.openat2(devpts, "ptmx", os.O_PATH | os.O_CLOEXEC, 0, paths.NO_SYMLINKS_BENEATH)
        ptmx_bind = mounts.copy_tree(devpts_ptmx, recursive=False)
        mounts.attach(ptmx_bind, ptmx)
    finally:
        for fd in (pts, ptmx, devpts, devpts_ptmx, ptmx_bind):
            if fd is not None:
                os.close(fd)


def plan(request) -> list[str]:
    config = request.config
    devpts = [f"mount devpts on /dev/pts ({_devpts_options(config)}); bind /dev/pts/ptmx on /dev/ptmx"]
    if not config.autodev:
        return ["keep the rootfs's /dev (lxc.autodev = 0)",
                "symlink " + " ".join(f"{n}->{t}" for n, t in LINKS.items()) + " where missing",
                *(devpts if config.has_devpts() else [])]
    return [*(f"run lxc.hook.autodev: {s.value}" for _key, s in hooks.configured(config, "autodev")),
            "mknod " + " ".join(f"{n} {ma}:{mi}" for n, (ma, mi) in NODES.items())
            + (" (refused in the user namespace: the host's /dev/NAME bound on an empty file NAME)"
               if config.id_maps() else ""),
            "symlink " + " ".join(f"{n}->{t}" for n, t in LINKS.items()),
            *devpts]
