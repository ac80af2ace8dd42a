"""What a start is doing right now: the answer to lxcsm's START_STATUS command.

The monitor sees every event of a start - its own, and the child's, which
arrive over the sync channel as LOG frames - so where each machine stands is
in those events: a ``state`` event is a machine entering a state, a ``hook``
event a hook running (with its pid), ``hook output`` its lines, ``hook
ended`` its end, ``paused``/``resumed`` a breakpoint.  `StartStatus.observe`
keeps the latest of each; `snapshot` is what `lxcsm info NAME` and `lxcsm
continue` are told, as JSON: each machine's state and for how long, the
running hook (side, state, kind, command, pid, how long, its output so far),
how long the start has taken, and the pause it is at (with the text the
pause printed), and in lab mode the steps left out so far (``lab skipped``
events).  Times are the events' own (wall clock), made durations when
asked.
"""

from __future__ import annotations

import json
import os
import time

OUTPUT_LINES = 20       # the running hook's last lines kept
LINE_CHARS = 200        # ... each cut to this many characters
PAUSE_TEXT_CHARS = 4096   # a reply must stay well below the protocol's 8 KiB


class StartStatus:
    __slots__ = ("started", "running_since", "states", "hook", "paused", "pauses", "pause_text", "lab_skipped")

    def __init__(self) -> None:
        self.started = time.time()               # the boot's init_handler, once seen
        self.running_since: float | None = None  # the monitor's poll: init runs
        # side -> (state, entered at); made by init_handler, before it sees any event
        self.states: dict[str, tuple[str, float]] = {"monitor": ("init_handler", self.started)}
        self.hook: dict | None = None            # the hook running now, if any
        self.paused: str | None = None           # "side:state" the start is paused before
        self.pauses = 0                          # how many pauses so far: `continue` waits for the next
        self.pause_text = ""
        self.lab_skipped: list[str] = []         # lab mode: the steps left out, as their states are reached

    def observe(self, event: dict) -> None:
        """Take in one event.  A child's hook pid is the one in the container's pid namespace:
        it is made the host's here, in the event itself, so the log names a pid the host can use."""
        kind, side = event.get("event"), event.get("side", "monitor")
        if side == "child" and "hook_pid" in event and "pid" in event:
            event["hook_pid_inside"] = event["hook_pid"]
            event["hook_pid"] = _host_pid(event["pid"], event["hook_pid"])
        if kind == "state":
            state = event["state"]
            if side == "monitor" and state == "init_handler":   # a new boot: a new start
                self.started, self.running_since, self.hook = event["time"], None, None
                self.states.clear()
            elif side == "monitor" and state == "spawn":
                self.states.pop("child", None)
            elif side == "monitor" and state == "poll":
                self.running_since = event["time"]
            self.states[side] = (state, event["time"])
        elif kind == "hook":
            self.hook = {"side": side, "state": event.get("category", ""), "kind": event.get("kind", ""),
                         "command": event.get("command", ""), "pid": event.get("hook_pid", 0),
                         "since": event["time"], "output": []}
        elif kind == "hook output" and self.hook is not None and self.hook["side"] == side:
            self.hook["output"] = [*self.hook["output"][-(OUTPUT_LINES - 1):], str(event.get("line", ""))[:LINE_CHARS]]
        elif kind == "hook ended" and self.hook is not None and self.hook["side"] == side:
            self.hook = None
        elif kind == "paused":
            self.paused = event.get("before")
            self.pauses += 1
        elif kind == "resumed":
            self.paused = None
        elif kind == "lab skipped" and event.get("skip") not in self.lab_skipped:
            self.lab_skipped.append(str(event.get("skip")))

    def snapshot(self, lxc_state: str, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        hook = None
        if self.hook is not None:
            hook = {**self.hook, "for": round(now - self.hook["since"], 3)}
            del hook["since"]
        return {
            "state": lxc_state,
            "start_for": round((self.running_since or now) - self.started, 3),
            "running_for": round(now - self.running_since, 3) if self.running_since is not None else None,
            "machines": {side: {"state": state, "for": round(now - since, 3)}
                         for side, (state, since) in self.states.items()},
            "hook": hook,
            "paused": self.paused,
            "pauses": self.pauses,
            "pause_text": self.pause_text[:PAUSE_TEXT_CHARS] if self.paused else "",
            "lab_skipped": self.lab_skipped,
        }

    def encode(self, lxc_state: str) -> bytes:
        return json.dumps(self.snapshot(lxc_state)).encode()


def _host_pid(parent: int, inside: int) -> int:
    """The host's pid of `parent`'s child whose pid in its own namespace is `inside` (NSpid's
    last field); `inside` itself if it cannot be found (gone already)."""
    children = []
    try:
        for task in os.listdir(f"/proc/{parent}/task"):
            with open(f"/proc/{parent}/task/{task}/children") as listed:
                children += [int(pid) for pid in listed.read().split()]
    except OSError:
        return inside
    for pid in children:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("NSpid:") and int(line.split()[-1]) == inside:
                        return pid
        except OSError:
            continue
    return inside


def decode(data: bytes) -> dict:
    return json.loads(data.decode(errors="replace").rstrip("\0"))
