"""Starts that must fail: one clear line, a non-zero exit, nothing left behind.

The leak check of the `make_container` fixture (tests/conftest.py) runs after
each test: no cgroups, monitor, command socket or host mount may remain.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.integration.harness import LXCSM

pytestmark = pytest.mark.root


def _one_line(stderr: str) -> str:
    """Bad input: exactly one line."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _failure_report(stderr: str) -> str:
    """A failed start: one error line first, then the flight record that led to it."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert lines[1].startswith("lxcsm: the ") and "events that led to it" in lines[1], stderr
    recorded = [line for line in lines[2:] if line.startswith("  lxcsm ")]
    assert any(" state side=child " in line for line in recorded)     # both machines, interleaved
    assert any(" state side=monitor " in line for line in recorded)
    assert "start failed" in recorded[-1]
    assert lines[-1].startswith("lxcsm: this start's events are kept in ")
    return lines[0]


def test_missing_rootfs_fails_before_touching_the_host(make_container):
    c = make_container()
    shutil.rmtree(c.rootfs)
    result = c.start_fg("/bin/true")
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert re.search(rf"{re.escape(str(c.config))}:\d+: lxc.rootfs.path: rootfs .* does not exist", line), line


def test_command_missing_from_rootfs_is_named(make_container):
    c = make_container()
    result = c.start_fg("/no/such/init")
    assert result.returncode == 1
    assert _one_line(result.stderr).startswith("lxcsm: --: /no/such/init: not found in rootfs")


def test_unknown_key_names_file_line_and_key(make_container):
    c = make_container(extra=["lxc.no.such.key = 1"])
    result = c.start_fg("/bin/true")
    assert result.returncode == 1
    line = _one_line(result.stderr)
    lineno = c.config.read_text().splitlines().index("lxc.no.such.key = 1") + 1
    assert f"{c.config}:{lineno}: lxc.no.such.key: unknown key" in line


def test_bad_mount_entry_aborts_in_setup_mounts_naming_the_entry(make_container):
    c = make_container(extra=["lxc.mount.entry = tmpfs scratch tmpfs size=lots,create=dir 0 0"])
    result = c.start_fg("/bin/true")   # default log level: no -l, no -o
    assert result.returncode == 1
    line = _failure_report(result.stderr)
    assert "failed_state=setup_mounts" in line and "failed_side=child" in line, line
    lineno = c.config.read_text().splitlines().index(
        "lxc.mount.entry = tmpfs scratch tmpfs size=lots,create=dir 0 0") + 1
    assert f"{c.config}:{lineno}: lxc.mount.entry" in line
    assert "Invalid argument" in line


def test_failing_exec_aborts_in_exec(make_container):
    c = make_container()
    script = c.rootfs / "start.sh"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    result = c.start_fg("/start.sh")
    assert result.returncode == 1
    line = _failure_report(result.stderr)
    assert "failed_state=exec" in line and "failed_side=child" in line, line
    assert "No such file or directory" in line


def test_failed_daemon_start_reports_to_the_caller(make_container):
    c = make_container()
    script = c.rootfs / "start.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)   # exists, so preflight passes, but it cannot be executed
    result = c.run("start", "-d", "--", "/start.sh")
    assert result.returncode == 1
    line = _failure_report(result.stderr)
    assert "child state exec failed" in line and "Permission denied" in line, line


def test_explain_failure_reads_the_last_start(make_container):
    c = make_container()
    (c.rootfs / "start.sh").write_text("#!/bin/sh\n")   # not executable
    assert c.run("start", "-d", "--", "/start.sh").returncode == 1
    explained = subprocess.run([*LXCSM, "explain-failure", c.name, "-P", c.lxcpath],
                               capture_output=True, text=True, timeout=30)
    assert explained.returncode == 0, explained.stderr
    first = explained.stdout.splitlines()[0]
    assert re.match(rf"{c.name}: the last start failed in the child state exec at [-\d]+ [\d:.]+: ", first), first
    assert "exec (child) - become init." in explained.stdout      # the state's own docstring
    assert " state side=child " in explained.stdout


def test_bad_cli_flag_is_one_line(make_container):
    c = make_container()
    result = c.run("start", "--no-such-flag")
    assert result.returncode == 2
    assert "--no-such-flag" in _one_line(result.stderr)


def test_bad_override_names_the_flag(make_container):
    c = make_container()
    result = c.run("start", "-F", "-s", "lxc.autodev=maybe", "--", "/bin/true")
    assert result.returncode == 1
    assert _one_line(result.stderr).startswith("lxcsm: -s:1: lxc.autodev:")


def test_stale_cgroups_of_a_crashed_start_are_replaced(make_container):
    c = make_container()
    from lxcsm.engine.linux import cgroups
    stale = [os.path.join(h.home, f"lxc.payload.{c.name}") for h in cgroups.hierarchies()]
    for path in stale:
        os.mkdir(path)
    result = c.start_fg("/bin/true")
    assert result.returncode == 0, result.stderr
    assert not any(os.path.exists(p) for p in stale)
