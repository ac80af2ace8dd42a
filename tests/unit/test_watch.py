"""Watching a start without a container: the status kept from events, the status query
answered from inside a sync wait, the hung-hook warning, and a pause's list of changes."""

from __future__ import annotations

import os
import signal
import threading
import uuid

from lxcsm import hooks
from lxcsm.engine.protocol import command_client, command_server, sync
from lxcsm.engine.protocol.command_server import CommandServer
from lxcsm.engine.protocol.command_socket import Cmd
from lxcsm.engine.protocol.start_status import StartStatus, decode
from lxcsm.engine.start import breakpoints


def event(name: str, at: float, side: str = "monitor", **fields) -> dict:
    return {"event": name, "time": at, "side": side, **fields}


def test_status_follows_both_machines_and_the_running_hook():
    status = StartStatus()
    for e in (event("state", 100.0, state="init_handler"),
              event("state", 100.5, state="sync_cgroup_limits"),
              event("state", 100.6, "child", state="setup_mounts"),
              event("hook", 100.7, "child", category="setup_mounts", kind="mount", command="exec /h", hook_pid=42),
              event("hook output", 100.8, "child", line="one"),
              event("hook output", 100.9, "monitor", line="not the child hook's")):
        status.observe(e)
    now = status.snapshot("STARTING", now=103.0)
    assert now["start_for"] == 3.0 and now["running_for"] is None
    assert now["machines"] == {"monitor": {"state": "sync_cgroup_limits", "for": 2.5},
                               "child": {"state": "setup_mounts", "for": 2.4}}
    assert now["hook"] == {"side": "child", "state": "setup_mounts", "kind": "mount", "command": "exec /h",
                           "pid": 42, "for": 2.3, "output": ["one"]}

    status.observe(event("hook ended", 101.0, "child", kind="mount", status=0))
    status.observe(event("state", 102.0, state="poll"))
    later = status.snapshot("RUNNING", now=104.0)
    assert later["hook"] is None and later["start_for"] == 2.0 and later["running_for"] == 2.0


def test_a_new_boot_forgets_the_old_child_and_pauses_are_counted():
    status = StartStatus()
    status.observe(event("state", 1.0, "child", state="exec"))
    status.observe(event("paused", 1.5, before="child:exec"))
    assert status.snapshot("STARTING", now=2.0)["paused"] == "child:exec"
    status.observe(event("resumed", 1.6, before="child:exec"))
    status.observe(event("state", 3.0, state="init_handler"))
    snap = status.snapshot("STARTING", now=4.0)
    assert snap["machines"] == {"monitor": {"state": "init_handler", "for": 1.0}}
    assert snap["paused"] is None and snap["pauses"] == 1


def test_a_child_hook_pid_that_cannot_be_found_on_the_host_stays_as_it_was():
    status = StartStatus()
    gone = {"event": "hook", "time": 1.0, "side": "child", "pid": 2 ** 22 + 1, "hook_pid": 7, "kind": "start"}
    status.observe(gone)
    assert gone["hook_pid"] == 7 and gone["hook_pid_inside"] == 7


class FakeConfig:
    signal_stop = signal.SIGKILL

    def get_item(self, key: str):
        raise KeyError(key)


def test_the_status_query_is_answered_from_inside_a_sync_wait_without_a_deadline():
    lxcpath, name = f"/tmp/lxcsm-unit-{uuid.uuid4().hex}", f"ct-{uuid.uuid4().hex[:8]}"
    server = CommandServer(command_server.bind(lxcpath, name), name, FakeConfig(), lxcpath=None)
    server.start_status.observe(event("state", 1.0, state="sync_configure"))
    monitor_sock, child_sock = sync.socketpair()
    end = sync.MonitorEnd(monitor_sock, None, None, on_child_log=lambda e: None, serve=server)
    asked: dict = {}

    def client():   # asks while the monitor waits, then lets the child go on
        asked["reply"] = command_client.call(lxcpath, name, Cmd.START_STATUS)
        child_sock.send(bytes([sync.SyncMsg.CONFIGURE]))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        end._wait(sync.SyncMsg.CONFIGURE, lambda e: None)
    finally:
        thread.join(10)
        server.close()
        monitor_sock.close()
        child_sock.close()
    reply = asked["reply"]
    assert reply.ret == 0
    status = decode(reply.data)
    assert status["state"] == "STARTING" and status["machines"]["monitor"]["state"] == "sync_configure"


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def _add(self, level, event, fields):
        self.events.append((level, event, fields))

    def trace(self, event, **fields):
        self._add("trace", event, fields)

    def debug(self, event, **fields):
        self._add("debug", event, fields)

    def warn(self, event, **fields):
        self._add("warn", event, fields)


def test_a_hook_still_running_after_the_warning_time_is_named_with_its_pid(monkeypatch):
    monkeypatch.setenv("LXCSM_HOOK_WARN_AFTER", "0.05")
    log = Log()
    status, lines = hooks._run_shell("echo first; sleep 0.5; echo second", dict(os.environ), "start", log)
    assert status == 0 and lines == ["first", "second"]
    started = [fields for level, e, fields in log.events if e == "hook"]
    warned = [fields for level, e, fields in log.events if e == "hook still running"]
    assert started and warned and all(level == "warn" for level, e, _ in log.events if e == "hook still running")
    assert warned[0]["hook_pid"] == started[0]["hook_pid"] and warned[0]["kind"] == "start"
    # The lines were logged as they came: the first before any warning.
    order = [e for _level, e, _fields in log.events]
    assert order.index("hook output") < order.index("hook still running")


def test_no_warning_when_switched_off(monkeypatch):
    monkeypatch.setenv("LXCSM_HOOK_WARN_AFTER", "0")
    log = Log()
    hooks._run_shell("sleep 0.2", dict(os.environ), "start", log)
    assert not [e for _level, e, _fields in log.events if e == "hook still running"]
    monkeypatch.setenv("LXCSM_HOOK_WARN_AFTER", "soon")
    assert hooks.warn_after() == hooks.WARN_AFTER


def test_changes_between_two_pauses_list_what_came_and_went():
    View = breakpoints.View
    before = View(frozenset({"/ (ext4 /dev/vda)"}), frozenset(), frozenset({"lo", "eth0"}), frozenset())
    after = View(frozenset({"/ (ext4 /dev/vda)", "/dev (tmpfs none)"}), frozenset({"/sys/fs/cgroup/x"}),
                 frozenset({"lo"}), frozenset({"mnt"}))
    lines = breakpoints.changes(before, after)
    assert lines == ["    namespaces +1:", "      + mnt", "    cgroups +1:", "      + /sys/fs/cgroup/x",
                     "    network links -1:", "      - eth0", "    mounts +1:", "      + /dev (tmpfs none)"]
    assert breakpoints.changes(after, after) == ["    nothing"]
    many = View(frozenset(f"/m{i} (tmpfs none)" for i in range(20)), frozenset(), frozenset(), frozenset())
    listed = breakpoints.changes(View(frozenset(), frozenset(), frozenset(), frozenset()), many)
    assert listed[0] == "    mounts +20:" and listed[-1] == "      ... and 8 more"
