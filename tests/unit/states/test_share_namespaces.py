"""lxc.namespace.share.NAME (lxc-start --share-NAME), the states that act on it: spawn joins
the namespaces around its clone3, setup_hostname leaves a joined uts namespace's name (the
key itself: tests/unit/test_namespace_share.py)."""

from __future__ import annotations

import errno
import os

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol import command_client
from tests.unit.states import test_monitor_start
from tests.unit.states.test_monitor_start import DEFAULT_NAMESPACES

clone3 = test_monitor_start.clone3                        # kernel.clone3 answering as the parent
no_child_machine = test_monitor_start.no_child_machine    # the monitor never runs the child's machine


# --- spawn ------------------------------------------------------------------------------


@pytest.mark.state("monitor", "spawn")
def test_spawn_joins_the_shared_namespaces_around_its_clone3_then_goes_back(
        host, run, make_request, monitor_ctx, clone3, no_child_machine):
    me = os.getpid()   # a process this unprivileged test may open a pidfd and namespace files of
    ctx = monitor_ctx(make_request(f"lxc.namespace.share.net = {me}",
                                   f"lxc.namespace.share.uts = /proc/{me}/ns/uts"))

    assert run("monitor", "spawn", ctx) == "child_spawned"

    calls = host.calls("kernel")
    shared = kernel.CLONE_NEWUTS | kernel.CLONE_NEWNET
    # As LXC's do_share_ns(): into each (its order: uts before net), then the clone without them;
    # then the monitor back into its own, the last joined first.
    assert [call[2] if call[0] == "setns" else call for call in calls] == [
        kernel.CLONE_NEWUTS, kernel.CLONE_NEWNET,
        ("clone3", DEFAULT_NAMESPACES & ~shared, clone3["cgroup_fd"]),
        kernel.CLONE_NEWNET, kernel.CLONE_NEWUTS]
    assert ctx.command_server.clone_flags == DEFAULT_NAMESPACES & ~shared   # what lxc-attach is told
    assert [fields["namespace"] for _level, fields in ctx.log.named("namespace joined")] == ["uts", "net"]


@pytest.mark.state("monitor", "spawn")
def test_spawn_joins_a_running_containers_init_by_its_pidfd(
        host, run, make_request, monitor_ctx, clone3, no_child_machine, monkeypatch):
    asked = []

    def init_pidfd(lxcpath, name):
        asked.append((lxcpath, name))
        return os.pidfd_open(os.getpid())
    monkeypatch.setattr(command_client, "init_pidfd", init_pidfd)
    request = make_request("lxc.namespace.share.ipc = a")
    ctx = monitor_ctx(request)

    assert run("monitor", "spawn", ctx) == "child_spawned"

    assert asked == [(request.lxcpath, "a")]
    assert [call[0] for call in host.calls("kernel")] == ["setns", "clone3", "setns"]


@pytest.mark.state("monitor", "spawn")
def test_spawn_with_a_shared_container_not_running_fails_before_the_clone(
        host, run, make_request, monitor_ctx, no_child_machine, monkeypatch):
    monkeypatch.setattr(command_client, "init_pidfd", lambda lxcpath, name: None)
    request = make_request("lxc.namespace.share.net = gone")
    ctx = monitor_ctx(request)

    error = run.failing("monitor", "spawn", ctx, StateError)

    assert str(error.value) == f"lxc.namespace.share.net = gone: container gone is not running (in {request.lxcpath})"
    assert host.calls("kernel") == [] and ctx.boot.channel is None
    assert [c.kind for c in ctx.boot.undo.changes] == ["cgroup"] * 3   # undone by aborting


@pytest.mark.state("monitor", "spawn")
def test_spawn_with_a_shared_file_that_is_no_such_namespace_fails_naming_the_key(
        host, run, make_request, monitor_ctx, no_child_machine):
    ctx = monitor_ctx(make_request("lxc.namespace.share.net = /etc/passwd"))
    host.on("kernel.setns", raises=OSError(errno.EINVAL, "Invalid argument"), once=True)

    error = run.failing("monitor", "spawn", ctx, StateError)

    assert str(error.value) == "lxc.namespace.share.net = /etc/passwd: cannot join it: not a net namespace"
    assert [call[0] for call in host.calls("kernel")] == ["setns", "setns"]   # and back into its own


@pytest.mark.state("monitor", "spawn")
def test_spawn_that_cannot_go_back_after_the_clone_has_its_child_recorded_for_aborting(
        host, run, make_request, monitor_ctx, clone3, no_child_machine):
    me = os.getpid()
    ctx = monitor_ctx(make_request(f"lxc.namespace.share.uts = {me}"))
    joined = []
    host.on("kernel.setns", effect=lambda fd, kind: joined.append(fd))
    host.on("kernel.setns", raises=PermissionError(1, "Operation not permitted"), when=lambda fd, kind: bool(joined))

    run.failing("monitor", "spawn", ctx, PermissionError)

    assert "child" in [c.kind for c in ctx.boot.undo.changes]   # aborting kills it


@pytest.mark.state("monitor", "spawn")
def test_spawn_whose_clone3_fails_goes_back_into_its_own_namespaces(
        host, run, make_request, monitor_ctx, no_child_machine):
    host.on("kernel.clone3", raises=PermissionError(1, "Operation not permitted"))
    ctx = monitor_ctx(make_request(f"lxc.namespace.share.pid = {os.getpid()}"))

    run.failing("monitor", "spawn", ctx, PermissionError)

    assert [(call[0], call[2]) if call[0] == "setns" else call[0] for call in host.calls("kernel")] == [
        ("setns", kernel.CLONE_NEWPID), "clone3", ("setns", kernel.CLONE_NEWPID)]


# --- setup_hostname, sync_configure -------------------------------------------------------


@pytest.mark.state("child", "setup_hostname")
def test_setup_hostname_leaves_a_joined_uts_namespaces_name(host, run, make_request, child_ctx, monkeypatch):
    import socket
    named = []
    monkeypatch.setattr(socket, "sethostname", named.append)
    ctx = child_ctx(make_request("lxc.namespace.share.uts = a"))

    assert run("child", "setup_hostname", ctx) == "hostname_set"

    assert named == [] and ctx.log.named("hostname kept") == [("trace", {"reason": "lxc.namespace.share.uts"})]


@pytest.mark.state("child", "configure")
def test_configure_leaves_a_joined_cgroup_namespace_for_its_own_as_lxc_does(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request("lxc.namespace.share.cgroup = a"))

    assert run("child", "configure", ctx) == "configured"

    # LXC 5.0.2's child unshares CLONE_NEWCGROUP whenever a namespace is shared, this one included.
    assert host.calls()[0] == ("kernel.unshare", kernel.CLONE_NEWCGROUP)
