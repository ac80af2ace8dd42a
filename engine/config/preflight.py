"""Everything a start can check before it changes anything on the host.

LXC discovers most bad configs halfway through a start, with cgroups made
and a child cloned that must then be undone.  Here a config that names a
missing rootfs, an init that is not in it, a bind source that does not
exist or a filesystem type the kernel does not know fails before the first
change, with the file, line and key to fix.

The same goes for what the engine does not act on yet but LXC would fail
on: a hook that is missing or not executable, a seccomp policy file LXC
cannot parse, a network link that does not exist, a cgroup setting whose
controller or file this host does not have.  A start with any of those is
refused here, as LXC would fail it halfway.

What cannot be known beforehand (a mount the kernel refuses, an exec that
fails) still fails in its state, and is cleaned up by the aborting state.
"""

from __future__ import annotations

import errno
import os
import socket

from lxcsm.engine.config import keys, unprivileged
from lxcsm.engine.config.model import ConfigError, Setting
from lxcsm.engine.config.values import IdMap, parse_command, parse_idmap
from lxcsm.engine.errors import describe
from lxcsm.engine.linux import cgroups, idmap, idmapped_mounts, kernel
from lxcsm.engine.linux.mount_options import parse_mount_options
from lxcsm.engine.linux.paths import container_path, in_rootfs

_DEFAULT_PATH = ("/bin", "/usr/bin")   # what exec uses when lxc.environment sets no PATH


def _setting(config, key: str) -> Setting:
    """The setting that decided `key` (the last one), or a stand-in on line 0."""
    for setting in reversed(config.settings):
        if setting.key == key:
            return setting
    return Setting(config.path, 0, key, "")


def _fail(config, key: str, message: str, origin: Setting | None = None) -> ConfigError:
    where = origin or _setting(config, key)
    return ConfigError(where.file, where.line, where.key, message)


def _known_filesystems() -> set[str]:
    with open("/proc/filesystems") as filesystems:
        return {line.split()[-1] for line in filesystems if line.strip()}


def _binds(config) -> dict[str, str]:
    """Container path -> host source of every plain bind entry, for looking through them."""
    binds = {}
    for entry in config.mount_entries:
        options = parse_mount_options(entry.options)
        if options.bind and not options.relative:
            binds[container_path(config.rootfs_path, entry.target)] = entry.source
    return binds


def _exec_path(config) -> list[str]:
    """The directories exec searches for a command without a "/": the last PATH that
    lxc.environment sets, else the default."""
    path = dict(e.partition("=")[::2] for e in config.environment if "=" in e).get("PATH")
    return path.split(":") if path else list(_DEFAULT_PATH)


def _find_command(config, command: str, binds: dict[str, str], exec_path: list[str]) -> str | None:
    if "/" in command:
        candidates = [command if command.startswith("/") else os.path.join(config.init_cwd or "/", command)]
    else:
        candidates = [os.path.join(d, command) for d in exec_path]
    overlay = config.rootfs_overlay()
    # An overlay's merged view, approximately: its upper layer, then each lower one.
    roots = [overlay[1], *overlay[0].split(":")] if overlay else [config.rootfs_path]
    for candidate in candidates:
        for root in roots:
            try:
                host = in_rootfs(root, candidate, binds)
            except OSError:   # a symlink loop in the rootfs: not there, as far as exec goes
                continue
            if os.path.isfile(host):
                return host
    return None


def _error(setting: Setting, message: str) -> ConfigError:
    return ConfigError(setting.file, setting.line, setting.key, message)


# --- hooks -------------------------------------------------------------------

# The hooks a start runs, and where their program is looked for: "start" runs
# inside the container after pivot_root; the others run with the host's root
# (clone and destroy belong to lxc-copy and lxc-destroy, not to a start).
HOST_HOOKS = ("pre-start", "pre-mount", "mount", "autodev", "start-host", "stop", "post-stop")
CONTAINER_HOOKS = ("start",)


def _program_problem(path: str) -> str | None:
    """Why `path` cannot be executed as a hook, or None."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.X_OK):
        return f"is not executable (mode {os.stat(path).st_mode & 0o7777:04o})"
    return None


def _check_hooks(config, binds: dict[str, str], exec_path: list[str]) -> None:
    for canonical, setting in config.in_effect("lxc.hook"):
        kind = canonical.removeprefix("lxc.hook.")
        if kind not in HOST_HOOKS + CONTAINER_HOOKS:
            continue
        program = parse_command(setting.value)[0]
        if kind in CONTAINER_HOOKS:
            found = _find_command(config, program, binds, exec_path)
            if found is None:
                raise _error(setting, f"hook {program} not found in rootfs {config.rootfs_path}")
            problem = _program_problem(found)
        elif "/" in program:
            problem = _program_problem(program)
        else:
            import shutil  # only hooks named without a path need it
            problem = None if shutil.which(program) else "is not in PATH"
        if problem:
            raise _error(setting, f"hook {program} {problem}")


# --- seccomp -----------------------------------------------------------------

def _check_seccomp(config) -> None:
    policies = config.in_effect("lxc.seccomp.profile")
    if not policies:
        return
    from lxcsm.engine.config import seccomp_policy  # only configs with a policy pay for its parser
    for _canonical, setting in policies:
        path = setting.as_path()
        try:
            policy = seccomp_policy.read(path)
            notify = next((rule for rule in policy.rules if rule.action == "notify"), None)
            if policy.default_action == "notify":
                raise seccomp_policy.PolicyError(path, 2, "notify as the default action is not supported")
            if notify is not None and not config.get_item("lxc.seccomp.notify.proxy"):
                # LXC would keep the listener for a client to take (its get_seccomp_notify_fd
                # command, LXD's way), which lxcsm does not serve: the syscalls would hang.
                raise seccomp_policy.PolicyError(path, notify.line, "the notify action needs "
                                                 "lxc.seccomp.notify.proxy = unix:PATH to answer it")
        except OSError as err:
            raise _error(setting, f"cannot read seccomp policy {path}: {err.strerror}") from None
        except seccomp_policy.PolicyError as err:
            raise _error(setting, f"seccomp policy {err}") from None


# --- network -----------------------------------------------------------------

# Device types whose lxc.net.N.link names a host interface: the bridge a veth
# is attached to (optional), the lower device of the others (required).
LINK_OPTIONAL = ("veth",)
LINK_REQUIRED = ("macvlan", "ipvlan", "vlan", "phys")


def _check_networks(config) -> None:
    if "net" in config.namespace_shares():
        return   # joined: no device is made there (as LXC, which does not look at them either)
    shares_host_network = "net" in config.namespace_keep or any(d.type == "none" for d in config.networks)
    for device in config.networks:
        if device.type == "veth":
            _check_veth(config, device, shares_host_network)
        if device.type not in LINK_OPTIONAL + LINK_REQUIRED:
            continue
        prefix = f"lxc.net.{device.index}"
        if device.link is None:
            if device.type in LINK_REQUIRED:
                raise _error(device.origin, f"a {device.type} device needs {prefix}.link "
                                            f"(the host interface it is made from)")
            continue
        setting = config.in_effect(f"{prefix}.link")[-1][1]
        if not _interface_exists(device.link):
            raise _error(setting, f"no network interface {device.link} on the host")
        if device.type == "veth" and not _is_bridge(device.link):
            raise _error(setting, f"{device.link} is not a bridge: a veth's link is the bridge its "
                                  f"host end joins (Open vSwitch is not supported)")


def _interface_exists(name: str) -> bool:
    """Whether this network namespace has an interface `name` (asked of the kernel through a
    socket: /sys/class/net shows the namespace sysfs was mounted in, maybe another)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _is_bridge(name: str) -> bool:
    from lxcsm.engine.linux import netlink  # veth configs only, which load it for the start anyway
    return netlink.link_kind(name) == "bridge"


def _check_veth(config, device, shares_host_network: bool) -> None:
    """What LXC would only find out half-way through a start."""
    prefix = f"lxc.net.{device.index}"
    if shares_host_network:
        raise _error(device.origin, "a veth needs the container's own network namespace "
                                    "(lxc.namespace.keep or a 'none' network shares the host's)")
    if device.veth_pair and _interface_exists(device.veth_pair):
        setting = config.in_effect(f"{prefix}.veth.pair")[-1][1]
        raise _error(setting, f"a network interface {device.veth_pair} already exists on the host")
    for family, addresses, gateway in (("ipv4", device.ipv4, device.ipv4_gateway),
                                       ("ipv6", device.ipv6, device.ipv6_gateway)):
        if gateway and gateway != "auto":
            setting = config.in_effect(f"{prefix}.{family}.gateway")[-1][1]
            if not device.flags:
                raise _error(setting, f"a gateway needs the device up ({prefix}.flags = up)")
            if not addresses and gateway != "dev":
                raise _error(setting, f"a gateway needs an address ({prefix}.{family}.address)")


# --- what would weaken the container if it were ignored -----------------------

def _check_security(config) -> None:
    """Refuse what LXC would enforce but lxcsm cannot yet: running it unenforced would give
    the container more than its config grants."""
    for lsm in keys.LSM_PRESENT:
        settings = [setting for key in keys.KEYS if key.startswith(f"lxc.{lsm}.")
                    for _canonical, setting in config.in_effect(key)]
        if settings and keys.lsm_enabled(lsm):
            raise _error(settings[-1], f"this host runs {lsm}, whose confinement lxcsm does not "
                                          f"apply yet (LXC would)")


def _check_user_namespace(config) -> None:
    """lxc.idmap as far as lxcsm honours it: mapping the container's root, with a rootfs its
    root can reach (an ordinary user's start: engine/config/unprivileged.py checks more).
    Anything else is refused, never run unmapped."""
    idmaps = config.in_effect("lxc.idmap")
    if not idmaps:
        return
    first = idmaps[0][1]
    if "user" in config.namespace_keep:
        raise _fail(config, "lxc.namespace.keep", "lxc.idmap needs the container's own user namespace "
                                                  "(user cannot be kept)")
    if config.namespace_clone and "user" not in config.namespace_clone:
        raise _fail(config, "lxc.namespace.clone", "lxc.idmap needs a user namespace: add user to it "
                                                   "(LXC would fail writing the maps)")
    _check_ranges(idmaps)
    for kind, name in (("u", "uid"), ("g", "gid")):
        if config.container_root_id(kind) is None:
            raise _error(first, f"lxc.idmap maps no host {name} to the container's {name} 0 "
                                f"(a container whose root is unmapped is not supported yet)")
    maps = config.id_maps()
    wanted = [(key, kind, config.get_item(key)) for key, kind in (("lxc.init.uid", "u"), ("lxc.init.gid", "g"))]
    wanted += [("lxc.init.groups", "g", group) for group in (config.get_item("lxc.init.groups") or "").split(",")]
    for key, kind, value in wanted:
        if value and not any(m.kind == kind and m.host_id(int(value)) is not None for m in maps):
            raise _fail(config, key, f"{value} is not mapped by lxc.idmap: init could not take it in its user "
                                     f"namespace (LXC fails the start at exec)")
    if os.geteuid() == 0:
        _check_roots_ranges(config)
    uid, gid = config.container_root_id("u"), config.container_root_id("g")
    blocked = _unsearchable_ancestor(config.rootfs_path, uid, gid, config.id_maps())
    if blocked:
        path, mode = blocked
        raise _fail(config, "lxc.rootfs.path",
                    f"the container's root (host uid {uid}, gid {gid}) cannot enter {path} (mode {mode:04o}) "
                    f"on the way to its rootfs; LXC fails such a start too")


def _check_roots_ranges(config) -> None:
    """As LXC's lxc_map_ids() for root: with newuidmap and newgidmap installed (on PATH, setuid
    or with file capabilities), the maps of a container root starts go through them too - but
    maps of the host's root - and they allow root only its own ranges of /etc/subuid and
    /etc/subgid, so that shadow cannot hand the same host ids to a user.  lxcsm writes root's
    maps itself, and refuses here what the helpers would refuse LXC."""
    maps = config.id_maps()
    if any(m.kind == "u" and m.outside <= 0 < m.outside + m.count for m in maps):
        return   # LXC writes a map of the host's root directly (the helpers would refuse it)
    helpers = [idmap.find_helper(kind) for kind in ("u", "g")]
    if not all(helper is not None and idmap.helper_privileged(helper) for helper in helpers):
        return   # LXC writes the maps directly, as lxcsm does
    for _key, setting in config.in_effect("lxc.idmap"):
        mapped = parse_idmap(setting.value)
        file = unprivileged.SUBORDINATE_FILES[mapped.kind]
        ranges = unprivileged.subordinate_ranges(file, "root", 0)
        last = mapped.outside + mapped.count - 1
        if not any(first <= mapped.outside and last < first + count for first, count in ranges):
            option = "--add-subuids" if mapped.kind == "u" else "--add-subgids"
            raise _error(setting, f"{idmap.HELPERS[mapped.kind]} is installed, and LXC then maps root's containers "
                                  f"through it, which allows host ids {mapped.outside}-{last} only if they are "
                                  f"root's in {file}: usermod {option} {mapped.outside}-{last} root")


def _check_idmapped_rootfs(config) -> None:
    """lxc.rootfs.options = idmap=...: whether the kernel will idmap this rootfs, asked now
    (a trial copy, dropped), not once the container's namespaces exist as LXC finds out."""
    idmap = config.rootfs_idmap()
    if idmap is None:
        return
    if config.rootfs_overlay() is not None:
        raise _fail(config, "lxc.rootfs.options", "idmap= needs a directory rootfs, not an overlay "
                                                  "(LXC idmaps no overlay rootfs either)")
    if idmap != "container" and not idmap.startswith("/"):   # the monitor opens it from another directory
        raise _fail(config, "lxc.rootfs.options", f"idmap={idmap}: the user namespace's path must be absolute")
    problem = None if idmap == "container" else idmapped_mounts.user_namespace_problem(idmap)
    if problem:
        raise _fail(config, "lxc.rootfs.options", f"idmap={idmap}: {problem}")
    try:
        idmapped_mounts.check_idmappable(config.rootfs_path)
    except idmapped_mounts.NotIdmappable as err:
        raise _fail(config, "lxc.rootfs.options", f"idmap={idmap}: {err}") from None
    except OSError as err:   # ENOSYS: a kernel before 5.12 has no mount_setattr
        raise _fail(config, "lxc.rootfs.options", f"idmap={idmap}: this kernel cannot idmap mounts "
                                                  f"({describe(err)})") from None


def _check_idmapped_entries(config) -> None:
    """lxc.mount.entry (and lxc.mount.fstab) lines with idmap=: what LXC 5.0.2 idmaps - a bind
    with no filesystem options - and whether the kernel will idmap its source, asked now (a
    trial copy, dropped), not once the container's namespaces exist as LXC finds out."""
    for entry in config.idmapped_mount_entries():
        problem = _idmapped_entry_problem(config, entry)
        if problem:
            idmap = parse_mount_options(entry.options).idmap
            raise _fail(config, entry.origin.key, f"idmap={idmap}: {problem}", entry.origin)


def _idmapped_entry_problem(config, entry) -> str | None:
    options = parse_mount_options(entry.options)
    idmap = options.idmap
    if not options.bind or entry.fstype not in ("none", ""):
        return f"only a bind can be idmapped, not a {entry.fstype} mount (LXC 5.0.2 refuses it too)"
    if options.data:
        return f"an idmapped bind takes no filesystem options ({options.data}; LXC 5.0.2 refuses them too)"
    if options.relative and config.rootfs_overlay() is not None:
        return "a source relative to an overlay rootfs cannot be idmapped by lxcsm"
    if idmap == "container" and not config.id_maps():
        return ("the container has no user namespace of its own to idmap to: add lxc.idmap, or name one "
                "with idmap=PATH (LXC's start fails)")
    if idmap != "container" and not idmap.startswith("/"):   # the monitor opens it from another directory
        return "the user namespace's path must be absolute"
    problem = None if idmap == "container" else idmapped_mounts.user_namespace_problem(idmap)
    if problem:
        return problem
    source = in_rootfs(config.rootfs_path, entry.source) if options.relative else entry.source
    if not os.path.exists(source):   # optional or not: LXC's start fails without it
        return f"bind source {entry.source} does not exist"
    try:
        idmapped_mounts.check_idmappable(source, recursive=bool(options.flags & kernel.MS_REC))
    except idmapped_mounts.NotIdmappable as err:
        return str(err)
    except OSError as err:   # ENOSYS: a kernel before 5.12 has no mount_setattr
        return f"this kernel cannot idmap mounts ({describe(err)})"
    return None


# The kernel takes at most this many ranges in one map file (since 4.15; 5 before).
MAX_ID_RANGES = 340


def _check_ranges(idmaps) -> None:
    """What the kernel would refuse of the whole map at write_id_maps: two ranges of one kind
    over the same ids, inside the container or on the host, or too many ranges."""
    seen: list[tuple[IdMap, Setting]] = []
    for _key, setting in idmaps:
        new = parse_idmap(setting.value)
        for old, where in seen:
            if old.kind != new.kind:
                continue
            for side, a, b in (("in the container", old.inside, new.inside), ("on the host", old.outside, new.outside)):
                if a < b + new.count and b < a + old.count:
                    raise _error(setting, f"'{setting.value}' overlaps '{where.value}' ({where.file}:{where.line}) "
                                          f"{side}: the kernel refuses such a map")
        seen.append((new, setting))
        if sum(1 for old, _where in seen if old.kind == new.kind) > MAX_ID_RANGES:
            raise _error(setting, f"more than {MAX_ID_RANGES} lxc.idmap ranges of one kind: the kernel takes no more")


def _unsearchable_ancestor(path: str, uid: int, gid: int, maps) -> tuple[str, int] | None:
    """The first directory on the way to `path` that the host ids uid:gid may not search
    (with its mode), as the kernel decides it for a user namespace's root: it has
    CAP_DAC_OVERRIDE over a directory only if the namespace maps the directory's owner
    and group; otherwise the owner, group and other bits decide."""
    def mapped(host_id: int, kind: str) -> bool:
        return any(m.kind == kind and 0 <= host_id - m.outside < m.count for m in maps)

    current = "/"
    for part in [p for p in os.path.abspath(path).split("/") if p]:
        current = os.path.join(current, part)
        status = os.stat(current)
        if mapped(status.st_uid, "u") and mapped(status.st_gid, "g"):
            continue
        bit = 0o100 if status.st_uid == uid else 0o010 if status.st_gid == gid else 0o001
        if not status.st_mode & bit:
            return current, status.st_mode & 0o7777
    return None


def _check_core_scheduling(config) -> None:
    """LXC's core_scheduling() fails the start after the clone; here before anything."""
    if config.get_item("lxc.sched.core") != "1":
        return
    if "pid" in config.namespace_keep:
        raise _fail(config, "lxc.sched.core", "core scheduling needs the container's own pid namespace")
    try:
        kernel.core_scheduling_cookie(os.getpid())
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise _fail(config, "lxc.sched.core", "this kernel does not support core scheduling "
                                                  "(CONFIG_SCHED_CORE); LXC fails the start too") from None


# --- cgroups -----------------------------------------------------------------

# On cgroup2, LXC turns devices.allow/devices.deny into a BPF program: no such files.
CGROUP2_DEVICE_KEYS = ("devices.allow", "devices.deny")


def _cgroup_file_known(hierarchy, file: str) -> bool:
    """Whether the container's cgroup will have `file`.  A root cgroup lacks files every
    other cgroup has (pids.max, cpu.cfs_quota_us), so a cgroup below the one we start in is
    asked too; with none to ask, the file is taken on trust."""
    if os.path.exists(os.path.join(hierarchy.home, file)):
        return True
    if os.path.normpath(hierarchy.home) != os.path.normpath(hierarchy.mountpoint):
        return False   # a cgroup below the root has every file its children will have
    below = next((entry.path for entry in os.scandir(hierarchy.home) if entry.is_dir()), None)
    return below is None or os.path.exists(os.path.join(below, file))


def _check_cgroups(config) -> None:
    v1_settings = config.in_effect("lxc.cgroup")
    v2_settings = config.in_effect("lxc.cgroup2")
    if not v1_settings and not v2_settings:
        return
    found = cgroups.hierarchies()
    v1 = {controller: h for h in found if h.version == 1 for controller in h.controllers}
    v2 = next((h for h in found if h.version == 2), None)
    # As LXC: limits for the layout the host does not use are ignored (the config warns that
    # cgroup keys are not supported yet), so one config can carry both kinds.  A hybrid host
    # keeps its controllers on v1; a cgroup2-only host has no v1 controller at all.
    if any("=" not in c for c in v1):
        v2_settings = []
    else:
        v1_settings = []

    for canonical, setting in v1_settings:
        file = canonical.removeprefix("lxc.cgroup.")
        controller = file.partition(".")[0]
        hierarchy = v1.get(controller)
        if hierarchy is None:
            mounted = ", ".join(sorted(c for c in v1 if "=" not in c)) or "none: use lxc.cgroup2.*"
            raise _error(setting, f"cgroup v1 controller {controller!r} is not mounted on this host "
                                  f"(mounted: {mounted})")
        if not _cgroup_file_known(hierarchy, file):
            raise _error(setting, f"no file {file} in the {controller} hierarchy ({hierarchy.mountpoint})")

    for canonical, setting in v2_settings:
        file = canonical.removeprefix("lxc.cgroup2.")
        if v2 is None:
            raise _error(setting, "this host has no cgroup2 hierarchy (use lxc.cgroup.*)")
        if file in CGROUP2_DEVICE_KEYS:
            continue
        if any(os.path.exists(os.path.join(d, file)) for d in (v2.home, v2.mountpoint)):
            continue
        controller = file.partition(".")[0]
        try:
            with open(os.path.join(v2.mountpoint, "cgroup.controllers")) as available:
                controllers = available.read().split()
        except OSError:
            controllers = []
        if controller not in controllers:
            raise _error(setting, f"cgroup2 controller {controller!r} is not available on this host "
                                  f"(in {v2.mountpoint}: {' '.join(controllers) or 'none'})")


def check(config, command: tuple[str, ...], command_from_cli: bool) -> None:
    """Raise ConfigError for the first problem found; change nothing."""
    if not config.rootfs_path:
        raise _fail(config, "lxc.rootfs.path",
                    "no rootfs configured (lxcsm does not run containers on the host's root)")
    if not os.path.exists(config.rootfs_path):
        raise _fail(config, "lxc.rootfs.path", f"rootfs {config.rootfs_path} does not exist")
    if not os.path.isdir(config.rootfs_path):
        raise _fail(config, "lxc.rootfs.path", f"rootfs {config.rootfs_path} is not a directory")
    overlay = config.rootfs_overlay()
    for lower in overlay[0].split(":") if overlay else ():
        if not os.path.isdir(lower):
            raise _fail(config, "lxc.rootfs.path", f"overlay lower layer {lower} is not a directory")
    if config.rootfs_mount and not os.path.isdir(config.rootfs_mount):
        raise _fail(config, "lxc.rootfs.mount", f"{config.rootfs_mount} is not a directory")
    if "mnt" in config.namespace_keep:
        raise _fail(config, "lxc.namespace.keep", "a container needs its own mount namespace (mnt cannot be kept)")
    if config.init_cwd and not config.init_cwd.startswith("/"):
        raise _fail(config, "lxc.init.cwd", "must be an absolute path")

    known = _known_filesystems()
    for entry in config.mount_entries:
        options = parse_mount_options(entry.options)
        if options.optional:
            continue
        if options.bind:
            source = in_rootfs(config.rootfs_path, entry.source) if options.relative else entry.source
            if not os.path.exists(source):
                raise _fail(config, entry.origin.key, f"bind source {entry.source} does not exist", entry.origin)
        elif entry.fstype not in known:
            raise _fail(config, entry.origin.key, f"filesystem type {entry.fstype!r} is not known to this kernel",
                        entry.origin)

    _check_security(config)
    if os.geteuid() != 0:
        unprivileged.check(config)
    _check_user_namespace(config)
    _check_idmapped_rootfs(config)
    _check_idmapped_entries(config)
    _check_core_scheduling(config)
    binds = _binds(config)
    exec_path = _exec_path(config)
    _check_hooks(config, binds, exec_path)
    _check_seccomp(config)
    _check_networks(config)
    _check_cgroups(config)

    if _find_command(config, command[0], binds, exec_path) is None:
        key = "lxc.init.cmd"
        if command_from_cli:
            raise ConfigError("--", 0, command[0], f"not found in rootfs {config.rootfs_path}")
        raise _fail(config, key, f"{command[0]} not found in rootfs {config.rootfs_path}")
