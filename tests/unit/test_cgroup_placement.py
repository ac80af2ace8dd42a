"""Where a container's cgroups go (lxc.cgroup.dir*, lxc.cgroup.relative), how the base is
found from /proc, and how cgroup2 controllers are handed down - on directories standing
in for cgroupfs (no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import cgroups
from tests.unit.config_text import load_text


def _placement(tmp_path, *lines: str) -> cgroups.Placement:
    return cgroups.placement(load_text(tmp_path, "".join(f"{line}\n" for line in lines)), "c1")


def test_by_default_lxc_monitor_and_lxc_payload_go_below_the_base(tmp_path):
    where = _placement(tmp_path)
    assert (where.relative, where.monitor, where.limit, where.inner, where.container) == (
        False, "lxc.monitor.c1", "lxc.payload.c1", None, "lxc.payload.c1")
    home = cgroups.Hierarchy("/cg/memory", ("memory",), 1, "/cg/memory", "/cg/memory/user/me")
    assert where.path(home, "limit") == "/cg/memory/lxc.payload.c1"
    assert where.pivot_path(home) == "/cg/memory/user/me"    # the monitor goes back where it came from


def test_relative_uses_the_cgroup_we_started_in(tmp_path):
    where = _placement(tmp_path, "lxc.cgroup.relative = 1")
    home = cgroups.Hierarchy("/cg/memory", ("memory",), 1, "/cg/memory", "/cg/memory/user/me")
    assert where.path(home, "monitor") == "/cg/memory/user/me/lxc.monitor.c1"


def test_cgroup_dir_puts_both_below_it_and_the_pivot_there(tmp_path):
    where = _placement(tmp_path, "lxc.cgroup.dir = machines/web")
    assert (where.monitor, where.limit, where.pivot) == (
        "machines/web/lxc.monitor.c1", "machines/web/lxc.payload.c1", "machines/web/lxc.pivot")


def test_explicit_dirs_name_the_cgroups_and_inner_holds_the_processes(tmp_path):
    where = _placement(tmp_path, "lxc.cgroup.dir.monitor = mon/c1", "lxc.cgroup.dir.container = ct/c1",
                       "lxc.cgroup.dir.container.inner = ns", "lxc.cgroup.dir.monitor.pivot = parked")
    assert (where.monitor, where.limit, where.container, where.pivot) == ("mon/c1", "ct/c1", "ct/c1/ns",
                                                                          "parked/lxc.pivot")
    assert where.limit_of("/cg/pids/ct/c1/ns") == "/cg/pids/ct/c1"


@pytest.mark.parametrize(("lines", "message"), [
    (("lxc.cgroup.dir = a", "lxc.cgroup.dir.monitor = m", "lxc.cgroup.dir.container = c"), "cannot be combined"),
    (("lxc.cgroup.dir.monitor = m",), "must both be set"),
    (("lxc.cgroup.dir.container = c", "lxc.cgroup.dir.container.inner = i"), "must both be set"),
])
def test_combinations_lxc_refuses_are_refused_naming_the_line(tmp_path, lines, message):
    with pytest.raises(StateError, match=message) as info:
        _placement(tmp_path, *lines)
    assert ":1: lxc.cgroup.dir." in str(info.value) or ":2: lxc.cgroup.dir." in str(info.value)


def _cgroup2_tree(tmp_path: Path, controllers: str) -> Path:
    base = tmp_path / "cg"
    base.mkdir()
    (base / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.subtree_control").write_text("")
    return base


def test_delegate_enables_the_base_controllers_on_the_way_down_but_not_in_the_leaf(tmp_path):
    base = _cgroup2_tree(tmp_path, "cpu memory pids")
    hierarchy = cgroups.Hierarchy(str(base), (), 2, str(base))
    leaf = cgroups.create(hierarchy, str(base), "ct/c1/ns")
    for below in ("ct", "ct/c1"):
        Path(base, below, "cgroup.subtree_control").write_text("")
    assert cgroups.delegate(hierarchy, str(base), "ct/c1/ns") == "+cpu +memory +pids"
    for cgroup in (base, base / "ct", base / "ct" / "c1"):
        assert (cgroup / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert not Path(leaf, "cgroup.subtree_control").exists()


def test_delegate_with_no_controllers_writes_nothing(tmp_path):
    base = _cgroup2_tree(tmp_path, "")
    hierarchy = cgroups.Hierarchy(str(base), (), 2, str(base))
    assert cgroups.delegate(hierarchy, str(base), "lxc.payload.c1") == ""
    assert (base / "cgroup.subtree_control").read_text() == ""


def test_create_makes_the_way_down_and_refuses_a_last_one_in_use(tmp_path):
    base = tmp_path / "cg"
    base.mkdir()
    hierarchy = cgroups.Hierarchy(str(base), ("pids",), 1, str(base))
    made = cgroups.create(hierarchy, str(base), "a/b/lxc.payload.c1")
    assert made == str(base / "a" / "b" / "lxc.payload.c1") and os.path.isdir(made)
    Path(made, "cgroup.procs").write_text("4242\n")
    with pytest.raises(OSError, match="in use"):
        cgroups.create(hierarchy, str(base), "a/b/lxc.payload.c1")
    assert cgroups.create(hierarchy, str(base), "a/b", exist_ok=True) == str(base / "a" / "b")


def test_the_base_is_pid_1s_cgroup_without_init_scope(monkeypatch):
    memberships = {"self": {(): "/init.scope", ("memory",): "/user/me"},
                   "1": {(): "/init.scope", ("memory",): "/"}}
    mounts = [("cgroup2", {"rw"}, "/sys/fs/cgroup/unified", "/"),
              ("cgroup", {"rw", "memory"}, "/sys/fs/cgroup/memory", "/")]
    monkeypatch.setattr(cgroups, "_memberships", lambda pid: memberships[pid])
    monkeypatch.setattr(cgroups, "_mounts", lambda: mounts)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    unified, memory = cgroups.hierarchies()
    assert (unified.home, unified.started_in) == ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/init.scope")
    assert (memory.home, memory.started_in) == ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/user/me")
    assert not cgroups.unified_only([unified, memory]) and cgroups.unified_only([unified])
