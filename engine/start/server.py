"""Becoming the caller: what a process forked by the start server changes so that the start
it runs is the caller's own (engine/cli/serve.py forks it; server_client.py is the caller).

A cold `lxcsm start` is a process the user's shell made: in the shell's cgroups
and namespaces, with its credentials, cwd, root, umask, rlimits, nice value,
CPU affinity, environment, signal dispositions and mask, and its terminal on
fds 0-2.  A process forked by the server has the server's instead, and
everything the monitor and the container inherit would come from there: a
container started from a shell inside a network namespace would get its veth
in the host's, its cgroups would be below the server's unit, and a SIGINT the
user's shell ignores would not be ignored.  `adopt` takes each from the caller,
as the server's root reads it in /proc/PID (the peer's pid from SO_PEERCRED,
alive because it waits for the answer).  A caller in another pid or user
namespace, in another time namespace, under a seccomp filter or no_new_privs
(which no process can copy from another), with other capability sets or
another LSM label than the server's, is told to start cold (``StartsCold``):

* cgroups first (``move_into_cgroups``, every hierarchy, before anything else
  happens in the process): so that what it forks is accounted and limited
  where the caller is, and stopping the server's unit does not kill it;
* namespaces: cgroup, ipc, uts, net and mount, by setns(2) on the caller's
  /proc/PID/ns files; then its root and cwd (another pid namespace cannot be
  entered: the monitor's pid would stay in the server's);
* credentials (gid, supplementary groups; the uid is 0, the server accepts
  only root), umask, rlimits, nice value and CPU affinity;
* environment, signal dispositions and mask (as the client reports them from
  before it set its relays), and every fd it has open, at the same number (the
  client's, passed over the socket).

Not compared: the caller's securebits (a root shell's are 0, as the server's).
"""

from __future__ import annotations

import os
import resource
import signal

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

from lxcsm.engine.linux import cgroups, kernel

# setns order: the mount namespace last, so the caller's /proc/PID files are opened in ours.
NAMESPACES = ("cgroup", "ipc", "uts", "net", "mnt")
CAPABILITY_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
# The namespaces a caller must share with the server, and why (else it starts cold).
_COLD_NAMESPACES = {"pid": "its containers' monitors would be in the server's pid namespace",
                    "user": "the server cannot take its credentials there",
                    "time": "its clocks would be the server's",
                    "time_for_children": "its container's clocks would be the server's"}


class Refused(Exception):
    """A caller this server cannot become; the message says why (the client starts cold)."""


def _namespace(pid: int | str, kind: str) -> tuple[int, int] | None:
    """The namespace of that kind the process is in; None on a kernel without the kind."""
    try:
        found = os.stat(f"/proc/{pid}/ns/{kind}")
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class Itself:
    """What the process that will serve a request is before the request comes: its namespaces,
    capability sets, LSM label, cgroup mounts and cgroups.  A spare reads them while it waits
    (engine/cli/serve.py), so that a request costs only the reading of its caller's."""

    def __init__(self) -> None:
        self.namespaces = {kind: _namespace("self", kind) for kind in (*_COLD_NAMESPACES, *NAMESPACES)}
        status = _status("self")
        self.capabilities = {cap: status.get(cap) for cap in CAPABILITY_SETS}
        self.lsm_label = _lsm_label("self")
        self.cgroup_mounts = cgroups._mounts()
        self.cgroups = cgroups._memberships("self")

    def shares_namespace(self, pid: int, kind: str) -> bool:
        return self.namespaces[kind] == _namespace(pid, kind)


class StartsCold(Refused):
    """A caller whose start this server cannot run as its own: it starts cold, as if no server answered."""


def check(pid: int, own: Itself) -> None:
    """StartsCold for a caller the server cannot become."""
    for kind, why in _COLD_NAMESPACES.items():
        if not own.shares_namespace(pid, kind):
            raise StartsCold(f"the caller (pid {pid}) is in another {kind} namespace than the server: {why}")
    fields = _status(pid)
    if fields.get("Seccomp", "0") != "0" or fields.get("NoNewPrivs", "0") != "0":
        # Neither can be copied from another process: a start under them must run where they are.
        raise StartsCold(f"the caller (pid {pid}) runs under a seccomp filter or no_new_privs")
    if any(fields.get(cap) != own.capabilities[cap] for cap in CAPABILITY_SETS):
        # Fewer capabilities than the server (capsh --drop, a systemd unit's CapabilityBoundingSet):
        # what the start may do is what they allow, so it runs where they apply.
        raise StartsCold(f"the caller (pid {pid}) has other capability sets than the server")
    if _lsm_label(str(pid)) != own.lsm_label:
        raise StartsCold(f"the caller (pid {pid}) runs under another LSM label than the server")


def _status(pid: int | str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _lsm_label(pid: str) -> str | None:
    """The process's AppArmor or SELinux label; None without an LSM that has one."""
    try:
        with open(f"/proc/{pid}/attr/current") as label:
            return label.read().rstrip("\0\n")
    except OSError:
        return None


def move_into_cgroups(pid: int, own: Itself) -> None:
    """Move this process into the caller's cgroup on every hierarchy the caller is in."""
    mounts = own.cgroup_mounts
    for controllers, path in cgroups._memberships(str(pid)).items():
        if own.cgroups.get(controllers) == path:
            continue   # there already: a cgroup-v1 migration may wait for an RCU grace period
        mount = next((m for m in mounts
                      if (m[0] == "cgroup2") == (not controllers) and m[1].issuperset(controllers)), None)
        if mount is None:
            if controllers:   # a v1 hierarchy the server cannot see: the caller's place in it would be lost
                raise Refused(f"the caller's cgroup hierarchy {','.join(controllers)} is not mounted for the server")
            continue          # the empty cgroup2 line of a host without a mounted cgroup2
        _fstype, _options, mountpoint, root = mount
        directory = cgroups._inside(mountpoint, root, path)
        try:
            with open(os.path.join(directory, "cgroup.procs"), "w") as procs:
                procs.write("0")
        except OSError as err:
            raise Refused(f"cannot join the caller's cgroup {directory}: {err.strerror}") from None


def enter_namespaces(pid: int, own: Itself) -> None:
    """setns into the caller's namespaces, then take its root and cwd."""
    opened = {}
    try:
        for kind in NAMESPACES:
            if not own.shares_namespace(pid, kind):
                opened[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        cwd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise Refused(f"cannot open the caller's /proc/{pid}: {err.strerror}") from None
    try:
        for kind in NAMESPACES:
            if kind in opened:
                kernel.setns(opened[kind])
        os.fchdir(root)
        os.chroot(".")
        os.fchdir(cwd)
    except OSError as err:
        raise Refused(f"cannot enter the caller's namespaces: {err.strerror}") from None
    finally:
        for fd in (*opened.values(), root, cwd):
            os.close(fd)


def take_process_settings(pid: int) -> None:
    """gid, groups, umask, rlimits, nice value and CPU affinity of the caller."""
    status = {}
    with open(f"/proc/{pid}/status") as lines:
        for line in lines:
            key, _, value = line.partition(":")
            status[key] = value.split()
    os.setgroups([int(g) for g in status.get("Groups", [])])
    os.setgid(int(status["Gid"][0]))
    if "Umask" in status:
        os.umask(int(status["Umask"][0], 8))
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            limit = getattr(resource, name)
            resource.setrlimit(limit, resource.prlimit(pid, limit))
    os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, pid))
    os.sched_setaffinity(0, os.sched_getaffinity(pid))


def take_signal_state(blocked: list[int], ignored: list[int]) -> None:
    """The caller's ignored signals and mask; every other signal gets the disposition a fresh
    Python process has (SIGINT raises KeyboardInterrupt, SIGPIPE and SIGXFSZ are ignored)."""
    python_ignores = {signal.SIGPIPE, signal.SIGXFSZ}
    for signo in signal.valid_signals():
        if signo in (signal.SIGKILL, signal.SIGSTOP):
            continue
        handler: signal.Handlers | Callable[[int, FrameType | None], Any]
        if signo in ignored or signo in python_ignores:
            handler = signal.SIG_IGN
        elif signo == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        try:
            signal.signal(signo, handler)
        except (OSError, ValueError):
            pass   # the real-time signals glibc keeps for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def take_environment(environ: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(environ)


def take_title(pid: int) -> None:
    """The caller's command line and comm, as ps shows a cold `lxcsm start` (cut to the room
    this process's own argv has; see `lxcsm serve`)."""
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        title = cmdline.read().rstrip(b"\0").decode(errors="surrogateescape")   # NULs between the arguments
    with open(f"/proc/{pid}/comm") as comm:
        kernel.set_comm(comm.read().rstrip("\n"))
    kernel.set_cmdline(title)
