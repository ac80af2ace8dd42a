"""`lxcsm timeline LOG --chrome-trace FILE`: a start as Chrome's trace-event JSON, for Perfetto.

Open the file at https://ui.perfetto.dev (or chrome://tracing): the monitor and
the child are two processes, each one track (pid and tid are the process's own
pid from the log), with

* a complete event ("ph": "X") per state, from its state event to the next;
* a complete event per wait at a sync barrier, nested in the state that waited;
* an instant event ("ph": "i") per sync message sent, and a flow arrow ("s" to
  "f") from the wake to the end of the peer's wait;
* an instant event per other log event of the start, its fields as args.

Times are microseconds from the monitor entering init_handler; the epoch time
of that moment is in ``otherData``.  The format is the Trace Event Format's
JSON object form (``traceEvents``, ``displayTimeUnit``, ``otherData``).
"""

from __future__ import annotations

from lxcsm.engine.analysis.timeline import SIDES, Start

_SKIPPED_ARGS = ("event", "time", "side", "pid", "name", "level")


def _pid(start: Start, side: str) -> int:
    """The side's pid from the log; a stand-in (1 monitor, 2 child) when the log has none."""
    pid = start.pids.get(side)
    return pid if isinstance(pid, int) else SIDES.index(side) + 1


def trace_events(start: Start, path: str = "") -> dict:
    """The start as a trace-event JSON object (json.dump it)."""
    def us(t: float) -> float:
        return round((t - start.t0) * 1e6, 3)

    events: list[dict] = []
    for order, side in enumerate(SIDES):
        if side not in start.pids:
            continue
        pid = _pid(start, side)
        label = f"lxcsm {side} (pid {start.pids[side]})"
        events += [{"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "args": {"name": label}},
                   {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": pid, "args": {"sort_index": order}},
                   {"ph": "M", "name": "thread_name", "pid": pid, "tid": pid, "args": {"name": f"{side} machine"}}]
    span_of = {}
    for span in start.spans:
        pid = _pid(start, span.side)
        events.append({"ph": "X", "cat": "state", "name": span.state, "pid": pid, "tid": pid,
                       "ts": us(span.begin), "dur": round(us(span.end) - us(span.begin), 3),
                       "args": {"side": span.side, "events": len(span.events),
                                "after RUNNING": span.tail}})
        for event in span.events:
            span_of[id(event)] = span
            if event.get("event") == "state":
                continue
            args = {k: v for k, v in event.items() if k not in _SKIPPED_ARGS}
            if event.get("event") == "sync wake":
                events.append({"ph": "i", "s": "t", "cat": "sync", "name": f"sends {event.get('sequence')}",
                               "pid": pid, "tid": pid, "ts": us(event["time"]), "args": args})
            else:
                events.append({"ph": "i", "s": "t", "cat": "event", "name": str(event.get("event")), "pid": pid,
                               "tid": pid, "ts": us(event["time"]), "args": args})
    for number, wait in enumerate(start.waits, 1):
        pid = _pid(start, wait.side)
        waited_in = next((s for s in start.spans if s.side == wait.side and s.begin <= wait.begin <= s.end), None)
        end = min(wait.end, waited_in.end) if waited_in is not None else wait.end
        events.append({"ph": "X", "cat": "sync wait", "name": f"wait {wait.sequence}", "pid": pid, "tid": pid,
                       "ts": us(wait.begin), "dur": round(max(0.0, us(end) - us(wait.begin)), 3),
                       "args": {"sequence": wait.sequence, "ended by": wait.ended_by}})
        if wait.wake is None or id(wait.wake) not in span_of:
            continue
        sender = _pid(start, str(wait.wake.get("side")))
        events.append({"ph": "s", "cat": "sync", "name": wait.sequence, "id": number, "pid": sender, "tid": sender,
                       "ts": us(wait.wake["time"])})
        events.append({"ph": "f", "bp": "e", "cat": "sync", "name": wait.sequence, "id": number, "pid": pid,
                       "tid": pid, "ts": us(max(end, wait.wake["time"]))})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"container": start.name, "log": path, "start": f"{start.index} of {start.count}",
                          "outcome": start.outcome, "t0 (epoch seconds)": start.t0,
                          "wall time (ms)": round(start.wall * 1000, 3)}}
