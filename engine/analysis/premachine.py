"""The steps of `lxcsm start` before the monitor machine's first state.

Between typing ``lxcsm start NAME`` and init_handler, the cli (engine/cli/start.py)
and the daemon launcher (engine/start/monitor.py ``daemonize``) do work that is
no state of either machine: the config is read and checked, the command socket
is asked whether the container runs already, and in daemon mode the monitor
is made by a double fork, with a pipe back to the caller.  `STEPS` lists them
in the order they run, each with what LXC does instead and where in lxcsm's
code it happens; `lxcsm plan` and `lxcsm graph` show them as steps before the
machines, `lxcsm explain` finds them by LXC's function names.

Each step names the call(s) that do it (``code``), in the order the function
runs them; `drift` checks that the code still makes those calls in that
order, so this list cannot silently go stale (a unit test runs it).
"""

from __future__ import annotations

import ast
import os
from typing import NamedTuple


class Step(NamedTuple):
    name: str
    does: str                  # what happens, one sentence
    lxc: str                   # what LXC 5 does instead, with its function names followed by ()
    module: str                # where: the module under engine/ ...
    function: str              # ... and the function in it
    code: tuple[str, ...]      # calls the function makes for this step, in source order
    daemon_only: bool = False  # skipped with -F: the monitor is `lxcsm start` itself
    phase: str = ""            # the key of engine/analysis/lxc_phases.py whose LXC lines are this step


STEPS: tuple[Step, ...] = (
    Step("config", "read LXCPATH/NAME/config (or -f), its lxc.include files and -s KEY=VALUE; an unknown key "
                   "or bad value ends here, naming file, line and key",
         "lxc_container_new() and load_config() read the config in lxc_start.c's main(), before logging starts",
         "cli.start", "run", ("loader.load(",)),
    Step("preflight", "check what can be checked without touching the host: rootfs, init, bind sources, "
                      "filesystem types, hooks, seccomp policy, network links, cgroup keys",
         "nothing: LXC finds such errors in the middle of the start, and unwinds what it did",
         "cli.start", "run", ("preflight.check(",)),
    Step("already running?", "ask the command socket @LXCPATH/NAME/command for the state; a container that "
                             "runs is not started twice",
         "lxc-start's is_running() sends lxc_cmd() get_state / get_init_pid to the same socket",
         "cli.start", "run", ("command_client.get_state(",), phase="client:check-running"),
    Step("report pipe", "the caller keeps the read end of a pipe and waits on it; the monitor writes RUNNING, "
                        "PAUSED or FAILED with its report into it, and lxcsm start returns with that",
         "wait_on_daemonized_start() waits on the command socket for RUNNING (lxcapi_wait())",
         "start.monitor", "daemonize", ("os.pipe()", "status.read("), daemon_only=True,
         phase="client:wait-running"),
    Step("double fork", "fork; the first child calls setsid() and forks the monitor, then exits, so the "
                        "monitor belongs to no terminal and is not the caller's child",
         "do_lxcapi_start() forks twice the same way, once its handler is made, so its log has lines here",
         "start.monitor", "daemonize", ("os.fork()", "os.setsid()", "os.fork()"), daemon_only=True,
         phase="monitor:daemonize"),
    Step("monitor process", "stdin, stdout and stderr become /dev/null and the process is titled "
                            "[lxcsm monitor] LXCPATH NAME; then the monitor machine starts in init_handler",
         "do_lxcapi_start() sets the title [lxc monitor] LXCPATH NAME; lxc_check_inherited() closes "
         "inherited fds",
         "start.monitor", "_monitor_main", ("os.dup2(", "kernel.set_cmdline(", "run("), daemon_only=True,
         phase="monitor:daemonize"),
)


def steps(foreground: bool | None = None) -> list[Step]:
    """The steps a start takes: all of them (None), or those of -F (True) or of a daemon (False)."""
    return [step for step in STEPS if not (foreground and step.daemon_only)]


def where(step: Step) -> str:
    return f"engine/{step.module.replace('.', '/')}.py:{step.function}"


def drift() -> list[str]:
    """Steps whose function no longer makes their calls in the listed order (empty: none).

    The sources are read as text, not imported: analysis never imports the cli.
    """
    engine = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = []
    for step in STEPS:
        path = os.path.join(engine, *step.module.split(".")) + ".py"
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        node = next((n for n in ast.walk(ast.parse(text))
                     if isinstance(n, ast.FunctionDef) and n.name == step.function), None)
        if node is None:
            problems.append(f"{step.name}: {where(step)} does not exist")
            continue
        source, at = ast.get_source_segment(text, node) or "", 0
        for call in step.code:
            found = source.find(call, at)
            if found < 0:
                problems.append(f"{step.name}: {where(step)} makes no {call} after the step's earlier calls")
                break
            at = found + len(call)
    return problems
