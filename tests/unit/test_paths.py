"""engine/linux/paths.py: container paths resolved inside a rootfs, as the container sees them."""

from __future__ import annotations

import errno
import os

import pytest

from lxcsm.engine.linux.paths import container_path, in_rootfs


@pytest.fixture
def rootfs(tmp_path):
    """A small rootfs next to a 'host' directory it must never resolve into."""
    root = tmp_path / "rootfs"
    for d in ("usr/bin", "usr/lib", "etc", "var/run", "home/user"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/sh").write_text("")
    (root / "etc/hostname").write_text("ct\n")
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/hostname").write_text("host\n")
    return root


def test_plain_path(rootfs):
    assert in_rootfs(str(rootfs), "/usr/bin/sh") == f"{rootfs}/usr/bin/sh"
    assert in_rootfs(str(rootfs), "usr/bin/sh") == f"{rootfs}/usr/bin/sh"
    assert in_rootfs(str(rootfs), "//usr///bin/./sh") == f"{rootfs}/usr/bin/sh"


def test_root_itself(rootfs):
    assert os.path.normpath(in_rootfs(str(rootfs), "/")) == str(rootfs)


def test_missing_components_are_kept(rootfs):
    # mount targets that do not exist yet still resolve (create=dir makes them)
    assert in_rootfs(str(rootfs), "/dev/shm") == f"{rootfs}/dev/shm"


def test_absolute_symlink_resolves_inside_the_rootfs(rootfs):
    os.symlink("/usr/bin", rootfs / "bin")
    assert in_rootfs(str(rootfs), "/bin/sh") == f"{rootfs}/usr/bin/sh"
    # an absolute link to /etc must mean the container's /etc, not the host's
    os.symlink("/etc/hostname", rootfs / "home/user/name")
    resolved = in_rootfs(str(rootfs), "/home/user/name")
    assert resolved == f"{rootfs}/etc/hostname"
    with open(resolved) as f:
        assert f.read() == "ct\n"


def test_absolute_symlink_to_slash(rootfs):
    os.symlink("/", rootfs / "home/user/root")
    assert in_rootfs(str(rootfs), "/home/user/root/etc") == f"{rootfs}/etc"


def test_dotdot_cannot_climb_above_the_rootfs(rootfs):
    assert in_rootfs(str(rootfs), "/../../etc/hostname") == f"{rootfs}/etc/hostname"
    assert in_rootfs(str(rootfs), "/usr/../../../host/etc") == f"{rootfs}/host/etc"
    assert os.path.normpath(in_rootfs(str(rootfs), "..")) == str(rootfs)
    assert os.path.normpath(in_rootfs(str(rootfs), "/etc/../../..")) == str(rootfs)


def test_symlink_with_dotdot_cannot_escape(rootfs):
    os.symlink("../../../host/etc", rootfs / "usr/lib/escape")
    resolved = in_rootfs(str(rootfs), "/usr/lib/escape/hostname")
    assert resolved == f"{rootfs}/host/etc/hostname"
    assert not os.path.exists(resolved)   # the host's file at tmp/host/etc/hostname is not reached
    os.symlink("/../../host", rootfs / "abs-escape")
    assert in_rootfs(str(rootfs), "/abs-escape/etc") == f"{rootfs}/host/etc"


def test_relative_symlinks(rootfs):
    os.symlink("usr/bin", rootfs / "bin")                  # relative to /
    os.symlink("../lib", rootfs / "usr/bin/lib")            # relative to /usr/bin
    os.symlink("./sh", rootfs / "usr/bin/shell")
    assert in_rootfs(str(rootfs), "/bin/sh") == f"{rootfs}/usr/bin/sh"
    assert in_rootfs(str(rootfs), "/bin/lib") == f"{rootfs}/usr/lib"
    assert in_rootfs(str(rootfs), "/bin/shell") == f"{rootfs}/usr/bin/sh"


def test_chained_symlinks(rootfs):
    os.symlink("/var/run", rootfs / "run")
    os.symlink("/run/lock-dir", rootfs / "lock")
    (rootfs / "var/run/lock-dir").mkdir()
    assert in_rootfs(str(rootfs), "/lock/file") == f"{rootfs}/var/run/lock-dir/file"


def test_final_component_symlink_is_followed(rootfs):
    os.symlink("hostname", rootfs / "etc/name")
    assert in_rootfs(str(rootfs), "/etc/name") == f"{rootfs}/etc/hostname"


@pytest.mark.parametrize("links", [
    {"loop": "loop"},
    {"a": "b", "b": "a"},
    {"a": "/b", "b": "/c", "c": "/a"},
])
def test_symlink_loops_raise_eloop(rootfs, links):
    for name, target in links.items():
        os.symlink(target, rootfs / name)
    first = next(iter(links))
    with pytest.raises(OSError) as caught:
        in_rootfs(str(rootfs), f"/{first}/x")
    assert caught.value.errno == errno.ELOOP


def test_forty_links_are_allowed(rootfs):
    # the kernel's limit: a chain of 40 links resolves, 41 do not
    for i in range(40):
        os.symlink(f"l{i + 1}", rootfs / f"l{i}")
    (rootfs / "l40").mkdir()
    assert in_rootfs(str(rootfs), "/l0") == f"{rootfs}/l40"
    os.rmdir(rootfs / "l40")
    os.symlink("l41", rootfs / "l40")
    (rootfs / "l41").mkdir()
    with pytest.raises(OSError) as caught:
        in_rootfs(str(rootfs), "/l0")
    assert caught.value.errno == errno.ELOOP


def test_bind_maps_are_used(rootfs, tmp_path):
    host_usr = tmp_path / "host-usr"
    (host_usr / "bin").mkdir(parents=True)
    (host_usr / "bin/busybox").write_text("")
    binds = {"/usr": str(host_usr)}
    assert in_rootfs(str(rootfs), "/usr/bin/busybox", binds) == f"{host_usr}/bin/busybox"
    assert os.path.normpath(in_rootfs(str(rootfs), "/usr", binds)) == str(host_usr)
    # a sibling with the same prefix is not under the bind
    assert in_rootfs(str(rootfs), "/usrlocal/x", binds) == f"{rootfs}/usrlocal/x"
    assert in_rootfs(str(rootfs), "/etc/hostname", binds) == f"{rootfs}/etc/hostname"


def test_longest_bind_prefix_wins(rootfs, tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    binds = {"/usr": str(outer), "/usr/lib": str(inner)}
    assert in_rootfs(str(rootfs), "/usr/lib/libc.so", binds) == f"{inner}/libc.so"
    assert in_rootfs(str(rootfs), "/usr/bin/sh", binds) == f"{outer}/bin/sh"
    # order of the mapping does not matter
    reversed_binds = {"/usr/lib": str(inner), "/usr": str(outer)}
    assert in_rootfs(str(rootfs), "/usr/lib/libc.so", reversed_binds) == f"{inner}/libc.so"


def test_symlink_inside_a_bind_source_is_resolved_in_the_container(rootfs, tmp_path):
    host_usr = tmp_path / "host-usr"
    (host_usr / "bin").mkdir(parents=True)
    os.symlink("/etc/hostname", host_usr / "bin/name")      # absolute: the container's /etc
    os.symlink("../lib", host_usr / "bin/lib")              # relative: stays in the bind
    (host_usr / "lib").mkdir()
    binds = {"/usr": str(host_usr)}
    assert in_rootfs(str(rootfs), "/usr/bin/name", binds) == f"{rootfs}/etc/hostname"
    assert in_rootfs(str(rootfs), "/usr/bin/lib", binds) == f"{host_usr}/lib"


def test_symlink_in_the_rootfs_into_a_bind(rootfs, tmp_path):
    host_usr = tmp_path / "host-usr"
    (host_usr / "bin").mkdir(parents=True)
    os.symlink("usr/bin", rootfs / "bin")
    assert in_rootfs(str(rootfs), "/bin/sh", {"/usr": str(host_usr)}) == f"{host_usr}/bin/sh"


@pytest.mark.parametrize("rootfs_path,target,expected", [
    ("/var/lib/lxc/c/rootfs", "dev/shm", "/dev/shm"),
    ("/var/lib/lxc/c/rootfs", "/dev/shm", "/dev/shm"),
    ("/var/lib/lxc/c/rootfs", "/var/lib/lxc/c/rootfs/dev/shm", "/dev/shm"),
    ("/var/lib/lxc/c/rootfs/", "/var/lib/lxc/c/rootfs/dev/shm", "/dev/shm"),
    ("/var/lib/lxc/c/rootfs", "/var/lib/lxc/c/rootfs2/x", "/var/lib/lxc/c/rootfs2/x"),
    ("/var/lib/lxc/c/rootfs", "var/lib/lxc/c/rootfs/x", "/var/lib/lxc/c/rootfs/x"),
    ("", "/mnt", "/mnt"),
    ("", "mnt/data", "/mnt/data"),
    ("/r", "//mnt", "/mnt"),
])
def test_container_path(rootfs_path, target, expected):
    assert container_path(rootfs_path, target) == expected
