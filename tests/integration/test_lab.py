"""Lab mode on real containers: every `lxcsm lab` exercise end to end (the right answer passes, a
wrong one fails, nothing is left behind), and what `lxcsm start --lab --lab-skip` refuses, shows
and protects."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lxcsm.engine.analysis.lab_exercises import EXERCISES
from tests.integration.harness import LXCSM, cgroup_dirs, host_mounts, unique_name, wait_for

pytestmark = pytest.mark.root

# What each exercise's run without its step shows on any Linux host, by the lesson it teaches.
RIGHT = {"pivot_root": "a", "proc": "c", "pid_ns": "b", "net_ns": "b", "cgroup_ns": "c", "cap_drop": "a",
         "hostname": "c"}


def test_every_exercise_has_its_answer_here():
    assert sorted(RIGHT) == sorted(EXERCISES)


@pytest.fixture
def lab(tmp_path):
    """lab(EXERCISE, LETTER) runs `lxcsm lab EXERCISE --answer LETTER` with its throwaway container
    under the test's own TMPDIR; afterwards that directory must be empty, no cgroup of the
    containers left and the host's mount table unchanged."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    mounts_before = host_mounts()
    names: list[str] = []

    def run(exercise: str, answer: str) -> subprocess.CompletedProcess:
        names.append(unique_name("lab"))
        return subprocess.run([*LXCSM, "lab", exercise, "--answer", answer, "-n", names[-1]],
                              env={**os.environ, "TMPDIR": str(tmpdir)}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)

    yield run
    left = {name: cgroup_dirs(name) for name in names}
    for path in sorted((p for paths in left.values() for p in paths), key=len, reverse=True):
        os.rmdir(path)
    assert {name: paths for name, paths in left.items() if paths} == {}, "a lab left cgroups behind"
    assert os.listdir(tmpdir) == [], "a lab left its container's directory behind"
    mounts_after = host_mounts()
    assert mounts_after == mounts_before, f"the host's mount table changed: {set(mounts_after) ^ set(mounts_before)}"


@pytest.mark.parametrize("exercise", sorted(RIGHT))
def test_an_exercise_passes_the_right_answer_and_fails_a_wrong_one(lab, exercise):
    right = RIGHT[exercise]
    passed = lab(exercise, right)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"\nRight: {right}) " in passed.stdout
    assert "lxcsm: LAB MODE (for teaching, never for production)" in passed.stdout
    wrong = next(letter for letter in "abc" if letter != right)
    failed = lab(exercise, wrong)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"\nNot this time: you said {wrong}); it is {right}) " in failed.stdout


def start(container, *args: str, **how) -> subprocess.CompletedProcess:
    return subprocess.run([*LXCSM, "start", "-n", container.name, "-P", container.lxcpath, *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, **how)


@pytest.mark.parametrize("flags, refusal", [
    (["--lab-skip", "pivot_root", "-F"], "add --lab to say that is what you want"),
    (["--lab", "--lab-skip", "pivot_root", "-d"], "a lab start runs in the foreground only (-F)"),
    (["--lab", "--lab-skip", "pivot_root", "-F"], "never the container's own init"),
])
def test_lab_mode_is_refused_in_one_line_and_starts_nothing(make_container, flags, refusal):
    container = make_container("busybox")
    command = ["--", "/bin/sh", "-c", "true"] if "-F" in flags and "--lab" not in flags else []
    done = start(container, *flags, *command)
    assert done.returncode == 1 and refusal in done.stderr and done.stderr.count("\n") == 1
    assert not os.path.exists(os.path.join(container.lxcpath, container.name, "lxcsm-last-start.log"))


def test_without_pivot_root_the_hosts_root_is_seen_read_only(make_container, tmp_path):
    container = make_container("busybox")
    mark = tmp_path / "written-by-the-lab"
    done = start(container, "--lab", "--lab-skip", "pivot_root", "-F", "--",
                 "/bin/sh", "-c", f"exec 2>&1; cat /etc/os-release; touch {mark}; echo x > /dev/null; exit 0")
    assert done.returncode == 0, done.stderr
    with open("/etc/os-release") as host_release:
        assert done.stdout.startswith(host_release.read())   # the host's file, not the rootfs's (none)
    assert "Read-only file system" in done.stdout and not mark.exists()
    assert "Permission denied" in done.stdout   # nodev: no device node opens
    assert done.stderr.startswith("lxcsm: LAB MODE (for teaching, never for production)")


def test_info_and_the_flight_record_say_lab_mode(make_container):
    container = make_container("busybox")
    lab_start = subprocess.Popen([*LXCSM, "start", "-n", container.name, "-P", container.lxcpath, "--lab",
                                  "--lab-skip", "cgroup_ns,cap_drop", "-F", "--", "/bin/sleep", "600"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def info(*args: str) -> str:
            return subprocess.run([*LXCSM, "info", "-n", container.name, "-P", container.lxcpath, *args],
                                  capture_output=True, text=True).stdout

        assert wait_for(lambda: "RUNNING" in info("-s")), "the lab start did not reach RUNNING"
        shown = info()
        assert "LAB MODE:       this start left out cgroup_ns, cap_drop (lxcsm start --lab-skip)" in shown
        subprocess.run([*LXCSM, "stop", "-k", "-n", container.name, "-P", container.lxcpath], check=True)
    finally:
        if lab_start.poll() is None:
            lab_start.kill()
        lab_start.wait()
    with open(os.path.join(container.lxcpath, container.name, "lxcsm-last-start.log")) as record:
        events = [json.loads(line) for line in record if line.startswith("{")]
    assert [(e["side"], e["category"], e["skip"]) for e in events if e["event"] == "lab skipped"] == [
        ("child", "configure", "cgroup_ns"), ("child", "setup_capabilities", "cap_drop")]


def test_a_pause_before_a_state_lab_mode_passes_over_says_so(make_container):
    container = make_container("busybox")
    paused = subprocess.Popen([*LXCSM, "start", "-n", container.name, "-P", container.lxcpath, "--lab", "--lab-skip",
                               "pivot_root", "-F", "--break-at", "setup_pivot_root", "--", "/bin/true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert paused.stderr is not None
        seen = []
        for line in paused.stderr:   # ends early only if the start never pauses there
            seen.append(line)
            if len(seen) > 1 and seen[-2].strip() == "child:setup_pivot_root will:":
                break
        plan = "    - LAB MODE: not entered (pivot_root); instead: every mount of the host's / remounted read-only"
        assert seen[-1].startswith(plan), seen
    finally:
        subprocess.run([*LXCSM, "continue", "--abort", "-n", container.name, "-P", container.lxcpath],
                       capture_output=True)
        paused.communicate()
    assert paused.returncode == 1   # aborted by the user: a failed start, cleaned up
