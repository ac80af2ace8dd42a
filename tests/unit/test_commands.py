"""engine/protocol/command_socket.py: the command socket's name and LXC 5's wire protocol, both ends.

The server runs in this (main) thread, the clients in short-lived threads:
`serve_while` answers connections until the client thread is done, so every
change to the server (set_state, close) happens in the thread that serves.
Names are unique per test and every socket is closed at the end; a check of
/proc/net/unix makes sure no name stays bound.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest

from lxcsm.engine.protocol import cgroup_commands, command_client, command_server, command_socket
from lxcsm.engine.protocol.command_server import AlreadyRunning, CommandServer
from lxcsm.engine.protocol.command_socket import Cmd, LxcState

STATE_MSG_SIZE = 4 + 256 + 4   # struct lxc_msg: int type, char name[256], int value
HEADER = struct.Struct("<iiq")


def fnv1a_64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) % (1 << 64)
    return h


def test_fnv1a_reference_vectors():
    # published FNV-1a 64 test vectors, so the check below is independent of the code under test
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


# --- socket_name ----------------------------------------------------------------------


def test_socket_name_short_path():
    assert command_socket.socket_name("/var/lib/lxc", "c1") == b"\0/var/lib/lxc/c1/command"


@pytest.mark.parametrize("lxcpath", ["/var/lib/lxc/", "/var/lib/lxc///"])
def test_socket_name_strips_trailing_slashes(lxcpath):
    assert command_socket.socket_name(lxcpath, "c1") == b"\0/var/lib/lxc/c1/command"


def test_socket_name_long_path_is_hashed():
    lxcpath = "/tmp/" + "x" * 120
    name = "container"
    expected = f"lxc/{fnv1a_64(f'{lxcpath}/{name}'.encode()):016x}/command".encode()
    assert command_socket.socket_name(lxcpath, name) == b"\0" + expected
    assert command_socket.socket_name(lxcpath + "//", name) == b"\0" + expected


def test_socket_name_hash_boundary_is_106():
    name = "c"
    suffix = f"/{name}/command"
    at_105 = "/" + "p" * (105 - len(suffix) - 1)
    at_106 = at_105 + "p"
    assert len(at_105 + suffix) == 105 and len(at_106 + suffix) == 106
    assert command_socket.socket_name(at_105, name) == b"\0" + (at_105 + suffix).encode()
    hashed = f"lxc/{fnv1a_64(f'{at_106}/{name}'.encode()):016x}/command".encode()
    assert command_socket.socket_name(at_106, name) == b"\0" + hashed
    assert len(hashed) == len("lxc/") + 16 + len("/command")


def test_socket_name_length_counts_bytes_not_characters():
    lxcpath = "/tmp/" + "é" * 50          # 55 characters, 105 bytes
    assert len(f"{lxcpath}/c/command") < 106 <= len(f"{lxcpath}/c/command".encode())
    assert command_socket.socket_name(lxcpath, "c").startswith(b"\0lxc/")


# --- the server -----------------------------------------------------------------------


class FakeConfig:
    signal_stop = signal.SIGKILL
    items = {"lxc.uts.name": "box", "lxc.signal.halt": "10", "lxc.empty": "", "lxc.unset": None}

    def get_item(self, key: str):
        return self.items[key]     # KeyError for keys LXC does not know


def abstract_bound(address: bytes) -> bool:
    wanted = "@" + address[1:].decode()
    with open("/proc/net/unix") as unix:
        return any(line.split()[-1] == wanted for line in unix if len(line.split()) >= 8)


@pytest.fixture
def server():
    lxcpath = f"/tmp/lxcsm-unit-{uuid.uuid4().hex}"
    name = f"ct-{uuid.uuid4().hex[:8]}"
    sock = command_server.bind(lxcpath, name)
    srv = CommandServer(sock, name, FakeConfig())
    srv.lxcpath = lxcpath
    closed = []
    real_close = srv.close

    def close_once():
        if not closed:
            closed.append(True)
            real_close()
    srv.close = close_once
    yield srv
    srv.close()
    assert not abstract_bound(command_socket.socket_name(lxcpath, name)), "the command socket is still bound"


def serve_while(srv: CommandServer, client, timeout: float = 5.0):
    """Run client() in a thread and serve the server here until it returns; its result."""
    result: dict = {}

    def run():
        try:
            result["value"] = client()
        except BaseException as err:
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        if time.monotonic() > deadline:
            raise AssertionError("the client did not finish")
        if select.select([srv], [], [], 0.02)[0]:
            srv.serve_ready()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def call(srv, cmd, payload=b"", keep=False):
    return serve_while(srv, lambda: command_client.call(srv.lxcpath, srv.name, cmd, payload, keep=keep))


def test_bound_name_is_the_abstract_socket_name(server):
    assert server.sock.getsockname() == command_socket.socket_name(server.lxcpath, server.name)
    assert abstract_bound(command_socket.socket_name(server.lxcpath, server.name))


def test_binding_the_same_name_twice_is_already_running(server):
    with pytest.raises(AlreadyRunning) as caught:
        command_server.bind(server.lxcpath, server.name)
    assert str(caught.value) == "container is already running"
    # the lxcpath is part of the name: another lxcpath binds fine
    other = command_server.bind(server.lxcpath + "-other", server.name)
    other.close()


def test_get_state(server):
    reply = call(server, Cmd.GET_STATE)
    assert (reply.ret, reply.value) == (0, LxcState.STARTING)
    server.set_state(LxcState.RUNNING)
    assert serve_while(server, lambda: command_client.get_state(server.lxcpath, server.name)) is LxcState.RUNNING


def test_get_init_pid(server):
    server.init_pid = 4242
    reply = call(server, Cmd.GET_INIT_PID)
    assert (reply.ret, reply.value, reply.data, reply.fds) == (0, 4242, b"", [])


def test_get_clone_flags(server):
    server.clone_flags = 0x6C020000
    reply = call(server, Cmd.GET_CLONE_FLAGS)
    assert (reply.ret, reply.value) == (0, 0x6C020000)


def test_get_init_pidfd(server):
    reply = call(server, Cmd.GET_INIT_PIDFD)
    assert reply.ret == -errno.EBADF and reply.fds == []
    pidfd = os.pidfd_open(os.getpid())
    try:
        server.init_pidfd = pidfd
        reply = call(server, Cmd.GET_INIT_PIDFD)
        assert reply.ret == 0 and len(reply.fds) == 1
        received = reply.fds[0]
        try:
            assert received != pidfd
            assert os.readlink(f"/proc/self/fd/{received}") == "anon_inode:[pidfd]"
        finally:
            os.close(received)
    finally:
        os.close(pidfd)


def test_get_config_item(server):
    reply = call(server, Cmd.GET_CONFIG_ITEM, b"lxc.uts.name\0")
    assert (reply.ret, reply.data) == (0, b"box\0")
    reply = call(server, Cmd.GET_CONFIG_ITEM, b"lxc.signal.halt\0")
    assert (reply.ret, reply.data) == (0, b"10\0")


@pytest.mark.parametrize("key", [b"lxc.unset\0", b"lxc.empty\0", b"lxc.no.such.key\0"])
def test_get_config_item_without_a_value_is_minus_one(server, key):
    reply = call(server, Cmd.GET_CONFIG_ITEM, key)
    assert (reply.ret, reply.data) == (-1, b"")


def test_unknown_command_is_enosys(server):
    for cmd in (1, 14, 99):    # LXC commands lxcsm does not serve, and one nobody has
        reply = call(server, cmd)
        assert reply.ret == -errno.ENOSYS, cmd


def test_truncated_request_is_dropped(server):
    def client():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(command_socket.socket_name(server.lxcpath, server.name))
            sock.sendall(b"\x03\x00")          # half a header
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(100)
    assert serve_while(server, client) == b""
    assert call(server, Cmd.GET_STATE).ret == 0    # and the server still answers


def test_add_state_client_already_in_state_answers_at_once(server):
    wanted = [0] * 8
    wanted[LxcState.STARTING] = 1
    reply = call(server, Cmd.ADD_STATE_CLIENT, struct.pack("<8i", *wanted))
    assert (reply.ret, reply.value) == (LxcState.STARTING, LxcState.STARTING)
    assert server.waiters == {}
    assert serve_while(server, lambda: command_client.state_waiter(server.lxcpath, server.name,
                                                             LxcState.STARTING)) is None


def test_add_state_client_bad_payload_is_einval(server):
    reply = call(server, Cmd.ADD_STATE_CLIENT, b"\0" * 31)
    assert reply.ret == -errno.EINVAL
    assert server.waiters == {}


def test_registered_state_client_hears_the_state_once_then_eof(server):
    waiter = serve_while(server, lambda: command_client.state_waiter(server.lxcpath, server.name, LxcState.RUNNING))
    assert waiter is not None
    conn = waiter.conn
    try:
        assert len(server.waiters) == 1
        server.set_state(LxcState.STOPPING)          # not what it asked for: nothing sent
        assert server.waiters and not select.select([conn], [], [], 0.05)[0]
        server.set_state(LxcState.RUNNING)
        assert server.waiters == {}
        conn.settimeout(2)
        message = b""
        while len(message) < STATE_MSG_SIZE:
            chunk = conn.recv(STATE_MSG_SIZE)
            assert chunk, "closed before the whole message"
            message += chunk
        assert len(message) == STATE_MSG_SIZE
        msg_type, msg_name, value = struct.unpack("<i256si", message)
        assert msg_type == 0
        assert msg_name.rstrip(b"\0") == server.name.encode()
        assert value == LxcState.RUNNING
        assert conn.recv(10) == b""                  # then closed
    finally:
        conn.close()


def test_client_leaving_is_forgotten(server):
    waiter = serve_while(server, lambda: command_client.state_waiter(server.lxcpath, server.name, LxcState.STOPPED))
    assert len(server.waiters) == 1
    waiter.conn.close()
    deadline = time.monotonic() + 2
    while server.waiters and time.monotonic() < deadline:
        if select.select([server], [], [], 0.05)[0]:
            server.serve_ready()
    assert server.waiters == {}


def test_close_gives_kept_clients_eof_and_new_clients_refusal(server):
    waiter = serve_while(server, lambda: command_client.state_waiter(server.lxcpath, server.name, LxcState.STOPPED))
    try:
        server.close()
        assert command_client.wait_closed(waiter, 2) is True     # EOF read as "stopped"
    finally:
        waiter.conn.close()
    address = command_socket.socket_name(server.lxcpath, server.name)
    assert not abstract_bound(address)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(address)
    assert command_client.call(server.lxcpath, server.name, Cmd.GET_STATE) is None
    assert command_client.get_state(server.lxcpath, server.name) is LxcState.STOPPED
    # and the name can be bound again
    command_server.bind(server.lxcpath, server.name).close()


def test_stop_signals_init_and_holds_the_connection_until_close(server):
    init = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(init.pid)
    try:
        server.init_pidfd = pidfd
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(
            stopped=command_client.stop(server.lxcpath, server.name)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while init.poll() is None and time.monotonic() < deadline:
            if select.select([server], [], [], 0.02)[0]:
                server.serve_ready()
        assert init.returncode == -signal.SIGKILL       # FakeConfig.signal_stop
        assert thread.is_alive()                        # no reply until the container is stopped
        assert len(server.waiters) == 1
        server.close()
        thread.join(5)
        assert result == {"stopped": True}
    finally:
        if init.poll() is None:
            init.kill()
        init.wait()
        os.close(pidfd)


def test_stop_without_init_is_refused(server):
    assert serve_while(server, lambda: command_client.stop(server.lxcpath, server.name)) is False


def test_call_with_nobody_listening_is_none():
    lxcpath = f"/tmp/lxcsm-unit-{uuid.uuid4().hex}"
    assert command_client.call(lxcpath, "nobody", Cmd.GET_STATE) is None
    assert command_client.get_state(lxcpath, "nobody") is LxcState.STOPPED
    assert command_client.stop(lxcpath, "nobody") is True
    assert command_client.state_waiter(lxcpath, "nobody", LxcState.RUNNING) is None


def test_request_header_layout(server):
    """A raw client speaking the wire format directly (cmd, datalen, inline value)."""
    server.init_pid = 77

    def client():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(command_socket.socket_name(server.lxcpath, server.name))
            sock.sendall(HEADER.pack(Cmd.GET_INIT_PID, 0, 0))
            data = b""
            while len(data) < HEADER.size:
                chunk = sock.recv(HEADER.size - len(data))
                if not chunk:
                    break
                data += chunk
            return data, sock.recv(1)
    data, rest = serve_while(server, client)
    assert HEADER.unpack(data) == (0, 0, 77)
    assert rest == b""


# --- never waiting on a client: pieces, deadlines, caps -------------------------------


def connect(srv) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)    # a test that waits for a reply that never comes fails instead of hanging
    sock.connect(command_socket.socket_name(srv.lxcpath, srv.name))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed its end (we read end-of-file), False while it is open."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    return sock.recv(1) == b""


def read_reply(sock: socket.socket, max_fds: int = 0):
    """(ret, value, payload, fds) of one reply, or None if the server closed without one."""
    header, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, max_fds)
    if not header:
        return None
    ret, datalen, value = HEADER.unpack(header)
    return ret, value, sock.recv(datalen) if datalen else b"", fds


def raw_call(srv, cmd, payload=b"", inline=0, max_fds=command_socket.CGROUP_CTX_MAX_FD):
    """Like call(), but receives as many fds as GET_CGROUP_CTX may send."""
    def client():
        with connect(srv) as sock:
            sock.sendall(HEADER.pack(cmd, len(payload), inline) + payload)
            return read_reply(sock, max_fds)
    return serve_while(srv, client)


def serve_until(srv, done, timeout: float = 5.0) -> None:
    """Serve as the monitor's poll does (waiting at most srv.timeout()) until done() is true."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "gave up waiting"
        wait = srv.timeout()
        select.select([srv], [], [], 0.05 if wait is None else min(wait, 0.05))
        srv.serve_ready()


def test_silent_connections_do_not_hold_up_an_answer(server):
    silent = [connect(server) for _ in range(50)]
    try:
        server.serve_ready()
        assert len(server.pending) == 50
        assert 0 < server.timeout() <= command_server.REQUEST_DEADLINE
        assert call(server, Cmd.GET_STATE).value == LxcState.STARTING
        assert not any(closed_by_server(sock) for sock in silent)   # still within their deadline
    finally:
        for sock in silent:
            sock.close()


def test_a_request_arriving_byte_by_byte_is_answered(server):
    server.init_pid = 99
    request = HEADER.pack(Cmd.GET_CONFIG_ITEM, 13, 0) + b"lxc.uts.name\0"
    with connect(server) as sock:
        for byte in request:
            sock.send(bytes([byte]))
            server.serve_ready()
        assert server.pending == {}
        assert read_reply(sock) == (0, 0, b"box\0", [])


def test_a_silent_connection_is_closed_at_its_deadline(server):
    server.request_deadline = 0.2
    with connect(server) as sock:
        sock.send(HEADER.pack(Cmd.GET_STATE, 0, 0)[:5])    # a start, never finished
        server.serve_ready()
        assert len(server.pending) == 1
        serve_until(server, lambda: not server.pending)
        assert closed_by_server(sock)
        assert server.timeout() is None
    assert call(server, Cmd.GET_STATE).ret == 0


def test_an_oversized_payload_is_closed_without_a_reply(server):
    for datalen in (command_socket.MAX_PAYLOAD + 1, -1):
        with connect(server) as sock:
            sock.sendall(HEADER.pack(Cmd.GET_CONFIG_ITEM, datalen, 0))
            server.serve_ready()   # accepted
            serve_until(server, lambda: not server.pending)
            assert read_reply(sock) is None


@pytest.fixture
def peers(monkeypatch):
    """peers(*uids): the connections accepted next come from these uids (gid = uid), in order."""
    queue: list[int] = []

    def credentials(_conn):
        uid = queue.pop(0)
        return 4242, uid, uid
    monkeypatch.setattr(command_server, "peer_credentials", credentials)
    return lambda *uids: queue.extend(uids)


UNPRIVILEGED = 54321


def test_one_user_keeps_at_most_its_cap_pending_the_next_are_closed(server, peers):
    cap = command_server.MAX_PENDING_PER_UID
    peers(*[UNPRIVILEGED] * (cap + 3), UNPRIVILEGED + 1)
    socks = [connect(server) for _ in range(cap + 4)]
    try:
        server.serve_ready()
        assert len(server.pending) == cap + 1
        assert [closed_by_server(sock) for sock in socks] == [False] * cap + [True] * 3 + [False]
        socks[0].close()                     # one of them leaves: the user may wait with one more
        server.serve_ready()
        peers(UNPRIVILEGED)
        socks.append(connect(server))
        server.serve_ready()
        assert not closed_by_server(socks[-1]) and server.waiting_users == {UNPRIVILEGED: cap, UNPRIVILEGED + 1: 1}
    finally:
        for sock in socks:
            sock.close()


def test_an_unprivileged_flood_never_closes_roots_connection(server, peers):
    per_uid = command_server.MAX_PENDING_PER_UID
    uids = [UNPRIVILEGED + n for n in range(command_server.MAX_PENDING // per_uid) for _ in range(per_uid)]
    peers(*uids)
    flood = [connect(server) for _ in uids]
    server.serve_ready()
    assert len(server.pending) == command_server.MAX_PENDING
    peers(0)
    root = connect(server)                  # full: the oldest unprivileged connection makes room
    server.serve_ready()
    assert closed_by_server(flood[0]) and not closed_by_server(root)
    more = [UNPRIVILEGED + 100 + n for n in range(3 * command_server.MAX_PENDING)]
    peers(*more)
    for _ in more:                          # a flood from many more users
        flood.append(connect(server))
        server.serve_ready()
    try:
        assert len(server.pending) == command_server.MAX_PENDING
        assert not closed_by_server(root)
        root.sendall(HEADER.pack(Cmd.GET_STATE, 0, 0))
        server.serve_ready()
        assert read_reply(root) == (0, LxcState.STARTING, b"", [])
    finally:
        root.close()
        for sock in flood:
            sock.close()


def test_root_alone_is_capped_too(server, peers):
    peers(*[0] * (command_server.MAX_PENDING + 1))
    socks = [connect(server) for _ in range(command_server.MAX_PENDING + 1)]
    try:
        server.serve_ready()
        assert len(server.pending) == command_server.MAX_PENDING
        assert closed_by_server(socks[0]) and not closed_by_server(socks[-1])
    finally:
        for sock in socks:
            sock.close()


# --- who may do what ------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [*Cmd, 1, 11, 99])
def test_an_unprivileged_peer_is_refused_every_command(server, peers, cmd):
    init = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(init.pid)
    try:
        server.init_pid, server.init_pidfd, server.pausing = init.pid, pidfd, True
        server.ttys = {1: pidfd}
        payload = {Cmd.ADD_STATE_CLIENT: struct.pack("<8i", 1, 1, 1, 1, 1, 1, 1, 1),
                   Cmd.GET_CONFIG_ITEM: b"lxc.uts.name\0"}.get(cmd, b"")
        peers(UNPRIVILEGED)
        assert raw_call(server, cmd, payload) == (-errno.EPERM, 0, b"", [])
        assert (server.waiters, server.tty_users, server.pause_decision) == ({}, {}, None)
        assert init.poll() is None                      # STOP did not signal it
    finally:
        init.kill()
        init.wait()
        os.close(pidfd)


@pytest.mark.parametrize("uid, gid", [(0, 12345), (os.getuid(), os.getgid())])
def test_root_and_the_monitors_own_user_are_answered(server, monkeypatch, uid, gid):
    monkeypatch.setattr(command_server, "peer_credentials", lambda _conn: (4242, uid, gid))
    server.init_pid = 77
    assert raw_call(server, Cmd.GET_INIT_PID) == (0, 77, b"", [])


def test_the_monitors_uid_with_another_gid_is_refused(server, monkeypatch):
    uid = os.getuid() or UNPRIVILEGED    # root is always answered: take another uid then
    monkeypatch.setattr(command_server, "peer_credentials", lambda _conn: (4242, uid, os.getgid() + 1))
    assert raw_call(server, Cmd.GET_STATE) == (-errno.EPERM, 0, b"", [])


# --- cgroups --------------------------------------------------------------------------


@pytest.fixture
def payload_dirs(tmp_path):
    """Stand-ins for lxc.payload.NAME in a hybrid layout: memory and pids (v1), and cgroup2."""
    from lxcsm.engine.linux.cgroups import Hierarchy
    made = []
    for label, controllers, version in (("memory", ("memory",), 1), ("pids", ("pids",), 1),
                                        ("unified", (), 2)):
        mountpoint = tmp_path / label
        path = mountpoint / "home" / "lxc.payload.ct"
        path.mkdir(parents=True)
        made.append((Hierarchy(str(mountpoint), controllers, version, str(mountpoint / "home")), str(path)))
    return made


def fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_cgroup_ctx_sends_a_directory_per_hierarchy(server, payload_dirs):
    server.cgroups = payload_dirs
    ret, _value, data, fds = raw_call(server, Cmd.GET_CGROUP_CTX, bytes(command_socket.CGROUP_CTX.size))
    assert ret == 0 and len(data) == 96
    layout, utilities, fd_len, *_numbers = command_socket.CGROUP_CTX.unpack(data)
    assert (layout, utilities, fd_len) == (command_socket.CgroupLayout.HYBRID, 0, 3)
    assert [fd_target(fd) for fd in fds] == [path for _h, path in payload_dirs]


def test_cgroup_ctx_without_cgroups_or_with_one_gone(server, payload_dirs):
    request = bytes(command_socket.CGROUP_CTX.size)
    assert raw_call(server, Cmd.GET_CGROUP_CTX, request) == (-errno.ENOENT, 0, b"", [])
    server.cgroups = payload_dirs
    os.rmdir(payload_dirs[1][1])               # the container is being cleaned up
    assert raw_call(server, Cmd.GET_CGROUP_CTX, request) == (-errno.ENOENT, 0, b"", [])
    assert raw_call(server, Cmd.GET_CGROUP_CTX) == (-errno.EINVAL, 0, b"", [])


def cgroup_fd_request(controller: bytes, fstype: int = 0) -> bytes:
    return command_socket.CGROUP_FD.pack(0, 0, fstype, -errno.EBADF, controller)


@pytest.mark.parametrize("cmd", [Cmd.GET_CGROUP_FD, Cmd.GET_LIMIT_CGROUP_FD])
def test_cgroup_fd_is_the_controllers_directory(server, payload_dirs, cmd):
    server.cgroups = payload_dirs
    ret, _value, data, (fd,) = raw_call(server, cmd, cgroup_fd_request(b"pids"))
    assert ret == 0 and fd_target(fd) == payload_dirs[1][1]
    layout, _utilities, fstype, _fd, controller = command_socket.CGROUP_FD.unpack(data)
    assert (layout, fstype, controller.rstrip(b"\0")) == (command_socket.CgroupLayout.HYBRID,
                                                           command_socket.CGROUP_SUPER_MAGIC, b"pids")
    assert raw_call(server, cmd, cgroup_fd_request(b"cpuacct"))[0] == -errno.ENOENT
    assert raw_call(server, cmd, cgroup_fd_request(b""))[0] == -errno.EINVAL
    wrong_version = cgroup_fd_request(b"pids", command_socket.CGROUP2_SUPER_MAGIC)
    assert raw_call(server, cmd, wrong_version) == (-errno.EINVAL, 0, b"", [])


@pytest.mark.parametrize("cmd", [Cmd.GET_CGROUP, Cmd.GET_LIMIT_CGROUP])
def test_cgroup_path_is_relative_to_the_mount(server, payload_dirs, cmd):
    server.cgroups = payload_dirs
    assert raw_call(server, cmd, b"memory\0") == (0, 0, b"/home/lxc.payload.ct\0", [])
    assert raw_call(server, cmd, b"cpuacct\0") is None          # LXC closes without a word
    assert raw_call(server, cmd) is None
    assert raw_call(server, cmd, b"mem\0ory\0")[0] == -errno.EINVAL


def test_on_a_cgroup2_only_host_every_controller_is_in_the_one_hierarchy(server, payload_dirs):
    server.cgroups = payload_dirs[2:]
    ret, _value, data, (fd,) = raw_call(server, Cmd.GET_LIMIT_CGROUP_FD, cgroup_fd_request(b"memory"))
    assert (ret, fd_target(fd)) == (0, payload_dirs[2][1])
    layout, _utilities, fstype, _fd, _controller = command_socket.CGROUP_FD.unpack(data)
    assert (layout, fstype) == (command_socket.CgroupLayout.UNIFIED, command_socket.CGROUP2_SUPER_MAGIC)
    assert raw_call(server, Cmd.GET_CGROUP, b"pids\0") == (0, 0, b"/home/lxc.payload.ct\0", [])


def test_cgroup2_fd_only_on_a_cgroup2_only_host(server, payload_dirs):
    server.cgroups = payload_dirs
    assert raw_call(server, Cmd.GET_CGROUP2_FD) == (-errno.EINVAL, 0, b"", [])
    server.cgroups = payload_dirs[2:]
    for cmd in (Cmd.GET_CGROUP2_FD, Cmd.GET_LIMIT_CGROUP2_FD):
        ret, _value, data, (fd,) = raw_call(server, cmd)
        assert (ret, data, fd_target(fd)) == (0, b"", payload_dirs[2][1])


class InnerConfig(FakeConfig):
    items = {**FakeConfig.items, "lxc.cgroup.dir.container.inner": "inner"}


def test_with_an_inner_cgroup_the_limit_commands_answer_the_cgroup_above_it(server, payload_dirs):
    server.config = InnerConfig()                 # the stand-ins are the inner cgroups: limits one up
    server.cgroups = payload_dirs
    container, limit = payload_dirs[1][1], os.path.dirname(payload_dirs[1][1])
    assert fd_target(raw_call(server, Cmd.GET_CGROUP_FD, cgroup_fd_request(b"pids"))[3][0]) == container
    assert fd_target(raw_call(server, Cmd.GET_LIMIT_CGROUP_FD, cgroup_fd_request(b"pids"))[3][0]) == limit
    assert raw_call(server, Cmd.GET_CGROUP, b"pids\0")[2] == b"/home/lxc.payload.ct\0"
    assert raw_call(server, Cmd.GET_LIMIT_CGROUP, b"pids\0")[2] == b"/home\0"
    server.cgroups = payload_dirs[2:]
    assert fd_target(raw_call(server, Cmd.GET_CGROUP2_FD)[3][0]) == payload_dirs[2][1]
    assert fd_target(raw_call(server, Cmd.GET_LIMIT_CGROUP2_FD)[3][0]) == os.path.dirname(payload_dirs[2][1])


# --- freezing, and the states lxc-freeze tells ----------------------------------------


def test_name_and_lxcpath_are_answered_for_hashed_socket_names(server):
    assert raw_call(server, Cmd.GET_NAME) == (0, 0, server.name.encode() + b"\0", [])
    assert raw_call(server, Cmd.GET_LXCPATH) == (0, 0, server.lxcpath.encode() + b"\0", [])


def test_serve_state_clients_sets_the_state_and_tells_who_asked(server):
    server.set_state(LxcState.RUNNING)
    waiter = serve_while(server, lambda: command_client.state_waiter(server.lxcpath, server.name, LxcState.FROZEN))
    assert raw_call(server, Cmd.SERVE_STATE_CLIENTS, inline=LxcState.FREEZING)[0] == 0
    assert server.state is LxcState.FREEZING and len(server.waiters) == 1
    assert raw_call(server, Cmd.SERVE_STATE_CLIENTS, inline=LxcState.FROZEN)[0] == 0
    assert server.state is LxcState.FROZEN and server.waiters == {}
    assert command_client.wait_state(waiter, timeout=2) is LxcState.FROZEN
    assert raw_call(server, Cmd.GET_STATE)[1] == LxcState.FROZEN
    # THAWED is a passing word: the state it leaves is RUNNING, as LXC stores it
    assert raw_call(server, Cmd.SERVE_STATE_CLIENTS, inline=LxcState.THAWED)[0] == 0
    assert server.state is LxcState.RUNNING
    for bad in (8, -1):
        assert raw_call(server, Cmd.SERVE_STATE_CLIENTS, inline=bad)[0] == -errno.EINVAL
    assert server.state is LxcState.RUNNING


@pytest.fixture
def unified_dir(payload_dirs):
    """The cgroup2 stand-in alone, as on a cgroup2-only host, with the files freezing uses."""
    path = payload_dirs[2][1]
    for name, text in (("cgroup.freeze", "0"), ("cgroup.events", "populated 1\nfrozen 0\n")):
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    return payload_dirs[2:]


def read_text(*parts: str) -> str:
    with open(os.path.join(*parts)) as f:
        return f.read()


def test_freeze_is_for_a_cgroup2_only_host(server, payload_dirs):
    server.cgroups = payload_dirs
    assert raw_call(server, Cmd.FREEZE, inline=-1)[0] == -errno.ENOENT
    assert raw_call(server, Cmd.UNFREEZE, inline=-1)[0] == -errno.ENOENT


def test_freeze_without_a_timeout_answers_at_once(server, unified_dir):
    server.cgroups = unified_dir
    assert raw_call(server, Cmd.FREEZE, inline=0)[0] == 0
    assert read_text(unified_dir[0][1], "cgroup.freeze") == "1"
    assert server.freezing == {}


def test_freeze_answers_once_cgroup_events_says_frozen(server, unified_dir):
    server.cgroups = unified_dir
    path = unified_dir[0][1]
    with connect(server) as sock:
        sock.sendall(HEADER.pack(Cmd.FREEZE, 0, -1))
        serve_until(server, lambda: server.freezing)
        assert read_text(path, "cgroup.freeze") == "1"
        assert server.timeout() is not None and server.timeout() <= cgroup_commands.FREEZE_CHECK
        server.serve_ready()
        assert not select.select([sock], [], [], 0.05)[0]      # not frozen yet: no answer
        with open(os.path.join(path, "cgroup.events"), "w") as events:
            events.write("populated 1\nfrozen 1\n")             # what the kernel says once it is done
        serve_until(server, lambda: not server.freezing)
        assert read_reply(sock) == (0, 0, b"", [])
    with connect(server) as sock:                             # and back, with a deadline that passes
        sock.sendall(HEADER.pack(Cmd.UNFREEZE, 0, 50))
        serve_until(server, lambda: server.freezing)
        assert read_text(path, "cgroup.freeze") == "0"
        serve_until(server, lambda: not server.freezing)
        assert read_reply(sock) == (0, 0, b"", [])            # LXC's answer at its timeout too


def test_a_freeze_client_that_leaves_is_forgotten(server, unified_dir):
    server.cgroups = unified_dir
    with connect(server) as sock:
        sock.sendall(HEADER.pack(Cmd.FREEZE, 0, -1))
        serve_until(server, lambda: server.freezing)
    serve_until(server, lambda: not server.freezing)
    assert server.timeout() is None


def test_stop_thaws_a_frozen_container_so_its_init_can_die(server, payload_dirs, tmp_path):
    from lxcsm.engine.linux.cgroups import Hierarchy
    freezer = tmp_path / "freezer" / "home" / "lxc.payload.ct"
    freezer.mkdir(parents=True)
    (freezer / "freezer.state").write_text("FROZEN")   # a regular file: a write overwrites, not replaces
    server.cgroups = [*payload_dirs, (Hierarchy(str(tmp_path / "freezer"), ("freezer",), 1, ""), str(freezer))]
    init = subprocess.Popen(["sleep", "60"])
    server.init_pidfd = os.pidfd_open(init.pid)
    try:
        with connect(server) as sock:
            sock.sendall(HEADER.pack(Cmd.STOP, 0, 0))
            serve_until(server, lambda: server.waiters)
            assert init.wait(timeout=5) == -signal.SIGKILL
            assert (freezer / "freezer.state").read_text() == "THAWED"
    finally:
        os.close(server.init_pidfd)
        init.kill()
        init.wait()


# --- lxc-monitor ----------------------------------------------------------------------


class Warnings:
    def __init__(self):
        self.lines = []

    def warn(self, message, **fields):
        self.lines.append((message, fields))


@pytest.fixture
def monitor_fifo_dir(tmp_path, monkeypatch):
    """RUNDIR in tmp_path, and lxc-monitord's FIFO for the server's lxcpath, read end open:
    read_messages() -> [(type, name, value)] written to it so far."""
    from lxcsm.engine.protocol import monitor_fifo
    monkeypatch.setattr(monitor_fifo, "RUNTIME_PATH", str(tmp_path))

    def make(lxcpath: str):
        fifo = monitor_fifo.fifo_path(lxcpath)
        os.makedirs(os.path.dirname(fifo))
        os.mkfifo(fifo, 0o600)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)

        def read_messages():
            try:
                data = os.read(reader, 64 * STATE_MSG_SIZE)
            except BlockingIOError:
                data = b""
            return [(kind, name.rstrip(b"\0").decode(), value)
                    for kind, name, value in command_socket.STATE_MSG.iter_unpack(data)]
        return read_messages, reader
    opened = []

    def fixture(lxcpath):
        read_messages, reader = make(lxcpath)
        opened.append(reader)
        return read_messages
    yield fixture
    for fd in opened:
        os.close(fd)


def test_set_state_is_announced_to_lxc_monitor_and_what_clients_say_is_not(server, monitor_fifo_dir):
    read_messages = monitor_fifo_dir(server.lxcpath)
    server.set_state(LxcState.RUNNING)
    server.announce_exit(9)                                   # killed by SIGKILL: a wait status
    server.set_state(LxcState.STOPPING)
    server.set_state(LxcState.STOPPED, announce=False)
    server.announce(LxcState.STOPPED)
    # lxc-freeze tells lxc-monitor itself: the monitor must not say it twice
    assert raw_call(server, Cmd.SERVE_STATE_CLIENTS, inline=LxcState.FROZEN)[0] == 0
    assert read_messages() == [(0, server.name, LxcState.RUNNING), (2, server.name, 9),
                               (0, server.name, LxcState.STOPPING), (0, server.name, LxcState.STOPPED)]


def test_no_lxc_monitor_listening_is_normal_and_a_broken_fifo_is_warned_about_once(server, monitor_fifo_dir,
                                                                                  tmp_path):
    from lxcsm.engine.protocol import monitor_fifo
    server.log = Warnings()
    server.set_state(LxcState.RUNNING)                         # no FIFO at all: nobody listens
    fifo = monitor_fifo.fifo_path(server.lxcpath)
    os.makedirs(fifo)                                          # not a FIFO: cannot be written
    server.set_state(LxcState.STOPPING)
    server.announce_exit(0)
    assert [message for message, _fields in server.log.lines] == ["cannot tell lxc-monitor the container's states"]
    assert "Is a directory" in server.log.lines[0][1]["reason"]
    assert server.state is LxcState.STOPPING                   # and nothing else changed for it


# --- GET_TTY_FD: ttys handed over, the console through its relay ----------------------


class RecordedPeers:
    """The console's relay as poll gives it to the server (console_peers): attach() hands out
    the read end of a pipe standing in for a proxy pty's master, or -1 while it has a peer."""

    def __init__(self, busy: bool = False) -> None:
        self.busy = busy
        self.calls: list[str] = []
        self.ends: list[int] = []

    def attach(self) -> int:
        self.calls.append("attach")
        if self.busy:
            return -1
        self.busy = True
        master, other = os.pipe()
        self.ends += [master, other]
        return master

    def detach(self) -> None:
        self.calls.append("detach")
        self.busy = False


def tty_call(srv, number: int):
    return serve_while(srv, lambda: command_client.call(srv.lxcpath, srv.name, Cmd.GET_TTY_FD,
                                                        inline=number, keep=True))


def tty_refusal(srv, number: int) -> int | None:
    """GET_TTY_FD's ret for a request expected to be refused (its connection closed here)."""
    reply = tty_call(srv, number)
    assert reply.fds == []
    reply.conn.close()
    if reply.monitor >= 0:
        os.close(reply.monitor)
    return reply.ret


def test_tty_0_is_the_relays_proxy_one_client_at_a_time_and_free_again_when_it_leaves(server):
    console, _ = os.pipe()
    relay = RecordedPeers()
    server.ttys, server.console_peers = {0: console}, relay
    try:
        first = tty_call(server, 0)
        assert (first.ret, first.value, len(first.fds)) == (0, 0, 1)
        assert os.fstat(first.fds[0]).st_ino == os.fstat(relay.ends[0]).st_ino != os.fstat(console).st_ino
        assert tty_refusal(server, 0) == -errno.EBADF              # busy: the relay is not even asked
        assert relay.calls == ["attach"]
        first.conn.close()
        serve_until(server, lambda: relay.calls == ["attach", "detach"])
        second = tty_call(server, 0)                                  # the next client may attach
        assert second.ret == 0 and relay.calls == ["attach", "detach", "attach"]
        for fd in [*first.fds, *second.fds, first.monitor, second.monitor]:
            if fd >= 0:
                os.close(fd)
        second.conn.close()
    finally:
        for fd in [console, *relay.ends]:
            os.close(fd)


def test_tty_0_is_refused_when_the_console_has_a_peer_or_nothing_relays_it(server):
    console, other = os.pipe()
    server.ttys = {0: console}
    try:
        assert tty_refusal(server, 0) == -errno.EBADF                # before poll: no relay
        relay = RecordedPeers(busy=True)                              # lxc-start -F's terminal
        server.console_peers = relay
        assert tty_refusal(server, 0) == -errno.EBADF and relay.calls == ["attach"]
        assert server.tty_users == {}
    finally:
        os.close(console)
        os.close(other)


def test_tty_n_is_its_master_itself(server):
    master, other = os.pipe()
    server.ttys, server.console_peers = {1: master}, RecordedPeers()
    try:
        reply = tty_call(server, -1)                                  # the first free tty
        assert (reply.ret, reply.value) == (0, 1)
        assert os.fstat(reply.fds[0]).st_ino == os.fstat(master).st_ino
        assert server.console_peers.calls == []
        os.close(reply.fds[0])
        if reply.monitor >= 0:
            os.close(reply.monitor)
        reply.conn.close()
    finally:
        os.close(master)
        os.close(other)
