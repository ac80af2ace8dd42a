"""`lxcsm graph`: diagrams of the two machines, drawn from the tables the engine runs.

    lxcsm graph [--machine monitor|child|both] [--format mermaid|dot|svg|png] [-o FILE]
    lxcsm graph --sequence [-o FILE]

The state diagrams are written from `Table`s (engine/start/machine.py) - the CLI
passes machine.TABLES, the very tables the supervisor builds its Machines
from - so a state or transition added there appears here with no other
change.  They are written directly rather than through transitions'
GraphMachine: its mermaid output marks the initial state as the "active" one
and has no final states, and its graphviz engines need python packages lxcsm
does not depend on.

A transition with many sources (``failed``, which leads to ``aborting`` from
nearly every state) is drawn once, from a dashed box naming the states it
does not come from, as h11 leaves out its arrows to ERROR; the mermaid text
still has one comment line per source, so every transition is written down.

mermaid and dot are text; svg and png are rendered by graphviz's ``dot``
program, which only those two formats need.

`--sequence` draws the sync protocol as a mermaid sequence diagram: each
side's states as notes, and the messages between them in the order they are
exchanged.  Who sends and who waits for what is read from the state modules
by engine/analysis/explain.py; the order comes from playing both machines' normal
start against each other (`sequence`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import deque

from lxcsm.engine.analysis import explain
from lxcsm.engine.start.machine import Table

# A transition from this many states or more is drawn collapsed (see above).
COLLAPSE_FROM = 4
TEXT_FORMATS = ("mermaid", "dot")
PICTURE_FORMATS = ("svg", "png")


def _node(table: Table, state: str) -> str:
    """The id of a state in a diagram: both machines have a sync_fds and an aborting."""
    return f"{table.side}_{state}"


def edges(table: Table) -> tuple[list[tuple[str, str, list[str]]], list[tuple[str, tuple[str, ...], str]]]:
    """The table's arrows, in table order: (source, dest, triggers) and the collapsed ones.

    Triggers between the same two states share one arrow.
    """
    arrows: dict[tuple[str, str], list[str]] = {}
    collapsed = []
    for trigger, source, dest in table.transitions:
        sources = source if isinstance(source, tuple) else (source,)
        if len(sources) >= COLLAPSE_FROM:
            collapsed.append((trigger, sources, dest))
            continue
        for src in sources:
            arrows.setdefault((src, dest), []).append(trigger)
    return [(src, dest, triggers) for (src, dest), triggers in arrows.items()], collapsed


def _others(table: Table, sources: tuple[str, ...], dest: str) -> str:
    """'any other state', or 'any other state but x, y': the label of a collapsed source."""
    missing = [state for state in table.states if state not in sources and state != dest]
    return "any other state" + (f" but {', '.join(missing)}" if missing else "")


# --- mermaid --------------------------------------------------------------------------------

def _mermaid_machine(table: Table, indent: str) -> list[str]:
    node = lambda state: _node(table, state)
    lines = [f'state "{state}" as {node(state)}' for state in table.states]
    lines.append(f"[*] --> {node(table.initial)}")
    arrows, collapsed = edges(table)
    lines += [f"{node(src)} --> {node(dest)} : {', '.join(triggers)}" for src, dest, triggers in arrows]
    for trigger, sources, dest in collapsed:
        many = f"{table.side}_{trigger}_from"
        lines.append(f'state "{_others(table, sources, dest)}" as {many}')
        lines.append(f"{many} --> {node(dest)} : {trigger}")
        lines.append(f"class {many} many")
        lines += [f"%% {node(src)} --> {node(dest)} : {trigger}" for src in sources]
    lines += [f"{node(state)} --> [*]" for state in table.final]
    return [indent + line for line in lines]


def mermaid(tables: list[Table]) -> str:
    lines = ["stateDiagram-v2",
             "    %% lxcsm's state machines, from engine/start/machine.py (lxcsm graph)",
             "    classDef many stroke-dasharray: 5 5"]
    if len(tables) == 1:
        lines += _mermaid_machine(tables[0], "    ")
    for table in tables if len(tables) > 1 else ():
        lines.append(f"    state {table.side} {{")
        lines += _mermaid_machine(table, "        ")
        lines.append("    }")
    return "\n".join(lines) + "\n"


# --- graphviz ---------------------------------------------------------------------------------

def _quote(*lines: str) -> str:
    """A DOT string of one or more lines."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def _dot_machine(table: Table, indent: str) -> list[str]:
    node = lambda state: _node(table, state)
    start = f"{table.side}__start"
    lines = [f"{start} [shape=point, width=0.15]"]
    for state in table.states:
        style = []
        if state.startswith("sync_"):       # blocks on a sync message (engine/start/machine.py)
            style.append("fillcolor=lightblue")
        if state in table.final:
            style.append("peripheries=2")
        lines.append(f"{node(state)} [label={_quote(state)}{''.join(', ' + s for s in style)}]")
    lines.append(f"{start} -> {node(table.initial)}")
    arrows, collapsed = edges(table)
    lines += [f"{node(src)} -> {node(dest)} [label={_quote(*triggers)}]"
              for src, dest, triggers in arrows]
    for trigger, sources, dest in collapsed:
        many = f"{table.side}_{trigger}_from"
        lines.append(f"{many} [label={_quote(_others(table, sources, dest))}, style=dashed]")
        lines.append(f"{many} -> {node(dest)} [label={_quote(trigger)}, style=dashed]")
        lines.append(f"{node(dest)} [fillcolor=mistyrose]")
        # Drawn beside the state the table lists before it (stopping, exec), not at the top.
        before = table.states[table.states.index(dest) - 1]
        lines.append(f"{{rank=same; {node(before)}; {node(dest)}}}")
    return [indent + line for line in lines]


def dot(tables: list[Table]) -> str:
    lines = ["digraph lxcsm {",
             '    graph [fontname="Helvetica", nodesep=0.4, ranksep=0.35, labelloc=t, fontsize=16,',
             '           label="lxcsm: the state machines of a start (engine/start/machine.py)"];',
             '    node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=11];',
             '    edge [fontname="Helvetica", fontsize=9];']
    for table in tables:
        lines.append(f"    subgraph cluster_{table.side} {{")
        lines.append(f'        label={_quote(table.side)}; fontsize=14; color=gray;')
        lines += _dot_machine(table, "        ")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str, path: str) -> None:
    """Run graphviz's dot; OSError/RuntimeError carry one line for the user."""
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(f"--format {fmt} needs graphviz's `dot` program, which is not installed "
                           f"(apt-get install graphviz, or tools/setup)")
    resolution = ["-Gdpi=144"] if fmt == "png" else []
    done = subprocess.run([program, f"-T{fmt}", *resolution, "-o", path], input=dot_text.encode(),
                          capture_output=True, timeout=60)
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"]
        raise RuntimeError(f"dot -T{fmt} -o {path}: {error[0]}")


# --- the sync protocol ----------------------------------------------------------------------------

def start_path(table: Table) -> list[str]:
    """A normal start: from the initial state, the first transition the table lists, until a
    final state or a state seen before."""
    path = [table.initial]
    while path[-1] not in table.final:
        dest = next(d for _t, source, d in table.transitions
                    if path[-1] in (source if isinstance(source, tuple) else (source,)))
        if dest in path:
            break
        path.append(dest)
    return path


def sequence(monitor: Table, child: Table) -> list[tuple[str, ...]]:
    """The start as both machines run it: ("state", side, state) and ("message", from, to, msg).

    Each side walks its start path doing its states' sync operations (sends, and waits
    that block until the message is there); a side that blocks lets the other run.  Each
    side stops one state after its last sync operation.  A wait that can never be met
    is a protocol bug: ValueError.
    """
    peer = {monitor.side: child.side, child.side: monitor.side}
    scripts = {}
    for table in (monitor, child):
        path = start_path(table)
        ops = [explain.describe(table, state).sync for state in path]
        last = max((i for i, found in enumerate(ops) if found), default=-1)
        steps = []
        for state, found in list(zip(path, ops, strict=True))[: last + 2]:
            steps.append(("state", state))
            steps += list(found)
        scripts[table.side] = deque(steps)
    inbox = {side: deque() for side in scripts}
    out = []
    progress = True
    while progress:
        progress = False
        for side, script in scripts.items():
            while script:
                kind, what = script[0]
                if kind == "wait":
                    if not inbox[side] or inbox[side][0] != what:
                        break
                    inbox[side].popleft()
                elif kind == "send":
                    inbox[peer[side]].append(what)
                    out.append(("message", side, peer[side], what))
                else:
                    out.append(("state", side, what))
                script.popleft()
                progress = True
    stuck = [f"{side} waits for {script[0][1]}" for side, script in scripts.items() if script]
    if stuck:
        raise ValueError(f"the sync protocol deadlocks: {'; '.join(stuck)}")
    return out


def mermaid_sequence(monitor: Table, child: Table) -> str:
    lines = ["sequenceDiagram",
             "    %% the sync protocol of a start, from the state modules (lxcsm graph --sequence)",
             f"    participant {monitor.side}", f"    participant {child.side}"]
    for step in sequence(monitor, child):
        if step[0] == "state":
            lines.append(f"    Note over {step[1]}: {step[2]}")
        else:
            arrow = "--)" if step[3] == explain.END_OF_FILE else "->>"
            lines.append(f"    {step[1]}{arrow}{step[2]}: {step[3]}")
    return "\n".join(lines) + "\n"
