"""lxc.hook.*: each kind runs at its point of a real start, with LXC's arguments and
environment, and a failing hook fails the start without leaving anything behind."""

from __future__ import annotations

import re
import stat

import pytest

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
    assert [a.split(":")[0] for a in stop_args] == ["mnt", "pid", "uts", "ipc", "net"]
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
