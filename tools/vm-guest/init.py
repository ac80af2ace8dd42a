"""PID 1 of the tools/vm guest: a cgroup2-only system that runs one command, then resets.

The initramfs (tools/vm-guest/initramfs-init) has mounted the root disk and the checkout
(9p, at the host's path, given as argv[1]) and execs this file from that checkout, so
changing it needs no image rebuild.  It runs with the guest's /usr/bin/python3 (Debian 12's
3.11), standard library only.

What it sets up is what systemd gives a cgroup2-only ("unified") host, minus systemd:

- /proc, /sys, /dev (devtmpfs, devpts, /dev/shm), /run as tmpfs;
- cgroup2 alone at /sys/fs/cgroup (no v1 hierarchy anywhere), mounted with nsdelegate
  and memory_recursiveprot as systemd does, every available controller enabled in the
  root's cgroup.subtree_control;
- this process moved to /sys/fs/cgroup/init.scope, as systemd moves itself: with
  controllers enabled for the root's children, processes belong in leaf cgroups, and
  everything the command starts begins there too.

Then it reads the run's request from the second 9p share (tag lxcsm-io, the host's
per-run directory, mounted at /run/lxcsm-vm): ``command.json`` =
{"argv": [...], "cwd": ..., "marker": ...}.  It runs argv as root with stdout and
stderr on the second serial port (/dev/ttyS1, which qemu hands to tools/vm's relay),
writes the marker line there first so the host can tell boot time from command time,
reaps every orphan meanwhile (as PID 1 must), writes the exit status to
/run/lxcsm-vm/status, and resets the machine (qemu runs with -no-reboot, so a reset
ends it).  A process killed by signal N reports 128 + N, as a shell does.
"""

import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import traceback

CGROUP_ROOT = "/sys/fs/cgroup"
IO_DIR = "/run/lxcsm-vm"
OUTPUT_TTY = "/dev/ttyS1"
VENV = "/opt/lxcsm-venv"
RB_AUTOBOOT = 0x01234567
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


LIBC = ctypes.CDLL(None, use_errno=True)
# mount(2) flags: the options mount(8) would turn into flags rather than pass as data.
MOUNT_FLAGS = {"nosuid": 0x2, "nodev": 0x4, "noexec": 0x8}


def mount(fstype: str, source: str, target: str, options: str = "") -> None:
    """mount(2) itself: under TCG every exec of mount(8) costs a noticeable part of the boot."""
    os.makedirs(target, exist_ok=True)
    flags = 0
    data = []
    for option in filter(None, options.split(",")):
        if option in MOUNT_FLAGS:
            flags |= MOUNT_FLAGS[option]
        else:
            data.append(option)
    if LIBC.mount(source.encode(), target.encode(), fstype.encode(), flags, ",".join(data).encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount -t {fstype} {source} {target}: {os.strerror(error)}")


def mount_filesystems(checkout: str) -> None:
    mount("proc", "proc", "/proc", "nosuid,nodev,noexec")
    mount("sysfs", "sysfs", "/sys", "nosuid,nodev,noexec")
    mount("devtmpfs", "devtmpfs", "/dev", "nosuid,mode=0755")
    mount("devpts", "devpts", "/dev/pts", "nosuid,noexec,gid=5,mode=0620,ptmxmode=0666")
    mount("tmpfs", "tmpfs", "/dev/shm", "nosuid,nodev")
    mount("tmpfs", "tmpfs", "/run", "nosuid,nodev,mode=0755")
    mount("cgroup2", "cgroup2", CGROUP_ROOT, "nosuid,nodev,noexec,nsdelegate,memory_recursiveprot")
    # The venv's lxcsm package is a set of symlinks into /run/lxcsm-checkout (see tools/vm):
    # the image does not depend on where the checkout lives on the host.
    os.symlink(checkout, "/run/lxcsm-checkout")
    mount("9p", "lxcsm-io", IO_DIR, "trans=virtio,version=9p2000.L,cache=none")


def enable_controllers() -> None:
    """Every controller for the root's children, then PID 1 into a leaf: init.scope."""
    with open(f"{CGROUP_ROOT}/cgroup.controllers") as available:
        controllers = available.read().split()
    with open(f"{CGROUP_ROOT}/cgroup.subtree_control", "w") as subtree:
        subtree.write(" ".join(f"+{c}" for c in controllers))
    os.mkdir(f"{CGROUP_ROOT}/init.scope")
    with open(f"{CGROUP_ROOT}/init.scope/cgroup.procs", "w") as procs:
        procs.write(str(os.getpid()))


def configure_system() -> None:
    with open("/proc/sys/kernel/hostname", "w") as hostname:
        hostname.write("lxcsm-vm")
    # `ip link set lo up`, as the SIOCSIFFLAGS ioctl, without an exec.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def open_output() -> int:
    """The second serial port, raw: no \\n -> \\r\\n on the way out."""
    fd = os.open(OUTPUT_TTY, os.O_WRONLY | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def command_environment() -> dict[str, str]:
    return {
        "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        # On the guest's disk, not the 9p share: tests' tmp_path, container rootfs, LXCPATH.
        "TMPDIR": "/var/tmp",
        # Bytecode goes to the guest's disk too, never into the host's checkout; the stdlib's
        # and the venv's were compiled there when the image was built (tools/vm: GUEST_PYCACHE).
        "PYTHONPYCACHEPREFIX": "/var/cache/lxcsm-pycache",
    }


def run_command(request: dict, output_fd: int) -> int:
    os.write(output_fd, f"{request['marker']}\n".encode())
    with open(os.devnull, "rb") as devnull:
        try:
            child = subprocess.Popen(request["argv"], cwd=request["cwd"], env=command_environment(),
                                     stdin=devnull, stdout=output_fd, stderr=output_fd,
                                     start_new_session=True)
        except OSError as error:
            os.write(output_fd, f"lxcsm-vm: cannot run {request['argv'][0]}: {error}\n".encode())
            return 127
    # PID 1 adopts every orphan (daemonized monitors, double-forked children): reap them
    # all, and stop when the command itself has ended.
    while True:
        pid, wait_status = os.wait()
        if pid == child.pid:
            child.returncode = 0   # reaped here; keep Popen from waiting for it again
            if os.WIFSIGNALED(wait_status):
                return 128 + os.WTERMSIG(wait_status)
            return os.waitstatus_to_exitcode(wait_status)


def main() -> None:
    checkout = sys.argv[1]
    status = 125   # reported if setup itself fails
    try:
        mount_filesystems(checkout)
        enable_controllers()
        configure_system()
        with open(f"{IO_DIR}/command.json") as request_file:
            request = json.load(request_file)
        status = run_command(request, open_output())
    except Exception:
        traceback.print_exc()   # to the console (ttyS0): tools/vm shows it
    finally:
        if os.path.ismount(IO_DIR):
            with open(f"{IO_DIR}/status", "w") as status_file:
                status_file.write(f"{status}\n")
        try:
            os.kill(-1, signal.SIGKILL)   # everything but PID 1 (processes the command left)
        except ProcessLookupError:
            pass
        os.sync()
        LIBC.reboot(RB_AUTOBOOT)


main()
