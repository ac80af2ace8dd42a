"""Cgroup limits: written into the container's payload cgroups, in force while it runs.

Each layout takes its own keys, as LXC does: on a host with v1 controllers (this VM's
hybrid layout) lxc.cgroup.* (lxc.cgroup2.* ignored), on a cgroup2-only host
lxc.cgroup2.* (lxc.cgroup.* ignored), the device rules there as an eBPF program.
"""

from __future__ import annotations

import os
import re

import pytest

from lxcsm.engine.linux import cgroups

pytestmark = pytest.mark.root

UNIFIED_ONLY = cgroups.unified_only(cgroups.hierarchies())
KEYS = "lxc.cgroup2" if UNIFIED_ONLY else "lxc.cgroup"
MEMORY_LIMIT = "memory.max" if UNIFIED_ONLY else "memory.limit_in_bytes"


def _payload(controller: str, name: str) -> str:
    (hierarchy,) = [h for h in cgroups.hierarchies() if controller in h.controllers or UNIFIED_ONLY]
    return os.path.join(hierarchy.home, f"lxc.payload.{name}")


def test_limits_are_in_force_while_the_container_runs(make_container):
    c = make_container(extra=[f"{KEYS}.{MEMORY_LIMIT} = 64M", f"{KEYS}.pids.max = 50"])
    memory, pids = _payload("memory", c.name), _payload("pids", c.name)
    # The container reads its own limits through the host's cgroupfs paths it was given.
    script = f"cat {memory}/{MEMORY_LIMIT} {pids}/pids.max"
    result = c.start_fg("/bin/sh", "-c", script, options=("-s", "lxc.mount.entry = /sys/fs/cgroup "
                                                           "sys/fs/cgroup none rbind,ro,create=dir 0 0"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(64 * 1024 * 1024), "50"]


def test_device_rules_apply_after_dev_is_populated(make_container):
    """deny all, allow /dev/null: autodev still made its nodes (the rules come after the
    child's CGROUP_LIMITS), and the container can use null but not zero."""
    c = make_container(extra=[f"{KEYS}.devices.deny = a", f"{KEYS}.devices.allow = c 1:3 rwm"])
    script = ("echo x > /dev/null && echo null-ok; "
              "head -c1 /dev/zero >/dev/null 2>&1 && echo zero-ok || echo zero-denied; ls /dev/zero")
    result = c.start_fg("/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["null-ok", "zero-denied", "/dev/zero"]


def test_a_value_the_kernel_refuses_fails_the_start_naming_the_line(make_container):
    c = make_container(extra=[f"{KEYS}.{MEMORY_LIMIT} = lots"])
    line = c.config.read_text().splitlines().index(f"{KEYS}.{MEMORY_LIMIT} = lots") + 1
    result = c.start_fg("/bin/true")
    assert result.returncode == 1
    assert re.search(rf"failed_state=spawn failed_side=monitor error=\"{re.escape(str(c.config))}:{line}: "
                     rf"{re.escape(KEYS)}\.{re.escape(MEMORY_LIMIT)}: writing 'lots': Invalid argument",
                     result.stderr), result.stderr
