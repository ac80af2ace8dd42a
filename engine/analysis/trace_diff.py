"""`lxcsm trace-diff`: an LXC 5 trace and an lxcsm trace of the same container, phase by phase.

    lxcsm trace-diff LXC_TRACE LXCSM_LOG [--start N] [--lxc-start N] [--annotate]

LXC_TRACE is what ``lxc-start -n NAME -l TRACE -o FILE`` writes; LXCSM_LOG is
an lxcsm log at TRACE, in either of its formats.  Each LXC line is given a
*phase*: the lxcsm state (side and state) that does the same work, or a phase
only LXC has.  The output is one table of the phases in LXC's order with both
sides' columns - LXC's first line, time and number of lines; lxcsm's time,
duration and number of events - marking the phases only one of them has,
the phases whose order on their side differs, and the phases LXC does in
several places (``split``).  Then the sync sequences: who wakes whom in each,
in which order.

How LXC lines get their phase
-----------------------------
LXC's lines say neither which process wrote them nor which phase they belong
to; their category and function do.  RULES, in engine/analysis/lxc_phases.py,
is the one place that knows LXC's function names: (category, function,
message pattern) -> phase, first match wins.  A helper used everywhere (mount_utils, parse_vfs_attr) takes the
phase of the line before it.  sync.c's lines are read for their sequence
names (``Parent waking child with sequence startup and waiting with sequence
configure``) and SYNC_PHASES names the lxcsm state that does the same wake or
wait.  A line no rule knows also takes the phase before it, and is listed at
the end so the table can be extended.

LXC 5.0.2 writes its timestamps in UTC, and the milliseconds are the first
three digits of the nanoseconds without zero padding (log.c), so they are
wrong during the first 100 ms of every second.  Order is therefore taken from
line numbers.  A time that is provably such (`mark_wrong_times`: it runs
backwards within its second) is shown as ``?``, and so is every offset from
it; the others cannot be checked, which the output says.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from lxcsm.engine.analysis import log_reader, timeline
from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.analysis.lxc_phases import (
    INHERIT,
    LXC_ONLY,
    LXCSM_ONLY,
    RULES,
    SEQUENCE_ALIASES,
    SEQUENCE_ORDER,
    SYNC,
    SYNC_PHASES,
    Rule,
    is_lxcsm_state,
)
from lxcsm.engine.analysis.timeline import fmt_ms
from lxcsm.engine.start.machine import TABLES

_SYNC_LINE = re.compile(r"^(?P<me>Parent|Child) (?P<kind>waking|waiting for) (?:child|parent) with sequence "
                        r"(?P<seq>\S+)(?: and waiting (?:with|for) sequence (?P<seq2>\S+))?")
_WHERE = re.compile(r"^(?P<file>[^:]+):(?P<func>[^:]+):(?P<line>\d+)$")


# --- LXC's trace ----------------------------------------------------------------------------------

@dataclass
class LxcLine:
    number: int
    time: float
    level: str
    category: str
    function: str
    message: str
    file: str = ""                  # LXC's source file, as the line names it (../src/lxc/start.c)
    time_wrong: bool = False        # its time is provably one LXC printed wrong (see the module doc)
    phase: str | None = None
    rule: Rule | None = None
    sync: list[tuple[str, str, str, str | None]] = field(default_factory=list)   # (side, kind, sequence, phase)

    @property
    def side(self) -> str:
        return (self.phase or "?").partition(":")[0]


def read_lxc(path: str) -> tuple[list[LxcLine], int]:
    """LXC's trace lines with their phases, and how many lines of the file are not log lines."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            text = stream.read().splitlines()
    except OSError as err:
        raise LogError(f"{path}: {err.strerror}") from None
    lines, other, lxcsm = [], 0, 0
    for number, raw in enumerate(text, 1):
        match = log_reader.LXC_LINE.match(raw.strip())
        where = _WHERE.match(match["where"]) if match else None
        if match is None or where is None:
            other += bool(raw.strip())
            continue
        lxcsm += match["prefix"] == "lxcsm"
        lines.append(LxcLine(number, log_reader.lxc_time(match["stamp"], match["frac"], utc=True), match["level"],
                             match["category"], where["func"], match["message"], where["file"],
                             time_wrong=len(match["frac"]) < 3))
    if not lines:
        raise LogError(f"{path}: empty" if not other else f"{path}: not an LXC log (no line in LXC's log format)")
    if lxcsm > len(lines) / 2:
        raise LogError(f"{path} is an lxcsm log; give LXC's trace first: lxcsm trace-diff LXC_TRACE LXCSM_LOG")
    mark_wrong_times(lines)
    assign_phases(lines)
    return lines, other


def mark_wrong_times(lines: list[LxcLine]) -> None:
    """Mark the lines whose printed time is provably wrong.

    LXC 5.0.2 prints the first three digits of the nanoseconds, unpadded: 45 ms into a second
    (045000000 ns) reads ".450", 4.5 ms reads ".450" too.  So a time less than 100 ms into its
    second reads 10 to 1000 times too far in, and nothing in the line says so.  What proves it:
    a fraction shorter than three digits (under 100 ns), and time running backwards within one
    second - lines are written in time order, so every line of that second up to the step back
    was before the 100 ms mark, and printed inflated.  Other lines may be wrong too, undetectably.
    """
    first_of_second = 0
    for i, line in enumerate(lines):
        if i and int(line.time) != int(lines[i - 1].time):
            first_of_second = i
        elif i and line.time < lines[i - 1].time:
            for earlier in lines[first_of_second:i]:
                earlier.time_wrong = True


def _sync_actions(message: str) -> list[tuple[str, str, str]]:
    match = _SYNC_LINE.match(message)
    if not match:
        return []
    side = "monitor" if match["me"] == "Parent" else "child"
    first = "wake" if match["kind"] == "waking" else "wait"
    actions = [(side, first, SEQUENCE_ALIASES.get(match["seq"], match["seq"]))]
    if match["seq2"]:
        actions.append((side, "wait", SEQUENCE_ALIASES.get(match["seq2"], match["seq2"])))
    return actions


def rule_for(category: str, function: str, message: str, previous: str | None = None) -> Rule | None:
    """The first rule for a line, given the phase of the line before it (`previous`)."""
    for rule in RULES:
        if (rule.category == category and re.fullmatch(rule.function, function)
                and (not rule.message or re.search(rule.message, message))
                and (not rule.after or re.fullmatch(rule.after, previous or ""))):
            return rule
    return None


def assign_phases(lines: list[LxcLine]) -> None:
    previous = None
    for line in lines:
        line.rule = rule_for(line.category, line.function, line.message, previous)
        phase = previous
        if line.rule is not None and line.rule.phase == SYNC:
            line.sync = [(side, kind, seq, SYNC_PHASES.get((side, kind, seq)))
                         for side, kind, seq in _sync_actions(line.message)]
            phase = next((p for *_rest, p in line.sync if p), previous)
        elif line.rule is not None and line.rule.phase != INHERIT:
            phase = line.rule.phase
        line.phase = phase
        previous = phase


def split_lxc_starts(lines: list[LxcLine]) -> list[list[LxcLine]]:
    """A new start begins where init_handler's lines come again after the monitor went further."""
    starts: list[list[LxcLine]] = [[]]
    went_on = False
    for line in lines:
        if line.phase == "monitor:init_handler" and went_on:
            starts.append([])
            went_on = False
        elif line.side == "monitor" and is_lxcsm_state(line.phase or "") and line.phase != "monitor:init_handler":
            went_on = True
        starts[-1].append(line)
    return starts


# --- phases on both sides --------------------------------------------------------------------------

@dataclass
class Phase:
    key: str                                  # "side:name"
    lxc: list[LxcLine] = field(default_factory=list)       # lines whose phase this is
    lxc_sync: list[LxcLine] = field(default_factory=list)  # sync lines with an action in this phase
    lxc_runs: int = 0
    spans: list[timeline.Span] = field(default_factory=list)

    @property
    def side(self) -> str:
        return self.key.partition(":")[0]

    @property
    def name(self) -> str:
        return self.key.partition(":")[2]

    @property
    def first_line(self) -> LxcLine | None:
        candidates = self.lxc + self.lxc_sync
        return min(candidates, key=lambda line: line.number) if candidates else None


@dataclass
class Diff:
    lxc_path: str
    lxcsm_path: str
    lxc_lines: list[LxcLine]
    lxc_index: int
    lxc_count: int
    start: timeline.Start
    phases: dict[str, Phase]
    rows: list[str]                           # phase keys, in display order
    order_differs: set[str]
    unmapped: list[LxcLine]
    lxc_t0: float
    lxc_t0_wrong: bool                        # the line times are measured from printed its time wrong
    lxc_running: LxcLine | None
    backwards: list[int]                      # LXC line numbers whose time runs backwards


def _lcs(a: list[str], b: list[str]) -> set[str]:
    """The elements of a longest common subsequence of two lists of distinct names."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
    found, i, j = set(), 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            found.add(a[i])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return found


def diff(lxc_path: str, lxcsm_path: str, start_index: int = 1, lxc_index: int = 1) -> Diff:
    all_lines, _other = read_lxc(lxc_path)
    starts = [s for s in split_lxc_starts(all_lines) if s]
    if not any(line.phase == "monitor:init_handler" for line in all_lines):
        raise LogError(f"{lxc_path}: no start in this LXC log (no lxc_init_handler or lxc_init line); "
                       f"write it with lxc-start -l TRACE")
    if not 1 <= lxc_index <= len(starts):
        raise LogError(f"--lxc-start {lxc_index}: {lxc_path} holds {len(starts)} "
                       f"start{'s' * (len(starts) != 1)}")
    lines = starts[lxc_index - 1]
    log = log_reader.read_log(lxcsm_path)
    try:
        start = timeline.analyse(log.events, start_index)
    except LogError as err:
        raise LogError(f"{lxcsm_path}: {err}") from None

    phases: dict[str, Phase] = {}
    for line in lines:
        if line.phase:
            phases.setdefault(line.phase, Phase(line.phase)).lxc.append(line)
        for *_rest, sync_phase in line.sync:
            if sync_phase and sync_phase != line.phase:
                phases.setdefault(sync_phase, Phase(sync_phase)).lxc_sync.append(line)
    for span in start.spans:
        phases.setdefault(f"{span.side}:{span.state}", Phase(f"{span.side}:{span.state}")).spans.append(span)

    # Runs: blocks of one lxcsm state in its side's sequence of lines, LXC-only phases left out
    # (LXC doing more between two lines of a phase is not LXC doing the phase in two places).
    for side in {p.side for p in phases.values()}:
        previous = None
        for line in lines:
            if line.side == side and line.phase in phases and is_lxcsm_state(line.phase):
                if line.phase != previous:
                    phases[line.phase].lxc_runs += 1
                previous = line.phase

    first_lines = {p.key: p.first_line.number for p in phases.values() if p.first_line}
    lxc_order = sorted((p for p in phases.values() if p.key in first_lines), key=lambda p: first_lines[p.key])
    lxcsm_order = sorted((p for p in phases.values() if p.spans), key=lambda p: p.spans[0].begin)
    rows = [p.key for p in lxc_order]
    for i, phase in enumerate(lxcsm_order):
        if phase.key in rows:
            continue
        before = next((q.key for q in reversed(lxcsm_order[:i]) if q.key in rows), None)
        rows.insert(rows.index(before) + 1 if before else 0, phase.key)

    order_differs = set()
    for side in TABLES:
        a = [p.key for p in lxc_order if p.side == side and p.spans]
        b = [p.key for p in lxcsm_order if p.side == side and p.first_line]
        order_differs |= set(a) - _lcs(a, b)

    unmapped = [line for line in lines if line.rule is None]
    init = next((line for line in lines if line.phase == "monitor:init_handler"), lines[0])
    # RUNNING: the last line of sync_ready_start ("Started", "Set container state to RUNNING").
    running = next((line for line in reversed(lines) if line.phase == "monitor:sync_ready_start"), None)
    backwards = [b.number for a, b in itertools.pairwise(lines) if b.time < a.time]
    return Diff(lxc_path, lxcsm_path, lines, lxc_index, len(starts), start, phases, rows, order_differs,
                unmapped, init.time, init.time_wrong, running, backwards)


# --- output ----------------------------------------------------------------------------------------

WRONG_TIME = "?"


def lxc_offset(d: Diff, line: LxcLine) -> str:
    """A line's time from LXC's first init_handler line, in ms - or `WRONG_TIME` where LXC printed
    either time wrong (mark_wrong_times), rather than a number that only looks like one."""
    return WRONG_TIME if line.time_wrong or d.lxc_t0_wrong else fmt_ms(line.time - d.lxc_t0)


def marks(d: Diff, phase: Phase) -> str:
    found = []
    if not phase.spans:
        found.append("LXC only" if phase.key in LXC_ONLY or not is_lxcsm_state(phase.key)
                     else "LXC only here (lxcsm has the state; not in this trace)")
    elif not phase.first_line:
        found.append("lxcsm only" + (" (declared)" if phase.key in LXCSM_ONLY else ""))
    if phase.key in d.order_differs:
        found.append("order")
    if phase.lxc_runs > 1:
        starts = []
        previous = None
        for line in d.lxc_lines:
            if line.side == phase.side and is_lxcsm_state(line.phase or ""):
                if line.phase == phase.key and previous != phase.key:
                    starts.append(str(line.number))
                previous = line.phase
        found.append(f"split: LXC does it in {phase.lxc_runs} places (lines {', '.join(starts)})")
    return "; ".join(found)


def phase_table(d: Diff) -> list[str]:
    s = d.start
    out = [f"  {'':<8} {'':<24}|{'LXC 5 trace':^25}|{'lxcsm trace':^26}|",
           f"  {'side':<8} {'phase':<24}| {'line':>5} {'at ms':>8} {'lines':>6}  | {'at ms':>8} {'dur ms':>8} "
           f"{'events':>6}  | marks"]
    for key in d.rows:
        phase = d.phases[key]
        if key == "monitor:poll":
            out.append(f"  {'':-<8} {' RUNNING ':-<24}|{'':-<25}|{'':-<26}|")
        first = phase.first_line
        lxc = (f"{first.number:>5} {lxc_offset(d, first):>8} {len(phase.lxc):>6}" if first
               else f"{'-':>5} {'':>8} {'':>6}")
        if phase.spans:
            duration = sum(span.duration for span in phase.spans)
            events = sum(len(span.events) for span in phase.spans)
            ours = f"{fmt_ms(phase.spans[0].begin - s.t0):>8} {fmt_ms(duration):>8} {events:>6}"
        else:
            ours = f"{'-':>8} {'':>8} {'':>6}"
        out.append(f"  {phase.side:<8} {phase.name:<24}| {lxc}  | {ours}  | {marks(d, phase)}")
    return out


def _sync_order(actions: dict[str, list[tuple]]) -> list[str]:
    """Sequences in the order their message was sent (their first wake; a sequence nobody sends,
    exec, by its first wait), ties in LXC's order."""
    def key(name: str):
        wakes = [a[2] for a in actions[name] if a[1] == "wake"]
        rank = SEQUENCE_ORDER.index(name) if name in SEQUENCE_ORDER else len(SEQUENCE_ORDER)
        return (min(wakes or [a[2] for a in actions[name]]), rank)
    return sorted(actions, key=key)


def sync_table(d: Diff) -> list[str]:
    # sequence -> [(side, wake|wait, position)]: the line number in LXC, the time in lxcsm
    lxc: dict[str, list[tuple[str, str, float]]] = {}
    for line in d.lxc_lines:
        for side, kind, seq, _phase in line.sync:
            lxc.setdefault(seq, []).append((side, kind, line.number))
    ours: dict[str, list[tuple[str, str, float]]] = {}
    state_of: dict[tuple, str] = {}
    for span in d.start.spans:
        for event in span.events:
            if event.get("event") in ("sync wake", "sync wait"):
                action = (span.side, event["event"].split()[1], event["time"])
                ours.setdefault(str(event.get("sequence")), []).append(action)
                state_of[(str(event.get("sequence")),) + action] = span.state

    def who(actions, kind: str, where) -> str:
        return ", ".join(dict.fromkeys(f"{side} {where(a)}" for a in actions
                                       for side, k, _pos in [a] if k == kind)) or "-"

    def direction(actions) -> str:
        wakers = sorted({a[0] for a in actions if a[1] == "wake"})
        waiters = sorted({a[0] for a in actions if a[1] == "wait"})
        if wakers == waiters == ["child", "monitor"]:
            return "both ways"
        return f"{'+'.join(wakers) or 'nobody'} -> {'+'.join(waiters) or 'nobody'}"

    out = [f"  {'sequence':<16} {'LXC: wake / wait (line)':<34} {'lxcsm: wake / wait (state)':<56} marks"]
    names = list(dict.fromkeys(list(SEQUENCE_ORDER) + list(lxc) + list(ours)))
    for name in names:
        if name not in lxc and name not in ours:
            continue
        left = (f"{who(lxc[name], 'wake', lambda a: a[2])} / {who(lxc[name], 'wait', lambda a: a[2])}"
                if name in lxc else "-")
        if name == "exec" and name in lxc:
            left += ' ("restart")'
        def state(action, sequence=name):
            return state_of[(sequence, *action)]
        right = (f"{who(ours[name], 'wake', state)} / {who(ours[name], 'wait', state)}"
                 if name in ours else "-")
        if name not in ours:
            mark = "LXC only"
        elif name not in lxc:
            mark = "lxcsm only"
        elif {a[:2] for a in lxc[name]} != {a[:2] for a in ours[name]}:
            mark = f"differs: LXC {direction(lxc[name])}, lxcsm {direction(ours[name])}"
        else:
            mark = ""
        out.append(f"  {name:<16} {left:<34} {right:<56} {mark}".rstrip())

    lxc_order, our_order = _sync_order(lxc), _sync_order(ours)
    common_a = [n for n in lxc_order if n in our_order]
    common_b = [n for n in our_order if n in lxc_order]
    moved = set(common_a) - _lcs(common_a, common_b)
    out.append("")
    out.append(f"  sent, in LXC:   {' '.join(lxc_order) or '(no sync lines)'}")
    out.append(f"  sent, in lxcsm: {' '.join(our_order) or '(no sync events)'}")
    out.append("  " + (f"order differs for: {', '.join(sorted(moved))}" if moved else
                       "the sequences both have are sent in the same order"))
    return out


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def report(d: Diff, annotate: bool = False) -> str:
    s = d.start
    lxc_wall = (f", {lxc_offset(d, d.lxc_running)} ms to RUNNING" if d.lxc_running else ", never RUNNING")
    lines = [f"LXC:   {d.lxc_path}: start {d.lxc_index} of {d.lxc_count}, lines "
             f"{d.lxc_lines[0].number}-{d.lxc_lines[-1].number}{lxc_wall}",
             f"lxcsm: {d.lxcsm_path}: start {s.index} of {s.count}, "
             f"{fmt_ms(s.wall)} ms to {'RUNNING' if s.outcome == 'running' else s.outcome.upper()}",
             "",
             "phases, in LXC's order; \"order\" compares each side's own order (the two sides run at once)"]
    lines += phase_table(d)
    counterpart = [k for k in d.rows if d.phases[k].spans and not d.phases[k].first_line
                   and k not in LXCSM_ONLY]
    lines.append("")
    lines.append("  every lxcsm state has an LXC counterpart" if not counterpart else
                 f"  lxcsm states with no LXC lines: {', '.join(counterpart)}")
    notes = [k for k in d.rows if k in LXC_ONLY or k in LXCSM_ONLY]
    if notes:
        lines += ["", "why only one side has these phases"]
        lines += [f"  {k:<24} {LXC_ONLY.get(k) or LXCSM_ONLY.get(k)}" for k in notes]
    lines += ["", "sync sequences (LXC's sync.c lines, lxcsm's \"sync wake\"/\"sync wait\" events)"]
    lines += sync_table(d)
    if not any(line.level == "TRACE" for line in d.lxc_lines):
        lines += ["", "LXC's log has no TRACE lines (written at DEBUG or above?): its sync points and most "
                      "steps are missing; lxc-start -l TRACE writes them"]
    if d.unmapped:
        shown = ", ".join(f"{line.number} {line.category}:{line.function}" for line in d.unmapped[:8])
        lines += ["", f"{len(d.unmapped)} LXC lines no rule knows (given the phase before them): {shown}"
                      + (" ..." if len(d.unmapped) > 8 else "")]
    wrong = [line.number for line in d.lxc_lines if line.time_wrong]
    lines += ["", "LXC's times: LXC 5.0.2 prints the first three digits of the nanoseconds unpadded, so a line "
                  "less than 100 ms into its second shows 10 to 1000 times its real fraction. "
                  + (f"Lines {_ranges(wrong)} provably do (their time runs backwards within a second): their "
                     f"times are shown as {WRONG_TIME}. " if wrong else "No line of this start provably does. ")
                  + "The other times cannot be checked; the order is by line number."]
    if d.backwards:
        lines.append(f"  (time runs backwards at lines {', '.join(map(str, d.backwards[:8]))})")
    if annotate:
        lines += ["", "LXC's lines with their phases"]
        lines += [f"  {line.number:>5} {line.phase or '?':<30} {line.category}:{line.function} - {line.message}"
                  + ("   (no rule)" if line.rule is None else "") for line in d.lxc_lines]
    return "\n".join(lines)
