"""`lxcsm start` through the start server (`lxcsm serve`) against the same start made cold.

Each test starts the same container both ways, from the same caller, and compares
what the user sees (output, errors, exit status) and what the monitor is to the
host (cgroups, namespaces, credentials, signal state, rlimits, title).  The server
is this module's own, on a socket of its own: other tests keep starting cold.
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import subprocess
import sys
import termios
import time
import uuid

import pytest

from lxcsm.engine.protocol import command_client, command_socket
from tests.integration.harness import LXCSM, unique_name

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def start_server():
    """(socket path, server process): a server of this module's own."""
    directory = f"/run/lxcsm-test-{uuid.uuid4().hex[:8]}"
    path = f"{directory}/start.sock"
    server = subprocess.Popen([*LXCSM, "serve", "--socket", path], stdin=subprocess.DEVNULL)
    try:
        wait_for_server(path, server)
        yield path, server
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)   # the socket, if the server left it


def wait_for_server(path: str, server: subprocess.Popen, timeout: float = 60) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, "the start server exited"
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            assert time.monotonic() < deadline, "the start server never answered"
            time.sleep(0.05)
        finally:
            probe.close()


def env_for(mode: str, path: str) -> dict[str, str]:
    """The environment of a cold start (mode "off") or one the server must serve ("require")."""
    return {**os.environ, "LXCSM_START_SERVER": mode, "LXCSM_START_SOCKET": path}


MODES = ("off", "require")


def run_both(container, path: str, *args: str, wrapper: tuple[str, ...] = ()) -> dict[str, subprocess.CompletedProcess]:
    results = {}
    for mode in MODES:
        results[mode] = subprocess.run([*wrapper, *LXCSM, *args[:1], "-n", container.name, "-P", container.lxcpath,
                                        *args[1:]], capture_output=True, text=True, timeout=120,
                                       stdin=subprocess.DEVNULL, env=env_for(mode, path))
        container.monitor_exited()
    return results


def same(results: dict[str, subprocess.CompletedProcess]) -> subprocess.CompletedProcess:
    cold, warm = results["off"], results["require"]
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    return cold


def test_foreground_output_and_exit_status_are_a_cold_starts(make_container, start_server):
    c = make_container()
    result = same(run_both(c, start_server[0], "start", "-F", "--", "/bin/sh", "-c",
                           "echo out $$; hostname; echo err >&2; exit 7"))
    assert result.returncode == 7 and result.stdout.split() == ["out", "1", c.name] and result.stderr == "err\n"


@pytest.mark.parametrize("bad", [
    ("-s", "lxc.no.such.key = 1"),
    ("-s", "lxc.rootfs.path = /no/such/rootfs"),
    ("-l", "LOUDEST"),
    ("--no-such-flag",),
    ("--share-net", "lxcsm-no-such-container"),
])
def test_refusals_are_a_cold_starts(make_container, start_server, bad):
    c = make_container()
    result = same(run_both(c, start_server[0], "start", "-F", *bad, "--", "/bin/true"))
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr


def test_a_bad_config_file_is_refused_as_cold(make_container, start_server):
    c = make_container()
    with open(c.config, "a") as config:
        config.write("lxc.mount.entry = proc proc proc nosuchoption 0 0\nlxc.bogus.key = 2\n")
    result = same(run_both(c, start_server[0], "start", "-d"))
    assert result.returncode == 1 and "lxc.bogus.key" in result.stderr


def test_daemon_start_and_stop_as_cold_and_lxc_info_sees_it(make_container, start_server):
    """start -d, and stop (which the server runs too), each both ways."""
    c = make_container()
    path = start_server[0]
    not_running = same(run_both(c, path, "stop", "-k"))
    assert not_running.returncode == 2 and c.name in not_running.stderr
    for mode in MODES:
        env = env_for(mode, path)
        started = c.run("start", "-d", "--", "/bin/sleep", "600", env=env)
        assert started.returncode == 0 and started.stdout == started.stderr == "", (mode, started.stderr)
        again = c.run("start", "-d", "--", "/bin/sleep", "600", env=env)
        assert again.returncode == 0 and "already running" in again.stderr
        info = subprocess.run(["lxc-info", "-n", c.name, "-P", c.lxcpath, "-s", "-H"], capture_output=True, text=True)
        assert info.stdout.strip() == "RUNNING"
        monitor = _monitor_of(c)
        with open(f"/proc/{monitor}/cmdline", "rb") as cmdline:
            assert cmdline.read().rstrip(b"\0") == f"[lxcsm monitor] {c.lxcpath} {c.name}".encode()
        assert _ppid(monitor) != start_server[1].pid
        stopped = c.run("stop", "-k", env=env)
        assert (stopped.returncode, stopped.stdout, stopped.stderr) == (0, "", "")
        assert c.monitor_exited()


def test_a_breakpoint_pauses_and_continue_and_stop_work_through_the_server(make_container, start_server):
    c = make_container()
    env = env_for("require", start_server[0])
    paused = c.run("start", "-d", "--break-at", "monitor:spawn", "--", "/bin/sleep", "600", env=env)
    assert paused.returncode == 0 and "spawn" in paused.stderr, paused.stderr
    assert c.run("continue", env=env).returncode == 0
    deadline = time.monotonic() + 30
    while command_client.get_state(c.lxcpath, c.name) != command_socket.LxcState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert c.run("stop", "-k").returncode == 0
    assert c.monitor_exited()


def _monitor_of(c) -> int:
    """The monitor: init's parent."""
    command = ["lxc-info", "-n", c.name, "-P", c.lxcpath, "-p", "-H"]
    if c.netns is not None:   # its command socket is in that network namespace
        command = ["nsenter", f"--net=/run/netns/{c.netns}", *command]
    return _ppid(int(subprocess.run(command, capture_output=True, text=True, check=True).stdout))


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _portrait(pid: int) -> dict[str, object]:
    """What the host can tell of a process: the fields a cold and a warm monitor must share."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    kept = ("Uid", "Gid", "Groups", "Umask", "SigIgn", "SigBlk", "SigCgt", "CapInh", "CapPrm", "CapEff",
            "CapBnd", "NoNewPrivs", "Seccomp", "Cpus_allowed_list")
    portrait: dict[str, object] = {key: fields.get(key) for key in kept}
    portrait["ns"] = {kind: os.readlink(f"/proc/{pid}/ns/{kind}")
                      for kind in ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")}
    for name in ("cgroup", "limits", "cmdline", "comm"):
        with open(f"/proc/{pid}/{name}", "rb") as proc_file:
            portrait[name] = proc_file.read().rstrip(b"\0")
    portrait["cwd"], portrait["root"] = os.readlink(f"/proc/{pid}/cwd"), os.readlink(f"/proc/{pid}/root")
    portrait["nice"] = os.getpriority(os.PRIO_PROCESS, pid)
    portrait["fds 0-2"] = [os.readlink(f"/proc/{pid}/fd/{fd}").split("[")[0] for fd in (0, 1, 2)]
    return portrait


@pytest.fixture
def test_cgroups():
    """A cgroup of this test's own on every hierarchy we are in: (paths, shell lines moving $$ there)."""
    from lxcsm.engine.linux import cgroups
    made = []
    for hierarchy in cgroups.hierarchies():
        directory = os.path.join(hierarchy.mountpoint, unique_name("srvcg"))
        os.mkdir(directory)
        made.append(directory)
        if "cpuset" in hierarchy.controllers:   # v1 takes no process into a cpuset without cpus and mems
            for key in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(hierarchy.mountpoint, key)) as parent, \
                        open(os.path.join(directory, key), "w") as child:
                    child.write(parent.read())
    try:
        yield made
    finally:
        # Every directory is tried, each for up to 10 s, before any is reported: one that stays
        # busy must not leave the others behind.
        busy = []
        for top in made:   # the container's own below it are gone unless the test failed
            for directory in [d for d, _subdirs, _files in os.walk(top, topdown=False)]:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        os.rmdir(directory)
                        break
                    except OSError:
                        if time.monotonic() >= deadline:
                            busy.append(directory)
                            break
                        time.sleep(0.05)
        assert not busy, f"{busy} stayed busy"


def test_the_monitor_is_the_callers_cgroups_namespaces_and_credentials(test_netns, test_cgroups, make_container,
                                                                     start_server, tmp_path):
    """A caller in a test-made netns, cgroups, uts and ipc namespaces, with its own groups, gid, umask, nice
    value, rlimit, CPU affinity, ignored and blocked signals and cwd: the warm monitor has all of it, as
    the cold one does."""
    from lxcsm.engine.linux import cgroups
    # Below the caller's cgroups, where they show; on a cgroup2-only host they cannot hold the
    # container's (the caller is in them: cgroup2's no-internal-processes rule), so there the
    # monitors are compared as they are placed by default.
    relative = not cgroups.unified_only(cgroups.hierarchies())
    c = make_container(extra=["lxc.cgroup.relative = 1"] if relative else [], netns=test_netns.name)
    moves = "; ".join(f"echo $$ > {d}/cgroup.procs" for d in test_cgroups)
    caller = (f"{moves}; umask 027; trap '' HUP USR2; ulimit -n 777; cd {tmp_path}; "
              f'exec "$@"')
    wrapper = ["nsenter", f"--net=/run/netns/{test_netns.name}", "unshare", "--uts", "--ipc", "--",
               "setpriv", "--groups", "4242,4243", "--regid", "4242", "--", "nice", "-n", "3",
               "taskset", "-c", "0", "sh", "-c", caller, "caller"]
    portraits = {}
    for mode in MODES:
        command = [*wrapper, *LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sleep", "600"]
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env_for(mode, start_server[0])) as client:
            try:
                deadline = time.monotonic() + 60
                while not c.run("info", "-s", "-H").stdout.strip() == "RUNNING":
                    assert client.poll() is None, client.stderr.read()
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                monitor = _monitor_of(c)
                portrait = _portrait(monitor)
                portrait["client's"] = {kind: os.readlink(f"/proc/{client.pid}/ns/{kind}") for kind in ("uts", "ipc")}
                portraits[mode] = portrait
                assert c.run("stop", "-k").returncode == 0
                assert client.wait(timeout=60) == 128 + signal.SIGKILL
            finally:
                if client.poll() is None:
                    client.kill()
        assert c.monitor_exited()
    cold, warm = portraits["off"], portraits["require"]
    # The caller's own uts/ipc namespaces are new for each run: compare each with its own caller's.
    for portrait in (cold, warm):
        for kind in ("uts", "ipc"):
            assert portrait["ns"][kind] == portrait["client's"][kind]
            del portrait["ns"][kind]
        del portrait["client's"]
    assert warm == cold
    assert os.stat(f"/run/netns/{test_netns.name}").st_ino == int(str(warm["ns"]["net"]).split("[")[1].rstrip("]"))
    if relative:
        assert all(any(d.split("/")[-1] in line for line in warm["cgroup"].decode().splitlines())
                   for d in test_cgroups)
    assert warm["Groups"].split() == ["4242", "4243"] and warm["Gid"].split()[0] == "4242"
    assert warm["Umask"] == "0027" and warm["nice"] == 3
    if relative:   # cgroup2-only: the move into lxc.monitor.NAME, whose cpuset has every CPU, resets it
        assert warm["Cpus_allowed_list"] == "0"
    assert int(warm["SigIgn"], 16) & (1 << (signal.SIGHUP - 1))
    assert b"Max open files            777" in warm["limits"]
    assert warm["cwd"] == str(tmp_path)


def test_a_caller_in_another_pid_namespace_or_under_seccomp_starts_cold(make_container, start_server):
    """The server cannot become these callers: it says why on its stderr, and they start cold even
    with LXCSM_START_SERVER=require (that only fails a start when no server answers or it broke)."""
    c = make_container()
    for wrapper in (["unshare", "--pid", "--fork", "--"], ["setpriv", "--no-new-privs", "--"]):
        command = [*wrapper, *LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sh", "-c",
                   "exit 5"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                                env=env_for("require", start_server[0]))
        assert result.returncode == 5, result.stderr


def test_a_caller_with_fewer_capabilities_or_another_time_namespace_starts_cold(make_container, start_server):
    """What the server cannot give a process it forks, the caller starts cold with: init's bounding
    set (one capability short) and clock offsets are the same as a cold start's."""
    c = make_container(extra=["lxc.mount.auto = proc"])
    show = "grep CapBnd /proc/self/status; cat /proc/self/timens_offsets"
    for wrapper in (("setpriv", "--bounding-set", "-sys_time", "--"),
                    ("unshare", "--time", "--monotonic", "1000", "--fork", "--")):
        result = same(run_both(c, start_server[0], "start", "-F", "--", "/bin/sh", "-c", show, wrapper=wrapper))
        assert result.returncode == 0, result.stderr
    assert "1000" in result.stdout   # the container is in the caller's time namespace


def test_no_server_falls_back_to_the_cold_path_with_the_same_output(make_container, tmp_path):
    c = make_container()
    env = {**os.environ, "LXCSM_START_SOCKET": str(tmp_path / "nobody.sock"), "LXCSM_START_SERVER": "auto"}
    result = c.run("start", "-F", "--", "/bin/sh", "-c", "echo cold; exit 4", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (4, "cold\n", "")
    required = c.run("start", "-F", "--", "/bin/true", env={**env, "LXCSM_START_SERVER": "require"})
    assert required.returncode == 1 and "nobody.sock" in required.stderr


def test_the_client_imports_no_engine(make_container, start_server):
    c = make_container()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lxcsm.engine.cli", "start", "-n", c.name,
                             "-P", c.lxcpath, "-F", "--", "/bin/true"], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL, env=env_for("require", start_server[0]))
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "lxcsm.engine.start.server_client" in imported
    engine = ("lxcsm.engine.start.monitor", "lxcsm.engine.config", "lxcsm.engine.log", "lxcsm.engine.cli.options",
              "lxcsm.states", "transitions", "structlog", "argparse", "json")
    heavy = {m for m in imported if m.startswith(engine)}
    assert heavy == set()


def test_the_lxcsm_command_imports_only_c_modules_before_the_server_answers(make_container, start_server):
    """The installed `lxcsm` (bin/lxcsm): past the interpreter's own startup (site), nothing but
    lxcsm's package files on the way and the client's C modules - no re, enum or collections,
    which pip's console-script wrapper would import first."""
    command = os.path.join(os.path.dirname(sys.executable), "lxcsm")
    if not os.path.exists(command):
        pytest.skip(f"no {command}: lxcsm is not installed next to this Python")
    c = make_container()
    result = subprocess.run([sys.executable, "-X", "importtime", command, "start", "-n", c.name, "-P", c.lxcpath,
                             "-F", "--", "/bin/true"], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL, env=env_for("require", start_server[0]))
    assert result.returncode == 0, result.stderr
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    after_site = imported[imported.index("site") + 1:]
    assert [m for m in after_site if not m.startswith("lxcsm")] == ["gc", "_socket", "_struct"]


def test_foreground_on_a_terminal_ctrl_c_and_sigterm_reach_init_as_cold(make_container, start_server):
    """-F on a pty (the client's controlling terminal): init's output reaches the terminal; Ctrl-C typed
    there, then SIGTERM to the client if it is still running (whichever the monitor forwards: with the
    terminal in raw mode Ctrl-C is a byte for the container's console), end init through its trap, and
    the client exits with init's status, as the cold start does."""
    c = make_container()
    init = "trap 'echo trapped; exit 7' INT TERM; echo ready; while :; do sleep 0.05; done"
    outcomes = {}
    for mode in MODES:
        master, slave = pty.openpty()

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        command = [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sh", "-c", init]
        with subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                              preexec_fn=controlling_terminal, env=env_for(mode, start_server[0])) as client:
            os.close(slave)
            seen = b""
            try:
                deadline = time.monotonic() + 60
                while b"ready" not in seen:
                    assert time.monotonic() < deadline, seen
                    seen += _read(master)
                os.write(master, b"\x03")
                try:
                    status = client.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    client.send_signal(signal.SIGTERM)
                    status = client.wait(timeout=60)
                while (more := _read(master, 0.2)):
                    seen += more
            finally:
                if client.poll() is None:
                    client.kill()
                os.close(master)
        outcomes[mode] = (status, b"trapped" in seen)
        assert c.monitor_exited()
    assert outcomes["require"] == outcomes["off"] == (7, True)


def _read(fd: int, timeout: float = 1.0) -> bytes:
    import select
    if not select.select([fd], [], [], timeout)[0]:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def test_a_container_outlives_a_killed_server_and_stops(make_container, start_server, tmp_path):
    """The server killed (SIGKILL) under a -d and a -F container: both keep running, lxc-info and
    stop work, and the -F client still exits with init's status."""
    path = str(tmp_path / "own.sock")
    server = subprocess.Popen([*LXCSM, "serve", "--socket", path], stdin=subprocess.DEVNULL)
    try:
        wait_for_server(path, server)
        daemon, foreground = make_container(), make_container()
        env = env_for("require", path)
        assert daemon.run("start", "-d", "--", "/bin/sleep", "600", env=env).returncode == 0
        command = [*LXCSM, "start", "-n", foreground.name, "-P", foreground.lxcpath, "-F", "--", "/bin/sleep", "600"]
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) as client:
            deadline = time.monotonic() + 60
            while foreground.run("info", "-s", "-H").stdout.strip() != "RUNNING":
                assert client.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            server.kill()
            server.wait()
            for c in (daemon, foreground):
                info = subprocess.run(["lxc-info", "-n", c.name, "-P", c.lxcpath, "-s", "-H"],
                                      capture_output=True, text=True)
                assert info.stdout.strip() == "RUNNING"
            assert foreground.run("stop", "-k").returncode == 0
            assert client.wait(timeout=60) == 128 + signal.SIGKILL
        assert daemon.run("stop", "-k").returncode == 0
        assert daemon.monitor_exited() and foreground.monitor_exited()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_beginning_a_grace_period_moves_nothing(make_container, start_server):
    """The server begins the RCU grace period of each request's first cgroup move by moving itself into
    the cgroup it is in (cgroups.begin_grace_period): it stays where it was on every hierarchy, and so
    does a process that does the same itself."""
    from lxcsm.engine.linux import cgroups
    path, server = start_server
    with open(f"/proc/{server.pid}/cgroup") as before:
        server_cgroups = before.read()
    with open("/proc/self/cgroup") as before:
        ours = before.read()
    own_procs = cgroups.own_procs_file()
    assert own_procs is not None
    with open(own_procs) as members:
        assert str(os.getpid()) in members.read().split()
    cgroups.begin_grace_period(own_procs)
    c = make_container()
    same(run_both(c, path, "start", "-F", "--", "/bin/true"))
    with open("/proc/self/cgroup") as after:
        assert after.read() == ours
    with open(f"/proc/{server.pid}/cgroup") as after:
        assert after.read() == server_cgroups


def _children(pid: int) -> dict[int, str]:
    """{pid: comm} of the live processes whose parent is `pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        state, parent = text[text.rindex(")") + 2:].split()[:2]
        if int(parent) == pid and state != "Z":
            found[int(entry)] = text[text.index("(") + 1: text.rindex(")")]
    return found


def _one_child(pid: int, comm: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        named = [child for child, name in _children(pid).items() if name == comm]
        if len(named) == 1:
            return named[0]
        assert time.monotonic() < deadline, f"{pid} has no single {comm!r} child: {_children(pid)}"
        time.sleep(0.05)


def _spare(server: int, timeout: float = 30) -> tuple[int, int]:
    """(waiter, worker) of the server's idle spare: a waiter still serving a request (wait_for_server's
    probe is one) has no "lxcsm worker" below it any more."""
    deadline = time.monotonic() + timeout
    while True:
        for waiter, name in _children(server).items():
            workers = [pid for pid, comm in _children(waiter).items() if comm == "lxcsm worker"]
            if name == "lxcsm waiter" and len(workers) == 1:
                return waiter, workers[0]
        assert time.monotonic() < deadline, f"server {server} has no idle spare: {_children(server)}"
        time.sleep(0.05)


def _ended(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_a_spare_is_ready_between_requests_replaced_if_killed_and_ended_with_the_server(make_container, tmp_path):
    """Between requests the server keeps a spare waiter, with its worker below it, and the process that
    begins grace periods.  A spare killed by hand is replaced: the next start is still served warm, with
    a cold start's output; its worker, never handed a request, ends.  Stopping the server ends the spare
    it has then and the grace-period process, and nothing else is left."""
    path = str(tmp_path / "own.sock")
    server = subprocess.Popen([*LXCSM, "serve", "--socket", path], stdin=subprocess.DEVNULL)
    try:
        wait_for_server(path, server)
        grace = _one_child(server.pid, "lxcsm grace")
        waiter, worker = _spare(server.pid)
        os.kill(waiter, signal.SIGKILL)
        assert _ended(worker), "the killed spare's worker did not end"
        c = make_container()
        same(run_both(c, path, "start", "-F", "--", "/bin/sh", "-c", "echo served; exit 3"))
        waiter, worker = _spare(server.pid)   # the next request's
        server.terminate()
        assert server.wait(timeout=30) == 0
        for pid in (grace, waiter, worker):
            assert _ended(pid), f"{pid} outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
