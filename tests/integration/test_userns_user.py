"""A container started by an ordinary user, not root (issue 12), on a cgroup2-only host.

The test makes a user of its own (useradd, removed after; its name is unique) with a range
of host ids in /etc/subuid and /etc/subgid, a busybox rootfs owned by that range, in the
user's default LXCPATH (~/.local/share/lxc, as LXC's), with lxc.idmap mapping the range and
cgroup2 limits.  As that user (setpriv: its uid, gid and groups, nothing of root's) it runs
`lxcsm start`, `lxcsm info`, lxc-attach and `lxcsm stop`, and checks what the issue asks:
inside, init's shell is uid 0; on the host init runs as the range's first uid; the maps were
written by newuidmap/newgidmap; the cgroups lxc.monitor.NAME and lxc.payload.NAME are below
the user's delegated cgroup with the limits in the payload one; after the stop nothing of the
container is left.

tools/vm's guest runs tools/vm-guest/init.py as PID 1, with no system systemd, logind or PAM
session, so the user's delegated cgroup is made as systemd's Delegate=yes makes one (as
user@UID.service gets it): a cgroup below the root's (whose subtree_control enables every
controller) is given to the user, the directory and the files /sys/kernel/cgroup/delegate
lists (cgroup.procs, cgroup.subtree_control, cgroup.threads) chowned to it.  The first test
runs `lxcsm start` in it directly; the second starts the user's own systemd manager there
(`systemd --user`, with its D-Bus session bus from dbus-user-session, as user@UID.service
would) and runs `systemd-run --user --scope -p Delegate=yes lxcsm start NAME`, as the issue
says a user does: the container's cgroups are then below the scope that systemd made.
Booting the guest's systemd as PID 1 with a logind session (libpam-systemd) is not done.

On a host with cgroup v1 controllers (this project's development machine) an ordinary user's
start is refused in one line (engine/config/unprivileged.py; tests/unit/test_unprivileged.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fixtures import rootfs as rootfs_builders
from lxcsm.engine.linux import cgroups
from tests.integration.harness import cgroup_dirs, monitor_pids, unique_name, wait_for

pytestmark = pytest.mark.root

FOUND = cgroups.hierarchies()
UNIFIED_ONLY = cgroups.unified_only(FOUND)
COUNT = 65536
LIMITS = ["lxc.cgroup2.pids.max = 64", "lxc.cgroup2.memory.max = 67108864"]
needs_tools = pytest.mark.skipif(not (shutil.which("newuidmap") and shutil.which("useradd")),
                                 reason="newuidmap or useradd missing (Debian: uidmap, passwd; tools/setup)")
# The user's programs: lxcsm's own environment, minus root's (the venv's bin first, as tools/vm).
VENV_BIN = os.path.dirname(shutil.which("lxcsm") or "/usr/bin/lxcsm")


def _free_range() -> int:
    """The first id after every range /etc/subuid and /etc/subgid give anyone (from 200000 up)."""
    end = 200000
    for file in ("/etc/subuid", "/etc/subgid"):
        if os.path.exists(file):
            for line in Path(file).read_text().splitlines():
                fields = line.split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    end = max(end, int(fields[1]) + int(fields[2]))
    return end


@pytest.fixture
def ordinary_user():
    """A user of the test's own with COUNT subordinate uids and gids; removed after, home too."""
    name = f"lxcsm-u{uuid.uuid4().hex[:8]}"
    first = _free_range()
    home = Path("/var/tmp") / name
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", name], check=True)
    try:
        subprocess.run(["usermod", "--add-subuids", f"{first}-{first + COUNT - 1}",
                        "--add-subgids", f"{first}-{first + COUNT - 1}", name], check=True)
        # The container's root (uid `first`) must pass through the home to its rootfs, as
        # LXC's documentation has users allow (setfacl -m u:100000:x, or o+x as here).
        home.chmod(0o711)
        yield pwd.getpwnam(name), first
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        for file in ("/etc/subuid", "/etc/subgid"):   # userdel drops them; never leave one behind
            lines = Path(file).read_text().splitlines(keepends=True) if os.path.exists(file) else []
            if any(line.startswith(f"{name}:") for line in lines):
                Path(file).write_text("".join(line for line in lines if not line.startswith(f"{name}:")))


@pytest.fixture
def delegated_cgroup(ordinary_user):
    """A cgroup2 cgroup given to the user as systemd's Delegate=yes gives one; removed after,
    with whatever is below it (its processes killed first: only the test's user runs there)."""
    user, _first = ordinary_user
    unified = next(h for h in FOUND if h.version == 2)
    path = os.path.join(unified.home, unique_name("deleg"))
    os.mkdir(path)
    try:
        os.chown(path, user.pw_uid, user.pw_gid)
        for name in Path("/sys/kernel/cgroup/delegate").read_text().split():
            if os.path.exists(os.path.join(path, name)):
                os.chown(os.path.join(path, name), user.pw_uid, user.pw_gid)
        yield path
    finally:
        cgroups.remove(path)


def _user_command(user, cgroup: str | None, argv: tuple[str, ...]) -> list[str]:
    """argv as `user` (setpriv: its uid, gid and groups), moved first into `cgroup` if given."""
    enter = f'echo $$ > {cgroup}/cgroup.procs && ' if cgroup else ""
    shell = f'{enter}exec setpriv --reuid={user.pw_uid} --regid={user.pw_gid} --init-groups "$@"'
    return ["sh", "-c", shell, "sh", *argv]


def _user_environment(user, **more: str) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": user.pw_dir, "USER": user.pw_name,
            "LANG": "C.UTF-8", "TMPDIR": "/var/tmp", **more}


def _as_user(user, cgroup: str | None, *argv: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_user_command(user, cgroup, argv), env=env or _user_environment(user),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/")


def _container(user, first: int) -> tuple[str, str, Path]:
    """NAME, its LXCPATH (the user's default) and its rootfs, shifted to the user's range:
    the directories the monitor writes in are the user's, the rootfs its container root's."""
    name = unique_name("uu")
    lxcpath = Path(user.pw_dir) / ".local/share/lxc"
    root = lxcpath / name / "rootfs"
    fs = rootfs_builders.make_busybox_rootfs(root)
    rootfs_builders.write_config(lxcpath, name, fs, [
        f"lxc.idmap = u 0 {first} {COUNT}", f"lxc.idmap = g 0 {first} {COUNT}",
        "lxc.init.cmd = /bin/sleep 600", *LIMITS])
    for top, dirs, files in os.walk(root):
        for entry in [top, *(os.path.join(top, n) for n in dirs + files)]:
            status = os.lstat(entry)
            os.lchown(entry, status.st_uid + first, status.st_gid + first)
    for directory in (Path(user.pw_dir) / ".local", Path(user.pw_dir) / ".local/share", lxcpath, lxcpath / name):
        os.chown(directory, user.pw_uid, user.pw_gid)
        directory.chmod(0o711)
    os.chown(lxcpath / name / "config", user.pw_uid, user.pw_gid)
    return name, str(lxcpath), root


@pytest.mark.skipif(not UNIFIED_ONLY, reason="the host has cgroup v1 controllers: an ordinary user's start is "
                    "refused there in one line (tests/unit/test_unprivileged.py); tools/vm's guest runs this")
@needs_tools
def test_an_ordinary_user_starts_and_stops_a_container_in_its_delegated_cgroup(ordinary_user, delegated_cgroup):
    user, first = ordinary_user
    name, lxcpath, _root = _container(user, first)

    started = _as_user(user, delegated_cgroup, "lxcsm", "start", "-n", name, "-l", "TRACE",
                       "-o", f"{user.pw_dir}/start.log")
    log = Path(user.pw_dir, "start.log").read_text() if Path(user.pw_dir, "start.log").exists() else ""
    assert started.returncode == 0, started.stderr + log
    try:
        # Later commands run where the user's session would be: in the delegated tree (the
        # kernel lets a process move another only within a tree whose cgroup.procs it may
        # write at their common ancestor - lxc-attach moves itself into the container's).
        leaf = os.path.join(delegated_cgroup, cgroups.LEAF)
        info = _as_user(user, leaf, "lxcsm", "info", "-n", name, "-p", "-H")   # the default LXCPATH
        assert info.returncode == 0, info.stderr
        pid = int(info.stdout.split()[-1])
        status = {line.split(":")[0]: line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith(("Uid", "Gid"))}
        assert status == {"Uid": [str(first)] * 4, "Gid": [str(first)] * 4}
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(first), str(COUNT)]
        assert "writer=/usr/bin/newuidmap" in log and "writer=/usr/bin/newgidmap" in log, log

        inside = _as_user(user, leaf, "lxc-attach", "-n", name, "-P", lxcpath, "--", "/bin/sh", "-c", "id -u; id -g")
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.split() == ["0", "0"]

        payload = os.path.join(delegated_cgroup, f"lxc.payload.{name}")
        monitor = os.path.join(delegated_cgroup, f"lxc.monitor.{name}")
        assert pid in cgroups.members(payload)
        assert monitor_pids(lxcpath, name) and set(monitor_pids(lxcpath, name)) <= set(cgroups.members(monitor))
        assert Path(payload, "pids.max").read_text().strip() == "64"
        assert Path(payload, "memory.max").read_text().strip() == "67108864"
        assert os.stat(payload).st_uid == user.pw_uid   # the user's, as LXC leaves it
        assert os.stat(payload).st_gid == first         # the container root's group

        # A reboot (reboot(2) inside: init killed by SIGHUP) makes the cgroups again, in the
        # same places: the monitor came back to the leaf, which is not vacated once more.
        rebooted = _as_user(user, leaf, "lxc-attach", "-n", name, "-P", lxcpath, "--", "/bin/busybox", "reboot", "-f")
        assert rebooted.returncode in (0, 137, 143), rebooted.stderr   # it may die with its container

        def new_init() -> int | None:
            answer = _as_user(user, leaf, "lxcsm", "info", "-n", name, "-p", "-H")
            found = answer.stdout.split()
            return int(found[-1]) if answer.returncode == 0 and found and int(found[-1]) != pid else None
        assert wait_for(lambda: new_init() is not None, timeout=120)
        assert new_init() in cgroups.members(payload)
        assert Path(payload, "pids.max").read_text().strip() == "64"
        assert sorted(e.name for e in os.scandir(delegated_cgroup) if e.is_dir()) == sorted(
            [cgroups.LEAF, f"lxc.monitor.{name}", f"lxc.payload.{name}"])
        assert [e.name for e in os.scandir(leaf) if e.is_dir()] == []
    finally:
        stopped = _as_user(user, os.path.join(delegated_cgroup, cgroups.LEAF), "lxcsm", "stop", "-n", name, "-k")
        assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: not monitor_pids(lxcpath, name), timeout=30)
    assert cgroup_dirs(name) == []
    # What is left in the delegated cgroup is LXC's leaf for the processes that were in it.
    assert sorted(e.name for e in os.scandir(delegated_cgroup) if e.is_dir()) == [cgroups.LEAF]
    assert cgroups.members(os.path.join(delegated_cgroup, cgroups.LEAF)) == []



# systemd's user manager, as user@UID.service runs it, and the D-Bus session bus it starts.
SYSTEMD = "/lib/systemd/systemd"
needs_user_manager = pytest.mark.skipif(
    not (os.path.exists(SYSTEMD) and shutil.which("systemd-run") and shutil.which("dbus-daemon")),
    reason="no systemd user manager or D-Bus here (Debian: systemd, dbus-user-session; tools/vm's guest has them)")


def _delegate(path: str, user) -> str:
    os.mkdir(path)
    for name in ("", "cgroup.procs"):
        os.chown(os.path.join(path, name), user.pw_uid, user.pw_gid)
    return path


@pytest.fixture
def user_manager(ordinary_user, delegated_cgroup):
    """`systemd --user` for the user in its delegated cgroup, as systemd's user@UID.service
    (Delegate=yes) runs it, with XDG_RUNTIME_DIR=/run/user/UID; and a leaf of the tree,
    session.scope, standing for the user's login session (the kernel lets systemd move a
    process into a scope only from inside the tree delegated to the user: without a system
    systemd none asks it to do the move).  Yields (session cgroup, the user's environment);
    the manager is stopped after (SIGTERM, by its pid), with the runtime directory."""
    user, _first = ordinary_user
    # systemd --user runs only where the system "has been booted with systemd", which it
    # tells by this directory (sd_booted()); tools/vm's guest boots with its own PID 1.
    booted = Path("/run/systemd/system")
    made = [d for d in (booted.parent, booted) if not d.exists()]
    booted.mkdir(parents=True, exist_ok=True)
    runtime = Path(f"/run/user/{user.pw_uid}")
    made += [runtime.parent] if not runtime.parent.exists() else []
    runtime.mkdir(parents=True, mode=0o700)
    os.chown(runtime, user.pw_uid, user.pw_gid)
    session = _delegate(os.path.join(delegated_cgroup, "session.scope"), user)
    env = _user_environment(user, XDG_RUNTIME_DIR=str(runtime), DBUS_SESSION_BUS_ADDRESS=f"unix:path={runtime}/bus")
    log = Path(user.pw_dir) / "systemd-user.log"
    with open(log, "w") as output:
        manager = subprocess.Popen(_user_command(user, delegated_cgroup, (SYSTEMD, "--user")), env=env,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd="/")
    try:
        state = ""
        for _attempt in range(240):   # TCG: the manager takes a while to come up
            state = _as_user(user, session, "systemctl", "--user", "is-system-running", env=env).stdout.strip()
            if state in ("running", "degraded") or manager.poll() is not None:
                break
            time.sleep(0.5)
        assert state in ("running", "degraded"), f"systemd --user: {state!r}\n{log.read_text()}"
        yield session, env
    finally:
        manager.terminate()
        try:
            manager.wait(timeout=60)
        except subprocess.TimeoutExpired:
            manager.kill()
            manager.wait()
        shutil.rmtree(runtime, ignore_errors=True)
        for directory in reversed(made):   # what this fixture made, and nothing else
            directory.rmdir()


@pytest.mark.skipif(not UNIFIED_ONLY, reason="the host has cgroup v1 controllers: an ordinary user's start is "
                    "refused there in one line (tests/unit/test_unprivileged.py); tools/vm's guest runs this")
@needs_tools
@needs_user_manager
def test_an_ordinary_user_starts_a_container_in_a_scope_systemd_run_delegates(ordinary_user, user_manager):
    """The issue's way: `systemd-run --user --scope -p Delegate=yes lxcsm start NAME`, the
    scope made by the user's systemd, the container's cgroups below it."""
    user, first = ordinary_user
    session, env = user_manager
    name, lxcpath, _root = _container(user, first)

    started = _as_user(user, session, "systemd-run", "--user", "--scope", "-p", "Delegate=yes", "--",
                       "lxcsm", "start", "-n", name, env=env)
    assert started.returncode == 0, started.stderr
    try:
        [payload] = [d for d in cgroup_dirs(name) if d.endswith(f"/lxc.payload.{name}")]
        scope = os.path.dirname(payload)
        assert scope.endswith(".scope") and scope.startswith(os.path.dirname(session) + "/")
        assert os.path.isdir(os.path.join(scope, f"lxc.monitor.{name}"))
        assert Path(payload, "pids.max").read_text().strip() == "64"
        info = _as_user(user, session, "lxcsm", "info", "-n", name, "-p", "-H", env=env)
        assert info.returncode == 0, info.stderr
        assert int(info.stdout.split()[-1]) in cgroups.members(payload)
    finally:
        stopped = _as_user(user, session, "lxcsm", "stop", "-n", name, "-k", env=env)
        assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: not monitor_pids(lxcpath, name), timeout=30)
    assert cgroup_dirs(name) == []
