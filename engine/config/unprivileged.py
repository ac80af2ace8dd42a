"""A container started by an ordinary user (not root): where its containers live, and what
the host must give that user, checked before anything is made.

LXC 5.0.2's facts, which lxcsm follows:

* the default LXCPATH of a user other than root is ~/.local/share/lxc (engine/config/lxcpath.py);
* the container needs its own user namespace (lxc.idmap): an ordinary user can make no
  other namespace, mount nothing and make no device node on the host's behalf; its maps
  are written by newuidmap/newgidmap (Debian's `uidmap` package), which allow only the
  ranges /etc/subuid and /etc/subgid give the user, and its own uid and primary gid
  (one id each) - so every lxc.idmap line must be one of those;
* its cgroups go below the cgroup it was started in (cgfsng: an unprivileged caller's base
  is its own cgroup, never PID 1's), which must be delegated to it: on cgroup2 the files
  /sys/kernel/cgroup/delegate lists writable by it, as systemd's Delegate=yes makes them.
  LXC skips a hierarchy it cannot write, and starts the container without its limits;
  lxcsm refuses instead, on a cgroup2-only host, and on a host with cgroup v1 controllers
  (whose directories an ordinary user is never given) at all;
* a network device needs root on the host: LXC makes a user's veth through the setuid
  lxc-user-nic, which lxcsm does not support; `empty` (and `none`) need nothing.
"""

from __future__ import annotations

import os
import pwd

from lxcsm.engine.config.model import ConfigError, Setting
from lxcsm.engine.linux import cgroups, idmap

SUBORDINATE_FILES = {"u": "/etc/subuid", "g": "/etc/subgid"}
NETWORKS_WITHOUT_ROOT = ("empty", "none")
DELEGATED_SCOPE = "systemd-run --user --scope -p Delegate=yes lxcsm start ..."


def subordinate_ranges(file: str, user: str, uid: int) -> list[tuple[int, int]]:
    """(first id, count) of each range /etc/subuid or /etc/subgid gives the user, who may be
    named by name or by uid there (as shadow reads them)."""
    found = []
    try:
        with open(file) as listing:
            for line in listing:
                owner, _, rest = line.strip().partition(":")
                first, _, count = rest.partition(":")
                if owner in (user, str(uid)) and first.isdigit() and count.isdigit():
                    found.append((int(first), int(count)))
    except FileNotFoundError:
        pass
    return found


def _covered(outside: int, count: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= outside and outside + count <= first + length for first, length in ranges)


def check(config) -> None:
    """Raise ConfigError for the first thing an ordinary user's start of `config` would lack."""
    idmaps = config.in_effect("lxc.idmap")
    if not idmaps:
        raise ConfigError(config.path, 0, "lxc.idmap",
                          "a container started by a user other than root needs its own user namespace: map its "
                          "ids to yours with lxc.idmap = u 0 FIRST COUNT and g 0 FIRST COUNT, FIRST and COUNT "
                          "from your lines in /etc/subuid and /etc/subgid")
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    own = {"u": uid, "g": gid}
    for _key, setting in idmaps:
        kind, inside, outside, count = _parsed(setting)
        if count == 1 and outside == own[kind]:
            continue   # the helpers let a user map its own uid and primary gid
        file = SUBORDINATE_FILES[kind]
        ranges = subordinate_ranges(file, user, uid)
        if not _covered(outside, count, ranges):
            has = ", ".join(f"{first}-{first + length - 1}" for first, length in ranges) or "none"
            option = "--add-subuids" if kind == "u" else "--add-subgids"
            raise _error(setting, f"host {kind}ids {outside}-{outside + count - 1} are not {user}'s in {file} "
                                  f"(its ranges: {has}); as root: usermod {option} "
                                  f"{outside}-{outside + count - 1} {user}")
    for kind in ("u", "g"):
        helper = idmap.find_helper(kind)
        if helper is None:
            raise _error(idmaps[0][1], f"{idmap.HELPERS[kind]} is not installed: it writes a user's id maps "
                                       f"(Debian: apt-get install {idmap.HELPERS_PACKAGE})")
        if not idmap.helper_privileged(helper):
            raise _error(idmaps[0][1], f"{helper} is neither setuid root nor has file capabilities: it "
                                       f"cannot write id maps (reinstall Debian's {idmap.HELPERS_PACKAGE})")
    if config.rootfs_idmap() is not None:
        raise _error(config.in_effect("lxc.rootfs.options")[-1][1],
                     "idmap= needs root on the host (only it may idmap a mount of the host's filesystem, "
                     "for LXC too): use a rootfs owned by the container's root ids instead")
    idmapped = config.idmapped_mount_entries()
    if idmapped:
        raise _error(idmapped[0].origin, "idmap= needs root on the host (only it may idmap a mount of the host's "
                                         "filesystem, for LXC too): bind a directory owned by the container's ids "
                                         "instead")
    for device in config.networks:
        if device.type not in NETWORKS_WITHOUT_ROOT:
            raise _error(device.origin, f"a {device.type} network device needs root on the host (LXC makes a "
                                        f"user's veth through lxc-user-nic, which lxcsm does not support): "
                                        f"use lxc.net.{device.index}.type = empty")
    _check_delegated_cgroup(idmaps[0][1])


def _parsed(setting: Setting) -> tuple[str, int, int, int]:
    kind, inside, outside, count = setting.value.split()
    return kind, int(inside), int(outside), int(count)


def _check_delegated_cgroup(origin: Setting) -> None:
    found = cgroups.hierarchies()
    if not cgroups.unified_only(found):
        v1 = ",".join(h.label for h in found if h.version == 1)
        raise _error(origin, f"this host has cgroup v1 hierarchies ({v1}), which are never delegated to an "
                             "ordinary user (LXC skips them and starts the container without their limits): "
                             "lxcsm starts a user's containers on a cgroup2-only host")
    unified = found[0]
    here = unified.started_in
    for name in ["", *idmap.delegated_files(2)]:
        path = os.path.join(here, name)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise _error(origin, f"your cgroup {here} is not delegated to you ({path} is not writable): run it "
                                 f"in a delegated cgroup: {DELEGATED_SCOPE}")


def _error(setting: Setting, message: str) -> ConfigError:
    return ConfigError(setting.file, setting.line, setting.key, message)
