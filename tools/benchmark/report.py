"""The table tools/bench prints: one `Row` per measurement, as markdown padded to read as plain text.

A row holds the samples of each side - ``lxc`` (lxc-start), ``lxcsm`` (a cold
`lxcsm start`) and, with --server, ``warm`` (`lxcsm start` through the bench's
start server) - its failures and its target (a ratio to lxc-start, or an
absolute size); a cell shows the median and min-max of one side, and whether
the target is met is read from the medians of lxcsm's warm side when it was
measured, of its cold side otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .timing import median, ratio, spread

MIB = 1024 * 1024


def fmt_seconds(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 9.95:
        return f"{ms:.1f} ms"
    if ms < 999.5:
        return f"{ms:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


def fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}×" if value >= 100 else f"{value:.1f}×"


@dataclass
class Row:
    """One line of the table: samples of both tools and what they are held to."""
    key: str                       # "1", "3a", ...
    label: str
    unit: str = "s"                # "s", "bytes" or "count"
    lxc: list[float] = field(default_factory=list)
    lxcsm: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)   # lxcsm through a start server (--server)
    base: list[float] = field(default_factory=list)   # cold lxcsm as of another commit (--baseline)
    lxc_failed: int = 0
    lxcsm_failed: int = 0
    warm_failed: int = 0
    base_failed: int = 0
    target: tuple[str, float] | None = None    # ("ratio", 4.0) or ("max", bytes)
    na: str | None = None          # set: the row is not measured, this says why

    def fmt(self, value: float) -> str:
        return {"bytes": fmt_bytes, "count": fmt_count}.get(self.unit, fmt_seconds)(value)

    def cell(self, side: str, available: bool = True) -> str:
        """The table cell of one side ("lxc" or "lxcsm"): median (min–max), failures."""
        if self.na is not None:
            return self.na if side == "lxc" else ""
        if not available:
            return "missing"
        values = getattr(self, side)
        failed = getattr(self, f"{side}_failed")
        if side in ("warm", "base") and not values and not failed:
            return ""   # a row that side does not measure (the floor; the server's CPU)
        text = "no successful run" if not values else self.fmt(median(values))
        if len(values) > 1:
            low, high = (self.fmt(v) for v in spread(values))
            if low.split()[1:] == high.split()[1:]:
                low = low.split()[0]
            text += f" ({low}–{high})"
        if failed:
            text += f", {failed} failed"
        return text

    def ratio(self, side: str = "lxcsm") -> float | None:
        """`side`'s median over lxc-start's."""
        return ratio(median(self.lxc), median(getattr(self, side)))

    def measured_side(self) -> str:
        """The side the target is held to: lxcsm through the server when it was measured."""
        return "warm" if self.warm or self.warm_failed else "lxcsm"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        kind, value = self.target
        return f"≤ {value:.2g}×" if kind == "ratio" else f"≤ {self.fmt(value)}"

    def met(self) -> str:
        """"yes", "no", "n/a" (cannot tell) or "" (no target)."""
        if self.target is None:
            return ""
        if self.na is not None:
            return "n/a"
        kind, value = self.target
        side = self.measured_side()
        if kind == "ratio":
            r = self.ratio(side)
            return "n/a" if r is None else ("yes" if r <= value else "no")
        m = median(getattr(self, side))
        return "n/a" if m is None else ("yes" if m <= value else "no")

    def as_json(self) -> dict:
        return {"key": self.key, "label": self.label, "unit": self.unit, "lxc": self.lxc,
                "lxcsm": self.lxcsm, "warm": self.warm, "base": self.base, "lxc_failed": self.lxc_failed,
                "lxcsm_failed": self.lxcsm_failed, "warm_failed": self.warm_failed, "base_failed": self.base_failed,
                "lxc_median": median(self.lxc), "lxcsm_median": median(self.lxcsm),
                "warm_median": median(self.warm), "base_median": median(self.base), "ratio": self.ratio(),
                "warm_ratio": self.ratio("warm"), "base_ratio": self.ratio("base"),
                "target": self.target_text() or None, "met": self.met() or None, "na": self.na}


def markdown_table(rows: list[Row], lxc_label: str = "lxc-start", lxc_available: bool = True,
                   server: bool = False, baseline: str | None = None) -> str:
    """The rows as a markdown table, columns padded so it also reads as plain text; with
    `baseline`, two more columns: cold lxcsm as of that commit and its ratio; with `server`,
    two more: lxcsm through the start server, and its ratio."""
    header = ["#", "measurement", f"{lxc_label} median (min–max)"]
    sides = [("base", f"lxcsm {baseline}")] if baseline else []
    sides += [("lxcsm", "lxcsm")]
    sides += [("warm", "lxcsm + server")] if server else []
    for _side, name in sides:
        header += [f"{name} median (min–max)", f"{name} / lxc-start"]
    header += ["target", "met?"]
    body = []
    for row in rows:
        cells = [row.key, row.label, row.cell("lxc", lxc_available)]
        for side, _name in sides:
            measured = row.na is None and getattr(row, side)
            cells += [row.cell(side), fmt_ratio(row.ratio(side)) if measured else ""]
        body.append([*cells, row.target_text(), row.met()])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, body)])


NOTES = """\
Ratios are lxcsm's median over lxc-start's, measured in the same run; "met?" holds lxcsm \
through the server to the target when it was measured, cold lxcsm otherwise.  Row 3 and row 5 \
sum start and stop per run; \
"stopped" is when `stop -k` has returned and the monitor process has exited.  Row 4 is read \
0.5 s after `start -d -- /bin/sleep 1000` returned.  lxcsm runs with its bytecode cached, as \
on a normal install."""
