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
"""

from __future__ import annotations

import os

from lxcsm.engine import log as logmod

LAST_START = "lxcsm-last-start.log"
SHOWN_EVENTS = 50


def last_start_path(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), LAST_START)


def save(config_path: str) -> str | None:
    """Write the flight recorder to the last-start file; its path, or None if it cannot be written."""
    path = last_start_path(config_path)
    events = sorted(logmod.flight_recorder.events, key=lambda e: e["time"])
    try:
        with open(path + ".tmp", "w") as out:
            out.writelines(logmod.render_json(e) + "\n" for e in events)
        os.replace(path + ".tmp", path)
    except OSError:
        return None
    return path


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
    return "\n".join(lines)
