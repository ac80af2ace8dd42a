"""Idmapped mount entries (an lxc.mount.entry or lxc.mount.fstab bind with idmap=): the
monitor's sync_idmapped_mounts making one idmapped copy per entry after the rootfs's, the
child's sync_idmapped_mounts keeping them in order, and setup_mounts attaching them after the
other entries - each state alone.

The detached mounts are the fake kernel's (a MountTable entry behind a real fd);
mount_setattr is recorded, never made.  The user namespace file the monitor opens is a
file of the test's.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lxcsm.engine.errors import StateError
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.sync import SyncMsg

MAPS = ("lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536")
CLONE = kernel.OPEN_TREE_CLONE | os.O_CLOEXEC
EMPTY = kernel.AT_EMPTY_PATH


def config_file(ctx) -> Path:
    """make_request's config: LXCPATH/NAME/config, beside the rootfs."""
    return Path(ctx.request.config.rootfs_path).parent / "config"


@pytest.fixture
def sources(tmp_path) -> tuple[Path, Path, Path]:
    """Three host directories to bind: data, logs, and one named in an fstab file."""
    made = tuple(tmp_path / name for name in ("data", "logs", "fstab-source"))
    for path in made:
        path.mkdir()
    return made


@pytest.fixture
def entries(sources, tmp_path):
    """Config lines (after MAPS: lines 4 on) with, in config order, an fstab file whose one
    line is an idmapped bind, a plain bind, an idmapped rbind (ro) and an idmapped bind."""
    data, logs, from_fstab = sources
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{from_fstab} srv/fstab none bind,create=dir,idmap=container 0 0\n")
    return (f"lxc.mount.fstab = {fstab}",
            f"lxc.mount.entry = {logs} srv/plain none bind,create=dir 0 0",
            f"lxc.mount.entry = {data} srv/data none rbind,ro,create=dir,idmap=container 0 0",
            f"lxc.mount.entry = {logs} srv/logs none bind,create=dir,idmap=/run/other/userns 0 0")


# --- the monitor: sync_post_configure, sync_idmapped_mounts -----------------------------------


@pytest.mark.state("monitor", "sync_post_configure")
def test_sync_post_configure_turns_to_idmapping_for_an_idmapped_entry_without_an_idmapped_rootfs(
        host, run, after_post_configure, sources):
    entry = f"lxc.mount.entry = {sources[0]} srv none bind,idmap=container 0 0"
    assert run("monitor", "sync_post_configure", after_post_configure(*MAPS, entry)) == "rootfs_to_idmap"
    plain = f"lxc.mount.entry = {sources[0]} srv none bind 0 0"
    assert run("monitor", "sync_post_configure", after_post_configure(*MAPS, plain)) == "child_released"


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_sends_the_rootfs_then_each_idmapped_entry_in_lxcs_order(
        host, run, after_post_configure, sources, entries):
    data, logs, from_fstab = sources
    ctx = after_post_configure(*MAPS, *entries, "lxc.rootfs.options = idmap=container")
    rootfs = ctx.request.config.rootfs_path

    assert run("monitor", "sync_idmapped_mounts", ctx) == "child_released"

    opened = [call[1] for call in host.calls("os") if call[0] == "open"]
    trees = [call[1:] for call in host.calls("kernel") if call[0] == "open_tree"]
    idmaps = [call for call in host.calls("kernel") if call[0] == "mount_setattr"]
    # The rootfs first, then lxc.mount.entry's idmapped lines, then the fstab's (LXC attaches
    # them in that order); the plain bind is not the monitor's.
    assert trees == [(-100, rootfs, CLONE | kernel.AT_RECURSIVE), (-100, str(data), CLONE | kernel.AT_RECURSIVE),
                     (-100, str(logs), CLONE), (-100, str(from_fstab), CLONE)]
    assert opened == ["/proc/4242/ns/user", "/proc/4242/ns/user", "/run/other/userns", "/proc/4242/ns/user"]
    assert [(flags, attrs["attr_set"], attrs["propagation"]) for _name, _fd, _path, flags, attrs in idmaps] == [
        (EMPTY | kernel.AT_RECURSIVE, kernel.MOUNT_ATTR_IDMAP, kernel.MS_SLAVE),
        (EMPTY | kernel.AT_RECURSIVE, kernel.MOUNT_ATTR_IDMAP, kernel.MS_SLAVE),   # rbind: its submounts too
        (EMPTY, kernel.MOUNT_ATTR_IDMAP, kernel.MS_SLAVE),
        (EMPTY, kernel.MOUNT_ATTR_IDMAP, kernel.MS_SLAVE)]
    (woken, msg, sent), = host.calls("channel")
    assert (woken, msg) == ("wake", SyncMsg.IDMAPPED_MOUNTS)
    assert sent["fds"] == [call[1] for call in idmaps]   # each tree as it was idmapped, in order
    # ro is not the monitor's to set: the child gives each tree its entry's options.
    assert all(not attrs["attr_set"] & kernel.MOUNT_ATTR_RDONLY for *_rest, attrs in idmaps)
    for fd in sent["fds"]:
        with pytest.raises(OSError):
            os.fstat(fd)   # the monitor keeps none of them
    assert ctx.boot.undo.changes == []


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_copies_a_relative_source_from_inside_the_rootfs(host, run, after_post_configure):
    ctx = after_post_configure(*MAPS, "lxc.mount.entry = srv/shared srv/data none bind,relative,idmap=container 0 0")
    rootfs = Path(ctx.request.config.rootfs_path)
    (rootfs / "srv" / "shared").mkdir(parents=True)
    (rootfs / "srv" / "link").symlink_to("/srv/shared")   # followed inside the rootfs, not to the host's /srv
    host.rec.clear()

    assert run("monitor", "sync_idmapped_mounts", ctx) == "child_released"

    (name, fd, path, flags), = [call for call in host.calls("kernel") if call[0] == "open_tree"]
    assert (path, flags) == ("", CLONE | kernel.AT_EMPTY_PATH)
    assert host.mounts.view() == [] and "openat2" in host.names("kernel")[0]   # looked up by fd, in the rootfs
    with pytest.raises(OSError):
        os.fstat(fd)   # the source's O_PATH fd, closed once copied
    # Through a symlink to /srv/shared: the rootfs's (the host has no /srv/shared to fail on).
    ctx = after_post_configure(*MAPS, "lxc.mount.entry = srv/link srv/data none bind,relative,idmap=container 0 0")
    assert not os.path.exists("/srv/shared")

    assert run("monitor", "sync_idmapped_mounts", ctx) == "child_released"


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_failing_on_an_entry_names_it_closes_what_it_made_and_sends_nothing(
        host, run, after_post_configure, sources, entries):
    data = sources[0]
    ctx = after_post_configure(*MAPS, *entries, "lxc.rootfs.options = idmap=container")
    host.on("kernel.open_tree", raises=PermissionError(errno.EPERM, "Operation not permitted"),
            when=lambda dirfd, path, flags: path == str(data))

    error = run.failing("monitor", "sync_idmapped_mounts", ctx, StateError)

    assert str(error.value) == (f"{config_file(ctx)}:6: lxc.mount.entry: idmapping {data} for srv/data: "
                                f"Operation not permitted (EPERM)")
    assert host.calls("channel") == []
    rootfs_tree = next(call[1] for call in host.calls("kernel") if call[0] == "mount_setattr")
    with pytest.raises(OSError):
        os.fstat(rootfs_tree)   # the rootfs's copy, made first, closed


@pytest.mark.state("monitor", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_on_a_source_that_cannot_be_idmapped_names_its_filesystem(
        host, run, after_post_configure, sources):
    data = sources[0]
    ctx = after_post_configure(*MAPS, f"lxc.mount.entry = {data} srv none bind,idmap=container 0 0")
    host.on("kernel.mount_setattr", raises=OSError(errno.EINVAL, "Invalid argument"))

    error = run.failing("monitor", "sync_idmapped_mounts", ctx, StateError)

    assert str(error.value).startswith(f"{config_file(ctx)}:4: lxc.mount.entry: idmapping {data} for srv: "
                                       f"cannot idmap {data}: the filesystem mounted on ")
    assert str(error.value).endswith("does not support idmapped mounts (mount_setattr: EINVAL)")
    assert host.calls("channel") == []


# --- the child: configure, sync_idmapped_mounts, setup_mounts ----------------------------------


@pytest.mark.state("child", "configure")
def test_configure_turns_to_receiving_for_an_idmapped_entry(host, run, make_request, child_ctx, sources):
    entry = f"lxc.mount.entry = {sources[0]} srv none bind,idmap=container 0 0"
    assert run("child", "configure", child_ctx(make_request(*MAPS, entry))) == "rootfs_to_receive"


@pytest.mark.state("child", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_keeps_the_rootfs_and_the_entries_trees_apart(
        host, run, make_request, child_ctx, entries):
    ctx = child_ctx(make_request(*MAPS, *entries, "lxc.rootfs.options = idmap=container"))
    fds = [host.pipe()[0] for _ in range(4)]
    host.on("channel.wait_for", (b"", fds), when=lambda msg: msg is SyncMsg.IDMAPPED_MOUNTS)

    assert run("child", "sync_idmapped_mounts", ctx) == "configured"

    assert ctx.idmapped_rootfs == fds[0] and ctx.idmapped_entries == fds[1:]


@pytest.mark.state("child", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_with_only_entries_has_no_rootfs_to_keep(host, run, make_request, child_ctx, sources):
    ctx = child_ctx(make_request(*MAPS, f"lxc.mount.entry = {sources[0]} srv none bind,idmap=container 0 0"))
    tree = host.pipe()[0]
    host.on("channel.wait_for", (b"", [tree]), when=lambda msg: msg is SyncMsg.IDMAPPED_MOUNTS)

    assert run("child", "sync_idmapped_mounts", ctx) == "configured"

    assert ctx.idmapped_rootfs is None and ctx.idmapped_entries == [tree]


@pytest.mark.state("child", "sync_idmapped_mounts")
def test_sync_idmapped_mounts_with_fds_missing_fails_and_closes_what_came(host, run, make_request, child_ctx, entries):
    ctx = child_ctx(make_request(*MAPS, *entries, "lxc.rootfs.options = idmap=container"))
    fds = [host.pipe()[0] for _ in range(2)]
    host.on("channel.wait_for", (b"", fds), when=lambda msg: msg is SyncMsg.IDMAPPED_MOUNTS)

    error = run.failing("child", "sync_idmapped_mounts", ctx, StateError)

    assert str(error.value) == ("the monitor sent IDMAPPED_MOUNTS with 2 idmapped trees, not 4 (the rootfs and "
                                "3 mount entries)")
    assert ctx.idmapped_rootfs is None and ctx.idmapped_entries == []
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def received(ctx, host, config) -> list[int]:
    """What sync_idmapped_mounts leaves: a tree of the fake kernel per idmapped entry, in order."""
    ctx.idmapped_entries = [kernel.open_tree(-100, entry.source, CLONE) for entry in config.idmapped_mount_entries()]
    host.rec.clear()
    return list(ctx.idmapped_entries)


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_attaches_the_idmapped_trees_after_the_other_entries_with_their_options(
        host, run, make_request, child_ctx, sources, entries):
    data, logs, from_fstab = sources
    ctx = child_ctx(make_request(*MAPS, *entries, "lxc.mount.entry = tmpfs srv/tmp tmpfs create=dir 0 0",
                                 "lxc.mount.auto = cgroup2:force", "lxc.autodev = 0"))
    trees = received(ctx, host, ctx.request.config)

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert host.mounts.view(ctx.rootfs) == [
        ("/srv/plain", "bind", "", None, str(logs)),       # the other entries, in config order
        ("/srv/tmp", "tmpfs", "", None),
        ("/srv/data", "bind", "", None, str(data)),        # then lxc.mount.entry's idmapped ones
        ("/srv/logs", "bind", "", None, str(logs)),
        ("/srv/fstab", "bind", "", None, str(from_fstab)),  # then the fstab's, as LXC
        ("/sys/fs/cgroup", "cgroup2", SAFE_WORDS, None),    # the cgroups after all entries
    ]
    # ro on the rbind's tree, its submounts too, set before it is attached; the others have none.
    assert [call[1:] for call in host.calls("kernel") if call[0] == "mount_setattr"] == [
        (trees[0], "", EMPTY | kernel.AT_RECURSIVE,
         {"attr_set": kernel.MOUNT_ATTR_RDONLY})]
    assert all(Path(ctx.rootfs, "srv", name).is_dir() for name in ("data", "logs", "fstab"))   # create=dir
    assert ctx.idmapped_entries == []
    for fd in trees:
        with pytest.raises(OSError):
            os.fstat(fd)   # attached, then closed


SAFE_WORDS = "nodev,noexec,nosuid"


@pytest.mark.state("child", "setup_mounts")
def test_setup_mounts_gives_an_idmapped_tree_its_propagation_and_access_time_rule(
        host, run, make_request, child_ctx, sources):
    ctx = child_ctx(make_request(*MAPS, "lxc.autodev = 0", f"lxc.mount.entry = {sources[0]} srv none "
                                 "bind,nosuid,noatime,rshared,create=dir,idmap=container 0 0"))
    tree, = received(ctx, host, ctx.request.config)

    assert run("child", "setup_mounts", ctx) == "mounts_done"

    assert [call[1:] for call in host.calls("kernel") if call[0] == "mount_setattr"] == [
        (tree, "", EMPTY, {"attr_set": kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NOATIME, "attr_clr": 0x70}),
        (tree, "", EMPTY | kernel.AT_RECURSIVE, {"propagation": kernel.MS_SHARED})]


@pytest.mark.state("child", "setup_mounts")
@pytest.mark.parametrize("optional", [False, True])
def test_setup_mounts_failing_to_attach_an_idmapped_tree_names_the_entry_unless_optional(
        host, run, make_request, child_ctx, sources, optional):
    entry = f"{sources[0]} srv none bind,create=dir,idmap=container{',optional' if optional else ''} 0 0"
    ctx = child_ctx(make_request(*MAPS, "lxc.autodev = 0", f"lxc.mount.entry = {entry}",
                                 f"lxc.mount.entry = {sources[1]} srv2 none bind,create=dir,idmap=container 0 0"))
    trees = received(ctx, host, ctx.request.config)
    host.on("kernel.move_mount", raises=OSError(errno.ENOENT, "No such file or directory"),
            when=lambda from_fd, *args: from_fd == trees[0])

    if optional:
        assert run("child", "setup_mounts", ctx) == "mounts_done"
        assert host.mounts.view(ctx.rootfs) == [("/srv2", "bind", "", None, str(sources[1]))]
        assert ctx.log.named("optional mount skipped")
    else:
        error = run.failing("child", "setup_mounts", ctx, StateError)
        assert str(error.value) == (f"{config_file(ctx)}:5: lxc.mount.entry: attaching the idmapped "
                                    f"{sources[0]} on srv: No such file or directory (ENOENT)")
    for fd in trees:
        with pytest.raises(OSError):
            os.fstat(fd)   # spent either way
