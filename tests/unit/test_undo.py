"""engine/start/undo.py: the UndoLog records changes and unwinds them newest first."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from lxcsm.engine.start import undo as undo_module
from lxcsm.engine.start.undo import Change, UndoLog


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def trace(self, event, **fields):
        self.events.append(("trace", event, fields))

    def error(self, event, **fields):
        self.events.append(("error", event, fields))


@pytest.fixture
def undone(monkeypatch):
    """Replace the UNDO table with recording fakes; kinds 'a', 'b', 'c' and a failing 'broken'."""
    calls: list[Change] = []

    def fake(change):
        calls.append(change)

    def broken(change):
        calls.append(change)
        raise PermissionError(errno.EACCES, "Permission denied", change.target)

    monkeypatch.setattr(undo_module, "UNDO", {"a": fake, "b": fake, "c": fake, "broken": broken})
    return calls


def test_unwinds_newest_first(undone):
    undo = UndoLog()
    undo.record("a", "first")
    undo.record("b", 2)
    undo.record("c", "third", handle="live")
    log = Log()
    assert undo.unwind(log) == []
    assert [(c.kind, c.target) for c in undone] == [("c", "third"), ("b", "2"), ("a", "first")]
    assert undone[0].handle == "live"
    assert undo.changes == []
    assert [(level, event, fields) for level, event, fields in log.events] == [
        ("trace", "undo", {"kind": "c", "target": "third"}),
        ("trace", "undo", {"kind": "b", "target": "2"}),
        ("trace", "undo", {"kind": "a", "target": "first"}),
    ]


def test_unwinding_twice_undoes_nothing_twice(undone):
    undo = UndoLog()
    undo.record("a", "x")
    undo.unwind(Log())
    undo.unwind(Log())
    assert len(undone) == 1


def test_keeps_going_past_a_failing_undo_and_returns_its_text(undone):
    undo = UndoLog()
    undo.record("a", "oldest")
    undo.record("broken", "/sys/fs/cgroup/lxc.payload.x")
    undo.record("c", "newest")
    log = Log()
    failures = undo.unwind(log)
    assert [c.target for c in undone] == ["newest", "/sys/fs/cgroup/lxc.payload.x", "oldest"]
    assert failures == ["undo broken /sys/fs/cgroup/lxc.payload.x: "
                        "[Errno 13] Permission denied: '/sys/fs/cgroup/lxc.payload.x'"]
    errors = [(event, fields) for level, event, fields in log.events if level == "error"]
    assert errors == [("undo failed", {"kind": "broken", "target": "/sys/fs/cgroup/lxc.payload.x",
                                       "error": "[Errno 13] Permission denied: '/sys/fs/cgroup/lxc.payload.x'"})]
    traced = [fields["target"] for level, event, fields in log.events if level == "trace"]
    assert traced == ["newest", "oldest"]     # a failed undo is not traced as done
    assert undo.changes == []


def test_every_failure_is_returned_in_unwind_order(undone):
    undo = UndoLog()
    undo.record("broken", "one")
    undo.record("a", "ok")
    undo.record("broken", "two")
    failures = undo.unwind(Log())
    assert [f.split(":")[0] for f in failures] == ["undo broken two", "undo broken one"]
    assert len(undone) == 3


def test_records_only_known_kinds(undone):
    undo = UndoLog()
    with pytest.raises(AssertionError):
        undo.record("no-such-kind", "x")
    assert undo.changes == []


def test_real_table_knows_the_kinds_the_states_record():
    assert set(undo_module.UNDO) == {"child", "cgroup", "cgroup_entered", "command_socket", "kept_fd",
                                 "netdev", "pidfile"}
    undo = UndoLog()
    for kind in undo_module.UNDO:
        undo.record(kind, "t")
    assert [c.kind for c in undo.changes] == list(undo_module.UNDO)


def test_change_equality_ignores_the_handle():
    assert Change("child", "12", handle=3) == Change("child", "12", handle=4)
    assert Change("child", "12") != Change("cgroup", "12")


def test_pidfile_undo_unlinks_and_tolerates_a_missing_file(tmp_path):
    pidfile = tmp_path / "pid"
    pidfile.write_text("1\n")
    undo = UndoLog()
    undo.record("pidfile", pidfile)
    undo.record("pidfile", pidfile)          # the second unwind finds it gone
    assert undo.unwind(Log()) == []
    assert not pidfile.exists()


def test_command_socket_undo_closes_its_handle():
    a, b = socket.socketpair()
    try:
        undo = UndoLog()
        undo.record("command_socket", "ct", handle=a)
        assert undo.unwind(Log()) == []
        assert a.fileno() == -1
        assert b.recv(1) == b""              # the peer sees end-of-file
    finally:
        a.close()
        b.close()


def test_cgroup_undo_removes_the_directory(tmp_path):
    # cgroups.remove is rmdir with patience for EBUSY; a plain empty directory stands in
    d = tmp_path / "lxc.payload.x"
    d.mkdir()
    undo = UndoLog()
    undo.record("cgroup", d)
    undo.record("cgroup", tmp_path / "already-gone")
    assert undo.unwind(Log()) == []
    assert not d.exists()


def test_child_undo_kills_and_reaps():
    pid = os.fork()
    if pid == 0:
        try:
            os.pause()
        finally:
            os._exit(0)
    pidfd = os.pidfd_open(pid)
    undo = UndoLog()
    undo.record("child", pid, handle=pidfd)
    try:
        assert undo.unwind(Log()) == []
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)          # already reaped
    with pytest.raises(OSError):
        os.fstat(pidfd)                      # and the pidfd closed


def test_unwinding_does_not_stop_at_a_non_oserror(undone, monkeypatch):
    def buggy(change):
        raise ValueError("invalid literal for int()")

    monkeypatch.setitem(undo_module.UNDO, "buggy", buggy)
    undo = UndoLog()
    undo.record("a", "oldest")
    undo.record("buggy", "x")
    failures = undo.unwind(Log())
    assert [c.target for c in undone] == ["oldest"]
    assert len(failures) == 1
