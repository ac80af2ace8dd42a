"""lxcsm explain-failure: why did the last start of a container end?

It reads the flight record the start wrote as it ran (engine/start/postmortem.py)
and says, first, what happened, in one line:

* the start was refused before it began (a bad config: the refusal is recorded);
* a state failed: which, on which side, with the error;
* the monitor died (a record with no end): in which state, running which hook or
  paused where, and that `lxcsm cleanup NAME` undoes what it left;
* init ended: how - an exit status or a signal, read for its likely cause
  (SIGSYS is the seccomp filter, 127 a missing command or interpreter), with the
  cgroup limits the container hit (pids.max, memory.max) recorded by poll.

Then concrete hints where the error is a known one (`hints`), what the state
does, and the events that led there - not the cleanup that followed, which is
summed up in one line.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import signal
import time

from lxcsm.engine import log as logmod
from lxcsm.engine.cli.options import DEFAULT_LXCPATH, Parser, fail
from lxcsm.engine.start import postmortem, undo

SUMMARY = "why did the last start of NAME end? (its saved flight record)"

INIT_ENDED = ("init exited", "init killed")
CLEANUP_EVENTS = ("undo", "undo failed")
# What a signal that killed init most likely means.
SIGNAL_CAUSES = {
    "SIGSYS": "the seccomp filter killed it: it made a system call that the policy{policy} denies with kill "
              "(`dmesg | grep type=1326` names the call: syscall=N)",
    "SIGKILL": "killed outright: by `lxcsm stop -k` / lxc-stop -k, by the OOM killer, or by another process",
    "SIGSEGV": "it crashed: an invalid memory access",
    "SIGBUS": "it crashed: a bad memory access (a truncated mapped file, say)",
    "SIGILL": "it crashed: an illegal instruction (a binary for another CPU?)",
    "SIGFPE": "it crashed: an arithmetic error (division by zero)",
    "SIGABRT": "it aborted itself (abort(3): a failed assertion or a fatal error it found)",
    "SIGTERM": "it was asked to terminate and did not catch SIGTERM",
    "SIGPIPE": "it wrote to a pipe or socket nobody reads",
    "SIGXCPU": "it used up its CPU time limit (lxc.prlimit.cpu)",
    "SIGXFSZ": "it wrote past its file size limit (lxc.prlimit.fsize)",
    "SIGPWR": "it was told the power is failing (lxc-stop's default for some inits) and did not catch it",
}
EXIT_CAUSES = {
    126: "the shell's 'cannot execute': a command was found but could not be run (not executable, "
         "or a directory)",
    127: "the shell's 'command not found': a command it ran, or the interpreter on a script's #! line, "
         "is missing in the container",
}
# What a cgroup limit counter says, by (file, key).
LIMIT_CAUSES = {
    ("pids.events", "max"): "pids.max was hit {n} time(s): that many forks failed (lxc.cgroup.pids.max / "
                            "lxc.cgroup2.pids.max)",
    ("memory.events", "max"): "memory.max was reached {n} time(s) (lxc.cgroup2.memory.max)",
    ("memory.events", "oom"): "the container ran out of memory {n} time(s)",
    ("memory.events", "oom_kill"): "the OOM killer killed {n} of its processes: memory.max was reached",
    ("memory.oom_control", "oom_kill"): "the OOM killer killed {n} of its processes: "
                                        "lxc.cgroup.memory.limit_in_bytes was reached",
}


def add_options(parser: Parser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-P", "--lxcpath", default=DEFAULT_LXCPATH)
    parser.add_argument("-f", "--rcfile", help="the config file the start used, if not LXCPATH/NAME/config")


def run(parser: Parser, args) -> int:
    config = args.rcfile or os.path.join(args.lxcpath, args.name, "config")
    path = postmortem.last_start_path(config)
    try:
        record = postmortem.read(path)
    except OSError as err:
        return fail(f"{path}: no record of a start ({err.strerror})")
    if not record.events:
        return fail(f"{path}: no record of a start (the file holds no event)")
    print("\n".join(explain(args.name, record, undo.journal_path(config), _running(args.lxcpath, args.name))))
    return 0


def _running(lxcpath: str, name: str) -> bool:
    from lxcsm.engine.protocol import command_client
    from lxcsm.engine.protocol.command_socket import LxcState
    try:
        return command_client.get_state(lxcpath, name) != LxcState.STOPPED
    except command_client.MonitorError:
        return False


def explain(name: str, record: postmortem.Record, journal: str, running: bool = False) -> list[str]:
    """What the record says, as lines of text: the verdict first."""
    events = record.events
    failed = _last(events, "start failed")
    ended = next((e for e in reversed(events) if e["event"] in INIT_ENDED), None)
    refused = _last(events, postmortem.REFUSED)
    lines: list[str] = []
    shown_until = len(events)   # the events shown end here (the cleanup after it is summed up)
    if refused is not None:
        lines.append(f"{name}: the last start was refused before it began, at {_at(refused)}: {refused['error']}")
        lines += [f"hint: {hint}" for hint in hints(refused["error"])]
        return lines
    if running and not record.finished:
        lines.append(f"{name} is running: this is the record of its monitor (pid {events[0].get('pid', '?')}), "
                     "so far")
    else:
        if not record.finished:
            lines.append(died(name, events, journal))
        if bug := _last(events, postmortem.MONITOR_FAILED):
            lines.append(f"{name}: the monitor failed at {_at(bug)}, outside any state (a bug in lxcsm): "
                         f"{bug['error']}")
        if failed is not None:
            lines.append(f"{name}: the last start failed in the {failed['failed_side']} state "
                         f"{failed['failed_state']} at {_at(failed)}: {failed['error']}")
            lines += [f"hint: {hint}" for hint in hints(failed["error"], events)]
            shown_until = events.index(failed) + 1
        elif ended is not None:
            lines += init_ended(name, events, ended)
            shown_until = events.index(ended) + 1
        elif record.finished and not bug:
            lines.append(f"{name}: the last start did not fail" + (" (init ran)" if _last(events, "started") else ""))
    if not record.finished:
        shown_until = len(events)   # the story ends where the monitor died, whatever it was doing
    if failed is not None:
        lines.append(_what_state_does(failed["failed_side"], failed["failed_state"]))
    if _last(events, "left by a dead monitor, undone") or _last(events, "left by a dead monitor, not undone"):
        lines.append(f"Before this start, a monitor of {name} had died; this start undid what it left on the host "
                     f"(its record: {postmortem.died_start_path(record.path)}).")
    before = events[:shown_until]
    shown = before[-postmortem.SHOWN_EVENTS:]
    lines.append(f"The {len(shown)} {'latest events' if running else 'events before it'} (monitor and child, "
                 f"oldest first), from {record.path}:")
    lines += [f"  {logmod.render_lxc(e)}" for e in shown]
    cleanup = [e for e in events[shown_until:] if e["event"] in CLEANUP_EVENTS]
    if cleanup:
        not_undone = sum(e["event"] == "undo failed" for e in cleanup)
        lines.append(f"Then {len(cleanup) - not_undone} changes to the host were undone"
                     + (f"; {not_undone} could not be (the record says which)" if not_undone else "") + ".")
    if record.unreadable:
        lines.append(f"({len(record.unreadable)} line(s) of the record could not be read: "
                     f"{', '.join(map(str, record.unreadable[:5]))})")
    return lines


# What a running hook logs after its "hook" event and before "hook ended": its output, and the
# warning that it is taking long.
_WHILE_A_HOOK_RUNS = frozenset({"hook output", "hook still running"})


def _running_hook(events: list[dict]) -> dict | None:
    """The "hook" event of the hook that was still running when these events end, if one was."""
    for event in reversed(events):
        if event["event"] == "hook":
            return event
        if event["event"] not in _WHILE_A_HOOK_RUNS:
            return None
    return None


def died(name: str, events: list[dict], journal: str) -> str:
    """The monitor left a record with no end: where it stood when it died."""
    monitor = [e for e in events if e.get("side") == "monitor"]
    entered = _last(monitor, "state")
    state = entered["state"] if entered else "(before its first state)"
    doing = ""
    monitor_hook = _running_hook(monitor)
    if monitor_hook is not None:
        doing = f" (hook {monitor_hook['kind']} running: {monitor_hook['command']})"
    elif monitor and monitor[-1]["event"] == "paused":
        doing = f" (paused at a breakpoint before {monitor[-1]['before']})"
    child = [e for e in events if e.get("side") == "child"]
    child_state = _last(child, "state")
    if child_state is not None and entered is not None and child_state["time"] > entered["time"] - 60 \
            and not _last(child, "exec"):
        doing += f"; the child's last recorded state: {child_state['state']}"
        child_hook = _running_hook(child)
        if child_hook is not None:
            doing += f", running its {child_hook['kind']} hook"
    last = events[-1]
    try:
        leftovers = bool(undo.pending(journal)[0])
    except OSError:
        leftovers = False
    after = f"run `lxcsm cleanup {name}`" if leftovers else "nothing it changed is left on the host"
    return f"{name}: the monitor died in {state}{doing} at {_at(last)} (its last event); {after}"


def init_ended(name: str, events: list[dict], ended: dict) -> list[str]:
    """How init ended, read for its likely cause."""
    lines = []
    if ended["event"] == "init killed":
        sig = ended["signal"]
        policy = _last(events, "seccomp filter built")
        cause = SIGNAL_CAUSES.get(sig, "").format(policy=f" ({policy['policy']})" if policy else "")
        stop = next((e for e in reversed(events) if e["event"] == "command served" and e.get("command") == "STOP"),
                    None)
        forwarded = next((e for e in reversed(events) if e["event"] == "forwarding signal"
                          and e.get("signal") == sig), None)
        if stop is not None:
            cause = f"a stop request (lxcsm stop / lxc-stop, served at {_at(stop)}) ended it"
        elif forwarded is not None:
            cause = f"the monitor was sent {sig} by pid {forwarded.get('sender')} and forwarded it to init"
        lines.append(f"{name}: init was killed by {sig} at {_at(ended)}" + (f": {cause}" if cause else ""))
    else:
        status = int(ended["status"])
        line = f"{name}: init exited with status {status} at {_at(ended)}"
        if status in EXIT_CAUSES:
            line += f": {EXIT_CAUSES[status]}"
        elif status > 128 and status - 128 in signal.Signals._value2member_map_:
            line += f": the status a shell gives for a command killed by {signal.Signals(status - 128).name}"
        elif status == 0:
            line += ": its command ran to its end"
        lines.append(line)
        if status in (126, 127):
            lines += [f"hint: {text}" for text in _interpreter_hints(events)]
    for hit in (e for e in events if e["event"] == "cgroup limit hit"):
        file = os.path.basename(hit["file"])
        for (known_file, key), text in LIMIT_CAUSES.items():
            if known_file == file and hit.get(key):
                lines.append(f"  and {text.format(n=hit[key])} ({hit['file']})")
    return lines


# --- hints --------------------------------------------------------------------------------

MISSING_TARGET = re.compile(r"(lxc\.mount\.entry|lxc\.mount\.fstab): mounting \S+ on (\S+): .*ENOENT")
CGROUP_FILE = re.compile(r"(lxc\.cgroup2?)\.(\S+?): (?:no file \S+ in the|.*ENOENT)")
NO_LINK = re.compile(r"lxc\.net\.\d+\.link: no network interface (\S+) on the host")


def hints(error: str, events: list[dict] | None = None) -> list[str]:
    """Concrete next steps for an error lxcsm knows (a refusal's or a failed state's)."""
    found = []
    if match := MISSING_TARGET.search(error):
        found.append(f"the mount target {match[2]} does not exist in the container: add create=dir to the "
                     f"options of that {match[1]} (create=file to mount a file), or make it in the rootfs")
    if match := CGROUP_FILE.search(error):
        file = match[2]
        closest = difflib.get_close_matches(file, cgroup_file_names(), n=1, cutoff=0.6)
        if closest and closest[0] != file:
            found.append(f"no cgroup file is named {file}: did you mean {closest[0]} ({match[1]}.{closest[0]})?")
    if match := NO_LINK.search(error):
        found.append(f"create the bridge first: ip link add {match[1]} type bridge && ip link set {match[1]} up")
    if "ENOENT" in error and events and any(e["event"] == "exec" for e in events):
        found += _interpreter_hints(events)
    return found


def cgroup_file_names() -> list[str]:
    """The files of a container's cgroup on this host: those of each hierarchy's root and of a
    cgroup below it (a root lacks some, pids.max among them)."""
    from lxcsm.engine.linux import cgroups
    names: set[str] = set()
    for hierarchy in cgroups.hierarchies():
        for directory in (hierarchy.mountpoint, hierarchy.home):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            names.update(e.name for e in entries if e.is_file())
            below = next((e.path for e in entries if e.is_dir()), None)
            if below:
                names.update(e.name for e in os.scandir(below) if e.is_file())
    return sorted(names)


def _interpreter_hints(events: list[dict]) -> list[str]:
    """A script among init's arguments whose #! line names a missing interpreter (exec's ENOENT,
    or a shell's 127): looked for in the rootfs directory, as the container saw it."""
    exec_event, mounted = _last(events, "exec"), _last(events, "rootfs mounted")
    if exec_event is None or mounted is None or not os.path.isdir(mounted["source"]):
        return []
    found = []
    words = [w for arg in exec_event["argv"] for w in str(arg).split() if w.startswith("/")]
    for word in dict.fromkeys(words):
        text = interpreter_problem(mounted["source"], word)
        if text:
            found.append(text)
    return found


def interpreter_problem(rootfs: str, path: str) -> str | None:
    """What is wrong with the #! line of the script at `path` in `rootfs`, if anything."""
    try:
        with open(os.path.join(rootfs, path.lstrip("/")), "rb") as script:
            first = script.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].rstrip(b"\n").split()
    if not words:
        return f"{path}: its #! line names no interpreter"
    interpreter = words[0].decode(errors="replace")
    if interpreter.endswith("\r") or first.rstrip(b"\n").endswith(b"\r"):
        return f"{path}: its #! line ends in a carriage return (DOS line ends): convert it (dos2unix)"
    if not os.path.lexists(os.path.join(rootfs, interpreter.lstrip("/"))):
        return f"{path}: its interpreter {interpreter} (on its #! line) is missing in the container"
    return None


def _what_state_does(side: str, state: str) -> str:
    module = importlib.import_module(f"lxcsm.states.{side}.{state}")
    return f"\nWhat {state} does:\n\n{(module.__doc__ or '').strip()}\n"


def _last(events: list[dict], name: str) -> dict | None:
    return next((e for e in reversed(events) if e["event"] == name), None)


def _at(event: dict) -> str:
    seconds = event["time"]
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"
