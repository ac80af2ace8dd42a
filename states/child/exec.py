"""exec (child) - become init.

Replaces the end of LXC's do_start() and its start() callback (lxc_start.c).

Just before the exec the child becomes a session leader (init has no
controlling terminal of the host's), takes the working directory
lxc.init.cwd (default /), restores the signal mask and the dispositions the
monitor's interpreter changed (Python ignores SIGPIPE and SIGXFSZ, and
ignored signals would stay ignored across exec), and closes every file
descriptor but 0, 1, 2 and the sync channel - which is close-on-exec: the
monitor reads its end-of-file as "init runs".

A daemonised container's init has the console (setup_ttys) as its stdin,
stdout and stderr, and so has a foreground one started from a terminal,
whose monitor relays between that terminal and the console (poll), as
lxc-start -F does, and so has one whose console is on a terminal of the
user's (lxc.console.path, lxc-start -c); with -F from pipes, init keeps
lxcsm's own fds 0, 1 and 2, so that the caller's pipes reach init directly.  As under LXC, the
console is not init's controlling terminal: busybox init's askfirst shell,
or a getty, makes it theirs, with job control.

Init's environment is exactly ``container=lxc`` plus lxc.environment
(``KEY=VALUE``, or a bare ``KEY`` copying the value lxcsm was started with).
A command without a slash is looked up in that environment's PATH, or
/bin:/usr/bin, inside the container.

All of this runs under the seccomp filter and no_new_privs that
setup_seccomp put in force, as in LXC.  Afterwards the kernel sees init, the
container's pid 1, running the command.
If exec fails, the error goes to the monitor through the aborting state.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def environment(entries) -> dict[str, str]:
    env = {"container": "lxc"}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


def enter(ctx: ChildContext) -> None:
    request = ctx.request
    env = environment(request.config.environment)
    os.chdir(request.config.init_cwd or "/")
    os.setsid()
    if ctx.console is not None:
        console = ctx.console[1]
        from lxcsm.engine.linux import terminal  # loaded by setup_ttys, before pivot_root
        if terminal.console_is_stdio(request.foreground, request.config.get_item("lxc.console.path")):
            for fd in (0, 1, 2):
                os.dup2(console, fd)
        os.close(console)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ctx.signal_mask)
    channel = ctx.channel.fileno()
    os.closerange(3, channel)
    os.closerange(channel + 1, 1 << 20)
    ctx.log.trace("exec", argv=list(request.command))
    os.execvpe(request.command[0], list(request.command), env)


def plan(request: StartRequest) -> list[str]:
    env = environment(request.config.environment)
    return ["setsid(); restore the signal mask; SIGPIPE and SIGXFSZ to default",
            f"chdir {request.config.init_cwd or '/'}; close every fd but 0, 1, 2",
            "execve(" + " ".join(request.command) + ") with " + " ".join(f"{k}={v}" for k, v in env.items())]
