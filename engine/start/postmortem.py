"""What is left to read after a start: the flight record, on screen and on disk.

When a start fails, the user gets - unasked, at any log level - the failed
state and side, the error, and the last events of the start from both
machines, interleaved in time (engine/log.py's flight recorder).  LXC says
"run the container in foreground mode with --logfile and --logpriority"
instead; by then the failure may not happen again.

Every start also leaves its recorded events in ``lxcsm-last-start.log`` (JSON
lines, at most the recorder's 200 events) next to the container's config, so
`lxcsm explain-failure NAME` can show why a daemonised start failed
yesterday, and `lxcsm timeline` can draw it.

Neither that file nor the -o log (`LogFile`) may end a container or its
cleanup when the disk under them is full: what cannot be written is dropped,
and said once, naming the file.
"""

from __future__ import annotations

import os
import sys

from lxcsm.engine import log as logmod
from lxcsm.engine.errors import describe

LAST_START = "lxcsm-last-start.log"
SHOWN_EVENTS = 50
# The events that say a file could not be written, and how the failure report says it.
NOT_KEPT = "flight record not kept"
LOG_NOT_WRITTEN = "log file not written"
NOT_WRITTEN = {NOT_KEPT: "this start's events could not be kept in", LOG_NOT_WRITTEN: "the log could not be written to"}
_not_kept: set[str] = set()   # last-start files already said to be unwritable


def last_start_path(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), LAST_START)


def save(config_path: str, log) -> str | None:
    """Write the flight recorder to the last-start file: its path, or None if it cannot be
    written (said once per file, at ERROR, and by the failure report)."""
    path = last_start_path(config_path)
    events = sorted(logmod.flight_recorder.events, key=lambda e: e["time"])
    try:
        with open(path + ".tmp", "w") as out:
            out.writelines(logmod.render_json(e) + "\n" for e in events)
        os.replace(path + ".tmp", path)
    except OSError as err:
        try:
            os.unlink(path + ".tmp")   # half a record is no record; the old one stays
        except OSError:
            pass
        if path not in _not_kept:
            _not_kept.add(path)
            log.error(NOT_KEPT, file=path, error=describe(err))
        return None
    return path


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
