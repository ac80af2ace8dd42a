"""lxc.seccomp.notify.proxy|cookie: a policy's notify rules answered by a proxy, under lxc-start
5.0.2 and lxcsm alike.

The proxy is the test's: a SOCK_SEQPACKET socket in its tmp dir, served by a thread, which
reads LXC's message (header, struct seccomp_notif, struct seccomp_notif_resp, cookie, and
three fds: the task's /proc/PID, its /proc/PID/mem, the listener), records what it saw and
answers mknodat with ENOTUNIQ - an errno mknod never gets otherwise.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import threading

import pytest

from tests.integration.harness import LXCSM

pytestmark = pytest.mark.root

HEADER = struct.Struct("=QiiHHH2xQ")
NOTIF = struct.Struct("=QIIiIQ6Q")
POLICY = "2\ndenylist\nmknod notify\nmknodat notify\n"
# Its output in /out (lxc-start -F relays the console only to a terminal); mknod is init's child.
SCRIPT = "exec >/out/result 2>&1; mknod /tmp/node c 1 3; echo rc=$?; test -e /tmp/node && echo made || echo not-made"


class Proxy:
    """A seccomp proxy on `path`: each notification it got, as a dict, in `.seen`."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(path)
        self.sock.listen(4)
        self.seen: list[dict] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return   # closed: the test is over
            with conn:
                while self._answer(conn):
                    pass

    def _answer(self, conn: socket.socket) -> bool:
        message, ancillary, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(3 * 4))
        if not message:
            return False
        fds = [fd for level, kind, data in ancillary if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
               for fd in struct.unpack(f"{len(data) // 4}i", data)]
        try:
            reserved, monitor_pid, init_pid, notif_size, resp_size, data_size, cookie_len = \
                HEADER.unpack_from(message)
            request_id, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack_from(message, HEADER.size)
            with open(os.open("status", os.O_RDONLY, dir_fd=fds[0])) as status:
                parent = next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
            path = os.pread(fds[1], 64, args[1]).split(b"\0")[0]   # mknodat(dirfd, path, ...)
            with open(f"/proc/{init_pid}/status") as status:   # init waits for the notified shell
                init_parent = next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
            self.seen.append({
                "reserved": reserved, "monitor_pid": monitor_pid, "init_pid": init_pid,
                "sizes": (notif_size, resp_size, data_size), "length": len(message), "fds": len(fds),
                "cookie": message[HEADER.size + notif_size + resp_size:][:cookie_len],
                "response_id": struct.unpack_from("=Q", message, HEADER.size + notif_size)[0],
                "request_id": request_id, "parent": parent, "path": path, "nr": nr,
                "init_parent": init_parent})
            response = struct.pack("=QqiI", request_id, 0, -errno.ENOTUNIQ, 0).ljust(resp_size, b"\0")
            conn.send(message[:HEADER.size + notif_size] + response)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def proxy(tmp_path):
    p = Proxy(str(tmp_path / "proxy.sock"))
    yield p
    p.close()


def _run(program: str, c, script: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, int]:
    """Start the container in the foreground under lxc-start or lxcsm: (result, monitor pid)."""
    (c.rootfs / "out").mkdir(exist_ok=True)
    command = (["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F"] if program == "lxc"
               else [*LXCSM, "start", "-n", c.name, "-P", c.lxcpath, "-F"])
    with subprocess.Popen([*command, "--", "/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, out, err), process.pid


@pytest.mark.parametrize("program", ["lxc", "lxcsm"])
def test_the_proxy_answers_a_notified_syscall(program, make_container, tmp_path, proxy, lxc_pivot_removed):
    (tmp_path / "policy").write_text(POLICY)
    c = make_container(extra=[f"lxc.seccomp.profile = {tmp_path / 'policy'}",
                              f"lxc.seccomp.notify.proxy = unix:{tmp_path / 'proxy.sock'}",
                              "lxc.seccomp.notify.cookie = open-sesame"])
    result, monitor = _run(program, c, SCRIPT)
    assert result.returncode == 0, result.stderr
    output = (c.rootfs / "out" / "result").read_text()
    assert output.splitlines()[1:] == ["rc=1", "not-made"], output
    assert os.strerror(errno.ENOTUNIQ) in output
    [seen] = proxy.seen
    sizes = seen.pop("sizes")
    # The monitor is init's parent; a cold `lxcsm start -F` (and lxc-start -F) is the monitor
    # itself, where a start server forks the monitor apart from the command.
    if program == "lxc" or os.environ.get("LXCSM_START_SERVER", "off") == "off":
        assert seen["monitor_pid"] == monitor
    assert seen == {"reserved": 0, "monitor_pid": seen["init_parent"], "init_pid": seen["parent"],
                    "length": HEADER.size + sizes[0] + sizes[1] + len("open-sesame"), "fds": 3,
                    "cookie": b"open-sesame", "response_id": seen["request_id"],
                    "request_id": seen["request_id"], "parent": seen["parent"], "path": b"/tmp/node",
                    "nr": seen["nr"], "init_parent": seen["init_parent"]}
    assert sizes == (80, 24, 64)   # this kernel's SECCOMP_GET_NOTIF_SIZES


@pytest.mark.parametrize("program", ["lxc", "lxcsm"])
def test_a_start_whose_proxy_is_not_there_fails(program, make_container, tmp_path, lxc_pivot_removed):
    (tmp_path / "policy").write_text(POLICY)
    c = make_container(extra=[f"lxc.seccomp.profile = {tmp_path / 'policy'}",
                              f"lxc.seccomp.notify.proxy = unix:{tmp_path / 'nobody.sock'}"])
    result, _monitor = _run(program, c, "echo ran; sleep 30")
    assert result.returncode != 0


@pytest.mark.parametrize("program", ["lxc", "lxcsm"])
def test_an_abstract_proxy_is_reached_without_its_names_last_character(program, make_container, tmp_path,
                                                                       lxc_pivot_removed):
    # unix:@NAME: LXC 5.0.2 connects to the abstract name NAME minus its last character (the
    # length it passes connect() counts the leading NUL); a proxy bound to all of NAME is not reached.
    name = f"lxcsm-notify-{os.urandom(6).hex()}"
    proxy = Proxy("\0" + name[:-1])
    try:
        (tmp_path / "policy").write_text(POLICY)
        c = make_container(extra=[f"lxc.seccomp.profile = {tmp_path / 'policy'}",
                                  f"lxc.seccomp.notify.proxy = unix:@{name}"])
        result, _monitor = _run(program, c, SCRIPT)
        assert result.returncode == 0, result.stderr
        assert (c.rootfs / "out" / "result").read_text().splitlines()[1:] == ["rc=1", "not-made"]
        assert [seen["cookie"] for seen in proxy.seen] == [b""]
    finally:
        proxy.close()
