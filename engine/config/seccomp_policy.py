"""Read and check an LXC seccomp policy file (lxc.seccomp.profile).

A start whose policy LXC would refuse is refused too, before anything
changes on the host, naming the policy file's bad line; a good one becomes a
`Policy` that linux/seccomp.py turns into a libseccomp filter, which the child
installs last of all.  This is the grammar of LXC 5's parse_config,
parse_config_v1 and parse_config_v2 (seccomp.c), read a little more strictly
where LXC would silently misread a line:

    1                       version 1: an allowlist of syscall numbers
    allowlist
    0
    1

    2                       version 2: syscalls by name
    denylist [ACTION]       or allowlist; blacklist/whitelist are old names
    reject_force_umount     # comments start with '#'
    [x86_64]                rules below apply to this architecture ([all]: every one)
    mknod errno 0           NAME [ACTION [ARG]...]
    ioctl notify
    kill kill [0,1,SCMP_CMP_EQ] [1,0x10,SCMP_CMP_MASKED_EQ,0xf0]

ACTION is kill, allow, trap, notify or errno NUMBER; a rule without one takes
the list's default (kill in a denylist, allow in an allowlist).  An ARG is
[INDEX,VALUE,OP] or [INDEX,VALUE,OP,MASK] with INDEX 0..5, at most six.

Stricter than LXC: an action must be the whole word (LXC reads "kill-all" as
"kill"), and rules in sections for other architectures are checked too (LXC
skips them unread).  Whether a syscall name exists is not checked: LXC itself
only notes names libseccomp does not know, and skips them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxcsm.engine.config.loader import read_limited

MAX_POLICY_BYTES = 1 << 20

ALLOWLIST = ("allowlist", "whitelist")
DENYLIST = ("denylist", "blacklist")
ACTIONS = ("kill", "allow", "trap", "notify", "errno")
# The architecture sections LXC 5.0.2 knows, each in lower or upper case.
ARCH_SECTIONS = (
    "x86", "x32", "x86_64", "all", "arm", "arm64", "ppc64le", "ppc64", "ppc",
    "mips64", "mips64n32", "mips", "mipsel64", "mipsel64n32", "mipsel", "s390x", "s390",
)
COMPARISONS = {
    "SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=", "SCMP_CMP_EQ": "==",
    "SCMP_CMP_GE": ">=", "SCMP_CMP_GT": ">", "SCMP_CMP_MASKED_EQ": "&=",
}
MAX_ARGS = 6

_SYSCALL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# A C integer as %i / strtoull(..., 0) read it: hex, octal or decimal.
_C_UNSIGNED = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_ARG = re.compile(r"\[([^\[\]]*)\]")


class PolicyError(ValueError):
    """A bad policy file: names the file and the line (0 for the file as a whole)."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Argument:
    index: int
    value: int
    op: str  # the SCMP_CMP_* name
    mask: int | None


@dataclass(frozen=True)
class Rule:
    syscall: str
    action: str  # "kill", "allow", "trap", "notify" or "errno N"
    args: tuple[Argument, ...]
    arch: str  # the section it is in; "native" before any section
    line: int


@dataclass(frozen=True)
class Policy:
    version: int
    denylist: bool
    default_action: str  # for syscalls without a rule
    rule_action: str  # for rules that name no action
    rules: tuple[Rule, ...]  # version 1: the numbers, as strings, with action "allow"


def _action(words: list[str]) -> tuple[str, int]:
    """The action at the start of `words` and how many words it took; ("", 0) if none."""
    if not words or words[0] not in ACTIONS:
        return "", 0
    if words[0] != "errno":
        return words[0], 1
    if len(words) < 2 or not _INTEGER.fullmatch(words[1]):
        raise ValueError("errno needs a number, e.g. 'errno 1'")
    return f"errno {int(words[1])}", 2


def _argument(text: str) -> Argument:
    fields = text.split(",")
    if len(fields) not in (3, 4):
        raise ValueError(f"argument [{text}] is not [INDEX,VALUE,OP] or [INDEX,VALUE,OP,MASK]")
    index, value, op = fields[:3]
    if not _C_UNSIGNED.fullmatch(index) or int(index, 0) >= MAX_ARGS:
        raise ValueError(f"argument [{text}]: index {index!r} is not 0..{MAX_ARGS - 1}")
    for name, number in (("value", value), ("mask", fields[3] if len(fields) == 4 else "0")):
        if not _C_UNSIGNED.fullmatch(number) or int(number, 0) >= 2**64:
            raise ValueError(f"argument [{text}]: {name} {number!r} is not an unsigned 64-bit number")
    by_symbol = {symbol: name for name, symbol in COMPARISONS.items()}
    if op not in COMPARISONS and op not in by_symbol:
        raise ValueError(f"argument [{text}]: unknown comparison {op!r} "
                         f"(one of {', '.join(COMPARISONS)} or {' '.join(by_symbol)})")
    return Argument(int(index, 0), int(value, 0), by_symbol.get(op, op),
                    int(fields[3], 0) if len(fields) == 4 else None)


def _rule(text: str, rule_action: str, arch: str, line: int) -> Rule:
    name, _, rest = text.partition(" ")
    if not _SYSCALL_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a syscall name")
    rest = rest.strip()
    args_at = rest.find("[")
    words = (rest if args_at < 0 else rest[:args_at]).split()
    action, used = _action(words)
    if words[used:]:
        raise ValueError(f"unknown action {words[used]!r} (one of {', '.join(ACTIONS)})")
    args: list[Argument] = []
    if args_at >= 0:
        if not action:
            # LXC reads the word after the name as the action, always.
            raise ValueError("arguments need an action before them, e.g. 'errno 1 [0,1,==]'")
        position = args_at
        for match in _ARG.finditer(rest, args_at):
            if rest[position:match.start()].strip():
                break
            args.append(_argument(match[1]))
            position = match.end()
        if rest[position:].strip():
            raise ValueError(f"cannot read {rest[position:].strip()!r}: arguments are [INDEX,VALUE,OP]")
        if len(args) > MAX_ARGS:
            raise ValueError(f"more than {MAX_ARGS} arguments")
    return Rule(name, action or rule_action, tuple(args), arch, line)


def _without_comment(text: str) -> str:
    """A line without its trailing '# comment' (a '#' starting the line or after a space)."""
    match = re.search(r"(?:^|\s)#", text)
    return (text[:match.start()] if match else text).strip()


def parse(text: str, path: str) -> Policy:
    """Check a whole policy; PolicyError for the first bad line."""
    lines = text.split("\n")   # lines as getline(3) reads them; a final newline ends the last
    if lines[-1] == "":
        lines.pop()
    if not lines or lines[0].strip() not in ("1", "2"):
        found = repr(lines[0].strip()) if lines else "an empty file"
        raise PolicyError(path, 1 if lines else 0,
                          f"the first line must be the policy version, 1 or 2, not {found}")
    version = int(lines[0])
    if len(lines) < 2:
        raise PolicyError(path, 0, "no policy line (allowlist or denylist) after the version")
    head = lines[1].strip()
    if "debug" in head:
        raise PolicyError(path, 2, "the 'debug' directive is not supported")

    if version == 1:
        if "allowlist" not in head:
            raise PolicyError(path, 2, "a version 1 policy must be an allowlist")
        rules = []
        for number, line in enumerate(lines[2:], start=3):
            match = re.match(r"\s*([+-]?[0-9]+)", line)
            if not match:
                raise PolicyError(path, number, "a version 1 policy lists one syscall number a line")
            rules.append(Rule(match[1], "allow", (), "native", number))
        return Policy(1, False, "kill", "allow", tuple(rules))

    words = head.split()   # no comment here: LXC would read '#' as the default action
    if not words or words[0] not in ALLOWLIST + DENYLIST:
        raise PolicyError(path, 2, f"the second line must be allowlist or denylist "
                                   f"(optionally with a default action), not {head!r}")
    denylist = words[0] in DENYLIST
    try:
        default, used = _action(words[1:])
        if words[1 + used:]:
            raise ValueError(f"unknown default action {words[1 + used]!r} (one of {', '.join(ACTIONS)})")
    except ValueError as err:
        raise PolicyError(path, 2, str(err)) from None
    default_action = default or ("allow" if denylist else "kill")
    rule_action = "kill" if denylist else "allow"

    rules = []
    arch = "native"
    for number, line in enumerate(lines[2:], start=3):
        stripped = _without_comment(line)
        if not stripped:
            continue
        if stripped.startswith("["):
            section = stripped[1:-1] if stripped.endswith("]") else None
            if section is None or not (section in ARCH_SECTIONS or section.lower() in ARCH_SECTIONS
                                       and section == section.upper()):
                raise PolicyError(path, number, f"unknown architecture section {stripped!r} "
                                                f"(known: {', '.join(ARCH_SECTIONS)})")
            arch = section.lower()
            continue
        try:
            rules.append(_rule(stripped, rule_action, arch, number))
        except ValueError as err:
            raise PolicyError(path, number, str(err)) from None
    return Policy(2, denylist, default_action, rule_action, tuple(rules))


def read(path: str) -> Policy:
    """Read and check the policy file at `path`: OSError if it cannot be read."""
    raw = read_limited(path, MAX_POLICY_BYTES)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(path, 0, f"file is larger than {MAX_POLICY_BYTES} bytes")
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        if b"\0" in raw_line:
            raise PolicyError(path, number, "line contains a NUL byte")
        try:
            raw_line.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(path, number, "line is not valid UTF-8") from None
    return parse(raw.decode("utf-8"), path)
