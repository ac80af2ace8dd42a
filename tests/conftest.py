"""pytest's hooks and fixtures; the harness behind them is tests/integration/harness.py."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid

import pytest

from fixtures import rootfs as rootfs_builders
from tests.integration.harness import (
    LXCSM,
    Container,
    IsolatedNetns,
    host_identity,
    host_mounts,
    left_behind,
    restore_host_identity,
    unique_name,
)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real namespaces, cgroups and mounts)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def start_server_mode():
    """LXCSM_TEST_START_SERVER=1: every `lxcsm start` of the session goes through a start server
    (`lxcsm serve`) of the session's own, and fails rather than start cold (LXCSM_START_SERVER=require)."""
    if os.environ.get("LXCSM_TEST_START_SERVER") != "1" or os.geteuid() != 0:
        yield None
        return
    import socket
    directory = f"/run/lxcsm-test-{uuid.uuid4().hex[:8]}"
    path = f"{directory}/start.sock"
    server = subprocess.Popen([*LXCSM, "serve", "--socket", path], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while server.poll() is None and not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(path)
        probe.close()
        os.environ.update(LXCSM_START_SOCKET=path, LXCSM_START_SERVER="require")
        yield path
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)   # the socket, if the server left it


@pytest.fixture(autouse=True)
def host_left_alone(request):
    """Around every integration test, whatever fixtures it uses: the host's hostname and the
    devices of its /dev (harness.HOST_DEVICES) as they were.  A change is put back, then fails
    the test: a kept uts namespace renamed this VM once, and an init's stdio chmod made the
    host's /dev/null 0700, failing every later user-namespace start."""
    if request.node.path.parent.name != "integration" or os.geteuid() != 0:
        yield
        return
    before = host_identity()
    yield
    changed = restore_host_identity(before)
    assert changed == {}, "the host's hostname or a device of its /dev changed (put back)"


@pytest.fixture
def make_container(tmp_path):
    """make_container(kind="hostbind"|"busybox", extra=[config lines]) -> Container."""
    made: list[Container] = []
    mounts_before = host_mounts()

    def make(kind: str = "hostbind", extra=(), name: str | None = None,
             netns: str | None = None) -> Container:
        name = name or unique_name()
        lxcpath = tmp_path / "lxc"
        root = lxcpath / name / "rootfs"
        build = rootfs_builders.make_busybox_rootfs if kind == "busybox" else rootfs_builders.make_hostbind_rootfs
        fs = build(root)
        config = rootfs_builders.write_config(lxcpath, name, fs, extra)
        container = Container(name, str(lxcpath), root, config, netns)
        made.append(container)
        return container

    yield make
    leaks = left_behind(made)
    for container in made:
        container.force_cleanup()
    mounts_after = host_mounts()
    assert leaks == {}, "a start left things behind"
    assert mounts_after == mounts_before, "the host's mount table changed"


@pytest.fixture
def lxc_pivot_removed():
    """LXC's monitor leaves an lxc.pivot cgroup in every hierarchy for later monitors; one
    that appeared during the test is removed again (rmdir only: never one in use)."""
    before = set(glob.glob("/sys/fs/cgroup/*/lxc.pivot"))
    yield
    for path in set(glob.glob("/sys/fs/cgroup/*/lxc.pivot")) - before:
        try:
            os.rmdir(path)
        except OSError:
            pass


@pytest.fixture
def test_netns():
    """An IsolatedNetns; afterwards no device but lo and its bridge may be left in it."""
    ns = IsolatedNetns(unique_name("ns"), "br0")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        subprocess.run(["ip", "-n", ns.name, "link", "add", ns.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", ns.name, "link", "set", ns.bridge, "up"], check=True)
        yield ns
        # The monitors have exited by now (make_container's teardown ran first).
        assert ns.links() == sorted(["lo", ns.bridge]), "a start left network devices behind"
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=True)
