"""`lxcsm graph`: the diagrams are drawn from the engine's tables, and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from transitions import Machine

from lxcsm import hooks
from lxcsm.engine import cli
from lxcsm.engine.analysis import explain, graph, premachine, timeline_picture
from lxcsm.engine.protocol.sync import SyncMsg
from lxcsm.engine.start.machine import CHILD, MONITOR, TABLES, Table

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")

SVG = "{http://www.w3.org/2000/svg}"
_STATE = re.compile(r'^\s*state "([^"]+)" as (\w+)$', re.M)
_ARROW = re.compile(r"^\s*(?:%% )?(\w+) --> (\w+) : (.+)$", re.M)


def table_arrows(table: Table) -> set[tuple[str, str, str]]:
    """Every (source, trigger, dest) the table allows, sources expanded."""
    return {(src, trigger, dest) for trigger, source, dest in table.transitions
            for src in (source if isinstance(source, tuple) else (source,))}


def drawn_arrows(text: str, table: Table) -> set[tuple[str, str, str]]:
    """The arrows between the table's states in mermaid text, drawn or written as comments."""
    declared = {node: name for name, node in _STATE.findall(text)}
    names = {f"{table.side}_{state}": state for state in table.states}
    assert all(declared.get(node) == state for node, state in names.items()), "a state is not declared"
    return {(names[src], trigger, names[dest]) for src, dest, label in _ARROW.findall(text)
            if src in names and dest in names for trigger in label.split(", ")}


def test_mermaid_lists_every_state_and_transition_of_both_machines():
    text = graph.mermaid(list(TABLES.values()))
    assert text.startswith("stateDiagram-v2\n")
    for table in TABLES.values():
        assert f"state {table.side} {{" in text
        assert {(name, node) for name, node in _STATE.findall(text)} >= {(s, f"{table.side}_{s}") for s in table.states}
        assert drawn_arrows(text, table) == table_arrows(table)
        assert set(table.triggers()) <= {trigger for _s, trigger, _d in drawn_arrows(text, table)}
        assert f"[*] --> {table.side}_{table.initial}" in text
        for final in table.final:
            assert f"{table.side}_{final} --> [*]" in text


def test_the_cli_draws_both_machines_by_default(capsys):
    assert cli.main(["graph"]) == 0
    assert capsys.readouterr().out == graph.mermaid([MONITOR, CHILD])


def test_one_machine_has_no_composite_state(capsys):
    assert cli.main(["graph", "--machine", "child"]) == 0
    text = capsys.readouterr().out
    assert "state child {" not in text and "monitor_" not in text
    assert drawn_arrows(text, CHILD) == table_arrows(CHILD)


def test_the_drawn_arrows_are_the_ones_transitions_accepts():
    # The supervisor's Machine, built from the same table: it allows exactly what is drawn.
    for table in TABLES.values():
        machine = Machine(states=list(table.states), initial=table.initial, auto_transitions=False,
                          transitions=[{"trigger": t, "source": list(s) if isinstance(s, tuple) else s, "dest": d}
                                       for t, s, d in table.transitions])
        accepted = {(src, name, t.dest) for name, event in machine.events.items()
                    for src, found in event.transitions.items() for t in found}
        assert drawn_arrows(graph.mermaid([table]), table) == accepted


def test_a_state_added_to_a_table_appears_in_every_diagram():
    grown = MONITOR._replace(
        states=MONITOR.states + ("frobnicating",),
        transitions=MONITOR.transitions + (("init_frobnicated", "poll", "frobnicating"),
                                           ("unfrobnicated", "frobnicating", "stopping")))
    text = graph.mermaid([grown, CHILD])
    assert drawn_arrows(text, grown) == table_arrows(grown)
    assert ("poll", "init_frobnicated", "frobnicating") in drawn_arrows(text, grown)
    assert "monitor_frobnicating" not in graph.mermaid([MONITOR, CHILD])   # the real table is untouched
    assert 'monitor_poll -> monitor_frobnicating [label="init_frobnicated"]' in graph.dot([grown])


def test_transitions_from_many_states_are_collapsed_but_all_written():
    text = graph.mermaid([MONITOR])
    drawn = [line for line in text.splitlines() if "--> monitor_aborting" in line and "%%" not in line]
    assert drawn == ["    monitor_failed_from --> monitor_aborting : failed"]
    assert 'state "any other state but stopping, stopped" as monitor_failed_from' in text


def test_dot_is_a_digraph_with_one_cluster_per_machine():
    text = graph.dot([MONITOR, CHILD])
    assert text.startswith("digraph lxcsm {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    assert "subgraph cluster_monitor {" in text and "subgraph cluster_child {" in text
    for table in TABLES.values():
        for state in table.states:
            assert f'{table.side}_{state} [label="{state}"' in text
        for trigger in table.triggers():
            assert re.search(rf'label="([^"]*\\n)?{trigger}(\\n[^"]*)?"', text), trigger


@needs_dot
def test_graphviz_accepts_the_dot_text():
    done = subprocess.run(["dot", "-Tcanon"], input=graph.dot([MONITOR, CHILD]), text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("digraph lxcsm {")


@needs_dot
def test_png_and_svg_are_rendered(tmp_path):
    png, svg = tmp_path / "machines.png", tmp_path / "machines.svg"
    assert cli.main(["graph", "--format", "png", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    assert cli.main(["graph", "--format", "svg", "--machine", "monitor", "-o", str(svg)]) == 0
    picture = svg.read_text()
    assert "<svg" in picture and "sync_post_configure" in picture and "startup" not in picture


def test_a_picture_without_dot_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(graph.shutil, "which", lambda program: None)
    out = tmp_path / "machines.png"
    assert cli.main(["graph", "--format", "png", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "graphviz" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--format", "svg"], ["--sequence", "--format", "dot"],
                                  ["--sequence", "--machine", "child"], ["--format", "jpeg"]])
def test_bad_options_are_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["graph", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lxcsm: ")


def test_text_goes_to_the_output_file(tmp_path, capsys):
    out = tmp_path / "machines.dot"
    assert cli.main(["graph", "--format", "dot", "-o", str(out)]) == 0
    assert out.read_text() == graph.dot([MONITOR, CHILD]) and capsys.readouterr().out == ""


# --- the sequence diagram ------------------------------------------------------------------------

def test_sequence_has_every_sync_message_in_protocol_order(capsys):
    assert cli.main(["graph", "--sequence"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("sequenceDiagram\n")
    messages = re.findall(r"^\s*(monitor|child)(?:->>|--\))(monitor|child): (.+)$", text, re.M)
    labels = [label for _src, _dest, label in messages]
    # sync.h's order; a message only a detour sends (IDMAPPED_MOUNTS: an idmapped rootfs) is off this road
    def sent(states, table):
        return {msg for state in states for _kind, msg in explain.describe(table, state).sync}
    detoured = set().union(*(sent(t.detours, t) - sent(t.road(), t) for t in (MONITOR, CHILD)))
    protocol = [msg.name for msg in sorted(SyncMsg) if msg < SyncMsg.ERROR and msg.name not in detoured]
    assert list(dict.fromkeys(labels)) == protocol + [explain.END_OF_FILE]
    assert ("monitor", "child", "FDS") in messages and ("child", "monitor", "FDS") in messages
    assert labels == ["STARTUP", "CONFIGURE", "POST_CONFIGURE", "CGROUP_LIMITS", "FDS", "FDS",
                      "READY_START", explain.END_OF_FILE]


def test_sequence_shows_each_sides_states_in_start_order():
    steps = graph.sequence(MONITOR, CHILD)
    for table in (MONITOR, CHILD):
        notes = [step[2] for step in steps if step[0] == "state" and step[1] == table.side]
        assert notes == [s for s in table.states if s in notes]
        assert {s for s in table.road() if s.startswith("sync_")} <= set(notes)
    assert steps.index(("state", "child", "startup")) > steps.index(("message", "monitor", "child", "STARTUP"))


def test_a_broken_protocol_is_reported_not_drawn():
    # A child that skipped `configure` never sends CONFIGURE: the monitor would wait forever.
    skipping = CHILD._replace(transitions=(("started", "startup", "setup_rootfs"),) + CHILD.transitions[1:])
    with pytest.raises(ValueError, match="monitor waits for CONFIGURE"):
        graph.sequence(MONITOR, skipping)


def test_the_readme_carries_the_current_sequence_diagram():
    """The README's diagram is generated, never edited: regenerate it with `lxcsm graph --sequence`."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    opening = "<!-- lxcsm graph --sequence -->\n```mermaid\n"
    start = readme.index(opening) + len(opening)
    shown = readme[start: readme.index("```\n<!-- end -->", start)]
    assert shown == graph.mermaid_sequence(MONITOR, CHILD)


# --- what the state graph draws besides the tables -----------------------------------------------------

def test_the_steps_before_the_machines_are_the_ones_the_code_takes(monkeypatch):
    assert premachine.drift() == []
    moved = premachine.STEPS[0]._replace(code=("preflight.check(", "loader.load("))   # the wrong order
    monkeypatch.setattr(premachine, "STEPS", (moved,) + premachine.STEPS[1:])
    assert premachine.drift() == ["config: engine/cli/start.py:run makes no loader.load( after the step's "
                                  "earlier calls"]


def test_the_steps_before_the_machines_are_drawn_as_steps_not_states():
    text = graph.dot([MONITOR, CHILD])
    cluster = text[text.index("subgraph cluster_before {"): text.index("subgraph cluster_monitor {")]
    for i, step in enumerate(premachine.STEPS):
        assert re.search(rf'before_{i} \[label="{re.escape(step.name)}', cluster), step.name
        assert f"monitor_{step.name}" not in text
    assert f"before_{len(premachine.STEPS) - 1} -> monitor__start" in text
    assert "cluster_before" not in graph.dot([CHILD])
    mermaid = graph.mermaid([MONITOR, CHILD])
    assert "note left of monitor_init_handler" in mermaid
    assert all(f". {step.name}" in mermaid for step in premachine.STEPS)


def test_every_sync_message_is_an_edge_between_the_states_that_send_and_wait_for_it():
    text = graph.dot([MONITOR, CHILD])
    edges = graph.sync_edges(MONITOR, CHILD)
    messages = [step[3] for step in graph.sequence(MONITOR, CHILD) if step[0] == "message"]
    assert [edge.message for edge in edges] == messages
    for edge in edges:
        sender = explain.describe(TABLES[edge.sender], edge.sender_state).sync
        receiver = explain.describe(TABLES[edge.receiver], edge.receiver_state).sync
        assert ("send", edge.message) in sender and ("wait", edge.message) in receiver
        assert edge.sender != edge.receiver
        assert re.search(rf'^    {edge.sender}_{edge.sender_state} -> {edge.receiver}_{edge.receiver_state} '
                         rf'\[label="{re.escape(edge.message)}", color="{graph.SYNC_COLOUR}"', text, re.M), edge
    assert ("monitor", "spawn", "child", "startup", "STARTUP") in edges
    assert ("child", "exec", "monitor", "sync_ready_start", explain.END_OF_FILE) in edges
    # One machine alone has no one to talk to.
    assert graph.SYNC_COLOUR not in graph.dot([MONITOR])


def test_every_hook_is_drawn_from_the_state_that_runs_it():
    text = graph.dot([MONITOR, CHILD])
    for kind, (side, state) in hooks.POINTS.items():
        node = f"{side}_hook_{kind.replace('-', '_')}"
        assert f'{node} [label="lxc.hook.{kind}\\n' in text
        assert f"{side}_{state} -> {node} [style=dotted" in text


@needs_dot
def test_graphviz_accepts_the_graph_with_its_cross_edges(tmp_path):
    svg = tmp_path / "machines.svg"
    assert cli.main(["graph", "--format", "svg", "-o", str(svg)]) == 0
    picture = svg.read_text()
    assert ">STARTUP<" in picture and "lxc.hook.pre&#45;start" in picture and ">preflight<" in picture


# --- the sequence diagram as a picture -------------------------------------------------------------

def test_the_sequence_svg_has_a_box_per_state_and_an_arrow_per_message(tmp_path):
    out = tmp_path / "sequence.svg"
    assert cli.main(["graph", "--sequence", "--format", "svg", "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    steps = graph.sequence(MONITOR, CHILD)
    boxes = [(r.get("class").split()[1], r.get("data-state"), float(r.get("y")))
             for r in root.iter(f"{SVG}rect") if (r.get("class") or "").startswith("state ")]
    assert [(side, state) for side, state, _y in boxes] == [s[1:] for s in steps if s[0] == "state"]
    arrows = [line for line in root.iter(f"{SVG}line") if line.get("class") == "message"]
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "message"]
    assert [(a.get("data-from"), a.get("data-to"), label) for a, label in zip(arrows, labels, strict=True)] == \
           [s[1:] for s in steps if s[0] == "message"]
    ys = [float(a.get("y1")) for a in arrows]
    assert ys == sorted(ys) and all(a.get("y1") == a.get("y2") for a in arrows)
    for arrow in arrows:   # from one lifeline to the other
        direction = float(arrow.get("x2")) - float(arrow.get("x1"))
        assert (direction > 0) == (arrow.get("data-from") == "monitor")
    heads = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "participant"]
    assert heads == ["monitor", "child"]
    before = " ".join(t.text for t in root.iter(f"{SVG}text") if t.get("class") == "before")
    assert all(step.name in before for step in premachine.STEPS)
    hooks_drawn = " ".join(t.text for t in root.iter(f"{SVG}text") if t.get("class") == "hook")
    assert "lxc.hook.pre-start" in hooks_drawn and "lxc.hook.start-host" in hooks_drawn


def test_the_sequence_png_goes_through_the_svg_renderer(tmp_path, capsys):
    if timeline_picture.find_converter() is None:
        pytest.skip("no SVG renderer here (rsvg-convert, ImageMagick or inkscape)")
    png = tmp_path / "sequence.png"
    assert cli.main(["graph", "--sequence", "--format", "png", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sequence_png_without_a_renderer_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    png = tmp_path / "sequence.png"
    assert cli.main(["graph", "--sequence", "--format", "png", "-o", str(png)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "librsvg2-bin" in err and not png.exists()
