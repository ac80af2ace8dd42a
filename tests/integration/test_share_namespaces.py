"""lxc.namespace.share.NAME and lxc-start's --share-net|ipc|uts|pid: a container started in
another one's namespaces (or a process's) instead of new ones - the same namespace inodes
for both inits, no network device made in a joined network namespace, the hostname of a
joined uts namespace left alone - as lxc-start 5.0.2 does it; a name that is not running is
refused in one line before anything starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import LxcState

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

# What init finds: its namespaces, its hostname, its network devices.
SCRIPT = ("for ns in net uts ipc pid; do readlink /proc/self/ns/$ns; done > /out/ns; hostname > /out/host; "
          "ls /sys/class/net > /out/links")


def _init_pid(c) -> int:
    deadline = time.monotonic() + 10
    while command_client.get_state(c.lxcpath, c.name) != LxcState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pidfd = command_client.init_pidfd(c.lxcpath, c.name)
    assert pidfd is not None and pidfd >= 0
    try:
        pid = command_client.pidfd_pid(pidfd)
    finally:
        os.close(pidfd)
    assert pid is not None and pid > 0
    return pid


def _ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _seen(c) -> dict[str, str]:
    return {path.name: path.read_text() for path in (c.rootfs / "out").iterdir()}


def _boot(c, flags: tuple[str, ...], lxc: bool) -> dict[str, str]:
    out = c.rootfs / "out"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    command = ["--", "/bin/sh", "-c", SCRIPT]
    if lxc:
        result = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", *flags, *command],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    else:
        result = c.run("start", "-F", *flags, *command, timeout=60)
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    return _seen(c)


@pytest.fixture
def first(make_container):
    """Container A, running `sleep` under lxcsm in its own namespaces, hostname A's name; stopped afterwards."""
    a = make_container("busybox", ["lxc.mount.auto = proc:mixed sys:ro"])
    started = a.run("start", "-d", "--", "/bin/sleep", "600")
    assert started.returncode == 0, started.stderr
    yield a
    assert a.run("stop", "-k").returncode == 0


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_share_net_and_uts_with_a_running_container_as_under_lxc_start(make_container, first):
    b = make_container("busybox", ["lxc.mount.auto = proc:mixed sys:ro",
                                   "lxc.net.0.type = veth"])   # not made in a joined network namespace
    flags = ("--share-net", first.name, "--share-uts", first.name)
    pid = _init_pid(first)

    under_lxc = _boot(b, flags, lxc=True)
    under_lxcsm = _boot(b, flags, lxc=False)

    # The same joined namespaces, hostname and devices (each start's own ipc and pid differ).
    joined = {**under_lxcsm, "ns": under_lxcsm["ns"].split()[:2]}
    assert joined == {**under_lxc, "ns": under_lxc["ns"].split()[:2]}
    net, uts, ipc, pidns = under_lxcsm["ns"].split()
    assert (net, uts) == (_ns(pid, "net"), _ns(pid, "uts"))              # joined
    assert ipc != _ns(pid, "ipc") and pidns != _ns(pid, "pid")           # its own
    assert ipc != _ns("self", "ipc") and pidns != _ns("self", "pid")
    assert under_lxcsm["host"] == f"{first.name}\n"                      # A's hostname, not set to B's
    assert under_lxcsm["links"].split() == ["lo"]


def test_share_pid_and_ipc_keeps_b_running_in_a_s_namespaces_and_stops_cleanly(make_container, first):
    b = make_container("busybox", ["lxc.mount.auto = proc:mixed"])
    started = b.run("start", "-d", "--share-pid", first.name, "--share-ipc", first.name, "--", "/bin/sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        a_pid, b_pid = _init_pid(first), _init_pid(b)
        assert [_ns(b_pid, kind) for kind in ("pid", "ipc")] == [_ns(a_pid, kind) for kind in ("pid", "ipc")]
        assert _ns(b_pid, "net") != _ns(a_pid, "net") and _ns(b_pid, "mnt") != _ns(a_pid, "mnt")
    finally:
        assert b.run("stop", "-k").returncode == 0
    assert command_client.get_state(first.lxcpath, first.name) == LxcState.RUNNING   # A lives on


def test_share_uts_by_pid_from_the_config(make_container, first):
    pid = _init_pid(first)
    b = make_container("busybox", ["lxc.mount.auto = proc:mixed sys:ro", f"lxc.namespace.share.uts = {pid}"])

    seen = _boot(b, (), lxc=False)

    assert seen["ns"].split()[1] == _ns(pid, "uts") and seen["host"] == f"{first.name}\n"


@pytest.mark.parametrize("flags, line", [
    (("--share-net", "nosuch"), "lxc.namespace.share.net = nosuch: container nosuch is not running (in {lxcpath})"),
    (("-s", "lxc.namespace.share.user = nosuch"),
     "-s:1: lxc.namespace.share.user: lxcsm does not join another user namespace (the child would set up the "
     "container without root over its own mounts and devices); it joins net, ipc, uts, pid, cgroup"),
])
def test_what_cannot_be_joined_is_refused_in_one_line(make_container, flags, line):
    c = make_container("busybox")

    refused = c.run("start", *flags, "--", "/bin/true")

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"lxcsm: {line.format(lxcpath=c.lxcpath)}"
                                           + ("; nothing was started" if "nosuch:" in line else "")]
    assert command_client.get_state(c.lxcpath, c.name) == LxcState.STOPPED


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_share_cgroup_as_under_lxc_start(make_container, first):
    pid = _init_pid(first)
    b = make_container("busybox", ["lxc.mount.auto = proc:mixed", f"lxc.namespace.share.cgroup = {first.name}"])
    script = "readlink /proc/self/ns/cgroup > /out/cgroupns; cat /proc/self/cgroup > /out/cgroup"
    seen = {}
    for lxc in (True, False):
        (b.rootfs / "out").mkdir(exist_ok=True)
        for old in (b.rootfs / "out").iterdir():
            old.unlink()
        if lxc:
            result = subprocess.run(["lxc-start", "-n", b.name, "-P", b.lxcpath, "-F", "--", "/bin/sh", "-c", script],
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        else:
            result = b.start_fg("/bin/sh", "-c", script)
        assert result.returncode == 0, result.stderr
        assert b.monitor_exited()
        seen[lxc] = _seen(b)

    # LXC 5.0.2 joins A's cgroup namespace, then its child unshares one of its own all the same
    # (resolve_cgroup_clone_flags): init's cgroup namespace is new, rooted at its own cgroup.
    assert seen[False]["cgroup"] == seen[True]["cgroup"]
    assert set(seen[False]["cgroup"].split("\n")) - {""} == {
        line.rsplit(":", 1)[0] + ":/" for line in seen[True]["cgroup"].splitlines()}
    assert seen[False]["cgroupns"] != f"{_ns(pid, 'cgroup')}\n" != seen[True]["cgroupns"]


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_share_time_fails_under_lxc_start_and_is_refused(make_container, first):
    b = make_container("busybox", [f"lxc.namespace.share.time = {first.name}"])

    lxc = subprocess.run(["lxc-start", "-n", b.name, "-P", b.lxcpath, "-F", "--", "/bin/true"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    refused = b.start_fg("/bin/true")

    assert lxc.returncode != 0 and "Failed to inherit time namespace" in lxc.stderr
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "lxc.namespace.share.time: lxcsm does not join another time namespace (LXC 5.0.2" in refused.stderr
