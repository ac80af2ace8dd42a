"""sync_fds (monitor) - collect the file descriptors the child opened for us.

Replaces LXC's lxc_sync_fds_parent(): after FDS the child sends the fds the
monitor keeps for the boot: the seccomp filter's listener if the policy has
notify rules (LXC's lxc_seccomp_recv_notifier_fd(); poll relays what it
reads to lxc.seccomp.notify.proxy), the console's master and peer, then the master
and peer sides of each of the container's ttys (lxc.tty.max), in tty order,
then the container's devpts (if it has one: Config.has_devpts).  Afterwards the command
socket hands the masters to lxc-console (GET_TTY_FD) and the devpts to
lxc-attach (GET_DEVPTS_FD); the peers are only kept open, as LXC's monitor
keeps them, so a tty whose last process closed it (a shell logging out)
does not hang up under its lxc-console.  Each fd is recorded, closed when
the boot ends.  Any fd beyond those is closed rather than leaked.  The
terminal the console is relayed to (lxc.console.path's, or -F's stdin) is
opened here, as LXC's lxc_terminal_setup opens it before READY_START.
With a stop or post-stop hook, the container's cgroup namespace (and time
namespace, with lxc.time.offset.*) is opened first and kept for them, as LXC
keeps them (hooks.run_stop).
"""

from __future__ import annotations

import os

from lxcsm import hooks
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    channel, server = ctx.boot.channel, ctx.command_server
    assert channel is not None and server is not None   # spawn opened the one, init_handler bound the other
    channel.wake(SyncMsg.FDS)
    config = ctx.request.config
    if hooks.keeps_namespaces(config):
        _keep_own_namespaces(ctx)
    _payload, fds = channel.wait_for(SyncMsg.FDS)
    console = 2 if config.has_console() else 0
    devpts = 1 if config.has_devpts() else 0
    seccomp = ctx.seccomp
    listener = 1 if seccomp is not None and seccomp.wants_listener else 0
    expected = listener + console + 2 * config.tty_count() + devpts
    for fd in fds[expected:]:
        os.close(fd)
    fds = fds[:expected]
    for fd in fds:
        ctx.boot.undo.record("kept_fd", fd)
        # SCM_RIGHTS hands them over inheritable: the stop hooks (measured) and any other program
        # the monitor runs would get the container's terminals, which LXC's never do.
        os.set_inheritable(fd, False)
    if seccomp is not None and listener and fds:
        seccomp.listener = fds[0]
        ctx.log.trace("seccomp listener received", listener=fds[0])
    fds = fds[listener:]
    expected -= listener
    # The console's peer (fds[1]) is only kept open: with no process of the container on
    # it, its master would report a hang-up, again and again, to the poll state.
    masters = [fds[0] if console else None, *fds[console:expected - devpts:2]]
    ttys = {number: fd for number, fd in enumerate(masters) if fd is not None}
    server.new_ttys(ttys, devpts=fds[-1] if devpts and len(fds) == expected else -1)
    ctx.console_peer = _console_peer(ctx) if console else -1
    if ttys:
        ctx.log.trace("terminals received", ttys=" ".join(map(str, sorted(ttys))))
    return "fds_received"


def _keep_own_namespaces(ctx: MonitorContext) -> None:
    """The cgroup and time namespaces the child made itself in configure (those it has that
    the monitor has not), held for the stop hooks as spawn holds the others, after them:
    where LXC's lxc_spawn() takes them, once FDS is sent."""
    pid = ctx.boot.init_pid
    for kind in ("cgroup", "time"):
        try:
            if os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/self/ns/{kind}"):
                continue
        except FileNotFoundError:   # a kernel without this kind of namespace
            continue
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        ctx.boot.undo.record("kept_fd", fd)
        ctx.boot.namespace_fds[kind] = fd


def _console_peer(ctx: MonitorContext) -> int:
    """The terminal the console is relayed to (poll), opened here - before READY_START, as
    LXC's lxc_terminal_setup opens it - so a start that cannot have it fails: the terminal
    lxc.console.path names (lxc-start -c), or lxcsm's stdin in the foreground if it is a
    terminal (lxc-start -F); -1 for none."""
    path = ctx.request.config.get_item("lxc.console.path")
    if path not in (None, "", "auto", "none"):   # terminal.on_terminal, without its import
        from lxcsm.engine.linux import terminal
        peer = terminal.open_terminal(path)
        ctx.boot.undo.record("kept_fd", peer)
        return peer
    return 0 if ctx.request.foreground and os.isatty(0) else -1


def plan(request: StartRequest) -> list[str]:
    listener = "the seccomp listener, " if request.config.get_item("lxc.seccomp.notify.proxy") else ""
    return ["send FDS", f"wait for FDS ({listener}the console's and ttys' masters and peers, the devpts)"]
