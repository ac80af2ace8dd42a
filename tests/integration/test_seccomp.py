"""lxc.seccomp.profile: LXC's policy language, installed as a real filter on init."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root


def _start(make_container, tmp_path, policy: str, script: str):
    (tmp_path / "policy").write_text(policy)
    c = make_container(extra=[f"lxc.seccomp.profile = {tmp_path / 'policy'}"])
    return c.start_fg("/bin/sh", "-c", script)


def test_a_denylist_rule_answers_with_its_errno(make_container, tmp_path):
    # mkdir with EPERM (1), everything else allowed (the denylist's default).
    result = _start(make_container, tmp_path, "2\ndenylist\nmkdir errno 1\nmkdirat errno 1\n",
                    "mkdir /tmp/x 2>&1; echo rc=$?; echo still-running")
    assert result.returncode == 0, result.stderr
    assert "Operation not permitted" in result.stdout and "rc=1" in result.stdout
    assert "still-running" in result.stdout


def test_an_argument_filter_and_kill(make_container, tmp_path):
    # kill only umask(0o123): umask(0o077) goes through, then umask 123 kills the shell.
    result = _start(make_container, tmp_path, "2\ndenylist\nreject_force_umount\n[all]\n"
                                                 "umask kill [0,83,SCMP_CMP_EQ]\nnosuchsyscall errno 1\n",
                    "umask 077; echo passed; umask 123; echo not-reached")
    assert result.stdout == "passed\n"
    assert result.returncode == 128 + 31                  # SIGSYS: init was killed by the filter


def test_rules_for_another_architecture_are_skipped(make_container, tmp_path):
    result = _start(make_container, tmp_path, "2\ndenylist\n[arm64]\nmkdir errno 1\nmkdirat errno 1\n",
                    "mkdir /tmp/y && echo made")
    assert result.returncode == 0 and result.stdout == "made\n", result.stderr
