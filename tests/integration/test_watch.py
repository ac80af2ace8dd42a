"""Watching a start: `lxcsm info` while STARTING (machines' states, the running hook with
its pid and output), hung hooks named, `lxcsm continue` printing where the start pauses
next, and every pause's plan and changes - on real containers."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time

import pytest

from tests.integration.harness import LXCSM

pytestmark = pytest.mark.root


def _hook(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _waiting_hook(tmp_path, name: str) -> tuple[str, str]:
    """A hook that says hello, then waits until the test creates its flag file."""
    flag = tmp_path / f"{name}.go"
    return _hook(tmp_path, name, f'echo "{name} is waiting"\nwhile [ ! -e {flag} ]; do sleep 0.02; done\n'), str(flag)


def _info_until(c, pattern: str, starting) -> str:
    """`lxcsm info` until its output matches `pattern` (the start runs in `starting`)."""
    deadline = time.monotonic() + 60
    while True:
        info = c.run("info").stdout
        if re.search(pattern, info):
            return info
        assert starting.poll() is None, starting.communicate()
        assert time.monotonic() < deadline, info
        time.sleep(0.02)


@pytest.mark.parametrize("kind, side, state", [
    ("mount", "child", "setup_mounts"),
    ("start-host", "monitor", "sync_cgroup_limits"),
])
def test_info_while_starting_names_the_states_and_the_running_hook(make_container, tmp_path, kind, side, state):
    hook, flag = _waiting_hook(tmp_path, f"{kind}-hook")
    c = make_container(extra=[f"lxc.hook.{kind} = {hook}"])
    starting = subprocess.Popen([*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "--", "/bin/sleep", "600"],
                                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        info = _info_until(c, r"Hook output: +\S+-hook is waiting", starting)
        assert re.search(r"State: +STARTING", info), info
        assert re.search(rf"{side.capitalize()} state: +{state} \(for [\d.]+ s\)", info), info
        assert re.search(r"Starting for: +[\d.]+ s", info), info
        if side == "child":
            assert re.search(r"Monitor state: +sync_cgroup_limits", info), info   # waiting for the child
        found = re.search(rf"Hook: +{kind} \({side} state {state}\), pid (\d+), running for [\d.]+ s: "
                          rf"exec {re.escape(hook)} ", info)
        assert found, info
        with open(f"/proc/{found.group(1)}/cmdline", "rb") as cmdline:   # the pid is the hook's shell
            assert hook.encode() in cmdline.read()
    finally:
        open(flag, "w").close()
        _out, err = starting.communicate(timeout=60)
    assert starting.returncode == 0, err
    running = c.run("info").stdout
    assert re.search(r"State: +RUNNING", running) and re.search(r"PID: +\d+", running), running
    assert "Hook" not in running and "Starting for" not in running   # lxc-info's output once it runs
    started = c.run("info", "--start").stdout
    assert re.search(r"Started in: +[\d.]+ s, running for", started), started
    assert c.run("stop", "-k").returncode == 0


def test_a_hung_hook_is_warned_about_by_state_and_pid_and_the_start_then_succeeds(make_container, tmp_path):
    hook = _hook(tmp_path, "slow-hook", "sleep 1.5\n")
    c = make_container(extra=[f"lxc.hook.mount = {hook}"])
    env = {k: v for k, v in os.environ.items() if k != "LXCSM_SYNC_TIMEOUT"}
    result = c.run("start", "-F", "-l", "WARN", "--", "/bin/true",
                   env={**env, "LXCSM_HOOK_WARN_AFTER": "0.3"})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "hook still running" in line]
    assert warnings, result.stderr
    assert "setup_mounts" in warnings[0] and "kind=mount" in warnings[0] and hook in warnings[0], warnings
    assert re.search(r"pid=\d+", warnings[0]), warnings


def test_a_slow_hook_is_not_cut_short_by_a_sync_deadline_shorter_than_it(make_container, tmp_path):
    """LXCSM_SYNC_TIMEOUT set, a hook longer than it: still the deadline (tests rely on it)."""
    hook = _hook(tmp_path, "slow-hook", "sleep 2\n")
    c = make_container(extra=[f"lxc.hook.mount = {hook}"])
    result = c.run("start", "-F", "--", "/bin/true", env={**os.environ, "LXCSM_SYNC_TIMEOUT": "0.5"})
    assert result.returncode != 0
    assert "waiting for child to send cgroup-limits (LXCSM_SYNC_TIMEOUT)" in result.stderr, result.stderr


def test_continue_prints_where_the_start_pauses_next_with_its_plan_and_changes(make_container):
    c = make_container(extra=["lxc.uts.name = watched"])
    paused = c.run("start", "--break-at", "child:setup_rootfs", "--break-at", "child:setup_hostname",
                   "--", "/bin/sleep", "600")
    assert paused.returncode == 0, paused.stderr
    assert "paused before the child state setup_rootfs" in paused.stderr
    assert "child:setup_rootfs will:" in paused.stderr
    assert "changed since the monitor's own view:" in paused.stderr
    assert re.search(r"namespaces \+\d+:\n(      \+ \w+\n)*      \+ mnt", paused.stderr), paused.stderr

    resumed = c.run("continue")
    assert resumed.returncode == 0, resumed.stderr
    assert "paused before the child state setup_hostname" in resumed.stderr, resumed.stderr
    assert "child:setup_hostname will:\n    - sethostname(watched)" in resumed.stderr, resumed.stderr
    assert "changed since the previous pause:" in resumed.stderr
    assert re.search(rf"mounts \+\d+:(\n      \+ .*)*\n      \+ {re.escape(str(c.rootfs))} ", resumed.stderr), \
        resumed.stderr   # setup_rootfs mounted the rootfs in between

    last = c.run("continue")
    assert last.returncode == 0, last.stderr
    assert re.search(rf"{c.name}: RUNNING \(the start took [\d.]+ s\)", last.stderr), last.stderr
    assert c.run("stop", "-k").returncode == 0
