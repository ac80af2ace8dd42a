"""engine/start/postmortem.py: the flight record and the -o log survive a disk that cannot hold them."""

from __future__ import annotations

import errno
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
    postmortem._not_kept.clear()
    yield logmod.flight_recorder
    logmod.flight_recorder.clear()
    postmortem._not_kept.clear()


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


def test_a_flight_record_that_cannot_be_kept_leaves_no_half_file_and_is_said_once(tmp_path, events):
    config = tmp_path / "config"
    saved = tmp_path / postmortem.LAST_START
    saved.write_text("the previous start's record\n")
    os.symlink(FULL, f"{saved}.tmp")          # where the new record is written first: a full disk
    log = Log()
    logmod.logger(None, name="c").error("start failed")
    assert postmortem.save(str(config), log) is None
    assert sorted(os.listdir(tmp_path)) == [postmortem.LAST_START]          # no .tmp
    os.symlink(FULL, f"{saved}.tmp")
    assert postmortem.save(str(config), log) is None
    assert saved.read_text() == "the previous start's record\n"             # the old record stands
    assert log.errors == [(postmortem.NOT_KEPT, {"file": str(saved), "error": ENOSPC})]


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
