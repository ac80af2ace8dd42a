"""LXC's seccomp policy language, parsed as LXC 5.0.2 parses it."""

import pytest

from lxcsm.engine.config import seccomp_policy
from tests.unit.config_text import COMMON_SECCOMP


def test_lxc_common_seccomp_policy_is_valid():
    policy = seccomp_policy.parse(COMMON_SECCOMP, "common.seccomp")
    assert (policy.version, policy.denylist, policy.default_action) == (2, True, "allow")
    assert [(r.syscall, r.action, r.arch, r.line) for r in policy.rules[:2]] == [
        ("reject_force_umount", "kill", "native", 3), ("kexec_load", "errno 1", "all", 5)]


def test_seccomp_policy_with_everything():
    policy = seccomp_policy.parse(
        "2\nallowlist errno 38\n# only these\n\n[X86_64]\nread\nwrite allow # logs\n"
        "ioctl notify\nkill kill [0,1,SCMP_CMP_EQ] [1,0x10,&=,0xf0]\n[x86]\nread trap\n", "p")
    assert (policy.denylist, policy.default_action, policy.rule_action) == (False, "errno 38", "allow")
    assert [(r.syscall, r.action, r.arch) for r in policy.rules] == [
        ("read", "allow", "x86_64"), ("write", "allow", "x86_64"), ("ioctl", "notify", "x86_64"),
        ("kill", "kill", "x86_64"), ("read", "trap", "x86")]
    assert policy.rules[3].args == (seccomp_policy.Argument(0, 1, "SCMP_CMP_EQ", None),
                                    seccomp_policy.Argument(1, 16, "SCMP_CMP_MASKED_EQ", 240))


def test_seccomp_version_1_and_old_names():
    assert [r.syscall for r in seccomp_policy.parse("1\nallowlist\n0\n1\n60\n", "p").rules] == ["0", "1", "60"]
    assert seccomp_policy.parse("2\nblacklist\nmknod\n", "p").denylist
    assert not seccomp_policy.parse("2\nwhitelist\nread\n", "p").denylist


@pytest.mark.parametrize("text, line, message", [
    ("", 0, "the first line must be the policy version"),
    ("3\ndenylist\n", 1, "not '3'"),
    ("two\ndenylist\n", 1, "not 'two'"),
    ("2\n", 0, "no policy line"),
    ("2\nallowlst\nread\n", 2, "must be allowlist or denylist"),
    ("2\ndenylist # default\n", 2, "unknown default action '#'"),
    ("2\ndenylist errno\n", 2, "errno needs a number"),
    ("2\ndenylist debug\n", 2, "'debug' directive"),
    ("1\ndenylist\n0\n", 2, "version 1 policy must be an allowlist"),
    ("1\nallowlist\n0\nread\n", 4, "one syscall number a line"),
    ("1\nallowlist\n0\n\n1\n", 4, "one syscall number a line"),
    ("2\ndenylist\n[vax]\n", 3, "unknown architecture section '[vax]'"),
    ("2\ndenylist\n[x86_64\nread\n", 3, "unknown architecture section"),
    ("2\ndenylist\n[X86_64]\n[Arm64]\n", 4, "unknown architecture section '[Arm64]'"),
    ("2\ndenylist\nmount kill-everything\n", 3, "unknown action 'kill-everything'"),
    ("2\ndenylist\nmount errno\n", 3, "errno needs a number"),
    ("2\ndenylist\nmount errno one\n", 3, "errno needs a number"),
    ("2\ndenylist\nmount() errno 1\n", 3, "'mount()' is not a syscall name"),
    ("2\ndenylist\nmount [0,1,==]\n", 3, "arguments need an action"),
    ("2\ndenylist\nmount errno 1 [0,1]\n", 3, "is not [INDEX,VALUE,OP]"),
    ("2\ndenylist\nmount errno 1 [6,1,==]\n", 3, "index '6' is not 0..5"),
    ("2\ndenylist\nmount errno 1 [0,x,==]\n", 3, "value 'x' is not an unsigned 64-bit number"),
    ("2\ndenylist\nmount errno 1 [0,08,==]\n", 3, "value '08'"),
    ("2\ndenylist\nmount errno 1 [0,18446744073709551616,==]\n", 3, "not an unsigned 64-bit number"),
    ("2\ndenylist\nmount errno 1 [0,1,&=,zz]\n", 3, "mask 'zz'"),
    ("2\ndenylist\nmount errno 1 [0,1,SCMP_CMP_EQUAL]\n", 3, "unknown comparison 'SCMP_CMP_EQUAL'"),
    ("2\ndenylist\nmount errno 1 [0,1,== ]\n", 3, "unknown comparison '== '"),
    ("2\ndenylist\nmount errno 1 [0,1,==] junk\n", 3, "cannot read 'junk'"),
    ("2\ndenylist\nmount errno 1 " + "[0,1,==] " * 7 + "\n", 3, "more than 6 arguments"),
])
def test_bad_seccomp_policies(text, line, message):
    with pytest.raises(seccomp_policy.PolicyError) as caught:
        seccomp_policy.parse(text, "policy")
    assert caught.value.line == line
    assert message in caught.value.message
    assert str(caught.value).startswith(f"policy:{line}: " if line else "policy: ")


def test_seccomp_file_bytes_are_checked(tmp_path):
    path = tmp_path / "policy"
    path.write_bytes(b"2\ndenylist\nmkn\xf6d\n")
    with pytest.raises(seccomp_policy.PolicyError) as caught:
        seccomp_policy.read(str(path))
    assert (caught.value.line, caught.value.message) == (3, "line is not valid UTF-8")
    path.write_bytes(b"2\ndenylist\n" + b"# x\n" * (seccomp_policy.MAX_POLICY_BYTES // 4))
    with pytest.raises(seccomp_policy.PolicyError, match="larger than"):
        seccomp_policy.read(str(path))
