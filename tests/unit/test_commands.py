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

from lxcsm.engine.protocol import command_client, command_server, command_socket
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
    for cmd in (1, 6, 99):    # LXC commands lxcsm does not serve, and one nobody has
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
