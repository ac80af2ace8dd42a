"""The bench's containers and the two tools that start and stop them, the same way for both.

Both tools start the same busybox-static rootfs (fixtures/rootfs.py) with the
same config, each in its own LXCPATH under the bench's temporary directory,
with container names starting ``lxcsm-bench-``.  Commands run with the same
environment (`bench_env`), their output going to files.  A failed command is
recorded (`Bench.fail`) and whatever it left running is stopped at once;
`Bench.cleanup` stops everything else, removes the cgroups named after the
containers, and row 2's network namespace.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fixtures import rootfs

from . import REPO, progress
from .host import apparmor_enabled, cgroup_dirs, find_monitors, remove_cgroup
from .timing import Runner, wait_exited

NAME_PREFIX = "lxcsm-bench-"
TOOL_LETTERS = {"lxc": "x", "lxcsm": "s", "warm": "w", "base": "b"}   # in container names, one per tool


def bench_env(environ, pycache: Path) -> dict[str, str]:
    """The environment of every command run: lxcsm with its bytecode cached, as installed.

    Python writes and reads its .pyc files under `pycache` (in the bench's temporary
    directory, so nothing is written into the checkout), filled by the warm-up; a
    PYTHONDONTWRITEBYTECODE inherited from the caller (some CI and sandbox images set it)
    would otherwise make every lxcsm command compile its modules anew.
    """
    env = {k: v for k, v in environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


@dataclass
class Tool:
    key: str                # "lxc", "lxcsm" (cold) or "warm" (lxcsm through the bench's start server)
    start_cmd: list[str]
    stop_cmd: list[str]
    lxcpath: str
    outdir: Path
    names: set[str] = field(default_factory=set)     # every container it may have started
    env: dict[str, str] | None = None   # its commands' environment, if not the bench's own
    veth_env: dict[str, str] | None = None   # row 2's, if not `env` (the warm tool: the --netlink server)

    @property
    def word(self) -> str:
        """The word in its monitors' titles: [lxc monitor] or [lxcsm monitor]."""
        return "lxc" if self.key == "lxc" else "lxcsm"

    def argv(self, action: str, name: str, *args: str) -> list[str]:
        base = self.start_cmd if action == "start" else self.stop_cmd
        return [*base, "-n", name, "-P", self.lxcpath, *args]

    def monitors(self, names) -> dict[str, list[int]]:
        return find_monitors(self.word, self.lxcpath, names)


class Bench:
    """One run of the bench: its temporary directory, the tools it compares, every container it
    made for them, and the failures it met.  Whatever it started, cleanup() ends."""

    def __init__(self, args, tmp: Path, lxcsm_cmd: list[str], python: str, lxc_available: bool):
        self.args = args
        self.python = python
        self.tmp = tmp
        self.env = bench_env(os.environ, tmp / "pycache")
        self.runner = Runner(self.env)
        # lxc-start's monitors leave an lxc.pivot cgroup behind for later monitors; the bench
        # removes the ones that were not there before it (rmdir only: never one in use).
        self.pivots_before = set(glob.glob("/sys/fs/cgroup/*/lxc.pivot"))
        self.tag = uuid.uuid4().hex[:6]
        self.netns: str | None = None    # row 2's network namespace, once made
        self.failures: list[dict] = []
        self.extra_config = []
        if apparmor_enabled():
            # LXC 5 would generate and load a profile; lxcsm has no AppArmor: keep it equal.
            self.extra_config.append("lxc.apparmor.profile = unconfined")
        # A cold lxcsm never asks a start server, not even one the host runs.
        cold_env = dict(self.env, LXCSM_START_SERVER="off")
        self.server_socket = str(tmp / "start.sock")
        self.netlink_server_socket = str(tmp / "start-netlink.sock")
        warm_env = dict(self.env, LXCSM_START_SOCKET=self.server_socket, LXCSM_START_SERVER="require")
        warm_veth_env = dict(warm_env, LXCSM_START_SOCKET=self.netlink_server_socket)
        # --baseline: lxcsm's packages as of that commit, found first on sys.path (lxcsm is a
        # namespace package: its engine, states and hooks come from the first portion that has them).
        base_env = dict(cold_env, PYTHONPATH=os.pathsep.join(
            [str(tmp / "baseline"), *filter(None, [self.env.get("PYTHONPATH")])]))
        self.tools: list[Tool] = []
        for key, start, stop, env in (("lxc", ["lxc-start"], ["lxc-stop"], None),
                                      ("base", [*lxcsm_cmd, "start"], [*lxcsm_cmd, "stop"], base_env),
                                      ("lxcsm", [*lxcsm_cmd, "start"], [*lxcsm_cmd, "stop"], cold_env),
                                      ("warm", [*lxcsm_cmd, "start"], [*lxcsm_cmd, "stop"], warm_env)):
            if ((key == "lxc" and not lxc_available) or (key == "warm" and not args.server)
                    or (key == "base" and not args.baseline)):
                continue
            lxcpath = tmp / key
            outdir = tmp / "out" / key
            lxcpath.mkdir(parents=True)
            outdir.mkdir(parents=True)
            self.tools.append(Tool(key, start, stop, str(lxcpath), outdir, env=env,
                                   veth_env=warm_veth_env if key == "warm" else None))
        self.lxcsm = next(tool for tool in self.tools if tool.key == "lxcsm")
        self.lxcsm_cmd = lxcsm_cmd
        self.servers: list[subprocess.Popen] = []

    def extract_baseline(self) -> None:
        """--baseline REV: lxcsm's engine, states and hooks as of REV (git archive), under
        TMP/baseline/lxcsm, for the "base" tool's PYTHONPATH."""
        target = self.tmp / "baseline" / "lxcsm"
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", self.args.baseline, "engine", "states", "hooks"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)

    def start_server(self) -> None:
        """--server: two `lxcsm serve` of the bench's own, which every start of the "warm" tool must
        go through (LXCSM_START_SERVER=require): row 2's with pyroute2 preloaded (--netlink), the
        other rows' without it, as `lxcsm serve` runs where no container has a veth."""
        for path, extra in ((self.server_socket, []), (self.netlink_server_socket, ["--netlink"])):
            server = subprocess.Popen([*self.lxcsm_cmd, "serve", *extra, "--socket", path],
                                      env=self.env, stdin=subprocess.DEVNULL)
            self.servers.append(server)
            deadline = time.monotonic() + 60
            while not os.path.exists(path):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("lxcsm serve did not start")
                time.sleep(0.05)

    # -- containers

    def warm_up(self) -> None:
        """One untimed start -F, start -d and stop -k per tool: caches filled, pyc files written."""
        progress("warm-up: one start -F, start -d, stop -k per tool (untimed)")
        for tool in self.tools:
            name = self.make(tool, "c")
            result = self.runner.run(tool.argv("start", name, "-F", "--", "/bin/true"), self.out(tool), env=tool.env)
            if not result.ok:
                self.fail("warm-up", tool, 0, result.detail)
                self.ensure_stopped(tool, [name])
            started = self.start_stop(tool, name, "warm-up", 0)
            if started:
                self.stop_timed(tool, name, started[1], "warm-up", 0)

    def name(self, tool: Tool, suffix: str) -> str:
        """A name no other tool's container has: cgroups (lxc.payload.NAME) are named after it."""
        return f"{NAME_PREFIX}{self.tag}-{TOOL_LETTERS[tool.key]}{suffix}"

    def make(self, tool: Tool, suffix: str, extra: list[str] | None = None) -> str:
        """A new container for `tool`: a busybox rootfs and a config, the same for both tools."""
        name = self.name(tool, suffix)
        tool.names.add(name)
        fs = rootfs.make_busybox_rootfs(Path(tool.lxcpath) / name / "rootfs")
        rootfs.write_config(Path(tool.lxcpath), name, fs, self.extra_config + (extra or []))
        return name

    def out(self, tool: Tool, slot: str = "run") -> Path:
        return tool.outdir / f"{slot}.txt"

    def fail(self, row: str, tool: Tool, run: int, detail: str) -> None:
        self.failures.append({"row": row, "tool": tool.key, "run": run, "detail": detail})
        progress(f"row {row}: {tool.key} run {run} failed: {detail}")

    def ensure_stopped(self, tool: Tool, names) -> list[str]:
        """Stop whatever runs of `names` (stop -k, then SIGKILL to the monitor); what is left."""
        names = list(names)
        running = tool.monitors(names)
        procs = [(n, self.runner.spawn(tool.argv("stop", n, "-k"), self.out(tool, f"cleanup-{i}"), tool.env))
                 for i, n in enumerate(running)]
        for _, proc in procs:
            try:
                proc.wait(timeout=20)
                self.runner.live.discard(proc)
            except subprocess.TimeoutExpired:
                self.runner.kill(proc)
        pids = [p for ps in running.values() for p in ps]
        if pids and not wait_exited(pids, 10):
            for ps in tool.monitors(names).values():
                for pid in ps:
                    try:
                        os.kill(pid, signal.SIGKILL)   # init follows (PR_SET_PDEATHSIG)
                    except ProcessLookupError:
                        pass
            wait_exited(pids, 5)
        left = [f"monitor pid {p} of {n}" for n, ps in tool.monitors(names).items() for p in ps]
        for path in cgroup_dirs(names):
            if not remove_cgroup(path):
                left.append(f"cgroup {path}")
        return left

    # -- a start and a stop, timed

    def start_stop(self, tool: Tool, name: str, rowkey: str, run: int, *command: str):
        """start -d [-- COMMAND] timed; returns (start seconds, monitor pid) or None."""
        args = ["-d", "--", *command] if command else ["-d"]
        result = self.runner.run(tool.argv("start", name, *args), self.out(tool), env=tool.env)
        if not result.ok:
            self.fail(rowkey, tool, run, result.detail)
            self.ensure_stopped(tool, [name])
            return None
        pids = tool.monitors([name]).get(name, [])
        if len(pids) != 1:
            self.fail(rowkey, tool, run, f"start -d returned 0 but {len(pids)} monitor processes "
                                         f"are titled [{tool.word} monitor] {tool.lxcpath} {name}")
            self.ensure_stopped(tool, [name])
            return None
        return result.seconds, pids[0]

    def stop_timed(self, tool: Tool, name: str, pid: int, rowkey: str, run: int) -> float | None:
        """stop -k until it returned and the monitor exited."""
        began = time.perf_counter()
        result = self.runner.run(tool.argv("stop", name, "-k"), self.out(tool, "stop"), env=tool.env)
        exited = result.ok and wait_exited([pid], 30)
        seconds = time.perf_counter() - began
        if not result.ok or not exited:
            self.fail(rowkey, tool, run, result.detail if not result.ok
                      else "stop -k returned 0 but the monitor did not exit within 30 s")
            self.ensure_stopped(tool, [name])
            return None
        return seconds

    # -- row 2's network

    def network_wrapper(self) -> tuple[str, ...]:
        """Row 2's network: a namespace with a bridge br0, and the command that runs a tool in it.

        The bridge, the veths and both tools' monitors live in a network namespace made for
        the bench: the host's own sees none of it.  LXC looks its bridge up in /sys/class/net,
        so each command also gets a mount namespace of its own with a sysfs of that network
        namespace on /sys and the host's cgroup hierarchies bound back under it (what
        `ip netns exec` does, less hiding the cgroups).  The same wrapper for both tools.
        """
        self.netns = f"{NAME_PREFIX}{self.tag}"
        for argv in (["ip", "netns", "add", self.netns],
                     ["ip", "-n", self.netns, "link", "add", "br0", "type", "bridge"],
                     ["ip", "-n", self.netns, "link", "set", "br0", "up"]):
            subprocess.run(argv, check=True, capture_output=True)
        cgroups = self.tmp / "cgroup"
        cgroups.mkdir()
        return ("nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--propagation", "private",
                "sh", "-c", f"mount --rbind /sys/fs/cgroup {cgroups} && mount -t sysfs sysfs /sys && "
                            f"mount --rbind {cgroups} /sys/fs/cgroup && exec \"$@\"", "sh")

    def cleanup(self) -> list[str]:
        """Stop every container started, remove their cgroups and row 2's namespace; what is left."""
        self.runner.reap()
        left = []
        for server in self.servers:
            server.terminate()
            server.wait(timeout=30)
        for tool in self.tools:
            left += self.ensure_stopped(tool, tool.names)
        for pivot in set(glob.glob("/sys/fs/cgroup/*/lxc.pivot")) - self.pivots_before:
            try:
                os.rmdir(pivot)
            except OSError:
                pass
        if self.netns is not None:   # its veths and bridge go with it
            if subprocess.run(["ip", "netns", "del", self.netns], capture_output=True).returncode:
                left.append(f"network namespace {self.netns}")
        return left
