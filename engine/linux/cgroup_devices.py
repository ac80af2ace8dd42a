"""cgroup_devices: device rules on cgroup2, as the eBPF program LXC 5 builds by hand.

cgroup2 has no devices.allow / devices.deny files: the kernel asks a program of type
BPF_PROG_TYPE_CGROUP_DEVICE, attached to the cgroup, whether a process there may open
or mknod a device.  LXC assembles that program itself from the container's
lxc.cgroup2.devices.allow/deny rules (no compiler, no libbpf); so does this module, and
loads and attaches it with the bpf(2) system call (engine/linux/kernel.py).

The rules keep LXC's list semantics: "a" alone (devices.deny = a / devices.allow = a)
chooses whether unlisted devices are refused (the default once any rule is given) or
allowed, and empties the list; later rules are checked first; a rule that only repeats
the default is left out; the same rule given again with the other verdict flips it.

The program, per rule (r2 = device type, r3 = requested access, r4 = major, r5 =
minor, read from struct bpf_cgroup_dev_ctx): skip to the next rule unless the access
is within the rule's, the type, major and minor match; else return the rule's
verdict.  After the last rule it returns the default.
"""

from __future__ import annotations

import os
import stat
import struct
from collections import namedtuple

from lxcsm.engine.linux import kernel

# <linux/bpf.h>: what the program reads in struct bpf_cgroup_dev_ctx
BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE = 1, 2, 4
BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2
ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
TYPE_CODES = {"a": 0, "b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}
ALL_ACCESS = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE

# Instruction fields (<linux/bpf_common.h>, <linux/bpf.h>).
_LDX, _ALU, _JMP, _ALU64 = 0x01, 0x04, 0x05, 0x07
_W, _MEM = 0x00, 0x60
_K, _X = 0x00, 0x08
_AND, _RSH, _MOV = 0x50, 0x70, 0xb0
_JNE, _EXIT = 0x50, 0x90
# struct bpf_cgroup_dev_ctx: access_type (type | access << 16), major, minor
_CTX_ACCESS_TYPE, _CTX_MAJOR, _CTX_MINOR = 0, 4, 8


class DeviceRule(namedtuple("DeviceRule", ("type", "major", "minor", "access", "allow"))):
    """One rule: type "a", "b" or "c"; major and minor -1 for any; access a subset of "rwm"
    in the order written ("" for the bare "a" that sets the default); allow True/False."""
    __slots__ = ()

    @property
    def sets_default(self) -> bool:
        return self.type == "a" and self.major < 0 and self.minor < 0 and not self.access


def parse_rule(key: str, value: str) -> DeviceRule:
    """A devices.allow / devices.deny value as LXC reads it: "a", "TYPE MAJOR:MINOR ACCESS"
    with * for any number, or (devices.allow only) a device node's path and its access.
    ValueError says what is wrong."""
    allow = key.endswith("devices.allow")
    value = value.strip()
    if value == "a":
        return DeviceRule("a", -1, -1, "", allow)
    if allow and value.startswith("/"):
        return _rule_for_node(value)
    parts = value.split()
    if len(parts) != 3 or parts[0] not in TYPE_CODES or parts[1].count(":") != 1:
        raise ValueError(f"{value!r} is not 'a' or 'TYPE MAJOR:MINOR ACCESS' (type a, b or c)")
    major, minor = (_number(n) for n in parts[1].split(":"))
    return DeviceRule(parts[0], major, minor, _access(parts[2]), allow)


def _number(text: str) -> int:
    if text == "*":
        return -1
    if not text.isdigit():
        raise ValueError(f"device number {text!r} is neither digits nor *")
    return int(text)


def _access(text: str) -> str:
    if len(text) > 3 or set(text) - set(ACCESS_BITS):
        raise ValueError(f"access {text!r} is not made of r, w and m")
    return text


def _rule_for_node(value: str) -> DeviceRule:
    path, _, access = value.partition(" ")
    if not access.strip():
        raise ValueError(f"{path}: the access (r, w, m) is missing")
    info = os.stat(path)
    if stat.S_ISBLK(info.st_mode):
        kind = "b"
    elif stat.S_ISCHR(info.st_mode):
        kind = "c"
    else:
        raise ValueError(f"{path} is not a device node")
    return DeviceRule(kind, os.major(info.st_rdev), os.minor(info.st_rdev), _access(access.split()[0]), True)


class DeviceList:
    """The rules in force, newest first, and whether an unlisted device is allowed."""

    def __init__(self) -> None:
        self.default_allow = False
        self.rules: list[DeviceRule] = []

    def add(self, rule: DeviceRule) -> None:
        if rule.sets_default:
            self.default_allow = rule.allow
            self.rules.clear()
            return
        for index, known in enumerate(self.rules):
            if known[:4] == rule[:4] and self._counts(known):
                self.rules[index] = known._replace(allow=rule.allow)   # flipped, or the same again
                return
        self.rules.insert(0, rule)

    def _counts(self, rule: DeviceRule) -> bool:
        """A rule that gives the default verdict changes nothing: it is left out."""
        return rule.allow != self.default_allow

    def effective(self) -> list[DeviceRule]:
        return [rule for rule in self.rules if self._counts(rule)]


def device_list(settings) -> DeviceList:
    """The DeviceList of (key, value) pairs in config order; ValueError names the bad value."""
    devices = DeviceList()
    for key, value in settings:
        devices.add(parse_rule(key, value))
    return devices


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def assemble(devices: DeviceList) -> bytes:
    """The program's instructions, 8 bytes each."""
    program = [
        _insn(_LDX | _W | _MEM, dst=2, src=1, off=_CTX_ACCESS_TYPE),
        _insn(_ALU | _AND | _K, dst=2, imm=0xFFFF),                  # r2 = device type
        _insn(_LDX | _W | _MEM, dst=3, src=1, off=_CTX_ACCESS_TYPE),
        _insn(_ALU | _RSH | _K, dst=3, imm=16),                      # r3 = requested access
        _insn(_LDX | _W | _MEM, dst=4, src=1, off=_CTX_MAJOR),
        _insn(_LDX | _W | _MEM, dst=5, src=1, off=_CTX_MINOR),
    ]
    for rule in devices.effective():
        # Each check is (instructions before its jump, the jump without its offset).
        checks: list[tuple[list[bytes], tuple]] = []
        mask = sum(ACCESS_BITS[a] for a in rule.access)
        if mask != ALL_ACCESS:
            checks.append(([_insn(_ALU | _MOV | _X, dst=1, src=3), _insn(_ALU | _AND | _K, dst=1, imm=mask)],
                           (_JMP | _JNE | _X, 1, 3, 0)))
        if TYPE_CODES[rule.type]:
            checks.append(([], (_JMP | _JNE | _K, 2, 0, TYPE_CODES[rule.type])))
        if rule.major >= 0:
            checks.append(([], (_JMP | _JNE | _K, 4, 0, rule.major)))
        if rule.minor >= 0:
            checks.append(([], (_JMP | _JNE | _K, 5, 0, rule.minor)))
        for number, (before, (code, dst, src, imm)) in enumerate(checks):
            later = len(checks) - number - 1
            program += before
            # A failed check jumps over the later checks and this rule's verdict (2 instructions).
            program.append(_insn(code, dst=dst, src=src, off=later + 2, imm=imm))
        program += [_insn(_ALU64 | _MOV | _K, dst=0, imm=int(rule.allow)), _insn(_JMP | _EXIT)]
    program += [_insn(_ALU64 | _MOV | _K, dst=0, imm=int(devices.default_allow)), _insn(_JMP | _EXIT)]
    return b"".join(program)


def apply(devices: DeviceList, cgroup: str) -> int:
    """Load the program for `devices` and attach it to the cgroup2 directory `cgroup`.  The
    attachment holds the program: it ends with the cgroup.  Returns the instruction count."""
    program = assemble(devices)
    program_fd = kernel.bpf_load_cgroup_device_program(program)
    try:
        cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            kernel.bpf_attach_cgroup_device_program(program_fd, cgroup_fd)
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(program_fd)
    return len(program) // 8
