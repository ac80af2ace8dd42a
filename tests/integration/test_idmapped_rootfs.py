"""An unprivileged container on an unshifted rootfs (issue 12): lxc.idmap u/g 0 100000 65536,
LXC's userns.conf, and ``lxc.rootfs.options = idmap=container`` - the rootfs idmapped to the
container's map instead of chowned to it.  Under lxc-start 5.0.2 and under lxcsm, init (the
container's root, the host's uid 100000) sees the rootfs's files as its own, and a file it
creates is owned by 0 on disk; with idmap=PATH the rootfs is seen through another
namespace's map; a reboot idmaps it again for the new namespace.  A rootfs the kernel
cannot idmap is refused before anything starts, in one line naming the filesystem.

The containers live below a directory of the test's own in /tmp, searchable by others:
pytest's tmp_path is below a 0700 directory, which the container's root could not pass.
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
    WITHOUT_MAP_HELPERS,
    Container,
    idmapped_init_report,
    left_behind,
    mounts_below,
    unique_name,
)

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

CONFIG = ["lxc.include = /usr/share/lxc/config/userns.conf",
          "lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536",
          "lxc.mount.auto = proc:mixed", "lxc.mount.entry = shm dev/shm tmpfs defaults,create=dir 0 0"]
# init's report on its stdout: under lxcsm -F our pipe, under lxc-start -F its console, which
# -L copies to a file.
REPORT = ("id -u; id -g; stat -c '%u:%g %n' /bin/busybox /etc/passwd /; "
          "if touch /made-by-root 2>/dev/null; then stat -c '%u:%g %n' /made-by-root; "
          "else echo cannot create /made-by-root; fi; cat /proc/self/uid_map; "
          "awk '$5 == \"/\" && $6 ~ /idmapped/' /proc/self/mountinfo | wc -l; echo end")


@pytest.fixture
def unshifted():
    """unshifted(rootfs_options) -> Container on a busybox rootfs left owned by 0; afterwards
    the leak check of make_container, and the test's directory removed."""
    base = Path(tempfile.mkdtemp(prefix="lxcsm-idmapped-", dir="/tmp"))
    os.chmod(base, 0o711)
    made: list[Container] = []

    def make(rootfs_options: str = "idmap=container") -> Container:
        name = unique_name("i")
        root = base / "lxc" / name / "rootfs"
        fs = rootfs_builders.make_busybox_rootfs(root)
        config = rootfs_builders.write_config(base / "lxc", name, fs,
                                              [*CONFIG, f"lxc.rootfs.options = {rootfs_options}"])
        container = Container(name, str(base / "lxc"), root, config)
        made.append(container)
        return container

    try:
        yield make
        assert left_behind(made) == {}, "a start left things behind"
        assert mounts_below(base) == [], "mounts left below the containers"
    finally:
        for c in made:
            c.force_cleanup()
        shutil.rmtree(base)


def _report(c: Container, lxc: bool) -> tuple[list[str], tuple[int, int] | None]:
    """Start `c` in the foreground with REPORT as init: (what init reported, the owner on
    disk of the file it created, if it could)."""
    made = c.rootfs / "made-by-root"
    made.unlink(missing_ok=True)
    lines = idmapped_init_report(c, REPORT, lxc)
    owner = (made.stat().st_uid, made.stat().st_gid) if made.exists() else None
    return lines, owner


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_the_containers_root_owns_an_unshifted_rootfs_and_writes_files_owned_by_0_as_under_lxc_start(unshifted):
    c = unshifted()
    assert (c.rootfs / "bin" / "busybox").stat().st_uid == 0   # nothing shifted on disk

    under_lxc = _report(c, lxc=True)
    under_lxcsm = _report(c, lxc=False)

    assert under_lxcsm == under_lxc
    lines, made_on_disk = under_lxcsm
    assert lines[:2] == ["0", "0"]                                   # init is the container's root
    assert lines[2:5] == ["0:0 /bin/busybox", "0:0 /etc/passwd", "0:0 /"]   # and owns its rootfs
    assert lines[5] == "0:0 /made-by-root"
    assert lines[6].split() == ["0", "100000", "65536"]              # as the host's uid 100000
    assert lines[7] == "1"                                            # through an idmapped /
    assert made_on_disk == (0, 0)                                     # written as 0 on disk


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_idmap_to_another_user_namespace_shows_the_rootfs_through_its_map_as_under_lxc_start(unshifted):
    # A namespace that maps 0 to 200000, which the container does not map: through it the
    # rootfs's files are owned by no id the container knows (the overflow id, 65534).
    userns = idmapped_mounts.user_namespace([("u", 0, 200000, 65536), ("g", 0, 200000, 65536)])
    try:
        c = unshifted(f"idmap=/proc/{os.getpid()}/fd/{userns}")   # a path to it, for both to open

        under_lxc = _report(c, lxc=True)
        under_lxcsm = _report(c, lxc=False)
    finally:
        os.close(userns)

    assert under_lxcsm == under_lxc
    lines, made_on_disk = under_lxcsm
    assert lines[:2] == ["0", "0"]
    assert lines[2:5] == ["65534:65534 /bin/busybox", "65534:65534 /etc/passwd", "65534:65534 /"]
    # The container's root is no id of that map: the kernel lets it create nothing there.
    assert lines[5] == "cannot create /made-by-root" and made_on_disk is None


def test_a_rootfs_the_kernel_cannot_idmap_is_refused_in_one_line_before_anything_starts(unshifted):
    c = unshifted()
    ram = c.rootfs / "mnt" / "ram"
    ram.mkdir(parents=True)
    kernel.mount("lxcsm-test", str(ram), "ramfs")   # ramfs has no idmapped mounts
    try:
        result = c.run("start", "-F", "--", "/bin/true", env=WITHOUT_MAP_HELPERS)
    finally:
        kernel.umount2(str(ram))
    line = 1 + c.config.read_text().splitlines().index("lxc.rootfs.options = idmap=container")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"lxcsm: {c.config}:{line}: lxc.rootfs.options: idmap=container: cannot idmap {c.rootfs}: the filesystem "
        f"mounted on {ram} (ramfs) does not support idmapped mounts (mount_setattr: EINVAL)"]


@pytest.mark.skipif(not shutil.which("lxc-attach"), reason="LXC's tools are not installed")
def test_a_reboot_idmaps_the_rootfs_again_for_the_new_user_namespace(unshifted):
    c = unshifted()
    c.config.write_text(c.config.read_text() + "lxc.signal.reboot = SIGTERM\nlxc.signal.halt = SIGUSR1\n")
    assert c.run("start", env=WITHOUT_MAP_HELPERS).returncode == 0
    try:
        first = c.run("info", "-p", "-H").stdout.strip()
        rebooted = c.run("stop", "-r", "-t", "30")
        assert rebooted.returncode == 0, rebooted.stderr
        again = c.run("info", "-p", "-H").stdout.strip()
        assert first.isdigit() and again.isdigit() and again != first   # a new init, in a new user namespace
        inside = subprocess.run(["lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", "/bin/sh", "-c",
                                 "touch /made-after-reboot && stat -c %u:%g /made-after-reboot"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert (inside.returncode, inside.stdout) == (0, "0:0\n"), inside.stderr
        made = (c.rootfs / "made-after-reboot").stat()
        assert (made.st_uid, made.st_gid) == (0, 0)
    finally:
        stopped = c.run("stop", "-t", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert c.monitor_exited(timeout=30)
