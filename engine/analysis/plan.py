"""`lxcsm plan NAME` (or `lxcsm start --plan`): what a start will do, without doing it.

The sequence people otherwise reconstruct from start.c, for one config: every
state of both machines in start order (after the steps `lxcsm start` takes
before the first state, engine/analysis/premachine.py) and, under each, the steps it will take
- namespace flags, cgroup directories, mounts, the exec.  Each state module's
own ``plan(request)`` says what its ``enter`` will do, next to the code that
does it; this module only walks the tables and prints.  Nothing on the host is
touched: the config is loaded and preflighted exactly as `start` does.
"""

from __future__ import annotations

import textwrap

from lxcsm.engine.analysis import premachine
from lxcsm.engine.linux import cgroups
from lxcsm.engine.start import lab
from lxcsm.engine.start.machine import TABLES


def render(request) -> str:
    hierarchies = cgroups.hierarchies()
    lines = [f"plan for container {request.name} ({request.config_file})",
             "cgroup hierarchies here: " + " ".join(h.label for h in hierarchies)]
    lines += ["", "before the machines: steps of lxcsm start itself, not states (engine/analysis/premachine.py)"]
    for step in premachine.steps(request.foreground):
        lines.append(f"  [{step.name}]")
        lines += textwrap.wrap(step.does, 104, initial_indent="    - ", subsequent_indent="      ")
    if request.foreground:
        lines.append("  (-F: no double fork and no report pipe; the monitor is lxcsm start itself)")
    for side, table in TABLES.items():
        lines.append("")
        lines.append(f"{side} machine")
        for state in table.states:
            lines.append(f"  {state}")
            steps = table.module(state).plan(request)
            if request.lab_skips:   # lxcsm start --plan --lab --lab-skip STEP
                steps = lab.plan(request.lab_skips, side, state, steps)
            lines += [f"    - {step}" for step in steps]
    return "\n".join(lines)
