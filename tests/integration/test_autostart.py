"""lxcsm autostart against lxc-autostart: the same containers picked, in the same order, with
lxc.start.delay waited after each start; shutdown in reverse; LXC's exit statuses; and -L's
output the same as the real lxc-autostart's on the same LXCPATH.

The order is read from a pre-start and a post-stop hook that append to one file: autostart
works through the containers one at a time, so the lines come in its order."""

from __future__ import annotations

import stat
import subprocess
import time

import pytest

from tests.integration.harness import LXCSM, socket_bound

pytestmark = pytest.mark.root

RECORDER = """#!/bin/sh
echo "$3 $1 $(date +%%s.%%N)" >> %s
"""


def _recorder(tmp_path):
    """A hook appending "KIND NAME SECONDS" to a log; (the config lines using it, the log)."""
    log = tmp_path / "hooks.log"
    hook = tmp_path / "record.sh"
    hook.write_text(RECORDER % log)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    return [f"lxc.hook.pre-start = {hook}", f"lxc.hook.post-stop = {hook}"], log


def _records(log, kind: str) -> list[tuple[str, float]]:
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [(name, float(seconds)) for what, name, seconds in lines if what == kind]


def _autostart(lxcpath: str, *options: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*LXCSM, "autostart", "-P", lxcpath, *options], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _running(*containers) -> list[str]:
    return [c.name for c in containers if socket_bound(c.lxcpath, c.name)]


def _busybox(make_container, hooks, *settings: str):
    """A busybox container that halts on SIGUSR1 (busybox init's halt) and records its hooks."""
    return make_container("busybox", extra=["lxc.signal.halt = SIGUSR1", *hooks, *settings])


def test_start_picks_by_auto_and_group_in_order_waiting_the_delay(make_container, tmp_path):
    hooks, log = _recorder(tmp_path)
    onboot = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.start.order = 9", "lxc.group = onboot")
    low = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.start.order = 1", "lxc.start.delay = 2")
    mid = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.start.order = 2")
    high = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.start.order = 3")
    manual = _busybox(make_container, hooks, "lxc.start.auto = 0", "lxc.start.order = 5")
    elsewhere = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.group = other web")
    everyone = (onboot, low, mid, high, manual, elsewhere)
    path = onboot.lxcpath

    started = _autostart(path, "-g", "onboot,")   # Debian's lxc.service: the onboot group, then no group
    assert started.returncode == 0, started.stderr
    starts = _records(log, "pre-start")
    assert [name for name, _ in starts] == [onboot.name, low.name, mid.name, high.name]
    assert _running(*everyone) == [onboot.name, low.name, mid.name, high.name]
    assert starts[2][1] - starts[1][1] >= 2          # low's delay, waited after it ran
    # Running ones are left alone.
    again = _autostart(path, "-g", "onboot,")
    assert again.returncode == 0, again.stderr
    assert len(_records(log, "pre-start")) == 4

    assert subprocess.run([*LXCSM, "start", "-n", manual.name, "-P", path]).returncode == 0
    # The stop of lxc.service: every running container, auto or not, in reverse order.
    stopped = _autostart(path, "-a", "-A", "-s", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert [name for name, _ in _records(log, "post-stop")] == [onboot.name, manual.name, high.name, mid.name,
                                                                low.name]
    assert _running(*everyone) == []
    for c in everyone:
        assert c.monitor_exited() and c.leaks() == []


def test_exit_status_says_whether_some_or_all_failed(make_container, tmp_path):
    hooks, log = _recorder(tmp_path)
    good = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.start.order = 1")
    broken = _busybox(make_container, ["lxc.hook.pre-start = /bin/false"], "lxc.start.auto = 1",
                      "lxc.group = bad")
    path = good.lxcpath

    partly = _autostart(path, "-g", "bad,")
    assert partly.returncode == 2, partly.stderr
    assert broken.name in partly.stderr
    assert _running(good, broken) == [good.name]
    wholly = _autostart(path, "-g", "bad")           # the broken one alone
    assert wholly.returncode == 1, wholly.stderr
    assert broken.name in wholly.stderr

    killed = _autostart(path, "-k", "-g", "bad,")
    assert killed.returncode == 0, killed.stderr
    assert _running(good, broken) == []
    assert [name for name, _ in _records(log, "post-stop")] == [good.name]
    for c in (good, broken):
        assert c.monitor_exited() and c.leaks() == []


def test_reboot_signals_the_running_ones(make_container, tmp_path):
    hooks, log = _recorder(tmp_path)
    # busybox init reboots on SIGTERM; the monitor then starts the next boot.
    c = _busybox(make_container, hooks, "lxc.start.auto = 1", "lxc.start.delay = 1", "lxc.signal.reboot = SIGTERM")
    assert _autostart(c.lxcpath, "-r", "-L").stdout == ""          # not running: nothing to reboot
    assert _autostart(c.lxcpath).returncode == 0
    assert _autostart(c.lxcpath, "-r", "-L").stdout == f"{c.name} 1\n"
    rebooted = _autostart(c.lxcpath, "-r")   # sends the signal and returns, as lxc-autostart -r
    assert rebooted.returncode == 0, rebooted.stderr
    deadline = time.monotonic() + 30
    while len(_records(log, "pre-start")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [name for name, _ in _records(log, "post-stop")] == [c.name]   # the first boot's, before the second
    assert len(_records(log, "pre-start")) == 2
    stopped = _autostart(c.lxcpath, "-s", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert [name for name, _ in _records(log, "post-stop")] == [c.name, c.name]
    assert c.monitor_exited() and c.leaks() == []


LIST_OPTIONS = [(), ("-a",), ("-A",), ("-g", "onboot,"), ("-g", ",onboot"), ("-g", "onboot,,web"),
                ("-g", "webserver"), ("-g", "web,webserver"), ("-g", "webserver", "-g", "web"),
                ("-a", "-g", "web"), ("-A", "-g", "onboot"), ("-s",), ("-k",), ("-r",), ("-a", "-A", "-s"),
                ("-A", "-r", "-g", "onboot,")]


def test_list_is_what_lxc_autostart_lists(make_container, tmp_path):
    running = [_busybox(make_container, [], "lxc.start.auto = 1", "lxc.start.order = 4", "lxc.group = onboot",
                        "lxc.start.delay = 7"),
               _busybox(make_container, [], "lxc.start.auto = 0", "lxc.start.order = -1"),
               _busybox(make_container, [], "lxc.start.auto = 1", "lxc.group = web")]
    path = running[0].lxcpath
    defined = {"a": ["lxc.start.auto = 1", "lxc.start.order = 5", "lxc.start.delay = 3"],
               "b": ["lxc.start.auto = 1", "lxc.start.order = -2", "lxc.group = web db"],
               "c": ["lxc.start.auto = 1", "lxc.group = webserver", "lxc.group = onboot"],
               "d": ["lxc.start.auto = 0", "lxc.start.order = 7"],
               "e": ["lxc.start.auto = 1", "lxc.start.delay = 3000000000"],
               "f": ["lxc.start.auto = 1", "lxc.start.order = 5", "lxc.group =", "lxc.group = onboot",
                     "lxc.group ="],
               "ab": ["lxc.start.auto = 1", "lxc.start.order = 5"],
               ".hidden": ["lxc.start.auto = 1"],
               "unreadable": ["lxc.start.auto = 2"]}   # neither tool can load it: skipped
    for name, lines in defined.items():
        (tmp_path / "lxc" / name).mkdir()
        (tmp_path / "lxc" / name / "config").write_text("".join(f"{line}\n" for line in lines))
    (tmp_path / "lxc" / "no-config").mkdir()
    for c in running:
        assert c.run("start").returncode == 0

    listed = set()
    for options in LIST_OPTIONS:
        ours = _autostart(path, "-L", *options)
        theirs = subprocess.run(["lxc-autostart", "-P", path, "-L", *options], capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), options
        listed.update(line.split()[0] for line in theirs.stdout.splitlines())
    assert "unreadable" in ours.stderr
    # Between them, the options list every container that can be loaded, running or not.
    assert listed == {*defined, *(c.name for c in running)} - {".hidden", "unreadable"}

    for c in running:
        assert c.run("stop", "-k").returncode == 0
        assert c.monitor_exited() and c.leaks() == []
