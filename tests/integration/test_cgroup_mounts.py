"""lxc.mount.auto = cgroup:*: the container sees its own cgroups on /sys/fs/cgroup, rooted
at its payload cgroup (its cgroup namespace), writable or not as the token says."""

from __future__ import annotations

import os

import pytest

from lxcsm.engine.linux import cgroups

pytestmark = pytest.mark.root

HIERARCHIES = sorted(os.path.basename(h.mountpoint) for h in cgroups.hierarchies())
PROBE = ("ls /sys/fs/cgroup | tr '\\n' ' '; echo; cat /proc/self/cgroup | cut -d: -f3 | sort -u | tr '\\n' ' '; "
         "echo; mkdir /sys/fs/cgroup/pids/sub 2>/dev/null && echo sub-made || echo sub-refused; "
         "touch /sys/fs/cgroup/file 2>/dev/null && echo tmpfs-writable || echo tmpfs-readonly")


def _probe(make_container, token: str, *extra: str) -> list[str]:
    c = make_container(extra=[f"lxc.mount.auto = proc:mixed sys:ro {token}", *extra])
    result = c.start_fg("/bin/sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_mixed_mounts_every_hierarchy_writable_under_a_readonly_tmpfs(make_container):
    listing, paths, sub, tmpfs = _probe(make_container, "cgroup:mixed:force")
    assert listing.split() == HIERARCHIES
    assert paths.split() == ["/"]                 # the payload cgroup is the namespace's root
    assert (sub, tmpfs) == ("sub-made", "tmpfs-readonly")   # and the stop removes sub with it



def test_without_force_a_container_keeping_cap_sys_admin_mounts_its_cgroups_itself(make_container):
    """LXC 5.0.2's cgfsng_mount(): in its own cgroup namespace a container that keeps
    CAP_SYS_ADMIN gets no cgroup mounts (its init - systemd - mounts its own layout), unless
    the host has cgroup2 only.  The other tests ask for the mounts with :force."""
    if cgroups.unified_only(cgroups.hierarchies()):
        pytest.skip("on a cgroup2-only host LXC mounts the cgroup2 tree whatever the token")
    listing, _paths, sub, _tmpfs = _probe(make_container, "cgroup:mixed")[:4]
    assert (listing, sub) == ("", "sub-refused")

def test_ro_makes_the_cgroups_read_only(make_container):
    _listing, _paths, sub, tmpfs = _probe(make_container, "cgroup:ro:force")
    assert (sub, tmpfs) == ("sub-refused", "tmpfs-readonly")


def test_bare_cgroup_is_rw_with_cap_sys_admin_and_mixed_without(make_container):
    assert _probe(make_container, "cgroup:force")[2:] == ["sub-made", "tmpfs-writable"]
    assert _probe(make_container, "cgroup", "lxc.cap.drop = sys_admin")[2:] == ["sub-made", "tmpfs-readonly"]
