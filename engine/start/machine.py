"""The two state machines of a container start, as data.

Theory of operation
===================

Rule 1: every state and every transition of a start is declared in this file.
The supervisor (engine/start/supervisor.py) runs whatever these tables say, the
diagrams and teaching tools are drawn from them, and a move the tables do not
allow fails in one place (transitions' MachineError) instead of somewhere in
the middle of a start.

Two processes, two machines
---------------------------
LXC's start.c runs one protocol from two functions far apart: lxc_spawn() in
the monitor and do_start() in the container's first process.  Here each
process has its own machine:

* the MONITOR machine runs in the `lxcsm start` process (or its daemon): it
  owns everything seen from the host - the command socket, the cgroups, the
  namespaces' outside ends - and supervises init until it exits;
* the CHILD machine runs in the process clone3() creates inside the new
  namespaces; it builds the container's view of the world (rootfs, /dev,
  mounts, hostname, pivot_root) and finally becomes init by exec.

Each state is one module, states/monitor/<state>.py or states/child/<state>.py,
whose ``enter(ctx)`` does the phase's work and returns the trigger to fire
next, named for what happened ("child_spawned").  Modules never move the
machine themselves, never log state changes, and never call each other.

Where the machines meet
-----------------------
The two meet only at the sync channel (engine/protocol/sync.py), at LXC 5's sync
points, in this order::

    monitor                                child
    -------                                -----
    spawn               --STARTUP-->         startup
    (with lxc.idmap: spawn, then
     write_id_maps      --STARTUP-->         startup, then become_userns_root)
    sync_configure      <--CONFIGURE--       configure   (child has unshared its cgroup ns)
    sync_post_configure --POST_CONFIGURE-->  configure   (network is in place)
    (with idmap= on lxc.rootfs.options or a mount entry:
     sync_idmapped_mounts --IDMAPPED_MOUNTS--> sync_idmapped_mounts (the rootfs, the binds, idmapped))
                                             setup_*     (rootfs ... pivot_root ... seccomp,
                                                          the start hooks)
    sync_cgroup_limits  <--CGROUP_LIMITS--   sync_cgroup_limits
    (device limits, the start-host hooks)
    sync_fds            --FDS-->             sync_cgroup_limits (its barrier ends)
    sync_fds            <--FDS--             sync_fds    (the fds the monitor keeps)
    sync_ready_start    --READY_START-->     sync_fds    (its barrier ends)
                                             exec
    sync_ready_start    <--end-of-file--     (init runs)

A state named sync_* sends or waits for the message in its name; a child
barrier (wake one message, wait for the next) ends in the state after it.  Any state of either side may fail: the
monitor then enters `aborting`, which kills the child and unwinds what was
recorded (engine/start/undo.py); the child enters its own `aborting`, which
sends its error text to the monitor and exits.

A container with a user namespace (lxc.idmap)
---------------------------------------------
A process cloned with CLONE_NEWUSER maps no id: until its uid_map and gid_map
are written from outside, it cannot become root in its own namespace.  As in
LXC's lxc_spawn(), the monitor writes them between the clone and STARTUP:
`spawn` then fires `child_cloned` instead of waking the child, and
`write_id_maps` writes the maps, hands the payload cgroups to the container's
root and sends STARTUP, which to such a child also means "your ids are
mapped".  The child's `startup` then fires `started_in_user_namespace`, and
`become_userns_root` unshares the network namespace (only now, after the maps,
as LXC: older kernels fixed its sysfs owners when it was made), then switches to
uid and gid 0 of its user namespace (LXC's do_start(), between STARTUP and
CONFIGURE).  Without lxc.idmap neither state is entered: they are the tables'
`detours`, and the diagram above is the whole story.

Such a container may run on a rootfs whose files are owned by 0 on disk,
never shifted: with ``lxc.rootfs.options = idmap=container`` the monitor's
`sync_post_configure` fires `rootfs_to_idmap`, and `sync_idmapped_mounts`
(another detour) makes a detached copy of the rootfs idmapped to the child's
user namespace - only the host's root may - and sends it with
IDMAPPED_MOUNTS.  The child's `configure` fires `rootfs_to_receive`, its own
`sync_idmapped_mounts` takes the fd, and `setup_rootfs` attaches it instead
of binding the rootfs (LXC's lxc_rootfs_prepare_parent() and
lxc_rootfs_prepare_child()).  A bind in lxc.mount.entry with idmap= takes the
same detour: the monitor idmaps a copy of its source too, sent in the same
message, and `setup_mounts` attaches it after the other entries, where LXC
attaches it (LXC makes that copy later, in an exchange of its own per entry).

After the start
---------------
`poll` waits for init to exit while forwarding signals and answering the
command socket.  How init ended decides the next state, as the kernel reports
a reboot(2) inside a pid namespace: killed by SIGHUP is a reboot request
(`reboot`, which cleans up this boot and enters init_handler again with the
same monitor), killed by SIGINT is a halt, anything else an exit; both of
those go through `stopping` to `stopped`.  LXC does this with a ``goto
reboot`` in lxccontainer.c; here it is one more arrow.
"""

from __future__ import annotations

import importlib
from collections import namedtuple
from collections.abc import Callable
from types import ModuleType

from transitions import Machine


class Table(namedtuple("Table", ("side", "states", "transitions", "initial", "final", "detours"),
                       defaults=((),))):
    side: str                      # "monitor" or "child": also the package under states/
    states: tuple[str, ...]        # in the order of a normal start
    transitions: tuple[tuple[str, str | tuple[str, ...], str], ...]   # (trigger, source(s), dest)
    initial: str
    final: tuple[str, ...]
    detours: tuple[str, ...]       # states only some configs enter, off the road of the others

    def road(self) -> tuple[str, ...]:
        """The states a start without any detour enters, in order (and where it may end)."""
        return tuple(state for state in self.states if state not in self.detours)

    __slots__ = ()

    def module(self, state: str) -> ModuleType:
        return importlib.import_module(f"lxcsm.states.{self.side}.{state}")

    def triggers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(trigger for trigger, _src, _dest in self.transitions))


# The monitor: a normal start runs these top to bottom, down to `poll`.
MONITOR_STATES = (
    "init_handler",        # command socket, STARTING, environment, signal fd
    "monitor_cgroup",      # lxc.monitor.NAME created and entered
    "spawn",               # lxc.payload.NAME, clone3 into new namespaces, STARTUP
    "write_id_maps",       # lxc.idmap: the child's uid/gid maps, its cgroups chowned, STARTUP
    "sync_configure",      # CONFIGURE: the host side of the network
    "sync_post_configure", # POST_CONFIGURE: the child may set itself up
    "sync_idmapped_mounts",  # idmap=: IDMAPPED_MOUNTS, the rootfs and binds idmapped to a user namespace
    "sync_cgroup_limits",  # CGROUP_LIMITS: the child is set up; device limits; start-host hooks
    "sync_fds",            # FDS: fds the monitor keeps for later
    "sync_ready_start",    # READY_START: the child execs init; RUNNING
    "poll",                # supervise init until it exits
    "reboot",              # init asked for a reboot: clean up, start again
    "stopping",            # init is gone: undo everything
    "aborting",            # a state failed: kill the child, undo everything
    "stopped",
)

_MONITOR_RUNNING = MONITOR_STATES[: MONITOR_STATES.index("stopping")]

MONITOR = Table(
    side="monitor",
    states=MONITOR_STATES,
    transitions=(
        ("handler_ready", "init_handler", "monitor_cgroup"),
        ("monitor_cgroup_entered", "monitor_cgroup", "spawn"),
        ("child_spawned", ("spawn", "write_id_maps"), "sync_configure"),
        ("child_cloned", "spawn", "write_id_maps"),   # into a user namespace: map it first
        ("network_ready", "sync_configure", "sync_post_configure"),
        ("child_released", ("sync_post_configure", "sync_idmapped_mounts"), "sync_cgroup_limits"),
        ("rootfs_to_idmap", "sync_post_configure", "sync_idmapped_mounts"),   # idmap=: rootfs or a bind
        ("limits_applied", "sync_cgroup_limits", "sync_fds"),
        ("fds_received", "sync_fds", "sync_ready_start"),
        ("init_started", "sync_ready_start", "poll"),
        ("init_exited", "poll", "stopping"),
        ("init_halted", "poll", "stopping"),
        ("init_rebooted", "poll", "reboot"),
        ("boot_cleaned_up", "reboot", "init_handler"),
        ("cleaned_up", ("stopping", "aborting"), "stopped"),
        # Abort is a transition like any other, from any state that can fail.
        ("failed", _MONITOR_RUNNING, "aborting"),
    ),
    initial="init_handler",
    final=("stopped",),
    detours=("write_id_maps", "sync_idmapped_mounts"),   # lxc.idmap only
)

# The child: created by the monitor's spawn state, gone at exec.
CHILD_STATES = (
    "startup",             # wait until the monitor has put us in our cgroups
    "become_userns_root",  # lxc.idmap: uid/gid 0 of our user namespace; our own network namespace
    "configure",           # own cgroup namespace; the monitor configures us
    "sync_idmapped_mounts",  # idmap=: IDMAPPED_MOUNTS, the rootfs and binds the monitor idmapped for us
    "setup_rootfs",        # mounts made dependent; the rootfs bind-mounted
    "setup_hostname",      # uts name
    "setup_network",       # our ends of the veths: named, addressed, up
    "setup_mounts",        # /dev's tmpfs, lxc.mount.auto, lxc.mount.fstab, lxc.mount.entry; mount hooks
    "setup_autodev",       # autodev hooks, then /dev's basic nodes and devpts
    "setup_ttys",          # lxc.tty.max: /dev/ttyN on ptys whose masters the monitor keeps
    "setup_pivot_root",    # the rootfs becomes / (shared), the host's root is detached
    "setup_sysctl",        # a fresh boot id; lxc.sysctl.*: the container's /proc/sys
    "setup_capabilities",  # lxc.cap.drop / lxc.cap.keep: the bounding set
    "setup_seccomp",       # no_new_privs, the seccomp filter loaded; start hooks under them
    "sync_cgroup_limits",  # tell the monitor we are set up
    "sync_fds",            # hand the monitor our fds; wait for the go
    "exec",                # become init
    "aborting",            # report the failure to the monitor and exit
)

CHILD = Table(
    side="child",
    states=CHILD_STATES,
    transitions=(
        ("started", "startup", "configure"),
        ("started_in_user_namespace", "startup", "become_userns_root"),
        ("root_in_user_namespace", "become_userns_root", "configure"),
        ("configured", ("configure", "sync_idmapped_mounts"), "setup_rootfs"),
        ("rootfs_to_receive", "configure", "sync_idmapped_mounts"),   # idmap=: rootfs or a bind
        ("rootfs_mounted", "setup_rootfs", "setup_hostname"),
        ("hostname_set", "setup_hostname", "setup_network"),
        ("network_configured", "setup_network", "setup_mounts"),
        ("mounts_done", "setup_mounts", "setup_autodev"),
        ("dev_ready", "setup_autodev", "setup_ttys"),
        ("ttys_created", "setup_ttys", "setup_pivot_root"),
        ("root_pivoted", "setup_pivot_root", "setup_sysctl"),
        ("sysctls_set", "setup_sysctl", "setup_capabilities"),
        ("capabilities_set", "setup_capabilities", "setup_seccomp"),
        ("seccomp_loaded", "setup_seccomp", "sync_cgroup_limits"),
        ("limits_applied", "sync_cgroup_limits", "sync_fds"),
        ("ready_to_start", "sync_fds", "exec"),
        ("failed", CHILD_STATES[:-1], "aborting"),
    ),
    initial="startup",
    # exec ends the machine by replacing the process; aborting by exiting it.
    final=("exec", "aborting"),
    detours=("become_userns_root", "sync_idmapped_mounts"),   # lxc.idmap only
)

TABLES = {"monitor": MONITOR, "child": CHILD}


class Position:
    """Where a machine is: the model transitions moves.  It keeps the current state in `state`
    and adds `trigger(name)` - and a method per trigger, and `is_STATE` - to it."""

    state: str
    trigger: Callable[[str], bool]
    machine: Machine   # the machine that moves it


# Machines made ahead, one per side, each with its position: `lxcsm serve` makes them before
# it forks (prebuild), and the first supervisor of that side in a process forked from it takes
# one.  Making a machine costs a start ~1.3 ms; binding a position to a machine made ahead
# (transitions' add_model) still wrote ~0.3 MiB of the heap the monitor would otherwise share
# with the server, so both are made ahead.
PREBUILT: dict[str, Position] = {}


def prebuild() -> None:
    for table in (MONITOR, CHILD):
        PREBUILT[table.side] = _position(table)


def build(table: Table) -> Position:
    """The position of a transitions Machine that runs `table`: the table is its only way to move."""
    return PREBUILT.pop(table.side, None) or _position(table)


def _position(table: Table) -> Position:
    position = Position()
    position.machine = Machine(
        model=position, states=list(table.states), initial=table.initial,
        transitions=[{"trigger": trigger, "source": list(source) if isinstance(source, tuple) else source,
                      "dest": dest} for trigger, source, dest in table.transitions],
        auto_transitions=False)
    return position


def states_named(name: str) -> list[tuple[str, str]]:
    """The (side, state) pairs a user's NAME means: STATE (in either machine), SIDE:STATE,
    or a prefix such as ``setup`` for the first ``setup_*`` state of each machine."""
    side, _, state = name.rpartition(":")
    tables = {s: t for s, t in TABLES.items() if side in ("", s)}
    found = [(s, state) for s, t in tables.items() if state in t.states]
    if not found:
        found = [(s, group[0]) for s, t in tables.items()
                 if (group := [st for st in t.states if st.startswith(state + "_")])]
    return found

