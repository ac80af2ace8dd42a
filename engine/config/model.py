"""What loading a config gives: the frozen Config and its queries, the
settings it is made of, and ConfigError, the one kind of error a bad config is.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable, Mapping
from types import MappingProxyType

from lxcsm.engine.config.keys import Repeat, resolve_key
from lxcsm.engine.config.values import (
    MAX_SHOWN_KEY,
    MAX_SHOWN_MESSAGE,
    NETLINK_NET_TYPES,
    OVERLAY_TYPES,
    IdMap,
    anything,
    overlay_layers,
    parse_idmap,
    parse_log_level,
    parse_rootfs_path,
    parse_signal,
    shown,
)
from lxcsm.engine.linux.mount_options import parse_mount_options

# LXC's ns_info order, in which its do_share_ns() joins the shared namespaces.
SHARE_ORDER = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup", "time")
OVERRIDE_FILE = "-s"
# The key named in errors about a whole file rather than one of its lines.
FILE_KEY = "(file)"


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


# get_item shows these REPLACE keys the way LXC's getters print them.
_GET_ITEM_RENDERERS: Mapping[str, Callable[[str], str]] = MappingProxyType({
    "lxc.rootfs.path": parse_rootfs_path,
    "lxc.log.level": parse_log_level,
    "lxc.signal.halt": lambda value: str(parse_signal(value)),
    "lxc.signal.reboot": lambda value: str(parse_signal(value)),
    "lxc.signal.stop": lambda value: str(parse_signal(value)),
    "lxc.monitor.signal.pdeath": lambda value: str(parse_signal(value)),
})


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
        "mount_entries",    # tuple[MountEntry, ...]: the fstab's lines, lxc.mount.entry's, LXC's nesting helpers
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
        # Mapping[str, tuple[tuple[str, Setting], ...]]: in_effect's answer for each canonical key
        # and family that has values in effect, made once by the loader so each query is a look-up.
        "in_effect_index",
    ), defaults=(MappingProxyType({}),))):
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

    def rootfs_overlay(self) -> tuple[str, str, str] | None:
        """(lowerdir, upperdir, workdir) of an overlay rootfs (lxc-copy -s -B overlayfs), else None;
        rootfs_path is then its top lower layer."""
        setting = self.in_effect("lxc.rootfs.path")
        value = setting[-1][1].value if setting else ""
        if value.partition(":")[0] not in OVERLAY_TYPES or ":" not in value:
            return None
        return overlay_layers(value)

    def tty_count(self) -> int:
        """lxc.tty.max: how many /dev/ttyN the container gets."""
        return int(self.get_item("lxc.tty.max") or 0)

    def has_console(self) -> bool:
        """Whether the container gets a /dev/console pty: unless lxc.console.path = none
        (with lxc.autodev = 0 too: LXC binds it on the rootfs's own /dev/console)."""
        return self.get_item("lxc.console.path") != "none"

    def console_on_host_devpts(self) -> bool:
        """LXC's rule (lxc_terminal_parent()): the console is a pty of the container's devpts
        only when lxc.pty.max leaves room for it beside the container's own ptys; otherwise
        the monitor takes it from the host's."""
        return int(self.get_item("lxc.pty.max") or 0) <= 1

    def has_devpts(self) -> bool:
        """Whether the container gets a devpts of its own on /dev/pts: always in the tmpfs of
        lxc.autodev = 1; on the rootfs's own /dev only with lxc.pty.max > 0, as LXC keeps one
        (lxc_finish_devpts_child() unmounts it otherwise, and takes the ttys from the host's
        devpts)."""
        return self.autodev or int(self.get_item("lxc.pty.max") or 0) > 0

    def id_maps(self) -> tuple[IdMap, ...]:
        """lxc.idmap's ranges, in config order (none: the container shares the host's users)."""
        return tuple(parse_idmap(setting.value) for _key, setting in self.in_effect("lxc.idmap"))

    def container_root_id(self, kind: str) -> int | None:
        """The host's uid ("u") or gid ("g") that is 0 in the container's user namespace."""
        return next((host for m in self.id_maps() if m.kind == kind
                     if (host := m.host_id(0)) is not None), None)

    def rootfs_idmap(self) -> str | None:
        """The user namespace lxc.rootfs.options' idmap= names ("container", or the path of a
        user namespace file) when the container has a user namespace (lxc.idmap) to idmap the
        rootfs for; LXC ignores the option without one."""
        if not self.rootfs_options or not self.id_maps():
            return None
        return parse_mount_options(self.rootfs_options).idmap

    def idmapped_mount_entries(self) -> tuple[MountEntry, ...]:
        """The mount entries with an idmap= option, in the order LXC 5.0.2 attaches them after
        all the others: the lxc.mount.entry lines', then the lxc.mount.fstab file's."""
        idmapped = [entry for entry in self.mount_entries if parse_mount_options(entry.options).idmap is not None]
        return tuple(sorted(idmapped, key=lambda entry: entry.origin.key != "lxc.mount.entry"))   # stable

    def idmaps_mounts(self) -> bool:
        """Whether the monitor idmaps anything for the child (sync_idmapped_mounts): the rootfs,
        or an lxc.mount.entry bind."""
        return self.rootfs_idmap() is not None or bool(self.idmapped_mount_entries())

    def namespaces(self) -> frozenset[str]:
        """The namespaces the container gets of its own, but cgroup (the child unshares that
        one itself): lxc.namespace.clone's (default mnt pid uts ipc net), a user namespace
        with lxc.idmap, less lxc.namespace.keep's and the network a 'none' device shares."""
        names = set(self.namespace_clone) or {"mnt", "pid", "uts", "ipc", "net"}
        if self.in_effect("lxc.idmap"):
            names.add("user")
        if any(net.type == "none" for net in self.networks):
            names.discard("net")
        return frozenset(names - self.namespace_keep - set(self.namespace_shares()) - {"cgroup"})

    def namespace_shares(self) -> dict[str, str]:
        """lxc.namespace.share.NAME: namespace -> whose to join (a pid, a namespace file, or a
        container of the same LXCPATH), in LXC's order (user mnt pid uts ipc net cgroup time).
        The container gets none of its own of these: LXC drops them from its clone flags."""
        return {name: found[-1][1].value for name in SHARE_ORDER
                if (found := self.in_effect(f"lxc.namespace.share.{name}"))}

    def devices(self, *types: str) -> tuple[NetDevice, ...]:
        """The network devices of these types, in index order."""
        return tuple(device for device in self.networks if device.type in types)

    def netlink_devices(self) -> tuple[NetDevice, ...]:
        """The devices made through netlink (a veth or a macvlan), in index order: the Nth is
        created as lxcsmN in the child's namespace.  None in a network namespace joined with
        lxc.namespace.share.net: LXC creates no network there."""
        if "net" in self.namespace_shares():
            return ()
        return self.devices(*NETLINK_NET_TYPES)

    def in_effect(self, name: str) -> tuple[tuple[str, Setting], ...]:
        """(canonical key, setting) of each value still in effect for the key `name`
        or, for a family (lxc.cgroup, lxc.hook, lxc.net), every member's; in order."""
        return self.in_effect_index.get(name, ())

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
            below = [setting for member, setting in self.in_effect(spec.family or canonical)
                     if member.startswith(canonical + ".")]
            return "".join(f"{s.key} = {s.value}\n" for s in below) or None
        values = [setting.value for member, setting in self.in_effect(canonical) if member == canonical]
        if not values:
            return None
        if spec.repeat is Repeat.APPEND:
            return "".join(f"{value}\n" for value in values)
        return _GET_ITEM_RENDERERS.get(canonical, anything)(values[-1])
