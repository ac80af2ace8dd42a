"""`lxcsm start` on real containers: what init sees, and what the host keeps."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from lxcsm.engine.start.machine import CHILD, MONITOR
from tests.integration.harness import LXCSM, wait_for

pytestmark = pytest.mark.root


def test_foreground_init_is_pid_1_with_hostname_and_exit_status(make_container):
    c = make_container()
    result = c.start_fg("/bin/sh", "-c", "echo $$; hostname; exit 7")
    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == ["1", c.name]
    assert result.stderr == ""


def test_foreground_exit_status_is_128_plus_signal_when_init_is_killed(make_container):
    c = make_container()
    command = [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sleep", "600"]
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE) as lxcsm:
        deadline = time.monotonic() + 30
        while command_client.get_state(c.lxcpath, c.name) != command_socket.LxcState.RUNNING:
            assert time.monotonic() < deadline and lxcsm.poll() is None, lxcsm.stderr.read()
            time.sleep(0.02)
        init = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value
        os.kill(init, signal.SIGKILL)
        assert lxcsm.wait(timeout=30) == 128 + signal.SIGKILL


def test_daemon_reaches_running_then_stops(make_container):
    c = make_container()
    started = c.run("start", "-d", "--", "/bin/sleep", "600")
    assert started.returncode == 0, started.stderr
    assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING
    reply = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID)
    with open(f"/proc/{reply.value}/cmdline", "rb") as cmdline:
        assert cmdline.read().split(b"\0")[:2] == [b"/bin/sleep", b"600"]

    again = c.run("start", "--", "/bin/true")
    assert again.returncode == 0 and "already running" in again.stderr

    # sleep has no SIGPWR handler, and a pid namespace's init only receives signals it
    # handles: the halt is ignored, and after the timeout stop falls back to SIGKILL.
    stopped = c.run("stop", "-t", "1")
    assert stopped.returncode == 0, stopped.stderr
    assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.STOPPED
    assert c.leaks() == []


def test_stop_kill_and_halt_signal(make_container):
    c = make_container(extra=["lxc.signal.halt = SIGUSR1"])
    assert c.run("start", "--", "/bin/sh", "-c", "trap 'exit 3' USR1; while :; do sleep 0.1; done").returncode == 0
    assert c.run("stop", "-t", "10").returncode == 0
    assert c.leaks() == []          # at once: stop returns after the monitor has exited
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    assert c.run("stop", "-k").returncode == 0
    assert c.leaks() == []
    assert c.run("stop").returncode == 2   # not running, as lxc-stop says


def test_inside_view_proc_dev_root_and_mount_entries(make_container):
    c = make_container(extra=[
        "lxc.mount.auto = proc:mixed sys:ro",
        "lxc.mount.entry = tmpfs scratch tmpfs size=64k,mode=700,create=dir 0 0",
        "lxc.mount.entry = /usr/share usr/share none ro,bind,nosuid 0 0",
        "lxc.mount.entry = /nonexistent opt none bind,optional 0 0",
    ])
    (c.rootfs / "marker").write_text("rootfs\n")
    script = ("cat /marker; ls /dev | tr '\\n' ' '; echo; ls /proc | grep -c '^[0-9]'; "
              "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/mountinfo")
    result = c.start_fg("/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "rootfs"                      # / is the rootfs
    assert lines[1].split() == sorted(["console", "fd", "full", "null", "ptmx", "pts", "random", "stderr",
                                       "stdin", "stdout", "tty", "urandom", "zero"])
    assert int(lines[2]) <= 3                        # pids: sh, ls/grep: the container's /proc
    assert lines[3].startswith("/bin/sh -c ")
    mounts = {f.split()[4]: f for f in lines[4:]}
    scratch = mounts["/scratch"]
    assert " - tmpfs " in scratch and "size=64k" in scratch and "mode=700" in scratch
    share = mounts["/usr/share"]
    assert share.split()[5].split(",")[:2] == ["ro", "nosuid"]
    assert mounts["/proc/sys"].split()[5].startswith("ro")
    assert mounts["/sys"].split()[5].startswith("ro")
    assert "/opt" not in mounts                      # optional, source missing: skipped


def test_init_has_only_stdio_and_exactly_its_environment(make_container):
    c = make_container(extra=["lxc.environment = GREETING=hello world", "lxc.environment = HOME=/root"])
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    try:
        # Looked at from the host, so no shell inside adds fds of its own to what exec gave init.
        # RUNNING means execve has happened, but the new program's dynamic loader still opens
        # ld.so.cache and its libraries for a moment (fd 3, seen under qemu's TCG): a leaked fd
        # stays, so wait for the loader to finish before comparing.
        init = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value
        wait_for(lambda: sorted(os.listdir(f"/proc/{init}/fd"), key=int) == ["0", "1", "2"], timeout=10)
        assert sorted(os.listdir(f"/proc/{init}/fd"), key=int) == ["0", "1", "2"]
        with open(f"/proc/{init}/environ", "rb") as environ:
            assert sorted(environ.read().rstrip(b"\0").split(b"\0")) == [
                b"GREETING=hello world", b"HOME=/root", b"container=lxc"]
    finally:
        assert c.run("stop", "-k").returncode == 0


def test_json_trace_has_both_machines_states_in_order(make_container, tmp_path):
    c = make_container()
    log = tmp_path / "trace.json"
    result = c.start_fg("/bin/true", options=("-l", "TRACE", "-o", str(log), "--log-format", "json"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    states = [(e["side"], e["state"]) for e in events if e["event"] == "state"]
    monitor = [s for side, s in states if side == "monitor"]
    child = [s for side, s in states if side == "child"]
    road, child_road = MONITOR.road(), CHILD.road()   # no lxc.idmap: no detour
    assert monitor == [*road[: road.index("poll") + 1], "stopping", "stopped"]
    assert child == list(child_road[: child_road.index("exec") + 1])
    for event in events:
        assert {"time", "level", "name", "side", "pid", "event", "where", "category"} <= set(event)
    child_pids = {e["pid"] for e in events if e["side"] == "child"}
    assert len(child_pids) == 1 and child_pids != {1}   # host pid, not the namespace's 1


def test_default_level_prints_nothing_on_success(make_container):
    c = make_container()
    result = c.start_fg("/bin/true")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _boots(log_path) -> list[dict]:
    events = [json.loads(line) for line in open(log_path)]
    return [e for e in events if e["event"] == "started"]


def test_busybox_reboot_then_poweroff(make_container, tmp_path):
    c = make_container("busybox")
    log = tmp_path / "trace.json"
    script = "if [ -e /booted ]; then poweroff -f; else touch /booted; reboot -f; fi; sleep 5"
    result = c.start_fg("/bin/sh", "-c", script, options=("-l", "TRACE", "-o", str(log), "--log-format", "json"))
    assert result.returncode == 0, result.stderr             # a halt is a clean end
    events = [json.loads(line) for line in open(log)]
    monitor_states = [e["state"] for e in events if e["event"] == "state" and e["side"] == "monitor"]
    assert monitor_states.count("reboot") == 1
    assert monitor_states.count("init_handler") == 2
    assert monitor_states[-2:] == ["stopping", "stopped"]
    boots = _boots(log)
    assert len(boots) == 2 and boots[0]["init_pid"] != boots[1]["init_pid"]
    killed = [e["signal"] for e in events if e["event"] == "init killed"]
    assert killed == ["SIGHUP", "SIGINT"]


def test_busybox_system_boots_and_halts_with_its_halt_signal(make_container):
    c = make_container("busybox", extra=["lxc.signal.halt = SIGUSR1", "lxc.mount.auto = proc:mixed sys:ro"])
    assert c.run("start").returncode == 0                    # /sbin/init from the config
    assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.RUNNING
    stopped = c.run("stop", "-t", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert c.leaks() == []


def _paused_child(output: str) -> int:
    match = re.search(r"child pid (\d+)", output)
    assert match, output
    return int(match.group(1))


def test_break_at_setup_shows_the_unpivoted_child_then_continues(make_container):
    c = make_container()
    paused = c.run("start", "--break-at", "setup", "--", "/bin/sleep", "600")
    assert paused.returncode == 0, paused.stderr
    assert "paused before the child state setup_rootfs" in paused.stderr
    child = _paused_child(paused.stderr)
    assert os.readlink(f"/proc/{child}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    # What the printed nsenter line shows: the child's own mount namespace, not pivoted yet.
    inside = subprocess.run(["nsenter", "-t", str(child), "-m", "--", "cat", "/proc/self/mountinfo"],
                            capture_output=True, text=True, check=True).stdout
    mounts = [line.split()[4] for line in inside.splitlines()]
    assert "/" in mounts and str(c.rootfs) not in mounts   # the host's root, rootfs not mounted yet
    assert f"nsenter -t {child} -m" in paused.stderr
    assert command_client.get_state(c.lxcpath, c.name) == command_socket.LxcState.STARTING

    assert c.run("continue").returncode == 0
    deadline = time.monotonic() + 30
    while command_client.get_state(c.lxcpath, c.name) != command_socket.LxcState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert c.run("continue").returncode == 1          # not paused any more
    assert c.run("stop", "-k").returncode == 0


def test_abort_while_paused_cleans_up(make_container):
    c = make_container()
    paused = c.run("start", "--break-at", "monitor:sync_post_configure", "--", "/bin/sleep", "600")
    assert "paused before the monitor state sync_post_configure" in paused.stderr, paused.stderr
    child = _paused_child(paused.stderr)
    assert c.run("continue", "--abort").returncode == 0
    assert not os.path.exists(f"/proc/{child}")
    assert c.leaks() == []


def test_step_pauses_before_every_state_of_a_start(make_container):
    c = make_container()
    command = [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--step", "--", "/bin/true"]
    pauses = 0
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as lxcsm:
        deadline = time.monotonic() + 60
        while lxcsm.poll() is None:
            assert time.monotonic() < deadline
            if c.run("continue").returncode == 0:
                pauses += 1
            else:
                time.sleep(0.01)
        err = lxcsm.stderr.read()
    assert lxcsm.returncode == 0, err
    normal = [s for s in MONITOR.road() if s not in ("init_handler", "reboot", "aborting", "stopped")]
    child = [s for s in CHILD.road() if s != "aborting"]
    assert pauses == len(normal) + len(child)
    assert err.count("paused before the ") == pauses


def test_unknown_break_state_is_one_line(make_container):
    c = make_container()
    result = c.run("start", "--break-at", "no_such_state", "--", "/bin/true")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no such state" in result.stderr
    assert c.run("start", "--break-at", "init_handler", "--", "/bin/true").returncode == 2


def test_config_keys_rootfs_options_cwd_fstab_and_entry_options(make_container, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("# a comment\ntmpfs scratch tmpfs size=32k 0 0\n")
    c = make_container(extra=[
        "lxc.rootfs.options = ro",
        "lxc.init.cwd = /etc",
        f"lxc.mount.fstab = {fstab}",
        "lxc.mount.auto = proc:rw",
        "lxc.mount.entry = /etc/hostname srv/host-hostname none bind,ro,create=file 0 0",
        "lxc.mount.entry = etc mnt none bind,relative 0 0",
    ])
    # The rootfs is read-only inside: every mount point must exist beforehand (create= would fail).
    for directory in ("mnt", "srv", "scratch"):
        (c.rootfs / directory).mkdir(exist_ok=True)
    (c.rootfs / "srv" / "host-hostname").touch()
    result = c.start_fg("/bin/sh", "-c", "pwd; touch /x 2>/dev/null && echo writable || echo read-only; "
                                         "cat /srv/host-hostname; ls /mnt/hostname; cat /proc/self/mountinfo")
    assert result.returncode == 0, result.stderr
    pwd, root, host_hostname, relative, *mountinfo = result.stdout.splitlines()
    assert (pwd, root) == ("/etc", "read-only")
    assert host_hostname == open("/etc/hostname").read().strip()
    assert relative == "/mnt/hostname"                          # the rootfs's own etc, bound on /mnt
    mounts = {line.split()[4]: line for line in mountinfo}
    assert " - tmpfs " in mounts["/scratch"] and "size=32k" in mounts["/scratch"]
    assert mounts["/srv/host-hostname"].split()[5].startswith("ro")


@pytest.mark.parametrize("setting,shared", [
    ("lxc.namespace.keep = net", {"net"}),
    ("lxc.net.0.type = none", {"net"}),
    ("lxc.namespace.keep = ipc uts", {"ipc", "uts"}),
])
def test_namespaces_kept_or_shared(make_container, setting, shared):
    # A kept uts namespace is the host's: LXC would make lxc.uts.name the host's new hostname
    # (lxcsm's setup_hostname leaves it, a unit test says so); none is set all the same, so a
    # regression cannot rename the machine the suite runs on.
    host_hostname = socket.gethostname()
    c = make_container(extra=[setting, *(["lxc.uts.name ="] if "uts" in shared else [])])
    assert c.run("start", "--", "/bin/sleep", "600").returncode == 0
    try:
        init = command_client.call(c.lxcpath, c.name, command_socket.Cmd.GET_INIT_PID).value
        same = {ns for ns in ("mnt", "pid", "uts", "ipc", "net", "cgroup")
                if os.readlink(f"/proc/{init}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}")}
        assert same == shared
    finally:
        assert c.run("stop", "-k").returncode == 0
    assert socket.gethostname() == host_hostname


def test_signals_to_the_monitor_reach_init(make_container):
    c = make_container()
    command = [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sh", "-c",
               "trap 'echo got USR1; exit 5' USR1; echo ready; while :; do sleep 0.05; done"]
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True) as lxcsm:
        assert lxcsm.stdout.readline() == "ready\n"
        lxcsm.send_signal(signal.SIGUSR1)
        assert lxcsm.wait(timeout=30) == 5
        assert lxcsm.stdout.read() == "got USR1\n"


def test_a_paused_child_is_titled_as_the_child_in_ps(make_container):
    c = make_container()
    paused = c.run("start", "--break-at", "child:setup_mounts", "--", "/bin/true")
    child = _paused_child(paused.stderr)
    with open(f"/proc/{child}/cmdline", "rb") as cmdline:
        assert cmdline.read().startswith(f"[lxcsm child] {c.lxcpath} {c.name}".encode())
    assert c.run("continue", "--abort").returncode == 0
