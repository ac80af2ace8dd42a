"""Every way a start can break, and proof that each one cleans up.

The `make_container` fixture's leak check (tests/conftest.py) runs after each
test: no cgroups, monitor process, command socket or host mount may remain.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from lxcsm.engine.start.machine import TABLES
from tests.integration.harness import LXCSM, monitor_pids

pytestmark = pytest.mark.root

# A state that is only entered on some paths needs a start that takes that path.
EARLIER_FAILURE = {"monitor": "monitor:spawn", "child": "child:setup_mounts"}
# The user namespace's states (the tables' detours) are entered only with lxc.idmap; an identity
# map keeps the test's rootfs, below pytest's 0700 directory, reachable to the container's root.
USER_NAMESPACE = ["lxc.idmap = u 0 0 65536", "lxc.idmap = g 0 0 65536"]
EVERY_STATE = [(side, state) for side, table in TABLES.items() for state in table.states]


@pytest.mark.parametrize("side,state", EVERY_STATE, ids=[f"{s}:{t}" for s, t in EVERY_STATE])
def test_a_failure_in_any_state_ends_the_start_and_leaves_nothing(make_container, side, state):
    failpoints = [f"{side}:{state}"]
    if state == "aborting":
        failpoints.insert(0, EARLIER_FAILURE[side])   # aborting is only entered after a failure
    if state == "reboot":
        c = make_container("busybox")
        command = ["/bin/sh", "-c", "if [ -e /booted ]; then poweroff -f; else touch /booted; reboot -f; fi"]
    elif state in ("write_id_maps", "become_userns_root"):
        c = make_container(extra=USER_NAMESPACE)
        command = ["/bin/true"]
    elif state == "sync_idmapped_mounts":   # both sides' are entered for an idmapped rootfs only
        c = make_container(extra=[*USER_NAMESPACE, "lxc.rootfs.options = idmap=container"])
        command = ["/bin/true"]
    else:
        c = make_container()
        command = ["/bin/true"]
    env = {**os.environ, "LXCSM_FAILPOINTS": ",".join(failpoints)}
    result = c.run("start", "-F", "--", *command, env=env)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"failpoint: {side} state {state}" in result.stderr or \
        f"failpoint: {EARLIER_FAILURE.get(side, '').replace(':', ' state ')}" in result.stderr, result.stderr
    assert c.leaks() == []
    assert not os.path.exists(os.path.join(c.lxcpath, c.name, "lxcsm-host-changes.log"))


def _running(c, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while command_client.get_state(c.lxcpath, c.name) != command_socket.LxcState.RUNNING:
        assert time.monotonic() < deadline, "the container never reached RUNNING"
        time.sleep(0.02)
    return command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value


def _monitor_pid(c) -> int:
    pids = monitor_pids(c.lxcpath, c.name)
    assert len(pids) == 1, pids
    return pids[0]


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_killed_monitor_takes_init_along_and_cleanup_repairs(make_container):
    c = make_container()
    assert c.run("start", "-p", str(c.rootfs.parent / "monitor.pid"), "--", "/bin/sleep", "600").returncode == 0
    init = _running(c)
    monitor = _monitor_pid(c)
    os.kill(monitor, signal.SIGKILL)
    assert _gone(monitor) and _gone(init)                       # PR_SET_PDEATHSIG
    assert c.leaks() and all(leak.startswith("cgroup ") for leak in c.leaks())
    journal = os.path.join(c.lxcpath, c.name, "lxcsm-host-changes.log")
    assert os.path.exists(journal)

    repaired = subprocess.run([*LXCSM, "cleanup", c.name, "-P", c.lxcpath], capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr
    assert c.leaks() == []
    assert not os.path.exists(journal) and not (c.rootfs.parent / "monitor.pid").exists()


def test_next_start_after_a_killed_monitor_replaces_its_stale_cgroups(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    init = _running(c)
    os.kill(_monitor_pid(c), signal.SIGKILL)
    assert _gone(init)
    again = c.start_fg("/bin/true")
    assert again.returncode == 0, again.stderr
    assert c.leaks() == []


def test_cleanup_refuses_while_the_container_runs(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    refused = subprocess.run([*LXCSM, "cleanup", c.name, "-P", c.lxcpath], capture_output=True, text=True)
    assert refused.returncode == 1 and "is running" in refused.stderr
    assert c.run("stop", "-k").returncode == 0


def test_killed_init_ends_the_container(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    init = _running(c)
    monitor = _monitor_pid(c)
    os.kill(init, signal.SIGKILL)
    assert _gone(monitor)
    assert c.leaks() == []


def test_child_killed_between_two_sync_steps(make_container):
    c = make_container()
    paused = c.run("start", "--break-at", "child:setup_mounts", "--", "/bin/true")
    child = int(re.search(r"child pid (\d+)", paused.stderr).group(1))
    monitor = _monitor_pid(c)
    os.kill(child, signal.SIGKILL)
    assert _gone(monitor)
    assert c.leaks() == []


def test_a_silent_child_times_out_naming_the_state_and_sequence(make_container, tmp_path):
    c = make_container()
    log = tmp_path / "log"
    env = {**os.environ, "LXCSM_SYNC_TIMEOUT": "2"}
    paused = c.run("start", "--break-at", "child:configure", "-o", str(log), "--", "/bin/true", env=env)
    child = int(re.search(r"child pid (\d+)", paused.stderr).group(1))
    os.kill(child, signal.SIGSTOP)       # alive but silent: only a deadline can end the wait
    monitor = _monitor_pid(c)
    assert c.run("continue").returncode == 0   # it waits for what comes next: here, the monitor's end
    assert _gone(monitor, timeout=60), "the monitor hung on a silent child"
    text = log.read_text()
    assert re.search(r"failed_state=sync_configure .*timed out after 2s waiting for child to send configure",
                     text), text
    assert c.leaks() == []
