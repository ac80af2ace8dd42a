"""lxc.prlimit.*, lxc.proc.* and lxc.sysctl.*: what init runs with, read from inside."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.root


def test_resource_limits_proc_files_and_sysctls_reach_init(make_container):
    with open("/proc/sys/net/ipv4/ip_forward") as host:
        host_forwarding = host.read()
    c = make_container(extra=["lxc.mount.auto = proc:mixed", "lxc.prlimit.nofile = 1000:2000",
                              "lxc.prlimit.core = unlimited", "lxc.proc.oom_score_adj = 10",
                              "lxc.sysctl.net.ipv4.ip_forward = 1"])
    script = ("ulimit -n; ulimit -Hn; ulimit -c; cat /proc/self/oom_score_adj; "
              "cat /proc/sys/net/ipv4/ip_forward")
    result = c.start_fg("/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "2000", "unlimited", "10", "1"]
    with open("/proc/sys/net/ipv4/ip_forward") as host:
        assert host.read() == host_forwarding          # the container's own network namespace


@pytest.mark.parametrize("line, state, side, error", [
    # above fs.nr_open: refused even to root
    ("lxc.prlimit.nofile = 2000000000", "sync_configure", "monitor", r"prlimit 2000000000: Operation not permitted"),
    ("lxc.sysctl.kernel.shmmax = 1000", "setup_sysctl", "child",      # proc:mixed: /proc/sys is read-only
     r"writing '1000': Read-only file system"),
])
def test_a_setting_the_kernel_refuses_fails_the_start_naming_the_line(make_container, line, state, side, error):
    c = make_container(extra=["lxc.mount.auto = proc:mixed", line])
    number = c.config.read_text().splitlines().index(line) + 1
    result = c.start_fg("/bin/true")
    assert result.returncode == 1
    key = line.split(" = ")[0]
    assert re.search(rf"failed_state={state} failed_side={side} error=\"{re.escape(str(c.config))}:{number}: "
                     rf"{re.escape(key)}: {error}", result.stderr), result.stderr


def test_pty_max_limits_the_containers_own_devpts(make_container):
    c = make_container(extra=["lxc.mount.auto = proc:mixed", "lxc.pty.max = 2"])
    result = c.start_fg("/bin/sh", "-c", "grep ' /dev/pts ' /proc/self/mounts")
    assert result.returncode == 0, result.stderr
    options = result.stdout.split()[3].split(",")
    assert "max=2" in options and "ptmxmode=666" in options, result.stdout
