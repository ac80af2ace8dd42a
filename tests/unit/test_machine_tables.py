"""The two start machines as data (engine/start/machine.py), and the supervisor that runs them.

The tables are checked as graphs (declared, reachable, able to finish, abort
arrows where the spec wants them) and as live `transitions` machines built the
way engine/supervisor.Supervisor builds them: every (state, trigger) pair is
either the move the table declares or refused without moving.  Then a
Supervisor runs a small table of fake state modules, to show how a failing
state becomes the `failed` trigger and what it records.
"""

from __future__ import annotations

import errno
import inspect
import pkgutil
import re
import types
from collections import deque

import pytest
from transitions import MachineError

from lxcsm.engine.errors import StateError, describe
from lxcsm.engine.protocol.command_server import AlreadyRunning
from lxcsm.engine.protocol.sync import PeerFailed, SyncError, SyncMsg
from lxcsm.engine.start import supervisor as supervisor_mod
from lxcsm.engine.start.context import Failure
from lxcsm.engine.start.machine import CHILD, MONITOR, TABLES, Table
from lxcsm.engine.start.supervisor import Supervisor

ALL_TABLES = [MONITOR, CHILD]
TABLE_IDS = ["monitor", "child"]


# --- helpers ---------------------------------------------------------------------------


class RecordingLog:
    """A logger stub: bind() returns a logger whose events land in one shared list."""

    def __init__(self, events: list | None = None, context: dict | None = None) -> None:
        self.events = [] if events is None else events
        self.context = context or {}

    def bind(self, **context):
        return RecordingLog(self.events, {**self.context, **context})

    def _record(self, level, event, fields):
        self.events.append((level, self.context.get("category"), event, fields))

    def trace(self, event, **fields):
        self._record("trace", event, fields)

    def debug(self, event, **fields):
        self._record("debug", event, fields)

    def info(self, event, **fields):
        self._record("info", event, fields)

    def error(self, event, **fields):
        self._record("error", event, fields)


def sources(source) -> tuple[str, ...]:
    return source if isinstance(source, tuple) else (source,)


def edges(table: Table) -> list[tuple[str, str, str]]:
    """(trigger, source, dest) with multi-source transitions spread out."""
    return [(trigger, src, dest) for trigger, source, dest in table.transitions for src in sources(source)]


def declared_moves(table: Table) -> dict[tuple[str, str], str]:
    return {(src, trigger): dest for trigger, src, dest in edges(table)}


def reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, queue = {start}, deque([start])
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def new_supervisor(table: Table) -> Supervisor:
    return Supervisor(table, types.SimpleNamespace(log=None, failure=None), RecordingLog())


# --- the tables as data -------------------------------------------------------------


def test_tables_registry_names_both_sides():
    assert TABLES == {"monitor": MONITOR, "child": CHILD}
    assert MONITOR.side == "monitor" and CHILD.side == "child"


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_states_are_unique_and_initial_and_final_are_declared(table):
    assert len(set(table.states)) == len(table.states)
    assert table.initial in table.states
    assert table.final and set(table.final) <= set(table.states)


@pytest.mark.parametrize("table,state", [(t, s) for t in ALL_TABLES for s in t.states],
                         ids=[f"{t.side}.{s}" for t in ALL_TABLES for s in t.states])
def test_every_state_has_a_documented_module_with_enter(table, state):
    module = table.module(state)
    assert module.__name__ == f"lxcsm.states.{table.side}.{state}"
    assert callable(getattr(module, "enter", None)), f"{module.__name__} has no enter()"
    assert list(inspect.signature(module.enter).parameters) == ["ctx"]
    doc = inspect.getdoc(module)
    assert doc and doc.strip(), f"{module.__name__} has no docstring"
    assert doc.startswith(f"{state} ({table.side}) - "), doc.splitlines()[0]
    # The paragraph starting "Replaces" names what of LXC it replaces: a function
    # (``name()``) or, for a label, the C file it lives in.
    paragraph = re.search(r"^Replaces\b(.+?)(?:\n\n|\Z)", doc, re.S | re.M)
    assert paragraph, f"{module.__name__}'s docstring does not say what it replaces"
    assert re.search(r"\b\w+\(|\b\w+\.c\b", paragraph.group(1)), paragraph.group(0)


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_no_state_module_is_missing_from_the_table(table):
    package = __import__(f"lxcsm.states.{table.side}", fromlist=["_"])
    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert modules == set(table.states)


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_every_transition_names_declared_states(table):
    declared = set(table.states)
    for trigger, source, dest in table.transitions:
        assert isinstance(trigger, str) and trigger.isidentifier(), trigger
        assert set(sources(source)) <= declared, (trigger, source)
        assert dest in declared, (trigger, dest)


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_moves_are_deterministic(table):
    seen: dict[tuple[str, str], str] = {}
    for trigger, src, dest in edges(table):
        assert (src, trigger) not in seen, f"{trigger} from {src} goes to {seen[(src, trigger)]} and {dest}"
        seen[(src, trigger)] = dest


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_every_state_is_reachable_from_initial(table):
    graph: dict[str, set[str]] = {}
    for _trigger, src, dest in edges(table):
        graph.setdefault(src, set()).add(dest)
    assert reachable(table.initial, graph) == set(table.states)


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_every_non_final_state_can_finish(table):
    backwards: dict[str, set[str]] = {}
    for _trigger, src, dest in edges(table):
        backwards.setdefault(dest, set()).add(src)
    can_finish = set().union(*(reachable(final, backwards) for final in table.final))
    assert set(table.states) - can_finish == set()
    for state in set(table.states) - set(table.final):
        assert any(src == state for _t, src, _d in edges(table)), f"{state} is a dead end"


@pytest.mark.parametrize("table,can_fail", [
    (MONITOR, set(MONITOR.states) - {"stopping", "aborting", "stopped"}),
    (CHILD, set(CHILD.states) - {"aborting"}),
], ids=TABLE_IDS)
def test_failed_leads_to_aborting_from_every_state_that_can_fail(table, can_fail):
    failed = [(src, dest) for trigger, src, dest in edges(table) if trigger == "failed"]
    assert {dest for _src, dest in failed} == {"aborting"}
    assert {src for src, _dest in failed} == can_fail


def happy_path(table: Table) -> list[str]:
    """From initial, follow the one non-`failed` move out of each state, but into a detour,
    while there is one."""
    path = [table.initial]
    while True:
        out = [dest for trigger, src, dest in edges(table)
               if src == path[-1] and trigger != "failed" and dest not in table.detours]
        if len(out) != 1 or out[0] in path:
            return path
        path.append(out[0])


def test_monitor_normal_order():
    expected_start = ["init_handler", "monitor_cgroup", "spawn", "sync_configure", "sync_post_configure"]
    assert list(MONITOR.road()[:5]) == expected_start
    assert MONITOR.initial == "init_handler"
    path = happy_path(MONITOR)
    assert path[:5] == expected_start
    assert path[-1] == "poll", path      # poll is where the single road forks
    order = MONITOR.states.index
    assert order("poll") < order("reboot") and order("poll") < order("stopping")
    from_poll = {dest for trigger, src, dest in edges(MONITOR) if src == "poll" and trigger != "failed"}
    assert from_poll == {"reboot", "stopping"}
    # the only ways into reboot and stopping (but cleaned_up's) start at poll
    into = {(src, dest) for trigger, src, dest in edges(MONITOR) if dest in ("reboot", "stopping")}
    assert {src for src, _dest in into} == {"poll"}
    # a reboot starts the next boot with a fresh handler
    assert declared_moves(MONITOR)[("reboot", "boot_cleaned_up")] == "init_handler"


def test_child_normal_order_ends_in_exec():
    path = happy_path(CHILD)
    assert path[0] == "startup" and path[-1] == "exec"
    assert path == [s for s in CHILD.road() if s != "aborting"]


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_a_detour_leaves_the_road_and_rejoins_it_where_the_road_goes_on(table):
    """A detour (the user namespace's states) is entered from a road state instead of that
    state's next one, and leads back to exactly that next one."""
    road = happy_path(table)
    for detour in table.detours:
        [(entry, _trigger)] = [(src, t) for t, src, dest in edges(table) if dest == detour]
        exits = {dest for t, src, dest in edges(table) if src == detour and t != "failed"}
        assert entry in road and exits == {road[road.index(entry) + 1]}, detour
        assert table.states.index(entry) < table.states.index(detour) < table.states.index(road[road.index(entry) + 1])


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_sync_states_are_named_for_their_message(table):
    for state in table.states:
        if state.startswith("sync_"):
            assert state.removeprefix("sync_").upper() in SyncMsg.__members__, state


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_triggers_lists_each_trigger_once_in_table_order(table):
    expected = []
    for trigger, _source, _dest in table.transitions:
        if trigger not in expected:
            expected.append(trigger)
    assert table.triggers() == tuple(expected)


# --- the tables as live machines ----------------------------------------------------


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_supervisor_machine_starts_in_initial_state(table):
    sup = new_supervisor(table)
    assert sup.state == table.initial
    assert set(sup.modules) == set(table.states)


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_illegal_trigger_is_refused_and_state_unchanged(table):
    sup = new_supervisor(table)
    legal = {trigger for trigger, src, _d in edges(table) if src == table.initial}
    illegal = next(t for t in table.triggers() if t not in legal)
    with pytest.raises(MachineError):
        sup.trigger(illegal)
    assert sup.state == table.initial
    with pytest.raises(AttributeError):     # not a trigger of this table at all
        sup.trigger("no_such_trigger")
    assert sup.state == table.initial


@pytest.mark.parametrize("table", ALL_TABLES, ids=TABLE_IDS)
def test_no_automatic_transitions(table):
    sup = new_supervisor(table)
    other = table.states[-1]
    assert not hasattr(sup, f"to_{other}")
    with pytest.raises((AttributeError, MachineError)):
        sup.trigger(f"to_{other}")
    assert sup.state == table.initial


PAIRS = [(t, s, trig) for t in ALL_TABLES for s in t.states for trig in t.triggers()]


@pytest.mark.parametrize("table,state,trigger", PAIRS,
                         ids=[f"{t.side}:{s}+{trig}" for t, s, trig in PAIRS])
def test_every_state_trigger_pair_moves_as_declared_or_is_refused(table, state, trigger):
    sup = new_supervisor(table)
    sup.position.machine.set_state(state)
    assert sup.state == state
    dest = declared_moves(table).get((state, trigger))
    if dest is None:
        with pytest.raises(MachineError):
            sup.trigger(trigger)
        assert sup.state == state
    else:
        assert sup.trigger(trigger) is True
        assert sup.state == dest


# --- the supervisor running fake state modules ---------------------------------------


FAKE_MODULES: dict[str, dict[str, types.ModuleType]] = {}


class FakeTable(Table):
    __slots__ = ()

    def module(self, state: str) -> types.ModuleType:
        return FAKE_MODULES[self.side][state]


def fake_module(state: str, enter) -> types.ModuleType:
    module = types.ModuleType(f"fake.{state}", f"{state} (fake) - a test state.")
    module.enter = enter
    return module


def make_table(side: str, behaviour: dict) -> FakeTable:
    """one -> two -> three -> done, any of the first three can fail into aborting -> done."""
    states = ("one", "two", "three", "aborting", "done")
    default_triggers = {"one": "go_two", "two": "go_three", "three": "go_done", "aborting": "cleaned_up",
                        "done": None}

    def make_enter(state):
        def enter(ctx):
            ctx.entered.append(state)
            action = behaviour.get(state)
            if isinstance(action, BaseException):
                raise action
            if callable(action):
                return action(ctx)
            return action if state in behaviour else default_triggers[state]
        return enter

    FAKE_MODULES[side] = {state: fake_module(state, make_enter(state)) for state in states}
    return FakeTable(
        side=side, states=states,
        transitions=(
            ("go_two", "one", "two"),
            ("go_three", "two", "three"),
            ("go_done", "three", "done"),
            ("cleaned_up", "aborting", "done"),
            ("failed", ("one", "two", "three"), "aborting"),
        ),
        initial="one", final=("done",))


@pytest.fixture
def fake_side(request):
    side = f"fake{id(request)}"
    yield side
    FAKE_MODULES.pop(side, None)


def run_fake(side: str, behaviour: dict):
    table = make_table(side, behaviour)
    ctx = types.SimpleNamespace(entered=[], failure=None, log=None)
    log = RecordingLog()
    entered_hook = []
    sup = Supervisor(table, ctx, log, on_enter=entered_hook.append)
    return sup, ctx, log, entered_hook


def state_events(log: RecordingLog) -> list[str]:
    return [fields["state"] for level, _cat, event, fields in log.events if event == "state"]


def test_supervisor_runs_the_normal_path_and_traces_each_state_once(fake_side):
    sup, ctx, log, hook = run_fake(fake_side, {})
    sup.run()
    assert ctx.entered == ["one", "two", "three", "done"]
    assert hook == ["one", "two", "three", "done"]
    assert state_events(log) == ["one", "two", "three", "done"]
    assert sup.state == "done"
    assert ctx.failure is None
    for level, category, event, fields in log.events:
        if event == "state":
            assert level == "trace"
            assert category == fields["state"]      # the logger is bound to the state
            assert re.fullmatch(r"\S+:enter:\d+", fields["where"]), fields["where"]


def test_state_module_logs_through_a_logger_bound_to_its_state(fake_side):
    def two(ctx):
        ctx.log.trace("working", n=1)
        return "go_three"

    sup, ctx, log, _hook = run_fake(fake_side, {"two": two})
    sup.run()
    assert ("trace", "two", "working", {"n": 1}) in log.events


def test_oserror_in_enter_becomes_failed_with_a_failure_naming_state_side_and_error(fake_side):
    err = FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such/thing")
    sup, ctx, log, _hook = run_fake(fake_side, {"two": err})
    sup.run()
    assert ctx.entered == ["one", "two", "aborting", "done"]
    assert state_events(log) == ["one", "two", "aborting", "done"]
    assert ctx.failure == Failure("two", fake_side, "No such file or directory (ENOENT): /no/such/thing")
    assert str(ctx.failure) == f"{fake_side} state two failed: No such file or directory (ENOENT): /no/such/thing"
    assert not ctx.failure.already_running
    # an OSError is a plain failure, not a bug: no traceback is logged
    assert not [e for e in log.events if e[2] == "traceback"]


def test_unexpected_exception_in_enter_is_a_failure_with_traceback(fake_side):
    sup, ctx, log, _hook = run_fake(fake_side, {"one": ValueError("bad value 42")})
    sup.run()
    assert ctx.entered == ["one", "aborting", "done"]
    assert ctx.failure == Failure("one", fake_side, "bad value 42")
    tracebacks = [e for e in log.events if e[2] == "traceback"]
    assert len(tracebacks) == 1
    level, category, _event, fields = tracebacks[0]
    assert (level, category) == ("debug", "one")
    assert "ValueError: bad value 42" in fields["text"]


@pytest.mark.parametrize("err", [StateError("fstab:3: lxc.mount.entry: mounting x on y: EPERM"),
                                 SyncError("child exited while monitor waited for configure")])
def test_expected_failures_are_reported_as_they_are_without_traceback(fake_side, err):
    sup, ctx, log, _hook = run_fake(fake_side, {"two": err})
    sup.run()
    assert ctx.failure == Failure("two", fake_side, str(err))
    assert not [e for e in log.events if e[2] == "traceback"]


def test_peer_failure_is_recorded_as_the_peers_state_and_side(fake_side):
    sup, ctx, _log, _hook = run_fake(fake_side, {"three": PeerFailed("child", "setup_mounts", "mount: EPERM")})
    sup.run()
    assert ctx.failure == Failure("setup_mounts", "child", "mount: EPERM")


def test_already_running_is_flagged(fake_side):
    sup, ctx, _log, _hook = run_fake(fake_side, {"one": AlreadyRunning()})
    sup.run()
    assert ctx.failure == Failure("one", fake_side, "container is already running", already_running=True)
    assert ctx.failure.already_running


def test_trigger_not_allowed_from_the_state_aborts_as_illegal_transition(fake_side):
    sup, ctx, _log, _hook = run_fake(fake_side, {"one": "go_done"})
    sup.run()
    assert ctx.entered == ["one", "aborting", "done"]
    assert ctx.failure.state == "one" and ctx.failure.side == fake_side
    assert ctx.failure.error.startswith("illegal transition:")
    assert "go_done" in ctx.failure.error


@pytest.mark.parametrize("returned", [None, "no_such_trigger"])
def test_unknown_or_missing_trigger_from_a_non_final_state_aborts(fake_side, returned):
    sup, ctx, _log, _hook = run_fake(fake_side, {"two": returned})
    sup.run()
    assert ctx.entered == ["one", "two", "aborting", "done"]
    assert ctx.failure.state == "two"
    assert ctx.failure.error.startswith("illegal transition:")


def test_failure_inside_aborting_keeps_the_real_error(fake_side):
    sup, ctx, _log, _hook = run_fake(fake_side, {"two": OSError(errno.EIO, "Input/output error"),
                                                 "aborting": RuntimeError("undo exploded")})
    sup.run()   # the way out goes on: aborting's own exit leads to the final state
    assert ctx.entered == ["one", "two", "aborting", "done"]
    assert (ctx.failure.state, ctx.failure.error) == ("two", "Input/output error (EIO)")


@pytest.mark.parametrize("err,text", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"), "No such file or directory (ENOENT): /x"),
    (PermissionError(errno.EPERM, "Operation not permitted"), "Operation not permitted (EPERM)"),
    (OSError("no errno here"), "no errno here"),
    (ValueError(""), "ValueError"),
    (RuntimeError("boom"), "boom"),
])
def test_describe(err, text):
    assert describe(err) == text


def test_supervisor_module_silences_transitions_logging():
    import logging
    assert logging.getLogger("transitions").level == logging.WARNING
    assert supervisor_mod.Supervisor is Supervisor


def test_a_prebuilt_machine_goes_to_the_first_supervisor_of_its_side_only():
    """What `lxcsm serve` makes before it forks (machine.prebuild): the first supervisor of each
    side takes that side's machine and position, in the table's initial state; the next gets new ones."""
    from lxcsm.engine.start import machine

    machine.prebuild()
    try:
        made = {side: machine.PREBUILT[side] for side in ("monitor", "child")}
        first, second = machine.build(MONITOR), machine.build(MONITOR)
        assert first is made["monitor"] and second is not made["monitor"]
        assert second.machine is not first.machine
        assert (first.state, second.state) == (MONITOR.initial, MONITOR.initial)
        assert machine.PREBUILT == {"child": made["child"]}
        child = machine.build(CHILD)
        assert child is made["child"] and child.state == CHILD.initial
        first.trigger(next(t for t, source, _ in MONITOR.transitions if source == MONITOR.initial))
        assert first.state != MONITOR.initial
        assert second.state == MONITOR.initial   # its own machine: the first one's move is not its
    finally:
        machine.PREBUILT.clear()
