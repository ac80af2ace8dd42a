"""A real distribution: Debian 12 with systemd as init, in a container configured as a user of
LXC configures one (LXC's debian.common.conf included, fixtures/debian.py), started with
`lxcsm start -F` on a terminal.

The boot output reaches that terminal; systemd gets to `running` (a degraded boot fails the
test, naming the failed units and their logs); each boot has its own boot id, which is not the
host's; / is a shared mount, as under lxc-start; systemd never complains about the cgroup
mounts ("Failed to create symlink"); `lxcsm stop -r` reboots it through systemd and
`lxcsm stop` halts it through systemd's own shutdown - init ends by its halt, so -F exits 0,
where a SIGKILL would make it 137.  How long the stop takes is tools/bench's row, not an
assert here.  The rootfs is built once by debootstrap and cached; without Debian's mirror
the test is skipped."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time

import pytest

from fixtures import debian
from tests.integration.harness import LXCSM, Container, host_mounts, unique_name, wait_for

pytestmark = pytest.mark.root

BOOT_TIMEOUT = 300          # systemd's whole boot, on a loaded 2-core machine
STOP_TIMEOUT = 120


@pytest.fixture(scope="module")
def debian_rootfs():
    try:
        return debian.ensure_rootfs()
    except debian.MirrorUnreachable as unreachable:
        pytest.skip(f"no Debian rootfs can be built here: {unreachable}")


class Console:
    """The terminal `lxcsm start -F` runs on, read all the time (an unread terminal would
    block systemd's writes to its console)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:   # EIO: every process holding the terminal's other end has ended
                return
            if not data:
                return
            with self.lock:
                self.seen += data

    def text(self) -> str:
        with self.lock:
            return self.seen.decode(errors="replace").replace("\r", "")

    def wait_for(self, expected: str, timeout: float) -> None:
        assert wait_for(lambda: expected in self.text(), timeout), \
            f"{expected!r} not on the terminal within {timeout} s; it shows:\n{self.text()[-3000:]}"


@pytest.fixture
def debian_container(debian_rootfs, tmp_path):
    """A container from the cached rootfs, its config a user's; afterwards nothing of it may
    be left on the host (cgroups, monitor, command socket, mounts), and its copy is removed.
    Only mounts of this container's are looked for: other tests may mount and unmount on this
    host meanwhile."""
    name = unique_name("deb")
    lxcpath = tmp_path / "lxc"
    mounts_before = host_mounts()
    config = debian.make_container(lxcpath, name)
    container = Container(name, str(lxcpath), lxcpath / name / "rootfs", config)
    try:
        yield container
        container.monitor_exited(timeout=30)
        leaks = container.leaks()
        new_mounts = set(host_mounts()) - set(mounts_before)   # before the removal unmounts them
        leaks += [f"mount {m}" for m in new_mounts if m.startswith(f"{lxcpath}/") or name in m]
    finally:
        container.force_cleanup()
        debian.remove_container(lxcpath, name)
    assert leaks == [], "the container left things behind"


def start_foreground(c: Container) -> tuple[int, Console]:
    """`lxcsm start -F` on a terminal of its own, as a person would run it."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(LXCSM[0], [*LXCSM, "start", "-F", "-n", c.name, "-P", c.lxcpath])
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))   # unit names uncut
    return pid, Console(fd)


def end_foreground(c: Container, pid: int, console: Console) -> None:
    """On any way out: the container stopped, `lxcsm start -F` ended and reaped, its terminal closed."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            c.run("stop", "-k", timeout=STOP_TIMEOUT)
            if not wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] != 0, 30):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    except ChildProcessError:
        pass   # the test reaped it
    os.close(console.fd)


def inside(c: Container, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", *command],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def booted(c: Container) -> None:
    """Wait for systemd's boot to end; it must have ended `running`, else say why not.
    Until systemd listens on its private socket, systemctl cannot ask: it is asked again."""
    answers: list[subprocess.CompletedProcess] = []

    def answered() -> bool:
        answers.append(inside(c, "/usr/bin/systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT))
        return bool(answers[-1].stdout.strip())

    assert wait_for(answered, BOOT_TIMEOUT), f"systemctl is-system-running never answered: {answers[-1].stderr}"
    state = answers[-1].stdout.strip()
    if state == "running":
        return
    failed = inside(c, "/usr/bin/systemctl", "--failed", "--no-pager", "--full").stdout
    logs = inside(c, "/usr/bin/systemctl", "status", "--state=failed", "--no-pager", "--full", "-n", "30").stdout
    jobs = inside(c, "/usr/bin/systemctl", "list-jobs", "--no-pager").stdout
    pytest.fail(f"systemd's boot ended {state!r}, not 'running':\n{failed}\n{logs}\n{jobs}")


def boot_id(c: Container) -> str:
    read = inside(c, "/usr/bin/cat", "/proc/sys/kernel/random/boot_id")
    assert read.returncode == 0, read.stderr
    return read.stdout.strip()


def root_mount(c: Container) -> list[str]:
    mountinfo = inside(c, "/usr/bin/cat", "/proc/self/mountinfo").stdout
    return next(line.split() for line in mountinfo.splitlines() if line.split()[4] == "/")


def test_debian_boots_systemd_to_running_reboots_and_halts_through_systemd(debian_container):
    c = debian_container
    with open("/proc/sys/kernel/random/boot_id") as host:
        host_boot = host.read().strip()
    pid, console = start_foreground(c)
    try:
        console.wait_for("Welcome to Debian GNU/Linux 12 (bookworm)!", BOOT_TIMEOUT)
        booted(c)
        console.wait_for("Reached target multi-user.target", 30)
        first_boot = boot_id(c)
        assert first_boot != host_boot
        root = root_mount(c)
        assert any(field.startswith("shared:") for field in root[6:root.index("-")]), root

        rebooted = c.run("stop", "-r", "-t", str(STOP_TIMEOUT), timeout=STOP_TIMEOUT + 30)
        assert rebooted.returncode == 0, rebooted.stderr
        assert wait_for(lambda: console.text().count("Welcome to Debian") == 2, BOOT_TIMEOUT), console.text()[-3000:]
        booted(c)
        second_boot = boot_id(c)
        assert second_boot not in (first_boot, host_boot)

        began = time.monotonic()
        stopped = c.run("stop", timeout=STOP_TIMEOUT + 30)
        took = time.monotonic() - began
        assert stopped.returncode == 0, stopped.stderr
        _, status = os.waitpid(pid, 0)
        print(f"lxcsm stop of systemd took {took:.2f} s")
        # init ended by systemd's halt (lxcsm start -F: 0), not by a kill (128 + 9)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, console.text()[-3000:])
        console.reader.join(10)
        assert "Reached target shutdown.target" in console.text()
        assert "Halting system." in console.text(), console.text()[-3000:]
        assert "Failed to create symlink" not in console.text(), console.text()
        assert "[FAILED]" not in console.text(), console.text()
    finally:
        end_foreground(c, pid, console)
