"""engine/start/postmortem.py: the flight record written as the start runs, read back, and the
-o log - both surviving a disk that cannot hold them."""

from __future__ import annotations

import errno
import json
import os

import pytest

from lxcsm.engine import log as logmod
from lxcsm.engine.start import postmortem
from lxcsm.engine.start.context import Failure

ENOSPC = "No space left on device (ENOSPC)"
FULL = "/dev/full"   # every write to it fails with ENOSPC


class Log:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict]] = []

    def error(self, event, **fields):
        self.errors.append((event, fields))


@pytest.fixture
def events():
    logmod.flight_recorder.clear()
    yield logmod.flight_recorder
    logmod.flight_recorder.clear()
    logmod.flight_recorder.file = None


def _refuse(fd: int, data: bytes) -> int:
    raise OSError(errno.ENOSPC, "No space left")


def test_a_log_file_on_a_full_disk_drops_lines_and_says_so_once(tmp_path, capsys, monkeypatch):
    log = postmortem.LogFile(str(tmp_path / "lxcsm.log"))
    said = []
    log.on_error = said.append
    log.write("before\n")
    with monkeypatch.context() as full:
        full.setattr(os, "write", _refuse)
        for n in range(3):
            log.write(f"dropped {n}\n")
            log.flush()
    log.write("after\n")                                   # room again: the log goes on
    assert (tmp_path / "lxcsm.log").read_text() == "before\nafter\n"
    assert said == ["No space left (ENOSPC)"]
    path = tmp_path / "lxcsm.log"
    assert capsys.readouterr().err == f"lxcsm: {path}: No space left (ENOSPC): log lines are dropped\n"


def test_a_log_file_reports_through_the_logger_that_writes_to_it(capsys, events):
    """on_error logs into the failing log itself: the line is dropped, the event recorded."""
    stream = postmortem.LogFile(FULL)
    logger = logmod.logger(logmod.Sink(stream), name="c")
    stream.on_error = lambda error: logger.error(postmortem.LOG_NOT_WRITTEN, file=stream.path, error=error)
    logger.error("first")
    logger.error("second")
    recorded = [e["event"] for e in events.events]
    assert recorded == ["first", postmortem.LOG_NOT_WRITTEN, "second"]
    assert capsys.readouterr().err.count("log lines are dropped") == 1


def test_the_failure_report_says_which_files_could_not_be_written(events):
    log = logmod.logger(None, name="c")
    log.error("start failed", failed_state="init_handler", failed_side="monitor", error="x")
    log.error(postmortem.LOG_NOT_WRITTEN, file="/full/lxcsm.log", error=ENOSPC)
    log.error(postmortem.NOT_KEPT, file="/full/lxcsm-last-start.log", error=ENOSPC)
    text = postmortem.report("c", Failure("init_handler", "monitor", "x"), saved=None)
    assert text.splitlines()[-2:] == [
        f"lxcsm: the log could not be written to /full/lxcsm.log: {ENOSPC}",
        f"lxcsm: this start's events could not be kept in /full/lxcsm-last-start.log: {ENOSPC}",
    ]


# --- the flight record, written as the start runs -----------------------------------------


def event(name: str, t: float, side: str = "monitor", **fields) -> dict:
    return {"name": "c", "side": side, "event": name, "level": int(logmod.Level.TRACE), "time": t,
            "where": logmod.Where(("/x/states/monitor/spawn.py", "enter", 3)), **fields}


def lines(path) -> list[str]:
    return [json.loads(line)["event"] for line in open(path)]


def test_a_record_is_written_at_each_state_and_wait_and_not_before_it_is_claimed(tmp_path, events):
    path = tmp_path / postmortem.LAST_START
    path.write_text('{"event": "the previous start"}\n')
    record = postmortem.FlightRecord(str(path))
    record.add(event("state", 1.0, state="init_handler"))
    assert lines(path) == ["the previous start"]             # not ours yet: a running monitor's, maybe
    record.add(event(postmortem.CLAIMED_BY, 1.1))
    assert lines(path) == ["state", postmortem.CLAIMED_BY]   # claimed: truncated, and caught up
    record.add(event("cgroup entered", 1.2))
    assert lines(path) == ["state", postmortem.CLAIMED_BY]   # batched: no write per event
    record.add(event("sync wait", 1.3, sequence="configure"))   # about to block: written
    assert lines(path)[-2:] == ["cgroup entered", "sync wait"]
    record.add(event("mounted", 1.4, side="child"))
    record.add(event("state", 1.5, side="child", state="setup_mounts"))   # the child's count too
    assert lines(path)[-2:] == ["mounted", "state"]
    assert record.close() == str(path)
    assert record.fd == -1


def test_a_record_not_claimed_leaves_the_file_alone(tmp_path, events):
    """A second start that finds the container running must not touch the running one's record."""
    path = tmp_path / postmortem.LAST_START
    path.write_text("the running monitor's\n")
    record = postmortem.FlightRecord(str(path))
    record.add(event("state", 1.0, state="init_handler"))
    record.add(event("already running", 1.1))
    assert record.close(claim=False) is None
    assert path.read_text() == "the running monitor's\n"


def test_the_container_child_never_writes_the_monitors_record(tmp_path, events):
    record = postmortem.FlightRecord(str(tmp_path / postmortem.LAST_START))
    record.claim()
    record.add(event("cloned", 1.0))
    record.writer = os.getpid() + 1           # as in the child, a copy of the monitor made by clone
    record.flush()
    assert (tmp_path / postmortem.LAST_START).read_text() == ""


def test_a_record_line_is_the_json_logs_line(events):
    e = event("cloned", 1.5, child=12, flags="0x6c020000", argv=["/bin/sh", "-c", "x y"])
    assert json.loads(postmortem.record_line(e)) == json.loads(logmod.render_json(e))


def test_a_record_on_a_full_disk_is_said_once_and_the_start_goes_on(tmp_path, events):
    path = tmp_path / postmortem.LAST_START
    os.symlink(FULL, path)
    said = []
    record = postmortem.FlightRecord(str(path))
    record.on_error = said.append
    record.claim()
    for n in range(3):
        record.add(event("state", float(n), state="spawn"))
    assert said == [f"{ENOSPC}: {path}"]
    assert record.close() is None


def test_a_long_running_containers_record_is_bounded_and_keeps_the_start(tmp_path, events, monkeypatch):
    monkeypatch.setattr(postmortem, "MAX_RECORD_BYTES", 20_000)
    path = tmp_path / postmortem.LAST_START
    record = postmortem.FlightRecord(str(path))
    logmod.flight_recorder.file = record
    log = logmod.logger(None, name="c", side="monitor")
    log.trace(postmortem.CLAIMED_BY)
    log.notice("started", init="/sbin/init")
    for _ in range(2000):
        log.trace("command served", command="GET_STATE", uid=0)
        logmod.flight_recorder.flush()
    log.info("init exited", status=0)
    record.close()
    assert os.path.getsize(path) <= 20_000 + 300 * postmortem.KEPT_AFTER_TRIM
    kept = lines(path)
    assert kept[:2] == [postmortem.CLAIMED_BY, "started"]     # the start itself is never trimmed
    assert postmortem.TRIMMED in kept and kept[-1] == "init exited"


def test_reading_a_record_sorts_by_time_and_skips_a_line_cut_short(tmp_path):
    path = tmp_path / postmortem.LAST_START
    first, second = event("state", 2.0, state="spawn"), event("cloned", 1.0, side="child")
    path.write_text(postmortem.record_line(first) + "\n" + postmortem.record_line(second) + "\n"
                    + postmortem.record_line(event("sync wait", 3.0))[:30])
    record = postmortem.read(str(path))
    assert [e["event"] for e in record.events] == ["cloned", "state"]
    assert record.events[0]["level"] == logmod.Level.TRACE
    assert record.unreadable == [3]
    assert not record.finished                                 # no MONITOR_EXITED: it died


def test_a_refused_start_is_the_containers_last_record(tmp_path):
    config = tmp_path / "lxc" / "box" / "config"
    config.parent.mkdir(parents=True)
    config.write_text("")
    postmortem.record_refusal(str(config), str(tmp_path / "lxc"), "box", "config:3: lxc.bad: unknown key",
                              ("/bin/true",))
    record = postmortem.read(postmortem.last_start_path(str(config)))
    assert [(e["event"], e["error"], e["command"]) for e in record.events] == [
        (postmortem.REFUSED, "config:3: lxc.bad: unknown key", ["/bin/true"])]
    assert record.finished
    postmortem.record_refusal(str(config.parent), str(tmp_path / "lxc"), "x", "cannot read config: Is a directory")
    assert not (tmp_path / "lxc" / postmortem.LAST_START).exists()   # none but next to a config file


def test_a_record_nothing_of_which_could_be_written_leaves_no_empty_file(tmp_path, events, monkeypatch):
    path = tmp_path / postmortem.LAST_START
    record = postmortem.FlightRecord(str(path))
    record.claim()
    with monkeypatch.context() as full:
        full.setattr(os, "write", _refuse)
        record.add(event("state", 1.0, state="init_handler"))
        record.add(event("start failed", 2.0))
        assert record.close() is None
    assert not path.exists()
