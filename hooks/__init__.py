"""lxc.hook.*: LXC's hooks, run at their points of a start.

Replaces LXC's run_lxc_hooks() (conf.c) and run_script_argv() (utils.c).

A hook is a command line, run through ``/bin/sh -c`` as LXC does.  With
lxc.hook.version = 0 (the default) the shell runs
``exec HOOK 'NAME' 'lxc' 'KIND' [ARGS...]``; with version 1 it runs
``exec HOOK [ARGS...]`` and the kind is in the environment instead
(LXC_HOOK_TYPE, LXC_HOOK_SECTION=lxc).  Either way the hook inherits the
monitor's environment, where the variables are set when and as LXC 5.0.2
sets them in its own (so a child, cloned in between, has those set before):
`environment()` at every boot's init_handler (lxc_init's), LXC_PID once init
is cloned (`expose_pid`, lxc_spawn's), the namespaces and LXC_TARGET (stop or
reboot) before the stop hooks (`run_stop`, lxc_delete_network's and
lxc_end's); in the child, container_ttys once the ttys are made (`expose_ttys`,
lxc_setup's), for the start hook.  None is ever unset: the next boot's pre-start sees the last
boot's LXC_PID, LXC_TARGET and namespaces, as under LXC.  Its stdin is left as LXC leaves it (the
monitor's or the child's own, the console's for the start hook); every
line it writes is a DEBUG event of the state that runs it, as it comes.  Several
hooks of one kind run in config order, each to its end.

As LXC, a hook may run as long as it likes.  One still running after
LXCSM_HOOK_WARN_AFTER seconds (10 by default; 0 never warns) is named in a
WARN event - its state, command and pid - repeated every as many seconds;
`lxcsm info NAME` shows it too (from the "hook" event, which has its pid).  A
hook the monitor runs takes `serve` (the command server), answered meanwhile.

`POINTS` says where each kind runs - its state's docstring says so too.  A
hook that exits non-zero fails its state (and so the start, cleaned up by
the aborting state), naming the file, line and key; stop and post-stop hooks
run on the way out, where a failure is logged and the way out goes on.
A stop hook's extra arguments are the container's namespaces, TYPE:PATH
with PATH a file of the monitor's (/proc/MONITOR/fd/N) that opens it: spawn
keeps them open for it, only when the config has a stop or post-stop hook.
They are in the environment too, as LXC puts them there: LXC_USER_NS,
LXC_MNT_NS, LXC_PID_NS, ... = PATH (with lxc.hook.version = 1 only there),
and stay there for the post-stop hooks (which LXC runs after closing them).

The start hook runs inside the container: as LXC's verify_start_hooks(),
`verify_start` fails the start when the first lxc.hook.start's whole value is
not an executable file of the rootfs (so `/bin/sh -c ...` is refused: LXC
looks for a file of that name), after the autodev hooks.
"""

from __future__ import annotations

import os
import select
import shlex
import time

from lxcsm.engine.errors import StateError

WARN_AFTER = 10.0   # seconds; LXCSM_HOOK_WARN_AFTER overrides it

# kind -> (side, state) of the start that runs it.
POINTS = {
    "pre-start": ("monitor", "init_handler"),    # host namespaces, before anything is created
    "pre-mount": ("child", "setup_rootfs"),      # the container's mount namespace, before its rootfs
    "mount": ("child", "setup_mounts"),          # after the mounts, before pivot_root
    "autodev": ("child", "setup_autodev"),       # after the mount hooks, before /dev is filled (lxc.autodev)
    "start": ("child", "setup_seccomp"),         # inside the container, under its seccomp filter
    "start-host": ("monitor", "sync_cgroup_limits"),  # host namespaces, after the start hooks, before FDS
    "stop": ("monitor", "stopping"),             # host namespaces, init gone; also reboot, aborting
    "post-stop": ("monitor", "stopping"),        # after the boot's cleanup; also reboot, aborting
}
# Namespaces spawn keeps for the stop hooks, as LXC names them and in LXC's order, when the
# container has its own: user (lxc.idmap) first.  The cgroup and time namespaces, which the
# child makes itself, are kept later, by sync_fds, and come last, as under LXC.
STOP_HOOK_NAMESPACES = ("user", "mnt", "pid", "uts", "ipc", "net")


def environment(name: str, config, log_level: str | None) -> dict[str, str]:
    """The variables LXC 5.0.2's lxc_init() sets for the hooks, set in the monitor's environment
    by init_handler at every boot.  `log_level`: lxcsm start -l's level name, if given; as
    LXC's lxc_log_get_level(), lxc.log.level wins over it and ERROR is the default."""
    env = {"LXC_NAME": name, "LXC_CONFIG_FILE": config.path}
    rootfs_mount = config.rootfs_mount or config.rootfs_path   # where setup_rootfs mounts it
    if rootfs_mount:
        env["LXC_ROOTFS_MOUNT"] = rootfs_mount
    if config.rootfs_path:
        env["LXC_ROOTFS_PATH"] = config.rootfs_path
    for variable, key in (("LXC_CONSOLE", "lxc.console.path"), ("LXC_CONSOLE_LOGPATH", "lxc.console.logfile")):
        if config.get_item(key):
            env[variable] = config.get_item(key)
    if os.path.exists("/proc/self/ns/cgroup"):   # LXC's cgns_supported()
        env["LXC_CGNS_AWARE"] = "1"
    env["LXC_LOG_LEVEL"] = config.log_level or log_level or "ERROR"
    env["LXC_HOOK_VERSION"] = "1" if config.get_item("lxc.hook.version") == "1" else "0"
    return env


def expose_pid(pid: int) -> None:
    """LXC_PID, init's pid, in the monitor's environment once spawn cloned it: the start-host,
    stop and post-stop hooks see it, the child's hooks (cloned before) do not."""
    os.environ["LXC_PID"] = str(pid)


def expose_ttys(names: list[str]) -> None:
    """container_ttys, the ttys' names in the container's devpts ("pts/N ..."), in the child's
    environment once setup_ttys made them (with lxc.tty.max), as LXC's lxc_setup() sets it: the
    start hook sees it (init's environment is made anew, in exec)."""
    if names:
        os.environ["container_ttys"] = " ".join(names)


def keeps_namespaces(config) -> bool:
    """Whether spawn holds the container's namespaces open after init: for a stop hook's
    arguments, and for the LXC_*_NS variables the stop and post-stop hooks see."""
    return bool(configured(config, "stop") or configured(config, "post-stop"))


def verify_start(config, rootfs: str) -> None:
    """Fail as LXC's verify_start_hooks() does when the first lxc.hook.start's value, taken
    whole as a path in the rootfs mounted at `rootfs`, is not executable there (LXC looks at
    the first one only)."""
    for _key, setting in configured(config, "start")[:1]:
        if not os.access(rootfs.rstrip("/") + setting.value, os.X_OK):
            raise StateError(f"{setting.file}:{setting.line}: {setting.key}: start hook {setting.value!r} "
                             f"not found in container (no executable file of that name in {rootfs})")


def configured(config, kind: str) -> list:
    """The (canonical key, setting) of each lxc.hook.KIND in effect, in config order."""
    return list(config.in_effect(f"lxc.hook.{kind}"))


def run(config, kind: str, log, args: tuple[str, ...] = (), must_succeed: bool = True, serve=None,
        stdin: int | None = None) -> None:
    """Run every lxc.hook.KIND; a failure raises StateError, or with must_succeed=False is
    logged at ERROR and the next hook runs.  `serve`: the monitor's command server.  `stdin`:
    the hook's, if not this process's own."""
    version_one = config.get_item("lxc.hook.version") == "1"
    for _key, setting in configured(config, kind):
        words = [setting.value] if version_one else [setting.value, shlex.quote(config.name), "lxc", kind]
        command = "exec " + " ".join([*words, *map(shlex.quote, args)])
        hook_env = dict(os.environ)
        if version_one:
            hook_env.update(LXC_HOOK_TYPE=kind, LXC_HOOK_SECTION="lxc")
        status, output = _run_shell(command, hook_env, kind, log, serve, stdin)
        log.trace("hook ended", kind=kind, status=status)
        if status == 0:
            continue
        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exited with status {os.WEXITSTATUS(status)}")
        error = (f"{setting.file}:{setting.line}: {setting.key}: hook {setting.value!r} {how}"
                 + (f": {output[-1]}" if output else ""))
        if must_succeed:
            raise StateError(error)
        log.error("hook failed", kind=kind, error=error)


def run_stop(ctx, target: str) -> None:
    """The stop hooks of a boot that ended (target "stop" or "reboot"), before its cleanup.
    The namespaces are in the environment, LXC_<KIND>_NS=PATH (LXC exposes them there before
    it removes the network, whatever the hook version), and with lxc.hook.version = 0 also
    arguments, KIND:PATH."""
    paths = {kind: f"/proc/{os.getpid()}/fd/{fd}" for kind, fd in ctx.boot.namespace_fds.items()}
    os.environ.update({f"LXC_{kind.upper()}_NS": path for kind, path in paths.items()}, LXC_TARGET=target)
    version_one = ctx.request.config.get_item("lxc.hook.version") == "1"
    spaces = () if version_one else tuple(f"{kind}:{path}" for kind, path in paths.items())
    run(ctx.request.config, "stop", ctx.log, spaces, must_succeed=False)


def run_post_stop(ctx, target: str) -> None:
    """The post-stop hooks, once the boot's cleanup is done: the stop hooks' environment."""
    os.environ["LXC_TARGET"] = target
    run(ctx.request.config, "post-stop", ctx.log, must_succeed=False)


def warn_after() -> float:
    """LXCSM_HOOK_WARN_AFTER, in seconds (0: never warn); the default if unset or not a number."""
    try:
        return max(0.0, float(os.environ.get("LXCSM_HOOK_WARN_AFTER", WARN_AFTER)))
    except ValueError:
        return WARN_AFTER


def _run_shell(command: str, env: dict[str, str], kind: str, log, serve=None,
               stdin: int | None = None) -> tuple[int, list[str]]:
    """/bin/sh -c COMMAND with stdout+stderr read back: (wait status, lines).  Its stdin is
    ours, or `stdin`: as LXC's lxc_popen(), which leaves it alone (measured: the monitor's, the
    child's, and the console for the start hook).  Each line is logged as it comes; a hook
    still running is warned about (warn_after()).

    posix_spawn, not subprocess: the start hook runs after pivot_root, where the monitor's
    Python library is out of reach, and only modules loaded before (os, select, time) are
    sure to be there.  The monitor's blocked signals are unblocked for the hook."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    given = [] if stdin is None else [(os.POSIX_SPAWN_DUP2, stdin, 0)]
    try:
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", command], env, setsigmask=(),
                             file_actions=[*given, (os.POSIX_SPAWN_DUP2, write_end, 1),
                                           (os.POSIX_SPAWN_DUP2, write_end, 2)])
    finally:
        os.close(write_end)
    log.trace("hook", kind=kind, command=command, hook_pid=pid)
    every = warn_after()
    started = time.monotonic()
    next_warning = started + every if every else None
    lines: list[str] = []
    partial = b""
    watched = [read_end] + ([serve] if serve is not None else [])
    try:
        while True:
            due = [t for t in (None if next_warning is None else max(0.0, next_warning - time.monotonic()),
                               serve.timeout() if serve is not None else None) if t is not None]
            ready = select.select(watched, [], [], min(due) if due else None)[0]
            if read_end in ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                *complete, partial = (partial + chunk).split(b"\n")
                for line in complete:
                    lines.append(line.decode(errors="replace"))
                    log.debug("hook output", kind=kind, line=lines[-1])
            if serve is not None:
                serve.serve_ready()
            if next_warning is not None and time.monotonic() >= next_warning:
                log.warn("hook still running", kind=kind, command=command, hook_pid=pid,
                         seconds=round(time.monotonic() - started, 1))
                next_warning = time.monotonic() + every
    finally:
        os.close(read_end)
    if partial:
        lines.append(partial.decode(errors="replace"))
        log.debug("hook output", kind=kind, line=lines[-1])
    _, status = os.waitpid(pid, 0)
    return status, lines
