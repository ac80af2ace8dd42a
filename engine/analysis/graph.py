"""`lxcsm graph`: diagrams of the two machines, drawn from the tables the engine runs.

    lxcsm graph [--machine monitor|child|both] [--format mermaid|dot|svg|png] [-o FILE]
    lxcsm graph --sequence [--format mermaid|svg|png] [-o FILE]

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

Besides the tables, the diagrams show what a start does between and around
the machines, each read from where the code declares it: lxcsm start's steps
before the first state (engine/analysis/premachine.py), drawn as plain steps,
not states; each lxc.hook.* beside the state that runs it (hooks.POINTS); and,
when both machines are drawn, every sync message as an edge from the state
that sends it to the state that waits for it (`sync_edges`, from the same play
of the protocol as `sequence`).  Invisible edges put the state after a wait
below the message's sender, so the picture runs top to bottom in time.

mermaid and dot are text; svg and png are rendered by graphviz's ``dot``
program, which only those two formats need.

`--sequence` draws the sync protocol as a mermaid sequence diagram: each
side's states as notes, and the messages between them in the order they are
exchanged; with ``--format svg|png`` the same is drawn here as SVG
(`svg_sequence`: lifelines, state boxes, message arrows; PNG through the SVG
renderer `lxcsm timeline --png` uses), so no Mermaid renderer is needed.
Who sends and who waits for what is read from the state modules by
engine/analysis/explain.py; the order comes from playing both machines'
normal start against each other (`sequence`).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import textwrap
from collections import deque
from typing import NamedTuple

from lxcsm import hooks
from lxcsm.engine.analysis import explain, premachine
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


def _mermaid_before(table: Table, indent: str) -> list[str]:
    """lxcsm start's steps before the monitor machine, as a note on its first state: no states."""
    if table.side != "monitor":
        return []
    lines = [f"note left of {_node(table, table.initial)}", "    before the machines (lxcsm start, not states):"]
    lines += [f"    {i}. {step.name}" + (" (-d only)" if step.daemon_only else "")
              for i, step in enumerate(premachine.STEPS, 1)]
    lines.append("end note")
    return [indent + line for line in lines]


def mermaid(tables: list[Table]) -> str:
    lines = ["stateDiagram-v2",
             "    %% lxcsm's state machines, from engine/start/machine.py (lxcsm graph)",
             "    classDef many stroke-dasharray: 5 5"]
    if len(tables) == 1:
        lines += _mermaid_machine(tables[0], "    ") + _mermaid_before(tables[0], "    ")
    for table in tables if len(tables) > 1 else ():
        lines.append(f"    state {table.side} {{")
        lines += _mermaid_machine(table, "        ") + _mermaid_before(table, "        ")
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


SYNC_COLOUR = "#c0392b"
HOOK_COLOUR = "#7d5a00"


def _dot_before(indent: str) -> list[str]:
    """lxcsm start's steps before the monitor machine (engine/analysis/premachine.py), as a cluster of
    plain boxes chained to the monitor's first state: they are no states."""
    lines = ["subgraph cluster_before {",
             '    label="lxcsm start, before the machines (steps, not states)"; fontsize=12; color=gray;'
             ' style=dashed; fontcolor="#555555";']
    names = [f"before_{i}" for i in range(len(premachine.STEPS))]
    for node, step in zip(names, premachine.STEPS, strict=True):
        title = step.name + (" (-d only)" if step.daemon_only else "")
        lines.append(f'    {node} [label={_quote(title, *textwrap.wrap(step.does, 44))}, shape=box, '
                     f'style="dashed", fontsize=9, fontcolor="#444444", color="#888888"]')
    lines += [f"    {a} -> {b} [style=dashed, color=\"#888888\"]" for a, b in itertools.pairwise(names)]
    lines.append("}")
    lines.append(f'{names[-1]} -> monitor__start [style=dashed, color="#888888", label="the monitor machine"]')
    return [indent + line for line in lines]


def _dot_hooks(table: Table, indent: str) -> list[str]:
    """Each lxc.hook.* kind (hooks.POINTS) beside the state that runs it, an edge from that state."""
    lines = []
    where = "on the host" if table.side == "monitor" else "in the container"
    for kind, (side, state) in hooks.POINTS.items():
        if side != table.side or state not in table.states:
            continue
        node = f"{table.side}_hook_{kind.replace('-', '_')}"
        lines.append(f'{node} [label={_quote(f"lxc.hook.{kind}", where)}, shape=note, style=filled, '
                     f'fillcolor="#fff8dc", color="{HOOK_COLOUR}", fontcolor="{HOOK_COLOUR}", fontsize=9]')
        lines.append(f'{_node(table, state)} -> {node} [style=dotted, color="{HOOK_COLOUR}", arrowhead=none, '
                     f'constraint=false]')
        lines.append(f"{{rank=same; {_node(table, state)}; {node}}}")
    return [indent + line for line in lines]


def _spawner(table: Table) -> list[str]:
    """The monitor state that clones the child: the one whose calls include clone3(2)."""
    return [state for state in start_path(table)
            if any(call.syscall == "clone3(2)" for call in explain.describe(table, state).calls)]


def _dot_sync(tables: list[Table], indent: str) -> list[str]:
    """The sync messages of a start as edges between the machines: sender's state -> waiter's state."""
    sides = {table.side: table for table in tables}
    if set(sides) != {"monitor", "child"}:
        return []
    lines = []
    for edge in sync_edges(sides["monitor"], sides["child"]):
        style = "dashed" if edge.message == explain.END_OF_FILE else "bold"
        lines.append(f"{edge.sender}_{edge.sender_state} -> {edge.receiver}_{edge.receiver_state} "
                     f"[label={_quote(edge.message)}, color=\"{SYNC_COLOUR}\", fontcolor=\"{SYNC_COLOUR}\", "
                     f"style={style}, penwidth=1.4, constraint=false]")
    # Drawn top to bottom in time: the state after the one that took a message is below the
    # state that sent it (an invisible edge; the message's own edge cannot order the ranks, as a
    # state that sends and then waits would make a cycle), and the child begins below spawn.
    paths = {side: start_path(table) for side, table in sides.items()}
    for edge in sync_edges(sides["monitor"], sides["child"]):
        path = paths[edge.receiver]
        after = path.index(edge.receiver_state) + 1
        if after < len(path):
            lines.append(f"{edge.sender}_{edge.sender_state} -> {edge.receiver}_{path[after]} [style=invis]")
    spawn = next((e for e in _spawner(sides["monitor"])), None)
    if spawn is not None:
        lines.append(f'monitor_{spawn} -> child__start [label="clone3()", style=dashed, color="#555555", '
                     f'fontcolor="#555555"]')
    return [indent + line for line in lines]


def dot(tables: list[Table]) -> str:
    """Both machines (or one) as clusters; lxcsm start's steps before them; each state's hooks; and
    with both machines the sync messages between them, in red."""
    legend = ("blue: states that block at a sync barrier; red: sync messages between the machines; "
              if len(tables) > 1 else "blue: states that block at a sync barrier; ") + "notes: lxc.hook.* runs"
    lines = ["digraph lxcsm {",
             '    graph [fontname="Helvetica", nodesep=0.4, ranksep=0.35, labelloc=t, fontsize=16, newrank=true,',
             f'           label={_quote("lxcsm: the state machines of a start (engine/start/machine.py)", legend)}];',
             '    node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=11];',
             '    edge [fontname="Helvetica", fontsize=9];']
    if any(table.side == "monitor" for table in tables):
        lines += _dot_before("    ")
    for table in tables:
        lines.append(f"    subgraph cluster_{table.side} {{")
        lines.append(f'        label={_quote(table.side)}; fontsize=14; color=gray;')
        lines += _dot_machine(table, "        ")
        lines += _dot_hooks(table, "        ")
        lines.append("    }")
    lines += _dot_sync(tables, "    ")
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


class SyncEdge(NamedTuple):
    """One sync message of a normal start, from the state that sends it to the state that takes it."""
    sender: str           # side
    sender_state: str
    receiver: str         # side
    receiver_state: str
    message: str          # a SyncMsg name, or explain.END_OF_FILE


def _play(monitor: Table, child: Table) -> tuple[list[tuple[str, ...]], list[SyncEdge]]:
    """Both machines' normal start played against each other: the steps of `sequence`, and each
    message with the states that send and take it."""
    peer = {monitor.side: child.side, child.side: monitor.side}
    scripts = {}
    for table in (monitor, child):
        path = start_path(table)
        ops = [explain.describe(table, state).sync for state in path]
        last = max((i for i, found in enumerate(ops) if found), default=-1)
        steps: list[tuple[str, str]] = []
        for state, found in list(zip(path, ops, strict=True))[: last + 2]:
            steps.append(("state", state))
            steps += list(found)
        scripts[table.side] = deque(steps)
    inbox: dict[str, deque[tuple[str, int]]] = {side: deque() for side in scripts}   # (message, index in sent)
    current = dict.fromkeys(scripts, "")
    sent: list[list[str]] = []     # [sender, its state, receiver, receiver's state once taken, message]
    out: list[tuple[str, ...]] = []
    progress = True
    while progress:
        progress = False
        for side, script in scripts.items():
            while script:
                kind, what = script[0]
                if kind == "wait":
                    if not inbox[side] or inbox[side][0][0] != what:
                        break
                    sent[inbox[side].popleft()[1]][3] = current[side]
                elif kind == "send":
                    inbox[peer[side]].append((what, len(sent)))
                    sent.append([side, current[side], peer[side], "", what])
                    out.append(("message", side, peer[side], what))
                else:
                    current[side] = what
                    out.append(("state", side, what))
                script.popleft()
                progress = True
    stuck = [f"{side} waits for {script[0][1]}" for side, script in scripts.items() if script]
    if stuck:
        raise ValueError(f"the sync protocol deadlocks: {'; '.join(stuck)}")
    return out, [SyncEdge(*edge) for edge in sent]


def sequence(monitor: Table, child: Table) -> list[tuple[str, ...]]:
    """The start as both machines run it: ("state", side, state) and ("message", from, to, msg).

    Each side walks its start path doing its states' sync operations (sends, and waits
    that block until the message is there); a side that blocks lets the other run.  Each
    side stops one state after its last sync operation.  A wait that can never be met
    is a protocol bug: ValueError.
    """
    return _play(monitor, child)[0]


def sync_edges(monitor: Table, child: Table) -> list[SyncEdge]:
    """The messages of `sequence`, each from the state that sends it to the state that waits for it."""
    return _play(monitor, child)[1]


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


# --- the sequence diagram as a picture --------------------------------------------------------------

_SEQ_ROW, _SEQ_BOX_W, _SEQ_BOX_H = 26, 176, 20
_SEQ_X = {"monitor": 230.0, "child": 630.0}
_SEQ_WIDTH = 860
_SEQ_COLOURS = {"monitor": "#3f6fb0", "child": "#d0782a"}


def _svg_text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle", fill: str = "#222",
              weight: str = "normal", css: str = "") -> str:
    from xml.sax.saxutils import escape
    cls = f' class="{css}"' if css else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}"{cls}>{escape(text)}</text>')


def svg_sequence(monitor: Table, child: Table) -> str:
    """`sequence` drawn as SVG, by hand (no Mermaid renderer needed): a lifeline per machine, each
    state a box on its side's lifeline, each message an arrow between them, top to bottom in the
    order of a start; lxcsm start's steps before the machines stand above the monitor's lifeline."""
    steps = sequence(monitor, child)
    before = premachine.STEPS
    lines_before = sum(len(textwrap.wrap(f"{s.name} (-d only): {s.does}", 130)) for s in before)
    top = 74 + lines_before * 15 + 50
    height = top + len(steps) * _SEQ_ROW + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_SEQ_WIDTH}" height="{height}" '
           f'viewBox="0 0 {_SEQ_WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           f'orient="auto"><path d="M0,0L10,5L0,10z" fill="{SYNC_COLOUR}"/></marker></defs>',
           f'<rect x="0" y="0" width="{_SEQ_WIDTH}" height="{height}" fill="#ffffff"/>',
           _svg_text(16, 26, "lxcsm: the sync protocol of a start (lxcsm graph --sequence)", size=15,
                     anchor="start", weight="bold"),
           _svg_text(16, 46, "each state a box on its machine's lifeline; red arrows: sync messages, "
                             "from the state that sends to the state that waits", anchor="start", fill="#666")]
    # lxcsm start's steps before the machines: text, not boxes - they are no states.
    y = 74.0
    out.append(_svg_text(16, y, "before the machines (lxcsm start; steps, not states):", anchor="start",
                         fill="#555", weight="bold", size=10))
    for before_step in before:
        note = " (-d only)" if before_step.daemon_only else ""
        for j, line in enumerate(textwrap.wrap(f"{before_step.name}{note}: {before_step.does}", 130)):
            y += 15
            out.append(_svg_text(28 + 12 * bool(j), y, line, anchor="start", fill="#555", size=10, css="before"))
    # Heads and lifelines.
    for side, table in ((monitor.side, monitor), (child.side, child)):
        x = _SEQ_X[side]
        colour = _SEQ_COLOURS.get(side, "#444")
        out.append(f'<rect x="{x - 60:.1f}" y="{top - 30}" width="120" height="22" rx="4" fill="{colour}"/>')
        out.append(_svg_text(x, top - 15, table.side, size=12, fill="#ffffff", weight="bold", css="participant"))
        out.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{height - 40}" stroke="{colour}" '
                   f'stroke-width="1.5" stroke-dasharray="4,3" class="lifeline"/>')
    # Each state lasts until its side's next state: a bar on the lifeline below its box.
    rows = {side: [i for i, step in enumerate(steps) if step[0] == "state" and step[1] == side] for side in _SEQ_X}
    for side, mine in rows.items():
        for i, j in zip(mine, mine[1:] + [len(steps)], strict=True):
            y0, y1 = top + i * _SEQ_ROW + _SEQ_ROW / 2 + _SEQ_BOX_H / 2, top + j * _SEQ_ROW + 3
            if y1 > y0 + 2:
                out.append(f'<rect x="{_SEQ_X[side] - 4:.1f}" y="{y0:.1f}" width="8" height="{y1 - y0:.1f}" '
                           f'fill="{_SEQ_COLOURS.get(side, "#444")}" fill-opacity="0.25" class="active"/>')
    hooks_of: dict[tuple[str, str], list[str]] = {}
    for kind, point in hooks.POINTS.items():
        hooks_of.setdefault(point, []).append(f"lxc.hook.{kind}")
    for i, step in enumerate(steps):
        y = top + i * _SEQ_ROW + _SEQ_ROW / 2
        if step[0] == "state":
            side, state = step[1], step[2]
            x = _SEQ_X[side]
            fill = "#add8e6" if state.startswith("sync_") else "#ffffff"
            out.append(f'<rect x="{x - _SEQ_BOX_W / 2:.1f}" y="{y - _SEQ_BOX_H / 2:.1f}" width="{_SEQ_BOX_W}" '
                       f'height="{_SEQ_BOX_H}" rx="6" fill="{fill}" stroke="{_SEQ_COLOURS.get(side, "#444")}" '
                       f'class="state {side}" data-state="{state}"/>')
            out.append(_svg_text(x, y + 4, state))
            runs = hooks_of.get((side, state))
            if runs:   # outside the box, away from the other lifeline
                outward = -1 if x < _SEQ_WIDTH / 2 else 1
                out.append(_svg_text(x + outward * (_SEQ_BOX_W / 2 + 6), y + 4, "runs " + ", ".join(runs), size=9,
                                     anchor="end" if outward < 0 else "start", fill=HOOK_COLOUR, css="hook"))
        else:
            _kind, sender, receiver, message = step
            x1, x2 = _SEQ_X[sender], _SEQ_X[receiver]
            x1 += 6 * (1 if x2 > x1 else -1)
            x2 -= 6 * (1 if x2 > x1 else -1)
            dash = ' stroke-dasharray="6,4"' if message == explain.END_OF_FILE else ""
            out.append(f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{SYNC_COLOUR}" '
                       f'stroke-width="1.6" marker-end="url(#arrow)"{dash} class="message" '
                       f'data-from="{sender}" data-to="{receiver}"/>')
            out.append(_svg_text((x1 + x2) / 2, y - 4, message, size=10, fill=SYNC_COLOUR, css="message"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
