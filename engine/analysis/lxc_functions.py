"""`lxcsm explain LXC_FUNCTION`: from a function of LXC's start.c (or conf.c, cgfsng.c ...) to lxcsm.

Students read LXC's code and its trace: lxc_init_handler, lxc_spawn, do_start,
lxc_setup, lxc_poll, lxc_end.  This is the index back from those names to the
lxcsm states that do the same work.  It holds no table of its own; it reads
what is already written down elsewhere:

* the state docstrings: "Replaces LXC's lxc_spawn() ..." (engine/analysis/explain.py
  reads the names);
* engine/analysis/lxc_phases.py RULES: which state each line of an LXC trace
  belongs to, by the function that wrote it - applied to LXC's trace of the
  busybox container, `REFERENCE_TRACE`, so a function also brings the lines
  it writes in a real start;
* engine/analysis/premachine.py: lxcsm start's own steps before the machines,
  for LXC's functions that run before (or instead of) a state.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import textwrap
from dataclasses import dataclass, field

from lxcsm.engine.analysis import explain, premachine
from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.analysis.lxc_phases import LXC_ONLY, RULES, is_lxcsm_state
from lxcsm.engine.analysis.trace_diff import LxcLine, read_lxc
from lxcsm.engine.start.machine import TABLES, Table

# LXC 5.0.2's own trace of `lxc-start -n bb -l TRACE` on the busybox rootfs, start to stop, in
# the checkout (this file is engine/analysis/lxc_functions.py; the link to it in an editable
# install resolves to it).
REFERENCE_TRACE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                               "fixtures", "traces", "lxc-5.0.2-busybox-start.trace.log")
_CATCH_ALL = "zz_no_such_function_zz"   # a rule whose pattern matches this names no function
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


@dataclass
class Counterpart:
    """What lxcsm has for one LXC function."""
    function: str
    states: dict[tuple[str, str], list[str]] = field(default_factory=dict)   # (side, state) -> why
    steps: list[premachine.Step] = field(default_factory=list)               # before the machines
    lxc_only: dict[str, str] = field(default_factory=dict)                   # phase -> why lxcsm has none
    lines: list[LxcLine] = field(default_factory=list)                       # in the reference trace
    file: str = ""                                                           # LXC's source file

    def add_phase(self, phase: str, why: str) -> None:
        if is_lxcsm_state(phase):
            side, _, state = phase.partition(":")
            reasons = self.states.setdefault((side, state), [])
            if why not in reasons:
                reasons.append(why)
        elif phase in LXC_ONLY:
            self.lxc_only.setdefault(phase, LXC_ONLY[phase])
            self.steps += [step for step in premachine.STEPS if step.phase == phase and step not in self.steps]


@functools.cache
def reference_lines() -> tuple[LxcLine, ...]:
    """The reference trace's lines with their phases; none when the checkout's fixtures are not here."""
    try:
        return tuple(read_lxc(REFERENCE_TRACE)[0])
    except LogError:
        return ()


def _rule_names(pattern: str) -> list[str]:
    """The function names a rule's pattern spells out: lxc_mount_rootfs|dir_mount -> both."""
    return [part for part in pattern.split("|") if _IDENTIFIER.fullmatch(part)]


@functools.cache
def replaced(tables: tuple[Table, ...] = tuple(TABLES.values())) -> dict[str, list[tuple[str, str, str]]]:
    """LXC function -> (side, state, "Replaces ..." sentence) of each state whose docstring names it."""
    index: dict[str, list[tuple[str, str, str]]] = {}
    for table in tables:
        for state in table.states:
            info = explain.describe(table, state)
            for function in info.lxc_functions:
                index.setdefault(function, []).append((table.side, state, info.replaces))
    return index


@functools.cache
def known_functions(tables: tuple[Table, ...] = tuple(TABLES.values())) -> tuple[str, ...]:
    """Every LXC function name lxcsm can say something about, sorted."""
    names = set(replaced(tables))
    names |= {line.function for line in reference_lines()}
    names |= {name for rule in RULES for name in _rule_names(rule.function)}
    names |= {name for step in premachine.STEPS for name in re.findall(r"\b([A-Za-z_]\w*)\(\)", step.lxc)}
    # "_macvlan" is the tail of "netdev_configure_server_veth/_macvlan()" in a docstring, no name.
    return tuple(sorted(n for n in names if not (n.startswith("_") and not n.startswith("__"))))


def counterpart(function: str, tables: tuple[Table, ...] = tuple(TABLES.values())) -> Counterpart | None:
    """What lxcsm has for an LXC function, or None if lxcsm knows no such function."""
    found = Counterpart(function)
    for side, state, replaces in replaced(tables).get(function, []):
        found.add_phase(f"{side}:{state}", replaces)
    found.lines = [line for line in reference_lines() if line.function == function]
    for line in found.lines:
        found.file = found.file or line.file.removeprefix("../")
        if line.phase:
            count = sum(other.phase == line.phase for other in found.lines)
            found.add_phase(line.phase, f"{count} of its {len(found.lines)} lines in LXC's trace belong "
                                        f"here (lxc_phases.py RULES)")
    for rule in RULES:
        if (re.fullmatch(rule.function, function) and not re.fullmatch(rule.function, _CATCH_ALL)
                and ":" in rule.phase and not any(line.phase == rule.phase for line in found.lines)):
            found.add_phase(rule.phase, "lxc_phases.py RULES give its lines to this state"
                                        + (f" when they say /{rule.message}/" if rule.message else ""))
    for step in premachine.STEPS:
        if re.search(rf"\b{re.escape(function)}\(\)", step.lxc) and step not in found.steps:
            found.steps.append(step)
    if not (found.states or found.steps or found.lxc_only or found.lines):
        return None
    return found


def near(name: str, limit: int = 6) -> list[str]:
    """State names and LXC functions spelled like `name`."""
    states = [s for table in TABLES.values() for s in table.states]
    candidates = list(dict.fromkeys(states + list(known_functions())))
    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    # lxc_ prefixes weigh little in a name: spawn finds lxc_spawn, lxc_rootfs finds setup_rootfs.
    bare = name.removeprefix("lxc_")
    close += [c for c in candidates if bare and len(bare) > 3 and bare in c and c not in close]
    return close[:limit]


def explanation(found: Counterpart) -> str:
    """The text `lxcsm explain LXC_FUNCTION` prints."""
    where = f" ({found.file})" if found.file else ""
    lines = [f"{found.function}() - LXC 5{where}: in lxcsm", ""]
    for (side, state), reasons in found.states.items():
        summary = explain.describe(TABLES[side], state).summary
        lines.append(f"  {side:<8} {state:<22} {summary}")
        for reason in reasons:
            lines += textwrap.wrap(reason, 108, initial_indent=" " * 34 + "- ", subsequent_indent=" " * 36)
    for step in found.steps:
        lines.append(f"  before the machines: {step.name} ({premachine.where(step)}), a step of lxcsm start, "
                     f"no state")
        lines.append(f"    lxcsm: {step.does}")
        lines.append(f"    LXC:   {step.lxc}")
    for phase, why in found.lxc_only.items():
        if not any(step.phase == phase for step in found.steps):
            lines.append(f"  only in LXC ({phase}): {why}")
    trace = os.path.relpath(REFERENCE_TRACE) if reference_lines() else None
    lines.append("")
    if found.lines:
        lines.append(f"Its {len(found.lines)} line{'s' * (len(found.lines) != 1)} in LXC's trace of a start "
                     f"and stop ({trace}), with the state each belongs to:")
        lines += [f"  {line.number:>4}  {line.phase or '?':<28} {line.level:<6} {line.message}" for line in found.lines]
    elif trace:
        lines.append(f"It writes no line in LXC's trace of a start and stop ({trace}).")
    else:
        lines.append("(LXC's reference trace, fixtures/traces/ in lxcsm's checkout, is not here.)")
    states = [f"{side}:{state}" for side, state in found.states]
    if states:
        lines += ["", f"lxcsm explain SIDE:STATE ({', '.join(states)}) says what a state does."]
    return "\n".join(lines)
