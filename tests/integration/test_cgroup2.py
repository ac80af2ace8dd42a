"""cgroup2 on either layout, and the lxc.cgroup.dir* / lxc.cgroup.relative keys.

The eBPF device program and cgroup.kill need only a cgroup2 hierarchy, which a hybrid host
has too (at /sys/fs/cgroup/unified, without controllers): they are tested on every host.
Limits and delegation depend on the layout: a cgroup2-only host (tools/vm's guest) takes
lxc.cgroup2.* and hands controllers down through cgroup.subtree_control; a host with v1
controllers takes lxc.cgroup.* - each ignores the other's keys, as LXC does.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time

import pytest

from lxcsm.engine.linux import cgroup_devices, cgroups
from tests.integration.harness import LXCSM, unique_name

pytestmark = pytest.mark.root

FOUND = cgroups.hierarchies()
UNIFIED = next((h for h in FOUND if h.version == 2), None)
UNIFIED_ONLY = cgroups.unified_only(FOUND)
LAYOUT = "cgroup2 only" if UNIFIED_ONLY else "v1 controllers"
needs_cgroup2 = pytest.mark.skipif(UNIFIED is None, reason="no cgroup2 hierarchy mounted on this host")
needs_unified_only = pytest.mark.skipif(not UNIFIED_ONLY, reason="the host has v1 controllers: LXC applies "
                                        "lxc.cgroup.* there (tested by test_cgroup_limits.py)")
needs_v1 = pytest.mark.skipif(UNIFIED_ONLY, reason="a cgroup2-only host has no v1 controllers")


@pytest.fixture
def cgroup2_dir():
    """A cgroup2 directory of the test's own (a leaf, with no controllers), removed after."""
    path = os.path.join(UNIFIED.home, unique_name("cg2"))
    os.mkdir(path)
    yield path
    cgroups.remove(path)


def _opens_in(cgroup: str, attempts: list[tuple[str, int]]) -> list[str]:
    """In a child moved into `cgroup`: "ok" or the errno name of each open(path, flags)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        try:
            os.close(read)
            cgroups.attach(cgroup, os.getpid())
            results = []
            for path, flags in attempts:
                try:
                    os.close(os.open(path, flags))
                    results.append("ok")
                except OSError as err:
                    results.append(errno.errorcode[err.errno])
            os.write(write, " ".join(results).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return text.split()


NULL_R, NULL_W, ZERO_R = ("/dev/null", os.O_RDONLY), ("/dev/null", os.O_WRONLY), ("/dev/zero", os.O_RDONLY)


@needs_cgroup2
@pytest.mark.parametrize(("rules", "expected"), [
    ([("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")], ["ok", "ok", "EPERM"]),
    ([("devices.allow", "a"), ("devices.deny", "c 1:5 rwm")], ["ok", "ok", "EPERM"]),
    ([("devices.deny", "a"), ("devices.allow", "c 1:3 r")], ["ok", "EPERM", "EPERM"]),
    ([("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"), ("devices.deny", "c 1:3 rwm")],
     ["EPERM", "EPERM", "EPERM"]),
    ([("devices.deny", "a"), ("devices.allow", "/dev/zero r")], ["EPERM", "EPERM", "ok"]),
], ids=["deny-all-allow-null", "allow-all-deny-zero", "read-only-null", "flipped-back", "by-path"])
def test_the_device_program_decides_every_open_in_the_cgroup(cgroup2_dir, rules, expected):
    assert _opens_in(cgroup2_dir, [NULL_R, NULL_W, ZERO_R]) == ["ok", "ok", "ok"]   # no program yet
    cgroup_devices.apply(cgroup_devices.device_list(rules), cgroup2_dir)
    assert _opens_in(cgroup2_dir, [NULL_R, NULL_W, ZERO_R]) == expected


@needs_cgroup2
def test_the_device_program_holds_below_the_cgroup_and_ends_with_it(cgroup2_dir):
    cgroup_devices.apply(cgroup_devices.device_list([("devices.deny", "a")]), cgroup2_dir)
    inner = os.path.join(cgroup2_dir, "inner")
    os.mkdir(inner)
    assert _opens_in(inner, [NULL_R]) == ["EPERM"]
    os.rmdir(inner)
    cgroups.remove(cgroup2_dir)
    os.mkdir(cgroup2_dir)   # the same name, a new cgroup: no program on it
    assert _opens_in(cgroup2_dir, [NULL_R]) == ["ok"]


@needs_cgroup2
def test_removing_a_cgroup2_kills_what_is_left_in_it(cgroup2_dir):
    if not os.path.exists(os.path.join(cgroup2_dir, "cgroup.kill")):
        pytest.skip("this kernel has no cgroup.kill (Linux < 5.14)")
    os.mkdir(os.path.join(cgroup2_dir, "sub"))
    pids = []
    for where in (cgroup2_dir, os.path.join(cgroup2_dir, "sub")):
        pid = os.fork()
        if pid == 0:   # pragma: no cover - the child
            cgroups.attach(where, os.getpid())
            signal.pause()
            os._exit(0)
        pids.append(pid)
    deadline = time.monotonic() + 30
    while len(cgroups.members(cgroup2_dir)) + len(cgroups.members(os.path.join(cgroup2_dir, "sub"))) < 2:
        assert time.monotonic() < deadline, "the children never entered the cgroup"
        time.sleep(0.01)
    # Reaped as they die, as init reaps a container's orphans: a zombie keeps a cgroup busy.
    statuses: list[int] = []
    reaper = threading.Thread(target=lambda: statuses.extend(os.waitpid(pid, 0)[1] for pid in pids))
    reaper.start()
    try:
        cgroups.remove(cgroup2_dir, patience=60)
    finally:
        if reaper.is_alive():   # remove failed: end the children ourselves
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        reaper.join()
    assert not os.path.exists(cgroup2_dir)
    assert [os.WIFSIGNALED(s) and os.WTERMSIG(s) for s in statuses] == [signal.SIGKILL, signal.SIGKILL]


# --- containers --------------------------------------------------------------------


def _running(c):
    """Start `c` detached with sleep as init; its payload and monitor dirs are then the test's to read."""
    result = c.run("start", "-d", "--", "/bin/sleep", "1000", timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def _stop(c) -> None:
    result = c.run("stop", "-k", timeout=120)
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited(timeout=60)


def _remove_dirs(relative: str) -> None:
    """Remove what a test's lxc.cgroup.dir* made (LXC leaves the directories on the way), in every hierarchy."""
    for hierarchy in cgroups.hierarchies():
        top = os.path.join(hierarchy.home, relative.split("/")[0])
        if not os.path.isdir(top):
            continue
        for below, dirs, _files in os.walk(top, topdown=False):
            for name in dirs:
                os.rmdir(os.path.join(below, name))
        os.rmdir(top)


@needs_unified_only
def test_cgroup2_limits_are_written_to_the_payload_cgroup(make_container):
    c = make_container(extra=["lxc.cgroup2.pids.max = 20", "lxc.cgroup2.memory.max = 64M"])
    _running(c)
    try:
        payload = os.path.join(UNIFIED.home, f"lxc.payload.{c.name}")
        with open(os.path.join(payload, "pids.max")) as pids, open(os.path.join(payload, "memory.max")) as memory:
            assert (pids.read().strip(), memory.read().strip()) == ("20", str(64 * 1024 * 1024))
        assert len(cgroups.members(payload)) == 1          # init, started straight into it
        monitor = os.path.join(UNIFIED.home, f"lxc.monitor.{c.name}")
        assert len(cgroups.members(monitor)) == 1
        with open(os.path.join(UNIFIED.home, "cgroup.subtree_control")) as subtree:
            assert {"memory", "pids"} <= set(subtree.read().split())
    finally:
        _stop(c)


@needs_unified_only
def test_the_pids_limit_holds_inside(make_container):
    c = make_container(extra=["lxc.cgroup2.pids.max = 5"])
    # init is the shell: the sixth process cannot be forked (sh gives up there); when init
    # exits, the pid namespace ends and takes the sleeps along.
    script = "i=0; while [ $i -lt 12 ]; do sleep 30 & i=$((i+1)); echo $i; done"
    result = c.start_fg("/bin/sh", "-c", script, timeout=180)
    assert "fork" in result.stderr.lower() or "resource temporarily unavailable" in result.stderr.lower(), \
        result.stderr
    assert 1 <= len(result.stdout.split()) < 5, result.stdout


@needs_unified_only
def test_cgroup2_device_rules_become_a_device_program(make_container):
    c = make_container(extra=["lxc.cgroup2.devices.deny = a", "lxc.cgroup2.devices.allow = c 1:3 rwm"])
    script = ("echo x > /dev/null && echo null-ok; "
              "head -c1 /dev/zero >/dev/null 2>&1 && echo zero-ok || echo zero-denied; ls /dev/zero")
    result = c.start_fg("/bin/sh", "-c", script, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["null-ok", "zero-denied", "/dev/zero"]


@pytest.mark.parametrize("family", ["lxc.cgroup", "lxc.cgroup2"])
def test_the_other_layouts_keys_are_ignored_with_a_warning(make_container, tmp_path, family):
    if (family == "lxc.cgroup2") == UNIFIED_ONLY:
        pytest.skip(f"{family}.* applies on this host ({LAYOUT})")
    key = "pids.max" if family == "lxc.cgroup2" else "memory.limit_in_bytes"
    c = make_container(extra=[f"{family}.{key} = 20"])
    log = tmp_path / "start.log"
    result = c.start_fg("/bin/true", options=("-l", "WARN", "-o", str(log)), timeout=180)
    assert result.returncode == 0, result.stderr
    assert f"{family}.* ignored on this host" in log.read_text()


def test_cgroup_dir_puts_monitor_and_payload_below_it(make_container):
    c = make_container()
    top = unique_name("dir")
    with open(c.config, "a") as config:
        config.write(f"lxc.cgroup.dir = {top}/machines\n")
    try:
        _running(c)
        try:
            for hierarchy in cgroups.hierarchies():
                below = os.path.join(hierarchy.home, top, "machines")
                assert len(cgroups.members(os.path.join(below, f"lxc.payload.{c.name}"))) == 1, hierarchy
                assert len(cgroups.members(os.path.join(below, f"lxc.monitor.{c.name}"))) == 1, hierarchy
        finally:
            _stop(c)
        for hierarchy in cgroups.hierarchies():
            # The monitor parked in lxc.pivot there, as LXC's does; both cgroups are gone.
            assert sorted(e.name for e in os.scandir(os.path.join(hierarchy.home, top, "machines"))
                          if e.is_dir()) == ["lxc.pivot"]
    finally:
        _remove_dirs(top)


def test_container_inner_holds_the_processes_and_the_container_dir_the_limits(make_container):
    top = unique_name("dir")
    limit = "lxc.cgroup2.pids.max = 30" if UNIFIED_ONLY else "lxc.cgroup.pids.max = 30"
    c = make_container(extra=[f"lxc.cgroup.dir.container = {top}/ct", f"lxc.cgroup.dir.monitor = {top}/mon",
                              "lxc.cgroup.dir.container.inner = ns", limit])
    try:
        _running(c)
        try:
            for hierarchy in cgroups.hierarchies():
                ct = os.path.join(hierarchy.home, top, "ct")
                assert cgroups.members(ct) == [], hierarchy
                assert len(cgroups.members(os.path.join(ct, "ns"))) == 1, hierarchy
                assert len(cgroups.members(os.path.join(hierarchy.home, top, "mon"))) == 1, hierarchy
                if "pids" in hierarchy.controllers or (UNIFIED_ONLY and hierarchy.version == 2):
                    with open(os.path.join(ct, "pids.max")) as pids:
                        assert pids.read().strip() == "30"
            init = int(cgroups.members(os.path.join(FOUND[0].home, top, "ct", "ns"))[0])
            with open(f"/proc/{init}/cgroup") as seen:   # read from the host: the full path
                assert f"/{top}/ct/ns" in seen.read()
        finally:
            _stop(c)
        for hierarchy in cgroups.hierarchies():
            assert not os.path.exists(os.path.join(hierarchy.home, top, "ct"))
            assert not os.path.exists(os.path.join(hierarchy.home, top, "mon"))
    finally:
        _remove_dirs(top)


@pytest.mark.parametrize(("lines", "message"), [
    (("lxc.cgroup.dir = x", "lxc.cgroup.dir.monitor = m", "lxc.cgroup.dir.container = c"), "cannot be combined"),
    (("lxc.cgroup.dir.container = c",), "must both be set"),
], ids=["dir-and-explicit", "container-alone"])
def test_cgroup_dir_combinations_lxc_refuses_fail_the_start_cleanly(make_container, lines, message):
    c = make_container(extra=list(lines))
    result = c.start_fg("/bin/true", timeout=120)
    assert result.returncode == 1
    assert message in result.stderr and "lxc.cgroup.dir" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@needs_v1
def test_relative_puts_the_cgroups_below_the_one_we_run_in(make_container):
    c = make_container(extra=["lxc.cgroup.relative = 1"])
    _running(c)
    try:
        for hierarchy in cgroups.hierarchies():
            assert len(cgroups.members(os.path.join(hierarchy.started_in, f"lxc.payload.{c.name}"))) == 1
    finally:
        _stop(c)


@needs_unified_only
def test_relative_from_a_cgroup_with_processes_is_the_leaf_rule_and_says_so(make_container):
    """cgroup2 lets a cgroup hand controllers down only while no process is in it: started
    below our own cgroup (which holds this test), the controllers cannot be enabled."""
    if not os.path.exists(os.path.join(UNIFIED.started_in, "cgroup.controllers")) or \
            not open(os.path.join(UNIFIED.started_in, "cgroup.controllers")).read().split():
        pytest.skip("our own cgroup has no controllers to hand down")
    c = make_container(extra=["lxc.cgroup.relative = 1"])
    result = c.start_fg("/bin/true", timeout=120)
    assert result.returncode == 1
    assert "no-internal-processes" in result.stderr, result.stderr
    assert "systemd-run --scope -p Delegate=yes" in result.stderr
    assert "Traceback" not in result.stderr


@needs_cgroup2
def test_processes_left_in_the_container_cgroup_are_killed_at_stop(make_container, tmp_path):
    """A container in the host's pid namespace leaves its background processes behind when
    init exits; removing its cgroups kills them (cgroup.kill), so nothing outlives it."""
    if not os.path.exists(os.path.join(UNIFIED.home, "cgroup.kill")) and UNIFIED.home != UNIFIED.mountpoint:
        pytest.skip("this kernel has no cgroup.kill (Linux < 5.14)")
    c = make_container(extra=["lxc.namespace.keep = pid"])
    log = tmp_path / "start.log"
    result = c.start_fg("/bin/sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
                        options=("-l", "TRACE", "-o", str(log)), timeout=180)
    assert result.returncode == 0, result.stderr
    (pid,) = (int(word) for word in result.stdout.split())
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}"):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break   # killed, not yet reaped by its new parent
        except FileNotFoundError:
            break
        undo = [line for line in log.read_text().splitlines() if "undo" in line]
        assert time.monotonic() < deadline, f"the container's sleep (pid {pid}) outlived it: " + "\n".join(undo)
        time.sleep(0.05)


@needs_unified_only
def test_a_cgroup_without_the_controllers_asked_for_says_how_to_get_them(make_container):
    """Started (lxc.cgroup.relative) from a cgroup whose parent hands it no controllers - a
    session scope systemd made without Delegate=yes - a cgroup2 limit cannot be set: the error
    names the controller and the systemd-run line that gives a delegated cgroup."""
    outer = os.path.join(UNIFIED.home, unique_name("nodelegate"))
    os.mkdir(outer)
    leaf = os.path.join(outer, "session.scope")
    os.mkdir(leaf)
    try:
        c = make_container(extra=["lxc.cgroup.relative = 1", "lxc.cgroup2.pids.max = 20"])
        command = " ".join(["exec", *LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/true"])
        result = subprocess.run(["sh", "-c", f"echo $$ > {leaf}/cgroup.procs && {command}"],
                                capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert result.returncode == 1, result.stderr
        assert "'pids' is not enabled" in result.stderr, result.stderr
        assert "systemd-run --scope -p Delegate=yes" in result.stderr
        assert "Traceback" not in result.stderr
        assert os.listdir(leaf) and not [d for d in os.listdir(leaf) if d.startswith("lxc.")]
    finally:
        cgroups.remove(outer)
