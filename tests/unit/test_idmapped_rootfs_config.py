"""lxc.rootfs.options = idmap=...: what the config answers (Config.rootfs_idmap) and what
preflight refuses before anything exists: an overlay rootfs, a user namespace file that is
none.  (Whether the kernel will idmap the filesystem takes root to ask: the integration
test tests/integration/test_idmapped_rootfs.py.)"""

from __future__ import annotations

import pytest

from lxcsm.engine.config import preflight
from lxcsm.engine.config.model import ConfigError
from tests.unit.config_text import load_text

MAPS = "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n"


@pytest.mark.parametrize("text, idmap", [
    (MAPS + "lxc.rootfs.options = idmap=container\n", "container"),
    (MAPS + "lxc.rootfs.options = ro,idmap=/proc/42/ns/user,nodev\n", "/proc/42/ns/user"),
    (MAPS + "lxc.rootfs.options = ro\n", None),
    (MAPS, None),
    # LXC ignores idmap= without a user namespace to idmap to, and binds the rootfs as it is.
    ("lxc.rootfs.options = idmap=container\n", None),
])
def test_rootfs_idmap_is_the_option_only_in_a_user_namespace(tmp_path, text, idmap):
    assert load_text(tmp_path, text).rootfs_idmap() == idmap


def _refusal(tmp_path, text: str) -> ConfigError:
    config = load_text(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        preflight._check_idmapped_rootfs(config)
    return refused.value


def test_an_overlay_rootfs_cannot_be_idmapped(tmp_path):
    (tmp_path / "lower").mkdir()
    err = _refusal(tmp_path, f"lxc.rootfs.path = overlay:{tmp_path}/lower:{tmp_path}/upper\n"
                             + MAPS + "lxc.rootfs.options = idmap=container\n")
    assert (err.key, err.line) == ("lxc.rootfs.options", 4)
    assert err.message == "idmap= needs a directory rootfs, not an overlay (LXC idmaps no overlay rootfs either)"


def test_idmap_to_a_path_needs_a_user_namespace_there(tmp_path):
    (tmp_path / "plain").write_text("")
    err = _refusal(tmp_path, MAPS + f"lxc.rootfs.options = idmap={tmp_path}/plain\n")
    plain = tmp_path / "plain"
    assert err.message == f"idmap={plain}: {plain} is not a user namespace's file (it is {plain})"
    err = _refusal(tmp_path, MAPS + f"lxc.rootfs.options = idmap={tmp_path}/missing\n")
    assert err.message == f"idmap={tmp_path}/missing: cannot open the user namespace {tmp_path}/missing: " \
                          "No such file or directory"


def test_idmap_to_a_relative_path_is_refused(tmp_path):
    err = _refusal(tmp_path, MAPS + "lxc.rootfs.options = idmap=proc/1/ns/user\n")
    assert err.message == "idmap=proc/1/ns/user: the user namespace's path must be absolute"
