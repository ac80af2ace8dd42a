"""Issue 9: a process writing into the rootfs during a start cannot send a mount or a created file onto the host.

While containers start with ``lxc.mount.entry = SOURCE race/file none bind,ro,create=file``, a
process of the test's own keeps swapping the rootfs's ``race`` between a directory and a
symlink to a host directory the test made (by its absolute path, and climbing out with
``..``).  A start may succeed (the file is made and bound inside the rootfs), succeed with
the bound file out of sight because its directory was swapped away after the mount (still
inside the rootfs), or be refused (an error naming the mount entry); either way nothing is
ever created in the host directory, and no mount in the container's namespace ever lands on
it - an lxc.hook.mount hook, run in that namespace after the mounts and before pivot_root,
reports any mount there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root

STARTS = 30
DEADLINE = 300   # seconds for all the racing starts, on a busy machine

# Swaps ROOTFS/race between a directory and each of LINKS until killed.
RACER = """
import itertools, os, shutil, sys
race, links = sys.argv[1], sys.argv[2:]
parked = race + ".parked"
print("racing", flush=True)
for turn in itertools.count():
    try:
        os.rename(race, parked)
        os.symlink(links[turn % len(links)], race)
        shutil.rmtree(parked)   # while race is the link
        os.unlink(race)
        os.mkdir(race)
    except OSError:
        pass   # the start made or removed something meanwhile: the next turn goes on
"""

# Run in the container's mount namespace before pivot_root: every mount on HOST_DIR, if any.
HOOK = """#!/bin/sh
awk -v dir="$1" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo >> "$2"
"""


def entry_origin(c) -> str:
    """How an error names the racing entry: its config file, line and key."""
    lines = c.config.read_text().splitlines()
    number = next(n for n, line in enumerate(lines, 1) if "race/file" in line and "mount.entry" in line)
    return f"{c.config}:{number}: lxc.mount.entry"


@pytest.fixture
def race_setup(tmp_path, make_container):
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    source = tmp_path / "source-file"
    source.write_text("bound from the host\n")
    report = tmp_path / "mounts-on-host-dir"
    report.write_text("")
    hook = tmp_path / "report-mounts.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    c = make_container(extra=[
        f"lxc.mount.entry = {source} race/file none bind,ro,create=file 0 0",
        f"lxc.hook.mount = {hook} {host_dir} {report}",
    ])
    return c, host_dir, report


def test_the_entry_binds_its_file_without_a_race(race_setup):
    c, host_dir, report = race_setup
    result = c.start_fg("/bin/cat", "/race/file")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "bound from the host\n"
    assert os.path.isfile(c.rootfs / "race/file")
    assert os.listdir(host_dir) == [] and report.read_text() == ""


@pytest.mark.parametrize("absolute", [True, False])
def test_a_link_to_a_host_dir_is_refused_naming_the_entry(race_setup, absolute):
    c, host_dir, report = race_setup
    os.symlink(host_dir if absolute else os.path.relpath(host_dir, c.rootfs), c.rootfs / "race")
    result = c.start_fg("/bin/true")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    entry = f"{entry_origin(c)}: mounting {host_dir.parent / 'source-file'} on race/file: "
    error = [line for line in result.stderr.splitlines() if entry in line]
    assert error and "a symlink to nothing in the rootfs" in error[0] and "(ENOENT): /race" in error[0], \
        result.stderr
    assert os.listdir(host_dir) == [] and report.read_text() == ""


def test_a_racing_swap_to_a_host_dir_never_reaches_it(race_setup):
    c, host_dir, report = race_setup
    race = c.rootfs / "race"
    race.mkdir()
    links = [str(host_dir), os.path.relpath(host_dir, c.rootfs)]   # the second climbs out with ..
    assert links[1].startswith("../")
    racer = subprocess.Popen([sys.executable, "-c", RACER, str(race), *links], stdout=subprocess.PIPE)
    outcomes = {"bound": 0, "swapped away": 0, "refused": 0}
    try:
        assert racer.stdout.readline() == b"racing\n"
        deadline = time.monotonic() + DEADLINE
        for _ in range(STARTS):
            if time.monotonic() > deadline:
                break
            result = c.start_fg("/bin/sh", "-c", "cat /race/file 2>/dev/null || echo swapped away")
            assert os.listdir(host_dir) == [], f"created on the host: {os.listdir(host_dir)}"
            if result.returncode == 0:
                seen = result.stdout.strip()
                assert seen in ("bound from the host", "swapped away")
                outcomes["bound" if seen == "bound from the host" else seen] += 1
            else:
                # refused: an error naming the entry (the config file, its line, the key)
                assert f"{entry_origin(c)}: mounting" in result.stderr, result.stderr
                assert "Traceback" not in result.stderr
                outcomes["refused"] += 1
            assert c.monitor_exited(timeout=10) and c.leaks() == []
    finally:
        racer.kill()
        racer.wait()
        racer.stdout.close()
    print(f"{sum(outcomes.values())} racing starts: {outcomes}")
    assert sum(outcomes.values()) >= 5, "too few starts before the deadline to say anything"
    assert os.listdir(host_dir) == []
    assert report.read_text() == "", "a mount landed on the host directory"
