"""engine/linux/storage.py: what an ephemeral container's end removes, as LXC removes it."""

from __future__ import annotations

import pytest

from lxcsm.engine.linux import storage


def test_remove_on_one_device_removes_the_tree_links_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "link").symlink_to(outside)

    assert storage.remove_on_one_device(str(tree)) == []

    assert not tree.exists()
    assert (outside / "keep").exists()   # a symlink is removed, never followed
    assert storage.remove_on_one_device(str(tree)) == []   # already gone: nothing left


@pytest.mark.parametrize("value, removed", [
    ("/var/lib/lxc/c/rootfs", "/var/lib/lxc/c/rootfs"),
    ("dir:/var/lib/lxc/c/rootfs", "/var/lib/lxc/c/rootfs"),
    ("overlay:/var/lib/lxc/o/rootfs:/var/lib/lxc/c/overlay/delta", "/var/lib/lxc/c/overlay/delta"),
])
def test_rootfs_to_destroy_is_what_lxcs_storage_driver_removes(value, removed):
    assert storage.rootfs_to_destroy(value) == removed


@pytest.mark.parametrize("before, after", [
    ("LXCPATH\nc\n/other\nd\n", "/other\nd\n"),   # LXC's list of snapshots
    ("LXCPATH\nc\n", None),                       # left empty: removed
    ("3\n", "2\n"),                                # LXC's old format: a count
    ("0\n", None),
])
def test_forget_snapshot_takes_the_container_out_of_its_origins_list(tmp_path, before, after):
    lxcpath = str(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "o").mkdir()
    (tmp_path / "c" / "lxc_rdepends").write_text(f"{lxcpath}\no\n")
    snapshots = tmp_path / "o" / "lxc_snapshots"
    snapshots.write_text(before.replace("LXCPATH", lxcpath))

    storage.forget_snapshot(lxcpath, "c")

    assert (snapshots.read_text() if snapshots.exists() else None) == after
