"""poll (monitor) - supervise init until it exits.

Replaces LXC's lxc_poll() and its mainloop handlers (signal_handler,
lxc_cmd_handler) in start.c.

The monitor waits on three things at once: init's pidfd (readable when init
exits), the signalfd of init_handler (every watched signal but SIGCHLD is
forwarded to init, as LXC forwards it), and the command socket (answered
only now, so a client never sees a half-started container).

How init ended is the trigger: killed by SIGHUP means reboot(2) was called
with RB_AUTOBOOT inside the pid namespace, SIGINT means halt or power-off,
anything else is an ordinary exit.
"""

import os
import select
import signal

from lxcsm.engine import kernel


def enter(ctx) -> str:
    boot = ctx.boot
    poller = select.poll()
    for fd in (boot.init_pidfd, ctx.signal_fd, ctx.commands.fileno()):
        poller.register(fd, select.POLLIN)
    while True:
        for fd, _events in poller.poll():
            if fd == ctx.signal_fd:
                signo, sender = kernel.read_signalfd(fd)
                if signo != signal.SIGCHLD:
                    ctx.log.trace("forwarding signal", signal=signal.Signals(signo).name, sender=sender)
                    try:
                        signal.pidfd_send_signal(boot.init_pidfd, signo)
                    except ProcessLookupError:
                        pass   # init is exiting; its pidfd is about to say so
            elif fd == boot.init_pidfd:
                _pid, status = os.waitpid(boot.init_pid, 0)
                boot.init_status = status
                return _why_init_ended(ctx, status)
            else:
                ctx.commands.serve_ready()


def _why_init_ended(ctx, status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        ctx.log.info("init killed", signal=signal.Signals(sig).name)
        if sig == signal.SIGHUP:
            return "init_rebooted"
        if sig == signal.SIGINT:
            return "init_halted"
    else:
        ctx.log.info("init exited", status=os.WEXITSTATUS(status))
    return "init_exited"


def plan(request) -> list[str]:
    return ["wait on init's pidfd, the signalfd and the command socket",
            "forward every watched signal but SIGCHLD to init",
            "init killed by SIGHUP: reboot; by SIGINT: halt; otherwise: exit"]
