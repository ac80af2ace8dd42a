"""The states a start by an ordinary user goes through differently from root's: write_id_maps
(the maps through newuidmap/newgidmap, the cgroups chowned from a user namespace of its own)
and monitor_cgroup (the processes of the delegated cgroup it started in moved to a leaf first).

The caller's ids are the test's (os.geteuid/getegid monkeypatched); the helpers, the maps and
the chown are recorded fakes; cgroups are the tmp cgroupfs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxcsm.engine.linux import cgroups, idmap
from lxcsm.engine.protocol.sync import SyncMsg
from lxcsm.engine.start.undo import Change
from tests.unit.states.test_userns import spawned

UID, GID, FIRST = 1000, 1000, 200000
MAPS = (f"lxc.idmap = u 0 {FIRST} 65536", f"lxc.idmap = g 0 {FIRST} 65536")


@pytest.fixture
def ordinary_user(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: UID)
    monkeypatch.setattr(os, "getegid", lambda: GID)


@pytest.fixture
def user_maps(host, monkeypatch, ordinary_user):
    monkeypatch.setattr(idmap, "write_map_with_helper", host.rec.fake("idmap.write_map_with_helper"))
    monkeypatch.setattr(idmap, "delegate_cgroup_unprivileged", host.rec.fake("idmap.delegate_cgroup_unprivileged"))
    monkeypatch.setattr(idmap, "find_helper", lambda kind: f"/usr/bin/{idmap.HELPERS[kind]}")


@pytest.mark.state("monitor", "write_id_maps")
def test_write_id_maps_for_an_ordinary_user_maps_through_the_helpers_and_chowns_from_a_namespace_of_its_own(
        host, run, make_request, monitor_ctx, user_maps):
    ctx = spawned(monitor_ctx(make_request(*MAPS)), host)

    assert run("monitor", "write_id_maps", ctx) == "child_spawned"

    cpu, devices, unified = ctx.boot.payload_cgroups
    assert host.calls("idmap") == [
        ("write_map_with_helper", 4242, "u", [(0, FIRST, 65536)], "/usr/bin/newuidmap"),
        ("write_map_with_helper", 4242, "g", [(0, FIRST, 65536)], "/usr/bin/newgidmap"),
        ("delegate_cgroup_unprivileged", [(cpu, 1), (devices, 1), (unified, 2)], FIRST, FIRST)]
    assert host.calls("channel") == [("wake", SyncMsg.STARTUP)]


@pytest.mark.state("monitor", "write_id_maps")
def test_write_id_maps_goes_on_when_the_cgroups_cannot_be_chowned_as_lxc_does(
        host, run, make_request, monitor_ctx, user_maps):
    host.on("idmap.delegate_cgroup_unprivileged", raises=OSError("newuidmap: uid range not allowed"))
    ctx = spawned(monitor_ctx(make_request(*MAPS)), host)

    assert run("monitor", "write_id_maps", ctx) == "child_spawned"

    assert [fields["error"] for _level, fields in ctx.log.named("cgroups not handed to the container's root")] \
        == ["newuidmap: uid range not allowed"]


@pytest.mark.state("monitor", "monitor_cgroup")
def test_monitor_cgroup_for_an_ordinary_user_moves_the_delegated_cgroups_processes_to_a_leaf_first(
        host, run, make_request, monitor_ctx, ordinary_user):
    ctx = monitor_ctx(make_request())
    unified = host.cgroupfs.unified
    ctx.hierarchies = [unified]
    Path(unified.home, "cgroup.procs").write_text("4321\n")
    Path(unified.home, "cgroup.controllers").write_text("memory pids\n")

    assert run("monitor", "monitor_cgroup", ctx) == "monitor_cgroup_entered"

    leaf = os.path.join(unified.home, cgroups.LEAF)
    monitor = os.path.join(unified.home, "lxc.monitor.c1")
    assert host.calls("cgroups") == [("create", "unified", cgroups.LEAF), ("attach", leaf, 4321),
                                     ("create", "unified", "lxc.monitor.c1"), ("attach", monitor, os.getpid())]
    assert Path(unified.home, "cgroup.subtree_control").read_text() == "+memory +pids"
    assert ctx.hierarchies == [unified._replace(own=leaf)]
    # Stopping moves the monitor back to the leaf: the delegated cgroup now hands controllers down.
    assert ctx.boot.undo.changes == [Change("cgroup", monitor), Change("cgroup_entered", leaf)]



@pytest.mark.state("monitor", "monitor_cgroup")
def test_monitor_cgroup_after_a_reboot_of_an_ordinary_users_container_keeps_the_leaf_it_made(
        host, run, make_request, monitor_ctx, ordinary_user):
    """reboot moved the monitor back to the leaf: it is not moved one level further down."""
    ctx = monitor_ctx(make_request())
    unified = host.cgroupfs.unified
    leaf = os.path.join(unified.home, cgroups.LEAF)
    os.mkdir(leaf)
    Path(leaf, "cgroup.procs").write_text(f"{os.getpid()}\n")
    Path(unified.home, "cgroup.controllers").write_text("memory pids\n")
    ctx.hierarchies = [unified._replace(own=leaf)]

    assert run("monitor", "monitor_cgroup", ctx) == "monitor_cgroup_entered"

    monitor = os.path.join(unified.home, "lxc.monitor.c1")
    assert host.calls("cgroups") == [("create", "unified", "lxc.monitor.c1"), ("attach", monitor, os.getpid())]
    assert ctx.hierarchies == [unified._replace(own=leaf)]
