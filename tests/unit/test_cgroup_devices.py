"""The cgroup2 device program: LXC's rule parsing and list semantics, and the assembled
program run through a small interpreter of the instructions it uses (no root, no kernel:
the kernel's own verdicts are tests/integration/test_cgroup2.py's)."""

from __future__ import annotations

import os
import struct

import pytest

from lxcsm.engine.linux import cgroup_devices as cd
from lxcsm.engine.linux.cgroup_devices import DeviceRule

READ, WRITE, MKNOD = cd.BPF_DEVCG_ACC_READ, cd.BPF_DEVCG_ACC_WRITE, cd.BPF_DEVCG_ACC_MKNOD
CHAR, BLOCK = cd.BPF_DEVCG_DEV_CHAR, cd.BPF_DEVCG_DEV_BLOCK


def run_program(program: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Execute the subset of eBPF assemble() emits, on a bpf_cgroup_dev_ctx."""
    ctx = {0: dev_type | (access << 16), 4: major, 8: minor}
    regs = [0] * 11
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps < 10_000, "the program loops"
        code, regs_byte, off, imm = struct.unpack_from("<BBhi", program, pc * 8)
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == 0x01 | 0x00 | 0x60:              # LDX W MEM from the context (r1)
            assert src == 1
            regs[dst] = ctx[off]
        elif code == 0x04 | 0x50:                   # ALU32 AND K
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == 0x04 | 0x70:                   # ALU32 RSH K
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0x04 | 0xb0 | 0x08:            # ALU32 MOV X
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == 0x07 | 0xb0:                   # ALU64 MOV K
            regs[dst] = imm
        elif code == 0x05 | 0x50 | 0x08:            # JNE X
            if regs[dst] != regs[src]:
                pc += off
        elif code == 0x05 | 0x50:                   # JNE K
            if regs[dst] != imm:
                pc += off
        elif code == 0x05 | 0x90:                   # EXIT
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def verdict(settings, dev_type=CHAR, access=READ, major=1, minor=3) -> int:
    devices = cd.device_list(settings)
    return run_program(cd.assemble(devices), dev_type, access, major, minor)


def test_rules_parse_as_lxc_reads_them():
    assert cd.parse_rule("devices.allow", "c 1:3 rwm") == DeviceRule("c", 1, 3, "rwm", True)
    assert cd.parse_rule("devices.deny", "b *:* m") == DeviceRule("b", -1, -1, "m", False)
    assert cd.parse_rule("devices.deny", "a") == DeviceRule("a", -1, -1, "", False)
    assert cd.parse_rule("devices.allow", "a").sets_default
    assert not cd.parse_rule("devices.allow", "a *:* rwm").sets_default


@pytest.mark.parametrize("value", ["x 1:3 rwm", "c 1 rwm", "c 1:3", "c a:3 rw", "c 1:3 rwx", "c 1:3 rwmr"])
def test_malformed_rules_are_refused(value):
    with pytest.raises(ValueError):
        cd.parse_rule("devices.allow", value)


def test_a_device_path_is_turned_into_its_type_and_numbers():
    info = os.stat("/dev/null")
    rule = cd.parse_rule("devices.allow", "/dev/null rw")
    assert rule == DeviceRule("c", os.major(info.st_rdev), os.minor(info.st_rdev), "rw", True)
    with pytest.raises(ValueError, match="not a device node"):
        cd.parse_rule("devices.allow", "/etc/hostname rw")


def test_deny_all_then_allow_one_lets_only_that_device_through():
    rules = [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]
    assert verdict(rules, CHAR, READ | WRITE, 1, 3) == 1
    assert verdict(rules, CHAR, MKNOD, 1, 3) == 1
    assert verdict(rules, CHAR, READ, 1, 5) == 0
    assert verdict(rules, BLOCK, READ, 1, 3) == 0


def test_allow_all_then_deny_one_refuses_only_that_device():
    rules = [("devices.allow", "a"), ("devices.deny", "c 1:5 rwm")]
    assert verdict(rules, CHAR, READ, 1, 5) == 0
    assert verdict(rules, CHAR, READ, 1, 3) == 1
    assert verdict(rules, BLOCK, WRITE, 8, 0) == 1


def test_the_access_asked_for_must_be_within_the_rule():
    rules = [("devices.deny", "a"), ("devices.allow", "c 1:3 r")]
    assert verdict(rules, CHAR, READ, 1, 3) == 1
    assert verdict(rules, CHAR, WRITE, 1, 3) == 0
    assert verdict(rules, CHAR, READ | WRITE, 1, 3) == 0


def test_wildcards_match_any_number_and_type_a_any_type():
    rules = [("devices.deny", "a"), ("devices.allow", "c 136:* rw"), ("devices.allow", "a 7:* r")]
    assert verdict(rules, CHAR, READ | WRITE, 136, 42) == 1
    assert verdict(rules, BLOCK, READ, 7, 1) == 1
    assert verdict(rules, CHAR, READ, 7, 9) == 1
    assert verdict(rules, BLOCK, WRITE, 7, 1) == 0


def test_no_rule_means_the_default_denies_everything():
    assert verdict([("devices.deny", "a")], CHAR, READ, 1, 3) == 0
    assert verdict([("devices.allow", "a")], CHAR, READ, 1, 3) == 1


def test_the_bare_a_resets_the_list():
    rules = [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"), ("devices.deny", "a")]
    assert verdict(rules, CHAR, READ, 1, 3) == 0
    assert cd.device_list(rules).rules == []


def test_the_same_rule_with_the_other_verdict_flips_it():
    rules = [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"), ("devices.deny", "c 1:3 rwm")]
    devices = cd.device_list(rules)
    assert devices.rules == [DeviceRule("c", 1, 3, "rwm", False)]
    assert devices.effective() == []             # a deny in a deny-by-default list says nothing
    assert verdict(rules, CHAR, READ, 1, 3) == 0
    rules.append(("devices.allow", "c 1:3 rwm"))
    assert verdict(rules, CHAR, READ, 1, 3) == 1
    # As LXC: the flipped rule no longer counts, so a fresh one is added before it.
    assert cd.device_list(rules).effective() == [DeviceRule("c", 1, 3, "rwm", True)]


def test_later_rules_are_checked_first():
    devices = cd.device_list([("devices.allow", "a"), ("devices.deny", "c 1:3 r"), ("devices.deny", "c 1:5 r")])
    assert [rule.minor for rule in devices.rules] == [5, 3]


def test_each_rule_costs_only_the_checks_it_needs():
    base = len(cd.assemble(cd.device_list([("devices.deny", "a")]))) // 8
    one = len(cd.assemble(cd.device_list([("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]))) // 8
    wild = len(cd.assemble(cd.device_list([("devices.deny", "a"), ("devices.allow", "a *:* r")]))) // 8
    assert one - base == 3 + 2      # type, major, minor; then the verdict
    assert wild - base == 3 + 2     # the access mask (3 instructions); then the verdict
