"""Many starts at once: of one container, and of fifty."""

from __future__ import annotations

import subprocess

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.integration.harness import LXCSM, monitor_pids

pytestmark = pytest.mark.root


def _spawn(c, *args: str) -> subprocess.Popen:
    action, *rest = args
    return subprocess.Popen([*LXCSM, action, "-n", c.name, "-P", c.lxcpath, *rest],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=120), p.communicate()[1]) for p in processes]


def test_many_starts_of_one_container_start_it_once(make_container):
    c = make_container()
    results = _finish([_spawn(c, "start", "--", "/bin/sleep", "600") for _ in range(8)])
    assert [code for code, _ in results] == [0] * 8, results
    told = [err for _, err in results if "already running" in err]
    assert len(told) == 7, results
    assert len(monitor_pids(c.lxcpath, c.name)) == 1
    assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING
    assert c.run("stop", "-k").returncode == 0


def test_fifty_containers_at_once(make_container):
    containers = [make_container() for _ in range(50)]
    started = _finish([_spawn(c, "start", "--", "/bin/sleep", "600") for c in containers])
    assert [code for code, _ in started] == [0] * 50, [err for code, err in started if code]
    assert all(command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING for c in containers)
    stopped = _finish([_spawn(c, "stop", "-k") for c in containers])
    assert [code for code, _ in stopped] == [0] * 50, [err for code, err in stopped if code]
    assert [c.name for c in containers if c.leaks()] == []
