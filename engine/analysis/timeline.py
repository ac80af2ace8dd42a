"""`lxcsm timeline`: where the time of a start went, state by state, on both sides.

    lxcsm timeline LOGFILE [--start N] [--svg FILE | --png FILE] [--chrome-trace FILE]
    lxcsm timeline LOGFILE... [--runs N]

Reads any lxcsm log written at TRACE - LXC's line format or JSON lines, even
mixed, and the ``lxcsm-last-start.log`` a start leaves next to its config
(engine/analysis/log_reader.py) - and prints a table of every state each
machine entered, with its offset from the start and its duration, then the
time each side spent blocked at each sync barrier.  ``--svg``/``--png`` draw
the same as a waterfall (engine/analysis/timeline_picture.py).

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

Several logs, or ``--runs N`` (the last N starts that reached RUNNING in the
logs given), give each state's median offset and duration with its minimum
and maximum (`medians`): one start is one sample, and single starts on a busy
machine vary by a third.  The tables say what the timestamps can resolve:
LXC's line format has whole milliseconds, JSON lines microseconds.
``--chrome-trace`` writes one start for Perfetto (engine/analysis/chrome_trace.py).

A sync barrier is a ``sync wait`` event (side, sequence).  The side waited
until the peer's ``sync wake`` with the same sequence (zero if the peer had
woken it before it began to wait), or, when the peer sends nothing - the
monitor's wait for ``exec`` ends at end-of-file - until that side's next event.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.start.machine import TABLES

SIDES = ("monitor", "child")


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
    ordered = sorted(spans["monitor"] + spans["child"], key=lambda s: (s.tail, s.begin))
    outcome = "incomplete" if end_span is None else "running" if end_span.state == "poll" else "aborted"
    pids = {}
    for side in SIDES:
        first = next((s for s in ordered if s.side == side), None)
        if first is not None:
            pids[side] = first.pid
    return Start(index, len(starts), str(events[0].get("name", "")), events[0]["time"], t_end, outcome,
                 ordered, _waits(events, ordered), pids)


# --- the table ----------------------------------------------------------------------------------

BAR_WIDTH = 40


def fmt_ms(seconds: float) -> str:
    """Seconds as the milliseconds the tables print: one decimal below 10 s."""
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
    """The start as text: each state's offset, duration and share with a waterfall bar, each side's
    sum (the check that it covers the wall time), the waits at sync barriers, the states afterwards."""
    head = f"{start.name or 'container'}: start {start.index} of {start.count}"
    if path:
        head += f" in {path}"
    pids = ", ".join(f"{side} pid {pid}" for side, pid in start.pids.items())
    end = {"running": "RUNNING (monitor entered poll)", "aborted": "FAILED (monitor entered aborting)",
           "incomplete": "the end of the log (the start never reached poll)"}[start.outcome]
    lines = [head + (f" ({pids})" if pids else ""),
             f"wall time {fmt_ms(start.wall)} ms: from init_handler at "
             f"{time.strftime('%H:%M:%S', time.localtime(start.t0))}.{int(start.t0 * 1000) % 1000:03d} to {end}",
             resolution_note([e for s in start.spans for e in s.events]),
             "",
             f"  {'side':<8} {'state':<20} {'at ms':>8} {'dur ms':>8} {'%':>6}  "
             f"{'waterfall (# working, ~ waiting at a sync barrier)'}"]
    for span in start.spans:
        if span.tail:
            continue
        share = 100 * span.duration / start.wall if start.wall > 0 else 0
        lines.append(f"  {span.side:<8} {span.state:<20} {fmt_ms(span.begin - start.t0):>8} "
                     f"{fmt_ms(span.duration):>8} {share:>6.1f}  {_bar(start, span)}")
    lines.append("")
    for side in SIDES:
        spans = start.side_spans(side)
        if not spans:
            lines.append(f"  {side}: no states in this start")
            continue
        total = sum(s.duration for s in spans)
        share = 100 * start.covered(side) / start.wall if start.wall > 0 else 100.0
        offset = start.offset(side)
        lines.append(f"  {side:<8} {len(spans)} states, {fmt_ms(total)} ms"
                     + (f" after an offset of {fmt_ms(offset)} ms" if offset > 0 else "")
                     + f" = {share:.1f}% of the wall time")

    lines += ["", "sync barriers: how long each side was blocked, by sequence",
              f"  {'side':<8} {'sequence':<15} {'in state':<20} {'at ms':>8} {'wait ms':>8}  ended by"]
    for wait in start.waits:
        if wait.begin >= start.t_end and start.outcome != "incomplete":
            continue
        lines.append(f"  {wait.side:<8} {wait.sequence:<15} {wait.state:<20} {fmt_ms(wait.begin - start.t0):>8} "
                     f"{fmt_ms(wait.waited):>8}  {wait.ended_by}")
    if not start.waits:
        lines.append("  (no sync events in this start)")
    for side in SIDES:
        mine = [w.waited for w in start.waits if w.side == side]
        if mine:
            lines.append(f"  {side:<8} waited {fmt_ms(sum(mine))} ms in all "
                         f"({100 * sum(mine) / start.wall if start.wall > 0 else 0:.1f}% of the wall time)")

    tail = [s for s in start.spans if s.tail]
    if tail:
        lines += ["", "after the start (not part of the wall time)",
                  f"  {'side':<8} {'state':<20} {'at ms':>8} {'dur ms':>8}"]
        for span in tail:
            lines.append(f"  {span.side:<8} {span.state:<20} {fmt_ms(span.begin - start.t0):>8} "
                         f"{fmt_ms(span.duration):>8}")
    return "\n".join(lines)


# --- several starts: medians -----------------------------------------------------------------------

@dataclass
class Medians:
    """Per-state durations of several starts of one container, by median."""
    starts: list[tuple[str, Start]]                       # (log path, start), the starts summarised
    left_out: list[tuple[str, Start]]                     # starts that did not reach RUNNING
    rows: list[tuple[str, str, list[float], list[float]]]  # (side, state, offsets, durations)
    waits: list[tuple[str, str, list[float]]]             # (side, sequence, waited)

    @property
    def walls(self) -> list[float]:
        return [start.wall for _path, start in self.starts]


def medians(found: list[tuple[str, Start]], runs: int | None = None) -> Medians:
    """The starts that reached RUNNING (the last `runs` of them, if given), state by state.

    A state missing from some starts (a reboot's, a state added between two runs) is
    summarised over the starts that have it; the table says how many those are."""
    running = [(path, start) for path, start in found if start.outcome == "running"]
    left_out = [(path, start) for path, start in found if start.outcome != "running"]
    if not running:
        raise LogError("no start in these logs reached RUNNING: nothing to take medians of")
    if runs is not None:
        if len(running) < runs:
            raise LogError(f"--runs {runs}: the logs hold {len(running)} start{'s' * (len(running) != 1)} "
                           f"that reached RUNNING")
        running = running[-runs:]
    rows: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    waits: dict[tuple[str, str], list[float]] = {}
    for _path, start in running:
        for span in start.spans:
            if not span.tail:
                offsets, durations = rows.setdefault((span.side, span.state), ([], []))
                offsets.append(span.begin - start.t0)
                durations.append(span.duration)
        for wait in start.waits:
            if wait.begin < start.t_end:
                waits.setdefault((wait.side, wait.sequence), []).append(wait.waited)
    ordered = sorted(rows.items(), key=lambda item: statistics.median(item[1][0]))
    return Medians(running, left_out, [(side, state, offsets, durations) for (side, state), (offsets, durations)
                                       in ordered],
                   [(side, sequence, waited) for (side, sequence), waited in waits.items()])


def _spread(values: list[float]) -> str:
    return f"{fmt_ms(statistics.median(values)):>8} {fmt_ms(min(values)):>8} {fmt_ms(max(values)):>8}"


def median_table(summary: Medians) -> str:
    """Each state's median offset and duration (with min and max) over several starts."""
    n = len(summary.starts)
    names = sorted({start.name for _path, start in summary.starts if start.name})
    logs = list(dict.fromkeys(path for path, _start in summary.starts))
    lines = [f"{', '.join(names) or 'container'}: medians of {n} start{'s' * (n != 1)} that reached RUNNING, "
             f"from {len(logs)} log{'s' * (len(logs) != 1)} ({', '.join(logs)})"]
    if summary.left_out:
        lines.append(f"left out: {len(summary.left_out)} start{'s' * (len(summary.left_out) != 1)} that did not "
                     f"reach RUNNING")
    lines.append(f"wall time: median {fmt_ms(statistics.median(summary.walls))} ms "
                 f"(min {fmt_ms(min(summary.walls))}, max {fmt_ms(max(summary.walls))})")
    lines.append(resolution_note([e for _path, start in summary.starts for s in start.spans for e in s.events]))
    lines += ["", f"  {'side':<8} {'state':<20} {'at ms':>8} {'dur ms':>8} {'min':>8} {'max':>8}  of starts"]
    for side, state, offsets, durations in summary.rows:
        lines.append(f"  {side:<8} {state:<20} {fmt_ms(statistics.median(offsets)):>8} {_spread(durations)}  "
                     f"{len(durations)}/{n}")
    if summary.waits:
        lines += ["", "sync barriers: median wait by side and sequence",
                  f"  {'side':<8} {'sequence':<15} {'wait ms':>8} {'min':>8} {'max':>8}  of starts"]
        for side, sequence, waited in summary.waits:
            lines.append(f"  {side:<8} {sequence:<15} {_spread(waited)}  {len(waited)}/{n}")
    return "\n".join(lines)


def resolution_note(events: list[dict]) -> str:
    """What the log's timestamps can tell: LXC's line format has whole milliseconds, JSON lines more."""
    coarse = [abs(e["time"] * 1000 - round(e["time"] * 1000)) < 1e-3 for e in events]
    advice = "a duration under a few ms is mostly rounding; lxcsm start --log-format json writes microseconds"
    if all(coarse):
        return f"timestamps: whole milliseconds (LXC's line format): {advice}"
    if sum(coarse) > len(coarse) / 10:    # by chance, one JSON stamp in a thousand is a whole millisecond
        return f"timestamps: whole milliseconds in part of the log (LXC's line format): {advice}"
    return "timestamps: microseconds (JSON lines)"
