"""tools/bench: lxcsm side by side with LXC's lxc-start, on this machine, as root.

    tools/bench [--runs N] [--samples N] [--parallel N] [--rounds N] [--only 1,3,...]
                [--baseline REV] [--server] [--markdown | --json]

The bench is this package; tools/bench only launches it (``python3 -m
tools.benchmark`` from the checkout does the same).  One concern a module:
timing (a command timed until a pidfd says it exited; medians), host (what
/proc, cgroupfs and mountinfo say), containers (the bench's containers and
the two tools that start and stop them), rows (one function per row of the
table), diagnostics (where lxcsm's own time goes), report (the table),
machine (the line saying what it was measured on) and cli (the options, the
run and its cleanup).

Rows of the table (the issue's numbering):

1. ``start -F -- /bin/true`` with an empty network: wall time of the whole command,
   stdin from /dev/null (``--runs``, default 15).  Row 1c: the CPU time (user + system)
   of those runs, the command's and that of every process it waited for (a foreground
   monitor waits for init): the least noisy measure on a shared machine (cold lxcsm only:
   through the server, the start runs in the server's processes).  Row 1f, after
   each lxcsm run, times ``python -c 'import transitions'``: CPython starting and importing
   the state-machine package lxcsm is built on, with no lxcsm code - the floor under any
   lxcsm command.  Row 1p: the page faults the whole system took during each run
   (/proc/vmstat pgfault), every side's, the server's processes included: mostly the
   copy-on-write faults of Python processes forked from a larger one, a count this
   machine's noise does not move.
2. The same with ``lxc.net.0.type = veth`` on a bridge.  The bridge, the veths and both
   tools' monitors are in a network namespace made for the bench (the commands run under
   ``nsenter --net``), so the host's own namespace sees none of it.
3. ``start -d`` until the command returns (both tools return once the container is
   RUNNING), then ``stop -k`` until the command has returned *and* the monitor process
   has exited (lxc-stop -k returns before LXC's monitor has finished its teardown, so
   the monitor's exit is the only end both tools share).  Row 3 is the sum per run; 3a
   and 3b are its two halves.  The container runs the rootfs's init (busybox init).
4. VmRSS (and 4b: PSS from smaps_rollup) of the monitor process -
   ``[lxc monitor] LXCPATH NAME`` or ``[lxcsm monitor] LXCPATH NAME`` - 0.5 s after
   ``start -d -- /bin/sleep 1000`` returned (``--samples``, default 3).  4c: the PSS of each
   monitor while 20 such containers run at once (a page shared by N processes counts 1/N).
5. ``--parallel`` containers (default 50), each with its own busybox rootfs:
   ``start -d`` all at once, until every command has returned; then ``stop -k`` all at
   once, until every command has returned and every monitor has exited (``--rounds``,
   default 2).  5a and 5b are the two halves.

6. ``start -F -l TRACE -o FILE -- /bin/true``: a traced start, its log written to a file.
   6s and 6t: the engine's own work in those runs, from each tool's own timestamps - LXC's
   trace lines (milliseconds), lxcsm's flight record (``lxcsm-last-start.log``,
   microseconds): from the start of spawn (LXC: lxc_sync_init) to the exec of init (LXC:
   "Exec'ing"), and from init's exit to the monitor's last line.  LXC 5.0.2 prints the
   milliseconds of a stamp less than 100 ms into its second wrong, so each traced run is
   launched 150-500 ms into a second and an LXC trace not wholly within that second is left
   out of 6s and 6t.
7. (row 1b) row 1 back to back: each tool's runs one after the other, not alternating, so
   that no run pays the kernel's first cgroup migration after an idle moment (see below).
8. row 1 isolated: each run after a second of the bench doing nothing, so that every run
   pays what a start pays on a quiet machine (that first cgroup migration included).
9. Debian 12 booting systemd (fixtures/debian.py's cached rootfs, a user's config): ``stop``
   without -k - systemd's own halt, on SIGRTMIN+3 - until the monitor exited; 9a its boot,
   ``start -d`` until systemd says "running" (tools/benchmark/debian_row.py; at most 5 runs).

``--server``: lxcsm is also measured through a start server (``lxcsm serve``) the bench runs
for itself, as a third side of every row (LXCSM_START_SERVER=require: a start that cannot use
it fails that run); row 2's veth starts go through a second one, ``lxcsm serve --netlink``,
with pyroute2 preloaded (the first is the server of a host none of whose containers has a
veth: its monitors carry no pyroute2, which row 4c's memory would otherwise include).  Cold
lxcsm never asks any server (LXCSM_START_SERVER=off).
So one run gives both, each as a ratio to lxc-start measured in the same run.
``--baseline REV``: cold lxcsm as of the commit REV is one more side (its engine, states
and hooks from ``git archive``, first on PYTHONPATH), so that a before and an after are
measured in the same run, alternating with the others, on a machine whose load varies.  The targets
are issue 13's: through the server its own (row 8, isolated, <= 2x, 1b <= 3x, 3 <= 4x, 5 <= 3x, 6 <= 4x,
4c <= 6 MiB); cold, "at least 25% faster than before", written as 0.75 x the ratios the
issue measured before the work (rows.py COLD_TARGETS); 6s and 6t <= 2x either way.

First, one untimed warm-up per tool (start -F, start -d, stop -k).  Then runs alternate
between the tools (lxc-start, lxcsm, lxc-start, lxcsm ...) to cancel drift; the table
gives medians, min-max, and the ratio lxcsm / lxc-start of the medians, against the
targets above.  Alternating also
means that no run follows a run of the same tool: a kernel's first cgroup migration
after an idle moment can wait for an RCU grace period (15 ms on the developers' VM), so
lxc-start -F measures about twice as long here as in a tight loop of itself.
Both tools start the same busybox-static rootfs (fixtures/rootfs.py) with the same
config, each in its own LXCPATH under a temporary directory, with container names
starting ``lxcsm-bench-``.  Whatever happens (a failed run, Ctrl-C, SIGTERM), every
container started is stopped, leftover cgroups named after them are removed and the
temporary directory is deleted.  lxcsm runs as installed, with its bytecode cached
(PYTHONPYCACHEPREFIX in the temporary directory, filled by the warm-up; an inherited
PYTHONDONTWRITEBYTECODE is dropped).  A failed run is reported with the first lines of its
stderr and left out of the medians.  Without lxc-start, lxcsm's numbers are printed
alone.

Every command is timed from its start to the moment a pidfd says it exited (Popen.wait
with a timeout polls, and would round each time up to its next poll).

After the table (not with --markdown) come two diagnostics of where lxcsm spends its
time: the top imports of one ``lxcsm start -F`` (PYTHONPROFILEIMPORTTIME), and one
``lxcsm start -F -- /bin/true`` cut into phases (before the machine, the start
machine, teardown, exit) from its flight record, with ``lxcsm timeline``'s table.

Nothing here needs the network.  Standard library only, plus fixtures/rootfs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]      # the checkout: fixtures/, .venv/, git


def progress(text: str) -> None:
    """What the bench does now, on stderr (stdout is the table)."""
    print(f"bench: {text}", file=sys.stderr, flush=True)
