"""veth networking: real pairs, a real bridge, real packets - all inside a test namespace.

Each test's monitors run in a network namespace of the test's own (the
`test_netns` fixture), holding the bridge their veths join: the host's own
namespace sees no device, address or packet of these tests.  Addresses are
from the documentation ranges 198.51.100.0/24 and 2001:db8::/32.  After each
test the fixtures check that no veth, cgroup, socket, mount or monitor is left.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from tests.integration.harness import monitor_pids

pytestmark = pytest.mark.root


def veth_config(ns, address: int, *extra: str) -> list[str]:
    return ["lxc.net.0.type = veth", f"lxc.net.0.link = {ns.bridge}", "lxc.net.0.flags = up",
            f"lxc.net.0.ipv4.address = 198.51.100.{address}/24",
            f"lxc.net.0.ipv6.address = 2001:db8::{address}/64", *extra]


def init_pid(c) -> int:
    (monitor,) = monitor_pids(c.lxcpath, c.name)
    children = subprocess.run(["pgrep", "-P", str(monitor)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    return int(children[0])


def inside(pid: int, *argv: str) -> str:
    """Run a host tool in the network namespace of `pid` (the container's)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True,
                          check=True).stdout


# A script for the second container: wait for IPv6 duplicate address detection, then ping
# the first over both families.
PING_BOTH = ("ip addr show eth0; ip link show lo; "
             "i=0; while ip -6 addr show dev eth0 | grep -q tentative && [ $i -lt 50 ]; do "
             "sleep 0.1; i=$((i+1)); done; "
             "ping -c 1 -W 3 198.51.100.2 && ping -6 -c 1 -W 3 2001:db8::2 && echo PINGS-OK")


def test_two_containers_talk_over_a_bridge(test_netns, make_container):
    first = make_container("busybox", veth_config(test_netns, 2, "lxc.net.0.hwaddr = 00:16:3e:xx:xx:xx"),
                           netns=test_netns.name)
    second = make_container("busybox", veth_config(test_netns, 3), netns=test_netns.name)
    assert first.run("start", "-d").returncode == 0
    try:
        host_ends = [link for link in test_netns.links() if link.startswith("veth")]
        assert len(host_ends) == 1 and re.fullmatch(r"veth[A-Za-z0-9]{6}", host_ends[0]), host_ends
        details = test_netns.link(host_ends[0])
        assert f"master {test_netns.bridge}" in details and "state UP" in details
        assert re.search(r"link/ether fe:", details), details     # the bridge keeps its own MAC

        # first's end, seen from inside: renamed, its MAC from the template, addressed, up
        eth0 = inside(init_pid(first), "ip", "-o", "link", "show", "eth0")
        assert re.search(r"link/ether 00:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2} ", eth0), eth0
        assert "198.51.100.2/24" in inside(init_pid(first), "ip", "-o", "-4", "addr", "show", "eth0")

        result = second.start_fg("/bin/sh", "-c", PING_BOTH)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "PINGS-OK" in result.stdout
        out = result.stdout
        assert re.search(r"^\d+: eth0@\S+: <[A-Z,_]*\bUP\b", out, re.M), out
        assert "inet 198.51.100.3/24 brd 198.51.100.255" in out and "inet6 2001:db8::3/64" in out
        assert re.search(r"^\d+: lo: <[A-Z,_]*\bUP\b", out, re.M), out   # lo comes up with the network
        # second's veth went with it; first's is still there
        assert [link for link in test_netns.links() if link.startswith("veth")] == host_ends
    finally:
        assert first.run("stop", "-k").returncode == 0
    assert first.monitor_exited()
    assert [link for link in test_netns.links() if link.startswith("veth")] == []


def test_pair_name_mtu_name_and_gateway(test_netns, make_container):
    pair = f"vp{time.monotonic_ns() % 10**9}"[:15]
    c = make_container("busybox", veth_config(
        test_netns, 4, f"lxc.net.0.veth.pair = {pair}", "lxc.net.0.mtu = 1400", "lxc.net.0.name = lan0",
        "lxc.net.0.ipv4.gateway = 198.51.100.1", "lxc.net.0.ipv6.gateway = 2001:db8::1"),
        netns=test_netns.name)
    assert c.run("start", "-d").returncode == 0
    try:
        host = test_netns.link(pair)
        assert "mtu 1400" in host and f"master {test_netns.bridge}" in host
        pid = init_pid(c)
        assert "mtu 1400" in inside(pid, "ip", "-o", "link", "show", "lan0")
        assert "default via 198.51.100.1 dev lan0" in inside(pid, "ip", "-4", "route")
        assert "default via 2001:db8::1 dev lan0" in inside(pid, "ip", "-6", "route")
    finally:
        assert c.run("stop", "-k").returncode == 0
    assert c.monitor_exited()
    assert test_netns.link(pair) == ""


def test_a_gateway_outside_the_subnet_gets_a_route_of_its_own(test_netns, make_container):
    c = make_container("busybox", veth_config(test_netns, 5, "lxc.net.0.ipv4.gateway = 192.0.2.1"),
                       netns=test_netns.name)
    result = c.start_fg("/bin/sh", "-c", "ip -4 route")
    assert result.returncode == 0, result.stderr
    assert "192.0.2.1 dev eth0" in result.stdout and "default via 192.0.2.1 dev eth0" in result.stdout


@pytest.mark.parametrize("failing", ["child:setup_network", "child:setup_mounts", "monitor:sync_cgroup_limits"])
def test_a_failed_start_removes_its_veth(test_netns, make_container, failing):
    c = make_container("busybox", veth_config(test_netns, 6), netns=test_netns.name)
    result = c.run("start", "-F", "--", "/bin/true",
                   env={"LXCSM_FAILPOINTS": failing, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 1
    side, state = failing.split(":")
    assert f"failed_state={state} failed_side={side}" in result.stderr, result.stderr
    assert [link for link in test_netns.links() if link.startswith("veth")] == []


def test_a_killed_monitor_leaves_nothing_cleanup_cannot_remove(test_netns, make_container):
    """SIGKILL the monitor: init dies with it (pdeath), its namespace with init, and the veth
    pair with its namespace; `lxcsm cleanup` removes the rest and the journal."""
    c = make_container("busybox", veth_config(test_netns, 7), netns=test_netns.name)
    assert c.run("start", "-d").returncode == 0
    (monitor,) = monitor_pids(c.lxcpath, c.name)
    subprocess.run(["kill", "-KILL", str(monitor)], check=True)
    assert c.monitor_exited()
    result = c.run("cleanup")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5
    while [link for link in test_netns.links() if link.startswith("veth")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [link for link in test_netns.links() if link.startswith("veth")] == []


def test_a_reboot_makes_the_veth_again(test_netns, make_container, tmp_path):
    """reboot -f inside: the first boot's pair is removed, the second boot makes its own (the
    same host name, from veth.pair), then poweroff -f ends the container and the pair."""
    pair = f"vr{time.monotonic_ns() % 10**9}"[:15]
    c = make_container("busybox", veth_config(test_netns, 8, f"lxc.net.0.veth.pair = {pair}"),
                       netns=test_netns.name)
    log = tmp_path / "trace.log"
    script = ("ip -o -4 addr show eth0 | grep -q 198.51.100.8/24 || exit 3; "
              "if [ -e /booted ]; then poweroff -f; else touch /booted; reboot -f; fi; sleep 5")
    result = c.start_fg("/bin/sh", "-c", script, options=("-l", "TRACE", "-o", str(log)))
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert text.count("veth created side=monitor") == 2 and text.count(f"host={pair}") == 2
    assert text.count(f"kind=netdev target={pair}") == 2          # undone after each boot
    assert test_netns.link(pair) == ""


@pytest.mark.skipif(not shutil.which("lxc-info"), reason="LXC's tools are not installed (tools/setup installs them)")
def test_lxc_info_shows_the_link_and_the_address(test_netns, make_container):
    c = make_container("busybox", veth_config(test_netns, 10), netns=test_netns.name)
    assert c.run("start", "-d").returncode == 0
    try:
        info = subprocess.run(["nsenter", f"--net=/run/netns/{test_netns.name}", "lxc-info", "-n", c.name,
                               "-P", c.lxcpath], capture_output=True, text=True, timeout=30)
        assert info.returncode == 0, info.stderr
        (host_end,) = [link for link in test_netns.links() if link.startswith("veth")]
        assert re.search(rf"^Link:\s+{host_end}$", info.stdout, re.M), info.stdout
        assert re.search(r"^IP:\s+198\.51\.100\.10$", info.stdout, re.M), info.stdout
    finally:
        assert c.run("stop", "-k").returncode == 0


def test_two_macvlans_in_bridge_mode_talk_over_their_parent(test_netns, make_container):
    """macvlans are born in the container's namespace on a parent of the test's own (one end
    of a veth pair: this kernel has no dummy devices); nothing of them stays behind."""
    subprocess.run(["ip", "-n", test_netns.name, "link", "add", "mvp0", "type", "veth", "peer", "name", "mvp1"],
                   check=True)
    for end in ("mvp0", "mvp1"):   # both ends up: a parent without carrier carries nothing
        subprocess.run(["ip", "-n", test_netns.name, "link", "set", end, "up"], check=True)
    try:
        lines = ["lxc.net.0.type = macvlan", "lxc.net.0.link = mvp0", "lxc.net.0.macvlan.mode = bridge",
                 "lxc.net.0.flags = up"]
        first = make_container("busybox", [*lines, "lxc.net.0.ipv4.address = 198.51.100.21/24"],
                               netns=test_netns.name)
        second = make_container("busybox", [*lines, "lxc.net.0.ipv4.address = 198.51.100.22/24"],
                                netns=test_netns.name)
        assert first.run("start", "-d").returncode == 0
        try:
            details = inside(init_pid(first), "ip", "-d", "-o", "link", "show", "eth0")
            assert "macvlan mode bridge" in details, details
            result = second.start_fg("/bin/sh", "-c", "ping -c 1 -W 3 198.51.100.21 && echo PING-OK")
            assert result.returncode == 0 and "PING-OK" in result.stdout, result.stdout + result.stderr
        finally:
            assert first.run("stop", "-k").returncode == 0
        assert first.monitor_exited()
    finally:
        subprocess.run(["ip", "-n", test_netns.name, "link", "del", "mvp0"], check=True)
