"""lxc.mount.auto = cgroup:*: the container sees its own cgroups on /sys/fs/cgroup, rooted
at its payload cgroup (its cgroup namespace), writable or not as the token says.

With v1 controllers: a tmpfs holding one mount per hierarchy.  On a cgroup2-only host
LXC mounts the cgroup2 tree alone on /sys/fs/cgroup, whatever the token (mixed is rw
there: there is no tmpfs to protect), and so does lxcsm.
"""

from __future__ import annotations

import os

import pytest

from lxcsm.engine.linux import cgroups

pytestmark = pytest.mark.root

FOUND = cgroups.hierarchies()
UNIFIED_ONLY = cgroups.unified_only(FOUND)
HIERARCHIES = sorted(os.path.basename(h.mountpoint) for h in FOUND)
# Where a sub-cgroup is tried: one v1 hierarchy's directory, or the cgroup2 tree itself.
SUB = "/sys/fs/cgroup/sub" if UNIFIED_ONLY else "/sys/fs/cgroup/pids/sub"
PROBE = ("ls /sys/fs/cgroup | tr '\\n' ' '; echo; cat /proc/self/cgroup | cut -d: -f3 | sort -u | tr '\\n' ' '; "
         f"echo; mkdir {SUB} 2>/dev/null && echo sub-made || echo sub-refused; "
         "touch /sys/fs/cgroup/file 2>/dev/null && echo tmpfs-writable || echo tmpfs-readonly; "
         "grep ' /sys/fs/cgroup ' /proc/self/mountinfo | tail -1 | sed 's/.* - //' | cut -d' ' -f1")


def _probe(make_container, token: str, *extra: str) -> list[str]:
    c = make_container(extra=[f"lxc.mount.auto = proc:mixed sys:ro {token}", *extra])
    result = c.start_fg("/bin/sh", "-c", PROBE, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_mixed_mounts_every_hierarchy_writable_under_a_writable_tmpfs(make_container):
    listing, paths, sub, tmpfs, fstype = _probe(make_container, "cgroup:mixed:force")
    assert paths.split() == ["/"]                 # the payload cgroup is the namespace's root
    if UNIFIED_ONLY:
        assert fstype == "cgroup2"
        assert "cgroup.procs" in listing.split() and "cgroup.controllers" in listing.split()
        assert (sub, tmpfs) == ("sub-made", "tmpfs-readonly")   # cgroupfs takes no plain files
    else:
        assert fstype == "tmpfs"
        assert listing.split() == HIERARCHIES
        # the stop removes sub with it; the tmpfs is left writable, as LXC 5.0.2 leaves it (systemd
        # makes its controller links there, then makes it read-only itself)
        assert (sub, tmpfs) == ("sub-made", "tmpfs-writable")



def test_without_force_a_container_keeping_cap_sys_admin_mounts_its_cgroups_itself(make_container):
    """LXC 5.0.2's cgfsng_mount(): in its own cgroup namespace a container that keeps
    CAP_SYS_ADMIN gets no cgroup mounts (its init - systemd - mounts its own layout), unless
    the host has cgroup2 only.  The other tests ask for the mounts with :force."""
    if cgroups.unified_only(cgroups.hierarchies()):
        pytest.skip("on a cgroup2-only host LXC mounts the cgroup2 tree whatever the token")
    listing, _paths, sub, _tmpfs = _probe(make_container, "cgroup:mixed")[:4]
    assert (listing, sub) == ("", "sub-refused")

def test_ro_makes_the_cgroups_read_only(make_container):
    _listing, _paths, sub, tmpfs, _fstype = _probe(make_container, "cgroup:ro:force")
    assert (sub, tmpfs) == ("sub-refused", "tmpfs-readonly" if UNIFIED_ONLY else "tmpfs-writable")


def test_bare_cgroup_mounts_writable_cgroups_with_or_without_cap_sys_admin(make_container):
    # rw with CAP_SYS_ADMIN, mixed without: inside the container's cgroup namespace, LXC 5.0.2
    # mounts both the same way (the hierarchies writable, rooted at its own cgroup)
    if UNIFIED_ONLY:   # one cgroup2 mount, writable either way: nothing else for mixed to protect
        assert _probe(make_container, "cgroup:force")[2:4] == ["sub-made", "tmpfs-readonly"]
        assert _probe(make_container, "cgroup", "lxc.cap.drop = sys_admin")[2:4] == ["sub-made", "tmpfs-readonly"]
        return
    assert _probe(make_container, "cgroup:force")[2:4] == ["sub-made", "tmpfs-writable"]
    assert _probe(make_container, "cgroup", "lxc.cap.drop = sys_admin")[2:4] == ["sub-made", "tmpfs-writable"]
