"""Fakes for the ways a state reaches the host other than the kernel module.

* `FakeChannel`: the sync channel (a MonitorEnd or a ChildEnd): records wake, wait,
  barrier, close and error frames, and answers each wait as the test scripted.
* hooks: `lxcsm.hooks.run`, `run_stop` and `run_post_stop` record the kind (or target)
  instead of running /bin/sh.
* netlink: a module standing in for `lxcsm.engine.linux.netlink`, so pyroute2 is never
  asked to touch the host's links.
* `CgroupFs`: cgroup hierarchies as plain directories under tmp_path.  The real
  cgroups module runs on them (mkdir, cgroup.procs and limit files are ordinary files
  there); its calls are recorded, and refused outside that directory.
* kernel files: `Setting.write_to` (lxc.proc.*, lxc.sysctl.*, lxc.cgroup.*) records
  the path and value, and writes for real only below tmp_path: a path of the host's
  (/proc/...) lands in tmp_path/host/... instead.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import lxcsm.engine.linux
from lxcsm import hooks
from lxcsm.engine.config import model
from lxcsm.engine.linux import cgroups
from lxcsm.engine.linux.cgroups import Hierarchy
from tests.unit.states.fake_kernel import Recorder


class RecordingLog:
    """A state's logger: every event, at every level, lands in one shared list."""

    LEVELS = ("trace", "debug", "info", "notice", "warn", "error", "crit", "alert", "fatal")

    def __init__(self, events: list | None = None, context: dict | None = None) -> None:
        self.events: list[tuple[str, str, dict]] = [] if events is None else events
        self.context = context or {}

    def bind(self, **context) -> RecordingLog:
        return RecordingLog(self.events, {**self.context, **context})

    def __getattr__(self, level: str):
        if level not in self.LEVELS:
            raise AttributeError(level)
        return lambda event, **fields: self.events.append((level, event, fields))

    def named(self, event: str) -> list[tuple[str, dict]]:
        """(level, fields) of each event called `event`."""
        return [(level, fields) for level, name, fields in self.events if name == event]


class FakeChannel:
    """A sync channel end.  Waits answer (b"", []) unless the test scripted otherwise, e.g.
    ``rec.on("channel.wait_for", (b"", [fd]), when=lambda msg: msg is SyncMsg.FDS)``."""

    def __init__(self, rec: Recorder, fileno: int = 100) -> None:
        self.rec = rec
        self.closed = False
        self._fileno = fileno
        self.sock = None             # spawn's: the real monitor end of the socketpair
        self.built_with: dict = {}   # spawn's: how sync.MonitorEnd was called

    def fileno(self) -> int:
        return self._fileno

    def wake(self, msg, payload: bytes = b"", fds=()) -> None:
        extra = {**({"payload": payload} if payload else {}), **({"fds": list(fds)} if fds else {})}
        self.rec.call("channel.wake", (msg,), extra)

    def wait_for(self, msg):
        return self.rec.call("channel.wait_for", (msg,), {}, default=lambda msg: (b"", []))

    def barrier(self, wake, wait_for, payload: bytes = b"", fds=()):
        self.wake(wake, payload, fds)
        return self.wait_for(wait_for)

    def wait_for_exec(self) -> None:
        self.rec.call("channel.wait_for_exec", (), {})

    def send_error(self, state: str, error: str) -> None:
        self.rec.call("channel.send_error", (state, error), {})

    def close(self) -> None:
        self.rec.call("channel.close", (), {})
        self.closed = True


def install_monitor_end(monkeypatch, rec: Recorder, made: list[FakeChannel]) -> None:
    """sync.MonitorEnd(sock, log, timeout, on_child_log=..., on_child_paused=...) builds a
    FakeChannel holding the real socket (which `made` keeps, for the test to close)."""
    from lxcsm.engine.protocol import sync

    def monitor_end(sock, log, timeout, on_child_log, on_child_paused=lambda state: None, serve=None) -> FakeChannel:
        rec.call("sync.MonitorEnd", (), {"timeout": timeout})
        channel = FakeChannel(rec)
        channel.sock = sock
        channel.built_with = {"timeout": timeout, "on_child_log": on_child_log, "on_child_paused": on_child_paused,
                              "serve": serve}
        made.append(channel)
        return channel

    monkeypatch.setattr(sync, "MonitorEnd", monitor_end)


def install_hooks(monkeypatch, rec: Recorder) -> None:
    """hooks.run(config, KIND, log, ARGS...) is recorded as ("hooks.run", KIND, *ARGS)."""
    def run(config, kind, log, args=(), must_succeed=True, serve=None, stdin=None):
        return rec.call("hooks.run", (kind, *args), {})

    monkeypatch.setattr(hooks, "run", run)
    monkeypatch.setattr(hooks, "run_stop", lambda ctx, target: rec.call("hooks.run_stop", (target,), {}))
    monkeypatch.setattr(hooks, "run_post_stop", lambda ctx, target: rec.call("hooks.run_post_stop", (target,), {}))


NETLINK_DEFAULTS = {
    "host_name": lambda: "vethFAKE00",
    "link_mtu": lambda name: None,
    "link_kind": lambda name: None,
    "random_hwaddr": lambda template: template.replace("x", "0"),
    "create_veth": None,
    "create_macvlan": None,
    "attach_host_end": None,
    "delete": None,
    "configure_in_container": lambda device, transient: device.name or "eth0",
}


def make_netlink(rec: Recorder) -> types.ModuleType:
    module = types.ModuleType("lxcsm.engine.linux.netlink", "a recording fake of engine/linux/netlink.py")
    module.DEFAULT_MTU = 1500
    module.transient_name = lambda position: f"lxcsm{position}"   # the real rule; not a host call
    for name, default in NETLINK_DEFAULTS.items():
        setattr(module, name, rec.fake(f"netlink.{name}", default))
    return module


def install_netlink(monkeypatch, rec: Recorder) -> types.ModuleType:
    """``from lxcsm.engine.linux import netlink`` (what the states do) finds the fake, whether
    or not the real module was imported before."""
    fake = make_netlink(rec)
    monkeypatch.setitem(sys.modules, "lxcsm.engine.linux.netlink", fake)
    monkeypatch.setattr(lxcsm.engine.linux, "netlink", fake, raising=False)
    return fake


class CgroupFs:
    """Hierarchies as directories: tmp/cgroup/{cpu,devices,cpuset,unified}, each with a home
    cgroup (the one the monitor "started in") below it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cpu = self._hierarchy("cpu", ("cpu", "cpuacct"), 1)
        self.devices = self._hierarchy("devices", ("devices",), 1)
        self.unified = self._hierarchy("unified", (), 2)
        self.hierarchies = [self.cpu, self.devices, self.unified]

    def _hierarchy(self, name: str, controllers: tuple[str, ...], version: int) -> Hierarchy:
        home = self.root / name / "user.slice"
        home.mkdir(parents=True)
        return Hierarchy(str(self.root / name), controllers, version, str(home))

    def cpuset(self, cpus: str = "0-3", mems: str = "0") -> Hierarchy:
        hierarchy = self._hierarchy("cpuset", ("cpuset",), 1)
        Path(hierarchy.home, "cpuset.cpus").write_text(cpus + "\n")
        Path(hierarchy.home, "cpuset.mems").write_text(mems + "\n")
        return hierarchy

    def guard(self, path: str) -> str:
        if not os.path.abspath(path).startswith(str(self.root) + os.sep):
            raise AssertionError(f"cgroup path {path} is outside the test's cgroupfs {self.root}")
        return path


def install_cgroups(monkeypatch, rec: Recorder, fs: CgroupFs) -> None:
    real_create, real_attach, real_remove = cgroups.create, cgroups.attach, cgroups.remove

    def create(hierarchy, base, name, exist_ok=False):
        fs.guard(base)
        return rec.call("cgroups.create", (hierarchy.label, name), {},
                        default=lambda _label, _name: real_create(hierarchy, base, name, exist_ok))

    def attach(path, pid):
        return rec.call("cgroups.attach", (path, pid), {}, default=lambda p, i: real_attach(fs.guard(p), i))

    def remove(path, patience=2.0):
        return rec.call("cgroups.remove", (path,), {}, default=lambda p: real_remove(fs.guard(p), patience))

    monkeypatch.setattr(cgroups, "hierarchies", rec.fake("cgroups.hierarchies", lambda: list(fs.hierarchies)))
    monkeypatch.setattr(cgroups, "create", create)
    monkeypatch.setattr(cgroups, "attach", attach)
    monkeypatch.setattr(cgroups, "remove", remove)


class KernelFiles:
    """Where Setting.write_to writes: paths below tmp_path as they are, any other below
    tmp_path/host (so /proc/sys/net/ipv4/ip_forward is tmp_path/host/proc/sys/...)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "host"

    def path(self, path: str) -> Path:
        if os.path.abspath(path).startswith(str(self.tmp) + os.sep):
            return Path(path)
        return self.root / path.lstrip("/")


def install_kernel_files(monkeypatch, rec: Recorder, files: KernelFiles) -> None:
    real_write_to = model.Setting.write_to

    def write_to(setting, path):
        def write(path, _value):
            where = files.path(path)
            where.parent.mkdir(parents=True, exist_ok=True)
            real_write_to(setting, str(where))
        rec.call("files.write", (path, setting.value), {}, default=write)

    monkeypatch.setattr(model.Setting, "write_to", write_to)
