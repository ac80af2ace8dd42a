"""The flight record a start writes as it runs, and `lxcsm explain-failure` reading it.

A monitor killed with SIGKILL in any of its states leaves a record that names
that state; how init ended - killed by the seccomp filter, a script whose
interpreter is missing, a fork loop stopped by pids.max - is read for its cause;
a start after a crash undoes what the dead monitor left before it begins.

The leak check of `make_container` (tests/conftest.py) runs after each test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from lxcsm.engine.linux import cgroups
from lxcsm.engine.start import undo
from lxcsm.engine.start.machine import MONITOR
from tests.integration.harness import LXCSM, monitor_pids, unique_name

pytestmark = pytest.mark.root

UNIFIED_ONLY = cgroups.unified_only(cgroups.hierarchies())
CGROUP_KEYS = "lxc.cgroup2" if UNIFIED_ONLY else "lxc.cgroup"
# An identity map: the test's rootfs, below pytest's 0700 directory, stays reachable to the
# container's root.
USER_NAMESPACE = ["lxc.idmap = u 0 0 65536", "lxc.idmap = g 0 0 65536"]


def explain(c) -> list[str]:
    result = subprocess.run([*LXCSM, "explain-failure", c.name, "-P", c.lxcpath], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def monitor_events(c) -> list[dict]:
    """The monitor's events so far, in the order it wrote them."""
    try:
        with open(os.path.join(c.lxcpath, c.name, "lxcsm-last-start.log")) as record:
            events = [json.loads(line) for line in record if line.endswith("\n")]
    except FileNotFoundError:
        return []
    return [e for e in events if e.get("side") == "monitor"]


def wait_until(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
    return found


def kill_monitor(c) -> None:
    # Just after the clone, the child still has the monitor's title until it sets its own.
    pids = wait_until(lambda: (found := monitor_pids(c.lxcpath, c.name)) and len(found) == 1 and found,
                      "one process titled as the monitor")
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: not monitor_pids(c.lxcpath, c.name), "the monitor is gone")


# How each monitor state is held for the kill: (extra config, start options, environment, what
# the record says last while held, the command).  --break-at where a breakpoint can hold the
# state; a pre-start hook in init_handler (which no breakpoint can hold), and LXCSM_HANGPOINTS in
# the ways out, aborting and stopped.
def _holding(state: str, hook: str) -> tuple[list[str], list[str], dict, str, list[str]]:
    if state in MONITOR.detours:   # entered with lxc.idmap only (sync_idmapped_mounts: and an idmapped rootfs)
        idmapped = ["lxc.rootfs.options = idmap=container"] if state == "sync_idmapped_mounts" else []
        extra = [*USER_NAMESPACE, *idmapped]
        return extra, ["--break-at", f"monitor:{state}"], {}, "paused", ["/bin/true"]
    if state == "init_handler":
        return [f"lxc.hook.pre-start = {hook}"], [], {}, "hook", ["/bin/true"]
    if state == "poll":
        return [], [], {}, "state", ["/bin/sleep", "600"]
    if state == "reboot":
        return [], ["--break-at", "reboot"], {}, "paused", ["/bin/sh", "-c", "reboot -f"]
    if state == "aborting":
        return [], [], {"LXCSM_FAILPOINTS": "monitor:spawn", "LXCSM_HANGPOINTS": "aborting"}, "state", ["/bin/true"]
    if state == "stopped":
        return [], [], {"LXCSM_HANGPOINTS": "stopped"}, "state", ["/bin/true"]
    return [], ["--break-at", f"monitor:{state}"], {}, "paused", ["/bin/true"]


@pytest.mark.parametrize("state", MONITOR.states)
def test_a_monitor_killed_in_any_state_is_explained_naming_that_state(make_container, tmp_path, state):
    hook_pid = tmp_path / "hook.pid"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho $$ > {hook_pid}\nexec sleep 600\n")
    hook.chmod(0o755)
    extra, options, env, last_event, command = _holding(state, str(hook))
    c = make_container("busybox" if state == "reboot" else "hostbind", extra=extra)
    starter = subprocess.Popen([*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, *options, "--", *command],
                               env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def held() -> bool:
            events = monitor_events(c)
            entered = [e for e in events if e["event"] == "state"]
            return bool(entered) and entered[-1]["state"] == state and events[-1]["event"] == last_event
        wait_until(held, f"the monitor holds in {state}")
        kill_monitor(c)
        starter.wait(timeout=30)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        if hook_pid.exists():   # the hook outlives the monitor that ran it
            try:
                os.kill(int(hook_pid.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass

    lines = explain(c)
    assert lines[0].startswith(f"{c.name}: the monitor died in {state}"), lines
    assert lines[0].endswith(f"; run `lxcsm cleanup {c.name}`"), lines[0]
    if state == "init_handler":
        assert f"(hook pre-start running: exec {hook} " in lines[0]
    if last_event == "paused":
        assert f"(paused at a breakpoint before monitor:{state})" in lines[0]
    shown = [line for line in lines if line.startswith("  lxcsm ")]
    assert any(" state side=monitor pid=" in line and line.endswith(f" state={state}") for line in shown), shown

    repaired = subprocess.run([*LXCSM, "cleanup", c.name, "-P", c.lxcpath], capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr
    assert explain(c)[0].endswith("; nothing it changed is left on the host")


def test_the_events_shown_for_a_failure_end_with_it_not_with_the_cleanup(make_container):
    c = make_container(extra=["lxc.mount.entry = tmpfs no/such/dir tmpfs defaults 0 0"])
    assert c.start_fg("/bin/true").returncode == 1
    lines = explain(c)
    assert lines[0].startswith(f"{c.name}: the last start failed in the child state setup_mounts at "), lines[0]
    assert "hint: the mount target no/such/dir does not exist in the container: add create=dir" in lines[1]
    shown = [line for line in lines if line.startswith("  lxcsm ")]
    assert " start failed " in shown[-1] and not any(" - undo " in line for line in shown)
    assert any(line.startswith("Then ") and "changes to the host were undone" in line for line in lines)


@pytest.fixture
def cgroup_below_the_pids_root():
    """A cgroup below the pids hierarchy's root, as every systemd host has: preflight can only tell a
    mistyped file from one only non-root cgroups have (pids.max) by looking at such a cgroup, and
    takes the file on trust when there is none.  Made by the test, removed after it."""
    made = None
    for hierarchy in cgroups.hierarchies():
        if "pids" in hierarchy.controllers and not any(e.is_dir() for e in os.scandir(hierarchy.mountpoint)):
            made = os.path.join(hierarchy.mountpoint, unique_name("probe"))
            os.mkdir(made)
    yield
    if made is not None:
        os.rmdir(made)


def test_a_refused_start_is_recorded_with_its_hint(make_container, cgroup_below_the_pids_root):
    c = make_container(extra=[f"{CGROUP_KEYS}.pids.mxa = 10"] if not UNIFIED_ONLY else
                       ["lxc.net.0.type = veth", "lxc.net.0.link = lxcsm-nobr0"])
    assert c.start_fg("/bin/true").returncode == 1
    lines = explain(c)
    assert lines[0].startswith(f"{c.name}: the last start was refused before it began, at "), lines
    if UNIFIED_ONLY:
        assert lines[1] == "hint: create the bridge first: ip link add lxcsm-nobr0 type bridge " \
                           "&& ip link set lxcsm-nobr0 up"
    else:
        assert lines[1].startswith("hint: no cgroup file is named pids.mxa: did you mean pids.max"), lines


def test_init_killed_by_the_seccomp_filter(make_container, tmp_path):
    policy = tmp_path / "policy"
    policy.write_text("2\ndenylist\nmkdir kill\nmkdirat kill\n")
    c = make_container(extra=[f"lxc.seccomp.profile = {policy}"])
    assert c.start_fg("/bin/mkdir", "/tmp/denied").returncode == 128 + signal.SIGSYS
    first = explain(c)[0]
    assert first.startswith(f"{c.name}: init was killed by SIGSYS at "), first
    assert f"the seccomp filter killed it: it made a system call that the policy ({policy}) denies" in first


def test_a_script_whose_interpreter_is_missing(make_container):
    c = make_container()
    (c.rootfs / "start.sh").write_text("#!/no/such/interpreter\necho hello\n")
    (c.rootfs / "start.sh").chmod(0o755)
    assert c.start_fg("/start.sh").returncode == 1          # exec: ENOENT, though /start.sh is there
    lines = explain(c)
    assert "the child state exec" in lines[0] and "ENOENT" in lines[0], lines
    assert "hint: /start.sh: its interpreter /no/such/interpreter (on its #! line) is missing in the container" \
        in lines
    assert c.start_fg("/bin/sh", "-c", "/start.sh").returncode == 127   # the shell's "not found"
    lines = explain(c)
    assert lines[0].startswith(f"{c.name}: init exited with status 127 at "), lines
    assert "command not found" in lines[0]
    assert "hint: /start.sh: its interpreter /no/such/interpreter (on its #! line) is missing in the container" \
        in lines


def test_a_fork_loop_stopped_by_pids_max(make_container):
    c = make_container(extra=[f"{CGROUP_KEYS}.pids.max = 4"])
    result = c.start_fg("/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; exit 3")
    assert result.returncode in (2, 3), result.stderr      # dash gives up at the first fork refused
    lines = explain(c)
    assert lines[0].startswith(f"{c.name}: init exited with status {result.returncode} at "), lines
    hit = [line for line in lines if "pids.max was hit" in line]
    assert len(hit) == 1 and "pids.events" in hit[0], lines
    assert int(hit[0].split("pids.max was hit ")[1].split()[0]) > 0


def test_a_stop_request_is_named_as_what_ended_init(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    assert c.run("stop", "-k").returncode == 0
    assert c.monitor_exited()
    first = explain(c)[0]
    assert first.startswith(f"{c.name}: init was killed by SIGKILL at "), first
    assert "a stop request (lxcsm stop / lxc-stop, served at " in first


def test_a_start_after_a_crash_undoes_what_the_dead_monitor_left_and_forgets_nothing(
        test_netns, make_container, tmp_path):
    """The journal of a monitor killed mid-start lists a device (in real life a veth with a
    random name) and something that cannot be undone; the next start undoes the one, keeps
    the other for `lxcsm cleanup` past its own clean stop, and keeps the dead one's record."""
    c = make_container(netns=test_netns.name)
    device = "lxcsm-left0"
    undoable = tmp_path / "a-directory-not-a-pid-file"
    (undoable / "inside").mkdir(parents=True)
    subprocess.run(["ip", "-n", test_netns.name, "link", "add", device, "type", "veth", "peer", "name",
                    "lxcsm-left1"], check=True)
    assert c.run("start", "--break-at", "sync_configure", "--", "/bin/true").returncode == 0
    kill_monitor(c)
    journal = os.path.join(c.lxcpath, c.name, "lxcsm-host-changes.log")
    with open(journal, "a") as left:
        left.write(json.dumps({"change": "netdev", "target": device}) + "\n")
        left.write(json.dumps({"change": "pidfile", "target": str(undoable)}) + "\n")

    again = c.start_fg("/bin/true")
    assert again.returncode == 0, again.stderr
    assert device not in test_netns.links()                    # undone before the start
    assert undo.pending(journal) == ([undo.Change("pidfile", str(undoable))], [])   # kept past a clean stop
    lines = explain(c)
    assert lines[0].startswith(f"{c.name}: init exited with status 0 at "), lines
    assert any(line.startswith(f"Before this start, a monitor of {c.name} had died") for line in lines)
    with open(os.path.join(c.lxcpath, c.name, "lxcsm-died-start.log")) as died:
        assert any(json.loads(line).get("state") == "sync_configure" for line in died)
    cleanup = subprocess.run([*LXCSM, "cleanup", c.name, "-P", c.lxcpath], capture_output=True, text=True)
    assert cleanup.returncode == 1 and f"could not undo pidfile {undoable}" in cleanup.stderr


def test_neither_a_refusal_nor_a_second_start_touches_a_running_containers_record(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    record = os.path.join(c.lxcpath, c.name, "lxcsm-last-start.log")
    with open(record) as before:
        started = before.read()
    assert c.run("start", "-s", "lxc.no.such.key=1", "--", "/bin/true").returncode == 1   # refused
    assert c.run("start", "--", "/bin/true").returncode == 0                              # already running
    with open(record) as after:
        assert after.read().startswith(started)
    assert explain(c)[0].startswith(f"{c.name} is running: this is the record of its monitor")
    assert c.run("stop", "-k").returncode == 0
