"""setup_sysctl (child) - the container's boot id, personality and kernel parameters.

Replaces LXC's lxc_setup_boot_id(), setup_personality() and
setup_sysctl_parameters() (conf.c), near the end of lxc_setup(), right after
pivot_root.

Afterwards the kernel sees, with lxc.autodev on (as LXC, which needs its own
/dev for it): a fresh random UUID in /dev/.lxc-boot-id (mode 0444),
bind-mounted read-only over /proc/sys/kernel/random/boot_id - every boot of
the container has a boot id of its own, not the host's, which is what
journald and `journalctl -b` go by.  Like LXC this is best-effort: without
/proc or a writable /dev the host's boot id shows through, and the start goes
on.  Then, with lxc.arch, the child's execution domain (personality(2)), which
init inherits: a 32-bit name (i686, x86, armhf, linux32...) is PER_LINUX32,
so `uname -m` inside says i686 on an x86_64 host, as under LXC; a 64-bit
one is PER_LINUX.  Then each lxc.sysctl.KEY = VALUE written to
/proc/sys/KEY (dots as slashes: net.ipv4.ip_forward is
/proc/sys/net/ipv4/ip_forward) of the container - after pivot_root, so only
parameters of the container's own namespaces can be changed, and only where
its /proc lets them be (proc:mixed keeps /proc/sys read-only but for net).
A value the kernel refuses fails the start, naming the file, line and key.
"""

from __future__ import annotations

import os

from lxcsm.engine.errors import describe
from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def _path(key: str) -> str:
    return "/proc/sys/" + key.removeprefix("lxc.sysctl.").replace(".", "/")


BOOT_ID = "/proc/sys/kernel/random/boot_id"
FRESH_BOOT_ID = "/dev/.lxc-boot-id"   # LXC's name for it


def _random_uuid() -> str:
    """A version 4 UUID, as the kernel's own boot_id reads.  Not the uuid module: it imports
    platform and _uuid, a few ms of every start for one random number."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40   # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80   # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def set_boot_id() -> None:
    fd = os.open(FRESH_BOOT_ID, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
    try:
        os.write(fd, f"{_random_uuid()}\n".encode())
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)
    try:
        kernel.mount(FRESH_BOOT_ID, BOOT_ID, None, kernel.MS_BIND)
        kernel.mount(None, BOOT_ID, None, kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY
                     | kernel.MS_NOSUID | kernel.MS_NOEXEC | kernel.MS_NODEV)
    except OSError:
        os.unlink(FRESH_BOOT_ID)
        raise


# LXC's lxc_config_parse_arch(): which lxc.arch names are 32-bit; every other is PER_LINUX.
PER_LINUX, PER_LINUX32 = 0x0000, 0x0008
ARCH_32BIT = frozenset({"arm", "armel", "armhf", "armv7l", "athlon", "i386", "i486", "i586", "i686",
                        "linux32", "mips", "mipsel", "ppc", "powerpc", "x86"})


def personality(config) -> int | None:
    arch = config.get_item("lxc.arch")
    if not arch:
        return None
    return PER_LINUX32 if arch in ARCH_32BIT else PER_LINUX


def enter(ctx: ChildContext) -> str:
    if ctx.request.config.autodev and os.access(BOOT_ID, os.F_OK):
        try:
            set_boot_id()
            ctx.log.trace("boot id set", file=BOOT_ID)
        except OSError as err:
            ctx.log.info("boot id left as the host's", error=describe(err))
    persona = personality(ctx.request.config)
    if persona is not None:
        kernel.set_personality(persona)
        ctx.log.trace("personality set", persona=hex(persona))
    for key, setting in ctx.request.config.in_effect("lxc.sysctl"):
        path = _path(key)
        setting.write_to(path)
        ctx.log.trace("sysctl set", file=path, value=setting.value)
    return "sysctls_set"


def plan(request: StartRequest) -> list[str]:
    steps = ([f"write a random UUID to {FRESH_BOOT_ID}, bind it read-only over {BOOT_ID}"]
             if request.config.autodev else [])
    persona = personality(request.config)
    if persona is not None:
        steps.append(f"personality({'PER_LINUX32' if persona == PER_LINUX32 else 'PER_LINUX'}) (lxc.arch)")
    steps += [f"write {setting.value} to {_path(key)}" for key, setting in request.config.in_effect("lxc.sysctl")]
    return steps or ["nothing: lxc.autodev = 0, no lxc.arch, no lxc.sysctl"]
