"""The state-level unit tier: each state's enter(ctx), alone, without root.

As youki tests its init steps one by one, every state of both machines
(engine/start/machine.py) is run here on its own against recording fakes of
what it would do to the host (fake_kernel.py, fake_host.py), with real
StartRequest / MonitorContext / ChildContext / Boot objects built around a real
Config loaded from a few config lines.  A test checks the calls the state made,
what it recorded to undo, what it sent on the sync channel, and the trigger it
returned - which `run` checks against the state's table.

The fakes are installed for every test of the tier (the `host` fixture is
autouse): whatever a test forgets to script, no state here can mount, clone,
signal or write outside tmp_path, even when the tier runs as root in CI.

Each test names the state(s) it covers with ``@pytest.mark.state(SIDE, STATE)``;
test_tier.py fails when a state of either table has no test, and each test must
actually enter the states it names.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
from pathlib import Path

import pytest

from lxcsm.engine.config import loader
from lxcsm.engine.protocol.command_server import CommandServer
from lxcsm.engine.start.context import Boot, ChildContext, MonitorContext, StartRequest
from lxcsm.engine.start.machine import TABLES, Table
from lxcsm.engine.start.undo import UndoLog
from lxcsm.states.monitor import sync_idmapped_mounts
from tests.unit.states import fake_host
from tests.unit.states.fake_kernel import ModuleProxy, MountTable, Recorder, install_kernel

_CALL_PASSED = pytest.StashKey[bool]()


def pytest_configure(config):
    config.addinivalue_line("markers", "state(side, name): the machine state a state-tier test covers")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.stash[_CALL_PASSED] = outcome.get_result().passed


# --- the table -------------------------------------------------------------------------


def exits(table: Table, state: str) -> list[str]:
    """The triggers the table allows from `state`."""
    return [trigger for trigger, source, _dest in table.transitions
            if state == source or (isinstance(source, tuple) and state in source)]


class StateRunner:
    """run(SIDE, STATE, ctx): the state module's enter(ctx), its trigger checked against the table."""

    def __init__(self) -> None:
        self.entered: list[tuple[str, str]] = []

    def __call__(self, side: str, state: str, ctx) -> str | None:
        table = TABLES[side]
        self.entered.append((side, state))
        trigger = table.module(state).enter(ctx)
        if trigger is None:
            assert state in table.final, f"{side}:{state} returned no trigger but is not a final state"
        else:
            assert trigger in exits(table, state), \
                f"{side}:{state} returned {trigger!r}; its table allows {exits(table, state)}"
        return trigger

    def failing(self, side: str, state: str, ctx, expected):
        """enter(ctx) must raise `expected` - which the supervisor turns into `failed`, so the
        table must have that arrow out of the state.  Returns pytest's ExceptionInfo."""
        table = TABLES[side]
        assert "failed" in exits(table, state), f"{side}:{state} has no `failed` arrow: it must not raise"
        self.entered.append((side, state))
        with pytest.raises(expected) as info:
            table.module(state).enter(ctx)
        return info


@pytest.fixture
def run() -> StateRunner:
    return StateRunner()


@pytest.fixture(autouse=True)
def _tests_enter_the_states_they_name(request, run):
    yield
    if not request.node.stash.get(_CALL_PASSED, False) or getattr(request.module, "META", False):
        return   # failed or skipped (its own report says more), or one of test_tier's
    named = {tuple(mark.args) for mark in request.node.iter_markers("state")}
    assert named, "a state-tier test must name its state: @pytest.mark.state(SIDE, STATE)"
    missing = named - set(run.entered)
    assert not missing, f"marked for {sorted(missing)} but never entered them through run()"


@pytest.fixture(autouse=True)
def _no_hang():
    """A state that waits on a fake that never answers would block forever: fail loudly."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# --- the fake host ---------------------------------------------------------------------


class Host:
    """Every fake of one test, sharing one Recorder (`rec`)."""

    def __init__(self, monkeypatch, tmp_path: Path) -> None:
        self.monkeypatch = monkeypatch
        self.tmp = tmp_path
        self.rec = Recorder()
        self.cgroupfs = fake_host.CgroupFs(tmp_path / "cgroup")
        self.files = fake_host.KernelFiles(tmp_path)
        self.channels: list[fake_host.FakeChannel] = []   # made by spawn's sync.MonitorEnd
        self._fds: list[tuple[int, int, int]] = []        # (fd, st_dev, st_ino) to close afterwards
        self._sockets: list[socket.socket] = []
        self.command_client: socket.socket | None = None   # monitor_ctx's: the peer of its command server
        (tmp_path / "fs").mkdir()
        self.mounts = MountTable(tmp_path / "fs", tmp_path)
        install_kernel(monkeypatch, self.rec, self.mounts)
        fake_host.install_hooks(monkeypatch, self.rec)
        fake_host.install_cgroups(monkeypatch, self.rec, self.cgroupfs)
        fake_host.install_kernel_files(monkeypatch, self.rec, self.files)
        fake_host.install_monitor_end(monkeypatch, self.rec, self.channels)
        self.netlink = fake_host.install_netlink(monkeypatch, self.rec)

    def on(self, *args, **kwargs) -> None:
        self.rec.on(*args, **kwargs)

    def calls(self, prefix: str = "") -> list[tuple]:
        return self.rec.calls(prefix)

    def names(self, *prefixes: str) -> list[str]:
        return self.rec.names(*prefixes)

    def proxy(self, module, attr: str, **names) -> ModuleProxy:
        """Replace `module.attr` (a module the state imported: os, signal, socket) by a proxy
        whose `names` are recording fakes (answer: None, a callable, or fake_kernel.PASS)."""
        proxy = ModuleProxy(getattr(module, attr), self.rec, attr, names)
        self.monkeypatch.setattr(module, attr, proxy)
        return proxy

    def keep(self, fd: int) -> int:
        """Close `fd` after the test, unless the state closed it (and its number was reused)."""
        st = os.fstat(fd)
        self._fds.append((fd, st.st_dev, st.st_ino))
        return fd

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe2(os.O_CLOEXEC)
        return self.keep(read), self.keep(write)

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sockets.extend(pair)
        return pair

    def close_all(self) -> None:
        for channel in self.channels:
            if channel.sock is not None:
                channel.sock.close()
        for sock in self._sockets:
            sock.close()
        for fd, dev, ino in self._fds:
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.close(fd)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def identity(fd: int) -> tuple[int, int]:
    """What `fd` is open on, to tell later whether that fd is still open (`still_open`) even if
    its number was reused meanwhile."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def still_open(fd: int, what: tuple[int, int]) -> bool:
    try:
        return identity(fd) == what
    except OSError:
        return False


@pytest.fixture(autouse=True)
def host(monkeypatch, tmp_path) -> Host:
    fake = Host(monkeypatch, tmp_path)
    yield fake
    fake.close_all()


@pytest.fixture(autouse=True)
def _lxc_environment(monkeypatch):
    """init_handler, spawn and the stop hooks export LXC_NAME and the like into os.environ:
    put them back afterwards."""
    for name in ("LXC_NAME", "LXC_CONFIG_FILE", "LXC_ROOTFS_PATH", "LXC_ROOTFS_MOUNT", "LXC_CONSOLE",
                 "LXC_CONSOLE_LOGPATH", "LXC_CGNS_AWARE", "LXC_LOG_LEVEL", "LXC_HOOK_VERSION", "LXC_PID",
                 "LXC_TARGET", "container_ttys",
                 *(f"LXC_{kind.upper()}_NS" for kind in ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup", "time"))):
        monkeypatch.setenv(name, "")   # remembered as it was (perhaps unset), restored afterwards
        monkeypatch.delenv(name)


# --- contexts --------------------------------------------------------------------------


@pytest.fixture
def make_request(tmp_path):
    """make_request(*CONFIG_LINES, name="c1", **StartRequest fields) -> StartRequest.

    The config is LXCPATH/NAME/config with ``lxc.rootfs.path = dir:LXCPATH/NAME/rootfs``
    (a real, empty directory) on line 1, then CONFIG_LINES from line 2 on."""
    def make(*lines: str, name: str = "c1", **fields) -> StartRequest:
        lxcpath = tmp_path / "lxc"
        rootfs = lxcpath / name / "rootfs"
        rootfs.mkdir(parents=True, exist_ok=True)
        path = lxcpath / name / "config"
        path.write_text("".join(f"{line}\n" for line in (f"lxc.rootfs.path = dir:{rootfs}", *lines)))
        config = loader.load(str(path), name)
        fields.setdefault("command", config.init_cmd)
        fields.setdefault("foreground", False)
        fields.setdefault("sync_timeout", 1.5)
        return StartRequest(name=name, lxcpath=str(lxcpath), config=config, **fields)
    return make


@pytest.fixture
def monitor_ctx(host):
    """monitor_ctx(request, fresh=False) -> MonitorContext.

    By default, as the states after init_handler find it: the tmp cgroupfs's hierarchies,
    a real CommandServer on one end of a socketpair (host.command_client is the other),
    boot 1 with an UndoLog of its own.
    fresh=True: as init_handler finds it on the first boot (nothing of that yet)."""
    made: list[MonitorContext] = []

    def make(request: StartRequest, fresh: bool = False) -> MonitorContext:
        ctx = MonitorContext(request=request, log=fake_host.RecordingLog(), undo=UndoLog())
        if not fresh:
            ctx.hierarchies = list(host.cgroupfs.hierarchies)
            server_end, host.command_client = host.socketpair()
            ctx.command_server = CommandServer(server_end, request.name, request.config)
            ctx.boot = Boot(number=1, undo=UndoLog(ctx.undo.journal))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:   # a command server the test did not close (stopped closes it)
        if ctx.command_server is not None and ctx.command_server.sock.fileno() != -1:
            ctx.command_server.close()


@pytest.fixture
def child_ctx(host):
    """child_ctx(request) -> ChildContext on a FakeChannel, its rootfs already set (as
    setup_rootfs leaves it) to the config's rootfs directory."""
    def make(request: StartRequest) -> ChildContext:
        ctx = ChildContext(request=request, channel=fake_host.FakeChannel(host.rec), log=fake_host.RecordingLog(),
                           signal_mask=frozenset({signal.SIGUSR2}))
        ctx.rootfs = request.config.rootfs_path
        return ctx
    return make


@pytest.fixture
def after_post_configure(host, make_request, monitor_ctx, tmp_path):
    """after_post_configure(*CONFIG_LINES) -> a MonitorContext whose child (pid 4242) has its
    channel, as sync_post_configure leaves it; any user namespace file sync_idmapped_mounts
    opens (/proc/4242/ns/user, or one an entry names) is a file of the test's."""
    userns = tmp_path / "userns"
    userns.write_text("")
    host.proxy(sync_idmapped_mounts, "os", open=lambda path, flags, *mode: os.open(userns, os.O_RDONLY | os.O_CLOEXEC))

    def make(*lines: str) -> MonitorContext:
        ctx = monitor_ctx(make_request(*lines))
        ctx.boot.init_pid = 4242
        ctx.boot.channel = fake_host.FakeChannel(host.rec)
        return ctx
    return make
