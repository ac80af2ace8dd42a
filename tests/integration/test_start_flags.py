"""lxc-start's flags on `lxcsm start`: -L, -c, -C, -q, and non-root (--share-*:
test_share_namespaces.py).

Each is what lxc-start 5.0.2 makes of it (src/lxc/tools/lxc_start.c), or, where
lxcsm cannot do that yet, one line saying so and nothing started.
"""

from __future__ import annotations

import os
import pwd
import random
import select
import shutil
import subprocess
import tempfile

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.integration.harness import LXCSM, wait_for

# lxc-start runs here too: its monitors leave an lxc.pivot cgroup behind, which the fixture removes.
pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

RUNNING = command_socket.LxcState.RUNNING




def test_console_log_gets_the_boot_output_and_wins_over_define(make_container, tmp_path):
    c = make_container("busybox")
    other = tmp_path / "from-define.log"
    started = c.run("start", "-s", f"lxc.console.logfile = {other}", "-L", "console.log", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        log = tmp_path / "console.log"   # relative to where lxcsm was started
        assert wait_for(lambda: log.exists() and "Please press Enter" in log.read_text())
        assert not other.exists()
    finally:
        assert c.run("stop", "-k").returncode == 0


def test_console_none_gives_the_container_no_console(make_container):
    c = make_container()
    script = "test -e /dev/console && echo console || echo none"
    assert c.start_fg("/bin/sh", "-c", script).stdout == "console\n"
    assert c.start_fg("/bin/sh", "-c", script, options=("-c", "none")).stdout == "none\n"


def _start_holding(c, *flags: str) -> tuple[subprocess.Popen, int]:
    """`lxcsm start FLAGS -- sleep 600` given the write end of a pipe; returns it and the read end."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen([*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, *flags, "--", "/bin/sleep", "600"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               pass_fds=(write_end,))
    os.close(write_end)
    assert wait_for(lambda: command_client.get_state(c.lxcpath, c.name) == RUNNING or process.poll() is not None)
    assert command_client.get_state(c.lxcpath, c.name) == RUNNING, process.stderr.read()
    return process, read_end


def _closed_by_all(read_end: int) -> bool:
    """Has every holder of the pipe's write end closed it (end-of-file, at once)?"""
    return bool(select.select([read_end], [], [], 0)[0]) and os.read(read_end, 1) == b""


@pytest.mark.parametrize("flags, closed", [(("-F",), False), (("-F", "-C"), True), (("-d",), True)])
def test_close_all_fds_closes_what_lxcsm_inherited(make_container, flags, closed):
    """A foreground monitor keeps an inherited fd unless -C; a daemon never does (as lxc-start)."""
    c = make_container()
    process, read_end = _start_holding(c, *flags)
    try:
        assert _closed_by_all(read_end) == closed
        init = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value
        # (the new program's dynamic loader may hold fd 3 for a moment after execve: a leak stays)
        wait_for(lambda: sorted(os.listdir(f"/proc/{init}/fd"), key=int) == ["0", "1", "2"], timeout=10)
        assert sorted(os.listdir(f"/proc/{init}/fd"), key=int) == ["0", "1", "2"]   # init never gets it
    finally:
        assert c.run("stop", "-k").returncode == 0
        process.wait(timeout=60)
        os.close(read_end)


def test_quiet_silences_lxcsm_but_not_the_container(make_container):
    c = make_container()
    shown = c.start_fg("/bin/sh", "-c", "echo out; echo err >&2", options=("-q",))
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, "out\n", "err\n")
    failed = c.run("start", "-q", "-s", "lxc.no.such.key = 1", "--", "/bin/true")
    assert (failed.returncode, failed.stderr) == (1, "")
    loud = c.run("start", "-s", "lxc.no.such.key = 1", "--", "/bin/true")
    assert loud.returncode == 1 and "lxc.no.such.key" in loud.stderr


def test_non_root_without_a_user_namespace_is_told_to_map_its_subordinate_ids():
    """An ordinary user may start only a container with its own user namespace (lxc.idmap);
    its config and rootfs are in a directory it can read (pytest's tmp_path is root's alone)."""
    shared = tempfile.mkdtemp(prefix="lxcsm-stranger-", dir="/tmp")
    try:
        os.chmod(shared, 0o755)
        os.mkdir(os.path.join(shared, "rootfs"))
        config = os.path.join(shared, "config")
        with open(config, "w") as text:
            text.write(f"lxc.rootfs.path = dir:{shared}/rootfs\nlxc.net.0.type = empty\n")
        os.chmod(config, 0o644)
        stranger = next(uid for uid in iter(lambda: random.randrange(2_000_000, 3_000_000), None)
                        if not _has_account(uid))   # a user id no account has: nothing to add or remove
        as_stranger = ["setpriv", f"--reuid={stranger}", f"--regid={stranger}", "--clear-groups"]
        result = subprocess.run([*as_stranger, *LXCSM, "start", "-n", "c1", "-f", config, "-P", shared],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/")
    finally:
        shutil.rmtree(shared)
    assert result.returncode == 1
    assert result.stderr == (f"lxcsm: {config}: lxc.idmap: a container started by a user other than root needs"
                             " its own user namespace: map its ids to yours with lxc.idmap = u 0 FIRST COUNT and"
                             " g 0 FIRST COUNT, FIRST and COUNT from your lines in /etc/subuid and /etc/subgid\n")


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
