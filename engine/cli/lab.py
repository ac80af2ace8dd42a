"""lxcsm lab: exercises that show what a container sees when a step of its start is left out.

For teaching.  `lxcsm lab` lists the exercises; `lxcsm lab EXERCISE` builds a
throwaway busybox container in a fresh directory, starts it with every step
and runs the exercise's probe (a read-only shell command) in it, asks what
the probe will show once the exercise's step is left out, starts it again in
lab mode (``lxcsm start --lab --lab-skip STEP -F``) and checks the answer
against what the container really showed (engine/analysis/lab_exercises.py),
then removes the container.  `--answer LETTER` answers without asking (for
CI).  Exit 0 for a right answer, 1 for a wrong one, 2 when the exercise
could not be run or judged.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

from lxcsm.engine.cli.options import Parser, fail

SUMMARY = "exercises for teaching: see what a container sees when a step of its start is left out"

SHOWN_LINES = 12   # of a probe's output; the rest is counted
WIDTH = 100


def add_options(parser: Parser) -> None:
    from lxcsm.engine.analysis.lab_exercises import EXERCISES
    parser.add_argument("exercise", nargs="?", choices=list(EXERCISES), metavar="EXERCISE",
                        help=f"the exercise to run ({', '.join(EXERCISES)}); none: list them")
    parser.add_argument("--answer", metavar="LETTER", help="answer with LETTER instead of asking")
    parser.add_argument("-n", "--name", metavar="NAME",
                        help="the throwaway container's name (default lab-EXERCISE-RANDOM)")
    parser.epilog = ("Each exercise starts a container twice in a fresh directory under $TMPDIR, which is removed"
                     " afterwards; it needs root, as lxcsm start does.")


def run(parser: Parser, args) -> int:
    from lxcsm.engine.analysis import lab_exercises
    from lxcsm.engine.start import lab

    if args.exercise is None:
        print(listing(lab_exercises.EXERCISES, lab.SKIPS))
        return 0
    exercise = lab_exercises.EXERCISES[args.exercise]
    letters = [lab_exercises.letter(i) for i in range(len(exercise.choices))]
    if args.answer is not None and args.answer.strip().lower() not in letters:
        parser.error(f"--answer {args.answer}: answer with one of {', '.join(letters)}")
    if os.geteuid() != 0:
        return fail("lxcsm lab must run as root: it starts containers, as lxcsm start does")
    name = args.name or f"lab-{exercise.name.replace('_', '-')}-{secrets.token_hex(3)}"
    lxcpath = tempfile.mkdtemp(prefix="lxcsm-lab-")
    try:
        try:
            lab.make_container(lxcpath, name)
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"lxcsm: lab: cannot build the busybox container in {lxcpath}: {err} (it needs a static"
                  " /bin/busybox: apt-get install busybox-static)", file=sys.stderr)
            return 2
        return _exercise(exercise, lab.SKIPS[exercise.skip], name, lxcpath, args.answer)
    finally:
        shutil.rmtree(lxcpath, ignore_errors=True)


def listing(exercises, skips) -> str:
    lines = ["Lab exercises, for teaching (lxcsm lab EXERCISE [--answer LETTER]).  Each starts a throwaway",
             "busybox container with every step of the start, then without one (lab mode: lxcsm start --lab",
             "--lab-skip STEP), and asks what the container sees without it.", ""]
    for exercise in exercises.values():
        skip = skips[exercise.skip]
        lines.append(f"  {exercise.name:<11} leaves out {skip.left_out()}")
        lines += _wrap(f"LXC: {skip.lxc}", WIDTH, initial_indent=" " * 14, subsequent_indent=" " * 19)
        lines += _wrap(f"asks: {exercise.question}", WIDTH, initial_indent=" " * 14,
                               subsequent_indent=" " * 20)
    return "\n".join(lines)


def _exercise(exercise, skip, name: str, lxcpath: str, answer: str | None) -> int:
    from lxcsm.engine.analysis import lab_exercises

    print(f"Exercise {exercise.name}: leave out {skip.left_out()}")
    print(f"  (in LXC: {skip.lxc})")
    print(f"\nA throwaway busybox container, {name}, runs `{exercise.probe}` with every step:")
    whole = _start(name, lxcpath, exercise.probe, ())
    if whole is None:
        return 2
    print("\n" + _fill(f"Question: {exercise.question}", WIDTH))
    for index, choice in enumerate(exercise.choices):
        print(_fill(f"{lab_exercises.letter(index)}) {choice.text}", WIDTH, initial_indent="  ",
                            subsequent_indent="     "))
    letters = [lab_exercises.letter(i) for i in range(len(exercise.choices))]
    if answer is None:
        answer = _ask(letters)
        if answer is None:
            print("lxcsm: lab: no answer (give --answer LETTER)", file=sys.stderr)
            return 2
    else:
        print(f"Your answer: {answer}")
    answer = answer.strip().lower()
    print(f"\nNow without {skip.name}:")
    without = _start(name, lxcpath, exercise.probe, (skip.name,))
    if without is None:
        return 2
    facts = _host_facts(lxcpath, name)
    try:
        right = lab_exercises.right_answer(exercise, lab_exercises.Seen(whole, *facts),
                                           lab_exercises.Seen(without, *facts))
    except ValueError as err:
        print(f"lxcsm: lab: {err}", file=sys.stderr)
        return 2
    text = exercise.choices[letters.index(right)].text
    if answer == right:
        print(f"\nRight: {right}) {text}")
    else:
        print(f"\nNot this time: you said {answer}); it is {right}) {text}")
    print(_fill(exercise.lesson, WIDTH))
    print(_fill(f"Without {skip.name} the container sees {skip.sees}.", WIDTH))
    return 0 if answer == right else 1


def _fill(text: str, width: int, **how) -> str:
    return "\n".join(_wrap(text, width, **how))


def _wrap(text: str, width: int, **how) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, **how)


def _ask(letters: list[str]) -> str | None:
    while True:
        try:
            reply = input(f"Your answer ({letters[0]}-{letters[-1]}): ").strip().lower()
        except (EOFError, KeyboardInterrupt):   # no answer coming: the container is removed all the same
            print()
            return None
        if reply in letters:
            return reply


def _start(name: str, lxcpath: str, probe: str, skips: tuple[str, ...]) -> str | None:
    """Start the container in the foreground running `probe`; its output, or None (said why) if the
    start failed.  The probe's shell exits 0 whatever the probe does: any other status is lxcsm's."""
    lab_flags = ["--lab", "--lab-skip", ",".join(skips)] if skips else []
    command = ["/bin/sh", "-c", f"exec 2>&1; {probe}; exit 0"]
    shown = [*lab_flags, "-F", "-n", name, "-P", lxcpath, "--", *map(shlex.quote, command)]
    print(f"  $ lxcsm start {' '.join(shown)}")
    ran = subprocess.run([sys.executable, "-m", "lxcsm.engine.cli", "start", *lab_flags, "-F", "-n", name,
                          "-P", lxcpath, "--", *command], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if ran.returncode != 0:
        print(f"lxcsm: lab: the start failed (exit {ran.returncode}):\n{ran.stderr.rstrip()}", file=sys.stderr)
        if not skips:   # the plain start of a plain busybox rootfs: most likely its busybox
            print("lxcsm: lab: the container's /bin/busybox is a copy of the host's, which must be statically"
                  " linked (Debian's busybox-static)", file=sys.stderr)
        return None
    for line in ran.stderr.splitlines():   # lab mode's banner
        print(f"  {line}")
    lines = ran.stdout.splitlines()
    for line in lines[:SHOWN_LINES]:
        print(f"  | {line[:WIDTH - 4]}" + (" ..." if len(line) > WIDTH - 4 else ""))
    if len(lines) > SHOWN_LINES:
        print(f"  | ... and {len(lines) - SHOWN_LINES} more lines")
    return ran.stdout


def _host_facts(lxcpath: str, name: str) -> tuple:
    """Seen's fields after the output: what the runs are judged by, read on the host."""
    from lxcsm.engine.analysis import lab_exercises

    def listed(directory: str) -> frozenset[str]:
        return frozenset(entry for entry in os.listdir(directory) if not entry.startswith("."))

    with open("/proc/self/status") as status:
        capbnd = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd:"))
    with open("/proc/self/net/dev") as net_dev:
        host_links = lab_exercises.links(net_dev.read())
    return (name, listed("/"), listed(os.path.join(lxcpath, name, "rootfs")), socket.gethostname(), capbnd,
            host_links)
