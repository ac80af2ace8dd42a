"""The one place log lines are produced.

States and the supervisor emit *events* (a name plus fields) through an
`EventLogger`; this module decides whether an event is wanted and renders it,
either as LXC's log line::

    lxcsm NAME 20261122234110.455 TRACE    spawn - states/monitor/spawn.py:enter:42 - state side=monitor pid=812

or as one JSON object a line (``--log-format json``).  The levels are LXC's,
TRACE (0) to FATAL (8), numbered as lxc.log.level numbers them.

structlog renders the wanted events: each `Sink` drives a structlog logger
whose processor chain ends in the chosen renderer.  structlog has no TRACE
level (its filtering loggers start at DEBUG), so the events enter through
`EventLogger`, with one method per LXC level.  An event below the threshold
is recorded and nothing more: a dict, the caller's file, function and line
kept as a tuple - no string formatted, no line rendered.  structlog is
loaded when the first line is rendered (a start at the default level that
succeeds never loads it), and only its bound logger, `structlog._base`: the
package's own __init__ imports every integration it has (stdlib logging,
asyncio, the dev console and its tracebacks), 70-400 ms on the developers'
VM, several times a whole start, for nothing lxcsm calls.  A sink made at
TRACE, whose first line is certain, loads it at once, before any state is
timed (nothing of logging is charged to a state).

Whatever the threshold, every event is also *recorded*, unrendered, by the
flight recorder: a ring of the last 200 events of this start (a dict append,
no formatting), which the monitor prints when a start fails; and the monitor
writes every event, as it happens, to a file next to the container's config
(engine/start/postmortem.py, `lxcsm explain-failure NAME`).

The container child has no sink of its own: it records into the sync channel
instead (`record_to`), so the monitor receives every child event, records it
in its own ring, and renders it through `replay` like its own.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import sys
import time
from collections.abc import Callable

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from typing import Any, TextIO


class Level(enum.IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    NOTICE = 3
    WARN = 4
    ERROR = 5
    CRIT = 6
    ALERT = 7
    FATAL = 8


def parse_level(text: str) -> Level:
    """A level from its LXC name (any case, WARNING accepted) or number."""
    name = text.strip().upper()
    if name.isdigit() and int(name) in Level._value2member_map_:
        return Level(int(name))
    name = {"WARNING": "WARN"}.get(name, name)
    if name not in Level.__members__:
        raise ValueError(f"unknown log level {text!r} (TRACE DEBUG INFO NOTICE WARN ERROR CRIT ALERT FATAL)")
    return Level[name]


_threshold: int = Level.ERROR
NOTHING = Level.FATAL + 1   # a threshold no event reaches
FLIGHT_RECORDER_SIZE = 200
# Where file names in log lines are relative to: the folder holding engine/ and states/.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Event fields the line format shows in its fixed columns rather than as k=v.
_COLUMNS = frozenset(("event", "level", "time", "where", "category", "name"))


def set_threshold(level: int) -> None:
    """Render events at `level` and above (a number above FATAL renders nothing)."""
    global _threshold
    _threshold = level


class FlightRecorder:
    """The last events of a start, whatever the log level, oldest first; and, in the
    monitor, every event also handed to `file` (engine/start/postmortem.py's FlightRecord)."""

    def __init__(self, size: int = FLIGHT_RECORDER_SIZE) -> None:
        self.events: collections.deque[dict] = collections.deque(maxlen=size)
        self.seen = 0
        self.file: Any = None

    def __call__(self, event: dict) -> None:
        self.events.append(event)
        self.seen += 1
        if self.file is not None:
            self.file.add(event)

    def flush(self) -> None:
        """Write what the file has not written yet: before a wait that may block."""
        if self.file is not None:
            self.file.flush()

    def clear(self) -> None:
        self.events.clear()
        self.seen = 0


flight_recorder = FlightRecorder()
_record: Callable[[dict], None] = flight_recorder


def record_to(record: Callable[[dict], None]) -> None:
    """Send every event to `record` instead of this process's flight recorder (the child)."""
    global _record
    _record = record


def enabled(level: Level) -> bool:
    return level >= _threshold


def where(code) -> str:
    """`file:function:line` of a code object, as LXC's log shows its call sites."""
    return f"{code.co_filename.removeprefix(_ROOT)}:{code.co_name}:{code.co_firstlineno}"


class Where(tuple):
    """(file, function, line) of an event's origin, formatted only when shown."""

    def __str__(self) -> str:
        file, function, line = self
        return f"{file.removeprefix(_ROOT)}:{function}:{line}"


def _caller(frame) -> Where:
    return Where((frame.f_code.co_filename, frame.f_code.co_name, frame.f_lineno))


class EventLogger:
    """LXC's nine levels, TRACE included; bound context as in structlog's bind()."""

    __slots__ = ("_sink", "_context")

    def __init__(self, sink: Sink | Tee | None, context: dict[str, Any]) -> None:
        self._sink = sink
        self._context = context

    def bind(self, **context: Any) -> EventLogger:
        return EventLogger(self._sink, {**self._context, **context})

    def _emit(self, level: Level, event: str, fields: dict[str, Any]) -> None:
        fields.setdefault("where", _caller(sys._getframe(2)))
        record = {**self._context, "event": event, "level": int(level), "time": time.time(), **fields}
        _record(record)
        if level >= _threshold and self._sink is not None:
            self._sink.write(record)

    def trace(self, event: str, **fields: Any) -> None:
        return self._emit(Level.TRACE, event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        return self._emit(Level.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        return self._emit(Level.INFO, event, fields)

    def notice(self, event: str, **fields: Any) -> None:
        return self._emit(Level.NOTICE, event, fields)

    def warn(self, event: str, **fields: Any) -> None:
        return self._emit(Level.WARN, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        return self._emit(Level.ERROR, event, fields)

    def crit(self, event: str, **fields: Any) -> None:
        return self._emit(Level.CRIT, event, fields)

    def alert(self, event: str, **fields: Any) -> None:
        return self._emit(Level.ALERT, event, fields)

    def fatal(self, event: str, **fields: Any) -> None:
        return self._emit(Level.FATAL, event, fields)


def _field(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    # Quoted (JSON escapes) whenever the raw text could be misread: spaces, quotes, and
    # anything unprintable - a newline in a value must never start a forged log line.
    return json.dumps(text) if (not text or not text.isprintable() or " " in text or '"' in text) else text


# The level column of a line, by level number.
_LEVEL_COLUMN = tuple(f"{level.name:<8}" for level in Level)
_last_second: list = [None, ""]   # the last whole second rendered, and its stamp: a start's lines share a few


def _stamp(seconds: float) -> str:
    """LXC's time stamp, in UTC as LXC writes it, so the two logs line up whatever the time zone."""
    whole = int(seconds)
    if _last_second[0] != whole:
        _last_second[:] = whole, time.strftime("%Y%m%d%H%M%S", time.gmtime(whole))
    return f"{_last_second[1]}.{int(seconds * 1000) % 1000:03d}"


def render_lxc(event: Mapping[str, Any]) -> str:
    fields = "".join(f" {k}={_field(v)}" for k, v in event.items() if k not in _COLUMNS)
    return (f"lxcsm {event.get('name', '')} {_stamp(event['time'])} {_LEVEL_COLUMN[event['level']]} "
            f"{event.get('category', 'lxcsm')} - {event.get('where', '')} - {event['event']}{fields}")


def render_syslog(event: Mapping[str, Any]) -> str:
    """LXC's syslog message: the container, the category, where, and the event (syslog adds
    the time, the program and the pid itself)."""
    fields = "".join(f" {k}={_field(v)}" for k, v in event.items() if k not in _COLUMNS)
    name = event.get("name")
    return (f"{name + ': ' if name else ''}{event.get('category', 'lxcsm')} - {event.get('where', '')} - "
            f"{event['event']}{fields}")


def portable(event: Mapping[str, Any]) -> dict:
    """The event with its origin as text, for JSON (a `Where` is a tuple JSON would make a list)."""
    return {**event, "where": str(event.get("where", ""))}


def render_json(event: Mapping[str, Any]) -> str:
    return json.dumps({**portable(event), "level": Level(event["level"]).name}, default=str)


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {"lxc": render_lxc, "json": render_json}


class Sink:
    """A stream log lines are written to, through structlog, one write and flush a line."""

    def __init__(self, stream: TextIO, log_format: str = "lxc") -> None:
        self.stream = stream
        self.renderer = RENDERERS[log_format]
        self._structlog: Any = None   # structlog's bound logger, made on the first line
        if _threshold <= Level.TRACE:
            # Every state's `state` event will be rendered, the first one in init_handler: bind
            # structlog now, before the machines, so that its import is not timed as part of a
            # state (a timeline would charge it to init_handler).
            self._bind()

    def render(self, event: Mapping[str, Any]) -> str:
        return self.renderer(event)

    def write(self, event: dict) -> None:
        if self._structlog is None:
            self._bind()
        self._structlog._proxy_to_logger("emit", **event)

    def _bind(self) -> None:
        self._structlog = _bound_logger_class()(self, processors=[_render], context={})

    def emit(self, line: str) -> None:   # structlog's last step hands us the rendered line
        self.stream.write(line + "\n")
        self.stream.flush()


def _bound_logger_class() -> type:
    """structlog.BoundLoggerBase, loaded without running structlog/__init__.py (see the module's
    docstring): the package is made from its spec and put in sys.modules only while its
    submodule `_base` imports (it needs `structlog.typing` and `structlog.exceptions`, nothing
    more), then taken out again, so that a later `import structlog` runs the package in full
    and finds this same `_base`."""
    loaded = sys.modules.get("structlog._base")
    if loaded is not None:   # the whole package (the start server preloads it), or an earlier sink
        return loaded.BoundLoggerBase
    import importlib.util
    spec = importlib.util.find_spec("structlog")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("structlog is not installed")
    package = importlib.util.module_from_spec(spec)
    sys.modules["structlog"] = package
    try:
        base = importlib.import_module("structlog._base")
    except ImportError:   # a structlog laid out otherwise: pay for the whole package
        del sys.modules["structlog"]
        import structlog
        return structlog.BoundLoggerBase
    finally:
        if sys.modules.get("structlog") is package:
            del sys.modules["structlog"]
    return base.BoundLoggerBase


class SyslogSink:
    """lxc.log.syslog: every wanted event also goes to syslog, under the facility named
    (daemon, local0..local7), at the syslog priority LXC gives its level."""

    # LXC's lxc_log_priority_to_syslog(), by LXC level.
    PRIORITIES = {Level.TRACE: 7, Level.DEBUG: 7, Level.INFO: 6, Level.NOTICE: 5, Level.WARN: 4,
                  Level.ERROR: 3, Level.CRIT: 2, Level.ALERT: 1, Level.FATAL: 0}

    def __init__(self, facility: str, ident: str = "lxcsm") -> None:
        import syslog  # a small C module; only configs with lxc.log.syslog load it
        self._syslog = syslog.syslog
        syslog.openlog(ident, syslog.LOG_PID, getattr(syslog, f"LOG_{facility.upper()}"))

    def write(self, event: dict) -> None:
        self._syslog(self.PRIORITIES[Level(event["level"])], render_syslog(event))


class Tee:
    """Several sinks that each get every wanted event."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def write(self, event: dict) -> None:
        for sink in self.sinks:
            sink.write(event)


def _render(sink: Sink, _method: str, event: MutableMapping[str, Any]) -> str:
    return sink.render(event)


def logger(sink: Sink | Tee | None, **context: Any) -> EventLogger:
    """A logger whose wanted events are rendered into `sink` (None: a process that renders nothing)."""
    return EventLogger(sink, context)


def replay(log: EventLogger, event: dict) -> None:
    """Record an event another process emitted (the child's), and render it if it is wanted."""
    event = {**log._context, **event}
    _record(event)
    if event["level"] >= _threshold and log._sink is not None:
        log._sink.write(event)


def recorded() -> list[dict]:
    """The flight recorder's events in the order they happened (child events arrive late)."""
    return sorted(flight_recorder.events, key=lambda e: e["time"])
