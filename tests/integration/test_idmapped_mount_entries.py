"""Idmapped lxc.mount.entry binds (issue 12): a host directory whose files are owned by 0 on
disk, bound into an unprivileged container (lxc.idmap u/g 0 100000 65536) with
``idmap=container``, is its root's inside, and what its root makes there is owned by 0 on
disk - under lxc-start 5.0.2 and under lxcsm alike, on an idmapped rootfs and on a shifted
one; ro still makes such a bind read-only.  A source the kernel cannot idmap is refused
before anything starts, in one line naming the entry, the path and its filesystem.

The containers and the bound directories live below a directory of the test's own in /tmp,
searchable by others: pytest's tmp_path is below a 0700 directory, which the container's
root could not pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fixtures import rootfs as rootfs_builders
from lxcsm.engine.linux import kernel
from tests.integration.harness import WITHOUT_MAP_HELPERS, Container, host_mounts, unique_name

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

SHIFT = 100000
CONFIG = ["lxc.include = /usr/share/lxc/config/userns.conf",
          f"lxc.idmap = u 0 {SHIFT} 65536", f"lxc.idmap = g 0 {SHIFT} 65536", "lxc.mount.auto = proc:mixed"]
# init's report: the owners of the bound files as the container sees them, a file its root
# makes in each bind (or why it cannot), and which of its mounts are idmapped.
REPORT = ("id -u; stat -c '%u:%g %n' /srv/data/by-0 /srv/data/by-1000 /srv/data /srv/ro/by-0; "
          "for d in data ro; do if touch /srv/$d/made 2>/dev/null; then stat -c '%u:%g %n' /srv/$d/made; "
          "else echo cannot create /srv/$d/made; fi; done; "
          "awk '$6 ~ /idmapped/ {print $5}' /proc/self/mountinfo | sort; echo end")
LXC_START = shutil.which("lxc-start") or "lxc-start"   # found before PATH loses /usr/bin


@pytest.fixture
def with_idmapped_binds():
    """with_idmapped_binds(rootfs="idmapped"|"shifted") -> (Container, data, ro): a busybox
    container whose /srv/data and /srv/ro (read-only) are idmap=container binds of host
    directories owned by 0, each holding by-0 (owned 0:0) and by-1000 (1000:1000); its rootfs
    idmapped (left owned by 0) or shifted (chowned to the map).  Afterwards the leak check and
    nothing left below the test's directory."""
    base = Path(tempfile.mkdtemp(prefix="lxcsm-idmapped-binds-", dir="/tmp"))
    os.chmod(base, 0o711)
    made: list[Container] = []

    def make(rootfs: str = "idmapped") -> tuple[Container, Path, Path]:
        name = unique_name("b")
        root = base / "lxc" / name / "rootfs"
        fs = rootfs_builders.make_busybox_rootfs(root)
        if rootfs == "shifted":
            for path in [root, *root.rglob("*")]:
                status = os.lstat(path)
                os.lchown(path, status.st_uid + SHIFT, status.st_gid + SHIFT)
        binds = []
        for kind in ("data", "ro"):
            source = base / f"{name}-{kind}"
            source.mkdir()
            for file, owner in (("by-0", 0), ("by-1000", 1000)):
                (source / file).write_text(file)
                os.chown(source / file, owner, owner)
            binds.append(source)
        data, ro = binds
        lines = [*CONFIG,
                 f"lxc.mount.entry = {data} srv/data none bind,create=dir,idmap=container 0 0",
                 f"lxc.mount.entry = {ro} srv/ro none bind,create=dir,ro,idmap=container 0 0"]
        if rootfs == "idmapped":
            lines.append("lxc.rootfs.options = idmap=container")
        config = rootfs_builders.write_config(base / "lxc", name, fs, lines)
        container = Container(name, str(base / "lxc"), root, config)
        made.append(container)
        return container, data, ro

    try:
        yield make
        for c in made:
            c.monitor_exited(timeout=5)
        leaks = {c.name: c.leaks() for c in made}
        assert {k: v for k, v in leaks.items() if v} == {}, "a start left things behind"
        # (only below our directory: other tests of the team mount and unmount meanwhile)
        assert [m for m in host_mounts() if m.startswith(str(base))] == [], "mounts left below the containers"
    finally:
        for c in made:
            c.force_cleanup()
        shutil.rmtree(base)


def _report(c: Container, data: Path, ro: Path, lxc: bool) -> tuple[list[str], list[tuple[int, int] | None]]:
    """Start `c` in the foreground with REPORT as init: (what init reported, with the rootfs's
    path taken out of mount points, the owners on disk of the files it made in each bind)."""
    for source in (data, ro):
        (source / "made").unlink(missing_ok=True)
    if lxc:
        console = Path(c.lxcpath) / c.name / "console.log"
        result = subprocess.run([LXC_START, "-n", c.name, "-P", c.lxcpath, "-F", "-L", str(console),
                                 "--", "/bin/sh", "-c", REPORT], env=WITHOUT_MAP_HELPERS,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        output = console.read_text()
        console.unlink()
    else:
        result = c.run("start", "-F", "-l", "WARN", "--", "/bin/sh", "-c", REPORT, env=WITHOUT_MAP_HELPERS)
        output = result.stdout
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    assert lines[-1] == "end", output
    owners = [((s := (source / "made").stat()).st_uid, s.st_gid) if (source / "made").exists() else None
              for source in (data, ro)]
    return lines, owners


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
@pytest.mark.parametrize("rootfs", ["idmapped", "shifted"])
def test_an_idmapped_bind_is_the_containers_roots_and_written_as_0_on_disk_as_under_lxc_start(
        with_idmapped_binds, rootfs):
    c, data, ro = with_idmapped_binds(rootfs)

    under_lxc = _report(c, data, ro, lxc=True)
    under_lxcsm = _report(c, data, ro, lxc=False)

    assert under_lxcsm == under_lxc
    lines, owners = under_lxcsm
    assert lines[0] == "0"                                   # init is the container's root
    assert lines[1:5] == ["0:0 /srv/data/by-0", "1000:1000 /srv/data/by-1000", "0:0 /srv/data",
                          "0:0 /srv/ro/by-0"]                # the owners on disk, through the map
    assert lines[5:7] == ["0:0 /srv/data/made", "cannot create /srv/ro/made"]
    assert owners == [(0, 0), None]                          # written as 0 on disk; ro kept it out
    assert lines[7:-1] == (["/"] if rootfs == "idmapped" else []) + ["/srv/data", "/srv/ro"]
    # The host's directories themselves are left as they were.
    assert [(p.stat().st_uid, p.stat().st_mode & 0o7777) for p in (data, ro)] == [(0, 0o755)] * 2


def test_a_bind_source_the_kernel_cannot_idmap_is_refused_in_one_line_before_anything_starts(
        with_idmapped_binds):
    c, data, _ro = with_idmapped_binds()
    kernel.mount("lxcsm-test", str(data), "ramfs")   # ramfs has no idmapped mounts
    try:
        result = c.run("start", "-F", "--", "/bin/true", env=WITHOUT_MAP_HELPERS)
    finally:
        kernel.umount2(str(data))
    text = c.config.read_text().splitlines()
    line = 1 + next(i for i, setting in enumerate(text) if setting.startswith(f"lxc.mount.entry = {data} "))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"lxcsm: {c.config}:{line}: lxc.mount.entry: idmap=container: cannot idmap {data}: the filesystem "
        f"mounted on {data} (ramfs) does not support idmapped mounts (mount_setattr: EINVAL)"]
    assert not (c.rootfs / "srv").exists()   # nothing made in the rootfs either
