"""Config keys LXC 5.0.2 honours at start, honoured the same way: each container is started
by lxc-start 5.0.2 and by lxcsm, and what its init finds is compared.

Init writes what it sees to /out (mode 1777, so an init that is not root can write there):
* lxc.init.uid / .gid / .groups: its credentials and capabilities;
* lxc.keyring.session: its session keyring, new or the caller's (LXC 5.0 stores 1 as "keep");
* lxc.time.offset.boot / .monotonic: the offsets of its time namespace;
* lxc.monitor.signal.pdeath: the signal init gets when its monitor is killed;
* lxc.sched.core: refused before anything changes where the kernel lacks core scheduling, as
  lxc-start fails; AppArmor and SELinux keys on a host without either: ignored, as LXC's nop LSM.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lxcsm.engine.linux import cgroups
from tests.integration.harness import LXCSM, monitor_pids

# lxc-start runs here too: its monitors leave an lxc.pivot cgroup behind, which the fixture removes.
pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb")
# The caller's session keyring serial, as init asks it (keyctl GET_KEYRING_ID of @s).
KEYRING = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
           "print(libc.syscall(250, 0, -3, 0))")


def _session_keyring() -> int:
    return ctypes.CDLL(None, use_errno=True).syscall(250, 0, -3, 0)


def _with_out(c) -> None:
    (c.rootfs / "out").mkdir(exist_ok=True)
    os.chmod(c.rootfs / "out", 0o1777)
    for old in (c.rootfs / "out").iterdir():
        old.unlink()


def _boot(c, script: str, lxc: bool) -> dict[str, str]:
    """Run `script` as init in the foreground, under lxc-start or lxcsm: {file in /out: text}."""
    _with_out(c)
    if lxc:
        result = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sh", "-c", script],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    else:
        result = c.start_fg("/bin/sh", "-c", script, options=("-l", "WARN"))
        assert "not supported yet" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    return {path.name: path.read_text() for path in (c.rootfs / "out").iterdir()}


def test_init_uid_gid_groups_as_under_lxc_start(make_container):
    c = make_container(extra=["lxc.mount.auto = proc:mixed", "lxc.init.uid = 1000", "lxc.init.gid = 1001",
                              "lxc.init.groups = 5,27"])
    script = "grep -E '^(" + "|".join(STATUS_FIELDS) + "):' /proc/self/status > /out/status"

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)

    assert under_lxcsm == under_lxc
    status = dict(line.split(":", 1) for line in under_lxcsm["status"].splitlines())
    assert status["Uid"].split() == ["1000"] * 4 and status["Gid"].split() == ["1001"] * 4
    assert status["Groups"].split() == ["5", "27"]
    assert int(status["CapEff"], 16) == 0   # an init that is not root holds no capability


def test_init_without_groups_has_none_of_the_callers(make_container):
    c = make_container(extra=["lxc.mount.auto = proc:mixed"])
    script = "grep -E '^(Uid|Groups):' /proc/self/status > /out/status"
    os.setgroups([4242])   # the test's own supplementary group, which init must not inherit
    try:
        under_lxc = _boot(c, script, lxc=True)
        under_lxcsm = _boot(c, script, lxc=False)
    finally:
        os.setgroups([])
    assert under_lxcsm == under_lxc
    assert "4242" not in under_lxcsm["status"]


@pytest.mark.parametrize("setting", [None, "lxc.keyring.session = 0", "lxc.keyring.session = 1"])
def test_session_keyring_as_under_lxc_start(make_container, setting):
    c = make_container(extra=[setting] if setting else [])
    script = f"/usr/bin/python3 -c '{KEYRING}' > /out/keyring"
    caller = _session_keyring()

    under_lxc = int(_boot(c, script, lxc=True)["keyring"])
    under_lxcsm = int(_boot(c, script, lxc=False)["keyring"])

    assert under_lxc > 0 and under_lxcsm > 0
    # LXC 5.0's parser stores lxc.keyring.session = 1 as "disable": the caller's keyring is kept.
    assert (under_lxcsm == caller) == (under_lxc == caller) == (setting == "lxc.keyring.session = 1")


def test_time_offsets_as_under_lxc_start(make_container):
    c = make_container(extra=["lxc.mount.auto = proc:mixed", "lxc.time.offset.boot = 2h",
                              "lxc.time.offset.monotonic = -30s"])
    script = "cat /proc/self/timens_offsets > /out/offsets; cut -d. -f1 /proc/uptime > /out/uptime"

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)
    host_uptime = time.clock_gettime(time.CLOCK_BOOTTIME)

    assert under_lxcsm["offsets"] == under_lxc["offsets"]
    assert sorted(line.split() for line in under_lxcsm["offsets"].splitlines()) == [
        ["boottime", "7200", "0"], ["monotonic", "-30", "0"]]
    assert int(under_lxcsm["uptime"]) >= host_uptime + 7200 - 60   # boot time runs 2 h ahead


def _wait_for(path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def test_pdeath_signal_reaches_init_when_its_monitor_is_killed(make_container):
    c = make_container(extra=["lxc.monitor.signal.pdeath = SIGUSR1"])
    _with_out(c)
    script = "trap 'echo USR1 > /out/pdeath; exit 0' USR1; echo ready > /out/ready; while :; do sleep 0.1; done"
    result = c.run("start", "-d", "--", "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    _wait_for(c.rootfs / "out" / "ready", "init runs")
    (monitor,) = monitor_pids(c.lxcpath, c.name)

    os.kill(monitor, signal.SIGKILL)

    _wait_for(c.rootfs / "out" / "pdeath", "init gets SIGUSR1")
    assert (c.rootfs / "out" / "pdeath").read_text() == "USR1\n"
    # The dead monitor's cgroups, as after any monitor's death: lxcsm cleanup undoes them.
    repaired = subprocess.run([*LXCSM, "cleanup", c.name, "-P", c.lxcpath], capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr


def _kernel_has_core_scheduling() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    cookie = ctypes.c_uint64()
    return libc.prctl(62, 0, os.getpid(), 1, ctypes.addressof(cookie)) == 0 or ctypes.get_errno() != 22


def test_sched_core_where_the_kernel_lacks_it_fails_as_lxc_start_does(make_container):
    if _kernel_has_core_scheduling():
        pytest.skip("this kernel has core scheduling")
    c = make_container(extra=["lxc.sched.core = 1"])
    lxc = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/true"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    result = c.start_fg("/bin/true")

    assert lxc.returncode != 0
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"lxcsm: {c.config}:5: lxc.sched.core: this kernel does not support core scheduling "
        f"(CONFIG_SCHED_CORE); LXC fails the start too"]


def test_lsm_keys_on_a_host_without_the_lsm_are_ignored_as_lxc_does(make_container):
    from lxcsm.engine.config import keys
    if any(keys.lsm_enabled(lsm) for lsm in keys.LSM_PRESENT):
        pytest.skip("this host runs AppArmor or SELinux")
    c = make_container(extra=["lxc.apparmor.profile = generated", "lxc.apparmor.allow_nesting = 1",
                              "lxc.selinux.context = system_u:system_r:lxc_t:s0:c22"])
    assert _boot(c, "echo ran > /out/ran", lxc=True) == _boot(c, "echo ran > /out/ran", lxc=False)


def test_autodev_tmpfs_size_and_flags_as_under_lxc_start(make_container):
    c = make_container(extra=["lxc.autodev.tmpfs.size = 2097152"])
    script = "grep ' /dev tmpfs ' /proc/mounts > /out/dev"
    c.config.write_text(c.config.read_text() + "lxc.mount.auto = proc:mixed\n")

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)

    assert under_lxcsm == under_lxc == {"dev": "none /dev tmpfs rw,relatime,size=2048k,mode=755 0 0\n"}


# An allow-everything seccomp filter (one BPF instruction: return SECCOMP_RET_ALLOW), for
# starting lxc-start and lxcsm as they would run inside a container that has a filter.
def _under_a_seccomp_filter() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    allow = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0x7fff0000))   # BPF_RET|BPF_K SECCOMP_RET_ALLOW
    program = SockFprog(1, allow)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(22, 2, ctypes.addressof(program), 0, 0) != 0:   # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


@pytest.mark.parametrize("allow_nesting", [0, 1])
def test_seccomp_policy_under_a_filter_only_with_allow_nesting_as_under_lxc_start(make_container, allow_nesting):
    c = make_container(extra=["lxc.mount.auto = proc:mixed",
                              "lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp",
                              f"lxc.seccomp.allow_nesting = {allow_nesting}"])
    script = "grep Seccomp_filters: /proc/self/status > /out/filters"
    seen = {}
    for name, command in (("lxc", ["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F"]),
                          ("lxcsm", [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "-l", "WARN"])):
        _with_out(c)
        result = subprocess.run([*command, "--", "/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60, preexec_fn=_under_a_seccomp_filter)
        assert result.returncode == 0, result.stderr
        assert c.monitor_exited()
        seen[name] = (c.rootfs / "out" / "filters").read_text().split()
    # The filter lxc-start and lxcsm run under, and the container's policy only when nesting is allowed.
    assert seen["lxcsm"] == seen["lxc"] == ["Seccomp_filters:", str(1 + allow_nesting)]


@pytest.mark.parametrize("arch", ["i686", "x86_64"])
def test_arch_as_under_lxc_start(make_container, arch):
    if os.uname().machine != "x86_64":
        pytest.skip("the 32-bit personality checked is x86's")
    c = make_container(extra=[f"lxc.arch = {arch}"])
    script = "uname -m > /out/machine"

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)

    assert under_lxcsm == under_lxc == {"machine": f"{arch}\n"}


def test_monitor_unshare_keeps_a_pre_start_hooks_mounts_off_the_host_as_lxc_start(make_container, tmp_path):
    target = tmp_path / "hook-mount"
    target.mkdir()
    hook = tmp_path / "pre-start.sh"
    hook.write_text(f"#!/bin/sh\nreadlink /proc/self/ns/mnt > {tmp_path}/hook-ns\n"
                    f"mount -t tmpfs lxcsm-hook-tmpfs {target}\n")
    hook.chmod(0o755)
    c = make_container(extra=["lxc.monitor.unshare = 1", f"lxc.hook.pre-start = {hook}"])
    host_ns = os.readlink("/proc/self/ns/mnt")

    for lxc in (True, False):
        _boot(c, "true", lxc=lxc)
        # The hook ran in the monitor's own mount namespace; its mount went with it.
        assert (tmp_path / "hook-ns").read_text().strip() != host_ns
        assert not os.path.ismount(target), "the hook's mount reached the host"


def test_log_syslog_sends_the_log_to_syslog_under_the_facility_as_lxc_start(make_container):
    if os.path.lexists("/dev/log"):
        pytest.skip("a syslog daemon owns /dev/log here: its messages are not this test's to read")
    import socket
    import threading
    c = make_container(extra=["lxc.log.syslog = local3", "lxc.log.level = INFO"])
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    received: list[str] = []
    messages = {}

    def drain() -> None:   # read as they come: a full socket would block the sender's syslog()
        try:
            while True:
                received.append(receiver.recv(65536).decode())
        except OSError:
            pass   # closed at the end

    receiver.bind("/dev/log")   # no syslog daemon here: this test is it, for its own two starts
    reader = threading.Thread(target=drain)
    reader.start()
    try:
        for program, command in (("lxc", ["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F"]),
                                 ("lxcsm", [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F"])):
            result = subprocess.run([*command, "--", "/bin/true"], stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert c.monitor_exited()
            time.sleep(0.2)   # the last datagrams, already sent, reach the reader
            messages[program] = received[:]
            received.clear()
    finally:
        receiver.shutdown(socket.SHUT_RDWR)
        receiver.close()
        reader.join()
        os.unlink("/dev/log")
    for program, lines in messages.items():
        assert lines, f"{program} sent nothing to syslog"
        local3 = 19 << 3
        for message in lines:   # <PRIORITY>TIMESTAMP PROGRAM[PID]: NAME: CATEGORY - WHERE - TEXT
            priority = int(message[1:message.index(">")])
            assert priority & ~7 == local3 and priority & 7 <= 6, message   # INFO or worse
            assert f"]: {c.name}: " in message, message
    assert all(re.search(r"\blxcsm\[\d+\]: ", message) for message in messages["lxcsm"])


def test_overlay_rootfs_as_lxc_copy_snapshots_make_it_as_under_lxc_start(make_container):
    c = make_container()
    base = c.rootfs
    snapshot = Path(c.lxcpath) / c.name / "overlay"
    (base / "from-base").write_text("base\n")
    lines = c.config.read_text().splitlines()
    c.config.write_text("\n".join(f"lxc.rootfs.path = overlay:{base}:{snapshot}/delta"
                                  if line.startswith("lxc.rootfs.path") else line for line in lines) + "\n")

    for program in ("lxc", "lxcsm"):
        script = f"cat /from-base > /written && echo {program} >> /written"
        command = ["/bin/sh", "-c", script]
        result = (subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", *command],
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
                  if program == "lxc" else c.start_fg(*command))
        assert result.returncode == 0, result.stderr
        assert c.monitor_exited()
        # The base layer read through the overlay; the write landed in the snapshot's upper layer.
        assert (snapshot / "delta" / "written").read_text() == f"base\n{program}\n"
        assert not (base / "written").exists()
        assert (snapshot / "work").is_dir()


@pytest.mark.parametrize("program", ["lxc", "lxcsm"])
def test_ephemeral_container_is_destroyed_when_it_stops_as_under_lxc_start(make_container, program):
    origin = make_container()
    c = make_container(extra=["lxc.ephemeral = 1"])
    container_dir = Path(c.lxcpath) / c.name
    # As lxc-copy -e leaves them: the copy names its origin, the origin lists its copy.
    (container_dir / "lxc_rdepends").write_text(f"{origin.lxcpath}\n{origin.name}\n")
    snapshots = Path(origin.lxcpath) / origin.name / "lxc_snapshots"
    snapshots.write_text(f"{c.lxcpath}\n{c.name}\n/elsewhere\nother\n")

    result = (subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/true"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
              if program == "lxc" else c.start_fg("/bin/true"))

    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    assert result.stderr == ""
    assert not container_dir.exists()
    assert snapshots.read_text() == "/elsewhere\nother\n"
    assert (Path(origin.lxcpath) / origin.name / "rootfs").is_dir()   # the origin is untouched


def test_tty_dir_as_under_lxc_start(make_container):
    c = make_container(extra=["lxc.mount.auto = proc:mixed", "lxc.pty.max = 8", "lxc.tty.max = 2",
                              "lxc.tty.dir = lxc"])
    # Each name's kind (link target, or a pty of which devpts) and the mounts on /dev.
    script = ("for f in /dev/console /dev/tty1 /dev/tty2 /dev/lxc/console /dev/lxc/tty1 /dev/lxc/tty2; do "
              "if [ -L $f ]; then echo $f link $(readlink $f); else echo $f $(stat -L -c %t $f); fi; done > /out/ttys; "
              "grep -o ' /dev/[^ ]*' /proc/self/mountinfo | grep -e tty -e console | sort > /out/mounts")

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)

    assert under_lxcsm == under_lxc
    assert "/dev/tty1 link lxc/tty1" in under_lxcsm["ttys"]
    assert under_lxcsm["mounts"].split() == ["/dev/console", "/dev/lxc/console", "/dev/lxc/tty1", "/dev/lxc/tty2"]


def test_sys_mixed_leaves_the_network_devices_writable_as_under_lxc_start(make_container):
    # sys:mixed (LXC's common.conf): /sys read-only, /sys/devices/virtual/net writable - the
    # read-only flag is the mount's, not the superblock's, or the net bind would be EROFS too.
    c = make_container("busybox", ["lxc.mount.auto = proc:mixed sys:mixed"])   # LXC stages sysfs in /proc/sys
    net = "/sys/devices/virtual/net/lo/tx_queue_len"
    script = (f"echo 777 > {net} && cat {net} > /out/net; "
              "touch /sys/kernel/lxcsm-probe 2> /out/sys; "
              # mount point, the mount's options, the superblock's (after the separator "-")
              "awk '$5 == \"/sys\" || $5 == \"/sys/devices/virtual/net\" "
              "{ for (i = 7; $i != \"-\"; i++); print $5, $6, $(i + 3) }' /proc/self/mountinfo > /out/mounts")

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)

    assert under_lxcsm == under_lxc
    assert under_lxcsm["net"] == "777\n" and "Read-only file system" in under_lxcsm["sys"]


@pytest.mark.skipif(cgroups.unified_only(cgroups.hierarchies()),
                    reason="the tmpfs of mounts exists with v1 controllers only")
@pytest.mark.parametrize("token", ["cgroup:mixed:force", "cgroup:ro:force"])
def test_the_cgroup_mounts_tmpfs_is_left_writable_as_under_lxc_start(make_container, token):
    # LXC 5.0.2 never makes it read-only; a systemd inside makes its controller links there
    # (net_cls -> net_cls,net_prio ...) and then makes it read-only itself.
    c = make_container("busybox", [f"lxc.mount.auto = proc:mixed sys:ro {token}"])
    script = ("touch /sys/fs/cgroup/probe 2> /out/tmpfs; mkdir /sys/fs/cgroup/pids/sub 2> /out/pids; "
              "awk '$5 == \"/sys/fs/cgroup\" { for (i = 7; $i != \"-\"; i++); print $6, $(i + 1) }' "
              "/proc/self/mountinfo > /out/mount")

    under_lxc = _boot(c, script, lxc=True)
    under_lxcsm = _boot(c, script, lxc=False)

    assert under_lxcsm == under_lxc
    assert under_lxcsm["tmpfs"] == "" and under_lxcsm["mount"].startswith("rw,")
