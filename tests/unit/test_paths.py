"""engine/linux/paths.py: container paths resolved inside a rootfs, as the container sees them.

The descriptor-based helpers (open_in_root, create_beneath) need no root: openat2 works on any
directory, so they are tried here on hostile layouts in tmp dirs, next to a "host" directory
that must never be touched.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from lxcsm.engine.linux.paths import container_path, create_beneath, in_rootfs, open_in_root, open_root


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


# --- by file descriptor: open_in_root, create_beneath ------------------------------------------

@pytest.fixture
def root(rootfs):
    fd = open_root(str(rootfs))
    yield fd
    os.close(fd)


@pytest.fixture
def host(tmp_path):
    """The host directory hostile links point at; a test checks it stays as it was."""
    return tmp_path / "host"


def where(fd: int) -> str:
    """The host path a descriptor stands for (and closes it)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def host_tree(host) -> list[str]:
    return sorted(str(p.relative_to(host)) for p in host.rglob("*"))


def test_open_in_root_plain_and_through_links(rootfs, root):
    assert where(open_in_root(root, "/usr/bin/sh")) == f"{rootfs}/usr/bin/sh"
    assert where(open_in_root(root, "usr//bin/./sh")) == f"{rootfs}/usr/bin/sh"
    assert where(open_in_root(root, "/")) == str(rootfs)
    os.symlink("/usr/bin", rootfs / "bin")
    os.symlink("../lib", rootfs / "usr/bin/lib")
    assert where(open_in_root(root, "/bin/sh")) == f"{rootfs}/usr/bin/sh"
    assert where(open_in_root(root, "/bin/lib")) == f"{rootfs}/usr/lib"


def test_open_in_root_an_absolute_link_to_slash_means_the_rootfs(rootfs, root, host):
    before = host_tree(host)
    os.symlink("/", rootfs / "home/user/root")
    assert where(open_in_root(root, "/home/user/root/etc/hostname")) == f"{rootfs}/etc/hostname"
    assert where(open_in_root(root, "/home/user/root/made/here", "dir")) == f"{rootfs}/made/here"
    assert host_tree(host) == before


@pytest.mark.parametrize("link", ["../../..", "../../../..", "../../../../../../..", "/.."])
def test_open_in_root_dotdot_links_stop_at_the_top(rootfs, root, host, link):
    before = host_tree(host)
    os.symlink(link, rootfs / "usr/lib/up")
    assert where(open_in_root(root, "/usr/lib/up/etc/hostname")) == f"{rootfs}/etc/hostname"
    assert where(open_in_root(root, "/usr/lib/up/host/etc", "dir")) == f"{rootfs}/host/etc"
    assert where(open_in_root(root, "/usr/lib/up/host/etc/hostname", "file")) == f"{rootfs}/host/etc/hostname"
    assert (rootfs / "host/etc/hostname").read_text() == ""
    assert host_tree(host) == before and (host / "etc/hostname").read_text() == "host\n"


def test_open_in_root_dotdot_in_the_path_stops_at_the_top(rootfs, root, host):
    before = host_tree(host)
    assert where(open_in_root(root, "/../../etc/hostname")) == f"{rootfs}/etc/hostname"
    assert where(open_in_root(root, "../../../host/etc", "dir")) == f"{rootfs}/host/etc"
    assert where(open_in_root(root, "/etc/../../../../x", "file")) == f"{rootfs}/x"
    assert host_tree(host) == before


def test_a_link_to_the_hosts_directory_is_the_rootfs_directory_of_that_name(rootfs, root, host):
    before = host_tree(host)
    os.symlink(str(host), rootfs / "var/escape")           # absolute: the host's own path
    # nothing of that name in the rootfs: refused, naming the link, and nothing is made anywhere
    with pytest.raises(FileNotFoundError) as caught:
        open_in_root(root, "/var/escape/etc/made", "dir")
    assert caught.value.filename == "/var/escape" and "symlink" in caught.value.strerror
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/var/escape/file", "file")
    assert host_tree(host) == before
    # the same path made inside the rootfs: the link leads there, never to the host
    os.makedirs(f"{rootfs}{host}")
    assert where(open_in_root(root, "/var/escape/etc/made", "dir")) == f"{rootfs}{host}/etc/made"
    assert host_tree(host) == before


def test_create_file_makes_parents_and_an_empty_file(rootfs, root):
    fd = open_in_root(root, "/run/lock/deep/file", "file")
    assert where(fd) == f"{rootfs}/run/lock/deep/file"
    info = os.stat(rootfs / "run/lock/deep/file")
    assert stat.S_ISREG(info.st_mode) and info.st_size == 0
    assert stat.S_IMODE(os.stat(rootfs / "run/lock").st_mode) & 0o700 == 0o700
    # an existing file (or directory) is used as it is
    assert where(open_in_root(root, "/etc/hostname", "file")) == f"{rootfs}/etc/hostname"
    assert (rootfs / "etc/hostname").read_text() == "ct\n"
    assert where(open_in_root(root, "/etc", "file")) == f"{rootfs}/etc"


def test_create_file_a_final_symlink_is_followed_inside_or_refused(rootfs, root, host):
    before = host_tree(host)
    os.symlink("/etc/hostname", rootfs / "etc/name")                 # to an existing file: used
    assert where(open_in_root(root, "/etc/name", "file")) == f"{rootfs}/etc/hostname"
    os.symlink(f"{host}/etc/hostname", rootfs / "etc/host-name")     # the host's file by its path
    os.symlink("../../../../host/etc/new", rootfs / "etc/up-name")   # climbing out
    (rootfs / "host/etc").mkdir(parents=True)
    for name in ("host-name", "up-name"):
        with pytest.raises(FileNotFoundError) as caught:
            open_in_root(root, f"/etc/{name}", "file")
        assert caught.value.filename == f"/etc/{name}"
        assert os.path.islink(rootfs / "etc" / name)
    assert os.listdir(rootfs / "host/etc") == []   # not made through the link, even inside
    assert host_tree(host) == before and (host / "etc/hostname").read_text() == "host\n"


def test_create_dir_is_refused_where_a_file_is(rootfs, root):
    with pytest.raises(NotADirectoryError):
        open_in_root(root, "/etc/hostname/sub", "dir")


def test_without_create_nothing_is_made(rootfs, root):
    with pytest.raises(FileNotFoundError) as caught:
        open_in_root(root, "/dev/shm")
    assert caught.value.filename == "/dev/shm"
    assert not (rootfs / "dev").exists()


@pytest.mark.parametrize("links", [{"loop": "loop"}, {"a": "/b", "b": "/c", "c": "/a"}])
def test_open_in_root_symlink_loops_are_eloop(rootfs, root, links):
    for name, target in links.items():
        os.symlink(target, rootfs / name)
    with pytest.raises(OSError) as caught:
        open_in_root(root, f"/{next(iter(links))}/x", "dir")
    assert caught.value.errno == errno.ELOOP


def test_create_beneath_makes_a_file_and_refuses_symlinks(rootfs, host):
    dev = os.open(rootfs / "etc", os.O_PATH | os.O_DIRECTORY)
    try:
        assert where(create_beneath(dev, "console", 0o600)) == f"{rootfs}/etc/console"
        assert stat.S_IMODE(os.stat(rootfs / "etc/console").st_mode) == 0o600 & ~_umask()
        assert where(create_beneath(dev, "hostname", 0o600)) == f"{rootfs}/etc/hostname"
        os.symlink(f"{host}/etc/tty1", rootfs / "etc/tty1")
        os.symlink("hostname", rootfs / "etc/tty2")
        for name in ("tty1", "tty2", "../etc/tty3"):
            with pytest.raises(OSError) as caught:
                create_beneath(dev, name, 0o600)
            assert caught.value.errno in (errno.ELOOP, errno.EXDEV)
        assert not (host / "etc/tty1").exists() and not (rootfs / "etc/tty3").exists()
    finally:
        os.close(dev)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Swaps ROOTFS/a between a directory and links to HOST (by its path, and climbing out with ..)
# until killed: the hostile process of issue 9, on the other core.
SWAPPER = """
import itertools, os, shutil, sys
rootfs, host = sys.argv[1:]
a, parked = os.path.join(rootfs, "a"), os.path.join(rootfs, "parked")
links = [host, "../../../../../../" + host.lstrip("/")]
print("swapping", flush=True)
for turn in itertools.count():
    try:
        os.rename(a, parked)
        os.symlink(links[turn % 2], a)
        shutil.rmtree(parked)   # while /a is the link
        os.unlink(a)
        os.mkdir(a)
    except OSError:
        pass
"""


def test_a_racing_swap_of_dir_and_link_never_reaches_the_host(rootfs, root, host):
    """The race of issue 9, without root: while another process keeps swapping /a between
    a directory and a link to the host, every create=file lands inside the rootfs or is
    refused; the host directory is never written."""
    before = host_tree(host)
    (rootfs / "a").mkdir()
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(rootfs), str(host)], stdout=subprocess.PIPE)
    made = refused = 0
    try:
        assert swapper.stdout.readline() == b"swapping\n"
        for _ in range(2000):
            try:
                fd = open_in_root(root, "/a/b/file", "file")
            except OSError:
                refused += 1
                continue
            made += 1
            assert where(fd).startswith(f"{rootfs}/")
    finally:
        swapper.kill()
        swapper.wait()
        swapper.stdout.close()
    assert made + refused == 2000
    assert host_tree(host) == before
