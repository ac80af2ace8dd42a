"""lxc-attach puts what it runs into the container's cgroups, so the container's limits bind it.

lxc-attach asks the monitor for the container's cgroup directories (GET_CGROUP_CTX, an fd
per hierarchy) and writes the new process's pid into each - into a ``.lxc`` leaf below
the cgroup2 one.  On a cgroup2-only host (tools/vm's guest) it asks for the one directory
(GET_CGROUP2_FD) and the limits are lxc.cgroup2.* keys, which LXC ignores on a host with v1
controllers (and lxc.cgroup.* there).  A monitor that does not answer leaves the process in
lxc-attach's own cgroups, outside every limit.  Compared with LXC's own monitor (lxc-start) on the same
container; the limits are checked with the host's python3, which the hostbind rootfs sees
through its /usr.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time

import pytest

from lxcsm.engine.linux import cgroups

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("lxc-attach") is None, reason="Debian's lxc is not installed"),
              pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="needs the host's python3")]

# An init that never forks: these tests drive the container to its pids.max and memory.max,
# where a fork of the init's own (a shell's `sleep 1` loop) fails and busybox sh exits on
# "can't fork", ending the container under the test.  /proc for /proc/self/cgroup.
INIT = ("/bin/sleep", "1000000")
PROC = "lxc.mount.auto = proc:rw"

# The limit keys of this host's layout (the same limits, as cgroup2 and v1 name them).
UNIFIED_ONLY = cgroups.unified_only(cgroups.hierarchies())
KEYS = "lxc.cgroup2" if UNIFIED_ONLY else "lxc.cgroup"
MEMORY_LIMIT = f"{KEYS}.memory.max" if UNIFIED_ONLY else f"{KEYS}.memory.limit_in_bytes"

# Forks up to 20 children that live for a few seconds, and says how many it got.
FORK_20 = """
import os, time
children = []
for _ in range(20):
    try:
        pid = os.fork()
    except OSError as err:
        print("fork failed:", err.strerror)
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("forked", len(children))
"""


def _attach(c, *command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", *command], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, **kwargs)


def _start(c) -> None:
    started = c.run("start", "--", *INIT)
    assert started.returncode == 0, started.stderr


def _cgroup_lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers: path}; cgroup2's controllers are ""."""
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in text.splitlines()}


def test_attached_process_is_in_the_payload_cgroup_of_every_hierarchy(make_container):
    c = make_container(extra=[PROC])
    _start(c)
    init = subprocess.run(["lxc-info", "-n", c.name, "-P", c.lxcpath, "-p", "-H"], capture_output=True,
                          text=True, check=True).stdout.strip()
    with open(f"/proc/{init}/cgroup") as cgroup:
        container = _cgroup_lines(cgroup.read())

    # Seen from the host: lxc.payload.NAME everywhere, its .lxc leaf on cgroup2.
    sleeper = subprocess.Popen(["lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", "/bin/sleep", "300"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        attached = _child_of(sleeper.pid, "sleep")
        with open(f"/proc/{attached}/cgroup") as cgroup:
            seen = _cgroup_lines(cgroup.read())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert container and all(path.endswith(f"/lxc.payload.{c.name}") for path in container.values()), container
    assert seen == {controllers: path + ("/.lxc" if controllers == "" else "")
                    for controllers, path in container.items()}

    # Seen from inside (its cgroup namespace is the container's): exactly what lxc-start's gives.
    inside = _attach(c, "/bin/cat", "/proc/self/cgroup")
    assert inside.returncode == 0, inside.stderr
    assert _cgroup_lines(inside.stdout) == {controllers: "/.lxc" if controllers == "" else "/"
                                           for controllers in container}
    assert c.run("stop", "-k").returncode == 0


def _child_of(parent: int, comm: str, timeout: float = 20) -> int:
    """The pid of `parent`'s child named `comm`, once there is one (lxc-attach's process is)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in glob.glob("/proc/[0-9]*/status"):
            try:
                with open(status) as f:
                    fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
            except OSError:
                continue
            if fields.get("PPid", "").strip() == str(parent) and fields.get("Name", "").strip() == comm:
                return int(status.split("/")[2])
        time.sleep(0.05)
    raise AssertionError(f"no {comm} below pid {parent}")




def test_attach_sees_the_same_cgroups_as_under_lxc_start(make_container, lxc_pivot_removed):
    c = make_container(extra=[PROC])
    lxc = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "--", *INIT], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert lxc.returncode == 0, lxc.stderr
    try:
        under_lxc = _attach(c, "/bin/cat", "/proc/self/cgroup")
    finally:
        subprocess.run(["lxc-stop", "-n", c.name, "-P", c.lxcpath, "-k"], capture_output=True, timeout=60)
    _start(c)
    under_lxcsm = _attach(c, "/bin/cat", "/proc/self/cgroup")
    assert c.run("stop", "-k").returncode == 0
    assert under_lxc.returncode == under_lxcsm.returncode == 0, under_lxc.stderr + under_lxcsm.stderr
    assert under_lxcsm.stdout == under_lxc.stdout


def test_attached_process_is_bound_by_pids_max(make_container):
    c = make_container(extra=[f"{KEYS}.pids.max = 5"])
    _start(c)
    forked = _attach(c, "/usr/bin/python3", "-c", FORK_20)
    assert forked.returncode == 0, forked.stderr
    assert "fork failed: Resource temporarily unavailable" in forked.stdout, forked.stdout
    assert c.run("stop", "-k").returncode == 0


def test_attached_process_is_bound_by_the_device_rules(make_container):
    c = make_container(extra=[f"{KEYS}.devices.deny = a", f"{KEYS}.devices.allow = c 1:3 rwm"])
    _start(c)
    null = _attach(c, "/usr/bin/head", "-c1", "/dev/null")
    zero = _attach(c, "/usr/bin/head", "-c1", "/dev/zero")
    assert null.returncode == 0, null.stderr
    assert zero.returncode != 0 and "Operation not permitted" in zero.stderr, zero.stdout + zero.stderr
    assert c.run("stop", "-k").returncode == 0


def test_attached_process_is_bound_by_the_memory_limit(make_container):
    c = make_container(extra=[f"{MEMORY_LIMIT} = 32M"])
    _start(c)
    allocate = "import sys; block = b'x' * (int(sys.argv[1]) << 20); print('allocated')"   # every page written
    small = _attach(c, "/usr/bin/python3", "-c", allocate, "4")
    large = _attach(c, "/usr/bin/python3", "-c", allocate, "200")
    assert (small.returncode, small.stdout) == (0, "allocated\n"), small.stderr
    assert large.returncode != 0 and "allocated" not in large.stdout     # killed by the OOM killer
    assert c.run("stop", "-k").returncode == 0
