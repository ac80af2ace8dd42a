"""`lxcsm timeline`: where the time of a start went, state by state, on both sides.

    lxcsm timeline LOGFILE [--start N] [--svg FILE | --png FILE]

Reads any lxcsm log written at TRACE - LXC's line format or JSON lines, even
mixed, and the ``lxcsm-last-start.log`` a start leaves next to its config -
and prints a table of every state each machine entered, with its offset from
the start and its duration, then the time each side spent blocked at each
sync barrier.  ``--svg``/``--png`` draw the same as a waterfall.

How the numbers are made
------------------------
Every state entered is one event ``state`` (fields side, state, pid).  A
state lasts until the next ``state`` event of the same side.  Child events
are stamped in the child but written by the monitor when they arrive, so the
log is not in time order: events are sorted by time first (stably, so lines
of one millisecond keep the order they were written in).

A *start* runs from the monitor entering ``init_handler`` to the monitor
entering ``poll`` (the container is RUNNING) - or ``aborting``, when the start
failed.  That span is the start's wall time.  Each side's states cover it
exactly: the monitor's from its first state to poll, the child's from its
offset (the monitor had to clone it first) until the monitor learns that the
exec happened, which is when the child machine's last state, exec, ends.  So
the durations of each side sum to the wall time by construction; the table
prints the sums as a check.  ``poll`` and whatever follows (reboot,
stopping, stopped) are shown as the tail, outside the wall time.

A log holds several starts when the container rebooted (the monitor enters
init_handler again) or when several runs were appended to one ``-o`` file;
``--start N`` picks one (default the first).

A sync barrier is a ``sync wait`` event (side, sequence).  The side waited
until the peer's ``sync wake`` with the same sequence (zero if the peer had
woken it before it began to wait), or, when the peer sends nothing - the
monitor's wait for ``exec`` ends at end-of-file - until that side's next event.

The picture is SVG written here as text.  A PNG needs a program that renders
SVG (rsvg-convert from librsvg2-bin, ImageMagick, or inkscape); without one
``--png`` says what to install.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from lxcsm.engine.start.machine import TABLES

SIDES = ("monitor", "child")


class LogError(Exception):
    """The file cannot be read as the log the command needs; the message is one line."""


# --- reading logs -----------------------------------------------------------------------------

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


# --- from events to states ----------------------------------------------------------------------

def is_state(event: dict, side: str | None = None, state: str | None = None) -> bool:
    return (event.get("event") == "state" and event.get("side") in TABLES
            and side in (None, event["side"]) and state in (None, event.get("state")))


def split_starts(events: list[dict]) -> list[list[dict]]:
    """The events of each start: from one monitor init_handler to the next (see the module doc)."""
    starts: list[list[dict]] = []
    for event in events:
        if is_state(event, "monitor", "init_handler"):
            starts.append([])
        if starts:
            starts[-1].append(event)
    return starts


@dataclass
class Span:
    """One state of one side, from its state event to the next of the same side."""
    side: str
    state: str
    pid: object
    begin: float
    end: float
    events: list[dict] = field(default_factory=list)   # this side's events while in the state
    tail: bool = False                                  # after the start (poll and later)

    @property
    def duration(self) -> float:
        return self.end - self.begin


@dataclass
class Wait:
    """Time one side spent blocked at one sync barrier."""
    side: str
    sequence: str
    state: str              # the side's state while it waited
    begin: float
    end: float
    ended_by: str           # what let it go on, in words
    wake: dict | None       # the peer's `sync wake` event, if it sent one

    @property
    def waited(self) -> float:
        return self.end - self.begin


@dataclass
class Start:
    index: int              # 1-based
    count: int              # starts in the log
    name: str
    t0: float               # monitor entered init_handler
    t_end: float            # monitor entered poll (or aborting): the end of the wall time
    outcome: str            # "running", "aborted" or "incomplete"
    spans: list[Span]       # both sides, in time order; tail spans last
    waits: list[Wait]
    pids: dict[str, object]

    @property
    def wall(self) -> float:
        return self.t_end - self.t0

    def side_spans(self, side: str, tail: bool | None = False) -> list[Span]:
        return [s for s in self.spans if s.side == side and (tail is None or s.tail == tail)]

    def offset(self, side: str) -> float:
        spans = self.side_spans(side)
        return spans[0].begin - self.t0 if spans else 0.0

    def covered(self, side: str) -> float:
        """The side's offset plus its states' durations: the wall time, if nothing is missing."""
        spans = self.side_spans(side)
        return self.offset(side) + sum(s.duration for s in spans) if spans else 0.0


def _spans(side: str, events: list[dict]) -> list[Span]:
    """The side's states, each with the side's events from its state event to the next."""
    spans: list[Span] = []
    for event in events:
        if is_state(event, side):
            if spans:
                spans[-1].end = event["time"]
            spans.append(Span(side, str(event.get("state")), event.get("pid"), event["time"], event["time"]))
        if spans:
            spans[-1].events.append(event)
    if spans:
        spans[-1].end = max(spans[-1].begin, spans[-1].events[-1]["time"])
    return spans


def _waits(events: list[dict], spans: list[Span]) -> list[Wait]:
    waits = []
    state_at = {id(e): s for s in spans for e in s.events}
    for side in SIDES:
        mine = [e for e in events if e.get("side") == side]
        for i, event in enumerate(mine):
            if event.get("event") != "sync wait" or id(event) not in state_at:
                continue
            sequence = str(event.get("sequence"))
            wakes = [e for e in events if e.get("event") == "sync wake" and e.get("side") not in (side, None)
                     and str(e.get("sequence")) == sequence]
            after = [e for e in wakes if e["time"] >= event["time"]]
            wake = after[0] if after else (wakes[-1] if wakes else None)
            if wake is not None:
                end = max(event["time"], wake["time"])
                ended_by = (f"{wake['side']} wake" if wake["time"] >= event["time"]
                            else f"{wake['side']} had woken it already")
            else:
                following = mine[i + 1] if i + 1 < len(mine) else None
                end = following["time"] if following else event["time"]
                ended_by = f"next {side} event ({following['event']})" if following else "end of log"
            waits.append(Wait(side, sequence, state_at[id(event)].state, event["time"], end, ended_by, wake))
    return sorted(waits, key=lambda w: w.begin)


def analyse(events: list[dict], index: int = 1) -> Start:
    """Start number `index` (1-based) of a log's events."""
    starts = split_starts(events)
    if not starts:
        if any(e.get("event") == "state" for e in events):
            raise LogError("no start in the log: the monitor never enters init_handler in it")
        raise LogError("no state events: not an lxcsm log written at TRACE (lxcsm start -l TRACE)")
    if not 1 <= index <= len(starts):
        raise LogError(f"--start {index}: the log holds {len(starts)} start{'s' * (len(starts) != 1)}")
    events = starts[index - 1]
    spans = {side: _spans(side, [e for e in events if e.get("side") == side]) for side in SIDES}
    end_span = next((s for s in spans["monitor"] if s.state in ("poll", "aborting")), None)
    if end_span is not None:
        t_end = end_span.begin
        # poll (or aborting) and what follows it are the tail; a child state begun in the same
        # millisecond as poll still belongs to the start.
        for span in spans["monitor"][spans["monitor"].index(end_span):]:
            span.tail = True
        for span in spans["child"]:
            span.tail = span.begin > t_end
    else:
        t_end = max(s.end for side in SIDES for s in spans[side])
    # Each side's last state of the start lasts until the start ends: the child is in exec
    # until the monitor learns that the exec happened.
    for side in SIDES:
        in_start = [s for s in spans[side] if not s.tail]
        if in_start:
            in_start[-1].end = t_end
    spans = sorted(spans["monitor"] + spans["child"], key=lambda s: (s.tail, s.begin))
    outcome = "incomplete" if end_span is None else "running" if end_span.state == "poll" else "aborted"
    pids = {}
    for side in SIDES:
        first = next((s for s in spans if s.side == side), None)
        if first is not None:
            pids[side] = first.pid
    return Start(index, len(starts), str(events[0].get("name", "")), events[0]["time"], t_end, outcome,
                 spans, _waits(events, spans), pids)


# --- the table ----------------------------------------------------------------------------------

BAR_WIDTH = 40


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if abs(ms) < 10000 else f"{ms:.0f}"


def _bar(start: Start, span: Span) -> str:
    """The span as a row of a text waterfall: '#' working, '~' waiting at a barrier."""
    scale = BAR_WIDTH / start.wall if start.wall > 0 else 0
    a = min(BAR_WIDTH - 1, int((span.begin - start.t0) * scale))
    b = max(a + 1, min(BAR_WIDTH, round((span.end - start.t0) * scale)))
    cells = [" "] * BAR_WIDTH
    for i in range(a, b):
        cells[i] = "#"
    for wait in start.waits:
        if wait.side == span.side and span.begin <= wait.begin < span.end and wait.waited > 0:
            wa = max(a, int((wait.begin - start.t0) * scale))
            wb = min(b, max(wa + 1, round((wait.end - start.t0) * scale)))
            for i in range(wa, wb):
                cells[i] = "~"
    return "|" + "".join(cells) + "|"


def table(start: Start, path: str = "") -> str:
    head = f"{start.name or 'container'}: start {start.index} of {start.count}"
    if path:
        head += f" in {path}"
    pids = ", ".join(f"{side} pid {pid}" for side, pid in start.pids.items())
    end = {"running": "RUNNING (monitor entered poll)", "aborted": "FAILED (monitor entered aborting)",
           "incomplete": "the end of the log (the start never reached poll)"}[start.outcome]
    lines = [head + (f" ({pids})" if pids else ""),
             f"wall time {_ms(start.wall)} ms: from init_handler at "
             f"{time.strftime('%H:%M:%S', time.localtime(start.t0))}.{int(start.t0 * 1000) % 1000:03d} to {end}",
             "",
             f"  {'side':<8} {'state':<20} {'at ms':>8} {'dur ms':>8} {'%':>6}  "
             f"{'waterfall (# working, ~ waiting at a sync barrier)'}"]
    for span in start.spans:
        if span.tail:
            continue
        share = 100 * span.duration / start.wall if start.wall > 0 else 0
        lines.append(f"  {span.side:<8} {span.state:<20} {_ms(span.begin - start.t0):>8} "
                     f"{_ms(span.duration):>8} {share:>6.1f}  {_bar(start, span)}")
    lines.append("")
    for side in SIDES:
        spans = start.side_spans(side)
        if not spans:
            lines.append(f"  {side}: no states in this start")
            continue
        total = sum(s.duration for s in spans)
        share = 100 * start.covered(side) / start.wall if start.wall > 0 else 100.0
        offset = start.offset(side)
        lines.append(f"  {side:<8} {len(spans)} states, {_ms(total)} ms"
                     + (f" after an offset of {_ms(offset)} ms" if offset > 0 else "")
                     + f" = {share:.1f}% of the wall time")

    lines += ["", "sync barriers: how long each side was blocked, by sequence",
              f"  {'side':<8} {'sequence':<15} {'in state':<20} {'at ms':>8} {'wait ms':>8}  ended by"]
    for wait in start.waits:
        if wait.begin >= start.t_end and start.outcome != "incomplete":
            continue
        lines.append(f"  {wait.side:<8} {wait.sequence:<15} {wait.state:<20} {_ms(wait.begin - start.t0):>8} "
                     f"{_ms(wait.waited):>8}  {wait.ended_by}")
    if not start.waits:
        lines.append("  (no sync events in this start)")
    for side in SIDES:
        mine = [w.waited for w in start.waits if w.side == side]
        if mine:
            lines.append(f"  {side:<8} waited {_ms(sum(mine))} ms in all "
                         f"({100 * sum(mine) / start.wall if start.wall > 0 else 0:.1f}% of the wall time)")

    tail = [s for s in start.spans if s.tail]
    if tail:
        lines += ["", "after the start (not part of the wall time)",
                  f"  {'side':<8} {'state':<20} {'at ms':>8} {'dur ms':>8}"]
        for span in tail:
            lines.append(f"  {span.side:<8} {span.state:<20} {_ms(span.begin - start.t0):>8} {_ms(span.duration):>8}")
    return "\n".join(lines)


# --- the picture ----------------------------------------------------------------------------------

COLOURS = {"monitor": ("#3f6fb0", "#e9f0fa"), "child": ("#d0782a", "#fbefe2")}
TAIL_COLOUR = "#9aa3ad"
_ROW, _BAR = 20, 12
_LABEL_X, _PLOT_X, _PLOT_W, _TAIL_W, _DUR_W = 16, 196, 620, 150, 84
_WIDTH = _PLOT_X + _PLOT_W + 16 + _TAIL_W + _DUR_W + 16


def _tick_step(total_ms: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000):
        if total_ms / step <= 10:
            return step
    return 10 ** math.ceil(math.log10(total_ms / 10))


class _Axis:
    """Milliseconds since the start -> x.  Linear, unless the child's part of the start would be
    squashed: then that part (from the child's first state to the end) gets ZOOM_SHARE of the
    width, and the axis shows where its scale changes."""

    ZOOM_SHARE = 0.5

    def __init__(self, wall_ms: float, child_ms: float | None) -> None:
        self.wall = max(wall_ms, 1e-3)
        self.cut = None
        if child_ms is not None and 0 < child_ms < self.wall and (self.wall - child_ms) / self.wall < 0.35:
            self.cut = child_ms
        if self.cut is None:
            self.parts = [(0.0, self.wall, 0.0, float(_PLOT_W))]
        else:
            split = _PLOT_W * (1 - self.ZOOM_SHARE)
            self.parts = [(0.0, self.cut, 0.0, split), (self.cut, self.wall, split, float(_PLOT_W))]

    def x(self, ms: float) -> float:
        for lo, hi, x0, x1 in self.parts:
            if ms <= hi or (lo, hi, x0, x1) == self.parts[-1]:
                return _PLOT_X + x0 + (ms - lo) * (x1 - x0) / ((hi - lo) or 1e-9)
        return _PLOT_X + _PLOT_W

    @property
    def zoom(self) -> float:
        """How much wider a millisecond is after the cut than before it."""
        (lo, hi, x0, x1), (lo2, hi2, x2, x3) = self.parts
        return ((x3 - x2) / (hi2 - lo2)) / ((x1 - x0) / (hi - lo))

    def ticks(self) -> list[float]:
        found = []
        for lo, hi, x0, x1 in self.parts:
            step = _tick_step((hi - lo) * _PLOT_W / max(x1 - x0, 1))
            tick = math.ceil(lo / step - 1e-9) * step
            while tick <= hi + 1e-9:
                if all(abs(self.x(tick) - self.x(t)) >= 26 for t in found):
                    found.append(round(tick, 6))
                tick += step
        return found


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "start", fill: str = "#222",
          weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}"{extra}>{escape(text)}</text>')


def _box(x: float, y: float, w: float, h: float, fill: str, extra: str = "") -> str:
    """A filled box drawn as a path: <rect> is kept for the state bars alone."""
    return f'<path d="M{x:.1f},{y:.1f}h{w:.1f}v{h:.1f}h{-w:.1f}z" fill="{fill}"{extra}/>'


def _sync_arrows(start: Start, x, row_y: dict[int, float]) -> list[str]:
    """Sync messages: from the waker's row at the wake to the waiter's row where it was taken."""
    span_of = {id(e): s for s in start.spans for e in s.events}
    arrows = []
    for wait in start.waits:
        if wait.wake is None or wait.begin >= start.t_end:
            continue
        source = span_of.get(id(wait.wake))
        target = next((s for s in start.spans if s.side == wait.side and s.state == wait.state
                       and s.begin <= wait.begin <= s.end), None)
        if source is None or target is None or source.tail or target.tail:
            continue
        x1, x2 = x(wait.wake["time"]), x(max(wait.wake["time"], wait.begin))
        y1, y2 = row_y[id(source)] + _ROW / 2, row_y[id(target)] + _ROW / 2
        down = y2 > y1
        y1 += (_BAR / 2) if down else -(_BAR / 2)
        y2 -= (_BAR / 2 + 1) if down else -(_BAR / 2 + 1)
        arrows.append((x1, y1, x2, y2, wait.sequence))
    # Messages of one millisecond (LXC's line format) would be drawn on top of each other:
    # each one close to the one before moves 10 px to the right of it.
    arrows.sort(key=lambda a: a[0])
    out, previous = [], None
    for i, (x1, y1, x2, y2, sequence) in enumerate(arrows):
        shift = max(0.0, previous + 10 - x1) if i and x1 - arrows[i - 1][0] < 10 else 0.0
        x1, x2, previous = x1 + shift, x2 + shift, x1 + shift
        out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#444" '
                   f'stroke-width="1.2" marker-end="url(#arrow)" class="sync"/>')
        mx, my = (x1 + x2) / 2 - 3, (y1 + y2) / 2
        out.append(_text(mx, my, sequence, size=9, anchor="middle", fill="#444",
                         extra=f' transform="rotate(-90 {mx:.1f} {my:.1f})"'))
    return out


def _legend(start: Start, ly: float) -> list[str]:
    out = []
    lx = _LABEL_X
    for label, colour, hatch in (("monitor state", COLOURS["monitor"][0], False),
                                 ("child state", COLOURS["child"][0], False),
                                 ("waiting at a sync barrier", COLOURS["monitor"][0], True),
                                 ("after the start", TAIL_COLOUR, False)):
        out.append(_box(lx, ly - 10, 18, 12, colour))
        if hatch:
            out.append(_box(lx, ly - 10, 18, 12, "url(#waiting)"))
        out.append(_text(lx + 24, ly, label))
        lx += 30 + 7 * len(label)
    out.append(f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 24:.1f}" y2="{ly - 4}" stroke="#444" '
               f'stroke-width="1.2" marker-end="url(#arrow)"/>')
    out.append(_text(lx + 30, ly, "sync message: a wake, to the side waiting for it"))
    out.append(_text(_LABEL_X, ly + 20,
                     f"monitor {_ms(start.covered('monitor'))} ms, child {_ms(start.covered('child'))} ms "
                     f"(offset + states) of {_ms(start.wall)} ms wall time", size=10, fill="#666"))
    return out


def svg(start: Start, path: str = "") -> str:
    """The start as a waterfall: one row and one <rect> per state, a lane per side, sync arrows."""
    wall_ms = max(start.wall * 1000, 1e-3)
    child = start.side_spans("child")
    axis = _Axis(wall_ms, (child[0].begin - start.t0) * 1000 if child else None)

    def x(t: float) -> float:
        return axis.x((t - start.t0) * 1000)

    rows: list[tuple[str, object]] = []          # ("lane", side) or ("span", Span)
    for side in SIDES:
        spans = [s for s in start.spans if s.side == side]
        if spans:
            rows.append(("lane", side))
            rows += [("span", s) for s in spans]
    top = 92
    height = top + len(rows) * _ROW + 70
    row_y = {id(item): top + i * _ROW for i, (_kind, item) in enumerate(rows)}
    tail_x = _PLOT_X + _PLOT_W + 16

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
           f'viewBox="0 0 {_WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           '<defs>'
           '<pattern id="waiting" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
           '<path d="M0,0v6" stroke="#ffffff" stroke-width="3" stroke-opacity="0.7"/></pattern>'
           '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0L10,5L0,10z" fill="#444"/></marker>'
           '</defs>',
           _box(0, 0, _WIDTH, height, "#ffffff")]
    verdict = {"running": f"RUNNING after {_ms(start.wall)} ms",
               "aborted": f"FAILED: aborting after {_ms(start.wall)} ms",
               "incomplete": f"log ends after {_ms(start.wall)} ms"}[start.outcome]
    out.append(_text(_LABEL_X, 26, f"{start.name or 'container'}: start {start.index} of {start.count} - {verdict}",
                     size=15, weight="bold"))
    pids = ", ".join(f"{side} pid {pid}" for side, pid in start.pids.items())
    out.append(_text(_LABEL_X, 44, " - ".join(p for p in (pids, os.path.basename(path)) if p), fill="#666"))

    # Lane backgrounds, then the time grid over them.
    for kind, item in rows:
        if kind == "lane":
            spans = [s for s in start.spans if s.side == item]
            y0 = row_y[id(item)]
            out.append(_box(0, y0, _WIDTH, _ROW * (len(spans) + 1), COLOURS[item][1]))
            out.append(_text(_LABEL_X, y0 + 14, f"{item} (pid {start.pids.get(item, '?')})", size=12,
                             weight="bold", fill=COLOURS[item][0]))
    bottom = top + len(rows) * _ROW
    if axis.cut is not None:
        cut_x = axis.x(axis.cut)
        out.append(_box(cut_x, top - 8, _PLOT_X + _PLOT_W - cut_x, bottom - top + 8, "#000000",
                        ' fill-opacity="0.04"'))
        out.append(_text((cut_x + _PLOT_X + _PLOT_W) / 2, top - 34, f"child's part, zoomed x{axis.zoom:.0f}",
                         size=10, anchor="middle", fill="#666"))
        out.append(f'<path d="M{cut_x - 4:.1f},{top - 4}l4,-8m0,8l4,-8" stroke="#666" fill="none"/>')
    for tick in axis.ticks():
        tx = axis.x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{bottom}" stroke="#cfd4da" '
                   f'stroke-width="1"/>')
        out.append(_text(tx, top - 12, f"{tick:g}", size=10, anchor="middle", fill="#666"))
    out.append(_text(_PLOT_X - 8, top - 12, "ms", size=10, anchor="end", fill="#666"))
    end_x = _PLOT_X + _PLOT_W
    end_colour = "#2e8b3a" if start.outcome == "running" else "#c0392b"
    out.append(f'<line x1="{end_x}" y1="{top - 30}" x2="{end_x}" y2="{bottom}" stroke="{end_colour}" '
               f'stroke-width="2" stroke-dasharray="5,3"/>')
    out.append(_text(end_x, top - 34, {"running": "RUNNING", "aborted": "ABORTING",
                                       "incomplete": "END OF LOG"}[start.outcome],
                     size=10, anchor="middle", fill=end_colour, weight="bold"))
    tail = [s for s in start.spans if s.tail]
    if tail:
        out.append(_text(tail_x + _TAIL_W / 2, top - 12, "afterwards (not to scale)", size=10,
                         anchor="middle", fill="#666"))
    out.append(_text(_WIDTH - 16, top - 12, "duration", size=10, anchor="end", fill="#666"))

    # Tail bars share the tail column in proportion to log(1 + ms), so a long poll
    # does not hide a short stopping.
    weights = [math.log1p(s.duration * 1000) + 0.3 for s in tail]
    tail_pos, cursor = {}, tail_x
    for span, weight in zip(tail, weights, strict=True):
        width = max(6.0, (_TAIL_W - 2 * len(tail)) * weight / sum(weights))
        tail_pos[id(span)] = (cursor, width)
        cursor += width + 2

    # One <rect> per state.
    for kind, item in rows:
        if kind != "span":
            continue
        span: Span = item
        y = row_y[id(span)]
        out.append(_text(_PLOT_X - 8, y + 14, span.state, anchor="end"))
        if span.tail:
            bx, bw = tail_pos[id(span)]
            colour = TAIL_COLOUR
        else:
            bx, bw = x(span.begin), max(2.0, x(span.end) - x(span.begin))
            colour = COLOURS[span.side][0]
        tip = (f"{span.side} {span.state}: at {_ms(span.begin - start.t0)} ms, "
               f"{_ms(span.duration)} ms, {len(span.events)} events")
        out.append(f'<rect x="{bx:.1f}" y="{y + (_ROW - _BAR) / 2:.1f}" width="{bw:.1f}" height="{_BAR}" '
                   f'rx="2" fill="{colour}" class="state {span.side}" data-state={quoteattr(span.state)}>'
                   f'<title>{escape(tip)}</title></rect>')
        out.append(_text(_WIDTH - 16, y + 14, f"{_ms(span.duration)} ms", anchor="end",
                         fill="#222" if not span.tail else "#666"))

    # Waiting at a barrier: the hatched part of a bar.
    for wait in start.waits:
        span = next((s for s in start.spans if s.side == wait.side and not s.tail
                     and s.begin <= wait.begin <= s.end and s.state == wait.state), None)
        if span is None or wait.waited <= 0:
            continue
        y = row_y[id(span)] + (_ROW - _BAR) / 2
        wx = x(wait.begin)
        ww = max(1.0, min(x(wait.end), x(span.end)) - wx)
        out.append(_box(wx, y, ww, _BAR, "url(#waiting)", ' class="wait"'))

    out += _sync_arrows(start, x, row_y)
    out += _legend(start, bottom + 30)
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- PNG ------------------------------------------------------------------------------------------

def _is_imagemagick(program: str) -> bool:
    try:
        done = subprocess.run([program, "-version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and "Version: ImageMagick" in done.stdout


# Programs that render SVG to PNG, in order of preference: name, command line, how to tell it is real.
CONVERTERS = (
    ("rsvg-convert", lambda svg_path, png: ["rsvg-convert", "--format", "png", "--output", png, svg_path], None),
    ("magick", lambda svg_path, png: ["magick", svg_path, png], _is_imagemagick),
    ("convert", lambda svg_path, png: ["convert", svg_path, png], _is_imagemagick),
    ("inkscape", lambda svg_path, png: ["inkscape", svg_path, "--export-type=png", f"--export-filename={png}"],
     None),
)
NO_CONVERTER = ("--png needs a program that renders SVG and none is installed: install rsvg-convert "
                "(Debian: apt-get install librsvg2-bin) or ImageMagick, or write --svg FILE instead")


def find_converter():
    """(name, argv builder) of the first SVG renderer installed, or None."""
    for name, command, real in CONVERTERS:
        if shutil.which(name) and (real is None or real(name)):
            return name, command
    return None


def write_png(svg_text: str, png_path: str, converter) -> None:
    name, command = converter
    with tempfile.TemporaryDirectory(prefix="lxcsm-timeline-") as tmp:
        svg_path = os.path.join(tmp, "timeline.svg")
        with open(svg_path, "w") as out:
            out.write(svg_text)
        try:
            done = subprocess.run(command(svg_path, os.path.abspath(png_path)), capture_output=True, text=True,
                                  timeout=120)
        except (OSError, subprocess.SubprocessError) as err:
            raise LogError(f"{name}: {err}") from None
    problem = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
    if done.returncode != 0:
        raise LogError(f"{name} could not write {png_path}: {problem}")
    try:
        with open(png_path, "rb") as png:
            if png.read(8) != b"\x89PNG\r\n\x1a\n":
                raise LogError(f"{name} wrote {png_path}, but it is not a PNG")
    except OSError as err:
        raise LogError(f"{name} did not write {png_path}: {err.strerror}") from None


# --- the command --------------------------------------------------------------------------------

