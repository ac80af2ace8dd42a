"""The kernel calls Python's standard library does not offer, in one thin module.

Everything here is a direct wrapper of one Linux system call (or prctl
option), called through ctypes, that raises ``OSError`` with the errno and the
path or object involved on failure.  No policy lives here: which flags to pass
and in which order is decided by the states.  Calls the standard library
already has (``os.mknod``, ``os.pidfd_open``, ``signal.pidfd_send_signal``,
``socket.sethostname``, ``os.waitpid``...) are used directly by their callers.

Only x86_64 and aarch64 system call numbers are listed; clone3, openat2, the
new mount API (open_tree, move_mount, fsopen, fsconfig, fsmount, mount_setattr) and the pidfd
calls share one number on every architecture.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct

_libc = ctypes.CDLL(None, use_errno=True)
# The same symbols through PyDLL keep the GIL held across the call, as
# os.fork() does: the forking call must not let another thread run meanwhile.
_libc_gil = ctypes.PyDLL(None, use_errno=True)

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "signalfd4": 289, "keyctl": 250, "seccomp": 317},
    "aarch64": {"pivot_root": 41, "signalfd4": 74, "keyctl": 219, "seccomp": 277},
}[os.uname().machine]
SYS_CLONE3 = 435
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

# Namespaces (clone(2) / unshare(2) / setns(2) flags).
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PIDFD = 0x00001000
CLONE_INTO_CGROUP = 0x200000000

# The names LXC uses for namespaces (lxc.namespace.clone, /proc/PID/ns/NAME).
NAMESPACE_FLAGS = {
    "mnt": CLONE_NEWNS,
    "pid": CLONE_NEWPID,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "user": CLONE_NEWUSER,
    "time": CLONE_NEWTIME,
}

# mount(2) flags, from <linux/mount.h> (the os module does not export them).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# openat2(2) resolve flags, from <linux/openat2.h>.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# The new mount API, from <linux/mount.h>.
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x00100000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SCHED_CORE = 62
PR_SCHED_CORE_GET = 0
PR_SCHED_CORE_CREATE = 1
PR_SCHED_CORE_SCOPE_THREAD_GROUP = 1
KEYCTL_JOIN_SESSION_KEYRING = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24

# asm-generic/resource.h, by the names of lxc.prlimit.NAME (Python's resource module lacks
# RLIMIT_LOCKS).
RLIMITS = {name: number for number, name in enumerate((
    "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as", "locks",
    "sigpending", "msgqueue", "nice", "rtprio", "rttime"))}

# linux/capability.h, by the names LXC's lxc.cap.drop and lxc.cap.keep use.
CAPABILITIES = {name: number for number, name in enumerate((
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore"))}

SFD_CLOEXEC = os.O_CLOEXEC
_SIGINFO_SIZE = 128


def _check(result: int, *context: object) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *(str(c) for c in context[:1]))
    return result


def _path(p: str | bytes | None) -> bytes | None:
    return os.fsencode(p) if p is not None else None


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
_libc_gil.syscall.restype = ctypes.c_long


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_path(source), _path(target), _path(fstype), flags, _path(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_path(target), flags), target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYSCALLS["pivot_root"], _path(new_root), _path(put_old)), new_root)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """open `path` relative to the directory `dirfd`, resolved under the RESOLVE_* rules in `resolve`."""
    how = _OpenHow(flags=flags, mode=mode, resolve=resolve)
    return _check(_libc.syscall(SYS_OPENAT2, dirfd, _path(path), ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))), path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """An fd for the mount at `path` (relative to `dirfd`); with OPEN_TREE_CLONE a detached copy of it."""
    return _check(_libc.syscall(SYS_OPEN_TREE, dirfd, _path(path), ctypes.c_uint(flags)), path or f"fd {dirfd}")


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    """Attach (or move) the mount at `from_path` onto `to_path`, each relative to its dirfd."""
    _check(_libc.syscall(SYS_MOVE_MOUNT, from_dirfd, _path(from_path), to_dirfd, _path(to_path),
                         ctypes.c_uint(flags)), to_path or f"fd {to_dirfd}")


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    """A filesystem context for a new `fstype` superblock, to be set up with fsconfig."""
    return _check(_libc.syscall(SYS_FSOPEN, _path(fstype), ctypes.c_uint(flags)), fstype)


def fsconfig(fsfd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    """One step of setting up a filesystem context: a flag, a string option, or creating the superblock."""
    _check(_libc.syscall(SYS_FSCONFIG, fsfd, ctypes.c_uint(cmd), _path(key), _path(value), 0), key or "create")


def fsmount(fsfd: int, attr_flags: int, flags: int = FSMOUNT_CLOEXEC) -> int:
    """A detached mount of the superblock created in `fsfd`, with MOUNT_ATTR_* `attr_flags`."""
    return _check(_libc.syscall(SYS_FSMOUNT, fsfd, ctypes.c_uint(flags), ctypes.c_uint(attr_flags)),
                  f"fd {fsfd}")


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    """Change the MOUNT_ATTR_* attributes (and propagation, an MS_* type) of the mount at `path`
    relative to `dirfd` (AT_EMPTY_PATH: the mount `dirfd` is); with MOUNT_ATTR_IDMAP, idmap it
    to the user namespace `userns_fd`, which the kernel allows only on a detached mount."""
    attr = _MountAttr(attr_set=attr_set, attr_clr=attr_clr, propagation=propagation, userns_fd=userns_fd)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, dirfd, _path(path), ctypes.c_uint(flags), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))), path or f"fd {dirfd}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"flags {flags:#x}")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), f"fd {fd}")


def set_pdeathsig(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0))


def set_personality(persona: int) -> None:
    """Set this process's execution domain (personality(2)): PER_LINUX32 makes uname(2)
    report the 32-bit machine."""
    _check(_libc.personality(ctypes.c_ulong(persona)), f"personality {persona:#x}")


def set_dumpable() -> None:
    """Make this process dumpable again (a uid change cleared it): its /proc files are its
    own user's, and it may dump core."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))


def clear_ambient_capabilities() -> None:
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))


def join_new_session_keyring() -> int:
    """Give this process a new, empty, anonymous session keyring (keyctl
    KEYCTL_JOIN_SESSION_KEYRING with no name): the keys of the session it came
    from are out of its reach.  Returns the keyring's serial."""
    return _check(_libc.syscall(_SYSCALLS["keyctl"], KEYCTL_JOIN_SESSION_KEYRING, None, 0, 0, 0))


def create_core_scheduling_cookie(pid: int) -> None:
    """Put every thread of process `pid` into a new core scheduling group: no task
    outside it shares a physical core with them (prctl PR_SCHED_CORE_CREATE)."""
    _check(_libc.prctl(PR_SCHED_CORE, PR_SCHED_CORE_CREATE, pid, PR_SCHED_CORE_SCOPE_THREAD_GROUP, 0),
           f"pid {pid}")


def core_scheduling_cookie(pid: int) -> int:
    cookie = ctypes.c_uint64(0)
    _check(_libc.prctl(PR_SCHED_CORE, PR_SCHED_CORE_GET, pid, PR_SCHED_CORE_SCOPE_THREAD_GROUP,
                       ctypes.addressof(cookie)), f"pid {pid}")
    return cookie.value


def set_no_new_privs() -> None:
    """From now on no execve of this process or its children can gain privileges (setuid bits,
    file capabilities); it cannot be undone."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))


def drop_bounding_capability(cap: int) -> None:
    """Remove `cap` from this process's capability bounding set: no program it executes can
    hold it, whatever its uid or file capabilities (prctl PR_CAPBSET_DROP)."""
    _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"capability {cap}")


def last_capability() -> int:
    """The highest capability number this kernel knows: the first one PR_CAPBSET_READ
    refuses, less one (asked of prctl, not /proc, which a container may not have yet)."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0:
        cap += 1
    return cap - 1


def set_comm(name: str) -> None:
    """Set this process's `comm` (what ps -o comm and /proc/PID/comm show, 15 bytes)."""
    # A buffer that lives until prctl has copied it: a temporary's address may be freed (and
    # reused) by the time prctl reads it, which left waiters with an empty or garbled comm.
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0))


def set_cmdline(title: str) -> None:
    """Make /proc/self/cmdline (what ps shows as args) read `title`.

    The kernel reads a process's command line from its own memory, between
    the arg_start and arg_end addresses /proc/self/stat publishes.  Moving that
    range (PR_SET_MM, as LXC's setproctitle() does) needs CAP_SYS_RESOURCE,
    which a container host may not grant; overwriting the original argument
    strings in place needs nothing, so the title is written there, cut to the
    room the original command line had and padded with NULs.
    """
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # Fields 48 and 49 of stat(5); the split above starts at field 3.
    arg_start, arg_end = int(fields[45]), int(fields[46])
    room = arg_end - arg_start
    text = title.encode()[: room - 1]
    ctypes.memmove(arg_start, text + b"\0" * (room - len(text)), room)


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
        "stack", "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


def clone3(flags: int, cgroup_fd: int | None = None) -> tuple[int, int]:
    """Fork into new namespaces, returning (pid, pidfd) in the parent, (0, -1) in the child.

    One clone3(2) call does what LXC's lxc_clone() does: the child starts in
    the namespaces of `flags`, directly inside the cgroup2 directory
    `cgroup_fd` (CLONE_INTO_CGROUP), and the parent gets a pidfd for it at the
    same moment (CLONE_PIDFD), so no pid can be recycled in between.  With no
    stack given, the child continues on a copy of the parent's, exactly like
    fork(); the interpreter's own fork bookkeeping (PyOS_*Fork) runs around
    the call just as os.fork() runs it.
    """
    pidfd = ctypes.c_int(-1)
    args = _CloneArgs(flags=flags | CLONE_PIDFD, pidfd=ctypes.addressof(pidfd), exit_signal=signal.SIGCHLD)
    if cgroup_fd is not None:
        args.flags |= CLONE_INTO_CGROUP
        args.cgroup = cgroup_fd
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _libc_gil.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0, -1
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, os.strerror(err), f"clone3 flags {flags:#x}")
    return pid, pidfd.value


def signalfd(signals: set[int]) -> int:
    """A file descriptor that reads the (blocked) `signals` as they arrive."""
    mask = ctypes.c_uint64(sum(1 << (s - 1) for s in signals))
    return _check(_libc.syscall(_SYSCALLS["signalfd4"], -1, ctypes.byref(mask), 8, SFD_CLOEXEC))


def read_signalfd(fd: int) -> tuple[int, int]:
    """Read one signal from a signalfd: (signal number, sending pid)."""
    info = os.read(fd, _SIGINFO_SIZE)
    signo, _errno, _code, pid = struct.unpack_from("IiiI", info)
    return signo, pid


# --- bpf(2): cgroup2's device programs (engine/linux/cgroup_devices.py assembles them) ----------

_SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
# <linux/bpf.h>
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2


def _bpf(command: int, attr: bytes, what: str) -> int:
    buffer = ctypes.create_string_buffer(attr, len(attr))
    result = _libc.syscall(_SYS_BPF, command, buffer, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)
    return result


def bpf_load_cgroup_device_program(program: bytes) -> int:
    """BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program (8-byte instructions): its fd.
    A program the verifier refuses raises OSError carrying the verifier's log."""
    code = ctypes.create_string_buffer(program, len(program))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size,
    # log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type
    attr = struct.pack("<IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                       ctypes.addressof(code), ctypes.addressof(license), 0, 0, 0, 0, 0,
                       b"lxcsm_devices", 0, 0)
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "BPF_PROG_LOAD cgroup device program")
    except OSError as err:
        if err.errno in (errno.EPERM, errno.ENOSYS):   # not allowed, or no bpf(2): no verifier to ask
            raise
    # The verifier said no: load again with its log on, to say why.
    attr = attr[:24] + struct.pack("<IIQ", 1, len(log), ctypes.addressof(log)) + attr[40:]
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "BPF_PROG_LOAD cgroup device program")
    except OSError as err:
        verdict = log.value.decode(errors="replace").strip()
        raise OSError(err.errno, f"{err.strerror}: {verdict}" if verdict else err.strerror, err.filename) from None


def bpf_attach_cgroup_device_program(program_fd: int, cgroup_fd: int) -> None:
    """BPF_PROG_ATTACH as BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI (as LXC: a program attached
    higher up, e.g. by systemd, is still asked too)."""
    _bpf(_BPF_PROG_ATTACH, struct.pack("<IIII", cgroup_fd, program_fd, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI),
         "BPF_PROG_ATTACH cgroup device program")


_SECCOMP_GET_NOTIF_SIZES = 3


def seccomp_notif_sizes() -> tuple[int, int, int]:
    """seccomp(SECCOMP_GET_NOTIF_SIZES): this kernel's sizes of struct seccomp_notif,
    struct seccomp_notif_resp and struct seccomp_data, in that order."""
    sizes = ctypes.create_string_buffer(6)
    _check(_libc.syscall(_SYSCALLS["seccomp"], _SECCOMP_GET_NOTIF_SIZES, 0, sizes), "SECCOMP_GET_NOTIF_SIZES")
    return struct.unpack("=HHH", sizes.raw)
