"""The key table: every key of LXC 5.0.2's config parser, how its values are
checked and stored, and whether the engine acts on it.

KEYS is one long table on purpose: it is the list of what lxc.container.conf(5)
accepts, read and compared entry by entry with LXC's config_jump_table in
confile.c, so it stays whole and in one place rather than spread over modules.

How a value is stored follows the key's Repeat: REPLACE keys keep their last
value, APPEND keys collect every value, and an empty value clears the key and
every key below it in the same family ("lxc.net.0 =" removes network 0).
"""

from __future__ import annotations

import enum
import re
from collections import namedtuple
from collections.abc import Callable, Mapping
from types import MappingProxyType

from lxcsm.engine.config.values import (
    ARCHITECTURES,
    NAMESPACES,
    NET_TYPES,
    RLIMIT_RESOURCES,
    SYSLOG_FACILITIES,
    anything,
    boolean,
    bridge_vlan_id,
    byte_size_or_auto,
    capabilities,
    capabilities_to_keep,
    cgroup_dir_name,
    environment_entry,
    group_ids,
    hwaddr,
    idmap,
    integer_in,
    interface_name,
    ipv4_address,
    ipv4_gateway,
    ipv4_route,
    ipv6_address,
    ipv6_gateway,
    ipv6_route,
    mount_options,
    mtu,
    no_value,
    one_of,
    parse_command,
    parse_log_level,
    parse_mount_auto,
    parse_mount_fields,
    parse_namespaces,
    parse_rootfs_path,
    parse_signal,
    relative_cgroup_path,
    rlimit,
    share_target,
    signed,
    time_offset,
    unix_socket_address,
    unsigned,
    uts_name,
    veth_vlan_id,
)

# --- what the engine acts on -------------------------------------------------

HONOURED_AUTO_MOUNTS = frozenset({"proc", "sys", "cgroup"})
HONOURED_NET_TYPES = frozenset({"empty", "none", "veth", "macvlan"})


def _auto_mounts_honoured(value: str) -> bool:
    return all(kind in HONOURED_AUTO_MOUNTS for kind, _ in parse_mount_auto(value))


def _gateway_honoured(value: str) -> bool:
    return value != "auto"   # LXC's "auto" means the bridge's address, which lxcsm does not look up


# LXC's tests for the two LSMs it drives: AppArmor's module parameter (lsm/apparmor.c), and
# libselinux's is_selinux_enabled(), which needs selinuxfs mounted.  Without either, LXC runs
# its "nop" LSM, which ignores every apparmor and selinux key: so does lxcsm, which honours
# them that way.  On a host with the LSM, preflight refuses them.
LSM_PRESENT = MappingProxyType({
    "apparmor": ("/sys/module/apparmor/parameters/enabled", "Y"),
    "selinux": ("/sys/fs/selinux/enforce", None),
})


def lsm_enabled(lsm: str) -> bool:
    path, expected = LSM_PRESENT[lsm]
    try:
        with open(path) as state:
            return expected is None or state.read(1) == expected
    except OSError:
        return False


def _apparmor_absent(value: str) -> bool:
    return not lsm_enabled("apparmor")


def _selinux_absent(value: str) -> bool:
    return not lsm_enabled("selinux")


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
    return KeySpec(no_value, honoured=honoured, repeat=Repeat.RESET_ONLY,
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


def _net(check: Callable[[str], object], repeat: Repeat = Repeat.REPLACE,
         net_type: str | None = None,
         honoured: bool | Callable[[str], bool] = True) -> KeySpec:
    # A device's sub-keys count as honoured: whether the device as a whole is
    # supported is decided by its type (see NET_SUBKEYS["type"]).
    return KeySpec(check, honoured=honoured, repeat=repeat, family="lxc.net", net_type=net_type)


NET_SUBKEYS: Mapping[str, KeySpec] = MappingProxyType({
    "type": _net(one_of(*NET_TYPES), honoured=lambda value: value in HONOURED_NET_TYPES),
    "flags": _net(anything),  # LXC treats any value as "up"
    "link": _net(interface_name),
    "name": _net(interface_name),
    "hwaddr": _net(hwaddr),
    "mtu": _net(mtu),
    "ipv4.address": _net(ipv4_address, Repeat.APPEND),
    "ipv4.gateway": _net(ipv4_gateway, honoured=_gateway_honoured),
    "ipv6.address": _net(ipv6_address, Repeat.APPEND),
    "ipv6.gateway": _net(ipv6_gateway, honoured=_gateway_honoured),
    "l2proxy": _net(boolean, honoured=False),
    "script.up": _net(anything, honoured=False),
    "script.down": _net(anything, honoured=False),
    "veth.pair": _net(interface_name, net_type="veth"),
    "veth.mode": _net(one_of("bridge", "router"), net_type="veth",
                      honoured=lambda value: value == "bridge"),
    "veth.vlan.id": _net(veth_vlan_id, net_type="veth", honoured=False),
    "veth.vlan.tagged.id": _net(bridge_vlan_id, Repeat.APPEND, net_type="veth", honoured=False),
    "veth.n_rxqueues": _net(integer_in(1, 2**31 - 1), net_type="veth", honoured=False),
    "veth.n_txqueues": _net(integer_in(1, 2**31 - 1), net_type="veth", honoured=False),
    "veth.ipv4.route": _net(ipv4_route, Repeat.APPEND, net_type="veth", honoured=False),
    "veth.ipv6.route": _net(ipv6_route, Repeat.APPEND, net_type="veth", honoured=False),
    "macvlan.mode": _net(one_of("private", "vepa", "bridge", "passthru"), net_type="macvlan"),
    "ipvlan.mode": _net(one_of("l3", "l3s", "l2"), net_type="ipvlan"),
    "ipvlan.isolation": _net(one_of("bridge", "private", "vepa"), net_type="ipvlan"),
    "vlan.id": _net(integer_in(0, 65535), net_type="vlan"),
})
# lxc.net.N on its own: an empty value removes device N.
_NET_DEVICE = KeySpec(no_value, honoured=True, repeat=Repeat.RESET_ONLY, family="lxc.net")
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


# The namespaces lxcsm joins for lxc.namespace.share.NAME (spawn setns(2)s into them around
# its clone3).  LXC also joins user and mnt; lxcsm refuses them rather than set a container
# up otherwise than asked.  time: LXC 5.0.2 fails every such start (its do_share_ns() calls
# setns in a process that shares its parent's memory, which the kernel refuses for a time
# namespace: EUSERS), so lxcsm refuses it too, before anything starts.
JOINED_NAMESPACES = ("net", "ipc", "uts", "pid", "cgroup")
_NOT_JOINED = {
    "user": "the child would set up the container without root over its own mounts and devices",
    "mnt": "the rootfs would be mounted inside the other container's mount namespace",
    "time": "LXC 5.0.2 fails such a start too: its setns(2) into a time namespace gets EUSERS",
}


def _namespace_share_members(name: str) -> tuple[str, KeySpec]:
    if name not in NAMESPACES:
        raise ValueError(f"unknown namespace {name!r}")
    if name in _NOT_JOINED:
        return name, KeySpec(_refuse_share(name))
    return name, KeySpec(share_target, honoured=True)


def _refuse_share(name: str):
    def refuse(value: str) -> str:
        raise ValueError(f"lxcsm does not join another {name} namespace ({_NOT_JOINED[name]}); it joins "
                         + ", ".join(JOINED_NAMESPACES))
    return refuse


# A hook is a command line (LXC runs it through sh -c), its program first.  clone and
# destroy hooks are never run by a start, under LXC either: nothing to report for them.
_HOOK = KeySpec(parse_command, honoured=True, repeat=Repeat.APPEND, family="lxc.hook")
_cgroup_path = KeySpec(relative_cgroup_path, honoured=True)

# Every key of LXC 5.0.2's config parser (config_jump_table in confile.c).
# Entries with `members` are prefixes: lxc.net.N.*, lxc.cgroup.CONTROLLER.FILE,
# lxc.cgroup2.FILE, lxc.prlimit.RESOURCE, lxc.sysctl.NAME, lxc.proc.FILE and
# lxc.namespace.share.NAMESPACE. A bare prefix without the dot (lxc.cgroup)
# only resets its members; one ending in a dot is not a key on its own.
KEYS: Mapping[str, KeySpec] = MappingProxyType({
    "lxc.apparmor.allow_incomplete": KeySpec(boolean, honoured=_apparmor_absent),
    "lxc.apparmor.allow_nesting": KeySpec(boolean, honoured=_apparmor_absent),
    "lxc.apparmor.profile": KeySpec(anything, honoured=_apparmor_absent),
    "lxc.apparmor.raw": KeySpec(anything, honoured=_apparmor_absent, repeat=Repeat.APPEND),
    "lxc.arch": KeySpec(one_of(*ARCHITECTURES), honoured=True),
    "lxc.autodev": KeySpec(boolean, honoured=True),
    "lxc.autodev.tmpfs.size": KeySpec(signed, honoured=True),
    "lxc.cap.drop": KeySpec(capabilities, honoured=True, repeat=Repeat.APPEND),
    "lxc.cap.keep": KeySpec(capabilities_to_keep, honoured=True, repeat=Repeat.APPEND),
    "lxc.cgroup": _family("lxc.cgroup", anything, Repeat.APPEND, form=_CGROUP1_FILE, honoured=True),
    "lxc.cgroup.dir": _cgroup_path,
    "lxc.cgroup.dir.container": _cgroup_path,
    "lxc.cgroup.dir.container.inner": KeySpec(cgroup_dir_name, honoured=True),
    "lxc.cgroup.dir.monitor": _cgroup_path,
    "lxc.cgroup.dir.monitor.pivot": _cgroup_path,
    "lxc.cgroup.relative": KeySpec(boolean, honoured=True),
    "lxc.cgroup2": _family("lxc.cgroup2", anything, Repeat.APPEND, form=_CGROUP2_FILE, honoured=True),
    "lxc.console.buffer.size": KeySpec(byte_size_or_auto, honoured=True),
    "lxc.console.logfile": KeySpec(anything, honoured=True),
    # auto, none, or a terminal the monitor relays to the console (lxc-start -c), as LXC's.
    "lxc.console.path": KeySpec(anything, honoured=True),
    "lxc.console.rotate": KeySpec(boolean, honoured=True),
    "lxc.console.size": KeySpec(byte_size_or_auto, honoured=True),
    "lxc.environment": KeySpec(environment_entry, honoured=True, repeat=Repeat.APPEND),
    "lxc.ephemeral": KeySpec(boolean, honoured=True),
    # lxc-execute's init command: lxc-start never reads it, nor does lxcsm start.
    "lxc.execute.cmd": KeySpec(parse_command, honoured=True),
    # lxc.group and lxc.start.*: read by lxcsm autostart, as by lxc-autostart; a start has no use for them.
    "lxc.group": KeySpec(anything, honoured=True, repeat=Repeat.APPEND),
    "lxc.hook": KeySpec(no_value, honoured=True, repeat=Repeat.RESET_ONLY),
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
    "lxc.hook.version": KeySpec(boolean, honoured=True),
    "lxc.idmap": KeySpec(idmap, honoured=True, repeat=Repeat.APPEND),
    "lxc.include": KeySpec(anything, honoured=True, repeat=Repeat.APPEND),
    "lxc.init.cmd": KeySpec(parse_command, honoured=True),
    "lxc.init.cwd": KeySpec(anything, honoured=True),
    "lxc.init.gid": KeySpec(unsigned, honoured=True),
    "lxc.init.groups": KeySpec(group_ids, honoured=True),
    "lxc.init.uid": KeySpec(unsigned, honoured=True),
    "lxc.keyring.session": KeySpec(boolean, honoured=True),
    "lxc.log.file": KeySpec(anything, honoured=True),
    "lxc.log.level": KeySpec(parse_log_level, honoured=True),
    "lxc.log.syslog": KeySpec(one_of(*SYSLOG_FACILITIES, ignore_case=True), honoured=True),
    "lxc.monitor.signal.pdeath": KeySpec(parse_signal, honoured=True),
    "lxc.monitor.unshare": KeySpec(unsigned, honoured=True),
    # Tokens accumulate across lines (LXC ORs them into one mask).
    "lxc.mount.auto": KeySpec(parse_mount_auto, honoured=_auto_mounts_honoured,
                              repeat=Repeat.APPEND),
    "lxc.mount.entry": KeySpec(parse_mount_fields, honoured=True, repeat=Repeat.APPEND),
    "lxc.mount.fstab": KeySpec(anything, honoured=True),
    # Like lxc.mount.auto, namespace names accumulate across lines.
    "lxc.namespace.clone": KeySpec(parse_namespaces, honoured=True, repeat=Repeat.APPEND),
    "lxc.namespace.keep": KeySpec(parse_namespaces, honoured=True, repeat=Repeat.APPEND),
    "lxc.namespace.share.": KeySpec(no_value, honoured=True, members=_namespace_share_members),
    "lxc.net": KeySpec(no_value, honoured=True, repeat=Repeat.RESET_ONLY, family="lxc.net"),
    "lxc.net.": KeySpec(no_value, members=_net_members),
    "lxc.no_new_privs": KeySpec(boolean, honoured=True),
    # One value per resource or sysctl name: setting it again replaces it.
    "lxc.prlimit": _family("lxc.prlimit", rlimit, Repeat.REPLACE, RLIMIT_RESOURCES, honoured=True),
    "lxc.proc": _family("lxc.proc", anything, Repeat.APPEND, honoured=True),
    "lxc.pty.max": KeySpec(unsigned, honoured=True),
    # Whether lxc-destroy may remove the rootfs: a start never reads it, under LXC either.
    "lxc.rootfs.managed": KeySpec(boolean, honoured=True),
    "lxc.rootfs.mount": KeySpec(anything, honoured=True),
    "lxc.rootfs.options": KeySpec(mount_options, honoured=True),
    "lxc.rootfs.path": KeySpec(parse_rootfs_path, honoured=True),
    "lxc.sched.core": KeySpec(boolean, honoured=True),
    "lxc.seccomp.allow_nesting": KeySpec(boolean, honoured=True),
    "lxc.seccomp.notify.cookie": KeySpec(anything, honoured=True),
    "lxc.seccomp.notify.proxy": KeySpec(unix_socket_address, honoured=True),
    "lxc.seccomp.profile": KeySpec(anything, honoured=True),
    "lxc.selinux.context": KeySpec(anything, honoured=_selinux_absent),
    "lxc.selinux.context.keyring": KeySpec(anything, honoured=_selinux_absent),
    "lxc.signal.halt": KeySpec(parse_signal, honoured=True),
    "lxc.signal.reboot": KeySpec(parse_signal, honoured=True),
    "lxc.signal.stop": KeySpec(parse_signal, honoured=True),
    "lxc.start.auto": KeySpec(boolean, honoured=True),
    "lxc.start.delay": KeySpec(unsigned, honoured=True),
    "lxc.start.order": KeySpec(signed, honoured=True),
    "lxc.sysctl": _family("lxc.sysctl", anything, Repeat.REPLACE, honoured=True),
    "lxc.time.offset.boot": KeySpec(time_offset, honoured=True),
    "lxc.time.offset.monotonic": KeySpec(time_offset, honoured=True),
    "lxc.tty.dir": KeySpec(anything, honoured=True),
    "lxc.tty.max": KeySpec(unsigned, honoured=True),
    "lxc.uts.name": KeySpec(uts_name, honoured=True),
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


def is_honoured(spec: KeySpec, value: str) -> bool:
    return spec.honoured(value) if callable(spec.honoured) else spec.honoured
