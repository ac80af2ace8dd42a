"""Parity with lxc-start 5.0.2 (issue 11, "a user can switch without noticing"): the same
container started by lxc-start and by lxcsm, each daemonized in turn, looked at from inside
(lxc-attach) and from outside (/proc/PID of its init), and compared.

Three containers: LXC's busybox template (`lxc-create -t busybox`, its network lines replaced
by an empty one), the Debian 12 container booting systemd (fixtures/debian.py, config
including Debian's debian.common.conf), and an lxc.idmap container (test_userns's busybox
template with userns.conf on a shifted rootfs, both tools writing the maps themselves).

What is compared (INSIDE below, one shell script run by lxc-attach, and init's /proc files
outside): the mount table (/proc/1/mountinfo), /dev and /dev/pts (names, types, modes, owners,
device numbers, link targets), init's status (STATUS_FIELDS: ids, groups, umask, NoNewPrivs,
seccomp, capabilities, blocked and ignored signals, CPUs and memory nodes, speculation
mitigations), environment, limits, oom_score_adj, personality, loginuid, time namespace
offsets, session, controlling terminal and open files, the hostname, the cgroups of init and
of an attached process, /sys/fs/cgroup's names, and whether /proc/sys and /proc/sys/net take
a write (each file's own value written back: nothing changes).

The normalisation is explicit (`normalise`); anything it does not remove must be equal, so a
new difference fails the test:
* the container's LXCPATH and name become LXCPATH and NAME;
* mountinfo: the mount and parent ids, the device numbers of filesystems without a device
  (major 0: each mount of a tmpfs, proc, devpts... gets the next free one), and the numbers of
  peer groups (shared:N, master:N keep their kind) are dropped; the order is kept (it is the
  order the mounts were made in), except under systemd, which mounts its cgroup hierarchies
  in an order it picks at each boot (a hash table's): its mount table is compared sorted;
* a pty of the host's devpts (the console of a container with lxc.pty.max <= 1) is whichever
  pty was free: its number (mountinfo's root /N, the device's minor) is dropped;
* init's open files: the inode numbers of pipes, sockets and anonymous inodes are dropped;
  systemd's own files come and go as it works, so for it fds 0, 1 and 2 only;
* init's status: the fields a start decides (STATUS_FIELDS), not its memory, pids or
  scheduling counters.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fixtures import debian
from fixtures import rootfs as rootfs_builders
from tests.integration.harness import (
    LXCSM,
    WITHOUT_MAP_HELPERS,
    Container,
    left_behind,
    mounts_below,
    unique_name,
    wait_for,
)
from tests.integration.test_userns import TEMPLATE as USERNS_TEMPLATE
from tests.integration.test_userns import _shift

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed"),
              pytest.mark.skipif(not shutil.which("lxc-start") or not shutil.which("lxc-create"),
                                 reason="LXC's tools are not installed")]

# Run inside by lxc-attach, under busybox's sh or Debian's dash: sections headed "== WHAT".
INSIDE = r"""
echo "== mountinfo"; cat /proc/1/mountinfo
echo "== dev"; cd /dev && find . -maxdepth 2 | sort | while read f; do
  stat -c '%n %F %a %u:%g %t:%T' "$f"; [ -L "$f" ] && echo "  -> $(readlink "$f")"; done; cd /
echo "== hostname"; hostname
echo "== cgroup of an attached process"; cat /proc/self/cgroup
echo "== /sys/fs/cgroup"; ls -A /sys/fs/cgroup
echo "== /proc/sys writes"   # errors to a closed stderr: 2>/dev/null would make a file on a /dev without null
for f in /proc/sys/kernel/printk_ratelimit /proc/sys/net/ipv4/ip_forward; do
  v=$(cat $f); if (echo "$v" > $f) 2>&-; then echo "$f writable"; else echo "$f refused"; fi; done
"""
STATUS_FIELDS = ("Uid", "Gid", "Groups", "Umask", "NoNewPrivs", "Seccomp", "Seccomp_filters", "SigBlk", "SigIgn",
                 "Cpus_allowed_list", "Mems_allowed_list", "THP_enabled", "Speculation_Store_Bypass",
                 "SpeculationIndirectBranch", "CoreDumping",
                 "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _tool(*argv: str, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("== "):
            lines = found.setdefault(line[3:], [])
        else:
            lines.append(line)
    return found


def _mountinfo_line(fields: list[str]) -> str:
    dash = fields.index("-")
    device = fields[2] if not fields[2].startswith("0:") else "0:*"
    optional = [re.sub(r":\d+$", "", tag) for tag in fields[6:dash]]
    return " ".join([device, fields[3], fields[4], fields[5], *optional, *fields[dash:]])


def normalise(view: dict[str, list[str]], c: Container, systemd: bool) -> dict[str, list[str]]:
    """The view with what differs between any two starts taken out (this module's docstring)."""
    def names(line: str) -> str:
        return line.replace(c.lxcpath, "LXCPATH").replace(c.name, "NAME")

    view = {key: [names(line) for line in lines] for key, lines in view.items()}
    table = [line.split() for line in view["mountinfo"]]
    own_devpts = {fields[2] for fields in table if fields[4] == "/dev/pts"}
    # Mount points of a pty of another devpts than the container's /dev/pts: the host's.
    host_ptys = {fields[4] for fields in table
                 if fields[fields.index("-") + 1] == "devpts" and fields[2] not in own_devpts}
    mounts = []
    for fields in table:
        if fields[4] in host_ptys:
            fields = [*fields[:3], "/N", *fields[4:]]
        mounts.append(_mountinfo_line(fields))
    view["mountinfo"] = sorted(mounts) if systemd else mounts
    view["dev"] = [re.sub(r" 88:[0-9a-f]+$", " 88:N", line) if f"/dev/{line.split()[0][2:]}" in host_ptys else line
                   for line in view["dev"]]
    view["fds"] = [re.sub(r":\[\d+\]$", ":[N]", line) for line in view["fds"]
                   if not systemd or line.split()[0] in ("0", "1", "2")]
    return view


def _outside(pid: int) -> dict[str, list[str]]:
    proc = Path(f"/proc/{pid}")
    status = [line for line in (proc / "status").read_text().splitlines() if line.split(":")[0] in STATUS_FIELDS]
    environ = sorted(filter(None, (proc / "environ").read_bytes().decode().split("\0")))
    fds = sorted(os.listdir(proc / "fd"), key=int)
    stat = (proc / "stat").read_text().rpartition(") ")[2].split()   # state ppid pgrp session tty_nr ...
    return {"status": status, "environ": environ, "limits": (proc / "limits").read_text().splitlines(),
            "oom_score_adj": [(proc / "oom_score_adj").read_text().strip()],
            "personality": [(proc / "personality").read_text().strip()],
            "cgroup of init": (proc / "cgroup").read_text().splitlines(),
            "loginuid, timens_offsets": [(proc / "loginuid").read_text(),
                                         *(proc / "timens_offsets").read_text().splitlines()],
            # session leader of its own session, and whether it has a controlling terminal
            "session": [str(int(stat[3]) == pid), str(int(stat[4]) == pid), str(stat[5] != "0")],
            "fds": [f"{fd} {os.readlink(proc / 'fd' / fd)}" for fd in fds]}


def _init_settled(c: Container, systemd: bool) -> bool:
    """systemd: it says the boot is over; busybox init: its sysinit script (rcS) has ended and
    it has started the rest of its inittab."""
    if systemd:
        said = _tool("lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", "/bin/systemctl", "is-system-running")
        return said.stdout.strip() in ("running", "degraded")
    found = _tool("lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", "/bin/sh", "-c",
                  "for p in $(cat /proc/1/task/1/children); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done")
    children = found.stdout.splitlines()
    return bool(children) and not any("rcS" in child for child in children)


def observe(c: Container, lxc: bool, systemd: bool = False, env=None) -> dict[str, list[str]]:
    """Start `c` daemonized under lxc-start or lxcsm, wait for its init to settle, look, stop it."""
    # lxc-start by its path: env may be harness.WITHOUT_MAP_HELPERS, whose PATH lacks /usr/bin
    started = (_tool(shutil.which("lxc-start") or "lxc-start", "-n", c.name, "-P", c.lxcpath, env=env) if lxc
               else _tool(*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, env=env))
    assert started.returncode == 0, started.stderr
    try:
        info = _tool("lxc-info", "-n", c.name, "-P", c.lxcpath, "-p", "-H")
        assert info.returncode == 0, info.stderr
        pid = int(info.stdout)
        assert wait_for(lambda: _init_settled(c, systemd), timeout=300 if systemd else 60), "init never settled"
        inside = _tool("lxc-attach", "-n", c.name, "-P", c.lxcpath, "--", "/bin/sh", "-c", INSIDE)
        assert inside.returncode == 0, inside.stderr
        view = {**_sections(inside.stdout), **_outside(pid)}
    finally:
        stopped = (_tool("lxc-stop", "-n", c.name, "-P", c.lxcpath, "-k") if lxc
                   else _tool(*LXCSM, "stop", "-n", c.name, "-P", c.lxcpath, "-k"))
        assert stopped.returncode == 0, stopped.stderr
        assert wait_for(lambda: _tool("lxc-info", "-n", c.name, "-P", c.lxcpath, "-s", "-H").stdout.strip()
                        in ("", "STOPPED"), timeout=30)
    return normalise(view, c, systemd)


def assert_same(under_lxc: dict[str, list[str]], under_lxcsm: dict[str, list[str]]) -> None:
    """Section by section, so a difference names what differs."""
    assert under_lxcsm.keys() == under_lxc.keys()
    for key in under_lxc:
        diff = "\n".join(difflib.unified_diff(under_lxc[key], under_lxcsm[key], "lxc-start", "lxcsm", lineterm=""))
        assert under_lxcsm[key] == under_lxc[key], f"{key} differs:\n{diff}"


@pytest.fixture
def parity_dir():
    """A directory of the test's own in /tmp, searchable by others (an idmapped container's
    root, the host's uid 100000, must reach its rootfs); afterwards no monitor, cgroup, socket
    or mount of its containers may be left, and it is removed."""
    base = Path(tempfile.mkdtemp(prefix="lxcsm-parity-", dir="/tmp"))
    os.chmod(base, 0o711)
    made: list[Container] = []
    try:
        yield base, made
        assert left_behind(made, patience=10) == {}, "a start left things behind"
        assert mounts_below(base) == [], "a host mount was left"
    finally:
        for c in made:   # a start left running by a failed test, lxc-start's or lxcsm's
            _tool("lxc-stop", "-n", c.name, "-P", c.lxcpath, "-k", timeout=60)
            c.force_cleanup()
        shutil.rmtree(base)


def test_lxcs_busybox_template_is_seen_the_same_under_lxc_start_and_lxcsm(parity_dir):
    base, made = parity_dir
    name, lxcpath = unique_name("pb"), base / "lxc"
    created = _tool("lxc-create", "-t", "busybox", "-n", name, "-P", str(lxcpath))
    assert created.returncode == 0, created.stderr
    config = lxcpath / name / "config"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(line for line in lines if not line.startswith("lxc.net.")) + "lxc.net.0.type = empty\n")
    c = Container(name, str(lxcpath), lxcpath / name / "rootfs", config)
    made.append(c)

    under_lxc = observe(c, lxc=True)
    under_lxcsm = observe(c, lxc=False)

    assert_same(under_lxc, under_lxcsm)
    # What the template asks for, seen (not only equal): lxc.apparmor.allow_nesting's helpers,
    # /proc/sys read-only but for its net, a daemon's init on /dev/null with its console 0620.
    assert any(" /dev/.lxc/proc " in line for line in under_lxcsm["mountinfo"])
    assert "/proc/sys/kernel/printk_ratelimit refused" in under_lxcsm["/proc/sys writes"]
    assert "/proc/sys/net/ipv4/ip_forward writable" in under_lxcsm["/proc/sys writes"]
    assert under_lxcsm["fds"][:3] == ["0 /dev/null", "1 /dev/null", "2 /dev/null"]
    assert any(line.startswith("./console character special file 620 ") for line in under_lxcsm["dev"])


def test_an_idmapped_busybox_is_seen_the_same_under_lxc_start_and_lxcsm(parity_dir):
    base, made = parity_dir
    name, lxcpath = unique_name("pu"), base / "lxc"
    root = lxcpath / name / "rootfs"
    fs = rootfs_builders.make_busybox_rootfs(root)
    _shift(root)
    c = Container(name, str(lxcpath), root, rootfs_builders.write_config(lxcpath, name, fs, USERNS_TEMPLATE))
    made.append(c)

    under_lxc = observe(c, lxc=True, env=WITHOUT_MAP_HELPERS)
    under_lxcsm = observe(c, lxc=False, env=WITHOUT_MAP_HELPERS)

    assert_same(under_lxc, under_lxcsm)
    assert "Uid:\t100000\t100000\t100000\t100000" in under_lxcsm["status"]   # seen from the host


@pytest.fixture
def debian_rootfs():
    try:
        return debian.ensure_rootfs()
    except debian.MirrorUnreachable as unreachable:
        pytest.skip(f"no Debian rootfs can be built here: {unreachable}")


def test_the_debian_systemd_container_is_seen_the_same_under_lxc_start_and_lxcsm(parity_dir, debian_rootfs):
    base, made = parity_dir
    name, lxcpath = unique_name("pd"), base / "lxc"
    config = debian.make_container(lxcpath, name)
    c = Container(name, str(lxcpath), lxcpath / name / "rootfs", config)
    made.append(c)

    under_lxc = observe(c, lxc=True, systemd=True)
    under_lxcsm = observe(c, lxc=False, systemd=True)

    assert_same(under_lxc, under_lxcsm)
    # A console of the container's devpts (lxc.pty.max = 1024) is init's stdio: mode 0700, as
    # LXC's fix_stdio_permissions() leaves it.
    assert any(line.startswith("./console character special file 700 ") for line in under_lxcsm["dev"])


def test_with_autodev_and_no_pty_max_only_the_ptys_differ_as_the_readme_says(parity_dir):
    """The difference kept on purpose (README, "Side by side with lxc-start"): with lxc.autodev = 1
    and no lxc.pty.max, LXC mounts no devpts in the container and binds ptys of the host's devpts
    on the ttys; lxcsm gives the container a devpts of its own, with /dev/ptmx, and the ttys in
    it.  Everything else is the same."""
    base, made = parity_dir
    name, lxcpath = unique_name("pp"), base / "lxc"
    root = lxcpath / name / "rootfs"
    fs = rootfs_builders.make_busybox_rootfs(root)
    config = rootfs_builders.write_config(lxcpath, name, fs, ["lxc.autodev = 1", "lxc.tty.max = 2",
                                                              "lxc.mount.auto = proc:mixed sys:ro"])
    c = Container(name, str(lxcpath), root, config)
    made.append(c)

    under_lxc = observe(c, lxc=True)
    under_lxcsm = observe(c, lxc=False)

    def ptys(view: dict[str, list[str]]) -> tuple[list[str], list[str]]:
        """(the mounts on /dev/pts, /dev/ptmx and the ttys; /dev's pts, ptmx and tty entries)"""
        mounts = [line for line in view["mountinfo"] if line.split()[2] in ("/dev/pts", "/dev/ptmx", "/dev/tty1",
                                                                            "/dev/tty2")]
        nodes = [line for line in view["dev"] if line.startswith(("./pts", "./ptmx", "./tty1", "./tty2"))]
        return mounts, nodes

    lxc_mounts, lxc_nodes = ptys(under_lxc)
    lxcsm_mounts, lxcsm_nodes = ptys(under_lxcsm)
    assert [line.split()[1:3] for line in lxc_mounts] == [["/N", "/dev/tty1"], ["/N", "/dev/tty2"]]   # host ptys
    assert [line.split()[1:3] for line in lxcsm_mounts] == [["/", "/dev/pts"], ["/ptmx", "/dev/ptmx"],
                                                            ["/0", "/dev/tty1"], ["/1", "/dev/tty2"]]
    assert all(" - devpts devpts rw,gid=5,mode=620,ptmxmode=666" in line for line in lxcsm_mounts)
    assert "./ptmx" not in [line.split()[0] for line in lxc_nodes]
    for view, (mounts, nodes) in ((under_lxc, (lxc_mounts, lxc_nodes)), (under_lxcsm, (lxcsm_mounts, lxcsm_nodes))):
        view["mountinfo"] = [line for line in view["mountinfo"] if line not in mounts]
        view["dev"] = [line for line in view["dev"] if line not in nodes]
    assert_same(under_lxc, under_lxcsm)


@pytest.mark.parametrize("extra", [   # lxc.pty.max set: without it the ptys differ on purpose (above)
    ["lxc.pty.max = 1", "lxc.mount.auto = proc:rw sys:rw cgroup:rw:force"],
    ["lxc.pty.max = 1", "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed:force"],
    ["lxc.pty.max = 1", "lxc.mount.auto = proc:mixed sys:ro cgroup:ro:force"],
    ["lxc.include = /usr/share/lxc/config/common.conf"],
    ["lxc.autodev = 0", "lxc.pty.max = 4", "lxc.tty.max = 2", "lxc.mount.auto = proc:mixed sys:mixed"],
    ["lxc.pty.max = 8", "lxc.tty.max = 2", "lxc.tty.dir = lxc", "lxc.cap.keep = sys_admin setuid setgid",
     "lxc.mount.auto = proc:mixed sys:ro", "lxc.mount.entry = tmpfs tmp tmpfs nosuid,size=1M 0 0"],
    ["lxc.pty.max = 1", "lxc.rootfs.options = ro", "lxc.mount.auto = proc:mixed sys:ro"],
    ["lxc.pty.max = 1", "lxc.cap.drop = sys_admin", "lxc.mount.auto = proc:rw sys:mixed cgroup:mixed"],
    ["lxc.pty.max = 1", "lxc.prlimit.nofile = 1024:2048", "lxc.proc.oom_score_adj = 10",
     "lxc.sysctl.net.ipv4.ip_forward = 1", "lxc.environment = FOO=bar", "lxc.init.cwd = /tmp",
     "lxc.mount.auto = proc:mixed"],
    ["lxc.pty.max = 1", "lxc.mount.auto = proc:mixed",
     "lxc.mount.entry = /usr/share/lxc srv none rbind,ro,create=dir,rslave 0 0",
     "lxc.mount.entry = /etc/hostname etc/hostname-of-host none bind,ro,create=file 0 0",
     "lxc.mount.entry = tmpfs run tmpfs nodev,noexec,mode=700,size=64k,create=dir 0 0"],
    ["lxc.pty.max = 1", "lxc.no_new_privs = 1", "lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp",
     "lxc.mount.auto = proc:mixed sys:ro"],
], ids=["rw-all", "mixed-all", "ro-cgroups", "common.conf", "autodev-0", "tty-dir-cap-keep", "ro-rootfs",
        "no-sys-admin", "limits-sysctl-env", "entries", "nnp-seccomp"])
def test_a_busybox_with_each_mount_auto_and_dev_setting_is_seen_the_same(parity_dir, extra):
    base, made = parity_dir
    name, lxcpath = unique_name("pm"), base / "lxc"
    root = lxcpath / name / "rootfs"
    fs = rootfs_builders.make_busybox_rootfs(root)
    c = Container(name, str(lxcpath), root, rootfs_builders.write_config(lxcpath, name, fs, extra))
    made.append(c)

    under_lxc = observe(c, lxc=True)
    under_lxcsm = observe(c, lxc=False)

    assert_same(under_lxc, under_lxcsm)
