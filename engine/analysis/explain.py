"""`lxcsm explain [STATE]`: what each state of a start does, read from the engine itself.

Nothing here is prose about states.  A state module's docstring is the one
explanation there is (first line "name (side) - summary", then "Replaces
LXC's ...", then usually "Afterwards the kernel sees ..."); this module shows
it, and adds what can be read mechanically:

* the LXC 5 functions the state replaces: the names followed by ``()`` in
  the docstring's "Replaces" sentence;
* the system calls: every call that ``enter()`` - and the module's own
  helpers it calls - makes to a wrapper listed in `SYSCALLS`, found with
  `ast` in the module's source, in source order;
* the sync messages it sends and waits for (calls to the channel's `wake`,
  `wait_for`, `barrier`... with a `SyncMsg` argument);
* its transitions in and out, from the table in engine/start/machine.py.

`lxcsm graph --sequence` uses the same sync analysis to draw the protocol.
`lxcsm explain LXC_FUNCTION` (lxc_spawn, do_start ...) goes the other way,
from LXC's names to these states: engine/analysis/lxc_functions.py.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from lxcsm.engine.protocol.sync import SyncMsg
from lxcsm.engine.start.machine import TABLES, Table

# What each wrapper does to the kernel: (system call, file or object involved).
# Keys are "module.function" as a state calls them (modules by the last part of
# their name), or ".method" for a method of the sync channel.
SYSCALLS = {
    # engine/linux/kernel.py: each function wraps one system call
    "kernel.mount": ("mount(2)", ""),
    "kernel.umount2": ("umount2(2)", ""),
    "kernel.pivot_root": ("pivot_root(2)", ""),
    "kernel.unshare": ("unshare(2)", ""),
    "kernel.setns": ("setns(2)", ""),
    "kernel.set_pdeathsig": ("prctl(2)", "PR_SET_PDEATHSIG"),
    "kernel.set_no_new_privs": ("prctl(2)", "PR_SET_NO_NEW_PRIVS"),
    "kernel.set_dumpable": ("prctl(2)", "PR_SET_DUMPABLE"),
    "kernel.set_personality": ("personality(2)", "lxc.arch"),
    "kernel.clear_ambient_capabilities": ("prctl(2)", "PR_CAP_AMBIENT_CLEAR_ALL"),
    "kernel.join_new_session_keyring": ("keyctl(2)", "KEYCTL_JOIN_SESSION_KEYRING: a new session keyring"),
    "kernel.create_core_scheduling_cookie": ("prctl(2)", "PR_SCHED_CORE_CREATE: a core scheduling group"),
    "kernel.core_scheduling_cookie": ("prctl(2)", "PR_SCHED_CORE_GET"),
    "kernel.drop_bounding_capability": ("prctl(2)", "PR_CAPBSET_DROP"),
    "kernel.last_capability": ("prctl(2)", "PR_CAPBSET_READ"),
    "kernel.set_comm": ("prctl(2)", "PR_SET_NAME: /proc/self/comm"),
    "kernel.set_cmdline": ("(memory write)", "/proc/self/cmdline"),
    "kernel.bpf_load_cgroup_device_program": ("bpf(2)", "BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE"),
    "kernel.bpf_attach_cgroup_device_program": ("bpf(2)", "BPF_PROG_ATTACH, BPF_CGROUP_DEVICE"),
    "kernel.clone3": ("clone3(2)", ""),
    "kernel.signalfd": ("signalfd4(2)", ""),
    "kernel.seccomp_notif_sizes": ("seccomp(2)", "SECCOMP_GET_NOTIF_SIZES"),
    "kernel.read_signalfd": ("read(2)", "a signalfd"),
    "kernel.openat2": ("openat2(2)", "RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: a name in one directory"),
    "kernel.open_tree": ("open_tree(2)", ""),
    "kernel.move_mount": ("move_mount(2)", ""),
    "kernel.mount_setattr": ("mount_setattr(2)", ""),
    "kernel.fsopen": ("fsopen(2)", ""),
    "kernel.fsconfig": ("fsconfig(2)", ""),
    "kernel.fsmount": ("fsmount(2)", ""),
    # engine/linux/paths.py, engine/linux/mounts.py: the rootfs by file descriptor
    "paths.open_root": ("open(2)", "the rootfs, O_PATH"),
    "paths.open_in_root": ("openat2(2) mkdirat(2) openat(2)", "RESOLVE_IN_ROOT: inside the rootfs, made if create="),
    "paths.create_beneath": ("openat2(2)", "O_CREAT, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS"),
    "mounts.new_filesystem": ("fsopen(2) fsconfig(2) fsmount(2)", "a new filesystem, detached"),
    "mounts.copy_tree": ("open_tree(2)", "OPEN_TREE_CLONE: a detached copy, for a bind"),
    "mounts.attach": ("move_mount(2)", "onto the target's fd"),
    "idmapped_mounts.idmapped_tree": ("open_tree(2) mount_setattr(2)",
                                      "a detached copy, MOUNT_ATTR_IDMAP to a user namespace, a slave"),
    "idmapped_mounts.set_bind_options": ("mount_setattr(2)", "a mount entry's ro, nosuid..., propagation: on the "
                                                         "detached tree"),
    # engine/linux/idmap.py: a user namespace's maps, and the cgroups handed to its root
    "idmap.map_text": ("(none)", "the lxc.idmap ranges of one kind, one line each"),
    "idmap.write_map": ("open(2) write(2)", "/proc/PID/uid_map, /proc/PID/gid_map: the whole map in one write"),
    "idmap.delegated_files": ("read(2)", "/sys/kernel/cgroup/delegate"),
    "idmap.delegate_cgroup": ("chown(2) chmod(2)", "/sys/fs/cgroup/.../lxc.payload.NAME, its cgroup.procs..."),
    "idmap.find_helper": ("stat(2)", "newuidmap, newgidmap on PATH"),
    "idmap.helper_privileged": ("stat(2) getxattr(2)", "the setuid bit, or security.capability"),
    "idmap.write_map_with_helper": ("execve(2)", "new[ug]idmap PID INSIDE OUTSIDE COUNT...: checks /etc/sub[ug]id"),
    "idmap.delegate_cgroup_unprivileged": ("fork(2) unshare(2) chown(2) chmod(2)",
                                           "the payload cgroups, from a user namespace of the monitor's own"),
    # engine/linux/cgroups.py: cgroupfs
    "cgroups.hierarchies": ("open(2) read(2)", "/proc/self/mountinfo, /proc/self/cgroup"),
    "cgroups.create": ("mkdir(2)", "/sys/fs/cgroup/.../NAME"),
    "cgroups.attach": ("write(2)", "/sys/fs/cgroup/.../cgroup.procs"),
    "cgroups.members": ("read(2)", "/sys/fs/cgroup/.../cgroup.procs"),
    "cgroups.own_procs_file": ("open(2) read(2)", "/proc/self/mountinfo, /proc/self/cgroup"),
    "cgroups.begin_grace_period": ("write(2)", "/sys/fs/cgroup/.../cgroup.procs: 0, the cgroup it is in"),
    "cgroups.remove": ("rmdir(2)", "/sys/fs/cgroup/.../NAME"),
    "cgroups.write_limits": ("write(2)", "/sys/fs/cgroup/CONTROLLER/.../lxc.payload.NAME/FILE"),
    "cgroups.unified_only": ("(none)", "the layout: cgroup2 alone, or v1 controllers too"),
    "cgroups.placement": ("(none)", "lxc.cgroup.dir*, lxc.cgroup.relative: where the cgroups go"),
    "cgroups.delegate": ("write(2)", "/sys/fs/cgroup/.../cgroup.subtree_control: +CONTROLLER ..."),
    "cgroups.vacate": ("mkdir(2) read(2) write(2)", "an ordinary user's cgroup2 scope: its processes moved "
                       "to SCOPE/init/cgroup.procs"),
    "cgroups.cgroup2_limits": ("(none)", "the lxc.cgroup2.* settings"),
    "cgroups.write_cgroup2_limits": ("write(2)", "/sys/fs/cgroup/.../lxc.payload.NAME/FILE"),
    "cgroups.kill": ("write(2)", "/sys/fs/cgroup/.../cgroup.kill"),
    # engine/linux/cgroup_devices.py: cgroup2's device rules
    "cgroup_devices.apply": ("bpf(2)", "BPF_PROG_LOAD (CGROUP_DEVICE), BPF_PROG_ATTACH (BPF_CGROUP_DEVICE) "
                                       "to the payload cgroup"),
    # engine/linux/netlink.py: rtnetlink, through pyroute2
    "netlink.link_mtu": ("RTM_GETLINK", "the bridge"),
    "netlink.create_veth": ("RTM_NEWLINK", "a veth pair, its peer in the child's network namespace"),
    "netlink.attach_host_end": ("RTM_SETLINK", "the host end: MAC, bridge, up"),
    "netlink.create_macvlan": ("RTM_NEWLINK", "a macvlan on the host's link, in the child's namespace"),
    "netlink.configure_in_container": ("RTM_SETLINK RTM_NEWADDR RTM_NEWROUTE", "the container end"),
    # engine/linux/terminal.py: ptys of the container's devpts
    "terminal.open_pty": ("open(2) ioctl(2)",
                          "the container's /dev/ptmx (the host's for the console if lxc.pty.max <= 1):"
                          " TIOCSPTLCK, TIOCGPTN, TIOCGPTPEER"),
    # hooks/: lxc.hook.* through /bin/sh -c
    "hooks.run": ("posix_spawn(3) wait4(2)", "/bin/sh -c, the lxc.hook.* of this point"),
    "hooks.run_stop": ("posix_spawn(3) wait4(2)", "/bin/sh -c, lxc.hook.stop"),
    "hooks.run_post_stop": ("posix_spawn(3) wait4(2)", "/bin/sh -c, lxc.hook.post-stop"),
    "hooks.verify_start": ("access(2)", "the first lxc.hook.start's value, as a file of the rootfs"),
    # engine/protocol/command_server.py, engine/protocol/sync.py: sockets
    "command_server.bind": ("socket(2) bind(2) listen(2)", "@LXCPATH/NAME/command"),
    "sync.socketpair": ("socketpair(2)", "AF_UNIX, SOCK_SEQPACKET"),
    ".wake": ("sendmsg(2)", "the sync channel"),
    ".wait_for": ("recvmsg(2)", "the sync channel"),
    ".barrier": ("sendmsg(2) recvmsg(2)", "the sync channel"),
    ".wait_for_exec": ("recvmsg(2)", "the sync channel"),
    ".send_error": ("sendmsg(2)", "the sync channel"),
    # the standard library
    "open": ("open(2)", ""),
    "os.open": ("open(2)", ""),
    "os.mkdir": ("mkdir(2)", ""),
    "os.makedirs": ("mkdir(2)", ""),
    "os.mknod": ("mknod(2)", ""),
    "os.chmod": ("chmod(2)", ""),
    "os.symlink": ("symlink(2)", ""),
    "os.chdir": ("chdir(2)", ""),
    "os.fchdir": ("fchdir(2)", ""),
    "os.setsid": ("setsid(2)", ""),
    "os.setgroups": ("setgroups(2)", ""),
    "os.setresgid": ("setresgid(2)", ""),
    "os.setresuid": ("setresuid(2)", ""),
    "os.fchown": ("fchown(2)", ""),
    "os.closerange": ("close_range(2)", ""),
    "os.execvpe": ("execve(2)", ""),
    "os.waitpid": ("wait4(2)", ""),
    "signal.pthread_sigmask": ("rt_sigprocmask(2)", ""),
    "signal.signal": ("rt_sigaction(2)", ""),
    "signal.pidfd_send_signal": ("pidfd_send_signal(2)", ""),
    "select.poll": ("poll(2)", ""),
    "socket.sethostname": ("sethostname(2)", ""),
}

# The sync channel's methods (engine/protocol/sync.py): which messages each sends and waits for.
# A message is a SyncMsg name, or END_OF_FILE: what the monitor reads when exec closes
# the child's close-on-exec end.
END_OF_FILE = "end-of-file (exec)"
SYNC_METHODS: dict[str, Callable[..., list[tuple[str, object]]]] = {
    "wake": lambda msg, *_: [("send", msg)],
    "wait_for": lambda msg: [("wait", msg)],
    "barrier": lambda wake, wait_for, *_: [("send", wake), ("wait", wait_for)],
    "wait_for_exec": lambda: [("wait", END_OF_FILE)],
    "send_error": lambda *_: [("send", SyncMsg.ERROR)],
}


@dataclass(frozen=True)
class Call:
    syscall: str
    code: str        # the call as written, e.g. 'kernel.mount(None, "/", None, ...)'
    files: str


@dataclass(frozen=True)
class State:
    side: str
    name: str
    summary: str                        # the docstring's first line, after "name (side) - "
    text: str                           # the whole docstring
    replaces: str                       # its "Replaces ..." sentence
    lxc_functions: tuple[str, ...]
    calls: tuple[Call, ...]
    sync: tuple[tuple[str, str], ...]   # ("send" | "wait", message), in source order
    undo: tuple[str, ...]               # kinds of change recorded (engine/start/undo.py), "unwind"
    where: str                          # file:enter:line


def describe(table: Table, state: str) -> State:
    """Everything `lxcsm explain` shows about one state, read from its module."""
    module = table.module(state)
    text = inspect.cleandoc(module.__doc__ or "")
    first = text.splitlines()[0] if text else state
    summary = first.split(" - ", 1)[1] if " - " in first else first
    paragraph = next((" ".join(p.split()) for p in text.split("\n\n") if p.startswith("Replaces")), "")
    match = re.match(r".*?\.(?=\s+[A-Z]|$)", paragraph)
    replaces = match.group(0) if match else paragraph
    functions = tuple(dict.fromkeys(re.findall(r"\b([A-Za-z_]\w*)\(", replaces)))
    calls, sync, undo = _analyse(module)
    where = f"states/{table.side}/{state}.py:enter:{module.enter.__code__.co_firstlineno}"
    return State(table.side, state, summary.rstrip("."), text, replaces, functions, calls, sync, undo, where)


def _analyse(module: ModuleType) -> tuple[tuple[Call, ...], tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The mapped calls, sync operations and undo records of enter() and the helpers it calls."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    helpers = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    calls: list[Call] = []
    sync: list[tuple[str, str]] = []
    undo: list[str] = []
    seen: set[str] = set()

    def visit(function: ast.FunctionDef) -> None:
        seen.add(function.name)
        found = [node for node in ast.walk(function) if isinstance(node, ast.Call)]
        for node in sorted(found, key=lambda n: (n.lineno, n.col_offset)):
            name = _qualified(module, node.func)
            if isinstance(node.func, ast.Name) and name in helpers and name not in seen:
                visit(helpers[name])
            method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            key = name if name in SYSCALLS else f".{method}" if method in SYNC_METHODS else None
            if key:
                syscall, files = SYSCALLS[key]
                code = " ".join((ast.get_source_segment(source, node) or "").split())
                calls.append(Call(syscall, _short(code), files))
            if method in SYNC_METHODS:
                messages = SYNC_METHODS[method](*[_resolve(module, arg) for arg in node.args])
                sync.extend((kind, str(getattr(msg, "name", msg))) for kind, msg in messages)
            elif name.startswith("os.exec"):
                sync.append(("send", END_OF_FILE))
            if method == "record" and node.args and isinstance(node.args[0], ast.Constant):
                undo.append(str(node.args[0].value))
            elif method == "unwind":
                undo.append("unwind")

    visit(helpers["enter"])
    return tuple(calls), tuple(sync), tuple(dict.fromkeys(undo))


def _chain(node: ast.expr) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    return [node.id, *parts] if isinstance(node, ast.Name) else None


def _qualified(module: ModuleType, func: ast.expr) -> str:
    """How a call is named in SYSCALLS: its head resolved through the module's imports."""
    parts = _chain(func)
    if not parts:
        return ""
    if parts[0] not in vars(module):
        return ".".join(parts)   # a builtin (open) or a local name
    head = vars(module)[parts[0]]
    if isinstance(head, ModuleType):   # lxcsm.engine.linux.kernel -> kernel, lxcsm.hooks -> hooks
        parts[0] = head.__name__.rpartition(".")[2]
    elif callable(head) and getattr(head, "__module__", None) not in (None, module.__name__):
        parts[0] = f"{head.__module__.rpartition('.')[2]}.{head.__qualname__}"
    return ".".join(parts)


def _resolve(module: ModuleType, node: ast.expr) -> object:
    """The object a name like ``SyncMsg.STARTUP`` or ``sync.SyncMsg.STARTUP`` stands for."""
    parts = _chain(node)
    if not parts or parts[0] not in vars(module):
        return None
    obj = vars(module)[parts[0]]
    for part in parts[1:]:
        obj = getattr(obj, part, None)
    return obj


def _short(code: str, width: int = 72) -> str:
    return code if len(code) <= width else code[: width - 3] + "..."


# --- the command --------------------------------------------------------------------------

def lookup(name: str, tables: dict[str, Table] = TABLES) -> list[tuple[Table, str]]:
    """The states NAME or SIDE:NAME stands for: one, both sides' (sync_fds), or none."""
    side, _, state = name.rpartition(":")
    return [(table, state) for table in tables.values()
            if state in table.states and side in ("", table.side)]


def listing(tables: dict[str, Table] = TABLES) -> str:
    lines = []
    for table in tables.values():
        lines.append(f"{table.side} (states/{table.side}/, in start order)")
        for state in table.states:
            lines.append(f"  {state:<20} {describe(table, state).summary}")
        lines.append("")
    lines.append("lxcsm explain STATE (or SIDE:STATE) says more about one of them; lxcsm explain LXC_FUNCTION "
                 "(lxc_spawn, do_start, lxc_setup, lxc_poll, lxc_end ...) names the states doing its work.")
    return "\n".join(lines)


def _field(label: str, lines: list[str]) -> list[str]:
    """`label` in a column of its own, then one line per entry."""
    return [f"{label if i == 0 else '':<8}{line}" for i, line in enumerate(lines)]


def _wrap(text: str, indent: int = 4) -> list[str]:
    return textwrap.wrap(text, 88, subsequent_indent=" " * indent) or ["-"]


def _transitions(table: Table, state: str) -> tuple[list[str], list[str]]:
    into, out = [], []
    if state == table.initial:
        into.append("(the machine starts here)")
    for trigger, source, dest in table.transitions:
        sources = source if isinstance(source, tuple) else (source,)
        if dest == state:
            into += _wrap(f"{trigger:<22} from {', '.join(sources)}", indent=28)
        if state in sources:
            out.append(f"{trigger:<22} to {dest}")
    if state in table.final:
        out.append("(the machine ends here)")
    return into, out


def explanation(table: Table, state: str) -> str:
    info = describe(table, state)
    width = max((len(call.syscall) for call in info.calls), default=0)
    calls = [f"{call.syscall:<{width}}  {call.code}" + (f"  [{call.files}]" if call.files else "")
             for call in info.calls]
    sync = [f"{'sends' if kind == 'send' else 'waits for'} {msg}" for kind, msg in info.sync]
    recorded = [kind for kind in info.undo if kind != "unwind"]
    undo = [f"records {', '.join(recorded)}"] if recorded else []
    if "unwind" in info.undo:
        undo.append("unwinds the undo log (engine/start/undo.py)")
    into, out = _transitions(table, state)
    lines = [info.text, "", "-" * 72]
    lines += _field("LXC 5", _wrap(", ".join(f"{name}()" for name in info.lxc_functions) or info.replaces))
    lines += _field("Calls", calls or ["none of the wrappers listed in engine/analysis/explain.py SYSCALLS"])
    if sync:
        lines += _field("Sync", _wrap(", then ".join(sync)))
    if undo:
        lines += _field("Undo", _wrap("; ".join(undo)))
    lines += _field("In", into) + _field("Out", out) + _field("Code", [info.where])
    return "\n".join(lines)
