"""Read an LXC container config (lxc.container.conf(5)) into a frozen Config.

Replaces LXC's confile.c (with the fstab reading of conf.c): `key = value`
lines, lxc.include, `-s KEY=VALUE` overrides, and the rule that an empty value
resets a key. Keys the engine does not honour yet are still validated (keys.py),
then listed in Config.unsupported so the engine can warn about each; nothing is
dropped silently.
"""

from __future__ import annotations

import os
import re
import signal
from collections import namedtuple
from collections.abc import Iterator, Sequence
from types import MappingProxyType

from lxcsm.engine.config.keys import EXCLUSIVE_KEYS, Repeat, is_honoured, resolve_key
from lxcsm.engine.config.model import (
    FILE_KEY,
    OVERRIDE_FILE,
    Config,
    ConfigError,
    MountEntry,
    NetDevice,
    Setting,
)
from lxcsm.engine.config.values import (
    DEFAULT_NET_TYPE,
    MAX_SHOWN_KEY,
    parse_command,
    parse_log_level,
    parse_mount_auto,
    parse_mount_fields,
    parse_namespaces,
    parse_rootfs_path,
    parse_signal,
)

# A container config is a few hundred bytes; anything this big is a mistake.
MAX_CONFIG_BYTES = 1 << 20
# LXC puts no limit of its own on names, but the name becomes the directory
# name "lxc.payload.NAME" in every cgroup hierarchy, which must fit NAME_MAX.
MAX_NAME_BYTES = 255 - len("lxc.payload.")
# Where errors about the container's name point: the flag that gives it, not a
# config path built from the bad name.
NAME_SOURCE = "-n"
INCLUDE_DIR_SUFFIX = ".conf"
# How many files may be open at once, the config and the includes in it: far more than any
# real config nests, and few enough that reading them (recursively) stays within Python's
# recursion limit.  LXC has no limit of its own, only its C stack.
MAX_INCLUDE_DEPTH = 100
# Some editors start a UTF-8 file with a byte-order mark.  LXC reads it as part of the first
# line, which then does not start with "lxc." and is skipped: harmless before a comment or a
# blank line, which is how files begin (LXC's templates write a comment first).  A setting
# right after the mark, which LXC would drop without a word, is refused (_byte_order_mark).
BYTE_ORDER_MARK = "\ufeff"

DEFAULT_INIT_CMD = ("/sbin/init",)
# LXC's nesting helpers (lxc.apparmor.allow_nesting): (source, target, fstype) of each.
NESTING_HELPERS = (("proc", "dev/.lxc/proc", "proc"), ("sys", "dev/.lxc/sys", "sysfs"))
DEFAULT_SIGNAL_HALT = signal.SIGPWR
DEFAULT_SIGNAL_REBOOT = signal.SIGINT
DEFAULT_SIGNAL_STOP = signal.SIGKILL


# --- reading files -----------------------------------------------------------

def read_limited(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The file's first `limit` + 1 bytes: one byte over is enough to know it is too big.

    Never waits: a FIFO nobody writes to reads as empty (as LXC, which sees its
    size of 0), a terminal with nothing typed is an OSError (EAGAIN).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        wanted = limit + 1
        while wanted > 0:
            chunk = os.read(fd, wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)



def _decoded_lines(path: str, raw: bytes) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; refuses oversize, NUL bytes and bad UTF-8."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, 0, FILE_KEY, f"file is larger than {MAX_CONFIG_BYTES} bytes")
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_bytes(path, number, raw_line, "line is not valid UTF-8") from None
        if "\0" in text:
            raise _bad_bytes(path, number, raw_line, "line contains a NUL byte")
        yield number, text


_KEYISH = rb"[A-Za-z0-9_.\-]{1,%d}" % MAX_SHOWN_KEY


def _bad_bytes(path: str, number: int, raw_line: bytes, problem: str) -> ConfigError:
    """An error naming the line's key, when what is before its "=" looks like one."""
    key = raw_line.partition(b"=")[0].strip()
    return ConfigError(path, number, key.decode("ascii") if re.fullmatch(_KEYISH, key) else FILE_KEY,
                       problem)


def _byte_order_mark(path: str, first_line: str) -> str:
    """The first line without its byte-order mark, unless it holds a setting LXC would skip."""
    text = first_line.removeprefix(BYTE_ORDER_MARK)
    stripped = text.strip()
    if stripped and not stripped.startswith("#"):
        raise ConfigError(path, 1, stripped.partition("=")[0].strip() or FILE_KEY,
                          "a byte-order mark starts this line, so LXC would skip it: put a comment "
                          "or a blank line first, or remove the mark")
    return text


def _split_line(text: str) -> tuple[str, str]:
    """(key, value) of a `key = value` line, surrounding quotes removed from the value."""
    key, equals, value = text.strip().partition("=")
    key = key.strip()
    if not equals or not key:
        raise ValueError("line is not 'key = value'")
    value = value.strip()
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        value = value[1:-1]
    return key, value


def _error(setting: Setting, message: str) -> ConfigError:
    return ConfigError(setting.file, setting.line, setting.key, message)


class _Slot(namedtuple("_Slot", (
        "canonical",  # str
        "family",     # str
        "setting",    # Setting
        "honoured",   # bool
    ))):
    """A setting still in effect: not replaced by a later value or cleared by an empty one."""

    __slots__ = ()


class _Family:
    """A family's keys in effect as a tree, one level a dotted component (lxc.net -> 0 ->
    ipv4 -> address): what an empty value clears is one subtree."""

    __slots__ = ("below", "canonical")

    def __init__(self) -> None:
        self.below: dict[str, _Family] = {}
        self.canonical: str | None = None   # the key that ends here, once one was set


class _InEffect:
    """The settings in effect, in the order they took effect.

    Each change costs what it changes, never the number of settings so far (a config of
    N lines loads in O(N)): a key's slots are found through `by_key`, and what an empty
    value clears, the key and every key below it in its family ("lxc.net.0 =" clears
    lxc.net.0.*, not lxc.cgroup.dir for "lxc.cgroup ="), through the family's tree.
    """

    def __init__(self) -> None:
        self.slots: dict[int, _Slot] = {}        # by number, in the order they took effect
        self.by_key: dict[str, list[int]] = {}   # canonical key -> the numbers of its slots
        self.families: dict[str, _Family] = {}
        self.next_number = 0

    def add(self, slot: _Slot) -> None:
        number = self.next_number
        self.next_number += 1
        self.slots[number] = slot
        numbers = self.by_key.get(slot.canonical)
        if numbers is None:
            self.by_key[slot.canonical] = [number]
            node = self.families.setdefault(slot.family, _Family())
            for part in _below_family(slot.canonical, slot.family):
                node = node.below.setdefault(part, _Family())
            node.canonical = slot.canonical
        else:
            numbers.append(number)

    def of(self, canonical: str) -> list[_Slot]:
        """The key's slots, in order."""
        return [self.slots[number] for number in self.by_key.get(canonical, ())]

    def drop(self, canonical: str) -> None:
        """Forget the key's slots (a REPLACE key about to get its next value)."""
        for number in self.by_key.pop(canonical, ()):
            del self.slots[number]

    def clear(self, canonical: str, family: str) -> None:
        """Forget the key and every key below it in its family."""
        parent, node, part = None, self.families.get(family), ""
        for part in _below_family(canonical, family):
            if node is None:
                return
            parent, node = node, node.below.get(part)
        if node is None:
            return
        if parent is None:
            del self.families[family]
        else:
            del parent.below[part]
        stack = [node]
        while stack:
            node = stack.pop()
            if node.canonical is not None:
                self.drop(node.canonical)
            stack.extend(node.below.values())


def _below_family(canonical: str, family: str) -> list[str]:
    """The dotted components of `canonical` after its family's ("lxc.net.0.type" in
    lxc.net: 0, type)."""
    rest = canonical[len(family) + 1:]
    return rest.split(".") if rest else []


class _Loader:
    """Applies settings in order, keeping the ones still in effect."""

    def __init__(self) -> None:
        self.settings: list[Setting] = []
        self.in_effect = _InEffect()
        self.reading: set[str] = set()  # real paths of the files being read, for loops

    def read_file(self, path: str, include: Setting | None = None) -> None:
        real_path = os.path.realpath(path)
        if include is not None:
            if real_path in self.reading:
                raise _error(include, f"include loop: {path} is already being read")
            if len(self.reading) >= MAX_INCLUDE_DEPTH:
                raise _error(include, f"includes are nested more than {MAX_INCLUDE_DEPTH} files deep")
        try:
            raw = read_limited(path)
        except OSError as err:
            if include is not None:
                raise _error(include, f"cannot read {path}: {err.strerror}") from None
            raise ConfigError(path, 0, FILE_KEY, f"cannot read config: {err.strerror}") from None
        self.reading.add(real_path)
        try:
            for number, text in _decoded_lines(path, raw):
                if number == 1 and text.startswith(BYTE_ORDER_MARK):
                    text = _byte_order_mark(path, text)
                stripped = text.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                self.apply_line(path, number, stripped)
        finally:
            self.reading.discard(real_path)

    def apply_line(self, file: str, line: int, text: str) -> None:
        try:
            key, value = _split_line(text)
        except ValueError as err:
            raise ConfigError(file, line, text.split(maxsplit=1)[0] if text.strip() else FILE_KEY,
                              str(err)) from None
        self.apply(Setting(file, line, key, value))

    def apply(self, setting: Setting) -> None:
        try:
            canonical, spec = resolve_key(setting.key)
        except LookupError:
            raise _error(setting, "unknown key") from None
        except ValueError as err:
            raise _error(setting, str(err)) from None
        family = spec.family or canonical
        self.settings.append(setting)

        if not setting.value:
            self.in_effect.clear(canonical, family)
            # Remember the reset: for lxc.autodev it differs from never setting it.
            if spec.repeat is Repeat.REPLACE:
                self.in_effect.add(_Slot(canonical, family, setting, honoured=True))
            return

        try:
            spec.check(setting.value)
        except ValueError as err:
            raise _error(setting, str(err)) from None
        self._check_exclusive(canonical, setting)
        if spec.net_type is not None:
            self._check_net_type(canonical, spec.net_type, setting)
        if spec.repeat is Repeat.REPLACE:
            self.in_effect.drop(canonical)
        self.in_effect.add(_Slot(canonical, family, setting, is_honoured(spec, setting.value)))

        if canonical == "lxc.include":
            self._include(setting)

    def _check_exclusive(self, canonical: str, setting: Setting) -> None:
        other = EXCLUSIVE_KEYS.get(canonical)
        if other is None:
            return
        for slot in self.in_effect.of(other):
            if slot.setting.value:
                where = f"{slot.setting.file}:{slot.setting.line}"
                raise _error(setting, f"cannot be combined with {other} (set at {where})")
    def _check_net_type(self, canonical: str, net_type: str, setting: Setting) -> None:
        device = ".".join(canonical.split(".")[:3])  # "lxc.net.N"
        current = self.last_value(device + ".type") or DEFAULT_NET_TYPE
        if current != net_type:
            raise _error(setting, f"only valid when {device}.type is {net_type}, "
                                  f"it is {current!r} (set the type first)")

    def _include(self, setting: Setting) -> None:
        """A file, or a directory's *.conf files in name order.  As under LXC 5.0.2, a value
        ending in "/" names a directory, and one that does not exist includes nothing (distros'
        common.conf includes common.conf.d/, which may not be there); a sub-directory named
        *.conf is skipped (LXC fails to read it, logs that, and goes on)."""
        target = setting.as_path()
        if not target.endswith("/") and not os.path.isdir(target):
            self.read_file(target, include=setting)
            return
        try:
            names = sorted(os.listdir(target))
        except FileNotFoundError:
            return
        except OSError as err:
            raise _error(setting, f"cannot list {target}: {err.strerror}") from None
        for name in names:
            path = os.path.join(target, name)
            if name.endswith(INCLUDE_DIR_SUFFIX) and name != INCLUDE_DIR_SUFFIX and not os.path.isdir(path):
                self.read_file(path, include=setting)

    # --- views of the settings in effect, for building the Config

    def last_value(self, canonical: str) -> str | None:
        """The value of a REPLACE key; None if never set, "" if reset."""
        slots = self.in_effect.of(canonical)
        return slots[-1].setting.value if slots else None

    def values(self, canonical: str) -> list[Setting]:
        return [slot.setting for slot in self.in_effect.of(canonical) if slot.setting.value]

    def mount_entries(self) -> list[MountEntry]:
        """The fstab file's entries first, then lxc.mount.entry: LXC's mount order.  With
        lxc.apparmor.allow_nesting = 1 and any lxc.mount.entry line, LXC 5.0.2 appends two
        entries of its own to those lines (make_anonymous_mount_file()'s nesting helpers, on a
        host without AppArmor too): a proc and a sysfs for nested containers to mount from."""
        entries = []
        fstab = self.values("lxc.mount.fstab")
        if fstab:
            entries.extend(_read_fstab(fstab[-1]))
        lines = self.values("lxc.mount.entry")
        for setting in lines:
            entries.append(MountEntry(*parse_mount_fields(setting.value), origin=setting))
        nesting = self.values("lxc.apparmor.allow_nesting")
        if lines and nesting and nesting[-1].value == "1":
            entries += [MountEntry(source, target, fstype, "create=dir,optional", origin=nesting[-1])
                        for source, target, fstype in NESTING_HELPERS]
        return entries

    def networks(self) -> list[NetDevice]:
        by_index: dict[int, dict[str, list[Setting]]] = {}
        for slot in self.in_effect.slots.values():
            if slot.family != "lxc.net" or not slot.setting.value:
                continue
            index, subkey = slot.canonical.removeprefix("lxc.net.").split(".", 1)
            by_index.setdefault(int(index), {}).setdefault(subkey, []).append(slot.setting)
        return [_net_device(index, subkeys) for index, subkeys in sorted(by_index.items())]

    def unsupported(self) -> list[Setting]:
        return [slot.setting for slot in self.in_effect.slots.values()
                if slot.setting.value and not slot.honoured]

    def index(self) -> dict[str, tuple[tuple[str, Setting], ...]]:
        """Config.in_effect's answers: (canonical key, setting) of each value in effect,
        by its canonical key and by its family, in order."""
        found: dict[str, list[tuple[str, Setting]]] = {}
        for slot in self.in_effect.slots.values():
            if slot.setting.value:
                found.setdefault(slot.canonical, []).append((slot.canonical, slot.setting))
                if slot.family != slot.canonical:
                    found.setdefault(slot.family, []).append((slot.canonical, slot.setting))
        return {name: tuple(entries) for name, entries in found.items()}


def _read_fstab(setting: Setting) -> list[MountEntry]:
    path = setting.as_path()
    try:
        raw = read_limited(path)
    except OSError as err:
        raise _error(setting, f"cannot read fstab {path}: {err.strerror}") from None
    entries = []
    for number, text in _decoded_lines(path, raw):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        origin = Setting(path, number, setting.key, stripped)
        try:
            fields = parse_mount_fields(stripped)
        except ValueError as err:
            raise _error(origin, str(err)) from None
        entries.append(MountEntry(*fields, origin=origin))
    return entries


# NetDevice fields filled from sub-keys; other sub-keys go to NetDevice.extra.
_NET_DEVICE_FIELDS = {
    "link": "link", "flags": "flags", "name": "name", "hwaddr": "hwaddr",
    "ipv4.gateway": "ipv4_gateway", "ipv6.gateway": "ipv6_gateway", "veth.pair": "veth_pair",
}
_NET_DEVICE_SPECIAL = {"type", "mtu", "ipv4.address", "ipv6.address"}


def _net_device(index: int, subkeys: dict[str, list[Setting]]) -> NetDevice:
    def last(subkey: str) -> str | None:
        return subkeys[subkey][-1].value if subkey in subkeys else None

    type_line = subkeys["type"][-1] if "type" in subkeys else None
    first_line = next(iter(subkeys.values()))[0]  # subkeys are in the order they were set
    mtu = last("mtu")
    extra = {subkey: "\n".join(s.value for s in settings)
             for subkey, settings in subkeys.items()
             if subkey not in _NET_DEVICE_FIELDS and subkey not in _NET_DEVICE_SPECIAL}
    return NetDevice(
        index=index,
        type=type_line.value if type_line else DEFAULT_NET_TYPE,
        mtu=int(mtu) if mtu is not None else None,
        ipv4=tuple(s.value for s in subkeys.get("ipv4.address", ())),
        ipv6=tuple(s.value for s in subkeys.get("ipv6.address", ())),
        origin=type_line or first_line,
        extra=MappingProxyType(extra),
        **{attribute: last(subkey) for subkey, attribute in _NET_DEVICE_FIELDS.items()},
    )


def _check_container_name(name: str) -> None:
    if not name:
        problem = "is empty"
    elif "/" in name or "\0" in name:
        problem = "may not contain '/' or NUL"
    elif not name.isprintable():
        # It names the command socket and log lines, which are read a line at a time.
        problem = "may not contain control characters"
    elif name in (".", ".."):
        problem = "may not be '.' or '..'"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    else:
        return
    raise ConfigError(NAME_SOURCE, 0, "name", f"container name {name!r} {problem}")


def load(path: str, name: str, overrides: Sequence[str] = ()) -> Config:
    """Read the config at `path` for container `name`, then apply `-s KEY=VALUE` overrides."""
    _check_container_name(name)
    loader = _Loader()
    loader.read_file(path)
    for position, text in enumerate(overrides, start=1):
        loader.apply_line(OVERRIDE_FILE, position, text)

    def value(key: str) -> str | None:
        return loader.last_value(key) or None

    def signal_or(key: str, default: int) -> int:
        text = value(key)
        return parse_signal(text) if text else int(default)

    mounts: dict[str, str | None] = {"proc": None, "sys": None, "cgroup": None}
    for setting in loader.values("lxc.mount.auto"):
        for kind, how in parse_mount_auto(setting.value):
            if kind in mounts:  # shmounts is only reported, as unsupported
                mounts[kind] = how

    rootfs_path, init_cmd, log_level = (
        value("lxc.rootfs.path"), value("lxc.init.cmd"), value("lxc.log.level"))
    # LXC's default is 1, but an empty value sets it to 0.
    autodev = loader.last_value("lxc.autodev")

    return Config(
        name=name,
        path=path,
        uts_name=value("lxc.uts.name"),
        rootfs_path=parse_rootfs_path(rootfs_path) if rootfs_path else None,
        rootfs_mount=value("lxc.rootfs.mount"),
        rootfs_options=value("lxc.rootfs.options"),
        mount_proc=mounts["proc"],
        mount_sys=mounts["sys"],
        mount_cgroup=mounts["cgroup"],
        mount_entries=tuple(loader.mount_entries()),
        autodev=autodev is None or autodev == "1",
        init_cmd=parse_command(init_cmd) if init_cmd else DEFAULT_INIT_CMD,
        init_cwd=value("lxc.init.cwd"),
        environment=tuple(s.value for s in loader.values("lxc.environment")),
        namespace_clone=frozenset().union(
            *(parse_namespaces(s.value) for s in loader.values("lxc.namespace.clone"))),
        namespace_keep=frozenset().union(
            *(parse_namespaces(s.value) for s in loader.values("lxc.namespace.keep"))),
        log_level=parse_log_level(log_level) if log_level else None,
        log_file=value("lxc.log.file"),
        signal_halt=signal_or("lxc.signal.halt", DEFAULT_SIGNAL_HALT),
        signal_reboot=signal_or("lxc.signal.reboot", DEFAULT_SIGNAL_REBOOT),
        signal_stop=signal_or("lxc.signal.stop", DEFAULT_SIGNAL_STOP),
        networks=tuple(loader.networks()),
        unsupported=tuple(loader.unsupported()),
        settings=tuple(loader.settings),
        in_effect_index=MappingProxyType(loader.index()),
    )
