"""A recording fake of lxcsm.engine.linux.kernel, and the recorder every fake of this tier shares.

The states do ``from lxcsm.engine.linux import kernel`` and call ``kernel.mount(...)``
at run time, so replacing the functions *on the module object* reaches every state
(and everything else that calls them) for the length of one test.  Every function
the module defines is replaced - not only those a test expects - so no state under
test can reach the real kernel, even when the tier runs as root.  The constants
(MS_*, CLONE_*, CAPABILITIES...) stay the real ones.

All fakes of the tier (kernel, os-level calls, sync channel, hooks, netlink, cgroupfs,
kernel files) record into one `Recorder`, in call order, as ``module.function`` and
the arguments: a test can check the kernel calls alone (``rec.calls("kernel")``) or
the order across them (``rec.names()``).  What a fake returns is its default unless
the test said otherwise with ``rec.on(...)``: a value, an exception to raise, or an
effect to run.

The mount calls - mount(2) and, where the module has them, openat2 and the new mount
API - answer from a `MountTable`, a model of what would be mounted where: the fds it
hands out are real (a new filesystem is a directory under tmp_path), so states that
work through descriptors run as they would, and tests can compare the resulting
mounts whichever API a state used.
"""

from __future__ import annotations

import inspect
import os
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxcsm.engine.linux import kernel as kernel_module


class Call(namedtuple("Call", ("name", "args", "kwargs"))):
    """One recorded call: "kernel.mount", its positional arguments, its keyword arguments."""

    __slots__ = ()

    def short(self, prefix: str) -> tuple:
        """(function, *args[, kwargs]) with the `prefix.` cut off: what tests compare."""
        name = self.name.removeprefix(prefix + ".") if prefix else self.name
        return (name, *self.args, *((self.kwargs,) if self.kwargs else ()))


_Response = namedtuple("_Response", ("when", "result", "raises", "effect", "once"))


class Recorder:
    def __init__(self) -> None:
        self.log: list[Call] = []
        self._responses: dict[str, list[_Response]] = {}

    # --- what a test says ------------------------------------------------------------

    def on(self, name: str, result: Any = None, *, raises: BaseException | None = None,
           effect: Callable[..., Any] | None = None, when: Callable[..., bool] | None = None,
           once: bool = False) -> None:
        """How the fake `name` answers from now on (when `when(*args, **kwargs)` holds): raise
        `raises`, else return `effect(*args, **kwargs)`, else return `result`.  The newest
        matching answer wins; a `once` answer is used up by its first call."""
        self._responses.setdefault(name, []).insert(0, _Response(when, result, raises, effect, once))

    # --- what the fakes do -------------------------------------------------------------

    def call(self, name: str, args: tuple, kwargs: dict, default: Callable[..., Any] | None = None) -> Any:
        self.log.append(Call(name, tuple(args), dict(kwargs)))
        for response in self._responses.get(name, ()):
            if response.when is None or response.when(*args, **kwargs):
                if response.once:
                    self._responses[name].remove(response)
                if response.raises is not None:
                    raise response.raises
                if response.effect is not None:
                    return response.effect(*args, **kwargs)
                return response.result
        return default(*args, **kwargs) if default is not None else None

    def fake(self, name: str, default: Callable[..., Any] | None = None) -> Callable[..., Any]:
        """A function that records itself as `name` and answers as told (else `default`)."""
        def fake(*args, **kwargs):
            return self.call(name, args, kwargs, default)
        fake.__name__ = fake.__qualname__ = name
        return fake

    # --- what a test checks ------------------------------------------------------------

    def calls(self, prefix: str = "") -> list[tuple]:
        """The calls under `prefix` ("kernel", "channel", "os"...), as (function, *args)."""
        return [call.short(prefix) for call in self.log
                if not prefix or call.name.startswith(prefix + ".")]

    def names(self, *prefixes: str) -> list[str]:
        """The full names of the calls, in order (only those under `prefixes`, if given)."""
        return [call.name for call in self.log
                if not prefixes or any(call.name.startswith(p + ".") for p in prefixes)]

    def clear(self) -> None:
        self.log.clear()


def _unexpected_clone3(flags: int, cgroup_fd: int | None = None) -> tuple[int, int]:
    raise AssertionError("kernel.clone3 called without a scripted answer: a fake would fork for real")


# What the fake kernel answers when a test did not say otherwise.
DEFAULTS: dict[str, Callable[..., Any]] = {
    "clone3": _unexpected_clone3,
    "last_capability": lambda: 40,   # CAP_CHECKPOINT_RESTORE, a 5.9+ kernel's
}


# --- a model of the mount table ---------------------------------------------------------


_FLAG_WORDS = {
    kernel_module.MS_RDONLY: "ro", kernel_module.MS_NOSUID: "nosuid", kernel_module.MS_NODEV: "nodev",
    kernel_module.MS_NOEXEC: "noexec", kernel_module.MS_SYNCHRONOUS: "sync", kernel_module.MS_DIRSYNC: "dirsync",
    kernel_module.MS_MANDLOCK: "mand", kernel_module.MS_NOATIME: "noatime",
    kernel_module.MS_NODIRATIME: "nodiratime", kernel_module.MS_RELATIME: "relatime",
    kernel_module.MS_STRICTATIME: "strictatime", kernel_module.MS_LAZYTIME: "lazytime",
}
# fsmount(2)'s per-mount attributes (MOUNT_ATTR_*), where this kernel module has them.
_ATTR_WORDS = {getattr(kernel_module, f"MOUNT_ATTR_{name}"): word for name, word in (
    ("RDONLY", "ro"), ("NOSUID", "nosuid"), ("NODEV", "nodev"), ("NOEXEC", "noexec"), ("NOATIME", "noatime"),
    ("STRICTATIME", "strictatime"), ("NODIRATIME", "nodiratime")) if hasattr(kernel_module, f"MOUNT_ATTR_{name}")}
_PROPAGATION = {kernel_module.MS_SLAVE: "slave", kernel_module.MS_SHARED: "shared",
                kernel_module.MS_PRIVATE: "private", kernel_module.MS_UNBINDABLE: "unbindable"}
_SUPERBLOCK_WORDS = {"ro", "sync", "dirsync", "lazytime", "mand"}   # fsconfig flags that are not data
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING = 0, 1
_REAL_OPENAT2 = getattr(kernel_module, "openat2", None)   # taken before any test replaces it
_AT_EMPTY_PATH, _AT_RECURSIVE = 0x1000, 0x8000


def _words(bits: int, table: dict[int, str]) -> frozenset[str]:
    return frozenset(word for bit, word in table.items() if bits & bit)


class Mount:
    """One mount the fake kernel made: where, what (fstype, or "bind"/"rbind" and the source
    path), its per-mount options as mount(8) words, its data, its propagation."""

    def __init__(self, fstype: str, source: str | None, options: frozenset[str], data: str | None = None,
                 root: str | None = None) -> None:
        self.target: str | None = None   # None while detached (fsmount, open_tree)
        self.fstype, self.source, self.options, self.data = fstype, source, options, data
        self.propagation: str | None = None
        self.root = root                 # the directory standing for a new filesystem's contents

    def view(self, rootfs: str = "") -> tuple:
        """(target, fstype, options, data) - and the source, for a bind - with `rootfs` cut off
        the paths: what tests compare."""
        def inside(path):
            return "/" + os.path.relpath(path, rootfs).removeprefix(".") if rootfs and path.startswith(rootfs) else path
        shown = (inside(self.target), self.fstype, ",".join(sorted(self.options)), self.data)
        return (*shown, inside(self.source)) if self.fstype in ("bind", "rbind") else shown

    def __repr__(self) -> str:
        return f"Mount{self.view()}"


class MountTable:
    """What the fake kernel was asked to mount, in the order the mounts were attached, whichever
    API asked: mount(2) on paths, or the new mount API (fsopen, fsconfig, fsmount, open_tree,
    move_mount) on file descriptors, with ``/proc/self/fd/N`` paths resolved.

    The fds the fake mount API hands out are real (so the states can close them, and make
    files through them): a new filesystem is a fresh directory under `scratch`, first filled
    from `templates[fstype]` if there is one (proc has sys/, sys/net and sysrq-trigger there);
    mount(2) of a new filesystem on a path fills the target directory from the same template.
    openat2 is the real system call (it needs no privilege), refused outside `allowed`."""

    def __init__(self, scratch: Path, allowed: Path) -> None:
        self.scratch = scratch
        self.allowed = str(allowed)
        self.mounts: list[Mount] = []
        self.templates: dict[str, dict[str, str]] = {   # fstype: {relative path: "dir" | "file"}
            "proc": {"sys": "dir", "sys/net": "dir", "sysrq-trigger": "file"},
            "sysfs": {"devices/virtual/net": "dir"},
            "devpts": {"ptmx": "file"},
        }
        self._objects: dict[int, tuple[tuple[int, int], object]] = {}
        self._made = 0

    # --- looking things up ---

    def _remember(self, fd: int, obj: object) -> int:
        st = os.fstat(fd)
        self._objects[fd] = ((st.st_dev, st.st_ino), obj)
        return fd

    def _object(self, fd: int):
        known = self._objects.get(fd)
        if known is None:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        return known[1] if (st.st_dev, st.st_ino) == known[0] else None

    def where(self, path: str) -> str:
        """A path inside a new filesystem's directory, as the path it is mounted at."""
        for mount in reversed(self.mounts):
            if mount.root and (path == mount.root or path.startswith(mount.root + os.sep)):
                return mount.target + path[len(mount.root):]
        return path

    def path_of(self, fd: int) -> str:
        return self.where(os.readlink(f"/proc/self/fd/{fd}"))

    def _resolve(self, spec: str | None) -> tuple[Mount | None, str | None]:
        """(the mount a /proc/self/fd/N path names, if the fd is one of ours; the path)."""
        if spec is not None and spec.startswith("/proc/self/fd/"):
            fd = int(spec.rsplit("/", 1)[1])
            obj = self._object(fd)
            if isinstance(obj, Mount):
                return obj, obj.target
            return None, self.path_of(fd)
        return None, spec

    def find(self, target: str) -> Mount | None:
        return next((m for m in reversed(self.mounts) if m.target == target), None)

    def contents(self, target: str) -> Path:
        """Where the files of what is mounted at `target` are: a new filesystem's directory
        (mount API), else the target directory itself (mount(2) made nothing new there)."""
        mount = self.find(target)
        return Path(mount.root if mount is not None and mount.root else target)

    def view(self, rootfs: str = "") -> list[tuple]:
        return [mount.view(rootfs) for mount in self.mounts]

    def _guard(self, path: str) -> str:
        if not os.path.abspath(path).startswith(self.allowed + os.sep):
            raise AssertionError(f"the fake kernel was asked to touch {path}, outside the test's {self.allowed}")
        return path

    def _fill(self, directory: Path, fstype: str) -> None:
        for relative, kind in self.templates.get(fstype, {}).items():
            path = directory / relative
            if kind == "dir":
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()

    # --- the fake system calls ---

    def mount(self, source, target, fstype, flags=0, data=None) -> None:
        mount, path = self._resolve(target)
        if flags & kernel_module.MS_REMOUNT:
            mount = mount or self.find(path)
            if mount is not None:
                mount.options = _words(flags, _FLAG_WORDS)
            return
        if flags & sum(_PROPAGATION) and not flags & kernel_module.MS_BIND:
            mount = mount or self.find(path)
            if mount is not None:
                mount.propagation = ("r" if flags & kernel_module.MS_REC else "") + \
                    next(word for bit, word in _PROPAGATION.items() if flags & bit)
            return
        if flags & kernel_module.MS_BIND:
            made = Mount("rbind" if flags & kernel_module.MS_REC else "bind", self._resolve(source)[1],
                         _words(flags, _FLAG_WORDS))
        else:
            made = Mount(fstype, source, _words(flags, _FLAG_WORDS), data)
            if fstype in self.templates and path and os.path.isdir(path):
                self._fill(Path(self._guard(path)), fstype)
        made.target = path
        self.mounts.append(made)

    def fsopen(self, fstype, flags=1) -> int:
        self._made += 1
        fd = os.open(self.scratch / f"fsopen-{self._made}", os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o600)
        return self._remember(fd, {"fstype": fstype, "source": None, "superblock": set(), "data": []})

    def fsconfig(self, fd, cmd, key=None, value=None) -> None:
        context = self._object(fd)
        if cmd == _FSCONFIG_SET_STRING:
            if key == "source":
                context["source"] = value
            else:
                context["data"].append(f"{key}={value}")
        elif cmd == _FSCONFIG_SET_FLAG:
            (context["superblock"].add if key in _SUPERBLOCK_WORDS else context["data"].append)(key)

    def fsmount(self, fd, attr_flags, flags=1) -> int:
        context = self._object(fd)
        self._made += 1
        root = self.scratch / f"{self._made}-{context['fstype']}"
        root.mkdir()
        self._fill(root, context["fstype"])
        mount = Mount(context["fstype"], context["source"],
                      frozenset(context["superblock"]) | _words(attr_flags, _ATTR_WORDS),
                      ",".join(context["data"]) or None, root=str(root))
        return self._remember(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), mount)

    def open_tree(self, dirfd, path, flags) -> int:
        if flags & _AT_EMPTY_PATH:
            source, fd = self.path_of(dirfd), os.open(f"/proc/self/fd/{dirfd}", os.O_PATH | os.O_CLOEXEC)
        else:
            source, fd = path, os.open(path, os.O_PATH | os.O_CLOEXEC)
        return self._remember(fd, Mount("rbind" if flags & _AT_RECURSIVE else "bind", source, frozenset()))

    def move_mount(self, from_dirfd, from_path, to_dirfd, to_path, flags) -> None:
        mount = self._object(from_dirfd)
        mount.target = self._guard(self.path_of(to_dirfd))
        self.mounts.append(mount)

    def openat2(self, dirfd, path, flags, mode=0, resolve=0) -> int:
        self._guard(os.readlink(f"/proc/self/fd/{dirfd}") + os.sep + "x")
        return _REAL_OPENAT2(dirfd, path, flags, mode, resolve)


# Every function lxcsm.engine.linux.kernel defines (its public interface), listed once, on import,
# before any test has replaced them.
_KERNEL_FUNCTIONS = sorted(name for name, value in vars(kernel_module).items()
                           if inspect.isfunction(value) and value.__module__ == kernel_module.__name__
                           and not name.startswith("_"))


def kernel_functions() -> list[str]:
    return list(_KERNEL_FUNCTIONS)


_MOUNT_CALLS = ("mount", "fsopen", "fsconfig", "fsmount", "open_tree", "move_mount", "openat2")


def install_kernel(monkeypatch, rec: Recorder, mounts: MountTable) -> None:
    """Replace every function of the kernel module by a recording fake, for one test; the
    mount calls answer from `mounts`."""
    for name in kernel_functions():
        default = getattr(mounts, name) if name in _MOUNT_CALLS else DEFAULTS.get(name)
        monkeypatch.setattr(kernel_module, name, rec.fake(f"kernel.{name}", default))


class ModuleProxy:
    """A stand-in for a module a state uses directly (os, signal, socket): the names given
    are recording fakes, every other attribute is the real module's.

    Installed with monkeypatch on the state module's own global (``setup_autodev.os``),
    so only that state sees it.  A fake whose answer is `PASS` records and calls the
    real function."""

    def __init__(self, real, rec: Recorder, label: str, names: dict[str, Any]) -> None:
        self._real = real
        for name, default in names.items():
            if default is PASS:
                default = getattr(real, name)
            setattr(self, name, rec.fake(f"{label}.{name}", default))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


PASS = object()   # ModuleProxy: record the call, then make it for real
