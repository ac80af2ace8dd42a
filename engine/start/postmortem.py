"""What is left to read after a start: the flight record, on screen and on disk.

When a start fails, the user gets - unasked, at any log level - the failed
state and side, the error, and the last events of the start from both
machines, interleaved in time (engine/log.py's flight recorder).  LXC says
"run the container in foreground mode with --logfile and --logpriority"
instead; by then the failure may not happen again.

Every start also keeps its events, as they happen, in ``lxcsm-last-start.log``
(JSON lines) next to the container's config: the `FlightRecord`.  It is
written while the start runs, not when it ends, so a monitor killed with
SIGKILL leaves the truth behind - its last state, the hook it was running -
for `lxcsm explain-failure NAME`, and `lxcsm timeline` can draw it.  To keep
the start fast, events are rendered as they come but written in batches: at
each state's entry and before every wait that may block (a sync wait, a
hook, a breakpoint, poll's wait), so what a kill can lose is the work of the
moment, never where the monitor stood.  A monitor that ends normally writes
`MONITOR_EXITED` last; a record without it is of a monitor that died.  A
start refused before it began (a bad config) leaves a record of one event,
`REFUSED`.

The file is the running monitor's: a second start of the container, which
learns only at the command socket that the first one runs, must not touch
it.  So a record is *claimed* - truncated and written - once this monitor
holds the container's name (`CLAIMED_BY`), and until then kept in memory.

Neither that file nor the -o log (`LogFile`) may end a container or its
cleanup when the disk under them is full: what cannot be written is dropped,
and said once, naming the file.
"""

from __future__ import annotations

import json
import os
import sys
import time

from lxcsm.engine import log as logmod
from lxcsm.engine.errors import describe

LAST_START = "lxcsm-last-start.log"
SHOWN_EVENTS = 50
# The events that say a file could not be written, and how the failure report says it.
NOT_KEPT = "flight record not kept"
LOG_NOT_WRITTEN = "log file not written"
NOT_WRITTEN = {NOT_KEPT: "this start's events could not be kept in", LOG_NOT_WRITTEN: "the log could not be written to"}
# The record's own events: the monitor's last, a refusal's only one, the gap left by trimming.
MONITOR_EXITED = "monitor exited"
MONITOR_FAILED = "monitor failed"   # an error outside any state: a bug
REFUSED = "start refused"
TRIMMED = "flight record trimmed"
# The event after which this monitor alone holds the container's name (init_handler).
CLAIMED_BY = "command socket bound"
# Events after which the monitor may block (or, for "state", starts a state's work): the
# batch so far is written then.  A child's state or hook counts too: its events arrive while
# the monitor waits for it.
FLUSHED_AFTER = frozenset({"state", "sync wait", "hook", "paused", "started"})
# A long-running container's record (commands served, signals) is bounded: past this size
# it is cut back to the start itself plus the latest events.
MAX_RECORD_BYTES = 1 << 20
KEPT_AFTER_TRIM = 100
_LEVEL_NAMES = tuple(level.name for level in logmod.Level)
_encode = json.JSONEncoder(default=str).encode


DIED_START = "lxcsm-died-start.log"


def last_start_path(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), LAST_START)


def died_start_path(record_path: str) -> str:
    """Where a dead monitor's record is kept aside by the next start, which undoes what it left."""
    return os.path.join(os.path.dirname(record_path), DIED_START)


def record_line(event: dict) -> str:
    """One event as a line of the record: what `logmod.render_json` writes, at a third of its cost."""
    return _encode({**event, "level": _LEVEL_NAMES[event["level"]], "where": str(event.get("where", ""))})


class FlightRecord:
    """The record of one monitor's start(s), appended to its file as the events happen.

    `add` is the flight recorder's file (engine/log.py): every event of both machines
    passes through it.  Whole lines only: a write the disk cut short is truncated away.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.claimed = False
        self.lines: list[str] = []      # rendered, not yet written
        self.size = 0                   # bytes of whole lines in the file
        self.head = 0                   # bytes up to the first RUNNING: never trimmed away
        self.added = self.added_at_head = 0   # events so far, and up to the head
        self.failed = False             # a write failed and was said: later ones are the same story
        self.on_error = lambda error: None
        self.writer = os.getpid()       # the container child is a copy of the monitor: it never writes

    def add(self, event: dict) -> None:
        self.lines.append(record_line(event))
        self.added += 1
        name = event["event"]
        if name in FLUSHED_AFTER or name == CLAIMED_BY:
            if name == "sync wait" and event.get("side") == "child":
                return   # the child blocks, not the monitor: its next wait writes this
            if name == CLAIMED_BY and event.get("side", "monitor") == "monitor":
                self.claim()
            self.flush()
            if name == "started" and not self.head:
                self.head, self.added_at_head = self.size, self.added

    def claim(self) -> None:
        """This monitor holds the container's name: the record on disk is now its own."""
        if self.claimed:
            return
        self.claimed = True
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as err:
            self._failed(err)

    def flush(self) -> None:
        if not self.lines or self.fd < 0 or os.getpid() != self.writer:
            if self.failed:
                self.lines.clear()   # nowhere to go: the ring in memory still has them
            return
        data = ("\n".join(self.lines) + "\n").encode(errors="replace")
        self.lines.clear()
        if self.size + len(data) > MAX_RECORD_BYTES and self.head:
            data = self._trimmed(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as err:
            if written:
                try:
                    os.ftruncate(self.fd, self.size)
                except OSError:
                    pass
            self._failed(err)
            return
        self.size += len(data)

    def _trimmed(self, data: bytes) -> bytes:
        """Cut the file back to the start (up to RUNNING); what follows is a note of the gap
        and the latest events from memory, which the batch `data` is among."""
        try:
            os.ftruncate(self.fd, self.head)
        except OSError:
            return data
        self.size = self.head
        since_head = min(KEPT_AFTER_TRIM, self.added - self.added_at_head)
        latest = sorted(list(logmod.flight_recorder.events)[-since_head:], key=lambda e: e["time"])
        note = {"event": TRIMMED, "level": int(logmod.Level.INFO), "side": "monitor",
                "time": latest[0]["time"] if latest else time.time(),
                "dropped": max(0, self.added - self.added_at_head - len(latest))}
        return ("\n".join([record_line(note), *map(record_line, latest)]) + "\n").encode(errors="replace")

    def _failed(self, err: OSError) -> None:
        self.lines.clear()
        if not self.failed:
            self.failed = True   # first: on_error records an event, which comes back here
            self.on_error(describe(OSError(err.errno, err.strerror, self.path)))

    def close(self, claim: bool = True) -> str | None:
        """Write what is left (claiming the file first unless told not to); the file's path,
        or None if it was not kept."""
        if claim:
            self.claim()
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if self.failed and self.size == 0:   # nothing could be written (a full disk): no empty record
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
        return self.path if self.claimed and not self.failed else None


def record_refusal(config_path: str, lxcpath: str, name: str, error: str, command: tuple[str, ...] = ()) -> None:
    """Keep a start refused before it began as the container's last record (best effort: the
    refusal has been said on stderr already).  A record lives next to a config file: none for
    a config that is missing or not a file.  Never over the record of a container that runs."""
    from lxcsm.engine.protocol import command_client  # only refused starts ask
    from lxcsm.engine.protocol.command_socket import LxcState
    if not os.path.isfile(config_path):
        return
    try:
        if command_client.get_state(lxcpath, name) != LxcState.STOPPED:
            return
    except (command_client.MonitorError, OSError, ValueError):
        return
    event = {"name": name, "side": "cli", "pid": os.getpid(), "category": "start", "event": REFUSED,
             "level": int(logmod.Level.ERROR), "time": time.time(), "error": error, "command": list(command)}
    record = FlightRecord(last_start_path(config_path))
    record.add(event)
    record.close()


class Record:
    """A flight record read back: its events in time order, and what could not be read."""

    def __init__(self, path: str, events: list[dict], unreadable: list[int]) -> None:
        self.path = path
        self.events = events
        self.unreadable = unreadable    # line numbers that are not whole events (a crash mid-write)

    @property
    def finished(self) -> bool:
        """The monitor ended normally (or the start was refused): False for a monitor that died."""
        return any(e["event"] in (MONITOR_EXITED, REFUSED) for e in self.events)


def read(path: str) -> Record:
    """The record at `path`, events sorted by time (stably: the child's arrive late); an OSError
    if there is none."""
    events, unreadable = [], []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
                event["level"] = logmod.Level[event["level"]]
                event["time"] = float(event["time"])
                event["event"] = str(event["event"])
            except (ValueError, KeyError, TypeError):
                unreadable.append(number)
                continue
            events.append(event)
    events.sort(key=lambda e: e["time"])
    return Record(path, events, unreadable)


class LogFile:
    """-o FILE, appended to with one write(2) a line; a line the disk refuses is dropped.

    The first refusal is said once, on stderr and through `on_error` (the monitor's
    logger, into the flight record), and never raised: a full disk under the log must
    not end the container or its cleanup.  Later lines are tried again, so the log goes
    on when there is room again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self.failed = False
        self.on_error = lambda error: None

    def write(self, text: str) -> None:
        data = text.encode(errors="replace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as err:
            if not self.failed:
                self.failed = True   # first: on_error logs, and that line comes back here
                error = describe(err)
                print(f"lxcsm: {self.path}: {error}: log lines are dropped", file=sys.stderr, flush=True)
                self.on_error(error)

    def flush(self) -> None:
        """Every write went to the file already."""


def report(name: str, failure, saved: str | None, with_error_line: bool = True) -> str:
    """The text shown when a start fails: the error, the events that led to it, where they are kept.

    The events shown end with the failure itself; the cleanup that followed is
    summed up in one line (it is in the saved record, event by event).
    """
    events = logmod.recorded()
    failed_at = next((i for i, e in enumerate(events) if e["event"] == "start failed"), len(events) - 1)
    shown = events[max(0, failed_at + 1 - SHOWN_EVENTS): failed_at + 1]
    undone = [e for e in events[failed_at + 1:] if e["event"] in ("undo", "undo failed")]
    lines = [f"lxcsm: {name}: {failure}"] if with_error_line else []
    lines.append(f"lxcsm: the {len(shown)} events that led to it (monitor and child, oldest first):")
    lines += [f"  {logmod.render_lxc(e)}" for e in shown]
    failed_undos = sum(e["event"] == "undo failed" for e in undone)
    lines.append(f"lxcsm: then {len(undone) - failed_undos} changes to the host were undone"
                 + (f", {failed_undos} could not be (see the log)" if failed_undos else ""))
    if saved:
        lines.append(f"lxcsm: this start's events are kept in {saved}")
    lines += [f"lxcsm: {NOT_WRITTEN[e['event']]} {e['file']}: {e['error']}"
              for e in events if e["event"] in NOT_WRITTEN]
    return "\n".join(lines)
