"""The rootfs builders of fixtures/rootfs.py build what they claim."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.rootfs import (
    HOSTBIND_TOP_DIRS,
    SBIN_APPLETS,
    NotStaticError,
    Rootfs,
    RootfsError,
    busybox_applets,
    check_static,
    elf_interpreter,
    make_busybox_rootfs,
    make_hostbind_rootfs,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")


def needs_root(test):
    """``@pytest.mark.root``, and a skip (not a failure) when not run as root."""
    test = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot, mounts)")(test)
    return pytest.mark.root(test)


def parse_mount_entry(line: str) -> tuple[str, str, str, str]:
    key, sep, value = line.partition("=")
    assert sep and key.strip() == "lxc.mount.entry", line
    fields = value.split()
    assert len(fields) == 6, line
    src, dst, fstype, opts, freq, passno = fields
    assert (freq, passno) == ("0", "0")
    return src, dst, fstype, opts


def tree(root: Path) -> dict[str, str]:
    """relative path -> 'dir' | 'file:<size>' | 'link:<target>' (for idempotence checks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = f"dir:{p.stat().st_mode & 0o7777:o}"
            else:
                out[rel] = f"file:{p.stat().st_size}:{p.stat().st_mode & 0o7777:o}"
    return out


# ------------------------------------------------------------------------------------
# host-bind rootfs

def test_hostbind_skeleton_and_binds(tmp_path):
    rootfs = make_hostbind_rootfs(tmp_path / "rootfs")
    root = rootfs.path
    assert isinstance(rootfs, Rootfs) and rootfs.kind == "hostbind"
    for d in ("proc", "sys", "dev", "tmp", "etc", "root", "run", "var", "usr"):
        assert (root / d).is_dir() and not (root / d).is_symlink(), d
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "etc/hostname").read_text().strip()
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert (root / "etc/group").read_text().startswith("root:x:0:")

    entries = [parse_mount_entry(line) for line in rootfs.config_lines]
    assert entries[0] == ("/usr", "usr", "none", "ro,bind")
    for src, dst, fstype, opts in entries:
        host = Path(src)
        assert host.is_absolute() and host.is_dir() and not host.is_symlink(), src
        assert dst == src.lstrip("/") and dst in HOSTBIND_TOP_DIRS
        assert (fstype, opts) == ("none", "ro,bind")
        assert (root / dst).is_dir() and not any((root / dst).iterdir()), dst

    bound = {dst for _, dst, _, _ in entries}
    for name in HOSTBIND_TOP_DIRS:
        host = Path("/", name)
        inside = root / name
        if host.is_symlink():  # mirrored as the same symlink, not bound
            assert os.readlink(inside) == os.readlink(host), name
            assert name not in bound
        elif host.is_dir():
            assert name in bound
        else:
            assert not inside.exists() and not inside.is_symlink(), name


def test_hostbind_copies_no_host_file(tmp_path):
    root = make_hostbind_rootfs(tmp_path / "rootfs").path
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files and all(p.parent == root / "etc" for p in files), files
    assert sum(p.stat().st_size for p in files) < 4096


def test_hostbind_fake_host_real_dirs_and_symlinks(tmp_path):
    """Both branches, whatever this host looks like: a real /lib64 is bound, a /bin
    symlink is mirrored, an absent /lib32 is left out (and removed once gone)."""
    host = tmp_path / "host"
    for d in ("usr/bin", "usr/sbin", "usr/lib", "lib64", "lib32"):
        (host / d).mkdir(parents=True)
    os.symlink("usr/bin", host / "bin")
    os.symlink("/usr/sbin", host / "sbin")
    root = tmp_path / "rootfs"
    rootfs = make_hostbind_rootfs(root, host=host)
    assert [parse_mount_entry(x)[:2] for x in rootfs.config_lines] == [
        ("/usr", "usr"), ("/lib64", "lib64"), ("/lib32", "lib32")]
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "sbin") == "/usr/sbin"
    assert not (root / "lib").exists()

    # The host changes (lib64 becomes a symlink, lib32 goes): a rebuild follows.
    (host / "lib64").rmdir()
    (host / "lib32").rmdir()
    os.symlink("usr/lib", host / "lib64")
    rootfs = make_hostbind_rootfs(root, host=host)
    assert rootfs.config_lines == ["lxc.mount.entry = /usr usr none ro,bind 0 0"]
    assert os.readlink(root / "lib64") == "usr/lib"
    assert not (root / "lib32").exists()


def test_hostbind_idempotent(tmp_path):
    root = tmp_path / "rootfs"
    first = make_hostbind_rootfs(root)
    before = tree(root)
    second = make_hostbind_rootfs(root)
    assert first == second
    assert tree(root) == before


@needs_root
def test_hostbind_init_resolves_inside(tmp_path):
    """Do the config's bind mounts ourselves in a private mount namespace, chroot in:
    /sbin/init and /bin/sh must resolve and run.  Nothing leaks to the host."""
    rootfs = make_hostbind_rootfs(tmp_path / "rootfs")
    script = ["set -e"]
    for line in rootfs.config_lines:
        src, dst, _, _ = parse_mount_entry(line)
        script.append(f"mount --bind '{src}' '{rootfs.path / dst}'")
        script.append(f"mount -o remount,bind,ro '{rootfs.path / dst}'")
    script.append(
        f"chroot '{rootfs.path}' /bin/sh -c "
        "'test -x /sbin/init && readlink -f /sbin/init && echo inside-ok'")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "\n".join(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "inside-ok"
    assert r.stdout.splitlines()[0] == os.path.realpath("/sbin/init")
    with open("/proc/self/mounts") as f:
        assert str(tmp_path) not in f.read()
    assert not any((rootfs.path / "usr").iterdir())


# ------------------------------------------------------------------------------------
# static ELF check

def test_elf_interpreter_host_binaries():
    assert elf_interpreter(BUSYBOX) is None  # busybox-static (tools/setup installs it)
    check_static(BUSYBOX)
    true = Path(shutil.which("true") or "/bin/true")
    interp = elf_interpreter(true)  # Debian's coreutils: dynamic
    assert interp and "ld" in Path(interp).name
    with pytest.raises(NotStaticError, match="busybox-static"):
        check_static(true)


def test_busybox_rootfs_refuses_dynamic_binary(tmp_path):
    with pytest.raises(NotStaticError, match="dynamically linked"):
        make_busybox_rootfs(tmp_path / "rootfs", busybox=Path("/bin/true"))
    assert not (tmp_path / "rootfs").exists()


def test_busybox_rootfs_refuses_missing_or_non_elf(tmp_path):
    with pytest.raises(RootfsError, match="busybox-static"):
        make_busybox_rootfs(tmp_path / "r1", busybox=tmp_path / "nope")
    script = tmp_path / "busybox"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(RootfsError, match="not an ELF"):
        make_busybox_rootfs(tmp_path / "r2", busybox=script)


def _fake_elf(path: Path, *, bits: int, little: bool, interp: bytes | None) -> None:
    """A minimal ELF file: header, two program headers (PT_LOAD, maybe PT_INTERP)."""
    e = "<" if little else ">"
    if bits == 64:
        ehsize, phentsize = 64, 56
        ph = lambda t, off, size: struct.pack(e + "IIQQQQQQ", t, 4, off, 0, 0, size, size, 8)
        hdr = lambda phoff, phnum: struct.pack(
            e + "HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, ehsize, phentsize, phnum, 0, 0, 0)
    else:
        ehsize, phentsize = 52, 32
        ph = lambda t, off, size: struct.pack(e + "IIIIIIII", t, off, 0, 0, size, size, 4, 4)
        hdr = lambda phoff, phnum: struct.pack(
            e + "HHIIIIIHHHHHH", 2, 8, 1, 0, phoff, 0, 0, ehsize, phentsize, phnum, 0, 0, 0)
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if little else 2, 1]) + bytes(9)
    phs = [ph(1, 0, 0)]
    data_off = ehsize + 2 * phentsize
    if interp is not None:
        phs.append(ph(3, data_off, len(interp) + 1))
    body = ident + hdr(ehsize, len(phs)) + b"".join(phs)
    body = body.ljust(data_off, b"\0") + (interp + b"\0" if interp else b"")
    path.write_bytes(body)


@pytest.mark.parametrize("bits,little", [(64, True), (64, False), (32, True), (32, False)])
def test_elf_interpreter_parses_all_layouts(tmp_path, bits, little):
    dyn, static = tmp_path / "dyn", tmp_path / "static"
    _fake_elf(dyn, bits=bits, little=little, interp=b"/lib/ld-test.so.1")
    _fake_elf(static, bits=bits, little=little, interp=None)
    assert elf_interpreter(dyn) == "/lib/ld-test.so.1"
    assert elf_interpreter(static) is None


# ------------------------------------------------------------------------------------
# busybox rootfs

def test_busybox_rootfs_layout(tmp_path):
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    root = rootfs.path
    assert rootfs.kind == "busybox" and rootfs.config_lines == []
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc",
              "etc/init.d", "root", "run", "var/log", "lib"):
        assert (root / d).is_dir() and not (root / d).is_symlink(), d
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777

    bb = root / "bin/busybox"
    assert bb.is_file() and not bb.is_symlink() and os.access(bb, os.X_OK)
    assert bb.stat().st_size == BUSYBOX.resolve().stat().st_size
    assert elf_interpreter(bb) is None


def test_busybox_every_applet_linked(tmp_path):
    root = make_busybox_rootfs(tmp_path / "rootfs").path
    listed = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    applets = set(listed) - {"busybox"}
    assert len(applets) > 100 and {"sh", "init", "mount", "ls"} <= applets
    assert set(busybox_applets(BUSYBOX)) == applets
    bin_entries = {p.name for p in (root / "bin").iterdir()}
    assert bin_entries == applets | {"busybox"}
    for a in applets:
        assert os.readlink(root / "bin" / a) == "busybox", a
    for a in SBIN_APPLETS:
        link = root / "sbin" / a
        assert os.readlink(link) == "../bin/busybox", a
        assert link.resolve() == (root / "bin/busybox").resolve()


def test_busybox_etc(tmp_path):
    root = make_busybox_rootfs(tmp_path / "rootfs").path
    etc = root / "etc"
    inittab = [line for line in (etc / "inittab").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert inittab[0] == "::sysinit:/etc/init.d/rcS"
    assert "console::askfirst:/bin/sh" in inittab
    for line in inittab:  # id:runlevels:action:process, no tty (none exist)
        ident, runlevels, action, process = line.split(":", 3)
        assert not ident.startswith("tty") and "getty" not in process, line
        assert action in {"sysinit", "askfirst", "respawn", "wait", "once", "shutdown",
                          "ctrlaltdel", "restart"}
        assert (root / process.split()[0].lstrip("/")).exists(), process
    rcs = etc / "init.d/rcS"
    assert rcs.read_text().startswith("#!/bin/sh\n") and os.access(rcs, os.X_OK)
    assert (etc / "passwd").read_text().splitlines()[0] == "root:x:0:0:root:/root:/bin/sh"
    assert (etc / "group").read_text().startswith("root:x:0:")
    assert (etc / "hostname").read_text().strip()
    for shell in (etc / "shells").read_text().split():
        assert os.readlink(root / shell.lstrip("/")) == "busybox"


def test_busybox_idempotent_and_fast(tmp_path):
    root = tmp_path / "rootfs"
    t0 = time.monotonic()
    make_busybox_rootfs(root)
    t1 = time.monotonic()
    before = tree(root)
    (root / "bin/ls").unlink()              # damage: a missing applet,
    (root / "sbin/init").unlink()
    os.symlink("nowhere", root / "sbin/init")  # a wrong link,
    (root / "etc/inittab").write_text("")  # an emptied file
    t2 = time.monotonic()
    make_busybox_rootfs(root)
    t3 = time.monotonic()
    assert tree(root) == before
    assert t1 - t0 < 1.0 and t3 - t2 < 1.0, (t1 - t0, t3 - t2)


@needs_root
def test_busybox_runs_inside_without_libraries(tmp_path):
    root = make_busybox_rootfs(tmp_path / "rootfs").path
    assert not any((root / "lib").iterdir())
    r = subprocess.run(["chroot", str(root), "/bin/sh", "-c",
                        "test -x /sbin/init && ls / >/dev/null && echo inside-ok"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "inside-ok"


# ------------------------------------------------------------------------------------
# config

def test_write_config(tmp_path):
    rootfs = make_hostbind_rootfs(tmp_path / "rootfs")
    path = write_config(tmp_path / "lxc", "c1", rootfs,
                        extra=["lxc.signal.halt = SIGUSR1", "lxc.tty.max = 0\n"])
    assert path == tmp_path / "lxc/c1/config"
    pairs = []
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(" = ")
        assert sep and key == key.strip() and key.startswith("lxc.") and value, line
        pairs.append((key, value))
    assert pairs[:3] == [("lxc.uts.name", "c1"),
                         ("lxc.rootfs.path", f"dir:{rootfs.path}"),
                         ("lxc.net.0.type", "empty")]
    assert [f"{k} = {v}" for k, v in pairs[3:-2]] == rootfs.config_lines
    assert pairs[-2:] == [("lxc.signal.halt", "SIGUSR1"), ("lxc.tty.max", "0")]
    assert write_config(tmp_path / "lxc", "c1", rootfs,
                        extra=["lxc.signal.halt = SIGUSR1", "lxc.tty.max = 0"]) == path

    bb = make_busybox_rootfs(tmp_path / "bb")
    text = write_config(tmp_path / "lxc", "bb", bb).read_text()
    assert "lxc.mount.entry" not in text and f"dir:{bb.path}\n" in text


@pytest.mark.parametrize("name", ["", "a/b", "..", "x\ny"])
def test_write_config_rejects_bad_names(tmp_path, name):
    with pytest.raises(ValueError):
        write_config(tmp_path, name, Rootfs(path=tmp_path / "r"))


def test_cli(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "fixtures/rootfs.py"), "hostbind",
                        str(tmp_path / "rootfs"), "--lxcpath", str(tmp_path / "lxc"),
                        "--name", "demo"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "lxc.mount.entry = /usr usr none ro,bind 0 0"
    assert "lxc.mount.entry = /usr usr" in (tmp_path / "lxc/demo/config").read_text()
    r = subprocess.run([sys.executable, str(REPO / "fixtures/rootfs.py"), "busybox",
                        str(tmp_path / "bb"), "--busybox", "/bin/true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "dynamically linked" in r.stderr
