"""The seccomp filter of a checked policy, built and loaded with libseccomp, as LXC does.

The policy's grammar is read by config/seccomp_policy.py; this module only
turns its rules into a libseccomp filter (loaded by ctypes: lxcsm uses no
Python binding) and installs it.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.config.seccomp_policy import Policy, Rule

_ACTION_BITS = {"kill": 0x00000000, "trap": 0x00030000, "notify": 0x7FC00000, "allow": 0x7FFF0000}
_ERRNO = 0x00050000
_COMPARE = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
            "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_FLTATR_CTL_NNP = 3
_MNT_FORCE = 1
# The sections whose rules apply on this machine (rules for other architectures are skipped,
# as LXC skips them).
_NATIVE_SECTIONS = {"x86_64": {"native", "all", "x86_64"}, "aarch64": {"native", "all", "arm64"}}
# The listener's ioctls, <linux/seccomp.h>: _IOWR('!', 0, struct seccomp_notif),
# _IOWR('!', 1, struct seccomp_notif_resp), and ID_VALID as _IOR('!', 2, __u64) - the number
# kernels before 5.17 know, which later ones still accept.
_NOTIF_RECV = 0xC0502100
_NOTIF_SEND = 0xC0182101
_NOTIF_ID_VALID = 0x80082102


def action_bits(action: str) -> int:
    if action.startswith("errno "):
        return _ERRNO | (int(action.split()[1]) & 0xFFFF)
    return _ACTION_BITS[action]


class Filter:
    """A filter built from a Policy with libseccomp (loaded by ctypes: lxcsm uses no Python
    binding), to be installed later with load().  Built by the monitor (init_handler, as
    LXC's lxc_init), where the policy file and libseccomp are in reach; loaded by the
    child (setup_seccomp) after pivot_root, before the start hooks, as LXC's do_start()."""

    def __init__(self, policy: Policy, machine: str) -> None:
        import ctypes
        import ctypes.util

        class ArgCmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        self._ArgCmp = ArgCmp
        self._lib = lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(ArgCmp)]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
        self.skipped: list[str] = []   # names libseccomp does not know here (LXC skips them too)
        sections = _NATIVE_SECTIONS.get(machine, {"native", "all"})
        # As LXC's wants_supervision: a notify rule of this machine's sections (even one for a
        # syscall libseccomp does not know) asks for a listener; the default action does not.
        self.wants_listener = any(rule.action == "notify" and rule.arch in sections for rule in policy.rules)
        self.listener = -1   # the child's after load(); the monitor's once sync_fds received it
        self._ctx = lib.seccomp_init(action_bits(policy.default_action))
        if not self._ctx:
            raise OSError(ctypes.get_errno(), "seccomp_init failed")
        # As LXC: no_new_privs stays off, so setuid programs in the container still work.
        self._check(lib.seccomp_attr_set(self._ctx, _FLTATR_CTL_NNP, 0), "seccomp_attr_set")
        for rule in policy.rules:
            if rule.arch in sections:
                self._add(rule, policy.version)

    def _check(self, result: int, what: str) -> None:
        if result < 0:
            raise OSError(-result, f"{what}: {os.strerror(-result)}")

    def _add(self, rule: Rule, version: int) -> None:
        if rule.syscall == "reject_force_umount":   # LXC's shorthand: umount2(..., MNT_FORCE) fails
            number = self._lib.seccomp_syscall_resolve_name(b"umount2")
            force = self._ArgCmp(1, _COMPARE["SCMP_CMP_MASKED_EQ"], _MNT_FORCE, _MNT_FORCE)
            self._check(self._lib.seccomp_rule_add_array(self._ctx, _ERRNO | 13, number, 1, force),
                        f"line {rule.line}: reject_force_umount")   # EACCES
            return
        number = int(rule.syscall) if version == 1 else self._lib.seccomp_syscall_resolve_name(rule.syscall.encode())
        if number < 0:
            self.skipped.append(rule.syscall)
            return
        # As LXC: a masked comparison is (mask, value), any other (value).
        args = (self._ArgCmp * max(1, len(rule.args)))(*[
            self._ArgCmp(a.index, _COMPARE[a.op], *(((a.mask or 0), a.value) if a.op == "SCMP_CMP_MASKED_EQ"
                                                  else (a.value, 0))) for a in rule.args])
        self._check(self._lib.seccomp_rule_add_array(self._ctx, action_bits(rule.action), number,
                                                     len(rule.args), args),
                    f"line {rule.line}: {rule.syscall}")

    def load(self) -> None:
        """Install the filter; with notify rules, libseccomp loads it with
        SECCOMP_FILTER_FLAG_NEW_LISTENER and the listener becomes `listener`, non-blocking
        (as LXC's), for sync_fds to hand to the monitor."""
        self._check(self._lib.seccomp_load(self._ctx), "seccomp_load")
        if self.wants_listener:
            listener = self._lib.seccomp_notify_fd(self._ctx)
            self._check(listener, "seccomp_notify_fd")
            os.set_blocking(listener, False)
            self.listener = listener


class Listener:
    """A filter's listener (SECCOMP_FILTER_FLAG_NEW_LISTENER's fd), as the monitor reads it:
    notifications of the kernel's size in, answers out."""

    def __init__(self, fd: int) -> None:
        from lxcsm.engine.linux import kernel
        self.fd = fd
        # struct seccomp_notif, seccomp_notif_resp and seccomp_data as this kernel has them.
        self.sizes = kernel.seccomp_notif_sizes()

    def receive(self) -> bytes:
        """SECCOMP_IOCTL_NOTIF_RECV: the next struct seccomp_notif; OSError ENOENT if its
        syscall was aborted meanwhile, EAGAIN if there is none."""
        import fcntl
        notification = bytearray(self.sizes[0])   # the kernel wants it zeroed
        fcntl.ioctl(self.fd, _NOTIF_RECV, notification, True)
        return bytes(notification)

    def id_valid(self, notification_id: int) -> bool:
        """SECCOMP_IOCTL_NOTIF_ID_VALID: whether the notified task still waits for that answer
        (so what was opened by its pid is still that task's)."""
        import errno
        import fcntl
        try:
            fcntl.ioctl(self.fd, _NOTIF_ID_VALID, struct.pack("=Q", notification_id))
        except OSError as err:
            if err.errno == errno.ENOENT:
                return False
            raise
        return True

    def respond(self, response: bytes) -> None:
        """SECCOMP_IOCTL_NOTIF_SEND of a struct seccomp_notif_resp: the notified syscall returns."""
        import fcntl
        fcntl.ioctl(self.fd, _NOTIF_SEND, response)
