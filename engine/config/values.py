"""The values of lxc.container.conf(5): one parser per kind of value.

Each parser takes a non-empty value and returns what it means, or raises
ValueError with a message meant for the user.  The key table (keys.py) uses
them as validators; building the Config (loader.py) uses the same functions
for their results.  `shown` makes any text fit for one line of an error.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from collections import namedtuple
from collections.abc import Callable, Mapping
from types import MappingProxyType

from lxcsm.engine.linux.mount_options import parse_mount_options

# Hostnames are limited by the kernel's struct utsname (64 bytes + NUL).
MAX_UTS_NAME_BYTES = 64
IFNAMSIZ = 16

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



# --- value parsers -----------------------------------------------------------

def anything(value: str) -> str:
    return value


def one_of(*allowed: str, ignore_case: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        found = value.lower() if ignore_case else value
        if found not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return found
    return check


boolean = one_of("0", "1")


def integer_in(low: int, high: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", value) or not low <= int(value) <= high:
            raise ValueError(f"{value!r} is not an integer from {low} to {high}")
        return int(value)
    return check


unsigned = integer_in(0, 2**32 - 1)
signed = integer_in(-(2**31), 2**31 - 1)


def no_value(value: str) -> str:
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
    """The rootfs directory from "PATH" or "dir:PATH"; for an overlay ("overlay:LOWER:UPPER"),
    its top lower layer, where the container's files are found before it runs; other storage
    types are refused."""
    storage, colon, path = value.partition(":")
    if not colon:
        return value
    # Like LXC, anything before the first ":" names the storage type.
    if storage not in STORAGE_TYPES:
        raise ValueError(f"unknown storage type {storage!r}")
    if storage in OVERLAY_TYPES:
        return overlay_layers(value)[0].split(":")[0]
    if storage != "dir":
        raise ValueError(f"storage type {storage} is not supported")
    if not path:
        raise ValueError("dir: needs a path")
    return path


OVERLAY_TYPES = ("overlay", "overlayfs")


def overlay_layers(value: str) -> tuple[str, str, str]:
    """(lowerdir, upperdir, workdir) of "overlay:LOWER[:LOWER...]:UPPER", split as LXC's
    ovl_mount() splits it: the upper layer follows the last ":/"; its work directory is
    "work" beside it (lxc-copy -s -B overlayfs makes .../overlay/delta and .../overlay/work)."""
    layers = value.partition(":")[2]
    lower, separator, upper = layers.rpartition(":/")
    if not separator or not lower or not lower.startswith("/"):
        raise ValueError("an overlay rootfs is overlay:/LOWER:/UPPER")
    upper = "/" + upper
    return lower, upper, upper.rsplit("/", 1)[0] + "/work"


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


NAMESPACES = frozenset({"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"})


def share_target(value: str) -> str:
    """lxc.namespace.share.NAME's value, as LXC's lxc_inherit_namespace() reads it: a pid, a
    namespace file's absolute path (/proc/PID/ns/net), or a container of the same LXCPATH."""
    if value.startswith("/") or value.isdigit() and int(value) > 0:
        return value
    if "/" in value or value.isdigit():
        raise ValueError("not a pid, an absolute path or a container name (of the same LXCPATH)")
    return value


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
    parse_mount_options(options)   # a bad option is refused at its line (idmap=: preflight checks the rest)
    return source, target, fstype, options


def mount_options(value: str) -> str:
    parse_mount_options(value)
    return value


def uts_name(value: str) -> str:
    if len(value.encode()) > MAX_UTS_NAME_BYTES:
        raise ValueError(f"hostname is longer than {MAX_UTS_NAME_BYTES} bytes")
    return value


def environment_entry(value: str) -> str:
    # "KEY=VALUE", or a bare "KEY" to pass on lxc-start's own value.
    if not value.partition("=")[0]:
        raise ValueError("the variable name is empty")
    return value


def capabilities(value: str, none_allowed: bool = False) -> str:
    """Capability names as LXC takes them: "sys_admin", "CAP_SYS_ADMIN" or a number."""
    from lxcsm.engine.linux.kernel import CAPABILITIES
    for word in value.split():
        if word == "none":
            if not none_allowed:
                raise ValueError("'none' is only valid in lxc.cap.keep")
        elif not word.isdigit() and word.lower().removeprefix("cap_") not in CAPABILITIES:
            raise ValueError(f"unknown capability {word!r}")
    return value


def capabilities_to_keep(value: str) -> str:
    return capabilities(value, none_allowed=True)


class IdMap(namedtuple("IdMap", ("kind", "inside", "outside", "count"))):
    """One lxc.idmap line: `count` ids of kind "u" or "g" from `inside` in the container's
    user namespace are the host's ids from `outside`."""

    __slots__ = ()

    def host_id(self, inside: int) -> int | None:
        """The host's id for the container's id `inside`, if this range maps it."""
        return self.outside + inside - self.inside if 0 <= inside - self.inside < self.count else None


# An id is 32 bits and (uid_t)-1 means "no id": a range must end below it.
_ID_LIMIT = 2**32 - 1


def parse_idmap(value: str) -> IdMap:
    """'u|g NSID HOSTID RANGE' as LXC's parse_idmaps reads it."""
    if not re.fullmatch(r"[ug]\s+[0-9]+\s+[0-9]+\s+[0-9]+", value.strip()):
        raise ValueError("an id map is 'u|g NSID HOSTID RANGE', e.g. 'u 0 100000 65536'")
    kind, inside, outside, count = value.split()
    mapped = IdMap(kind, int(inside), int(outside), int(count))
    if mapped.count == 0:
        raise ValueError("an id map's RANGE must be at least 1")
    if max(mapped.inside, mapped.outside) + mapped.count > _ID_LIMIT:
        raise ValueError(f"an id map's range must end below {_ID_LIMIT}")
    return mapped


def idmap(value: str) -> str:
    parse_idmap(value)
    return value


def group_ids(value: str) -> str:
    groups = [group for group in value.split(",") if group]
    if not groups or not all(re.fullmatch(r"[0-9]+", group) for group in groups):
        raise ValueError("supplementary groups are numeric ids separated by commas")
    return value


def relative_cgroup_path(value: str) -> str:
    if value.startswith("/"):
        raise ValueError("cgroup paths may not be absolute")
    if ".." in value.split("/"):
        raise ValueError("cgroup paths may not walk upwards via '..'")
    return value


def cgroup_dir_name(value: str) -> str:
    if "/" in value or value in (".", ".."):
        raise ValueError("must be a single directory name")
    return value


# LXC's parse_byte_size_string: a number, then kB, MB or GB (powers of 1024), or a single
# letter it ignores (so "1M" is 1 byte, as LXC reads it).
_BYTE_SIZE = r"(?i)([0-9]+)\s*([kmg]b|[a-z])?"
_MULTIPLIERS = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


def byte_size_or_auto(value: str) -> str:
    if value != "auto" and not re.fullmatch(_BYTE_SIZE, value):
        raise ValueError(f"{value!r} is not a size (e.g. 128kB, 1MB) or 'auto'")
    return value


def console_size(value: str | None) -> int:
    """lxc.console.size or lxc.console.buffer.size in bytes, as LXC sets them: 0 (none) when
    unset, 128 KiB for auto, else at least a page, rounded up to a power of two."""
    if not value:
        return 0
    if value == "auto":
        return 1 << 17
    match = re.fullmatch(_BYTE_SIZE, value)
    assert match is not None   # byte_size_or_auto checked it at load
    size = int(match[1]) * _MULTIPLIERS.get((match[2] or "").lower(), 1)
    size = max(size, os.sysconf("SC_PAGE_SIZE"))
    return 1 << (size - 1).bit_length()


def time_offset(value: str) -> str:
    if not re.fullmatch(r"-?[0-9]+\s*(?:h|m|s|ms|us|ns)", value):
        raise ValueError("a time offset is an integer with a unit: h, m, s, ms, us or ns")
    return value


def rlimit(value: str) -> str:
    if not re.fullmatch(r"(?:unlimited|[0-9]+)(?:\s*:\s*(?:unlimited|[0-9]+))?", value):
        raise ValueError("a limit is 'SOFT[:HARD]', each a number or 'unlimited'")
    soft, _, hard = (part.strip() for part in value.partition(":"))
    if hard and hard != "unlimited" and (soft == "unlimited" or int(soft) > int(hard)):
        raise ValueError(f"the soft limit {soft} is above the hard limit {hard}")
    return value


def unix_socket_address(value: str) -> str:
    """unix:/PATH or unix:@NAME (abstract), as LXC's lxc_unix_sockaddr() takes them: something
    after the / or @, and within sun_path's 108 bytes with the NUL."""
    path = value.removeprefix("unix:")
    if path == value or path[:1] not in ("/", "@") or len(path) < 2:
        raise ValueError("must be unix:/PATH or unix:@NAME (abstract)")
    if len(path.encode()) + 1 > 108:
        raise ValueError("is longer than a unix socket address may be (107 bytes after unix:)")
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
# The types whose device the monitor creates in the child's namespace (engine/linux/netlink.py).
# ipvlan and vlan would be made the same way, but the kernels lxcsm is tested on lack them.
NETLINK_NET_TYPES = ("veth", "macvlan")
# LXC's default when a device has no type line (the zero of its enum).
DEFAULT_NET_TYPE = "empty"
_HWADDR = r"(?:[0-9a-fA-FxX]{2}:){5}[0-9a-fA-FxX]{2}"


def interface_name(value: str) -> str:
    if len(value.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name is longer than {IFNAMSIZ - 1} bytes")
    if "/" in value or any(char.isspace() for char in value):
        raise ValueError("interface names may not contain '/' or whitespace")
    return value


def hwaddr(value: str) -> str:
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


ipv4_address, ipv4_gateway, ipv4_route = _address_parser("IPv4")
ipv6_address, ipv6_gateway, ipv6_route = _address_parser("IPv6")

mtu = integer_in(68, 65535)
bridge_vlan_id = integer_in(0, 4094)


def veth_vlan_id(value: str) -> str:
    if value != "none":
        bridge_vlan_id(value)
    return value
