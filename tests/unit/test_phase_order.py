"""lxcsm's start order is LXC 5.0.2's: any departure from the reference LXC traces fails here.

The references are real `lxc-start -l TRACE` logs of this host (fixtures/traces/lxc-5.0.2-*),
lined up with lxcsm's own traces of the same containers by trace-diff (tools/record-traces
records lxcsm's again).  Per machine, the phases both have must come in the same order, and
the sync messages must be sent in the same order.

LXC's trace shows that a hook runs (run_script_argv), not which: for the hooks, a probing
hook of every kind appended its kind and what it saw (NoNewPrivs, Seccomp, the container's
/dev) to a file, under lxc-start (lxc-5.0.2-hook-probe.log) and under lxcsm
(lxcsm-hook-probe.log); both ran the config of busybox-hooks-seccomp (LXC's common.seccomp
policy, every hook kind but stop; `tools/record-traces --lxc` records all four again).
The unprivileged pairs are LXC's userns.conf with ids 0-65535 mapped to 100000, on a rootfs
shifted by 100000 and on one idmapped instead (`tools/record-traces [--lxc] userns`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lxcsm.engine.analysis import log_reader, trace_diff

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
PAIRS = [("lxc-5.0.2-busybox-start.trace.log", "busybox-start-stop.trace.log"),
         ("lxc-5.0.2-busybox-hooks-seccomp.trace.log", "busybox-hooks-seccomp.trace.log"),
         # unprivileged, started by root: a shifted rootfs, and an unshifted one idmapped
         ("lxc-5.0.2-busybox-userns.trace.log", "busybox-userns.trace.log"),
         ("lxc-5.0.2-busybox-userns-idmapped.trace.log", "busybox-userns-idmapped.trace.log")]


@pytest.mark.parametrize("lxc,lxcsm", PAIRS)
def test_each_machine_runs_its_phases_in_lxcs_order(lxc, lxcsm):
    d = trace_diff.diff(str(TRACES / lxc), str(TRACES / lxcsm))
    assert d.order_differs == set(), "\n".join(trace_diff.phase_table(d))
    assert trace_diff.sync_table(d)[-1].strip() == "the sequences both have are sent in the same order"


def _probe(name: str) -> list[tuple[str, dict[str, str]]]:
    records = []
    for line in (TRACES / name).read_text().splitlines():
        kind, *fields = line.split()
        records.append((kind, dict(field.split(":", 1) if ":" in field else field.split("=", 1)
                                   for field in fields)))
    return records


def test_the_hooks_run_in_lxcs_order_and_see_what_they_see_under_lxc():
    lxc, ours = _probe("lxc-5.0.2-hook-probe.log"), _probe("lxcsm-hook-probe.log")
    # The probe and LXC's trace agree: one run_script_argv line per hook that ran.
    lines, _other = trace_diff.read_lxc(str(TRACES / "lxc-5.0.2-busybox-hooks-seccomp.trace.log"))
    assert sum(line.function == "run_script_argv" for line in lines) == len(lxc)
    # And lxcsm's trace of the same start ran them in the order its probe saw.
    events = log_reader.read_log(str(TRACES / "busybox-hooks-seccomp.trace.log")).events
    assert [e["kind"] for e in events if e.get("event") == "hook"][:len(ours)] == [kind for kind, _ in ours]

    assert [kind for kind, _ in ours] == [kind for kind, _ in lxc] == \
        ["pre-start", "pre-mount", "mount", "autodev", "start", "start-host"]
    for (kind, theirs), (_kind, mine) in zip(lxc, ours, strict=True):
        assert (kind, mine["Seccomp"], mine["NoNewPrivs"]) == (kind, theirs["Seccomp"], theirs["NoNewPrivs"])
        if kind in ("mount", "autodev", "start"):   # inside the container: its /dev as the hook found it
            assert (kind, mine["dev"]) == (kind, theirs["dev"])
