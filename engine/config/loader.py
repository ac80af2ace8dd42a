"""Read an LXC container config (lxc.container.conf(5)) into a frozen Config.

Replaces LXC's confile.c (with the fstab reading of conf.c): `key = value`
lines, lxc.include, `-s KEY=VALUE` overrides, and the rule that an empty value
resets a key. Every key LXC 5.0.2 knows is in the KEYS table. Keys the engine
does not honour yet are still validated, then listed in Config.unsupported so
the engine can warn about each; nothing is dropped silently.

How a value is stored follows the key's Repeat: REPLACE keys keep their last
value, APPEND keys collect every value, and an empty value clears the key and
every key below it in the same family ("lxc.net.0 =" removes network 0).
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import signal
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType

from lxcsm.engine.linux.mount_options import parse_mount_options

# A container config is a few hundred bytes; anything this big is a mistake.
MAX_CONFIG_BYTES = 1 << 20
# LXC puts no limit of its own on names, but the name becomes the directory
# name "lxc.payload.NAME" in every cgroup hierarchy, which must fit NAME_MAX.
MAX_NAME_BYTES = 255 - len("lxc.payload.")
# Hostnames are limited by the kernel's struct utsname (64 bytes + NUL).
MAX_UTS_NAME_BYTES = 64
IFNAMSIZ = 16

OVERRIDE_FILE = "-s"
# Where errors about the container's name point: the flag that gives it, not a
# config path built from the bad name.
NAME_SOURCE = "-n"
# The key named in errors about a whole file rather than one of its lines.
FILE_KEY = "(file)"
INCLUDE_DIR_SUFFIX = ".conf"

DEFAULT_INIT_CMD = ("/sbin/init",)
DEFAULT_SIGNAL_HALT = signal.SIGPWR
DEFAULT_SIGNAL_REBOOT = signal.SIGINT
DEFAULT_SIGNAL_STOP = signal.SIGKILL


# How much of a key or message an error shows: a megabyte of garbage is not a key.
MAX_SHOWN_KEY = 100
MAX_SHOWN_MESSAGE = 1000


def shown(text: str, limit: int | None = None) -> str:
    """`text` fit for one line of a terminal: control characters (newlines,
    carriage returns, escape sequences) written as Python escapes, and cut
    to `limit` characters."""
    text = "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text


class ConfigError(Exception):
    """One bad line: names file, line and key (line 0 when no line is to blame).

    str() is always a single printable line: whatever the file, key or
    message hold, control characters are escaped and overlong parts cut;
    the attributes keep the text as it was.
    """

    file: str
    line: int
    key: str
    message: str

    def __init__(self, file: str, line: int, key: str, message: str) -> None:
        where = shown(f"{file}:{line}" if line else file)
        text = shown(message, MAX_SHOWN_MESSAGE)
        super().__init__(f"{where}: {text}" if key == FILE_KEY
                         else f"{where}: {shown(key, MAX_SHOWN_KEY)}: {text}")
        self.file = file
        self.line = line
        self.key = key
        self.message = message


class Setting(namedtuple("Setting", (
        "file",   # str
        "line",   # int
        "key",    # str
        "value",  # str
    ))):
    """One `key = value` as written, with where it came from."""

    __slots__ = ()

    def as_path(self) -> str:
        """The value as a file name: a relative one starts at the directory of the config
        file the line is in (at the cwd for -s KEY=VALUE)."""
        if self.file == OVERRIDE_FILE:
            return self.value
        return os.path.join(os.path.dirname(self.file), self.value)

    def write_to(self, path: str) -> None:
        """Write the value into a kernel file (cgroupfs, /proc).  A value the kernel refuses
        is an OSError naming this setting's file, line and key: what the user must change."""
        try:
            with open(path, "w") as knob:
                knob.write(self.value)
        except OSError as err:
            raise OSError(err.errno, f"{self.file}:{self.line}: {self.key}: writing {self.value!r}: "
                                     f"{err.strerror}", path) from None


class MountEntry(namedtuple("MountEntry", (
        "source",   # str
        "target",   # str
        "fstype",   # str
        "options",  # str
        "origin",   # Setting
    ))):
    """One fstab-style line from lxc.mount.entry or lxc.mount.fstab."""

    __slots__ = ()


class NetDevice(namedtuple("NetDevice", (
        "index",         # int
        "type",          # str
        "link",          # str | None
        "flags",         # str | None
        "name",          # str | None
        "hwaddr",        # str | None: as written: an "x" digit is to be filled in at random
        "mtu",           # int | None
        "ipv4",          # tuple[str, ...]
        "ipv4_gateway",  # str | None
        "ipv6",          # tuple[str, ...]
        "ipv6_gateway",  # str | None
        "veth_pair",     # str | None
        "origin",        # Setting: the lxc.net.N.type line (the device's first line if it has none)
        # sub-key -> value; sub-keys given several times have their values joined by "\n".
        "extra",         # Mapping[str, str]
    ), defaults=(MappingProxyType({}),))):
    """One lxc.net.N.* device; sub-keys without a field of their own are in `extra`."""

    __slots__ = ()


# --- value parsers -----------------------------------------------------------
# Each takes a non-empty value and raises ValueError with a message meant for
# the user. The KEYS table uses them as validators; building the Config uses
# the same functions for their results.

def _anything(value: str) -> str:
    return value


def _one_of(*allowed: str, ignore_case: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        found = value.lower() if ignore_case else value
        if found not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return found
    return check


_boolean = _one_of("0", "1")


def _integer_in(low: int, high: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", value) or not low <= int(value) <= high:
            raise ValueError(f"{value!r} is not an integer from {low} to {high}")
        return int(value)
    return check


_unsigned = _integer_in(0, 2**32 - 1)
_signed = _integer_in(-(2**31), 2**31 - 1)


def _no_value(value: str) -> str:
    raise ValueError("must not have a value (an empty value resets the whole group)")


# Names LXC accepts, after "SIG", as signal names (signames in confile_utils.c).
SIGNAL_NAMES = (
    "HUP", "INT", "QUIT", "ILL", "ABRT", "FPE", "KILL", "SEGV", "PIPE", "ALRM",
    "TERM", "USR1", "USR2", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "TRAP", "IOT", "BUS", "STKFLT", "CLD", "URG", "XCPU", "XFSZ", "VTALRM",
    "PROF", "WINCH", "IO", "POLL", "PWR", "SYS",
)
SIGNALS: Mapping[str, int] = MappingProxyType({
    name: int(getattr(signal, "SIG" + name))
    for name in SIGNAL_NAMES
    if hasattr(signal, "SIG" + name)
})
# Regular expressions are kept as text here: re compiles (and caches) each one the first
# time it is used, so a start pays only for those its config needs (compiling them all
# up front was ~2 ms of every start).
_REALTIME_SIGNAL = r"RT(MIN\+|MAX-)([0-9]+)"


def parse_signal(text: str) -> int:
    """A signal number from "SIGPWR", "PWR", "30", "SIGRTMIN+3" or "RTMAX-1" (any case)."""
    if re.fullmatch(r"[0-9]+", text):
        if not 1 <= int(text) <= signal.SIGRTMAX:
            raise ValueError(f"signal number {text} is out of range 1..{int(signal.SIGRTMAX)}")
        return int(text)
    name = text.upper().removeprefix("SIG")
    realtime = re.fullmatch(_REALTIME_SIGNAL, name)
    if realtime:
        offset = int(realtime[2])
        if offset > signal.SIGRTMAX - signal.SIGRTMIN:
            raise ValueError(f"{text!r}: real-time signal offset {offset} is too large")
        if realtime[1] == "MIN+":
            return signal.SIGRTMIN + offset
        return signal.SIGRTMAX - offset
    if name not in SIGNALS:
        raise ValueError(f"unknown signal {text!r}")
    return SIGNALS[name]


# Lowest to highest; LXC also takes a level's position in this list.
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "ERROR", "CRIT", "ALERT", "FATAL")


def parse_log_level(value: str) -> str:
    """The level's name, from a name in any case or a number 0..8."""
    if re.fullmatch(r"[0-9]+", value) and int(value) < len(LOG_LEVELS):
        return LOG_LEVELS[int(value)]
    if value.upper() in LOG_LEVELS:
        return value.upper()
    raise ValueError(f"unknown log level {value!r} (one of {', '.join(LOG_LEVELS)} or 0..8)")


STORAGE_TYPES = ("dir", "btrfs", "overlay", "overlayfs", "loop", "lvm", "zfs", "rbd", "nbd")


def parse_rootfs_path(value: str) -> str:
    """The rootfs directory from "PATH" or "dir:PATH"; other storage types are refused."""
    storage, colon, path = value.partition(":")
    if not colon:
        return value
    # Like LXC, anything before the first ":" names the storage type.
    if storage not in STORAGE_TYPES:
        raise ValueError(f"unknown storage type {storage!r}")
    if storage != "dir":
        raise ValueError(f"storage type {storage} is not supported")
    if not path:
        raise ValueError("dir: needs a path")
    return path


# lxc.mount.auto token -> (what it mounts, how). Later tokens of the same kind
# win, across lines too; only an empty value clears them.
_CGROUP_AUTO_TOKENS = (
    "cgroup", "cgroup:mixed", "cgroup:ro", "cgroup:rw", "cgroup:force",
    "cgroup:mixed:force", "cgroup:ro:force", "cgroup:rw:force",
    "cgroup-full", "cgroup-full:mixed", "cgroup-full:ro", "cgroup-full:rw",
    "cgroup-full:force", "cgroup-full:mixed:force", "cgroup-full:ro:force",
    "cgroup-full:rw:force",
    "cgroup2", "cgroup2:ro", "cgroup2:force", "cgroup2:ro:force",
)
MOUNT_AUTO_TOKENS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "proc": ("proc", "mixed"),
    "proc:mixed": ("proc", "mixed"),
    "proc:rw": ("proc", "rw"),
    "sys": ("sys", "mixed"),
    "sys:ro": ("sys", "ro"),
    "sys:mixed": ("sys", "mixed"),
    "sys:rw": ("sys", "rw"),
    **{token: ("cgroup", token) for token in _CGROUP_AUTO_TOKENS},
})
SHMOUNTS_PREFIX = "shmounts:"  # shmounts:HOST_PATH[:CONTAINER_PATH]
HONOURED_AUTO_MOUNTS = frozenset({"proc", "sys", "cgroup"})


def parse_mount_auto(value: str) -> list[tuple[str, str]]:
    """(kind, how) for each token of an lxc.mount.auto value."""
    mounts = []
    for token in value.split():
        if token in MOUNT_AUTO_TOKENS:
            mounts.append(MOUNT_AUTO_TOKENS[token])
        elif token.startswith(SHMOUNTS_PREFIX) and token != SHMOUNTS_PREFIX:
            mounts.append(("shmounts", token))
        else:
            raise ValueError(f"unknown lxc.mount.auto token {token!r}")
    return mounts


def _auto_mounts_honoured(value: str) -> bool:
    return all(kind in HONOURED_AUTO_MOUNTS for kind, _ in parse_mount_auto(value))


NAMESPACES = frozenset({"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"})


def parse_namespaces(value: str) -> frozenset[str]:
    names = frozenset(value.lower().split())
    unknown = names - NAMESPACES
    if unknown:
        raise ValueError(f"unknown namespace {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(NAMESPACES))})")
    return names


def parse_command(value: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(value))
    if not argv:
        raise ValueError("the command is empty")
    return argv


# getmntent(3)'s escapes: fstab fields are whitespace-separated, so a space
# in a path is written \040.
_FSTAB_ESCAPES = {"\\040": " ", "\\011": "\t", "\\012": "\n", "\\134": "\\", "\\\\": "\\"}
_FSTAB_ESCAPE = r"\\(?:040|011|012|134|\\)"


def parse_mount_fields(text: str) -> tuple[str, str, str, str]:
    """(source, target, fstype, options) of an fstab line; dump and pass are ignored."""
    fields = text.split()
    if len(fields) < 4:
        raise ValueError("a mount needs at least 4 fields: source target fstype options")
    if len(fields) > 6:
        raise ValueError("a mount has at most 6 fields (write a space in a path as \\040)")
    source, target, fstype, options = (
        re.sub(_FSTAB_ESCAPE, lambda m: _FSTAB_ESCAPES[m[0]], part) for part in fields[:4])
    parse_mount_options(options)
    return source, target, fstype, options


def _mount_options(value: str) -> str:
    parse_mount_options(value)
    return value


def _uts_name(value: str) -> str:
    if len(value.encode()) > MAX_UTS_NAME_BYTES:
        raise ValueError(f"hostname is longer than {MAX_UTS_NAME_BYTES} bytes")
    return value


def _environment_entry(value: str) -> str:
    # "KEY=VALUE", or a bare "KEY" to pass on lxc-start's own value.
    if not value.partition("=")[0]:
        raise ValueError("the variable name is empty")
    return value


def _capabilities(value: str, none_allowed: bool = False) -> str:
    """Capability names as LXC takes them: "sys_admin", "CAP_SYS_ADMIN" or a number."""
    from lxcsm.engine.linux.kernel import CAPABILITIES
    for word in value.split():
        if word == "none":
            if not none_allowed:
                raise ValueError("'none' is only valid in lxc.cap.keep")
        elif not word.isdigit() and word.lower().removeprefix("cap_") not in CAPABILITIES:
            raise ValueError(f"unknown capability {word!r}")
    return value


def _capabilities_to_keep(value: str) -> str:
    return _capabilities(value, none_allowed=True)


def _idmap(value: str) -> str:
    if not re.fullmatch(r"[ug]\s+[0-9]+\s+[0-9]+\s+[0-9]+", value):
        raise ValueError("an id map is 'u|g NSID HOSTID RANGE', e.g. 'u 0 100000 65536'")
    return value


def _group_ids(value: str) -> str:
    groups = [group for group in value.split(",") if group]
    if not groups or not all(re.fullmatch(r"[0-9]+", group) for group in groups):
        raise ValueError("supplementary groups are numeric ids separated by commas")
    return value


def _relative_cgroup_path(value: str) -> str:
    if value.startswith("/"):
        raise ValueError("cgroup paths may not be absolute")
    if ".." in value.split("/"):
        raise ValueError("cgroup paths may not walk upwards via '..'")
    return value


def _cgroup_dir_name(value: str) -> str:
    if "/" in value or value in (".", ".."):
        raise ValueError("must be a single directory name")
    return value


_BYTE_SIZE = r"(?i)[0-9]+\s*(?:[kmg]?b)?"


def _byte_size_or_auto(value: str) -> str:
    if value != "auto" and not re.fullmatch(_BYTE_SIZE, value):
        raise ValueError(f"{value!r} is not a size (e.g. 128kB, 1MB) or 'auto'")
    return value


def _time_offset(value: str) -> str:
    if not re.fullmatch(r"-?[0-9]+\s*(?:h|m|s|ms|us|ns)", value):
        raise ValueError("a time offset is an integer with a unit: h, m, s, ms, us or ns")
    return value


def _rlimit(value: str) -> str:
    if not re.fullmatch(r"(?:unlimited|[0-9]+)(?:\s*:\s*(?:unlimited|[0-9]+))?", value):
        raise ValueError("a limit is 'SOFT[:HARD]', each a number or 'unlimited'")
    soft, _, hard = (part.strip() for part in value.partition(":"))
    if hard and hard != "unlimited" and (soft == "unlimited" or int(soft) > int(hard)):
        raise ValueError(f"the soft limit {soft} is above the hard limit {hard}")
    return value


def _unix_socket_address(value: str) -> str:
    if not value.startswith("unix:") or value == "unix:":
        raise ValueError("must be unix:PATH")
    return value


ARCHITECTURES = (
    "arm", "armel", "armhf", "armv7l", "athlon", "i386", "i486", "i586", "i686",
    "linux32", "mips", "mipsel", "ppc", "powerpc", "x86", "aarch64", "amd64",
    "arm64", "linux64", "mips64", "mips64el", "ppc64", "ppc64el", "ppc64le",
    "powerpc64", "riscv64", "s390x", "x86_64",
)
SYSLOG_FACILITIES = ("daemon", *(f"local{n}" for n in range(8)))
RLIMIT_RESOURCES = frozenset({
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
    "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
})

# --- network values ----------------------------------------------------------

NET_TYPES = ("empty", "none", "veth", "macvlan", "ipvlan", "vlan", "phys")
HONOURED_NET_TYPES = frozenset({"empty", "none", "veth", "macvlan"})
# The types whose device the monitor creates in the child's namespace (engine/linux/netlink.py).
# ipvlan and vlan would be made the same way, but the kernels lxcsm is tested on lack them.
NETLINK_NET_TYPES = ("veth", "macvlan")
# LXC's default when a device has no type line (the zero of its enum).
DEFAULT_NET_TYPE = "empty"
_HWADDR = r"(?:[0-9a-fA-FxX]{2}:){5}[0-9a-fA-FxX]{2}"


def _interface_name(value: str) -> str:
    if len(value.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name is longer than {IFNAMSIZ - 1} bytes")
    if "/" in value or any(char.isspace() for char in value):
        raise ValueError("interface names may not contain '/' or whitespace")
    return value


def _hwaddr(value: str) -> str:
    if not re.fullmatch(_HWADDR, value):
        raise ValueError("a MAC address is xx:xx:xx:xx:xx:xx (hex digits, x for random)")
    return value


def _address_parser(family: str) -> tuple[Callable[[str], str], ...]:
    """Checks for "ADDR[/PREFIX]" (IPv4 may add " BROADCAST"), a gateway, and a route."""

    def classes() -> tuple[type, type]:
        import ipaddress  # only configs with addresses pay for it
        return ((ipaddress.IPv4Interface, ipaddress.IPv4Address) if family == "IPv4"
                else (ipaddress.IPv6Interface, ipaddress.IPv6Address))

    def check_address(value: str) -> str:
        # Only IPv4 takes a broadcast address, after a space.
        addr, _, broadcast = value.partition(" ") if family == "IPv4" else (value, "", "")
        interface, address = classes()
        try:
            interface(addr)
            if broadcast:
                address(broadcast.strip())
        except ValueError as err:
            raise ValueError(f"invalid {family} address {value!r}: {err}") from None
        return value

    def check_gateway(value: str) -> str:
        if value in ("auto", "dev"):
            return value
        try:
            classes()[1](value)
        except ValueError as err:
            raise ValueError(f"invalid {family} gateway {value!r}: {err}") from None
        return value

    def check_route(value: str) -> str:
        if "/" not in value:
            raise ValueError(f"a {family} route is ADDR/PREFIX")
        return check_address(value)

    return check_address, check_gateway, check_route


_ipv4_address, _ipv4_gateway, _ipv4_route = _address_parser("IPv4")
_ipv6_address, _ipv6_gateway, _ipv6_route = _address_parser("IPv6")

_mtu = _integer_in(68, 65535)
_bridge_vlan_id = _integer_in(0, 4094)


def _veth_vlan_id(value: str) -> str:
    if value != "none":
        _bridge_vlan_id(value)
    return value


# --- the key table -----------------------------------------------------------

class Repeat(enum.Enum):
    REPLACE = "the last value wins"
    APPEND = "each value is added to a list"
    RESET_ONLY = "only an empty value, which resets everything below the key, is allowed"


class KeySpec(namedtuple("KeySpec", (
        "check",     # Callable[[str], object]
        # Whether the engine acts on the key; a callable decides from the value.
        "honoured",  # bool | Callable[[str], bool]
        "repeat",    # Repeat
        # The key whose empty value also clears this one (default: the key itself).
        "family",    # str | None
        # Prefix entries: maps the text after the prefix to (canonical text, spec).
        "members",   # Callable[[str], tuple[str, KeySpec]] | None
        # Network sub-keys that LXC only accepts on one device type.
        "net_type",  # str | None
    ), defaults=(False, Repeat.REPLACE, None, None, None))):
    """How one key's values are checked and stored."""

    __slots__ = ()


class _MemberForm(namedtuple("_MemberForm", (
        "pattern",   # str: a regular expression the whole name must match
        "group",     # str: the same, for a name that selects several members
        "expected",  # str
    ))):
    """What the names of a family's members must look like, and how to say so.

    A name matching only `group` (lxc.cgroup.memory) selects several members:
    it takes no value, and an empty one clears them all.
    """

    __slots__ = ()

    def group_value(self, value: str) -> str:
        raise ValueError(f"{self.expected}; without a file it only takes an empty value, "
                         f"which clears them all")


def _members_named(member: KeySpec, allowed: frozenset[str] | None = None,
                   form: _MemberForm | None = None) -> Callable[[str], tuple[str, KeySpec]]:
    """Members of a family like lxc.sysctl.NAME, all checked the same way."""
    def resolve(name: str) -> tuple[str, KeySpec]:
        if not name or any(char.isspace() for char in name):
            raise ValueError("missing or malformed name after the prefix")
        if allowed is not None and name not in allowed:
            raise ValueError(f"unknown name {name!r} (known: {', '.join(sorted(allowed))})")
        if form is not None and not re.fullmatch(form.pattern, name):
            if re.fullmatch(form.group, name):
                return name, KeySpec(form.group_value, repeat=Repeat.APPEND, family=member.family)
            raise ValueError(f"malformed name {name!r}: {form.expected}")
        return name, member
    return resolve


def _family(name: str, member_check: Callable[[str], object], repeat: Repeat,
            allowed: frozenset[str] | None = None, form: _MemberForm | None = None,
            honoured: bool = False) -> KeySpec:
    """A prefix key (lxc.cgroup): the bare key only resets, NAME.* members hold values."""
    member = KeySpec(member_check, honoured=honoured, repeat=repeat, family=name)
    return KeySpec(_no_value, honoured=honoured, repeat=Repeat.RESET_ONLY,
                   members=_members_named(member, allowed, form))


# A cgroup file is named CONTROLLER.FILE ("memory.limit_in_bytes", "hugetlb.2MB.max"):
# LXC finds the hierarchy to write to by the part before the first dot.
_CGROUP_FILE = r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_\-]+)+"
_CGROUP_CONTROLLER = r"[A-Za-z0-9_]+"
_CGROUP1_FILE = _MemberForm(_CGROUP_FILE, _CGROUP_CONTROLLER,
                            "the key is lxc.cgroup.<controller>.<file>, "
                            "e.g. lxc.cgroup.memory.limit_in_bytes")
_CGROUP2_FILE = _MemberForm(_CGROUP_FILE, _CGROUP_CONTROLLER,
                            "the key is lxc.cgroup2.<controller>.<file>, e.g. lxc.cgroup2.memory.max")


def _gateway_honoured(value: str) -> bool:
    return value != "auto"   # LXC's "auto" means the bridge's address, which lxcsm does not look up


def _net(check: Callable[[str], object], repeat: Repeat = Repeat.REPLACE,
         net_type: str | None = None,
         honoured: bool | Callable[[str], bool] = True) -> KeySpec:
    # A device's sub-keys count as honoured: whether the device as a whole is
    # supported is decided by its type (see NET_SUBKEYS["type"]).
    return KeySpec(check, honoured=honoured, repeat=repeat, family="lxc.net", net_type=net_type)


NET_SUBKEYS: Mapping[str, KeySpec] = MappingProxyType({
    "type": _net(_one_of(*NET_TYPES), honoured=lambda value: value in HONOURED_NET_TYPES),
    "flags": _net(_anything),  # LXC treats any value as "up"
    "link": _net(_interface_name),
    "name": _net(_interface_name),
    "hwaddr": _net(_hwaddr),
    "mtu": _net(_mtu),
    "ipv4.address": _net(_ipv4_address, Repeat.APPEND),
    "ipv4.gateway": _net(_ipv4_gateway, honoured=_gateway_honoured),
    "ipv6.address": _net(_ipv6_address, Repeat.APPEND),
    "ipv6.gateway": _net(_ipv6_gateway, honoured=_gateway_honoured),
    "l2proxy": _net(_boolean, honoured=False),
    "script.up": _net(_anything, honoured=False),
    "script.down": _net(_anything, honoured=False),
    "veth.pair": _net(_interface_name, net_type="veth"),
    "veth.mode": _net(_one_of("bridge", "router"), net_type="veth",
                      honoured=lambda value: value == "bridge"),
    "veth.vlan.id": _net(_veth_vlan_id, net_type="veth", honoured=False),
    "veth.vlan.tagged.id": _net(_bridge_vlan_id, Repeat.APPEND, net_type="veth", honoured=False),
    "veth.n_rxqueues": _net(_integer_in(1, 2**31 - 1), net_type="veth", honoured=False),
    "veth.n_txqueues": _net(_integer_in(1, 2**31 - 1), net_type="veth", honoured=False),
    "veth.ipv4.route": _net(_ipv4_route, Repeat.APPEND, net_type="veth", honoured=False),
    "veth.ipv6.route": _net(_ipv6_route, Repeat.APPEND, net_type="veth", honoured=False),
    "macvlan.mode": _net(_one_of("private", "vepa", "bridge", "passthru"), net_type="macvlan"),
    "ipvlan.mode": _net(_one_of("l3", "l3s", "l2"), net_type="ipvlan"),
    "ipvlan.isolation": _net(_one_of("bridge", "private", "vepa"), net_type="ipvlan"),
    "vlan.id": _net(_integer_in(0, 65535), net_type="vlan"),
})
# lxc.net.N on its own: an empty value removes device N.
_NET_DEVICE = KeySpec(_no_value, honoured=True, repeat=Repeat.RESET_ONLY, family="lxc.net")
_NET_MEMBER = r"([0-9]+)(?:\.(.+))?"


def _net_members(rest: str) -> tuple[str, KeySpec]:
    """"N.SUBKEY" -> ("N.SUBKEY" with N normalised, spec); "N" alone -> the device."""
    match = re.fullmatch(_NET_MEMBER, rest)
    if not match:
        raise ValueError("network keys are lxc.net.<index>.<sub-key>")
    index, subkey = int(match[1]), match[2]
    if index >= 2**31 - 1:
        raise ValueError(f"network index {index} is too large")
    if subkey is None:
        return str(index), _NET_DEVICE
    if subkey not in NET_SUBKEYS:
        raise ValueError(f"unknown network sub-key {subkey!r}")
    return f"{index}.{subkey}", NET_SUBKEYS[subkey]


def _namespace_share_members(name: str) -> tuple[str, KeySpec]:
    if name not in NAMESPACES:
        raise ValueError(f"unknown namespace {name!r}")
    return name, KeySpec(_anything)


# A hook is a command line (LXC runs it through sh -c), its program first.  clone and
# destroy hooks are never run by a start, under LXC either: nothing to report for them.
_HOOK = KeySpec(parse_command, honoured=True, repeat=Repeat.APPEND, family="lxc.hook")
_cgroup_path = KeySpec(_relative_cgroup_path)

# Every key of LXC 5.0.2's config parser (config_jump_table in confile.c).
# Entries with `members` are prefixes: lxc.net.N.*, lxc.cgroup.CONTROLLER.FILE,
# lxc.cgroup2.FILE, lxc.prlimit.RESOURCE, lxc.sysctl.NAME, lxc.proc.FILE and
# lxc.namespace.share.NAMESPACE. A bare prefix without the dot (lxc.cgroup)
# only resets its members; one ending in a dot is not a key on its own.
KEYS: Mapping[str, KeySpec] = MappingProxyType({
    "lxc.apparmor.allow_incomplete": KeySpec(_boolean),
    "lxc.apparmor.allow_nesting": KeySpec(_boolean),
    "lxc.apparmor.profile": KeySpec(_anything),
    "lxc.apparmor.raw": KeySpec(_anything, repeat=Repeat.APPEND),
    "lxc.arch": KeySpec(_one_of(*ARCHITECTURES)),
    "lxc.autodev": KeySpec(_boolean, honoured=True),
    "lxc.autodev.tmpfs.size": KeySpec(_signed),
    "lxc.cap.drop": KeySpec(_capabilities, honoured=True, repeat=Repeat.APPEND),
    "lxc.cap.keep": KeySpec(_capabilities_to_keep, honoured=True, repeat=Repeat.APPEND),
    "lxc.cgroup": _family("lxc.cgroup", _anything, Repeat.APPEND, form=_CGROUP1_FILE, honoured=True),
    "lxc.cgroup.dir": _cgroup_path,
    "lxc.cgroup.dir.container": _cgroup_path,
    "lxc.cgroup.dir.container.inner": KeySpec(_cgroup_dir_name),
    "lxc.cgroup.dir.monitor": _cgroup_path,
    "lxc.cgroup.dir.monitor.pivot": _cgroup_path,
    "lxc.cgroup.relative": KeySpec(_boolean),
    "lxc.cgroup2": _family("lxc.cgroup2", _anything, Repeat.APPEND, form=_CGROUP2_FILE),
    "lxc.console.buffer.size": KeySpec(_byte_size_or_auto),
    "lxc.console.logfile": KeySpec(_anything, honoured=True),
    # A device path is LXC's too; lxcsm only makes its own pty (auto) or none.
    "lxc.console.path": KeySpec(_anything, honoured=lambda value: value in ("auto", "none")),
    "lxc.console.rotate": KeySpec(_boolean),
    "lxc.console.size": KeySpec(_byte_size_or_auto),
    "lxc.environment": KeySpec(_environment_entry, honoured=True, repeat=Repeat.APPEND),
    "lxc.ephemeral": KeySpec(_boolean),
    "lxc.execute.cmd": KeySpec(parse_command),
    "lxc.group": KeySpec(_anything, repeat=Repeat.APPEND),
    "lxc.hook": KeySpec(_no_value, honoured=True, repeat=Repeat.RESET_ONLY),
    "lxc.hook.autodev": _HOOK,
    "lxc.hook.clone": _HOOK,
    "lxc.hook.destroy": _HOOK,
    "lxc.hook.mount": _HOOK,
    "lxc.hook.post-stop": _HOOK,
    "lxc.hook.pre-mount": _HOOK,
    "lxc.hook.pre-start": _HOOK,
    "lxc.hook.start": _HOOK,
    "lxc.hook.start-host": _HOOK,
    "lxc.hook.stop": _HOOK,
    "lxc.hook.version": KeySpec(_boolean, honoured=True),
    "lxc.idmap": KeySpec(_idmap, repeat=Repeat.APPEND),
    "lxc.include": KeySpec(_anything, honoured=True, repeat=Repeat.APPEND),
    "lxc.init.cmd": KeySpec(parse_command, honoured=True),
    "lxc.init.cwd": KeySpec(_anything, honoured=True),
    "lxc.init.gid": KeySpec(_unsigned),
    "lxc.init.groups": KeySpec(_group_ids),
    "lxc.init.uid": KeySpec(_unsigned),
    "lxc.keyring.session": KeySpec(_boolean),
    "lxc.log.file": KeySpec(_anything, honoured=True),
    "lxc.log.level": KeySpec(parse_log_level, honoured=True),
    "lxc.log.syslog": KeySpec(_one_of(*SYSLOG_FACILITIES, ignore_case=True)),
    "lxc.monitor.signal.pdeath": KeySpec(parse_signal),
    "lxc.monitor.unshare": KeySpec(_unsigned),
    # Tokens accumulate across lines (LXC ORs them into one mask).
    "lxc.mount.auto": KeySpec(parse_mount_auto, honoured=_auto_mounts_honoured,
                              repeat=Repeat.APPEND),
    "lxc.mount.entry": KeySpec(parse_mount_fields, honoured=True, repeat=Repeat.APPEND),
    "lxc.mount.fstab": KeySpec(_anything, honoured=True),
    # Like lxc.mount.auto, namespace names accumulate across lines.
    "lxc.namespace.clone": KeySpec(parse_namespaces, honoured=True, repeat=Repeat.APPEND),
    "lxc.namespace.keep": KeySpec(parse_namespaces, honoured=True, repeat=Repeat.APPEND),
    "lxc.namespace.share.": KeySpec(_no_value, members=_namespace_share_members),
    "lxc.net": KeySpec(_no_value, honoured=True, repeat=Repeat.RESET_ONLY, family="lxc.net"),
    "lxc.net.": KeySpec(_no_value, members=_net_members),
    "lxc.no_new_privs": KeySpec(_boolean),
    # One value per resource or sysctl name: setting it again replaces it.
    "lxc.prlimit": _family("lxc.prlimit", _rlimit, Repeat.REPLACE, RLIMIT_RESOURCES, honoured=True),
    "lxc.proc": _family("lxc.proc", _anything, Repeat.APPEND, honoured=True),
    "lxc.pty.max": KeySpec(_unsigned, honoured=True),
    "lxc.rootfs.managed": KeySpec(_boolean),
    "lxc.rootfs.mount": KeySpec(_anything, honoured=True),
    "lxc.rootfs.options": KeySpec(_mount_options, honoured=True),
    "lxc.rootfs.path": KeySpec(parse_rootfs_path, honoured=True),
    "lxc.sched.core": KeySpec(_boolean),
    "lxc.seccomp.allow_nesting": KeySpec(_boolean),
    "lxc.seccomp.notify.cookie": KeySpec(_anything),
    "lxc.seccomp.notify.proxy": KeySpec(_unix_socket_address),
    "lxc.seccomp.profile": KeySpec(_anything, honoured=True),
    "lxc.selinux.context": KeySpec(_anything),
    "lxc.selinux.context.keyring": KeySpec(_anything),
    "lxc.signal.halt": KeySpec(parse_signal, honoured=True),
    "lxc.signal.reboot": KeySpec(parse_signal, honoured=True),
    "lxc.signal.stop": KeySpec(parse_signal, honoured=True),
    "lxc.start.auto": KeySpec(_boolean),
    "lxc.start.delay": KeySpec(_unsigned),
    "lxc.start.order": KeySpec(_signed),
    "lxc.sysctl": _family("lxc.sysctl", _anything, Repeat.REPLACE, honoured=True),
    "lxc.time.offset.boot": KeySpec(_time_offset),
    "lxc.time.offset.monotonic": KeySpec(_time_offset),
    "lxc.tty.dir": KeySpec(_anything),
    "lxc.tty.max": KeySpec(_unsigned, honoured=True),
    "lxc.uts.name": KeySpec(_uts_name, honoured=True),
})

# Keys LXC refuses to combine: setting one while the other has a value is an error.
EXCLUSIVE_KEYS: Mapping[str, str] = MappingProxyType({
    "lxc.namespace.clone": "lxc.namespace.keep",
    "lxc.namespace.keep": "lxc.namespace.clone",
    "lxc.cap.drop": "lxc.cap.keep",
    "lxc.cap.keep": "lxc.cap.drop",
})

_PREFIX_KEYS = sorted((name for name, spec in KEYS.items() if spec.members), key=len, reverse=True)


def resolve_key(key: str) -> tuple[str, KeySpec]:
    """(canonical key, spec). LookupError for an unknown key, ValueError for a bad sub-key."""
    # A trailing dot marks prefix entries ("lxc.net."); they are not keys themselves.
    if key in KEYS and not key.endswith("."):
        return key, KEYS[key]
    for prefix in _PREFIX_KEYS:
        head = prefix if prefix.endswith(".") else prefix + "."
        if key.startswith(head):
            rest, spec = KEYS[prefix].members(key[len(head):])
            return head + rest, spec
    raise LookupError(key)


def _is_honoured(spec: KeySpec, value: str) -> bool:
    return spec.honoured(value) if callable(spec.honoured) else spec.honoured


# get_item shows these REPLACE keys the way LXC's getters print them.
_GET_ITEM_RENDERERS: Mapping[str, Callable[[str], str]] = MappingProxyType({
    "lxc.rootfs.path": parse_rootfs_path,
    "lxc.log.level": parse_log_level,
    "lxc.signal.halt": lambda value: str(parse_signal(value)),
    "lxc.signal.reboot": lambda value: str(parse_signal(value)),
    "lxc.signal.stop": lambda value: str(parse_signal(value)),
    "lxc.monitor.signal.pdeath": lambda value: str(parse_signal(value)),
})


class _Slot(namedtuple("_Slot", (
        "canonical",  # str
        "family",     # str
        "setting",    # Setting
        "honoured",   # bool
    ))):
    """A setting still in effect: not replaced by a later value or cleared by an empty one."""

    __slots__ = ()


# --- the result --------------------------------------------------------------

class Config(namedtuple("Config", (
        "name",             # str
        "path",             # str
        "uts_name",         # str | None
        "rootfs_path",      # str | None: without "dir:"
        "rootfs_mount",     # str | None
        "rootfs_options",   # str | None: as written, e.g. "ro"
        "mount_proc",       # str | None: "mixed" or "rw"
        "mount_sys",        # str | None: "ro", "mixed" or "rw"
        "mount_cgroup",     # str | None: the last cgroup token as written, e.g. "cgroup:mixed"
        "mount_entries",    # tuple[MountEntry, ...]: lxc.mount.fstab's lines, then lxc.mount.entry's
        "autodev",          # bool
        "init_cmd",         # tuple[str, ...]
        "init_cwd",         # str | None
        "environment",      # tuple[str, ...]: "KEY=VALUE", or "KEY" to pass on lxc-start's own value
        "namespace_clone",  # frozenset[str]
        "namespace_keep",   # frozenset[str]
        "log_level",        # str | None: one of LOG_LEVELS
        "log_file",         # str | None
        "signal_halt",      # int
        "signal_reboot",    # int
        "signal_stop",      # int
        "networks",         # tuple[NetDevice, ...]: by index
        "unsupported",      # tuple[Setting, ...]: valid settings the engine does not act on yet
        "settings",         # tuple[Setting, ...]: every line applied, includes in place, -s last
        "effective",        # tuple[_Slot, ...]: the settings still in effect, for in_effect/get_item
    ), defaults=((),))):
    """A container's configuration, as lxc-start would use it."""

    __slots__ = ()

    def dropped_capabilities(self, last: int) -> list[int]:
        """The capability numbers lxc.cap.drop names, or with lxc.cap.keep every one up to
        `last` it does not keep ("none" forgets the names before it), in ascending order."""
        from lxcsm.engine.linux.kernel import CAPABILITIES

        def number(word: str) -> int:
            return int(word) if word.isdigit() else CAPABILITIES[word.lower().removeprefix("cap_")]

        keep = self.in_effect("lxc.cap.keep")
        if keep:
            kept: set[int] = set()
            for _key, setting in keep:
                for word in setting.value.split():
                    kept = set() if word == "none" else kept | {number(word)}
            return [cap for cap in range(last + 1) if cap not in kept]
        return sorted({number(word) for _key, setting in self.in_effect("lxc.cap.drop")
                       for word in setting.value.split()})

    def cgroup_limits(self, devices: bool) -> list[tuple[str, Setting]]:
        """(CONTROLLER.FILE, setting) of each lxc.cgroup.* limit, in config order: the devices
        controller's (written once the child's /dev exists) or all the others."""
        return [(key.removeprefix("lxc.cgroup."), setting) for key, setting in self.in_effect("lxc.cgroup")
                if (key.removeprefix("lxc.cgroup.").partition(".")[0] == "devices") == devices]

    def tty_count(self) -> int:
        """lxc.tty.max: how many /dev/ttyN the container gets."""
        return int(self.get_item("lxc.tty.max") or 0)

    def has_console(self) -> bool:
        """Whether the container gets a /dev/console pty: unless lxc.console.path = none,
        and only in its own devpts (lxc.autodev)."""
        return self.autodev and self.get_item("lxc.console.path") != "none"

    def devices(self, *types: str) -> tuple[NetDevice, ...]:
        """The network devices of these types, in index order."""
        return tuple(device for device in self.networks if device.type in types)

    def netlink_devices(self) -> tuple[NetDevice, ...]:
        """The devices made through netlink (a veth or a macvlan), in index order: the Nth is
        created as lxcsmN in the child's namespace."""
        return self.devices(*NETLINK_NET_TYPES)

    def in_effect(self, name: str) -> tuple[tuple[str, Setting], ...]:
        """(canonical key, setting) of each value still in effect for the key `name`
        or, for a family (lxc.cgroup, lxc.hook, lxc.net), every member's; in order."""
        return tuple((slot.canonical, slot.setting) for slot in self.effective
                     if (slot.canonical == name or slot.family == name) and slot.setting.value)

    def get_item(self, key: str) -> str | None:
        """What LXC's get_config_item gives for `key`; None when unset or reset.

        Single-valued keys give their last value (signals as numbers,
        lxc.rootfs.path without "dir:", lxc.log.level by name). List keys
        give each value followed by a newline, as LXC prints lists. A bare
        family key (lxc.net, lxc.cgroup, lxc.net.0) gives "key = value" lines
        for everything below it. KeyError for a key LXC does not know.
        """
        try:
            canonical, spec = resolve_key(key)
        except (LookupError, ValueError):
            raise KeyError(key) from None
        if spec.repeat is Repeat.RESET_ONLY:
            family = spec.family or canonical
            below = [slot.setting for slot in self.effective
                     if slot.family == family and slot.canonical.startswith(canonical + ".")
                     and slot.setting.value]
            return "".join(f"{s.key} = {s.value}\n" for s in below) or None
        values = [slot.setting.value for slot in self.effective if slot.canonical == canonical]
        if spec.repeat is Repeat.APPEND:
            return "".join(f"{value}\n" for value in values if value) or None
        if not values or not values[-1]:
            return None
        return _GET_ITEM_RENDERERS.get(canonical, _anything)(values[-1])


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


class _Loader:
    """Applies settings in order, keeping the ones still in effect."""

    def __init__(self) -> None:
        self.settings: list[Setting] = []
        self.slots: list[_Slot] = []
        self.reading: list[str] = []  # real paths of the files being read, for loops

    def read_file(self, path: str, include: Setting | None = None) -> None:
        real_path = os.path.realpath(path)
        if include is not None and real_path in self.reading:
            raise _error(include, f"include loop: {path} is already being read")
        try:
            raw = read_limited(path)
        except OSError as err:
            if include is not None:
                raise _error(include, f"cannot read {path}: {err.strerror}") from None
            raise ConfigError(path, 0, FILE_KEY, f"cannot read config: {err.strerror}") from None
        self.reading.append(real_path)
        try:
            for number, text in _decoded_lines(path, raw):
                stripped = text.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                self.apply_line(path, number, stripped)
        finally:
            self.reading.pop()

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
            self.slots = [slot for slot in self.slots if not (
                slot.family == family
                and (slot.canonical == canonical or slot.canonical.startswith(canonical + ".")))]
            # Remember the reset: for lxc.autodev it differs from never setting it.
            if spec.repeat is Repeat.REPLACE:
                self.slots.append(_Slot(canonical, family, setting, honoured=True))
            return

        try:
            spec.check(setting.value)
        except ValueError as err:
            raise _error(setting, str(err)) from None
        self._check_exclusive(canonical, setting)
        if spec.net_type is not None:
            self._check_net_type(canonical, spec.net_type, setting)
        if spec.repeat is Repeat.REPLACE:
            self.slots = [slot for slot in self.slots if slot.canonical != canonical]
        self.slots.append(_Slot(canonical, family, setting, _is_honoured(spec, setting.value)))

        if canonical == "lxc.include":
            self._include(setting)

    def _check_exclusive(self, canonical: str, setting: Setting) -> None:
        other = EXCLUSIVE_KEYS.get(canonical)
        for slot in self.slots:
            if slot.canonical == other and slot.setting.value:
                where = f"{slot.setting.file}:{slot.setting.line}"
                raise _error(setting, f"cannot be combined with {other} (set at {where})")

    def _check_net_type(self, canonical: str, net_type: str, setting: Setting) -> None:
        device = ".".join(canonical.split(".")[:3])  # "lxc.net.N"
        current = self.last_value(device + ".type") or DEFAULT_NET_TYPE
        if current != net_type:
            raise _error(setting, f"only valid when {device}.type is {net_type}, "
                                  f"it is {current!r} (set the type first)")

    def _include(self, setting: Setting) -> None:
        target = setting.as_path()
        if not os.path.isdir(target):
            self.read_file(target, include=setting)
            return
        try:
            names = sorted(os.listdir(target))
        except OSError as err:
            raise _error(setting, f"cannot list {target}: {err.strerror}") from None
        for name in names:
            if name.endswith(INCLUDE_DIR_SUFFIX) and name != INCLUDE_DIR_SUFFIX:
                self.read_file(os.path.join(target, name), include=setting)

    # --- views of the settings in effect, for building the Config

    def last_value(self, canonical: str) -> str | None:
        """The value of a REPLACE key; None if never set, "" if reset."""
        values = [slot.setting.value for slot in self.slots if slot.canonical == canonical]
        return values[-1] if values else None

    def values(self, canonical: str) -> list[Setting]:
        return [slot.setting for slot in self.slots
                if slot.canonical == canonical and slot.setting.value]

    def mount_entries(self) -> list[MountEntry]:
        """The fstab file's entries first, then lxc.mount.entry: LXC's mount order."""
        entries = []
        fstab = self.values("lxc.mount.fstab")
        if fstab:
            entries.extend(_read_fstab(fstab[-1]))
        for setting in self.values("lxc.mount.entry"):
            entries.append(MountEntry(*parse_mount_fields(setting.value), origin=setting))
        return entries

    def networks(self) -> list[NetDevice]:
        by_index: dict[int, dict[str, list[Setting]]] = {}
        for slot in self.slots:
            if slot.family != "lxc.net" or not slot.setting.value:
                continue
            index, subkey = slot.canonical.removeprefix("lxc.net.").split(".", 1)
            by_index.setdefault(int(index), {}).setdefault(subkey, []).append(slot.setting)
        return [_net_device(index, subkeys) for index, subkeys in sorted(by_index.items())]

    def unsupported(self) -> list[Setting]:
        return [slot.setting for slot in self.slots
                if slot.setting.value and not slot.honoured]


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

    mounts = {"proc": None, "sys": None, "cgroup": None}
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
        effective=tuple(loader.slots),
    )
