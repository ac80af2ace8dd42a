"""`lxcsm timeline --svg/--png`: a start drawn as a waterfall.

One row and one ``<rect>`` per state, a lane per side (monitor, child), the
part of a state spent waiting at a sync barrier hatched, an arrow per sync
message from the side that woke to the side that waited for it, and the
states after the start (poll and later) in a column of their own, not to
scale.  When the child's part of a start would be squashed into a sliver, the
axis gives it half the width and marks where its scale changes.  Everything
drawn comes from the `Start` engine/analysis/timeline.py makes of a log.

The picture is SVG written here as text.  A PNG needs a program that renders
SVG (rsvg-convert from librsvg2-bin, ImageMagick, or inkscape); without one
``--png`` says what to install.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from xml.sax.saxutils import escape, quoteattr

from lxcsm.engine.analysis.log_reader import LogError
from lxcsm.engine.analysis.timeline import SIDES, Span, Start, fmt_ms

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
        found: list[float] = []
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
    out, previous = [], 0.0
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
                     f"monitor {fmt_ms(start.covered('monitor'))} ms, child {fmt_ms(start.covered('child'))} ms "
                     f"(offset + states) of {fmt_ms(start.wall)} ms wall time", size=10, fill="#666"))
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
    row_y: dict[int, float] = {id(item): top + i * _ROW for i, (_kind, item) in enumerate(rows)}
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
    verdict = {"running": f"RUNNING after {fmt_ms(start.wall)} ms",
               "aborted": f"FAILED: aborting after {fmt_ms(start.wall)} ms",
               "incomplete": f"log ends after {fmt_ms(start.wall)} ms"}[start.outcome]
    out.append(_text(_LABEL_X, 26, f"{start.name or 'container'}: start {start.index} of {start.count} - {verdict}",
                     size=15, weight="bold"))
    pids = ", ".join(f"{side} pid {pid}" for side, pid in start.pids.items())
    out.append(_text(_LABEL_X, 44, " - ".join(p for p in (pids, os.path.basename(path)) if p), fill="#666"))

    # Lane backgrounds, then the time grid over them.
    for kind, item in rows:
        if kind == "lane":
            side = str(item)
            spans = [s for s in start.spans if s.side == side]
            y0 = row_y[id(item)]
            out.append(_box(0, y0, _WIDTH, _ROW * (len(spans) + 1), COLOURS[side][1]))
            out.append(_text(_LABEL_X, y0 + 14, f"{side} (pid {start.pids.get(side, '?')})", size=12,
                             weight="bold", fill=COLOURS[side][0]))
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
    tail_pos: dict[int, tuple[float, float]] = {}
    cursor = float(tail_x)
    for tail_span, weight in zip(tail, weights, strict=True):
        width = max(6.0, (_TAIL_W - 2 * len(tail)) * weight / sum(weights))
        tail_pos[id(tail_span)] = (cursor, width)
        cursor += width + 2

    # One <rect> per state.
    for _kind, item in rows:
        if not isinstance(item, Span):
            continue
        span = item
        y = row_y[id(span)]
        out.append(_text(_PLOT_X - 8, y + 14, span.state, anchor="end"))
        if span.tail:
            bx, bw = tail_pos[id(span)]
            colour = TAIL_COLOUR
        else:
            bx, bw = x(span.begin), max(2.0, x(span.end) - x(span.begin))
            colour = COLOURS[span.side][0]
        tip = (f"{span.side} {span.state}: at {fmt_ms(span.begin - start.t0)} ms, "
               f"{fmt_ms(span.duration)} ms, {len(span.events)} events")
        out.append(f'<rect x="{bx:.1f}" y="{y + (_ROW - _BAR) / 2:.1f}" width="{bw:.1f}" height="{_BAR}" '
                   f'rx="2" fill="{colour}" class="state {span.side}" data-state={quoteattr(span.state)}>'
                   f'<title>{escape(tip)}</title></rect>')
        out.append(_text(_WIDTH - 16, y + 14, f"{fmt_ms(span.duration)} ms", anchor="end",
                         fill="#222" if not span.tail else "#666"))

    # Waiting at a barrier: the hatched part of a bar.
    for wait in start.waits:
        waited_in = next((s for s in start.spans if s.side == wait.side and not s.tail
                          and s.begin <= wait.begin <= s.end and s.state == wait.state), None)
        if waited_in is None or wait.waited <= 0:
            continue
        y = row_y[id(waited_in)] + (_ROW - _BAR) / 2
        wx = x(wait.begin)
        ww = max(1.0, min(x(wait.end), x(waited_in.end)) - wx)
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
