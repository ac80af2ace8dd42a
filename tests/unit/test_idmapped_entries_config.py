"""Mount entries with idmap=: what the config answers (Config.idmapped_mount_entries, in the
order LXC attaches them; Config.idmaps_mounts) and what preflight refuses before anything
exists - what LXC 5.0.2 refuses or fails on too.  (Whether the kernel will idmap a source's
filesystem takes root to ask: the integration test tests/integration/test_idmapped_mount_entries.py.)"""

from __future__ import annotations

import pytest

from lxcsm.engine.config import preflight
from lxcsm.engine.config.model import ConfigError
from tests.unit.config_text import load_text

MAPS = "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n"


def test_idmapped_entries_are_the_entry_lines_then_the_fstabs_as_lxc_attaches_them(tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("/a fa none bind,idmap=container 0 0\n/b fb none bind 0 0\n")
    config = load_text(tmp_path, MAPS + f"lxc.mount.fstab = {fstab}\n"
                                        "lxc.mount.entry = /c c none bind 0 0\n"
                                        "lxc.mount.entry = /d d none rbind,ro,idmap=/run/u 0 0\n")
    assert [entry.target for entry in config.mount_entries] == ["fa", "fb", "c", "d"]
    assert [entry.target for entry in config.idmapped_mount_entries()] == ["d", "fa"]
    assert config.idmaps_mounts() and config.rootfs_idmap() is None


def test_nothing_to_idmap_without_idmap_options(tmp_path):
    config = load_text(tmp_path, MAPS + "lxc.mount.entry = /c c none bind 0 0\n")
    assert config.idmapped_mount_entries() == () and not config.idmaps_mounts()


def _refusal(tmp_path, text: str) -> ConfigError:
    config = load_text(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        preflight._check_idmapped_entries(config)
    return refused.value


@pytest.mark.parametrize("entry, message", [
    ("tmpfs srv tmpfs idmap=container", "only a bind can be idmapped, not a tmpfs mount (LXC 5.0.2 refuses it too)"),
    ("/srv srv none bind,size=10,idmap=container",
     "an idmapped bind takes no filesystem options (size=10; LXC 5.0.2 refuses them too)"),
    ("srv/gone srv none bind,relative,idmap=container", "bind source srv/gone does not exist"),   # in the rootfs
    ("/srv srv none bind,idmap=proc/1/ns/user", "the user namespace's path must be absolute"),
])
def test_what_cannot_be_idmapped_is_refused_naming_the_entry(tmp_path, entry, message):
    err = _refusal(tmp_path, f"lxc.rootfs.path = dir:{tmp_path}\n" + MAPS + f"lxc.mount.entry = {entry} 0 0\n")
    idmap = entry.rsplit("idmap=", 1)[1]
    assert (err.key, err.line, err.message) == ("lxc.mount.entry", 4, f"idmap={idmap}: {message}")


def test_idmap_container_needs_a_user_namespace_of_the_containers_own(tmp_path):
    err = _refusal(tmp_path, "lxc.mount.entry = /srv srv none bind,idmap=container 0 0\n")
    assert (err.line, err.message) == (1, "idmap=container: the container has no user namespace of its own to "
                                          "idmap to: add lxc.idmap, or name one with idmap=PATH (LXC's start fails)")


def test_idmap_to_a_path_needs_a_user_namespace_there_and_the_source_must_exist(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")
    err = _refusal(tmp_path, MAPS + f"lxc.mount.entry = /srv srv none bind,idmap={plain} 0 0\n")
    assert err.message == f"idmap={plain}: {plain} is not a user namespace's file (it is {plain})"
    # optional or not: LXC's child fails to copy a missing source whatever the entry says
    err = _refusal(tmp_path, MAPS + f"lxc.mount.entry = {tmp_path}/gone srv none bind,optional,idmap=container 0 0\n")
    assert err.message == f"idmap=container: bind source {tmp_path}/gone does not exist"

