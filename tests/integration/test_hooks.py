"""lxc.hook.*: each kind runs at its point of a real start, with LXC's arguments and
environment, and a failing hook fails the start without leaving anything behind."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import LXC_START, LXCSM, WITHOUT_MAP_HELPERS, wait_for
from tests.integration.test_userns import userns_container  # noqa: F401 (a fixture)

pytestmark = pytest.mark.root

KINDS = ("pre-start", "pre-mount", "mount", "autodev", "start", "start-host", "stop", "post-stop")   # LXC 5.0.2's order

# Appends one line per run: KIND|arguments|LXC_NAME|LXC_HOOK_TYPE|LXC_TARGET|LXC_ROOTFS_MOUNT
RECORDER = """#!/bin/sh
echo "hook says hello"
echo "${LXC_HOOK_TYPE:-$3}|$*|$LXC_NAME|${LXC_HOOK_TYPE:-}|${LXC_TARGET:-}|$LXC_ROOTFS_MOUNT" >> %s
exit ${HOOK_EXIT:-0}
"""


def _script(path, text: str):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _hooked(make_container, tmp_path, kinds=KINDS, extra=()):
    """A container whose hooks of `kinds` all append to one log, shared with the container
    through a bind mount so that the start hook (run inside, after pivot_root) writes there too."""
    shared = tmp_path / "shared"
    shared.mkdir()
    host_hook = _script(tmp_path / "hook.sh", RECORDER % (shared / "hooks.log"))
    lines = [f"lxc.mount.entry = {shared} shared none bind,create=dir 0 0", *extra]
    c = make_container(extra=lines)
    _script(c.rootfs / "hook.sh", RECORDER % "/shared/hooks.log")
    for kind in kinds:
        lines.append(f"lxc.hook.{kind} = {'/hook.sh' if kind == 'start' else host_hook}")
    with open(c.config, "a") as config:
        config.write("".join(f"{line}\n" for line in lines[1 + len(extra):]))
    return c, shared / "hooks.log"


def _records(log) -> list[list[str]]:
    return [line.split("|") for line in log.read_text().splitlines()]


def test_every_kind_runs_at_its_point_with_lxcs_arguments(make_container, tmp_path):
    c, log = _hooked(make_container, tmp_path)
    result = c.start_fg("/bin/true", options=("-l", "DEBUG"))
    assert result.returncode == 0, result.stderr
    records = _records(log)
    assert [r[0] for r in records] == list(KINDS)
    for kind, args, name, hook_type, target, rootfs_mount in records:
        words = args.split()
        assert words[:3] == [c.name, "lxc", kind]              # version 0: NAME lxc KIND
        assert name == c.name and hook_type == "" and rootfs_mount == str(c.rootfs)
        assert target == ("stop" if kind in ("stop", "post-stop") else "")
    stop_args = records[KINDS.index("stop")][1].split()[3:]
    assert [a.split(":")[0] for a in stop_args] == ["mnt", "pid", "uts", "ipc", "net", "cgroup"]
    assert all(re.fullmatch(r"\w+:/proc/\d+/fd/\d+", a) for a in stop_args), stop_args
    assert "hook output" in result.stderr and "hook says hello" in result.stderr


def test_version_1_passes_the_kind_in_the_environment(make_container, tmp_path):
    c, log = _hooked(make_container, tmp_path, kinds=("pre-start", "start"), extra=["lxc.hook.version = 1"])
    result = c.start_fg("/bin/true")
    assert result.returncode == 0, result.stderr
    assert [(r[0], r[1], r[3]) for r in _records(log)] == [("pre-start", "", "pre-start"), ("start", "", "start")]


@pytest.mark.parametrize("kind, side, state", [("pre-start", "monitor", "init_handler"),
                                               ("mount", "child", "setup_mounts"),
                                               ("start-host", "monitor", "sync_cgroup_limits"),
                                               ("start", "child", "setup_seccomp")])
def test_a_failing_hook_fails_the_start_and_post_stop_still_runs(make_container, tmp_path, kind, side, state):
    c, log = _hooked(make_container, tmp_path, kinds=(kind, "post-stop"))
    config = c.config.read_text()
    hook_line = next(text for text in config.splitlines() if text.startswith(f"lxc.hook.{kind} "))
    line = config.splitlines().index(hook_line) + 1
    hook = hook_line.split("= ", 1)[1]
    (tmp_path / "hook.sh").write_text((tmp_path / "hook.sh").read_text().replace("${HOOK_EXIT:-0}", "7"))
    (c.rootfs / "hook.sh").write_text((c.rootfs / "hook.sh").read_text().replace("${HOOK_EXIT:-0}", "7"))
    result = c.start_fg("/bin/true")
    assert result.returncode == 1
    assert (f"failed_state={state} failed_side={side} error=\"{c.config}:{line}: lxc.hook.{kind}: "
            f"hook '{hook}' exited with status 7: hook says hello\"") in result.stderr, result.stderr
    assert [r[0] for r in _records(log)] == [kind, "post-stop"]


# --- what each hook is given, against lxc-start 5.0.2 -------------------------------------

PROBE = Path(__file__).resolve().parents[2] / "fixtures" / "hook-probe.sh"
# Normalised before the two probes' records are compared whole, each for a reason:
NORMALISED = [
    # init's pid (LXC_PID) and the monitor's (the namespaces' /proc/PID/fd/N): each start's own,
    # and the fd numbers too (LXC holds more files open than lxcsm when it keeps them).
    (re.compile(r"LXC_PID='\d+'"), "LXC_PID='PID'"),
    (re.compile(r"/proc/\d+/fd/\d+"), "/proc/MONITOR/fd/FD"),
    # The start hook's stdin, the console: the same pty, which the kernel names from the mount
    # it was opened through - lxc-start's /dev/pts/N; lxcsm's, opened by TIOCGPTPEER on the
    # container's ptmx, /pts/N (a difference of the name alone, not fixed yet).
    (re.compile(r"^start fd 0 /pts/"), "start fd 0 /dev/pts/"),
    # Where the rootfs is mounted when lxc.rootfs.mount is unset: LXC mounts it on its build's
    # default (/usr/lib/x86_64-linux-gnu/lxc/rootfs), lxcsm onto the rootfs itself - each hook is
    # told where its tool has it, which is what it needs.
    (re.compile(r"LXC_ROOTFS_MOUNT='[^']*'"), "LXC_ROOTFS_MOUNT='WHERE_MOUNTED'"),
]
# Left out of lxc-start's records only: its monitor leaks one of its sockets (not close-on-exec)
# into the start-host hooks; lxcsm's hooks are given nothing but stdin, stdout and stderr.
LXC_LEAKS = re.compile(r"^start-host fd \d+ socket$")


def normalised(lines: list[str], lxc: bool) -> list[str]:
    """A probe's records (probe.env) as compared: NORMALISED, and LXC_LEAKS out of lxc-start's."""
    records = []
    for line in lines:
        for pattern, replacement in NORMALISED:
            line = pattern.sub(replacement, line)
        if not (lxc and LXC_LEAKS.match(line)):
            records.append(line)
    return records


def _probed(c, version: str, start_hook: str = "/probe.sh") -> None:
    """`c` with the probe as every hook kind (the start hook inside, as /probe.sh)."""
    (c.rootfs / "probe.sh").write_text(PROBE.read_text())
    (c.rootfs / "probe.sh").chmod(0o755)
    with open(c.config, "a") as config:
        config.write(f"lxc.hook.version = {version}\n")
        config.write("".join(f"lxc.hook.{kind} = {c.rootfs}/probe.sh\n" for kind in KINDS if kind != "start"))
        config.write(f"lxc.hook.start = {start_hook}\n")


def _lxc_monitor_running(c) -> bool:
    """Whether lxc-start's monitor of `c` is still there (a daemon's ends after its post-stop hook)."""
    title = f"[lxc monitor] {c.lxcpath} {c.name}".encode()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if cmdline.read().startswith(title):
                    return True
        except OSError:   # gone meanwhile
            pass
    return False


def _probe_run(c, lxc: bool, env=None, cwd="/", daemon: bool = False,
               command: tuple[str, ...] = ("/bin/true",)) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    """A start of `c` by lxc-start or lxcsm, in the foreground or as a daemon, from `cwd`, until its
    post-stop hook ran: (its result, the kinds that ran, the probe's records, normalised).  The
    records' files are made writable by anyone first: with lxc.idmap, the hooks in the container's
    user namespace append to what host root made."""
    for name in ("probe.log", "probe.env"):
        (c.rootfs / name).write_text("")
        (c.rootfs / name).chmod(0o666)
    argv = ([LXC_START, "-n", c.name, "-P", c.lxcpath] if lxc
            else [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath])
    result = subprocess.run([*argv, "-d" if daemon else "-F", "--", *command], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, cwd=cwd, env=env)
    assert wait_for(lambda: "post-stop" in (c.rootfs / "probe.log").read_text()) or result.returncode
    assert c.monitor_exited() and wait_for(lambda: not _lxc_monitor_running(c))
    records = normalised((c.rootfs / "probe.env").read_text().splitlines(), lxc)
    return result, [line.split()[0] for line in (c.rootfs / "probe.log").read_text().splitlines()], records


def _probe_reboot(c, lxc: bool) -> list[str]:
    """A daemon start of `c`, a reboot, a kill: the probe's records of both boots, normalised."""
    for name in ("probe.log", "probe.env"):
        (c.rootfs / name).write_text("")
    log = c.rootfs / "probe.log"
    start = [LXC_START] if lxc else [*LXCSM, "start"]
    stop = ["lxc-stop"] if lxc else [*LXCSM, "stop"]
    where = ["-n", c.name, "-P", c.lxcpath]
    def ran(kind: str) -> int:
        return [line.split()[0] for line in log.read_text().splitlines()].count(kind)

    # Each step once the last has shown: init running (its start-host hook ran), then again.
    steps = (([*start, *where, "-d"], 1), ([*stop, *where, "-r", "-t", "30"], 2), ([*stop, *where, "-k"], 2))
    for argv, boots in steps:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd="/")
        assert result.returncode == 0, (argv, result.stderr)
        assert wait_for(lambda boots=boots: ran("start-host") >= boots)
    assert wait_for(lambda: ran("post-stop") == 2)
    assert c.monitor_exited() and wait_for(lambda: not _lxc_monitor_running(c))
    return normalised((c.rootfs / "probe.env").read_text().splitlines(), lxc)


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
@pytest.mark.usefixtures("lxc_pivot_removed")
def test_after_a_reboot_the_hooks_see_the_last_boots_variables_as_under_lxc_start(make_container):
    """LXC never unsets what it set: the second boot's pre-start sees LXC_TARGET=reboot, the first
    init's LXC_PID and its namespaces, and its child's hooks, cloned after, too."""
    c = make_container("busybox", extra=["lxc.signal.halt = SIGUSR1", "lxc.signal.reboot = SIGTERM"])
    _probed(c, "0")
    lxc_records = _probe_reboot(c, lxc=True)
    records = _probe_reboot(c, lxc=False)
    assert records == lxc_records
    assert [line.split()[0] for line in records if " argv 0: " in line] == [*KINDS, *KINDS]
    second_pre_start = records[records.index("start-host cwd: /") + 1:]
    assert "pre-start env: LXC_TARGET='reboot'" in second_pre_start
    assert "pre-mount env: LXC_PID='PID'" in second_pre_start


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
@pytest.mark.usefixtures("lxc_pivot_removed")
def test_a_daemons_hooks_run_in_slash_as_under_lxc_start(make_container, tmp_path):
    """Started as a daemon from another directory, the monitor changes to / as lxc-start's does:
    its hooks' cwd (and the PWD their shell exports) is /, wherever the start was asked from."""
    c = make_container("busybox")
    _probed(c, "0")
    command = ("/bin/sleep", "1")   # a daemon's start returns once init runs: it must not end before
    lxc_result, lxc_kinds, lxc_records = _probe_run(c, lxc=True, cwd=tmp_path, daemon=True, command=command)
    result, kinds, records = _probe_run(c, lxc=False, cwd=tmp_path, daemon=True, command=command)
    assert lxc_result.returncode == result.returncode == 0, (lxc_result.stderr, result.stderr)
    assert kinds == lxc_kinds == list(KINDS)
    assert records == lxc_records
    assert "pre-start cwd: /" in records and "stop env: PWD='/'" in records


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
@pytest.mark.usefixtures("lxc_pivot_removed")
@pytest.mark.parametrize("version", ["0", "1"])
def test_every_hook_is_given_the_arguments_and_environment_lxc_start_gives_it(make_container, tmp_path, version):
    """Arguments, ids, working directory and every variable of every kind, as lxc-start 5.0.2's
    hooks have them (lxc.console.* and lxc.log.level set, for LXC_CONSOLE... and LXC_LOG_LEVEL;
    a time offset, for the time namespace the stop hooks are told about)."""
    c = make_container("busybox", extra=["lxc.console.path = none", f"lxc.console.logfile = {tmp_path}/console.log",
                                         "lxc.log.level = NOTICE", "lxc.time.offset.boot = 1h"])
    _probed(c, version)
    # Both started in an environment without a locale: Python would add LC_CTYPE to lxcsm's own
    # (PEP 538), which lxc-start's hooks never see.
    bare = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    lxc_result, lxc_kinds, lxc_records = _probe_run(c, lxc=True, env=bare)
    result, kinds, records = _probe_run(c, lxc=False, env=bare)
    assert lxc_result.returncode == result.returncode == 0, (lxc_result.stderr, result.stderr)
    assert kinds == lxc_kinds == list(KINDS)
    assert records == lxc_records
    assert {f"start env: LXC_HOOK_VERSION='{version}'", "start env: LXC_LOG_LEVEL='NOTICE'",
            "start env: LXC_CONSOLE='none'", "start-host env: LXC_PID='PID'"} <= set(records)
    assert not any(" env: LC_CTYPE=" in line for line in records)
    if os.path.exists("/proc/self/ns/time"):   # a kernel with time namespaces: the offset made one
        assert "stop env: LXC_TIME_NS='/proc/MONITOR/fd/FD'" in records


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
@pytest.mark.usefixtures("lxc_pivot_removed")
def test_with_lxc_idmap_the_hooks_in_the_container_are_its_root_as_under_lxc_start(userns_container):  # noqa: F811
    """lxc.idmap (LXC's userns.conf, ids shifted by 100000): pre-mount, mount, autodev and start
    run as the user namespace's root (uid_map 0 100000 65536), the others as the host's, each with
    what lxc-start 5.0.2 gives it.  Both started without newuidmap on PATH (WITHOUT_MAP_HELPERS)."""
    c = userns_container()
    _probed(c, "0")
    lxc_result, lxc_kinds, lxc_records = _probe_run(c, lxc=True, env=WITHOUT_MAP_HELPERS)
    result, kinds, records = _probe_run(c, lxc=False, env=WITHOUT_MAP_HELPERS)
    assert lxc_result.returncode == result.returncode == 0, (lxc_result.stderr, result.stderr)
    assert kinds == lxc_kinds == list(KINDS)
    assert records == lxc_records
    ids = {line.split()[0]: line.split(": ", 1)[1] for line in records if " id: " in line}
    assert {kind for kind, seen in ids.items() if seen == "0:0 uid_map 0 100000 65536 "} == \
        {"pre-mount", "mount", "autodev", "start"}
    assert all(seen == "0:0 uid_map 0 0 4294967295 " for kind, seen in ids.items()
               if kind in ("pre-start", "start-host", "stop", "post-stop"))
    assert "start env: container_ttys='pts/0 pts/1 pts/2 pts/3 pts/4'" in records   # lxc.tty.max = 5


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
@pytest.mark.usefixtures("lxc_pivot_removed")
def test_a_start_hook_that_is_a_shell_command_is_refused_as_by_lxc_start(make_container):
    """LXC looks for a file named by the start hook's whole value in the rootfs, after the autodev
    hooks: `/bin/sh -c ...` is not one, the start fails there - the stop hooks still run."""
    c = make_container("busybox")
    _probed(c, "0", start_hook='/bin/sh -c "echo hello"')
    line = len(c.config.read_text().splitlines())
    lxc_result, lxc_kinds, _ = _probe_run(c, lxc=True)
    result, kinds, _ = _probe_run(c, lxc=False)
    assert 'Start hook "/bin/sh -c "echo hello"" not found in container' in lxc_result.stderr
    assert lxc_result.returncode == result.returncode == 1
    assert kinds == lxc_kinds == ["pre-start", "pre-mount", "mount", "autodev", "stop", "post-stop"]
    # (the log line's error="..." escapes the hook's quotes)
    assert (f"{c.config}:{line}: lxc.hook.start: start hook '/bin/sh -c \\\"echo hello\\\"' not found in container"
            in result.stderr), result.stderr
