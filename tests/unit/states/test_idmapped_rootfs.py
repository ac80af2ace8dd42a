"""An idmapped rootfs (lxc.idmap with lxc.rootfs.options = idmap=...): the monitor's
sync_post_configure turning to sync_idmapped_mounts, which idmaps a detached copy of the
rootfs and sends it, and the child's setup_rootfs attaching what it received - each alone.

The detached mounts are the fake kernel's (a MountTable entry behind a real fd);
mount_setattr is recorded, never made.  The user namespace file the monitor opens is a
file of the test's.
"""

from __future__ import annotations

import errno
import os

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.sync import SyncMsg

MAPS = ("lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536")
IDMAPPED = (*MAPS, "lxc.rootfs.options = idmap=container")
OPEN_TREE = kernel.OPEN_TREE_CLONE | os.O_CLOEXEC | kernel.AT_RECURSIVE


@pytest.mark.state("monitor", "sync_post_configure")
def test_sync_post_configure_turns_to_idmapping_only_for_an_idmap_rootfs_in_a_user_namespace(
        host, run, after_post_configure):
    assert run("monitor", "sync_post_configure", after_post_configure(*IDMAPPED)) == "rootfs_to_idmap"
    assert run("monitor", "sync_post_configure", after_post_configure(*MAPS)) == "child_released"
    # Without lxc.idmap LXC ignores idmap=: there is no user namespace to idmap to.
    assert run("monitor", "sync_post_configure",
               after_post_configure("lxc.rootfs.options = idmap=container")) == "child_released"
    assert host.calls("channel") == [("wake", SyncMsg.POST_CONFIGURE)] * 3


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_sends_the_rootfs_idmapped_to_the_childs_user_namespace(
        host, run, after_post_configure):
    ctx = after_post_configure(*IDMAPPED)
    rootfs = ctx.request.config.rootfs_path

    assert run("monitor", "sync_idmapped_mounts", ctx) == "child_released"

    (opened, userns_path, _flags), (cloned, *tree_args), (setattr_, tree, path, flags, attrs), (woken, msg, sent) = \
        host.calls()
    assert (opened, userns_path) == ("os.open", "/proc/4242/ns/user")
    assert (cloned, *tree_args) == ("kernel.open_tree", -100, rootfs, OPEN_TREE)   # recursive, from the host
    assert (setattr_, path, flags) == ("kernel.mount_setattr", "", kernel.AT_EMPTY_PATH | kernel.AT_RECURSIVE)
    assert attrs["attr_set"] == kernel.MOUNT_ATTR_IDMAP and attrs["propagation"] == kernel.MS_SLAVE
    assert (woken, msg, sent) == ("channel.wake", SyncMsg.IDMAPPED_MOUNTS, {"fds": [tree]})
    # The monitor keeps neither fd: the child's attach (or its death) decides the mount's fate.
    for fd in (tree, attrs["userns_fd"]):
        with pytest.raises(OSError):
            os.fstat(fd)
    assert ctx.boot.undo.changes == []


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_to_a_named_user_namespace_opens_that_file(host, run, after_post_configure):
    ctx = after_post_configure(*MAPS, "lxc.rootfs.options = ro,idmap=/run/netns-like/userns")

    assert run("monitor", "sync_idmapped_mounts", ctx) == "child_released"

    assert host.calls()[0][:2] == ("os.open", "/run/netns-like/userns")


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_on_a_filesystem_that_refuses_names_it_and_sends_nothing(
        host, run, after_post_configure):
    ctx = after_post_configure(*IDMAPPED)
    host.on("kernel.mount_setattr", raises=OSError(errno.EINVAL, "Invalid argument"))

    error = run.failing("monitor", "sync_idmapped_mounts", ctx, StateError)

    assert str(error.value).startswith(f"lxc.rootfs.options = idmap=container: cannot idmap "
                                 f"{os.path.realpath(ctx.request.config.rootfs_path)}: the filesystem mounted on ")
    assert "does not support idmapped mounts (mount_setattr: EINVAL)" in str(error.value)
    assert host.calls("channel") == []


# --- the child: configure, sync_idmapped_mounts, setup_rootfs --------------------------


@pytest.mark.state("child", "configure")
def test_configure_turns_to_receiving_the_rootfs_only_for_an_idmap_rootfs_in_a_user_namespace(
        host, run, make_request, child_ctx):
    assert run("child", "configure", child_ctx(make_request(*IDMAPPED))) == "rootfs_to_receive"
    assert run("child", "configure", child_ctx(make_request(*MAPS))) == "configured"
    assert run("child", "configure", child_ctx(make_request("lxc.rootfs.options = idmap=container"))) == "configured"


@pytest.mark.state("child", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_keeps_the_rootfs_the_monitor_sent_for_setup_rootfs(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request(*IDMAPPED))
    tree = host.pipe()[0]
    host.on("channel.wait_for", (b"", [tree]), when=lambda msg: msg is SyncMsg.IDMAPPED_MOUNTS)

    assert run("child", "sync_idmapped_mounts", ctx) == "configured"

    assert host.calls() == [("channel.wait_for", SyncMsg.IDMAPPED_MOUNTS)]
    assert ctx.idmapped_rootfs == tree and ctx.idmapped_entries == []


@pytest.mark.state("child", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_without_an_fd_from_the_monitor_fails(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request(*IDMAPPED))

    error = run.failing("child", "sync_idmapped_mounts", ctx, StateError)

    assert str(error.value) == "the monitor sent IDMAPPED_MOUNTS with 0 idmapped trees, not 1 (the rootfs)"
    assert ctx.idmapped_rootfs is None


@pytest.mark.state("child", "setup_rootfs")
def test_setup_rootfs_attaches_the_idmapped_rootfs_instead_of_the_bind(host, run, make_request, child_ctx):
    ctx = child_ctx(make_request(*IDMAPPED))
    rootfs = ctx.request.config.rootfs_path
    ctx.idmapped_rootfs = tree = kernel.open_tree(-100, rootfs, OPEN_TREE)   # what the monitor made (the fake's)
    host.rec.clear()

    assert run("child", "setup_rootfs", ctx) == "rootfs_mounted"

    assert [c[0] for c in host.calls()] == ["kernel.mount", "hooks.run", "kernel.move_mount"]   # no bind
    assert host.calls()[0] == ("kernel.mount", None, "/", None, kernel.MS_SLAVE | kernel.MS_REC)
    assert host.mounts.view() == [(rootfs, "rbind", "", None, rootfs)]
    assert ctx.rootfs == rootfs and ctx.idmapped_rootfs is None
    with pytest.raises(OSError):
        os.fstat(tree)   # attached, then closed
