"""The command socket's cgroup commands: what lxc-attach, lxc-info, lxc-top, lxc-ls,
lxc-cgroup and lxc-freeze ask the monitor for (the server is command_server.py).

GET_CGROUP_CTX gives lxc-attach a directory fd per hierarchy, which it moves its
process into; GET_CGROUP_FD and GET_LIMIT_CGROUP_FD give the statistics readers and
lxc-cgroup the directory they read and write themselves; GET_CGROUP and
GET_LIMIT_CGROUP are their path fallbacks (and lxc-freeze's freezer on v1);
GET_CGROUP2_FD / GET_LIMIT_CGROUP2_FD are a cgroup2-only host's; FREEZE and
UNFREEZE (no 5.0.2 tool sends them) freeze a cgroup2-only host's container from
the monitor.  The "limit" commands get the cgroup the limits are written to, the
plain ones the cgroup the processes are in: the same, unless the config puts them
one level further down (lxc.cgroup.dir.container.inner), where the container
cannot lift its own limits.  Freezing and thawing act on the limit cgroup, and so
on all of it.

A mixin of CommandServer: it answers through the server's _reply and keeps
FREEZE's waiting clients on the server's selector.
"""

from __future__ import annotations

import errno
import os
import selectors
import time

from lxcsm.engine.protocol.command_socket import (
    CGROUP2_SUPER_MAGIC,
    CGROUP_CTX,
    CGROUP_CTX_MAX_FD,
    CGROUP_FD,
    CGROUP_SUPER_MAGIC,
    CgroupLayout,
)

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from typing import Any

    from lxcsm.engine.linux.cgroups import Hierarchy

FREEZE_CHECK = 0.01         # seconds between looks at cgroup.events while a FREEZE waits


class CgroupCommands:
    # What the server provides (command_server.CommandServer).
    config: Any
    log: Any
    cgroups: list[tuple[Hierarchy, str]]
    freezing: dict[Any, tuple[str, bool, float | None]]
    selector: selectors.DefaultSelector

    def _reply(self, conn, ret: int, value: int = 0, payload: bytes = b"", fds=(), keep=False,
               states=None) -> None:
        raise NotImplementedError

    def _drop(self, conn) -> None:
        raise NotImplementedError

    # The container's cgroups.  The "limit" commands get the cgroup its limits are written to,
    # the plain ones the cgroup its processes are in: the same, unless the config puts them
    # one level further down (lxc.cgroup.dir.container.inner), where the container cannot
    # lift its own limits.  Freezing and thawing act on the limit cgroup, and so on all of it.

    def _limit(self, path: str) -> str:
        """The limit cgroup of one of the container's cgroups."""
        try:
            inner = self.config.get_item("lxc.cgroup.dir.container.inner")
        except KeyError:
            inner = None
        return os.path.dirname(path) if inner else path

    def _unified(self) -> str | None:
        """The container's cgroup on a cgroup2-only host, None on any other."""
        if self._layout() != CgroupLayout.UNIFIED:
            return None
        return self.cgroups[0][1]

    def _freeze(self, conn, frozen: bool, timeout_ms: int) -> None:
        """FREEZE/UNFREEZE: write cgroup.freeze; answer once cgroup.events agrees, or at the timeout."""
        unified = self._unified()
        if unified is None:
            self._reply(conn, -errno.ENOENT)   # as LXC: only on a cgroup2-only host
            return
        path = self._limit(unified)
        try:
            _write(path, "cgroup.freeze", "1" if frozen else "0")
        except OSError:
            self._reply(conn, -1)
            return
        if timeout_ms == 0 or _frozen(path) == frozen:
            self._reply(conn, 0)
            return
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
        self.freezing[conn] = (path, frozen, deadline)
        self.selector.register(conn, selectors.EVENT_READ, self._drop)   # EOF: the client left

    def _answer_frozen(self, now: float) -> None:
        """Answer the FREEZE/UNFREEZE requests whose cgroup is done, or whose time is up."""
        for conn, (path, frozen, deadline) in list(self.freezing.items()):
            if _frozen(path) == frozen or (deadline is not None and deadline <= now):
                del self.freezing[conn]
                self.selector.unregister(conn)
                self._reply(conn, 0)

    def _next_freeze_check(self) -> float:
        return time.monotonic() + FREEZE_CHECK

    def _thaw(self) -> None:
        """Let a frozen container run (STOP's signal must reach it): cgroup.freeze on a
        cgroup2-only host, else the v1 freezer."""
        unified = self._unified()
        found = (self._limit(unified), "cgroup.freeze", "0") if unified else None
        if found is None:
            freezer = self._cgroup_of("freezer")
            found = (self._limit(freezer[1]), "freezer.state", "THAWED") if freezer is not None else None
        if found is None:
            return
        try:
            _write(*found)
        except OSError as err:
            if self.log is not None:
                self.log.warn("cannot thaw the container", path=found[0], reason=err.strerror)

    def _layout(self) -> CgroupLayout:
        versions = {hierarchy.version for hierarchy, _path in self.cgroups}
        if versions == {2}:
            return CgroupLayout.UNIFIED
        return CgroupLayout.HYBRID if 2 in versions else CgroupLayout.LEGACY

    def _cgroup_of(self, controller: str) -> tuple[Hierarchy, str] | None:
        """The hierarchy with `controller`, and the container's directory in it.  On a
        cgroup2-only host the one hierarchy has them all (one the container was not given
        just has no files there: the client finds nothing to read)."""
        if self._layout() == CgroupLayout.UNIFIED:
            return self.cgroups[0]
        return next(((h, path) for h, path in self.cgroups if controller in h.controllers), None)

    def _reply_with_dirs(self, conn, paths: list[str], describe) -> None:
        """Answer with an O_PATH fd for each directory; describe(fds) builds the payload."""
        fds: list[int] = []
        try:
            for path in paths:
                fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as err:   # gone: the container is stopping
            self._reply(conn, -(err.errno or errno.EIO))
        else:
            self._reply(conn, 0, payload=describe(fds), fds=fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _cgroup_ctx(self, conn, payload: bytes) -> None:
        """GET_CGROUP_CTX: a directory fd per hierarchy, for lxc-attach to write its pid into."""
        if not payload:
            self._reply(conn, -errno.EINVAL)
        elif not self.cgroups:
            self._reply(conn, -errno.ENOENT)   # the client reads it as "no writable cgroups"
        elif len(self.cgroups) > CGROUP_CTX_MAX_FD:
            self._reply(conn, -errno.E2BIG)
        else:
            def describe(fds: list[int]) -> bytes:
                padded = fds + [-1] * (CGROUP_CTX_MAX_FD - len(fds))
                return CGROUP_CTX.pack(self._layout(), 0, len(fds), *padded)[:len(payload)]
            self._reply_with_dirs(conn, [path for _h, path in self.cgroups], describe)

    def _cgroup_fd(self, conn, payload: bytes, limit: bool) -> None:
        """GET_(LIMIT_)CGROUP_FD: the directory of the hierarchy with the controller asked for."""
        request = payload[:CGROUP_FD.size].ljust(CGROUP_FD.size, b"\0")   # a shorter struct: zeros
        _layout, _utilities, fstype, _fd, controller = CGROUP_FD.unpack(request)
        controller = controller.split(b"\0", 1)[0]
        if not controller:
            self._reply(conn, -errno.EINVAL)
            return
        found = self._cgroup_of(controller.decode(errors="replace"))
        if found is None:
            self._reply(conn, -errno.ENOENT)
            return
        hierarchy, path = found
        magic = CGROUP2_SUPER_MAGIC if hierarchy.version == 2 else CGROUP_SUPER_MAGIC
        if fstype not in (0, magic):
            self._reply(conn, -errno.EINVAL)   # the client wants the controller in the other version
            return
        self._reply_with_dirs(conn, [self._limit(path) if limit else path], lambda fds: CGROUP_FD.pack(
            self._layout(), 0, magic, fds[0], controller)[:len(payload)])

    def _cgroup_path(self, conn, payload: bytes, limit: bool) -> None:
        """GET_(LIMIT_)CGROUP: the controller's cgroup as a path below its hierarchy's mount."""
        if payload and (not payload.endswith(b"\0") or b"\0" in payload[:-1]):
            self._reply(conn, -errno.EINVAL)
            return
        found = self._cgroup_of(payload[:-1].decode(errors="replace")) if payload else None
        if found is None:   # as LXC on this layout: no answer at all; the client takes it as "none"
            self._drop(conn)
            return
        hierarchy, path = found
        relative = "/" + os.path.relpath(self._limit(path) if limit else path, hierarchy.mountpoint)
        self._reply(conn, 0, payload=relative.encode() + b"\0")

def _write(directory: str, name: str, value: str) -> None:
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _frozen(directory: str) -> bool | None:
    """What cgroup.events says ("frozen 1": every process in it is frozen); None if unreadable."""
    try:
        with open(os.path.join(directory, "cgroup.events")) as events:
            for line in events:
                key, _, value = line.partition(" ")
                if key == "frozen":
                    return value.strip() == "1"
    except OSError:
        pass
    return None
