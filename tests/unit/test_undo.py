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

    def warn(self, event, **fields):
        self.events.append(("warn", event, fields))

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

    fakes = {"a": fake, "b": fake, "c": fake, "broken": broken}
    monkeypatch.setattr(undo_module, "UNDO", fakes)
    monkeypatch.setattr(undo_module, "UNDO_AFTER_CRASH", fakes)   # what `pending` accepts as a kind
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


# --- the journal on disk, and what `lxcsm cleanup` reads back from it ---------------------


def _journalled(tmp_path, *kinds_and_targets: tuple[str, str]) -> str:
    path = str(tmp_path / undo_module.JOURNAL)
    undo = UndoLog(undo_module.Journal(path))
    for kind, target in kinds_and_targets:
        undo.record(kind, target)
    undo.journal.finish()
    return path


def test_pending_lists_what_was_made_and_not_undone(tmp_path, undone):
    path = str(tmp_path / undo_module.JOURNAL)
    journal = undo_module.Journal(path)
    UndoLog(journal).record("a", "x")
    boot = UndoLog(journal)              # another scope, the same journal (a boot's)
    boot.record("b", "y")
    boot.unwind(Log())
    journal.finish()
    assert journal.outstanding == 1
    assert undo_module.pending(path) == ([Change("a", "x")], [])


def test_a_journal_with_nothing_outstanding_is_removed(tmp_path, undone):
    path = tmp_path / undo_module.JOURNAL
    journal = undo_module.Journal(str(path))
    undo = UndoLog(journal)
    undo.record("a", "x")
    assert path.exists()
    undo.unwind(Log())
    journal.finish()
    assert not path.exists()


def test_a_journal_that_never_recorded_leaves_another_monitors_file_alone(tmp_path):
    path = tmp_path / undo_module.JOURNAL
    path.write_text('{"change": "cgroup", "target": "/sys/fs/cgroup/x"}\n')
    undo_module.Journal(str(path)).finish()       # an "already running" start records nothing
    assert path.exists()


def test_pending_skips_a_cut_short_line_and_says_which(tmp_path):
    path = _journalled(tmp_path, ("cgroup", "/c1"), ("pidfile", "/p"), ("cgroup", "/c2"))
    with open(path, "rb+") as journal:
        whole = journal.read()
        journal.truncate(len(whole) - 12)          # the disk filled up in the third line
    changes, unreadable = undo_module.pending(path)
    assert changes == [Change("cgroup", "/c1"), Change("pidfile", "/p")]
    assert len(unreadable) == 1 and unreadable[0].startswith("line 3 is cut short: ")
    assert '{"change": "cgroup"' in unreadable[0]


@pytest.mark.parametrize("garbage", [
    b"not json at all", b"\xff\xfe\x00 binary", b"[1, 2]", b'{"change": "cgroup"}', b"",
    b'{"change": "no-such-kind", "target": "x"}', b'{"change": ["cgroup"], "target": "x"}',
    b'{"change": "cgroup", "target": 7}'])
def test_pending_skips_a_corrupt_line_in_the_middle_and_reads_on(tmp_path, garbage):
    path = _journalled(tmp_path, ("cgroup", "/c1"), ("pidfile", "/p"))
    with open(path, "ab") as journal:
        journal.write(garbage + b"\n" + b'{"undone": "pidfile", "target": "/p"}\n'
                      + b'{"change": "netdev", "target": "veth1"}\n')
    changes, unreadable = undo_module.pending(path)
    assert changes == [Change("cgroup", "/c1"), Change("netdev", "veth1")]
    assert [u.split(":")[0] for u in unreadable] == ["line 3 is not a journal entry"]


class _FullDisk:
    """os.write as on a full disk: the first `room` bytes fit, then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real_write = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.real_write(fd, data[: self.room])
        self.room -= written
        return written


def test_a_change_the_journal_cannot_list_fails_naming_the_file_and_stays_undoable(tmp_path, undone, monkeypatch):
    path = str(tmp_path / undo_module.JOURNAL)
    undo = UndoLog(undo_module.Journal(path))
    undo.record("a", "journalled")
    with monkeypatch.context() as full:
        full.setattr(os, "write", _FullDisk(room=10))
        with pytest.raises(undo_module.StateError) as refused:
            undo.record("b", "made but not journalled")
    assert path in str(refused.value) and "No space left on device (ENOSPC)" in str(refused.value)
    # the change is still remembered, so the abort that follows undoes it
    assert [c.target for c in undo.changes] == ["journalled", "made but not journalled"]
    assert undo_module.pending(path) == ([Change("a", "journalled")], [])   # the half line was taken back


def test_unwinding_on_a_full_disk_undoes_everything_says_so_once_and_removes_the_journal(
        tmp_path, undone, monkeypatch):
    path = tmp_path / undo_module.JOURNAL
    journal = undo_module.Journal(str(path))
    undo = UndoLog(journal)
    for target in ("one", "two", "three"):
        undo.record("a", target)
    monkeypatch.setattr(os, "write", _FullDisk(room=0))
    log = Log()
    assert undo.unwind(log) == []
    assert [c.target for c in undone] == ["three", "two", "one"]
    errors = [(event, fields) for level, event, fields in log.events if level == "error"]
    assert errors == [("journal not written", {"error": f"No space left on device (ENOSPC): {path}"})]
    journal.finish()
    assert not path.exists()      # all undone, whatever the file could be told


def test_a_failed_undo_keeps_the_journal_for_cleanup(tmp_path, undone, monkeypatch):
    path = tmp_path / undo_module.JOURNAL
    journal = undo_module.Journal(str(path))
    undo = UndoLog(journal)
    undo.record("broken", "/stuck")
    undo.record("a", "fine")
    with monkeypatch.context() as full:
        full.setattr(os, "write", _FullDisk(room=0))
        assert len(undo.unwind(Log())) == 1
    journal.finish()
    # "fine" is listed too (the full disk kept its undo out): cleanup's undos tolerate what is gone
    assert undo_module.pending(str(path)) == ([Change("broken", "/stuck"), Change("a", "fine")], [])


# --- a start after a crash: the dead monitor's journal ----------------------------------------


def test_a_new_start_undoes_a_dead_monitors_leftovers_first_and_forgets_nothing(tmp_path, undone):
    """What a killed monitor left is handed to on_leftovers (which undoes it) before the new
    monitor's first change is journalled; what it could not undo is carried over, so the
    journal outlives the new monitor's clean stop."""
    path = _journalled(tmp_path, ("a", "old cgroup"), ("b", "random veth"), ("c", "undone later"))
    with open(path, "a") as journal:
        journal.write('{"undone": "c", "target": "undone later"}\n')
    offered = []

    def leftovers(changes):
        offered.append(list(changes))
        return [c for c in changes if c.target == "random veth"]   # this one could not be undone

    journal = undo_module.Journal(path, on_leftovers=leftovers)
    undo = UndoLog(journal)
    undo.record("c", "command socket")
    assert offered == [[Change("a", "old cgroup"), Change("b", "random veth")]]
    assert undo_module.pending(path) == ([Change("b", "random veth"), Change("c", "command socket")], [])
    undo.unwind(Log())
    journal.finish()                                 # a clean stop ...
    assert undo_module.pending(path) == ([Change("b", "random veth")], [])   # ... remembers the veth


def test_a_dead_monitors_journal_fully_undone_is_replaced(tmp_path, undone):
    path = _journalled(tmp_path, ("a", "old cgroup"))
    journal = undo_module.Journal(path, on_leftovers=lambda changes: [])
    undo = UndoLog(journal)
    undo.record("b", "new")
    assert open(path).read() == '{"change": "b", "target": "new"}\n'
    undo.unwind(Log())
    journal.finish()
    assert not os.path.exists(path)


def test_lines_of_a_dead_monitors_journal_that_cannot_be_read_are_kept_for_cleanup(tmp_path, undone):
    path = _journalled(tmp_path, ("a", "old cgroup"))
    with open(path, "ab") as journal:
        journal.write(b'{"change": "b", "targ')          # cut short by the crash
    journal = undo_module.Journal(path, on_leftovers=lambda changes: [])
    undo = UndoLog(journal)
    undo.record("c", "new")
    undo.unwind(Log())
    journal.finish()
    changes, unreadable = undo_module.pending(path)
    assert changes == [] and len(unreadable) == 1 and '{"change": "b", "targ' in unreadable[0]


def test_undo_after_crash_undoes_newest_first_and_returns_what_failed(undone):
    log = Log()
    kept = undo_module.undo_after_crash([Change("a", "1"), Change("broken", "2"), Change("b", "3")], log)
    assert [c.target for c in undone] == ["3", "2", "1"]
    assert kept == [Change("broken", "2")]
    assert [(level, event) for level, event, _ in log.events] == [
        ("warn", "left by a dead monitor, undone"), ("error", "left by a dead monitor, not undone"),
        ("warn", "left by a dead monitor, undone")]
