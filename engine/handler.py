"""What the states of a start share, split by owner and by lifetime.

LXC keeps one `struct lxc_handler` of ~36 fields that both processes touch.
Here the monitor's context and the child's are different objects, and the
monitor's is split again by how long things live:

* `StartRequest`: what was asked for (config, command, mode); never changes.
* `Monitor`: lives as long as the monitor process - the command socket, the
  signal fd, the cgroup layout, and what must be undone when it ends.
* `Boot`: one boot of the container.  init_handler makes a fresh one, so a
  reboot starts from a clean slate with the same monitor.
* `Child`: the container child's own context, built after the clone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from lxcsm.engine.cleanup import UndoLog

if TYPE_CHECKING:
    from lxcsm.engine.cgroups import Hierarchy
    from lxcsm.engine.config import Config
    from lxcsm.engine.sync import ChildEnd, MonitorEnd


class StartRequest(NamedTuple):
    name: str
    lxcpath: str
    config: Config
    command: tuple[str, ...]          # init's argv: `-- COMMAND` or lxc.init.cmd
    foreground: bool
    pidfile: str | None = None
    # How long either side waits for the other at a sync point before giving up;
    # LXCSM_SYNC_TIMEOUT overrides it (a test's silent child should not cost 30 s).
    sync_timeout: float = 30.0
    breakpoints: Any = None            # engine.breakpoints.Breakpoints, or None

    @property
    def config_file(self) -> str:
        return self.config.path


class StateError(Exception):
    """A state could not do its work, for a reason its message states in full.

    The supervisor reports these as they are; any other exception is a bug,
    and its traceback is logged at DEBUG as well.
    """


class Failure(NamedTuple):
    """Why a start ended early: the state that failed, on which side, and the error."""
    state: str
    side: str
    error: str
    already_running: bool = False

    def __str__(self) -> str:
        return f"{self.side} state {self.state} failed: {self.error}"


@dataclass
class Boot:
    number: int
    undo: UndoLog = field(default_factory=UndoLog)
    payload_cgroups: list[str] = field(default_factory=list)
    channel: MonitorEnd | None = None
    init_pid: int = 0
    init_pidfd: int = -1
    init_status: int | None = None     # os.waitpid status once init has exited


@dataclass
class Monitor:
    request: StartRequest
    log: Any                           # the current state's EventLogger
    hierarchies: list[Hierarchy] = field(default_factory=list)
    undo: UndoLog = field(default_factory=UndoLog)
    commands: Any = None               # engine.commands.CommandServer, once bound
    signal_fd: int = -1
    signal_mask: frozenset[int] = frozenset()   # what was blocked before us, for the child
    boot: Boot = field(default_factory=lambda: Boot(number=0))
    failure: Failure | None = None
    on_running: Callable[[], None] = lambda: None   # the daemon tells its caller here
    on_paused: Callable[[str], None] = lambda text: None   # where a breakpoint's report goes
    saved_events: str | None = None    # where the flight record was kept, once stopped


@dataclass
class Child:
    request: StartRequest
    channel: ChildEnd
    log: Any
    signal_mask: frozenset[int]
    rootfs: str = ""                   # where the container's / is mounted before pivot_root
    failure: Failure | None = None
