"""Turn an fstab option string ("ro,bind,create=dir") into what mount(2) needs.

Replaces the option handling LXC does for lxc.mount.entry and lxc.mount.fstab
(parse_mntopts_legacy, parse_propagationopts and parse_lxc_mount_attrs in
conf.c): kernel flags, the propagation change done by a second mount(2) call,
the leftover filesystem data string, and LXC's own options, which never reach
the kernel - among them idmap=, the user namespace whose id map an idmapped
mount shows its files through: "container" (the container's own) or the path
of a user namespace file, such as /proc/PID/ns/user.
"""

from __future__ import annotations

from collections import namedtuple

from lxcsm.engine.linux.kernel import (
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SILENT,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)

# option -> (flags it raises, flags it lowers). Options are applied left to
# right, so "ro,rw" ends read-write, as with mount(8).
FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "remount": (MS_REMOUNT, 0),
    "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK),
    "noatime": (MS_NOATIME, 0),
    "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0),
    "diratime": (0, MS_NODIRATIME),
    "bind": (MS_BIND, 0),
    "rbind": (MS_BIND | MS_REC, 0),
    "relatime": (MS_RELATIME, 0),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0),
    "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0),
    "nolazytime": (0, MS_LAZYTIME),
    "silent": (MS_SILENT, 0),
    "loud": (0, MS_SILENT),
}

# Propagation cannot be combined with other flags in one mount(2) call: the
# mount code applies it with a second call on the target. The last one wins.
PROPAGATION_OPTIONS: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# LXC's own options: they steer the mount code and never reach the kernel.
CREATE_KINDS = ("dir", "file")
OPTIONAL = "optional"
RELATIVE = "relative"


class MountOptions(namedtuple("MountOptions", (
        "flags",        # int
        "propagation",  # int
        "data",         # str
        "create",       # str | None
        "optional",     # bool
        "relative",     # bool
        "idmap",        # str | None: "container", or the path of a user namespace
    ), defaults=(None,))):
    """An option string split into what each part of the mount code needs."""

    __slots__ = ()

    @property
    def bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MS_RDONLY)


def parse_mount_options(text: str) -> MountOptions:
    """Parse a comma-separated fstab option string; raise ValueError on bad input."""
    flags = 0
    propagation = 0
    data: list[str] = []
    create: str | None = None
    optional = False
    relative = False
    idmap: str | None = None

    # Empty items ("ro,,bind", a trailing comma) are skipped, as LXC does.
    for option in filter(None, text.split(",")):
        if option in FLAG_OPTIONS:
            raise_bits, lower_bits = FLAG_OPTIONS[option]
            flags = (flags | raise_bits) & ~lower_bits
        elif option in PROPAGATION_OPTIONS:
            propagation = PROPAGATION_OPTIONS[option]
        elif option.startswith("create="):
            create = option.removeprefix("create=")
            if create not in CREATE_KINDS:
                raise ValueError(f"create= must be dir or file, not {create!r}")
        elif option == OPTIONAL:
            optional = True
        elif option == RELATIVE:
            relative = True
        elif option.startswith("idmap="):
            idmap = option.removeprefix("idmap=")
            if not idmap:
                raise ValueError("idmap= needs 'container' or the path of a user namespace, "
                                 "e.g. idmap=/proc/PID/ns/user")
        else:
            # Filesystem-specific ("size=10%", "mode=755", "lowerdir=..."):
            # handed to the filesystem as mount data.
            data.append(option)

    return MountOptions(
        flags=flags,
        propagation=propagation,
        data=",".join(data),
        create=create,
        optional=optional,
        relative=relative,
        idmap=idmap,
    )
