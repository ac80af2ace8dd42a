"""lxc.cap.drop and lxc.cap.keep: the bounding set init runs with, read from inside."""

from __future__ import annotations

import pytest

from lxcsm.engine.linux import kernel

pytestmark = pytest.mark.root


def _ours() -> set[int]:
    """This test's own bounding set: the container's cannot hold more (a sandbox may have
    dropped some already)."""
    with open("/proc/self/status") as status:
        mask = int(next(line for line in status if line.startswith("CapBnd")).split()[1], 16)
    return {cap for cap in range(64) if mask >> cap & 1}


def _bounding_set(c, *config: str) -> set[int]:
    with open(c.config, "a") as file:
        file.write("".join(f"{line}\n" for line in ("lxc.mount.auto = proc:mixed", *config)))
    result = c.start_fg("/bin/sh", "-c", "grep CapBnd /proc/self/status")
    assert result.returncode == 0, result.stderr
    mask = int(result.stdout.split()[1], 16)
    return {cap for cap in range(64) if mask >> cap & 1}


def test_drop_removes_the_named_capabilities(make_container):
    c = make_container()
    full = _ours()
    assert _bounding_set(c, "lxc.cap.drop = sys_module CAP_SYS_TIME", "lxc.cap.drop = 13") == \
        full - {kernel.CAPABILITIES["sys_module"], kernel.CAPABILITIES["sys_time"], kernel.CAPABILITIES["net_raw"]}


def test_keep_keeps_only_the_named_ones_and_none_forgets(make_container):
    c = make_container()
    assert _bounding_set(c, "lxc.cap.keep = chown", "lxc.cap.keep = none sys_admin", "lxc.cap.keep = net_raw") == \
        {kernel.CAPABILITIES["sys_admin"], kernel.CAPABILITIES["net_raw"]}


def test_keep_none_alone_keeps_nothing(make_container):
    assert _bounding_set(make_container(), "lxc.cap.keep = none") == set()


def test_without_either_key_the_set_is_whole(make_container):
    assert _bounding_set(make_container()) == _ours()
