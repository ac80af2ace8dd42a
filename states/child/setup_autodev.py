"""setup_autodev (child) - a minimal /dev of our own (lxc.autodev = 1).

Replaces LXC's mount_autodev(), lxc_fill_autodev() and lxc_setup_devpts_child()
(conf.c).

Afterwards the kernel sees, in the rootfs:
* a small tmpfs on /dev (mode 0755), hiding whatever the rootfs has there;
* the device nodes every program expects and no others: null, zero, full,
  random, urandom, tty (mode 0666, as under LXC);
* fd, stdin, stdout and stderr as links into /proc/self/fd;
* a fresh devpts instance on /dev/pts (newinstance, so the container's ptys
  are not the host's), allowing lxc.pty.max ptys when that is set, with
  /dev/ptmx bind-mounted from its ptmx node.  (LXC mounts no devpts at all
  without lxc.pty.max; lxcsm always gives the container its own.)

With lxc.autodev = 0 the rootfs's own /dev is used as it is.
"""

import os
import stat

from lxcsm.engine.linux import kernel
from lxcsm.engine.linux.paths import in_rootfs

NODES = {  # name: (major, minor)
    "null": (1, 3), "zero": (1, 5), "full": (1, 7),
    "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
}
LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
         "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}


def _devpts_options(config) -> str:
    pty_max = config.get_item("lxc.pty.max")
    return "newinstance,ptmxmode=0666,mode=0620,gid=5" + (f",max={pty_max}" if pty_max else "")


def enter(ctx) -> str:
    if not ctx.request.config.autodev:
        ctx.log.trace("autodev disabled")
        return "dev_ready"
    dev = in_rootfs(ctx.rootfs, "/dev")
    os.makedirs(dev, exist_ok=True)
    kernel.mount("none", dev, "tmpfs", kernel.MS_NOSUID | kernel.MS_NOEXEC, "size=500000,mode=755")
    for name, (major, minor) in NODES.items():
        path = os.path.join(dev, name)
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(path, 0o666)   # mknod's mode is cut by the umask
    for name, target in LINKS.items():
        os.symlink(target, os.path.join(dev, name))
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    kernel.mount("devpts", pts, "devpts", kernel.MS_NOSUID | kernel.MS_NOEXEC, _devpts_options(ctx.request.config))
    ptmx = os.path.join(dev, "ptmx")
    open(ptmx, "x").close()
    kernel.mount(os.path.join(pts, "ptmx"), ptmx, None, kernel.MS_BIND)
    ctx.log.trace("dev populated", path=dev, nodes=" ".join(NODES))
    return "dev_ready"


def plan(request) -> list[str]:
    if not request.config.autodev:
        return ["keep the rootfs's /dev (lxc.autodev = 0)"]
    return ["mount tmpfs on /dev (size=500000,mode=755)",
            "mknod " + " ".join(f"{n} {ma}:{mi}" for n, (ma, mi) in NODES.items()),
            "symlink " + " ".join(f"{n}->{t}" for n, t in LINKS.items()),
            f"mount devpts on /dev/pts ({_devpts_options(request.config)}); bind /dev/pts/ptmx on /dev/ptmx"]
