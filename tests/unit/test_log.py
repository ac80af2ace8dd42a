"""engine/log.py: levels, the threshold, LXC and JSON rendering, replay and the child's forwarding."""

from __future__ import annotations

import io
import json
import re
import sys
import time

import pytest

from lxcsm.engine import log as logmod
from lxcsm.engine.log import Level, Sink, parse_level

LXC_LINE = re.compile(r"^lxcsm NAME \d{14}\.\d{3} TRACE    CATEGORY - \S+:\w+:\d+ - EVENT( \S+=\S+)*$")


@pytest.fixture(autouse=True)
def restore_log_state():
    """Every test leaves the module's globals (threshold, recorder) as it found them."""
    threshold, record = logmod._threshold, logmod._record
    recorder = logmod.flight_recorder
    recorded, seen = list(recorder.events), recorder.seen
    yield
    logmod.set_threshold(threshold)
    logmod._record = record
    recorder.events.clear()
    recorder.events.extend(recorded)
    recorder.seen = seen


def child_logger(send, **context):
    """The child's logger, built as engine/supervisor.run_child builds it: events go unrendered to `send`."""
    logmod.record_to(lambda event: send(logmod.portable(event)))
    logmod.set_threshold(logmod.NOTHING)
    return logmod.logger(None, **context)


class CountingSink(logmod.Sink):
    """A real Sink (structlog renders through it) that counts and keeps its lines."""

    def __init__(self, render=logmod.render_lxc) -> None:
        super().__init__(io.StringIO())
        self.render_calls = 0
        self.lines: list[str] = []
        self._render = render

    def render(self, event):
        self.render_calls += 1
        return self._render(event)

    def emit(self, line):
        self.lines.append(line)


def here() -> int:
    """The line number of the caller's next line."""
    return sys._getframe(1).f_lineno + 1


# --- levels ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,level", [
    ("TRACE", Level.TRACE), ("trace", Level.TRACE), ("Debug", Level.DEBUG), ("info", Level.INFO),
    ("NOTICE", Level.NOTICE), ("warn", Level.WARN), ("WARNING", Level.WARN), ("warning", Level.WARN),
    ("ERROR", Level.ERROR), ("crit", Level.CRIT), ("ALERT", Level.ALERT), ("fatal", Level.FATAL),
    ("  error \n", Level.ERROR),
])
def test_parse_level_names(text, level):
    assert parse_level(text) is level


@pytest.mark.parametrize("number", range(9))
def test_parse_level_numbers(number):
    assert parse_level(str(number)) is Level(number)
    assert parse_level(f" {number} ") is Level(number)


def test_level_numbers_are_lxcs():
    assert [level.name for level in sorted(Level)] == \
        ["TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "ERROR", "CRIT", "ALERT", "FATAL"]
    assert int(Level.TRACE) == 0 and int(Level.FATAL) == 8


@pytest.mark.parametrize("junk", ["", " ", "9", "10", "-1", "1.5", "0x1", "verbose", "ERR", "TRACE1", "tr ace"])
def test_parse_level_rejects_junk(junk):
    with pytest.raises(ValueError, match="unknown log level"):
        parse_level(junk)


def test_enabled_follows_the_threshold():
    logmod.set_threshold(Level.WARN)
    assert logmod.enabled(Level.WARN) and logmod.enabled(Level.FATAL)
    assert not logmod.enabled(Level.NOTICE)
    logmod.set_threshold(Level.TRACE)
    assert logmod.enabled(Level.TRACE)


# --- the threshold --------------------------------------------------------------------


def test_below_threshold_the_sink_is_not_called():
    sink = CountingSink()
    log = logmod.logger(sink, name="n")
    logmod.set_threshold(Level.ERROR)
    log.trace("quiet", x=1)
    log.debug("quiet")
    log.warn("quiet")
    assert (sink.render_calls, sink.lines) == (0, [])
    log.error("loud")
    log.fatal("louder")
    assert sink.render_calls == 2 and len(sink.lines) == 2
    logmod.set_threshold(Level.TRACE)
    log.trace("now wanted")
    assert sink.render_calls == 3 and sink.lines[-1].endswith(" - now wanted")


class FrameLooked(Exception):
    pass


def _no_frames(*_args):
    raise FrameLooked()


def test_the_frame_guard_works_at_trace(monkeypatch):
    """Control for the test below: at TRACE the logger does look at the caller's frame."""
    log = logmod.logger(CountingSink(), name="n")
    logmod.set_threshold(Level.TRACE)
    monkeypatch.setattr(sys, "_getframe", _no_frames)
    try:
        with pytest.raises(FrameLooked):
            log.trace("looks")
    finally:
        monkeypatch.undo()


def test_below_threshold_an_event_is_recorded_but_nothing_is_formatted():
    """The contract: an unwanted event costs a dict in the flight recorder, no rendered line
    and no formatted string (its origin stays a (file, function, line) tuple)."""
    sink = CountingSink()
    log = logmod.logger(sink, name="n")
    logmod.set_threshold(Level.ERROR)
    before = logmod.flight_recorder.seen
    log.trace("cheap", x=1)
    log.debug("cheap")
    assert sink.render_calls == 0
    assert logmod.flight_recorder.seen == before + 2
    where = logmod.flight_recorder.events[-1]["where"]
    assert isinstance(where, logmod.Where) and not isinstance(where, str)


# --- rendering ------------------------------------------------------------------------


def test_lxc_line_format():
    sink = CountingSink()
    log = logmod.logger(sink, name="NAME", side="monitor", pid=812).bind(category="CATEGORY")
    logmod.set_threshold(Level.TRACE)
    line_no = here()
    log.trace("EVENT", fd=7, path="/sys/fs/cgroup/x", flags=hex(0x20000))
    assert len(sink.lines) == 1
    line = sink.lines[0]
    assert LXC_LINE.match(line), line
    assert f"test_log.py:test_lxc_line_format:{line_no} - EVENT" in line
    assert line.endswith(" - EVENT side=monitor pid=812 fd=7 path=/sys/fs/cgroup/x flags=0x20000")


def test_lxc_line_timestamp_is_the_events_time():
    event = {"time": time.mktime((2026, 11, 22, 23, 41, 10, 0, 0, -1)) + 0.455, "level": 0, "event": "EVENT",
             "name": "NAME", "category": "CATEGORY", "where": "states/monitor/spawn.py:enter:42"}
    assert logmod.render_lxc(event) == \
        "lxcsm NAME 20261122234110.455 TRACE    CATEGORY - states/monitor/spawn.py:enter:42 - EVENT"


@pytest.mark.parametrize("value,rendered", [
    ("two words", '"two words"'),
    ("", '""'),
    ('say "hi"', '"say \\"hi\\""'),
    ("plain", "plain"),
    (["a", "b"], '"[\\"a\\", \\"b\\"]"'),
    (3, "3"),
])
def test_lxc_fields_with_spaces_or_quotes_are_quoted(value, rendered):
    sink = CountingSink()
    log = logmod.logger(sink, name="NAME").bind(category="CATEGORY")
    logmod.set_threshold(Level.TRACE)
    log.trace("EVENT", text=value)
    assert sink.lines[0].endswith(f" - EVENT text={rendered}"), sink.lines[0]


@pytest.mark.parametrize("value", ["first\nlxcsm", "a\tb"])
def test_lxc_line_is_one_line_whatever_the_field(value):
    sink = CountingSink()
    log = logmod.logger(sink, name="NAME").bind(category="CATEGORY")
    logmod.set_threshold(Level.TRACE)
    log.trace("EVENT", path=value)
    assert "\n" not in sink.lines[0]
    assert LXC_LINE.match(sink.lines[0]), sink.lines[0]


def test_lxc_line_levels_are_padded_names():
    sink = CountingSink()
    log = logmod.logger(sink, name="NAME").bind(category="c")
    logmod.set_threshold(Level.TRACE)
    log.warn("w")
    log.crit("c")
    assert " WARN     c - " in sink.lines[0]
    assert " CRIT     c - " in sink.lines[1]


def test_json_format_is_one_object_a_line_with_level_names():
    stream = io.StringIO()
    log = logmod.logger(Sink(stream, "json"), name="ct", side="monitor").bind(category="spawn")
    logmod.set_threshold(Level.TRACE)
    line_no = here()
    log.trace("cloned", child=812, flags="0x6c020000", note="two words")
    log.error("start failed", error='quote " and\nnewline')
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "TRACE" and second["level"] == "ERROR"
    assert first["event"] == "cloned" and first["child"] == 812 and first["note"] == "two words"
    assert (first["name"], first["side"], first["category"]) == ("ct", "monitor", "spawn")
    assert isinstance(first["time"], float) and abs(first["time"] - time.time()) < 60
    assert str(first["where"]).endswith(f"test_log.py:test_json_format_is_one_object_a_line_with_level_names:{line_no}")
    assert second["error"] == 'quote " and\nnewline'


def test_sink_writes_and_flushes_a_line_per_event():
    class Stream(io.StringIO):
        flushes = 0

        def flush(self):
            self.flushes += 1
            super().flush()

    stream = Stream()
    log = logmod.logger(Sink(stream), name="n")
    logmod.set_threshold(Level.TRACE)
    log.info("one")
    log.info("two")
    assert stream.getvalue().count("\n") == 2 and stream.flushes == 2


def test_unknown_log_format_is_refused():
    with pytest.raises(KeyError):
        Sink(io.StringIO(), "xml")
    assert set(logmod.RENDERERS) == {"lxc", "json"}


# --- replay and the child's logger ----------------------------------------------------


def recorded_child_event(level: int) -> dict:
    return {"event": "child thing", "level": level, "time": 1_700_000_000.25, "name": "ct", "side": "child",
            "category": "setup_mounts", "where": "states/child/setup_mounts.py:enter:12", "pid": 4321}


def test_replay_renders_only_wanted_events():
    sink = CountingSink()
    log = logmod.logger(sink, name="ct", side="monitor")
    logmod.set_threshold(Level.INFO)
    logmod.replay(log, recorded_child_event(Level.DEBUG))
    logmod.replay(log, recorded_child_event(int(Level.TRACE)))
    assert sink.render_calls == 0 and sink.lines == []
    logmod.replay(log, recorded_child_event(int(Level.WARN)))
    assert len(sink.lines) == 1
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(1_700_000_000.25)) + ".250"
    assert sink.lines[0] == (f"lxcsm ct {stamp} WARN     setup_mounts - states/child/setup_mounts.py:enter:12"
                             " - child thing side=child pid=4321")


def test_child_logger_hands_the_unrendered_event_to_send():
    sent: list[dict] = []
    log = child_logger(sent.append, name="ct", side="child").bind(category="configure")
    before = time.time()
    line_no = here()
    log.debug("unshared", namespace="cgroup", text="two words")
    assert len(sent) == 1
    event = sent[0]
    assert event["event"] == "unshared"
    assert event["level"] == Level.DEBUG and Level(event["level"]).name == "DEBUG"
    assert before <= event["time"] <= time.time()
    assert event["where"].endswith(f"test_log.py:test_child_logger_hands_the_unrendered_event_to_send:{line_no}")
    assert event["text"] == "two words"      # unrendered: no quoting
    assert (event["name"], event["side"], event["category"], event["namespace"]) == \
        ("ct", "child", "configure", "cgroup")


def test_child_event_through_json_renders_in_the_monitor_like_its_own():
    """The whole road of a child event: its logger, the channel's JSON, replay in the monitor."""
    sent: list[dict] = []
    child = child_logger(sent.append, name="ct", side="child").bind(category="setup_hostname")
    child.trace("hostname set", hostname="box")
    wire = json.loads(json.dumps(sent[0], default=str))       # as ChildEnd.send_log / MonitorEnd carry it
    sink = CountingSink()
    monitor = logmod.logger(sink, name="ct", side="monitor")
    logmod.set_threshold(Level.TRACE)
    logmod.replay(monitor, wire)
    assert len(sink.lines) == 1
    line = sink.lines[0]
    assert re.match(r"^lxcsm ct \d{14}\.\d{3} TRACE    setup_hostname - \S+test_log\.py:\w+:\d+ - hostname set", line)
    assert line.endswith(" side=child hostname=box")


# --- the flight recorder --------------------------------------------------------------


def test_every_event_is_recorded_whatever_the_threshold():
    recorder = logmod.flight_recorder
    recorder.clear()
    sink = CountingSink()
    log = logmod.logger(sink, name="ct").bind(category="spawn")
    logmod.set_threshold(Level.ERROR)
    log.trace("quiet", n=1)
    log.error("loud")
    assert sink.render_calls == 1                       # only the wanted event is rendered
    assert [(e["event"], e["level"]) for e in recorder.events] == [("quiet", 0), ("loud", 5)]
    quiet = recorder.events[0]
    assert (quiet["name"], quiet["category"], quiet["n"]) == ("ct", "spawn", 1)
    assert "where" in quiet and isinstance(quiet["time"], float)
    assert recorder.seen == 2


def test_recorder_keeps_the_newest_events_and_counts_all():
    recorder = logmod.FlightRecorder(size=3)
    for i in range(5):
        recorder({"event": f"e{i}", "level": 0, "time": float(i)})
    assert [e["event"] for e in recorder.events] == ["e2", "e3", "e4"]
    assert recorder.seen == 5
    recorder.clear()
    assert (list(recorder.events), recorder.seen) == ([], 0)
    assert logmod.FlightRecorder().events.maxlen == logmod.FLIGHT_RECORDER_SIZE


def test_replay_records_the_child_event_even_when_not_rendered():
    logmod.flight_recorder.clear()
    sink = CountingSink()
    logmod.set_threshold(Level.ERROR)
    logmod.replay(logmod.logger(sink, name="ct"), recorded_child_event(int(Level.TRACE)))
    assert sink.lines == []
    assert [e["event"] for e in logmod.flight_recorder.events] == ["child thing"]


def test_recorded_is_in_time_order():
    recorder = logmod.flight_recorder
    recorder.clear()
    for t in (3.0, 1.0, 2.0):            # child events arrive late, through the channel
        recorder({"event": f"at {t}", "level": 0, "time": t})
    assert [e["event"] for e in logmod.recorded()] == ["at 1.0", "at 2.0", "at 3.0"]


def test_nothing_threshold_renders_nothing():
    sink = CountingSink()
    log = logmod.logger(sink, name="ct")
    logmod.set_threshold(logmod.NOTHING)
    log.fatal("even this")
    logmod.replay(log, recorded_child_event(int(Level.FATAL)))
    assert sink.render_calls == 0


def test_structlog_is_loaded_only_when_a_line_is_rendered():
    """A default-level start that succeeds must not pay structlog's import at all."""
    probe = ("import sys, io; from lxcsm.engine import log; "
             "l = log.logger(log.Sink(io.StringIO()), name='n'); l.trace('unwanted'); "
             "print('structlog._base' in sys.modules); log.set_threshold(log.Level.TRACE); l.trace('wanted'); "
             "print('structlog._base' in sys.modules)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_a_sink_made_at_trace_loads_structlog_before_any_event():
    """At TRACE the first state's event is rendered for sure: structlog is loaded when the sink
    is made, before the machines, so a timeline does not charge its import to init_handler."""
    probe = ("import sys, io; from lxcsm.engine import log; log.set_threshold(log.Level.DEBUG); "
             "log.Sink(io.StringIO()); print('structlog._base' in sys.modules); "
             "log.set_threshold(log.Level.TRACE); log.Sink(io.StringIO()); print('structlog._base' in sys.modules)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_the_first_line_loads_structlogs_bound_logger_not_the_whole_package():
    """structlog's __init__ imports asyncio, stdlib logging and the dev console (several starts'
    worth of time): a rendered line loads only structlog._base, and the package itself stays
    importable in full afterwards, with the very same BoundLoggerBase."""
    probe = ("import sys, io; from lxcsm.engine import log; log.set_threshold(log.Level.TRACE); "
             "out = io.StringIO(); log.logger(log.Sink(out), name='n').trace('line', k=1); "
             "print(out.getvalue().split(' - ')[-1].strip()); "
             "print(sorted(m for m in ('asyncio', 'logging', 'structlog', 'structlog.dev') if m in sys.modules)); "
             "import structlog; print(structlog.BoundLoggerBase is sys.modules['structlog._base'].BoundLoggerBase, "
             "'structlog.dev' in sys.modules)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["line k=1", "[]", "True True"]


def test_a_sink_uses_the_whole_structlog_when_it_is_loaded_already():
    """In a process that imported structlog itself (the start server preloads it), lines go
    through that package's BoundLoggerBase: one structlog per process."""
    probe = ("import sys, io, structlog; from lxcsm.engine import log; log.set_threshold(log.Level.TRACE); "
             "sink = log.Sink(io.StringIO()); print(type(sink._structlog) is structlog.BoundLoggerBase)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True"]


def test_syslog_lines_are_lxcs_at_lxcs_priorities(monkeypatch):
    import syslog
    opened, sent = [], []
    monkeypatch.setattr(syslog, "openlog", lambda *args: opened.append(args))
    monkeypatch.setattr(syslog, "syslog", lambda priority, message: sent.append((priority, message)))
    sink = logmod.SyslogSink("LOCAL3")
    event = {"event": "state", "level": int(logmod.Level.WARN), "time": 0.0, "category": "spawn", "name": "c1",
             "where": logmod.Where(("states/monitor/spawn.py", "enter", 42)), "side": "monitor"}

    sink.write(event)
    sink.write({**event, "level": int(logmod.Level.TRACE)})

    assert opened == [("lxcsm", syslog.LOG_PID, syslog.LOG_LOCAL3)]
    # As LXC's log_append_syslog(): "NAME: CATEGORY - FILE:FUNC:LINE - MESSAGE"; TRACE is LOG_DEBUG.
    assert sent == [(syslog.LOG_WARNING, "c1: spawn - states/monitor/spawn.py:enter:42 - state side=monitor"),
                    (syslog.LOG_DEBUG, "c1: spawn - states/monitor/spawn.py:enter:42 - state side=monitor")]
