"""Everything a start can check before it changes anything on the host.

LXC discovers most bad configs halfway through a start, with cgroups made
and a child cloned that must then be undone.  Here a config that names a
missing rootfs, an init that is not in it, a bind source that does not
exist or a filesystem type the kernel does not know fails before the first
change, with the file, line and key to fix.

What cannot be known beforehand (a mount the kernel refuses, an exec that
fails) still fails in its state, and is cleaned up by the aborting state.
"""

from __future__ import annotations

import os

from lxcsm.engine.config import ConfigError, Setting
from lxcsm.engine.mount_options import parse_mount_options
from lxcsm.engine.paths import container_path, in_rootfs

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


def _find_command(config, command: str, binds: dict[str, str]) -> str | None:
    if "/" in command:
        candidates = [command if command.startswith("/") else os.path.join(config.init_cwd or "/", command)]
    else:
        path = dict(e.partition("=")[::2] for e in config.environment if "=" in e).get("PATH")
        candidates = [os.path.join(d, command) for d in (path.split(":") if path else _DEFAULT_PATH)]
    for candidate in candidates:
        host = in_rootfs(config.rootfs_path, candidate, binds)
        if os.path.isfile(host):
            return host
    return None


def check(config, command: tuple[str, ...], command_from_cli: bool) -> None:
    """Raise ConfigError for the first problem found; change nothing."""
    if not config.rootfs_path:
        raise _fail(config, "lxc.rootfs.path", "no rootfs configured (lxcsm does not run containers on the host's root)")
    if not os.path.exists(config.rootfs_path):
        raise _fail(config, "lxc.rootfs.path", f"rootfs {config.rootfs_path} does not exist")
    if not os.path.isdir(config.rootfs_path):
        raise _fail(config, "lxc.rootfs.path", f"rootfs {config.rootfs_path} is not a directory")
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

    if _find_command(config, command[0], _binds(config)) is None:
        key = "lxc.init.cmd"
        if command_from_cli:
            raise ConfigError("--", 0, command[0], f"not found in rootfs {config.rootfs_path}")
        raise _fail(config, key, f"{command[0]} not found in rootfs {config.rootfs_path}")
