"""lxc.namespace.share.NAME (lxc-start --share-NAME): the key's values, what the config then
answers, and what `lxcsm plan` says of it (the states: tests/unit/states/test_share_namespaces.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lxcsm.engine.config import loader
from lxcsm.states.monitor import spawn
from tests.unit import test_preflight

start_checks = test_preflight.start_checks   # preflight on a made-up host (the fixture)


def _config(tmp_path, *lines: str, overrides=()):
    path = tmp_path / "config"
    path.write_text("".join(f"{line}\n" for line in ("lxc.uts.name = b", *lines)))
    return loader.load(str(path), "b", list(overrides))


def test_shares_are_taken_out_of_the_containers_own_namespaces_in_lxcs_order(tmp_path):
    config = _config(tmp_path, "lxc.namespace.share.net = a", "lxc.namespace.share.uts = 123",
                     overrides=["lxc.namespace.share.pid = /proc/1/ns/pid"])

    assert list(config.namespace_shares().items()) == [("pid", "/proc/1/ns/pid"), ("uts", "123"), ("net", "a")]
    assert config.namespaces() == {"mnt", "ipc"}
    assert config.unsupported == ()


def test_a_joined_network_gets_no_device(tmp_path):
    config = _config(tmp_path, "lxc.net.0.type = veth", "lxc.namespace.share.net = a")

    assert config.netlink_devices() == ()


@pytest.mark.parametrize(("line", "error"), [
    ("lxc.namespace.share.net = lxc/a", "not a pid, an absolute path or a container name"),
    ("lxc.namespace.share.net = 0", "not a pid, an absolute path or a container name"),
    ("lxc.namespace.share.user = a", "lxcsm does not join another user namespace"),
    ("lxc.namespace.share.mnt = a", "lxcsm does not join another mnt namespace"),
    ("lxc.namespace.share.time = a", "LXC 5.0.2 fails such a start too"),
])
def test_what_lxcsm_does_not_join_is_refused_naming_the_line(tmp_path, line, error):
    with pytest.raises(loader.ConfigError) as refused:
        _config(tmp_path, line)
    assert (refused.value.line, refused.value.key) == (2, line.split(" =")[0])
    assert error in str(refused.value)


def test_spawn_plan_says_the_namespace_is_joined_not_created(tmp_path):
    steps = spawn.plan(SimpleNamespace(name="b", config=_config(tmp_path, "lxc.namespace.share.net = a")))

    assert ("join the net namespace of container a's init, not a new one (lxc.namespace.share.net): setns(pidfd"
            " of container a's init, CLONE_NEWNET) before clone3, back after") in steps
    assert not any("CLONE_NEWNET|" in step or "|CLONE_NEWNET" in step for step in steps)





def test_preflight_leaves_the_devices_of_a_joined_network_alone(start_checks):
    lines = ("lxc.uts.name = a", "lxc.net.0.type = veth", "lxc.net.0.link = nosuchbr")

    with pytest.raises(loader.ConfigError):
        start_checks(*lines)
    start_checks(*lines, "lxc.namespace.share.net = other")   # no device is made there: nor does LXC look
