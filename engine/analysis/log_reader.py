"""Reading lxcsm logs: LXC's line format and JSON lines, even mixed in one file.

An lxcsm log at TRACE - ``-o FILE`` or the ``lxcsm-last-start.log`` a start
leaves next to its config - is one event a line, in either of lxcsm's two
formats, detected line by line:

* LXC's line format (log.c's, which lxcsm's ``render_lxc`` writes too):
  ``PREFIX NAME YYYYmmddHHMMSS.mmm LEVEL CATEGORY - FILE:FUNC:LINE - MESSAGE``,
  the message being the event's name followed by its ``key=value`` fields;
* JSON lines (``--log-format json``): one object with at least ``time`` and
  ``event``.

Each line becomes an event dict like the JSON format's.  Child events are
stamped in the child but written by the monitor when they arrive, so a log is
not in time order: the events are sorted by time (stably, so lines of one
millisecond keep the order they were written in).  Lines in neither format are
counted, not guessed at.  lxcsm writes its stamps in local time, LXC itself in
UTC (`lxc_time`).

`lxcsm timeline` and `lxcsm trace-diff` read their logs here; a file that
cannot be read as the log a command needs is a `LogError`, one line.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass


class LogError(Exception):
    """The file cannot be read as the log the command needs; the message is one line."""


# PREFIX NAME YYYYmmddHHMMSS.mmm LEVEL    CATEGORY - FILE:FUNC:LINE - MESSAGE (log.c's format; lxcsm's
# render_lxc writes the same).  NAME is absent in LXC lines logged before the container is known.
LXC_LINE = re.compile(
    r"^(?P<prefix>\S+) (?P<name>\S*) ?(?P<stamp>\d{14})\.(?P<frac>\d{1,9}) (?P<level>[A-Z]+)\s+"
    r"(?P<category>\S+) - (?P<where>\S*) - (?P<message>.*)$")
_VALUE = r'"(?:[^"\\]|\\.)*"|\S*'
_FIELD = re.compile(rf'\s([A-Za-z_]\w*)=({_VALUE})')
_FIELDS = re.compile(rf'(?:\s[A-Za-z_]\w*=(?:{_VALUE}))+')
_FIELDS_START = re.compile(r'\s(?=[A-Za-z_]\w*=)')


def lxc_time(stamp: str, frac: str, utc: bool = False) -> float:
    """Epoch seconds of a log line's stamp: lxcsm writes local time, LXC itself UTC."""
    tm = time.strptime(stamp, "%Y%m%d%H%M%S")
    seconds = calendar.timegm(tm) if utc else time.mktime(tm)
    return seconds + int(frac[:3].ljust(3, "0")) / 1000


def _value(token: str):
    if token.startswith('"'):
        return json.loads(token)
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    return {"True": True, "False": False, "None": None}.get(token, token)


def _split_message(message: str) -> tuple[str, dict]:
    """``sync wait side=monitor sequence=fds`` -> ("sync wait", {side:..., sequence:...})."""
    for boundary in _FIELDS_START.finditer(message):
        tail = message[boundary.start():]
        if _FIELDS.fullmatch(tail):
            return message[:boundary.start()], {k: _value(v) for k, v in _FIELD.findall(tail)}
    return message, {}


def parse_line(line: str) -> dict | None:
    """One log line as an event dict like the JSON format's, or None if it is neither format."""
    line = line.strip()
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not (isinstance(event, dict) and isinstance(event.get("time"), (int, float)) and "event" in event):
            return None
        return event
    match = LXC_LINE.match(line)
    if not match:
        return None
    event_name, fields = _split_message(match["message"])
    return {"name": match["name"], "time": lxc_time(match["stamp"], match["frac"]), "level": match["level"],
            "category": match["category"], "where": match["where"], "event": event_name, **fields}


@dataclass
class Log:
    path: str
    events: list[dict]          # sorted by time
    skipped: list[int]          # numbers of the lines that are not log lines


def read_log(path: str) -> Log:
    """The events of an lxcsm log sorted by time, and the numbers of the lines that are not log lines."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            lines = stream.read().splitlines()
    except OSError as err:
        raise LogError(f"{path}: {err.strerror}") from None
    events, skipped = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        event = parse_line(line)
        if event is None:
            skipped.append(number)
        else:
            events.append(event)
    if not events:
        raise LogError(f"{path}: empty" if not skipped else
                       f"{path}: not an lxcsm log (line {skipped[0]} is neither LXC's log format nor JSON)")
    events.sort(key=lambda e: e["time"])
    return Log(path, events, skipped)


def read_events(path: str) -> list[dict]:
    """The events of an lxcsm log (either format, detected per line), sorted by time."""
    return read_log(path).events
