"""The layers of ARCHITECTURE.md, checked: every import of every lxcsm module, and no cycles.

Each module belongs to one layer by where its file is; a layer may import
itself and the layers RULES lists for it.  Function-level imports count (they
are how a start avoids paying for what it does not use, not a way around the
layering); imports under ``if TYPE_CHECKING:`` do not, since they never run.
A failure names the importing file, its line, and the rule it breaks.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package lives in the checkout (setup.cfg's package_dir).
SOURCES = {"lxcsm.engine": ROOT / "engine", "lxcsm.states": ROOT / "states", "lxcsm.hooks": ROOT / "hooks"}

LEAVES = ("lxcsm.engine", "lxcsm.engine.log", "lxcsm.engine.errors")
BELOW_THE_RUNTIME = ("leaves", "linux", "config", "protocol", "hooks")

# layer -> the other layers it may import.  "start.context" and the like name single modules.
RULES: dict[str, tuple[str, ...]] = {
    "leaves": (),
    "linux": ("leaves",),
    "config": ("leaves", "linux"),
    "protocol": ("leaves",),
    "hooks": ("leaves",),
    "states.monitor": (*BELOW_THE_RUNTIME, "start.context", "start.undo", "start.child"),
    "states.child": (*BELOW_THE_RUNTIME, "start.context"),
    "start": BELOW_THE_RUNTIME,             # states only by name, through the tables
    "analysis": (*BELOW_THE_RUNTIME, "start", "states.monitor", "states.child"),
    "cli": ("leaves", "linux", "config", "protocol", "hooks", "start", "analysis", "states.monitor",
            "states.child"),
}
# What a layer that may import "start" still may not: the processes themselves.
RUNNING_A_START = ("lxcsm.engine.start.supervisor", "lxcsm.engine.start.monitor", "lxcsm.engine.start.child")


def layer_of(module: str) -> str:
    if module in LEAVES:
        return "leaves"
    if module == "lxcsm.states" or module.startswith("lxcsm.states."):
        return "states.child" if module.startswith("lxcsm.states.child") else "states.monitor"
    if module == "lxcsm.hooks" or module.startswith("lxcsm.hooks."):
        return "hooks"
    return module.removeprefix("lxcsm.engine.").split(".")[0]


def allowed(importer: str, imported: str) -> str | None:
    """None if `importer` may import `imported`, else the rule it breaks."""
    mine, theirs = layer_of(importer), layer_of(imported)
    if theirs == "cli" and mine != "cli":
        return "nothing imports the cli"
    if mine == theirs:
        return None
    if mine == "analysis" and imported in RUNNING_A_START:
        return "analysis is read-only: it never imports what runs a start (supervisor, monitor, child)"
    single = imported.removeprefix("lxcsm.engine.")
    if theirs in RULES[mine] or single in RULES[mine]:
        return None
    may = ", ".join(RULES[mine]) or "nothing of lxcsm"
    return f"{mine} may import {may}; not {theirs}"


def modules(sources: dict[str, Path]) -> dict[str, Path]:
    """Every module under the sources: dotted name -> file."""
    found = {}
    for package, top in sources.items():
        for directory, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = Path(directory) / name
                parts = [package, *path.relative_to(top).with_suffix("").parts]
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node that runs: the bodies of `if TYPE_CHECKING:` are left out."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, imported lxcsm module) for every import of `module` that runs."""
    is_package = path.name == "__init__.py"
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name in known and name != module]
    return found


def graph(sources: dict[str, Path]) -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]]]:
    known = modules(sources)
    return known, {module: imports(module, path, known) for module, path in known.items()}


def violations(sources: dict[str, Path]) -> list[str]:
    known, edges = graph(sources)
    found = []
    for module, targets in edges.items():
        for line, target in targets:
            rule = allowed(module, target)
            if rule:
                top = next(top for top in sources.values() if top in known[module].parents)
                found.append(f"{known[module].relative_to(top.parent)}:{line}: {module} imports {target}: {rule}")
    return found


def cycles(sources: dict[str, Path]) -> list[list[str]]:
    """The import cycles between modules (Tarjan's strongly connected components)."""
    _known, edges = graph(sources)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for _line, target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return found


def test_every_import_keeps_to_its_layer():
    assert violations(SOURCES) == []


def test_there_are_no_import_cycles():
    assert cycles(SOURCES) == []


def test_every_module_has_a_layer_with_rules():
    for module in modules(SOURCES):
        assert layer_of(module) in RULES, module


# --- the checker itself, on small trees made here --------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"lxcsm.engine": tmp_path / "engine", "lxcsm.states": tmp_path / "states",
            "lxcsm.hooks": tmp_path / "hooks"}


CLEAN = {
    "engine/__init__.py": "",
    "engine/log.py": "",
    "engine/linux/__init__.py": "",
    "engine/linux/kernel.py": "from lxcsm.engine import log\n",
    "engine/start/__init__.py": "",
    "engine/start/supervisor.py": "from lxcsm.engine.linux import kernel\n",
    "engine/analysis/__init__.py": "",
    "engine/analysis/plan.py": "",
    "engine/cli/__init__.py": "from lxcsm.engine.start import supervisor\n",
    "hooks/__init__.py": "",
    "states/__init__.py": "",
}


def test_a_clean_tree_passes(tmp_path):
    sources = _tree(tmp_path, CLEAN)
    assert violations(sources) == [] and cycles(sources) == []


@pytest.mark.parametrize(("file", "text", "expected"), [
    ("engine/linux/kernel.py", "def f():\n    from lxcsm.engine.start import supervisor\n",
     "engine/linux/kernel.py:2: lxcsm.engine.linux.kernel imports lxcsm.engine.start.supervisor: "
     "linux may import leaves; not start"),
    ("engine/analysis/plan.py", "import lxcsm.engine.start.supervisor\n",
     "engine/analysis/plan.py:1: lxcsm.engine.analysis.plan imports lxcsm.engine.start.supervisor: analysis is "
     "read-only: it never imports what runs a start (supervisor, monitor, child)"),
    ("hooks/__init__.py", "from lxcsm.engine import cli\n",
     "hooks/__init__.py:1: lxcsm.hooks imports lxcsm.engine.cli: nothing imports the cli"),
    ("engine/log.py", "from lxcsm.engine.linux.kernel import x\n",
     "engine/log.py:1: lxcsm.engine.log imports lxcsm.engine.linux.kernel: leaves may import nothing of lxcsm; "
     "not linux"),
])
def test_a_violation_is_named_with_file_line_and_rule(tmp_path, file, text, expected):
    sources = _tree(tmp_path, {**CLEAN, file: text})
    assert violations(sources) == [expected]


def test_type_checking_imports_do_not_count(tmp_path):
    text = "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from lxcsm.engine.start import supervisor\n"
    assert violations(_tree(tmp_path, {**CLEAN, "engine/linux/kernel.py": text})) == []


def test_a_cycle_is_found_even_through_function_level_imports(tmp_path):
    sources = _tree(tmp_path, {**CLEAN,
                               "engine/start/undo.py": "def f():\n    from lxcsm.engine.start import supervisor\n",
                               "engine/start/supervisor.py": "from lxcsm.engine.start import undo\n"})
    assert cycles(sources) == [["lxcsm.engine.start.supervisor", "lxcsm.engine.start.undo"]]
