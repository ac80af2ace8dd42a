"""Idmapped lxc.mount.entry binds (issue 12): a host directory whose files are owned by 0 on
disk, bound into an unprivileged container (lxc.idmap u/g 0 100000 65536) with
``idmap=container``, is its root's inside, and what its root makes there is owned by 0 on
disk - under lxc-start 5.0.2 and under lxcsm alike, on an idmapped rootfs and on a shifted
one; ro still makes such a bind read-only; an fstab line, an rbind (its submounts too) to
another namespace's map and a relative source inside a shifted rootfs are idmapped alike.
The one difference, as measured: mountinfo lists the idmapped binds before the container's
other mounts, as lxcsm's monitor makes them before the child mounts anything.  A source the
kernel cannot idmap is refused before anything starts, in one line naming the entry, the
path and its filesystem; a bind the child cannot attach fails the start, naming it, and
leaves nothing behind.

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
from lxcsm.engine.linux import idmapped_mounts, kernel
from tests.integration.harness import (
    LXC_START,
    WITHOUT_MAP_HELPERS,
    Container,
    idmapped_init_report,
    left_behind,
    mounts_below,
    unique_name,
)

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


@pytest.fixture
def with_idmapped_binds():
    """with_idmapped_binds(rootfs="idmapped"|"shifted", extra=CONFIG_LINES, entries=True) -> (Container,
    data, ro): a busybox container whose /srv/data and /srv/ro (read-only) are (if `entries`)
    idmap=container binds of host directories owned by 0, each holding by-0 (owned 0:0) and
    by-1000 (1000:1000); its rootfs idmapped (left owned by 0) or shifted (chowned to the map).
    Afterwards the leak check, and nothing left below the test's directory (where a caller may
    make more: with_idmapped_binds.base)."""
    base = Path(tempfile.mkdtemp(prefix="lxcsm-idmapped-binds-", dir="/tmp"))
    os.chmod(base, 0o711)
    made: list[Container] = []

    def make(rootfs: str = "idmapped", extra: tuple[str, ...] = (),
             entries: bool = True) -> tuple[Container, Path, Path]:
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
                 f"lxc.mount.entry = {ro} srv/ro none bind,create=dir,ro,idmap=container 0 0"][:None if entries else -2]
        if rootfs == "idmapped":
            lines.append("lxc.rootfs.options = idmap=container")
        config = rootfs_builders.write_config(base / "lxc", name, fs, [*lines, *extra])
        container = Container(name, str(base / "lxc"), root, config)
        made.append(container)
        return container, data, ro

    make.base = base   # type: ignore[attr-defined]
    try:
        yield make
        assert left_behind(made) == {}, "a start left things behind"
        assert mounts_below(base) == [], "mounts left below the containers"
    finally:
        for c in made:
            c.force_cleanup()
        shutil.rmtree(base)


def _report(c: Container, data: Path, ro: Path, lxc: bool) -> tuple[list[str], list[tuple[int, int] | None]]:
    """Start `c` in the foreground with REPORT as init: (what init reported, with the rootfs's
    path taken out of mount points, the owners on disk of the files it made in each bind)."""
    for source in (data, ro):
        (source / "made").unlink(missing_ok=True)
    lines = idmapped_init_report(c, REPORT, lxc)
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



def _lines(c: Container, command: str, lxc: bool) -> list[str]:
    """What `command`, init of `c` started in the foreground, printed."""
    if lxc:
        console = Path(c.lxcpath) / c.name / "console.log"
        result = subprocess.run([LXC_START, "-n", c.name, "-P", c.lxcpath, "-F", "-L", str(console),
                                 "--", "/bin/sh", "-c", command], env=WITHOUT_MAP_HELPERS,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        output = console.read_text()
        console.unlink()
    else:
        result = c.run("start", "-F", "-l", "WARN", "--", "/bin/sh", "-c", command, env=WITHOUT_MAP_HELPERS)
        assert result.returncode == 0, result.stderr
        output = result.stdout
    assert c.monitor_exited()
    return [line.strip() for line in output.splitlines() if line.strip()]


# The mounts below /srv in the order init's mountinfo lists them (the order they were made),
# and the owners of files through them.
MOUNTS_BELOW_SRV = "awk '$5 ~ /^\\/srv\\// {print $5}' /proc/self/mountinfo; "


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_an_idmapped_fstab_line_is_mounted_as_under_lxc_start(with_idmapped_binds):
    base = with_idmapped_binds.base
    for name in ("plain", "mapped"):
        (base / name).mkdir()
        (base / name / "by-0").write_text("")
    fstab = base / "fstab"
    fstab.write_text(f"{base}/mapped srv/mapped none bind,create=dir,idmap=container 0 0\n"
                     f"{base}/plain srv/plain none bind,create=dir 0 0\n")
    # (No idmapped lxc.mount.entry beside it: LXC 5.0.2 fails a start with idmapped lines in
    # both, "Expected mount sequence number and mount sequence number from parent mismatch" -
    # its child counts the exchanges from 0 again for the fstab, its parent does not.)
    c, _data, _ro = with_idmapped_binds(entries=False, extra=(
        f"lxc.mount.fstab = {fstab}", "lxc.mount.entry = tmpfs srv/tmp tmpfs create=dir 0 0"))
    report = MOUNTS_BELOW_SRV + "stat -c '%u:%g %n' /srv/mapped/by-0 /srv/plain/by-0; echo end"

    under_lxc, under_lxcsm = (_lines(c, report, lxc) for lxc in (True, False))

    # Not idmapped, root's 0 is nobody to the container.
    assert under_lxcsm[3:] == under_lxc[3:] == ["0:0 /srv/mapped/by-0", "65534:65534 /srv/plain/by-0", "end"]
    # LXC made the idmapped copy after the fstab's plain line and the entry, lxcsm's monitor
    # before them: mountinfo, in the order the mounts were made, says so (see the test below).
    assert under_lxc[:3] == ["/srv/plain", "/srv/tmp", "/srv/mapped"]
    assert under_lxcsm[:3] == ["/srv/mapped", "/srv/plain", "/srv/tmp"]



@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_an_rbind_idmapped_to_another_namespace_idmaps_its_submounts_as_under_lxc_start(with_idmapped_binds):
    base = with_idmapped_binds.base
    # A tree with a tmpfs below it, idmapped to a namespace mapping 0 to 200000, which the
    # container does not map: through it, files owned by 0 belong to nobody the container knows.
    (base / "tree" / "sub").mkdir(parents=True)
    kernel.mount("lxcsm-test", str(base / "tree" / "sub"), "tmpfs")
    userns = idmapped_mounts.user_namespace([("u", 0, 200000, 65536), ("g", 0, 200000, 65536)])
    userns_file = base / "userns"
    userns_file.touch()
    kernel.mount(f"/proc/self/fd/{userns}", str(userns_file), None, kernel.MS_BIND)   # for both to open
    try:
        for directory in (base / "tree", base / "tree" / "sub"):
            (directory / "by-0").write_text("")
        c, _data, _ro = with_idmapped_binds(extra=(
            f"lxc.mount.entry = {base}/tree srv/tree none rbind,create=dir,idmap={userns_file} 0 0",))
        report = MOUNTS_BELOW_SRV + "stat -c '%u:%g %n' /srv/tree/by-0 /srv/tree/sub/by-0; echo end"

        under_lxc, under_lxcsm = (_lines(c, report, lxc) for lxc in (True, False))
    finally:
        kernel.umount2(str(userns_file))
        kernel.umount2(str(base / "tree" / "sub"))
        os.close(userns)

    assert under_lxcsm == under_lxc
    assert under_lxcsm == ["/srv/data", "/srv/ro", "/srv/tree", "/srv/tree/sub",
                           "65534:65534 /srv/tree/by-0", "65534:65534 /srv/tree/sub/by-0", "end"]


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_mountinfo_lists_the_idmapped_binds_by_when_the_monitor_made_them_not_where_lxc_does(with_idmapped_binds):
    c, _data, _ro = with_idmapped_binds("shifted", extra=("lxc.mount.entry = tmpfs srv/tmp tmpfs create=dir 0 0",))
    report = "awk '$5 == \"/\" || $5 ~ /^\\/srv\\// {print $5}' /proc/self/mountinfo; echo end"

    under_lxc, under_lxcsm = (_lines(c, report, lxc) for lxc in (True, False))

    # The one difference the earlier copies make, as measured: the kernel lists a namespace's
    # mounts by when each was made (its mount id), and lxcsm's monitor copies the binds'
    # sources before the child mounts anything, LXC's child after its other entries.  Where
    # each is attached, and so what covers what, is the same (the tests above).
    assert under_lxc == ["/", "/srv/tmp", "/srv/data", "/srv/ro", "end"]
    assert under_lxcsm == ["/srv/data", "/srv/ro", "/", "/srv/tmp", "end"]


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_a_relative_source_inside_a_shifted_rootfs_is_idmapped_as_under_lxc_start(with_idmapped_binds):
    c, _data, _ro = with_idmapped_binds("shifted", entries=False, extra=(
        "lxc.mount.entry = opt/shared srv/shared none bind,create=dir,relative,idmap=container 0 0",))
    shared = c.rootfs / "opt" / "shared"
    shared.mkdir(parents=True)
    (shared / "by-0").write_text("")   # left owned by 0 in a rootfs shifted to 100000
    report = "stat -c '%u:%g %n' /opt/shared/by-0 /srv/shared/by-0; echo end"

    under_lxc, under_lxcsm = (_lines(c, report, lxc) for lxc in (True, False))

    # Unmapped where it lies, root's through the idmapped bind.
    assert under_lxcsm == under_lxc == ["65534:65534 /opt/shared/by-0", "0:0 /srv/shared/by-0", "end"]


def test_an_idmapped_bind_the_child_cannot_attach_fails_the_start_naming_it_and_leaves_nothing(with_idmapped_binds):
    source = with_idmapped_binds.base / "a-directory"
    source.mkdir()
    c, _data, _ro = with_idmapped_binds(entries=False, extra=(
        f"lxc.mount.entry = {source} srv/file none bind,create=file,idmap=container 0 0",))   # onto a file

    result = c.run("start", "-F", "--", "/bin/true", env=WITHOUT_MAP_HELPERS)

    line = 1 + next(i for i, setting in enumerate(c.config.read_text().splitlines())
                    if setting.startswith(f"lxc.mount.entry = {source} "))
    assert result.returncode != 0
    assert (f'error="{c.config}:{line}: lxc.mount.entry: attaching the idmapped {source} on srv/file: '
            f'Invalid argument (EINVAL)') in result.stderr.splitlines()[0], result.stderr
    assert c.monitor_exited()   # and the fixture's leak check: no cgroup, mount or process left
