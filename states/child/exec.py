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
stdout and stderr when the console is a pty of the container's devpts
(lxc.pty.max > 1), and /dev/null when it is the host's or there is none, as
under lxc-start -d (LXC 5.0.2 makes a host pty init's stdio, then closes it
and finds no console left: do_start() then gives a daemon /dev/null; what
init writes to /dev/console itself, as busybox's askfirst and systemd do,
reaches the console either way); a foreground one started from a terminal has it,
whose monitor relays between that terminal and the console (poll), as
lxc-start -F does, and so has one whose console is on a terminal of the
user's (lxc.console.path, lxc-start -c); with -F from pipes, init keeps
lxcsm's own fds 0, 1 and 2, so that the caller's pipes reach init directly.  As under LXC, the
console is not init's controlling terminal: busybox init's askfirst shell,
or a getty, makes it theirs, with job control.

Then, as LXC's do_start(), the child takes init's credentials: stdio not on
/dev/null is given to lxc.init.uid and made mode 0700 (LXC's
fix_stdio_permissions(), which runs for every init, root's too: so a console
that is init's stdio is crw------- inside, as under lxc-start, and so is a
terminal of the caller's that a foreground init keeps); the supplementary groups become
lxc.init.groups, or none at all; the gid and uid become lxc.init.gid and
lxc.init.uid (setresgid, setresuid: real, effective and saved; default 0,
left alone), which takes every capability from an init that is not root.
It is made dumpable again (a uid change clears that), its ambient
capabilities are cleared, and when lxc.monitor.signal.pdeath names another
signal than SIGKILL, that becomes the signal init gets when the monitor
dies (set after the uid change, which resets it).

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
import stat

from lxcsm.engine.linux import kernel

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


def credentials(config) -> tuple[int | None, int | None, list[int]]:
    """(uid, gid, supplementary groups) init runs with; None: left as it is (root's 0)."""
    uid, gid = (int(config.get_item(key) or 0) for key in ("lxc.init.uid", "lxc.init.gid"))
    groups = [int(group) for group in (config.get_item("lxc.init.groups") or "").split(",") if group]
    return uid or None, gid or None, groups


def _take_credentials(config, log) -> None:
    uid, gid, groups = credentials(config)
    _give_stdio(uid)
    os.setgroups(groups)
    if gid is not None:
        os.setresgid(gid, gid, gid)
    if uid is not None:
        os.setresuid(uid, uid, uid)
    if uid is not None or gid is not None or groups:
        log.trace("credentials", uid=os.getuid(), gid=os.getgid(), groups=" ".join(map(str, groups)))
    kernel.set_dumpable()
    kernel.clear_ambient_capabilities()
    pdeath = int(config.get_item("lxc.monitor.signal.pdeath") or signal.SIGKILL)
    if pdeath != signal.SIGKILL:
        # Armed at STARTUP with SIGKILL, and cleared again by setresuid: set it anew, then make
        # sure the monitor did not die in between (our parent would then be someone else).
        monitor = os.getppid()
        kernel.set_pdeathsig(pdeath)
        if os.getppid() != monitor:
            os.kill(os.getpid(), signal.SIGKILL)


PTY_SLAVE_MAJORS = range(136, 144)   # the kernel's Unix98 pty slaves (devices.txt): every devpts


def _give_stdio(uid: int | None) -> None:
    """As LXC's fix_stdio_permissions(): init's stdio belongs to its user (`uid`; None: left
    to root) and gets mode 0700, whoever init runs as - when it is the console's pty, as it
    always is under LXC.  Anything else is the caller's and stays as it is: the null device
    (the host's own /dev/null, or a rootfs's stand-in for it), and the pipes or files
    `lxcsm start -F` hands init where lxc-start would give it the console.  Without a
    /dev/null in the container nothing is changed, as LXC gives up then."""
    try:
        os.stat("/dev/null")
    except OSError:
        return
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
            if not (stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_SLAVE_MAJORS):
                continue
            os.fchown(fd, -1 if uid is None else uid, -1)
            os.fchmod(fd, 0o700)
        except OSError:
            pass   # LXC only warns: a closed or foreign fd does not stop init


def enter(ctx: ChildContext) -> None:
    request = ctx.request
    env = environment(request.config.environment)
    os.chdir(request.config.init_cwd or "/")
    os.setsid()
    if not request.foreground and (ctx.console is None or request.config.console_on_host_devpts()):
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    elif ctx.console is not None:
        from lxcsm.engine.linux import terminal  # loaded by setup_ttys, before pivot_root
        if terminal.console_is_stdio(request.foreground, request.config.get_item("lxc.console.path")):
            for fd in (0, 1, 2):
                os.dup2(ctx.console[1], fd)
    if ctx.console is not None:
        os.close(ctx.console[1])
    _take_credentials(request.config, ctx.log)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ctx.signal_mask)
    channel = ctx.channel.fileno()
    os.closerange(3, channel)
    os.closerange(channel + 1, 1 << 20)
    ctx.log.trace("exec", argv=list(request.command))
    os.execvpe(request.command[0], list(request.command), env)


def plan(request: StartRequest) -> list[str]:
    config = request.config
    env = environment(config.environment)
    uid, gid, groups = credentials(config)
    steps = [f"chdir {config.init_cwd or '/'}; setsid()"]
    if not request.foreground and (not config.has_console() or config.console_on_host_devpts()):
        steps.append("dup2 /dev/null to stdin, stdout, stderr (a daemon whose console is none or the host's pty)")
    steps.append(f"fchown init's stdio, if the console's pty, to uid {uid or 0}, fchmod 0700")
    steps.append(f"setgroups({', '.join(map(str, groups)) or 'none'})")
    steps += [f"setresgid({gid})"] if gid is not None else []
    steps += [f"setresuid({uid})"] if uid is not None else []
    steps.append("dumpable again; no ambient capabilities")
    pdeath = int(config.get_item("lxc.monitor.signal.pdeath") or signal.SIGKILL)
    if pdeath != signal.SIGKILL:
        steps.append(f"prctl(PR_SET_PDEATHSIG, {pdeath}) (lxc.monitor.signal.pdeath)")
    return steps + ["restore the signal mask; SIGPIPE and SIGXFSZ to default",
                    "close every fd but 0, 1, 2",
                    "execve(" + " ".join(request.command) + ") with "
                    + " ".join(f"{k}={v}" for k, v in env.items())]
