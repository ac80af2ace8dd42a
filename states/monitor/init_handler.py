"""init_handler (monitor) - a fresh handler for one boot of the container.

Replaces LXC's lxc_init_handler() and lxc_init() (start.c).

Afterwards the kernel sees:
* the abstract unix socket ``@LXCPATH/NAME/command`` bound and listening.  It
  is bound on the first boot only and survives reboots.  Binding it is also
  the "already running" check: the name can be bound once per host network
  namespace, by us or by LXC itself - or by anyone else, which is a failure
  naming that process, not "already running";
* the signals the monitor forwards to init blocked, and delivered to a
  signalfd instead (LXC's setup_signal_fd), so that none is lost between
  here and `poll`;
* the pid file (-p), holding the monitor's pid, on the first boot, and
  lxc.console.logfile opened for appending;
* with lxc.console.buffer.size, a new, empty ring buffer in the monitor's
  memory for the console's output of this boot (LXC's
  lxc_terminal_create_ringbuf), which the command socket reads (CONSOLE_LOG);
* with lxc.monitor.unshare (not 0), the monitor in a mount namespace of its
  own from the first boot on, every mount in it a slave of the host's, as
  lxc-start does right after its pid file: what the hooks the monitor runs
  mount stays out of the host, while the host's mounts still reach them;
* LXC_NAME, LXC_CONFIG_FILE, LXC_ROOTFS_PATH, LXC_ROOTFS_MOUNT, LXC_CONSOLE,
  LXC_CONSOLE_LOGPATH, LXC_CGNS_AWARE, LXC_LOG_LEVEL and LXC_HOOK_VERSION in
  the monitor's environment, for hooks (hooks.environment, as lxc_init's);
* whatever the lxc.hook.pre-start hooks did, run here in the host's
  namespaces, before anything of the container exists (every boot).

Then, as LXC's lxc_init() reads lxc.seccomp.profile, the policy (checked by
preflight) becomes a libseccomp filter, held in the monitor's memory - which
the child is a copy of: it loads the filter in setup_seccomp, after
pivot_root, where the policy file and libseccomp are out of its reach.  Its
default action, one rule per syscall of the sections for this machine (names
libseccomp does not know are skipped and logged, as LXC does),
reject_force_umount as LXC spells it out.  As LXC's use_seccomp(), a
monitor that already runs under a seccomp filter (lxcsm started inside a
container) builds none, unless lxc.seccomp.allow_nesting = 1 asks for the
policy to be stacked on top; nor does one on a kernel without seccomp.

The container's state is STARTING.  Nothing else on the host has changed yet.
"""

import os
import signal
import time

from lxcsm import hooks
from lxcsm.engine import log as logmod
from lxcsm.engine.config.values import console_size
from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import cgroups, kernel
from lxcsm.engine.protocol import command_client, command_server, command_socket
from lxcsm.engine.protocol.command_server import AlreadyRunning, CommandServer
from lxcsm.engine.protocol.command_socket import LxcState
from lxcsm.engine.start.context import Boot
from lxcsm.engine.start.undo import UndoLog

# Signals init should hear about when they are sent to the monitor (SIGCHLD is
# read from the same fd: it is how the monitor notices its child's exit).
FORWARDED = frozenset({
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGPWR, signal.SIGALRM, signal.SIGWINCH,
})
WATCHED = FORWARDED | {signal.SIGCHLD}
# How long a root-owned holder of the name may take to answer as a running monitor.
HOLDER_PATIENCE = 2.0


def enter(ctx) -> str:
    request, config = ctx.request, ctx.request.config
    ctx.boot = Boot(number=ctx.boot.number + 1, undo=UndoLog(ctx.undo.journal))

    if ctx.command_server is None:
        sock = _bind(request)
        ctx.command_server = CommandServer(sock, request.name, config, request.lxcpath, ctx.log)
        # Every event of the start, the child's included, also tells the status lxcsm info shows.
        observe = ctx.command_server.start_status.observe

        def record(event: dict) -> None:
            observe(event)   # first: it makes a child hook's pid the host's, for the record too
            logmod.flight_recorder(event)

        logmod.record_to(record)
        ctx.undo.record("command_socket", request.name, handle=ctx.command_server)
        address = command_socket.socket_name(request.lxcpath, request.name).decode()[1:]
        ctx.log.trace("command socket bound", address=address)
        if request.pidfile:
            ctx.undo.record("pidfile", request.pidfile)   # first: one a full disk cut short is removed too
            try:
                with open(request.pidfile, "w") as pidfile:
                    pidfile.write(f"{os.getpid()}\n")
            except OSError as err:   # a full disk fails the close, whose error names no file
                raise OSError(err.errno, err.strerror, request.pidfile) from None
        if monitor_unshares(config):
            kernel.unshare(kernel.CLONE_NEWNS)
            kernel.mount(None, "/", None, kernel.MS_SLAVE | kernel.MS_REC)
            ctx.log.trace("unshared", namespace="mnt", why="lxc.monitor.unshare")
    ctx.command_server.init_pid, ctx.command_server.init_pidfd = 0, -1   # a reboot's old init is gone
    ctx.command_server.running_items.clear()                        # and its devices
    ctx.command_server.new_ttys({})                                 # and its terminals
    ctx.command_server.set_state(LxcState.STARTING)

    os.environ.update(hooks.environment(request.name, config, request.log_level))

    console_log = config.get_item("lxc.console.logfile")
    if console_log and ctx.console_log < 0:   # the first boot's; later boots append to it
        ctx.console_log = os.open(console_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        ctx.undo.record("kept_fd", ctx.console_log)
    buffer_size = console_size(config.get_item("lxc.console.buffer.size"))
    if buffer_size:
        from lxcsm.engine.linux import terminal
        ctx.command_server.console_buffer = terminal.RingBuffer(buffer_size)
        ctx.log.trace("console ring buffer", size=buffer_size)
    if ctx.signal_fd < 0:
        ctx.signal_mask = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED))
        ctx.signal_fd = kernel.signalfd(set(WATCHED))
        ctx.log.trace("signal fd created", fd=ctx.signal_fd)

    if not ctx.hierarchies:
        ctx.hierarchies = cgroups.hierarchies()
        if not ctx.hierarchies:
            # LXC refuses too: a container outside any cgroup could be neither limited nor
            # found by LXC's tools, and a stop could not be sure it killed everything.
            raise StateError("no cgroup hierarchy is mounted here (none in /proc/self/mountinfo)")
    if ctx.boot.number == 1:
        for setting in config.unsupported:
            ctx.log.warn("not supported yet", key=setting.key, value=setting.value,
                         file=setting.file, line=setting.line)
        if config.uts_name and not {"uts"} & (config.namespaces() | set(config.namespace_shares())):
            # lxc-start would rename the host here without a word; setup_hostname leaves it.
            ctx.log.warn("lxc.uts.name not set: the container keeps the host's uts namespace, whose hostname"
                         " lxcsm never changes", hostname=config.uts_name)
    hooks.run(config, "pre-start", ctx.log, serve=ctx.command_server)
    policies = config.in_effect("lxc.seccomp.profile")
    if policies and not seccomp_wanted(config):
        ctx.log.info("already seccomp-confined (or no seccomp): policy not loaded",
                     policy=policies[-1][1].value)
    elif policies:
        # Only configs with a policy pay for the parser and libseccomp.
        from lxcsm.engine.config import seccomp_policy
        from lxcsm.engine.linux import seccomp
        setting = policies[-1][1]
        policy = seccomp_policy.read(setting.as_path())
        ctx.seccomp = seccomp.Filter(policy, os.uname().machine)
        ctx.log.trace("seccomp filter built", policy=setting.value, rules=len(policy.rules),
                      skipped=" ".join(ctx.seccomp.skipped))
    return "handler_ready"


def monitor_unshares(config) -> bool:
    return int(config.get_item("lxc.monitor.unshare") or 0) != 0


def seccomp_confined() -> bool | None:
    """Whether this process runs under a seccomp filter or in strict mode; None: the kernel
    has no seccomp (no Seccomp: line in /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return line.split()[1] != "0"
    return None


def seccomp_wanted(config) -> bool:
    if config.get_item("lxc.seccomp.allow_nesting") == "1":
        return True
    return seccomp_confined() is False


def _bind(request):
    """The command socket, bound; AlreadyRunning if the container's monitor holds the name.

    Anyone may bind an abstract name: when it is taken, the holder is asked
    who it is (command_client.holder).  A process of another user, or one
    that answers as no monitor does, fails the start naming it, as lxc-start
    fails.  A monitor that has bound the name but not listened yet, or has
    said STOPPED and not exited yet, is given a moment.
    """
    deadline = time.monotonic() + HOLDER_PATIENCE
    while True:
        try:
            return command_server.bind(request.lxcpath, request.name)
        except AlreadyRunning:
            verdict, who = command_client.holder(request.lxcpath, request.name)
            if verdict == command_client.RUNS:
                raise
            if verdict == command_client.NOT_A_MONITOR or time.monotonic() > deadline:
                raise StateError(who) from None
        time.sleep(0.02)


def plan(request) -> list[str]:
    config = request.config
    steps = [f"bind the abstract socket @{command_socket.socket_name(request.lxcpath, request.name).decode()[1:]}"
             " (taken by its monitor: the container is already running; by anything else: fail, naming it)",
             "container state STARTING",
             "block " + " ".join(sorted(signal.Signals(s).name for s in WATCHED)) + " and read them from a signalfd"]
    if request.pidfile:
        steps.append(f"write the monitor's pid to {request.pidfile}")
    if monitor_unshares(config):
        steps.append("unshare(CLONE_NEWNS); mount --make-rslave / (lxc.monitor.unshare)")
    if buffer_size := console_size(config.get_item("lxc.console.buffer.size")):
        steps.append(f"keep the console's last {buffer_size} bytes in memory for CONSOLE_LOG "
                     "(lxc.console.buffer.size)")
    steps += [f"warn: {s.key} is not supported yet ({s.file}:{s.line})" for s in config.unsupported]
    steps += [f"run lxc.hook.pre-start: {s.value}" for _key, s in hooks.configured(config, "pre-start")]
    policies = config.in_effect("lxc.seccomp.profile")
    if policies and not seccomp_wanted(config):
        steps.append(f"build no seccomp filter from {policies[-1][1].value}: lxcsm is already under one "
                     "(lxc.seccomp.allow_nesting = 1 would stack it), or the kernel has no seccomp")
    elif policies:
        steps.append(f"build a seccomp filter from {policies[-1][1].value} (loaded by the child's setup_seccomp)")
    return steps
