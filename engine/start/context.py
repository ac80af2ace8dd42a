"""What the states of a start share, split by owner and by lifetime.

LXC keeps one `struct lxc_handler` of ~36 fields that both processes touch.
Here the monitor's context and the child's are different objects, and the
monitor's is split again by how long things live:

* `StartRequest`: what was asked for (config, command, mode); never changes.
* `MonitorContext`: lives as long as the monitor process - the command socket, the
  signal fd, the cgroup layout, and what must be undone when it ends.
* `Boot`: one boot of the container.  init_handler makes a fresh one, so a
  reboot starts from a clean slate with the same monitor.
* `ChildContext`: the container child's own context, built after the clone.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

from lxcsm.engine.start.undo import UndoLog

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from typing import Any

    from lxcsm.engine.config.model import Config
    from lxcsm.engine.linux.cgroups import Hierarchy
    from lxcsm.engine.linux.seccomp import Filter
    from lxcsm.engine.protocol.command_server import CommandServer
    from lxcsm.engine.protocol.sync import ChildEnd, MonitorEnd
    from lxcsm.engine.start.breakpoints import Breakpoints


class StartRequest(namedtuple("StartRequest", (
        "name", "lxcpath", "config", "command", "foreground", "pidfile", "sync_timeout", "breakpoints",
        "lab_skips", "log_level",
    ), defaults=(None, None, None, (), None))):
    # The fields' types, for a type checker; a namedtuple costs a start nothing to import.
    name: str
    lxcpath: str
    config: Config
    command: tuple[str, ...]       # init's argv: `-- COMMAND` or lxc.init.cmd
    foreground: bool
    pidfile: str | None
    # How long either side waits for the other at a sync point before giving up: as LXC,
    # None (only the peer's death ends a wait); LXCSM_SYNC_TIMEOUT sets one, for tests.
    sync_timeout: float | None
    breakpoints: Breakpoints | None
    # Lab mode (engine/start/lab.py): the SKIPS names of the steps this start leaves out, for
    # teaching; `lxcsm start` sets them only with --lab, -F and a COMMAND.
    lab_skips: tuple[str, ...]
    # -l's level name, if given: the hooks' LXC_LOG_LEVEL without lxc.log.level (hooks.environment).
    log_level: str | None

    __slots__ = ()

    @property
    def config_file(self) -> str:
        return self.config.path


class Failure(namedtuple("Failure", ("state", "side", "error", "already_running"), defaults=(False,))):
    """Why a start ended early: the state that failed, on which side, and the error."""

    state: str
    side: str                      # "monitor" or "child"
    error: str
    already_running: bool

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.side} state {self.state} failed: {self.error}"


class Boot:
    """One boot of the container: what init_handler starts afresh on a reboot."""

    __slots__ = ("number", "undo", "payload_cgroups", "channel", "init_pid", "init_pidfd",
                 "init_status", "namespace_fds")

    def __init__(self, number: int, undo: UndoLog | None = None) -> None:
        self.number = number
        self.undo = UndoLog() if undo is None else undo
        self.payload_cgroups: list[str] = []
        self.channel: MonitorEnd | None = None
        self.init_pid = 0
        self.init_pidfd = -1
        self.init_status: int | None = None     # os.waitpid status once init has exited
        self.namespace_fds: dict[str, int] = {}  # the container's namespaces, kept for stop hooks


class MonitorContext:
    """The monitor process's context, for as long as it lives."""

    __slots__ = ("request", "log", "hierarchies", "undo", "command_server", "signal_fd", "signal_mask",
                 "console_log", "console_peer", "seccomp",
                 "boot", "failure", "on_running", "on_paused", "pause", "saved_events")

    def __init__(self, request: StartRequest, log: Any, undo: UndoLog,
                 on_running: Callable[[], None] = lambda: None,
                 on_paused: Callable[[str], None] = lambda text: None) -> None:
        self.request = request
        self.log = log                             # the current state's EventLogger
        self.hierarchies: list[Hierarchy] = []
        self.undo = undo
        self.command_server: CommandServer | None = None     # once bound
        self.signal_fd = -1
        self.signal_mask: frozenset[int] = frozenset()  # what was blocked before us, for the child
        self.boot = Boot(number=0)
        self.failure: Failure | None = None
        self.on_running = on_running               # the daemon tells its caller here
        self.on_paused = on_paused                 # where a breakpoint's report goes
        # Pauses the start before (side, state) until the user goes on (start/breakpoints.py);
        # set by the monitor's runner, called by it and by spawn for the child's pauses.
        self.pause: Callable[[str, str], None] = lambda side, state: None
        self.saved_events: str | None = None       # where the flight record was kept, once stopped
        self.console_log = -1                      # lxc.console.logfile, open for appending
        self.console_peer = -1                     # the terminal relayed to the console (sync_fds)
        self.seccomp: Filter | None = None         # lxc.seccomp.profile's, built by init_handler


class ChildContext:
    """The container child's context, from clone3 to exec."""

    __slots__ = ("request", "channel", "log", "signal_mask", "rootfs", "failure", "tty_masters",
                 "tty_peers", "devpts", "console", "seccomp", "idmapped_rootfs",
                 "idmapped_entries")

    def __init__(self, request: StartRequest, channel: ChildEnd, log: Any,
                 signal_mask: frozenset[int], seccomp: Filter | None = None) -> None:
        self.request = request
        self.channel = channel
        self.log = log
        self.signal_mask = signal_mask
        self.rootfs = ""              # where the container's / is mounted before pivot_root
        self.failure: Failure | None = None
        self.tty_masters: list[int] = []   # for the monitor, at FDS
        self.tty_peers: list[int] = []     # kept open by the monitor, as LXC's keeps them
        self.devpts = -1                   # the container's /dev/pts, for lxc-attach's ptys
        self.console: tuple[int, int] | None = None   # (master, peer) of /dev/console
        self.seccomp = seccomp        # built by the monitor's init_handler, loaded by setup_seccomp
        self.idmapped_rootfs: int | None = None   # lxc.rootfs.options idmap=: the monitor's detached copy
        self.idmapped_entries: list[int] = []     # idmap= mount entries: the monitor's copies, in order
