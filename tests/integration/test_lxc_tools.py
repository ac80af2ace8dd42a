"""LXC's own tools drive lxcsm's containers through the command socket.

lxc-info, lxc-wait and lxc-stop speak LXC 5's command protocol to the monitor
(engine/protocol/command_socket.py); an operator's scripts that use them keep working.
tools/setup installs Debian's lxc package for these tests.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from lxcsm.engine.protocol import command_client, command_socket

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("lxc-info") is None, reason="Debian's lxc is not installed")]


def _lxc(tool: str, c, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-n", c.name, "-P", c.lxcpath, *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_lxc_info_and_lxc_wait_see_a_running_container(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    init = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value
    assert _lxc("lxc-info", c, "-s", "-H").stdout.strip() == "RUNNING"
    assert _lxc("lxc-info", c, "-p", "-H").stdout.strip() == str(init)
    assert _lxc("lxc-wait", c, "-s", "RUNNING", "-t", "5").returncode == 0
    assert _lxc("lxc-stop", c, "-k").returncode == 0
    assert _lxc("lxc-info", c, "-s", "-H").stdout.strip() == "STOPPED"
    assert c.monitor_exited() and c.leaks() == []


def test_lxc_stop_halts_with_the_configured_signal(make_container):
    c = make_container("busybox", extra=["lxc.signal.halt = SIGUSR1"])
    assert c.run("start").returncode == 0                     # busybox init, halts on SIGUSR1
    stopped = _lxc("lxc-stop", c, "-t", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.STOPPED
    assert c.monitor_exited() and c.leaks() == []


def test_lxc_attach_runs_a_command_inside(make_container):
    c = make_container()
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    attached = _lxc("lxc-attach", c, "--", "/bin/hostname")
    assert (attached.returncode, attached.stdout.strip()) == (0, c.name), attached.stderr
    assert c.run("stop", "-k").returncode == 0




def test_lxc_start_and_lxcsm_never_run_one_container_twice(make_container, lxc_pivot_removed):
    c = make_container("busybox")
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    refused = _lxc("lxc-start", c, "--", "/bin/sleep", "600")
    assert refused.returncode == 0 and "already running" in refused.stderr
    assert c.run("stop", "-k").returncode == 0

    assert _lxc("lxc-start", c, "--", "/bin/sleep", "600").returncode == 0   # now LXC's monitor has it
    try:
        again = c.run("start", "--", "/bin/true")
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        assert _lxc("lxc-stop", c, "-k").returncode == 0
    # lxc-stop returns before LXC's monitor has removed its cgroups: give it a moment.
    deadline = time.monotonic() + 10
    while c.leaks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.leaks() == []
