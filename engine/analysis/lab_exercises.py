"""The lab's exercises: what to run in a container with a step left out, what to ask, how to judge.

`lxcsm lab EXERCISE` (engine/cli/lab.py) starts a throwaway busybox container
twice, once whole and once with the exercise's step left out (lab mode,
engine/start/lab.py), runs the exercise's probe in it each time, and asks the
student beforehand what the second run will show.  The answers are checked
against what the container really showed, never against a stored letter:
each choice says how to recognise the output it describes (``matches``), and
the right choice is the one the run without the step matches.  Exactly one
choice must match each run, and not the same one: otherwise the lab says it
cannot judge - a step that did not change what it should is a failure of the
lab, not a wrong answer.

Every probe only reads: without pivot_root the container's / is the host's.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

from lxcsm.engine.start.lab import LAB_CAP_DROP


class Seen(namedtuple("Seen", ("output", "name", "host_root", "rootfs", "host_hostname", "host_capbnd",
                               "host_links"))):
    """What a run printed, with the host's facts to judge it by (read by the lab, on the host)."""
    output: str                # the probe's output (stdout and stderr)
    name: str                  # the container's name (its lxc.uts.name, its cgroups' suffix)
    host_root: frozenset[str]  # what `ls /` lists on the host
    rootfs: frozenset[str]     # what `ls /` lists in the container's rootfs
    host_hostname: str
    host_capbnd: int           # the lab's own bounding set: what the host's root has
    host_links: frozenset[str]  # the interfaces of the host's network namespace

    __slots__ = ()

    def lines(self) -> list[str]:
        return [line.strip() for line in self.output.splitlines() if line.strip()]


class Choice(namedtuple("Choice", ("text", "matches"))):
    text: str
    matches: Callable[[Seen], bool]

    __slots__ = ()


class Exercise(namedtuple("Exercise", ("name", "skip", "probe", "question", "choices", "lesson"))):
    name: str
    skip: str                        # engine/start/lab.py SKIPS name
    probe: str                       # run by /bin/sh -c in the container; reads only
    question: str
    choices: tuple[Choice, ...]      # a), b), c)...
    lesson: str                      # what the difference teaches

    __slots__ = ()


def _processes(seen: Seen) -> list[str]:
    """ps's process lines (each starts with a pid)."""
    return [line for line in seen.lines() if line.split()[0].isdigit()]


def _own_pid(seen: Seen) -> str:
    return next((line.split(":", 1)[1].strip() for line in seen.lines() if line.startswith("my pid:")), "")


def _cgroup2_line(seen: Seen) -> str | None:
    return next((line for line in seen.lines() if line.startswith("0::")), None)


def links(proc_net_dev: str) -> frozenset[str]:
    """The interface names of a /proc/net/dev (a line "NAME: counters..." each, after two of headings)."""
    return frozenset(line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line)


def _capbnd(seen: Seen) -> int | None:
    line = next((line for line in seen.lines() if line.startswith("CapBnd:")), None)
    return int(line.split()[1], 16) if line is not None else None


def _holds(capbnd: int | None, cap: int) -> bool | None:
    return None if capbnd is None else bool(capbnd >> cap & 1)


CAP_SYS_MODULE = 16

EXERCISES = {exercise.name: exercise for exercise in (
    Exercise(
        "pivot_root", "pivot_root", "ls /",
        "Without pivot_root, what does `ls /` list inside the container?",
        (Choice("the host's own / (what `ls /` lists on the host)",
                lambda seen: frozenset(seen.lines()) == seen.host_root),
         Choice("the busybox rootfs's directories (bin, dev, etc, proc, ...), as with pivot_root",
                lambda seen: frozenset(seen.lines()) == seen.rootfs),
         Choice("nothing: / stays empty until pivot_root puts the rootfs there",
                lambda seen: not seen.lines())),
        "The rootfs was mounted, but only at its own path: pivot_root is what makes it the "
        "container's /.  Without it the container runs the host's programs on the host's files "
        "(read-only here, in lab mode), and /proc is the host's proc mount."),
    Exercise(
        "proc", "proc", "ps",
        "Without the proc mount (lxc.mount.auto = proc), what does `ps` list?",
        (Choice("the container's init (pid 1) and ps itself, as with /proc mounted",
                lambda seen: 1 <= len(_processes(seen)) <= 3 and _processes(seen)[0].split()[0] == "1"),
         Choice("every process of the host",
                lambda seen: len(_processes(seen)) > 3),
         Choice("no process at all",
                lambda seen: not _processes(seen))),
        "ps knows nothing of processes by itself: it reads the directories of /proc.  Without "
        "the proc filesystem the rootfs's /proc is an empty directory, so ps finds no process, "
        "though the container's processes run as before."),
    Exercise(
        "pid_ns", "pid_ns", 'echo "my pid: $$"; ps',
        "Without a pid namespace of its own (no CLONE_NEWPID), what does `ps` list, and which pid "
        "does the container's shell have?",
        (Choice("only the container's processes, the shell being pid 1, as before",
                lambda seen: 1 <= len(_processes(seen)) <= 3 and _own_pid(seen) == "1"),
         Choice("every process of the host, and the shell has a pid other than 1",
                lambda seen: len(_processes(seen)) > 3 and _own_pid(seen) not in ("", "1")),
         Choice("no process: proc cannot be mounted outside a pid namespace of its own",
                lambda seen: not _processes(seen))),
        "A proc filesystem shows the processes of the pid namespace of whoever mounted it.  The "
        "container mounted its /proc as before, but from the host's pid namespace: it sees, and "
        "as root could signal, every process of the host."),
    Exercise(
        "net_ns", "net_ns", "cat /proc/net/dev",
        "Without a network namespace of its own (no CLONE_NEWNET), which network interfaces does "
        "/proc/net/dev list in the container?",
        (Choice("lo alone, as before (the config asks for an empty network)",
                lambda seen: links(seen.output) == {"lo"}),
         Choice("the host's interfaces, all of them",
                lambda seen: links(seen.output) == seen.host_links != {"lo"}),
         Choice("none: without a namespace of its own the container has no network at all",
                lambda seen: not links(seen.output))),
        "A process is always in some network namespace: without one of its own it shares the "
        "host's, its interfaces, addresses, routes and ports.  /proc/net is the reader's network "
        "namespace's view, so the container lists the host's devices - and as root could take "
        "them down."),
    Exercise(
        "cgroup_ns", "cgroup_ns", "cat /proc/self/cgroup",
        "Without a cgroup namespace of its own, what does the cgroup2 line (0::) of "
        "/proc/self/cgroup show?",
        (Choice("no 0:: line: the file lists cgroups only inside a cgroup namespace",
                lambda seen: _cgroup2_line(seen) is None),
         Choice("0::/ - the root of its own cgroup tree, as before",
                lambda seen: _cgroup2_line(seen) == "0::/"),
         Choice("0::/.../lxc.payload.NAME - its cgroup's full path in the host's hierarchy",
                lambda seen: (_cgroup2_line(seen) or "").endswith(f"/lxc.payload.{seen.name}"))),
        "/proc/self/cgroup gives paths relative to the root of the reader's cgroup namespace.  "
        "The container's child unshares one right after the monitor has put it in "
        "lxc.payload.NAME, which thereby becomes its /; without it the container learns where "
        "it sits on the host (and a cgroupfs it mounts shows the host's tree)."),
    Exercise(
        "cap_drop", "cap_drop", "grep CapBnd /proc/self/status",
        f"The config says lxc.cap.drop = {LAB_CAP_DROP}.  Without setup_capabilities, is "
        "cap_sys_module (bit 16 of CapBnd) in the container's bounding set: could its root load a "
        "kernel module?",
        (Choice("yes: nothing dropped it, CapBnd is the host root's own",
                lambda seen: _capbnd(seen) == seen.host_capbnd and _holds(seen.host_capbnd, CAP_SYS_MODULE) is True),
         Choice("no: lxc.cap.drop took it away when the config was read",
                lambda seen: _holds(_capbnd(seen), CAP_SYS_MODULE) is False),
         Choice("no capability at all: CapBnd is 0 in a new namespace",
                lambda seen: _capbnd(seen) == 0)),
        "A config line changes nothing by itself: the bounding set is cut by prctl(PR_CAPBSET_DROP) "
        "in the container's first process, before it execs init, and only then can nothing in "
        "the container ever gain those capabilities.  Without that step its root has the host "
        "root's whole set, cap_sys_module and cap_sys_rawio included."),
    Exercise(
        "hostname", "hostname", "hostname",
        "Without setup_hostname (sethostname(lxc.uts.name)), what does `hostname` print?",
        (Choice("nothing, or (none): a new uts namespace has no name until one is set",
                lambda seen: seen.lines() in ([], ["(none)"])),
         Choice("the container's name, from lxc.uts.name, as before",
                lambda seen: seen.lines() == [seen.name]),
         Choice("the host's hostname",
                lambda seen: seen.lines() == [seen.host_hostname])),
        "A new uts namespace starts as a copy of its parent's: it has the host's name until "
        "the container sets its own.  Setting it changes only the copy."),
)}


def letter(index: int) -> str:
    return "abcdefgh"[index]


def matching(exercise: Exercise, seen: Seen) -> list[str]:
    """The letters of the choices that describe what was seen (one, when the lab works)."""
    return [letter(i) for i, choice in enumerate(exercise.choices) if choice.matches(seen)]


def right_answer(exercise: Exercise, whole: Seen, without: Seen) -> str:
    """The letter of the choice the run without the step matched; ValueError, saying what was
    seen, when the two runs do not each match one choice, different ones."""
    before, after = matching(exercise, whole), matching(exercise, without)
    if len(before) != 1 or len(after) != 1 or before == after:
        raise ValueError(f"the lab cannot judge {exercise.name}: the whole start matched "
                         f"{', '.join(before) or 'no choice'}, the one without {exercise.skip} "
                         f"{', '.join(after) or 'no choice'}")
    return after[0]

