"""The integration tests' harness: real containers with unique names, and what they leave.

Every integration test gets its own LXCPATH under pytest's tmp_path and a
container name no other test uses (`unique_name`).  After the test, the
leak check (tests/conftest.py's make_container) looks for what a start may
leave on the host - cgroups named after the container, its command socket,
its monitor process, host mounts - and fails the test if any is there; then
it removes them anyway (ending only processes this test's container started,
by pid), so one broken test does not break the next.  Network tests run
their monitors in an `IsolatedNetns` of their own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

LXCSM = [sys.executable, "-m", "lxcsm.engine.cli"]
_counter = itertools.count()

# lxc-start as root maps a container's ids through newuidmap/newgidmap when they are on PATH
# (lxc_map_ids(); they then want root's own ranges in /etc/subuid and /etc/subgid, which this
# host does not reserve) and writes the maps itself when they are not, as lxcsm does for root.
# Tests comparing the two under lxc.idmap start both with a PATH without them (Debian installs
# them in /usr/bin, with LXC's tools).
WITHOUT_MAP_HELPERS = {**os.environ, "PATH": "/usr/sbin"}
LXC_START = shutil.which("lxc-start") or "lxc-start"   # found before PATH loses /usr/bin


def wait_for(condition, timeout: float = 30) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def cgroup_dirs(name: str) -> list[str]:
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d in (f"lxc.payload.{name}", f"lxc.monitor.{name}"):
                found.append(os.path.join(top, d))
        if top.count("/") > 6:
            dirs[:] = []
    return found


def monitor_pids(lxcpath: str, name: str) -> list[int]:
    title = f"[lxcsm monitor] {lxcpath} {name}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if cmdline.read().startswith(title):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


# What a container must never change on the host, though a bug could reach it: the host's
# hostname (a kept uts namespace), and the devices a container binds from the host's /dev or
# gets as init's stdio (LXC's fix_stdio_permissions() chmods those, never /dev/null).
HOST_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx")


def idmapped_init_report(c: Container, script: str, lxc: bool) -> list[str]:
    """Start `c` in the foreground, by lxc-start or lxcsm (both writing the id maps themselves),
    with `script` as init; its non-empty output lines, which must end with "end".  lxc-start
    -F shows init's output only on its console, which -L copies to a file."""
    if lxc:
        console = Path(c.lxcpath) / c.name / "console.log"
        result = subprocess.run([LXC_START, "-n", c.name, "-P", c.lxcpath, "-F", "-L", str(console),
                                 "--", "/bin/sh", "-c", script], env=WITHOUT_MAP_HELPERS,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        output = console.read_text()
        console.unlink()
    else:
        result = c.run("start", "-F", "-l", "WARN", "--", "/bin/sh", "-c", script, env=WITHOUT_MAP_HELPERS)
        output = result.stdout
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    assert lines[-1] == "end", output
    return lines


def host_identity() -> dict[str, object]:
    seen: dict[str, object] = {"hostname": os.uname().nodename}
    for device in HOST_DEVICES:
        st = os.stat(device)
        seen[device] = (oct(st.st_mode), st.st_uid, st.st_gid)
    return seen


def restore_host_identity(before: dict[str, object]) -> dict[str, tuple[object, object]]:
    """Put back what host_identity() saw in `before` (the hostname; each device's owner and
    mode), so that one test's damage does not fail every later one; returns what had changed,
    {what: (before, found)}."""
    found = host_identity()
    changed = {what: (before[what], found[what]) for what in before if found[what] != before[what]}
    for what, (was, _now) in changed.items():
        if what == "hostname":
            socket.sethostname(str(was))
        else:
            mode, uid, gid = was
            os.chown(what, uid, gid)
            os.chmod(what, int(mode, 8) & 0o7777)
    return changed


def host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return sorted(line.split()[4] for line in mountinfo)


def socket_bound(lxcpath: str, name: str, netns: str | None = None) -> bool:
    """Abstract unix sockets belong to a network namespace: look in the monitor's."""
    if netns is None:
        with open("/proc/net/unix") as unix:
            table = unix.read()
    else:
        table = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "cat", "/proc/net/unix"],
                               capture_output=True, text=True, check=True).stdout
    return any(line.rstrip().endswith(f"@{lxcpath}/{name}/command") for line in table.splitlines())


@dataclass
class Container:
    name: str
    lxcpath: str
    rootfs: Path
    config: Path
    netns: str | None = None     # the network namespace its monitor runs in (see `test_netns`)

    def run(self, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """`lxcsm ARGS...` with -n NAME -P LXCPATH added after the subcommand."""
        action, *rest = args
        command = [*LXCSM, action, "-n", self.name, "-P", self.lxcpath, *rest]
        if self.netns is not None:
            # nsenter, not `ip netns exec`: that one also remounts /sys, which hides the
            # host's cgroup hierarchies from the monitor.
            command = ["nsenter", f"--net=/run/netns/{self.netns}", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kwargs)

    def start_fg(self, *command: str, options: tuple[str, ...] = (), timeout: float = 60):
        return self.run("start", "-F", *options, "--", *command, timeout=timeout)

    def monitor_exited(self, timeout: float = 10) -> bool:
        """Wait for the monitor to finish: LXC's clients see STOPPED a moment before it exits."""
        deadline = time.monotonic() + timeout
        while monitor_pids(self.lxcpath, self.name):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def leaks(self) -> list[str]:
        found = [f"cgroup {d}" for d in cgroup_dirs(self.name)]
        found += [f"monitor pid {p}" for p in monitor_pids(self.lxcpath, self.name)]
        if socket_bound(self.lxcpath, self.name, self.netns):
            found.append("command socket still bound")
        return found

    def force_cleanup(self) -> None:
        for pid in monitor_pids(self.lxcpath, self.name):
            os.kill(pid, signal.SIGKILL)   # init follows by PR_SET_PDEATHSIG
        deadline = time.monotonic() + 5
        while monitor_pids(self.lxcpath, self.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in sorted(cgroup_dirs(self.name), key=len, reverse=True):
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.02)


def left_behind(made: list[Container], patience: float = 5) -> dict[str, list[str]]:
    """What starts of these containers left on the host ({name: leaks}, only those with any),
    once each monitor has had `patience` seconds to exit (one whose clients already saw
    STOPPED may take a moment)."""
    for c in made:
        c.monitor_exited(timeout=patience)
    return {c.name: found for c in made if (found := c.leaks())}


def mounts_below(base) -> list[str]:
    """Host mounts below a test's own directory (other tests mount and unmount meanwhile)."""
    return [m for m in host_mounts() if m.startswith(f"{base}/")]


def unique_name(prefix: str = "t") -> str:
    return f"lxcsm-{prefix}{next(_counter)}-{uuid.uuid4().hex[:6]}"


@dataclass
class IsolatedNetns:
    """A network namespace of the test's own, with a bridge in it and nothing else.

    Monitors started with `make_container(..., netns=ns.name)` run in it, so the
    veths they make, the bridge and every packet stay out of the host's own
    namespace, which never gets an address from a test."""
    name: str
    bridge: str

    def links(self) -> list[str]:
        out = subprocess.run(["ip", "-n", self.name, "-o", "link", "show"], capture_output=True,
                             text=True, check=True).stdout
        return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())

    def link(self, name: str) -> str:
        """`ip -d link show NAME` in the namespace ("" if there is no such device)."""
        return subprocess.run(["ip", "-n", self.name, "-d", "link", "show", name],
                              capture_output=True, text=True).stdout
