"""setup_ttys (child) - the container's console and ttys, for lxc-console.

Replaces LXC's lxc_setup_console() and lxc_create_ttys() (conf.c), before
the switch to the new root, and the console half of lxc_terminal_parent().

Afterwards the kernel sees, in the container's mount namespace:
* /dev/console: the peer side of a pty bind-mounted on it (unless
  lxc.console.path = none).  As with LXC, the pty is one of the container's
  devpts when lxc.pty.max is more than 1, and otherwise one of the host's
  devpts (LXC's monitor allocates it there; the child, still seeing the
  host's /dev, does it here): the container's devpts then has room for its
  ttys only (setup_autodev sizes it lxc.pty.max + lxc.tty.max), as with
  LXC's busybox template (lxc.pty.max = 1, lxc.tty.max = 5).  With lxc.idmap
  a host pty is the container root's, uid and gid, as LXC chowns it;
* lxc.tty.max more ptys of the container's devpts, the Nth on /dev/ttyN
  (where a getty of the container's init finds it), and their names
  ("pts/N ...") in container_ttys of this process's environment, for the
  start hook (hooks.expose_ttys);
* with lxc.tty.dir = DIR (LXC's common.conf says lxc), as LXC's
  lxc_setup_ttys() and lxc_setup_ttydir_console(): the ttys bound on
  /dev/DIR/ttyN instead, each /dev/ttyN a symlink to DIR/ttyN, and the
  console bound on /dev/DIR/console, which is bound on /dev/console in turn.
The child hands the monitor at FDS (sync_fds) the console's master and peer,
each tty's master and peer - the monitor keeps the peers open, as LXC's does,
so a tty whose shell logs out does not hang up its lxc-console - and a
descriptor of the container's devpts, which the monitor hands to
`lxc-attach` (GET_DEVPTS_FD) so an interactive attach gets a pty of the
container's own.  The monitor drains the console into lxc.console.logfile
and gives a tty to each lxc-console client (GET_TTY_FD; tty 0 is the
console).  With lxc.autodev = 0 the same is done in the rootfs's own /dev,
as LXC does: a missing /dev/console or /dev/ttyN is made there (an empty
file, left in the rootfs afterwards, as LXC leaves it), so a read-only /dev
must already have them; and without lxc.pty.max the container has no devpts
of its own, so the ttys too are ptys of the host's devpts, as LXC 5.0.2's
are then (its lxc_allocate_ttys() falls back to the host's /dev/ptmx).

/dev and its ptmx are opened inside the rootfs (openat2, RESOLVE_IN_ROOT);
each target is opened - made empty if missing - in /dev's descriptor with
no symlink followed, as LXC does, and bound onto through its descriptor.
"""

import os

from lxcsm import hooks
from lxcsm.engine.linux import kernel, paths
from lxcsm.engine.linux.paths import proc_fd

HOST_PTMX = "/dev/ptmx"   # the host's: the child's mount namespace is still a copy of the host's


def tty_dir(config) -> str | None:
    """lxc.tty.dir: the directory of /dev the ttys and console are bound in, or None."""
    return config.get_item("lxc.tty.dir") or None


def _bind(source: int, directory: int, name: str) -> None:
    """Bind-mount the file `source` is open on onto NAME in `directory` (made if missing)."""
    target = paths.create_beneath(directory, name, 0o600)
    try:
        kernel.mount(proc_fd(source), proc_fd(target), None, kernel.MS_BIND)
    finally:
        os.close(target)


def _bind_pty(ctx, directory: int, peer: int, name: str, index: int) -> None:
    """Bind-mount the pty whose peer side is `peer` on NAME (relative to /dev) in `directory`."""
    _bind(peer, directory, name.rsplit("/", 1)[-1])
    ctx.log.trace("tty created", tty=f"/dev/{name}", pts=index)


def enter(ctx) -> str:
    config = ctx.request.config
    if not config.has_console() and not config.has_devpts() and not config.tty_count():
        return "ttys_created"
    from lxcsm.engine.linux import terminal  # only containers with a console or ttys pay for it
    root = paths.open_root(ctx.rootfs)
    dev = ptmx = in_dir = None
    subdir = tty_dir(config)
    prefix = f"{subdir}/" if subdir else ""
    try:
        dev = paths.open_in_root(root, "/dev")
        # Where the ptys are bound: /dev itself, or lxc.tty.dir in it.
        in_dir = paths.open_in_root(root, f"/dev/{subdir}", "dir") if subdir else None
        ttys_at = in_dir if in_dir is not None else dev
        if config.has_devpts():   # setup_autodev mounted it (else no tty needs it: LXC's rule)
            ptmx = paths.open_in_root(root, "/dev/ptmx")
            ctx.devpts = paths.open_in_root(root, "/dev/pts")
        if config.has_console():
            on_host = config.console_on_host_devpts()
            master, peer, index = terminal.open_pty(HOST_PTMX if on_host or ptmx is None else proc_fd(ptmx))
            ctx.console = (master, peer)
            os.fchmod(peer, 0o620)
            if on_host and config.id_maps():
                # As LXC's lxc_terminal_map_ids(): the host's pty belongs to the container's root,
                # uid and gid.  Made by the child as that root, it has the uid already, but the
                # group of the host devpts' gid= option (tty), which the namespace does not map.
                os.fchown(peer, 0, 0)
            _bind_pty(ctx, ttys_at, peer, f"{prefix}console", index)
            if subdir:   # /dev/DIR/console, bound on /dev/console in turn
                console = paths.create_beneath(ttys_at, "console", 0o600)
                try:
                    _bind(console, dev, "console")
                finally:
                    os.close(console)
            ctx.log.trace("console devpts", devpts="host" if on_host else "container")
        tty_names = []
        for number in range(1, config.tty_count() + 1):
            master, peer, index = terminal.open_pty(HOST_PTMX if ptmx is None else proc_fd(ptmx))
            ctx.tty_masters.append(master)
            ctx.tty_peers.append(peer)
            _bind_pty(ctx, ttys_at, peer, f"{prefix}tty{number}", index)
            tty_names.append(f"pts/{index}")
            if subdir:
                try:
                    os.unlink(f"tty{number}", dir_fd=dev)
                except FileNotFoundError:
                    pass
                os.symlink(f"{subdir}/tty{number}", f"tty{number}", dir_fd=dev)
        hooks.expose_ttys(tty_names)
    finally:
        for fd in (root, dev, ptmx, in_dir):
            if fd is not None:
                os.close(fd)
    return "ttys_created"


def plan(request) -> list[str]:
    config = request.config
    steps = [] if config.autodev else ["in the rootfs's own /dev (lxc.autodev = 0), each target made if missing"]
    if config.has_console():
        where = "the host's devpts (lxc.pty.max <= 1)" if config.console_on_host_devpts() else "the container's devpts"
        steps.append(f"open a pty in {where}; bind its peer on /dev/console" if not tty_dir(config) else
                     f"open a pty in {where}; bind its peer on /dev/{tty_dir(config)}/console, that on /dev/console")
    ttys = config.tty_count()
    devpts = "the container's devpts" if config.has_devpts() else "the host's devpts (no lxc.pty.max, as LXC)"
    if ttys and tty_dir(config):
        steps.append(f"open {ttys} ptys in {devpts}; bind each on /dev/{tty_dir(config)}/tty1..{ttys}, "
                     f"with /dev/ttyN a symlink to {tty_dir(config)}/ttyN")
    elif ttys:
        steps.append(f"open {ttys} ptys in {devpts}; bind each on /dev/tty1..{ttys}")
    if config.has_devpts():
        steps.append("open the container's /dev/pts, for lxc-attach's ptys (GET_DEVPTS_FD)")
    return steps or ["nothing: no console (lxc.console.path = none), no ttys, no devpts"]
