"""lxc.autodev = 0 with ttys: the rootfs's own /dev (a plain directory of a busybox rootfs)
gets what LXC 5.0.2's lxc_setup() gives it without autodev - a devpts of the container's on
/dev/pts, its ptmx on /dev/ptmx, a pty bound on /dev/console and on each /dev/ttyN (each
target made in the rootfs when missing), the fd/stdin/stdout/stderr links - compared with
lxc-start on the same rootfs; then a shell on /dev/tty1 answers through lxc-console's call."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.test_ttys import SHELL_ON_TTY1, Terminal, _running, _tty

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

CONFIG = ["lxc.autodev = 0", "lxc.tty.max = 2", "lxc.pty.max = 10", "lxc.mount.auto = proc:mixed"]
# What init sees: each mount on /dev (mount point, root in its filesystem, type, options),
# the names in /dev, and the device numbers of the ttys.
SCRIPT = ("awk '$5 ~ \"^/dev\" {for (i = 7; $i != \"-\"; i++); print $5, $4, $(i+1), $(i+3)}' /proc/self/mountinfo"
          " > /out/mounts; ls /dev > /out/names; stat -c '%n %F %t' /dev/console /dev/tty1 /dev/tty2 > /out/ttys")


def _fresh_dev(c) -> None:
    """The rootfs's /dev as the busybox rootfs has it: a directory holding an empty pts."""
    shutil.rmtree(c.rootfs / "dev")
    (c.rootfs / "dev" / "pts").mkdir(parents=True)
    (c.rootfs / "out").mkdir(exist_ok=True)
    for old in (c.rootfs / "out").iterdir():
        old.unlink()


def _boot(c, lxc: bool, script: str = SCRIPT) -> tuple[dict[str, str], list[str]]:
    """Init's view of /dev under lxc-start or lxcsm, and what the start left in the rootfs's /dev."""
    _fresh_dev(c)
    command = ["/bin/sh", "-c", script]
    if lxc:
        result = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", *command],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    else:
        result = c.start_fg(*command, options=("-l", "WARN"))
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    seen = {path.name: path.read_text() for path in (c.rootfs / "out").iterdir()}
    return seen, sorted(os.listdir(c.rootfs / "dev"))


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_autodev_off_with_ttys_as_under_lxc_start(make_container):
    c = make_container("busybox", CONFIG)

    under_lxc, left_by_lxc = _boot(c, lxc=True)
    under_lxcsm, left_by_lxcsm = _boot(c, lxc=False)

    assert under_lxcsm == under_lxc
    assert left_by_lxcsm == left_by_lxc
    mounts = sorted(line.split()[:3] for line in under_lxcsm["mounts"].splitlines())
    assert mounts == [["/dev/console", "/0", "devpts"], ["/dev/ptmx", "/ptmx", "devpts"],
                      ["/dev/pts", "/", "devpts"], ["/dev/tty1", "/1", "devpts"], ["/dev/tty2", "/2", "devpts"]]
    assert "max=12" in under_lxcsm["mounts"]   # pty.max + tty.max
    assert left_by_lxcsm == ["console", "fd", "ptmx", "pts", "stderr", "stdin", "stdout", "tty1", "tty2"]


# No lxc.pty.max (no devpts of the container's) and no console: the ttys' ptys are the host's,
# whose numbers depend on what else runs, so only where they are mounted and their kind count.
WITHOUT_DEVPTS = ["lxc.autodev = 0", "lxc.tty.max = 2", "lxc.console.path = none", "lxc.mount.auto = proc:mixed"]
WITHOUT_DEVPTS_SCRIPT = ("awk '$5 ~ \"^/dev\" {for (i = 7; $i != \"-\"; i++); print $5, $(i+1)}' /proc/self/mountinfo"
                         " > /out/mounts; ls /dev > /out/names; stat -c '%n %F %t' /dev/tty1 /dev/tty2 > /out/ttys")


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_autodev_off_without_devpts_or_console_still_gets_its_ttys_as_under_lxc_start(make_container):
    """LXC 5.0.2 makes lxc.tty.max's ttys even with no devpts and no console to share one with:
    ptys of the host's devpts, bound on the rootfs's own /dev/ttyN (made there when missing)."""
    c = make_container("busybox", WITHOUT_DEVPTS)

    under_lxc, left_by_lxc = _boot(c, lxc=True, script=WITHOUT_DEVPTS_SCRIPT)
    under_lxcsm, left_by_lxcsm = _boot(c, lxc=False, script=WITHOUT_DEVPTS_SCRIPT)

    assert under_lxcsm == under_lxc
    assert left_by_lxcsm == left_by_lxc
    assert sorted(under_lxcsm["mounts"].splitlines()) == ["/dev/tty1 devpts", "/dev/tty2 devpts"]
    assert under_lxcsm["ttys"].splitlines() == ["/dev/tty1 character special file 88",
                                                "/dev/tty2 character special file 88"]   # 136: a pty


def test_autodev_off_tty1_reaches_a_shell(make_container):
    c = make_container("busybox", CONFIG)
    _fresh_dev(c)
    assert c.run("start", "-d", "--", "/bin/sh", "-c", SHELL_ON_TTY1).returncode == 0
    try:
        _running(c)
        reply = _tty(c, 1)
        assert reply.ret == 0 and len(reply.fds) == 1
        tty1 = Terminal(reply.fds[0])
        tty1.prompt()
        assert b"marker42" in tty1.converse(b"echo marker$((6*7))\n", b"marker42")
        os.close(reply.fds[0])
        reply.conn.close()
    finally:
        assert c.run("stop", "-k").returncode == 0


# init's view of a read-only /dev: the names and kinds of its files, the mounts on it.
READ_ONLY_SCRIPT = ("ls -l /dev | awk 'NR > 1 {print substr($1, 1, 1), $NF}' > /out/names; "
                    "awk '$5 ~ \"^/dev\" {for (i = 7; $i != \"-\"; i++); print $5, $(i+1)}' /proc/self/mountinfo"
                    " > /out/mounts")


def _read_only_dev(c, targets: bool) -> None:
    _fresh_dev(c)
    for name in ("console", "tty1", "tty2") if targets else ():
        (c.rootfs / "dev" / name).touch()


def _boot_read_only(c, lxc: bool):
    command = ["/bin/sh", "-c", READ_ONLY_SCRIPT]
    if lxc:
        return subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", *command],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return c.start_fg(*command, options=("-l", "ERROR"))


@pytest.mark.skipif(not shutil.which("lxc-start"), reason="LXC's tools are not installed")
def test_autodev_off_on_a_read_only_dev_as_under_lxc_start(make_container):
    c = make_container("busybox", ["lxc.autodev = 0", "lxc.tty.max = 2", "lxc.mount.auto = proc:mixed"])
    c.config.write_text(c.config.read_text() + f"lxc.mount.entry = {c.rootfs}/dev dev none bind,ro 0 0\n")

    seen = {}
    for lxc in (True, False):
        _read_only_dev(c, targets=True)   # LXC binds onto what is there; it cannot make anything
        result = _boot_read_only(c, lxc)
        assert result.returncode == 0, result.stderr
        assert c.monitor_exited()
        seen[lxc] = {path.name: path.read_text() for path in (c.rootfs / "out").iterdir()}
    assert seen[False] == seen[True]
    assert seen[False]["names"].split("\n") == ["c console", "d pts", "c tty1", "c tty2", ""]
    # The read-only bind of the rootfs's /dev, and the host's ptys on it (no lxc.pty.max: no devpts of
    # the container's, as LXC unmounts it), neither /dev/pts nor /dev/ptmx touched.
    dev, *ptys = seen[False]["mounts"].splitlines()
    assert dev.startswith("/dev ") and ptys == ["/dev/console devpts", "/dev/tty1 devpts", "/dev/tty2 devpts"]

    for lxc in (True, False):
        _read_only_dev(c, targets=False)   # nothing to bind the console onto: both fail
        result = _boot_read_only(c, lxc)
        assert result.returncode != 0
        assert c.monitor_exited()
