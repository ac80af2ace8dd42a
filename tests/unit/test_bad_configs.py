"""The bad input corpus: every case in fixtures/bad-configs/ is refused cleanly.

Each case is a directory holding a container config (and whatever it
includes or names: fstab, seccomp policy, hooks) plus `expect`, which says
what `lxcsm start` must print (see fixtures/bad-configs/README.md).  The case
is copied to LXCPATH/NAME/ under tmp_path and started in the foreground; the
start must fail with exactly one printable line on stderr matching the
expected pattern, the expected exit status (1 unless told), no traceback,
nothing on stdout, and nothing created: no cgroup or command socket for the
container, no host mount, and no new file anywhere in LXCPATH, the rootfs or
the working directory - but for the container's lxcsm-last-start.log,
which records the refusal (lxcsm explain-failure).
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fixtures.rootfs import Rootfs, make_hostbind_rootfs

LXCSM = [sys.executable, "-m", "lxcsm.engine.cli"]
CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "bad-configs"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) if CORPUS.is_dir() else []
# The files of a case that describe it rather than belong to the container.
META_FILES = ("expect", "generate")
MIN_CASES = 40


@dataclass
class Expect:
    pattern: str  # a regex for the one stderr line, with @PLACEHOLDER@s
    exit: int = 1
    args: list[str] = field(default_factory=list)  # extra `lxcsm start` options
    argv: list[str] | None = None  # the whole command line instead
    name: str | None = None  # the container name to give instead of the case's
    command: list[str] = field(default_factory=lambda: ["/bin/true"])  # after `--`; [] for none
    modes: dict[str, int] = field(default_factory=dict)  # file -> mode to set


def read_expect(path: Path) -> Expect:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    expect = Expect(pattern=lines[0])
    for line in lines[1:]:
        what, _, value = line.partition(":")
        value = value.strip()
        if what == "exit":
            expect.exit = int(value)
        elif what == "args":
            expect.args = shlex.split(value)
        elif what == "argv":
            expect.argv = shlex.split(value)
        elif what == "name":
            expect.name = value.encode("ascii").decode("unicode_escape")
        elif what == "command":
            expect.command = shlex.split(value)
        elif what == "mode":
            file, mode = value.split()
            expect.modes[file] = int(mode, 8)
        else:
            raise ValueError(f"{path}: unknown line {line!r}")
    return expect


def generate(spec: Path, substitute) -> bytes:
    """The bytes a `generate` file describes (one item a line, appended in order):

        bytes b'...'            these bytes (a Python bytes literal)
        repeat N b'...'         these bytes N times
        random N SEED           N pseudo-random bytes from SEED
        copy PATH [N]           the first N bytes (default 65536) of a file
    """
    out = bytearray()
    for line in spec.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        if kind == "bytes":
            out += substitute(ast.literal_eval(rest))
        elif kind == "repeat":
            count, _, literal = rest.partition(" ")
            out += substitute(ast.literal_eval(literal)) * int(count)
        elif kind == "random":
            count, seed = rest.split()
            out += random.Random(int(seed)).randbytes(int(count))
        elif kind == "copy":
            path, _, count = rest.partition(" ")
            with open(path, "rb") as file:
                out += file.read(int(count or 65536))
        else:
            raise ValueError(f"{spec}: unknown item {line!r}")
    return bytes(out)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under `roots` with its kind, to see what a run created or removed."""
    found = {}
    for root in roots:
        for top, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(top, name)
                kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
                found[path] = kind
    return found


def cgroup_dirs(name: str) -> list[str]:
    wanted = (f"lxc.payload.{name}", f"lxc.monitor.{name}")
    found = []
    base = "/sys/fs/cgroup"
    for top, dirs, _files in os.walk(base):
        found += [os.path.join(top, d) for d in dirs if d in wanted]
        if top[len(base):].count("/") >= 4:
            dirs[:] = []
    return found


def command_socket_bound(lxcpath: Path, name: str) -> bool:
    with open("/proc/net/unix") as unix:
        return any(line.rstrip().endswith(f"@{lxcpath}/{name}/command") for line in unix)


def host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return sorted(line.split()[4] for line in mountinfo)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> Rootfs:
    return make_hostbind_rootfs(tmp_path_factory.mktemp("bad-configs") / "rootfs")


@dataclass
class Prepared:
    argv: list[str]
    pattern: re.Pattern[str]
    expect: Expect
    name: str
    lxcpath: Path
    cwd: Path


def prepare(case: str, tmp_path: Path, rootfs: Rootfs) -> Prepared:
    """Copy the case to tmp_path/lxc/NAME/ with its placeholders filled in."""
    source = CORPUS / case
    expect = read_expect(source / "expect")
    lxcpath = tmp_path / "lxc"
    name = f"{case}-{uuid.uuid4().hex[:6]}"
    cdir = lxcpath / name
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shutil.copytree(source, cdir, symlinks=True, ignore=shutil.ignore_patterns(*META_FILES))
    values = {
        "@ROOTFS@": str(rootfs.path),
        "@HOSTBIND@": "\n".join(rootfs.config_lines),
        "@DIR@": str(cdir),
        "@NAME@": name,
        "@LXCPATH@": str(lxcpath),
    }

    def substitute(data: bytes) -> bytes:
        for placeholder, value in values.items():
            data = data.replace(placeholder.encode(), value.encode())
        return data

    for top, _dirs, files in os.walk(cdir):
        for file in files:
            path = Path(top, file)
            if not path.is_symlink():
                path.write_bytes(substitute(path.read_bytes()))
    if (source / "generate").exists():
        (cdir / "config").write_bytes(generate(source / "generate", substitute))
    for file, mode in expect.modes.items():
        os.chmod(cdir / file, mode)

    def fill(text: str) -> str:
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        return text

    pattern = expect.pattern
    for placeholder, value in values.items():
        pattern = pattern.replace(placeholder, re.escape(value))
    if expect.argv is not None:
        argv = [fill(arg) for arg in expect.argv]
    else:
        argv = ["start", "-n", expect.name if expect.name is not None else name,
                "-P", str(lxcpath), "-F", *(fill(arg) for arg in expect.args)]
        if expect.command:
            argv += ["--", *expect.command]
    return Prepared(argv, re.compile(pattern), expect, name, lxcpath, cwd)


def test_the_corpus_has_enough_cases():
    assert len(CASES) >= MIN_CASES, CASES
    for case in CASES:
        assert (CORPUS / case / "expect").is_file(), f"{case} has no expect file"
        assert ((CORPUS / case / "config").is_file() or (CORPUS / case / "generate").is_file()
                or "args:" in (CORPUS / case / "expect").read_text()
                or "argv:" in (CORPUS / case / "expect").read_text()), f"{case} has no config"


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_with_one_line(case, tmp_path, rootfs):
    run = prepare(case, tmp_path, rootfs)
    before = snapshot(run.lxcpath, rootfs.path, run.cwd)
    mounts_before = host_mounts()

    result = subprocess.run([*LXCSM, *run.argv], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, cwd=run.cwd,
                            errors="backslashreplace")

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == run.expect.exit, result.stderr
    assert result.stdout == ""
    line, newline, rest = result.stderr.partition("\n")
    assert newline and rest == "", f"not exactly one line: {result.stderr!r}"
    assert line.isprintable(), f"control characters in {line!r}"
    assert run.pattern.search(line), f"{line!r} does not match {run.pattern.pattern!r}"

    names = {run.name} | ({run.expect.name} if run.expect.name else set())
    for name in names:
        assert cgroup_dirs(name) == []
        assert not command_socket_bound(run.lxcpath, name)
    after = snapshot(run.lxcpath, rootfs.path, run.cwd)
    record = run.lxcpath / run.name / "lxcsm-last-start.log"   # the refusal, for explain-failure
    if after.pop(str(record), None):
        assert [json.loads(e)["event"] for e in record.read_text().splitlines()] == ["start refused"]
    assert after == before
    assert host_mounts() == mounts_before
