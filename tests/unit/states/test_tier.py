"""The state tier checks itself: every state of both machines has a unit test here.

A new state added to engine/start/machine.py without a test in tests/unit/states fails
`test_every_state_has_a_unit_test`.  The registry is the ``@pytest.mark.state(SIDE, STATE)``
mark each test carries, read from the test modules themselves (not from what this run
collected, so ``-k`` or running one file cannot make a state look covered or not); and
conftest.py fails any test that never enters, through `run`, a state it is marked for.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from lxcsm.engine.linux import kernel
from lxcsm.engine.start.machine import TABLES
from tests.unit.states import fake_host, fake_kernel

META = True   # these tests check the tier: conftest does not ask them for a state mark

HERE = Path(__file__).parent
ALL_STATES = [(side, state) for side, table in TABLES.items() for state in table.states]


def tier_modules():
    for path in sorted(HERE.glob("test_*.py")):
        if path.stem != Path(__file__).stem:
            yield importlib.import_module(f"tests.unit.states.{path.stem}")


def _marks(obj) -> list:
    marks = getattr(obj, "pytestmark", [])
    return marks if isinstance(marks, list) else [marks]


def marked_states() -> dict[str, set[tuple[str, str]]]:
    """module::test -> the (side, state) pairs it is marked for."""
    found = {}
    for module in tier_modules():
        for name, function in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(function):
                marks = _marks(function) + _marks(module)
                found[f"{module.__name__}::{name}"] = {tuple(m.args) for m in marks if m.name == "state"}
    return found


COVERED = set().union(*marked_states().values())


@pytest.mark.parametrize("side,state", ALL_STATES, ids=[f"{side}:{state}" for side, state in ALL_STATES])
def test_every_state_has_a_unit_test(side, state):
    assert (side, state) in COVERED, (
        f"{side} state {state} has no unit test: add one to tests/unit/states that enters it through "
        f"run({side!r}, {state!r}, ctx), marked @pytest.mark.state({side!r}, {state!r})")


def test_the_tier_covers_both_machines_whole():
    assert len(ALL_STATES) == len(TABLES["monitor"].states) + len(TABLES["child"].states) >= 29
    assert COVERED == set(ALL_STATES)   # nothing missing, and no mark names a state the tables lack


def test_every_test_of_the_tier_names_its_state():
    unmarked = [test for test, states in marked_states().items() if not states]
    assert unmarked == []


def test_the_fake_kernel_replaces_every_kernel_function(monkeypatch):
    rec = fake_kernel.Recorder()
    fake_kernel.install_kernel(monkeypatch, rec, fake_kernel.MountTable(HERE, HERE))
    functions = fake_kernel.kernel_functions()
    assert {"mount", "umount2", "pivot_root", "unshare", "clone3", "signalfd"} <= set(functions)
    for name in functions:
        assert getattr(kernel, name).__name__ == f"kernel.{name}", name


def test_the_fake_netlink_has_every_function_of_the_real_one():
    real = pytest.importorskip("lxcsm.engine.linux.netlink")   # imports pyroute2: only here
    public = {name for name, value in vars(real).items()
              if inspect.isfunction(value) and value.__module__ == real.__name__ and not name.startswith("_")}
    fake = fake_host.make_netlink(fake_kernel.Recorder())
    assert public <= set(vars(fake)), public - set(vars(fake))
    assert fake.transient_name(3) == real.transient_name(3) and fake.DEFAULT_MTU == real.DEFAULT_MTU
