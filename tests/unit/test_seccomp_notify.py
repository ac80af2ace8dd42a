"""engine/protocol/seccomp_notify.py: LXC 5.0.2's seccomp proxy message, and the relay's answer
to each outcome - against a real SOCK_SEQPACKET proxy socket in tmp_path and a fake listener
(a pipe for its fd, the notifications the test's)."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from types import SimpleNamespace

import pytest

from lxcsm.engine.protocol import seccomp_notify
from lxcsm.engine.protocol.seccomp_notify import HEADER, NOTIFICATION, RESPONSE, ProxyRelay

SIZES = (80, 24, 64)


class ProxyMsg(ctypes.Structure):
    """struct seccomp_notify_proxy_msg as a C compiler lays it out (lxcseccomp.h)."""
    _fields_ = [("reserved", ctypes.c_uint64), ("monitor_pid", ctypes.c_int32), ("init_pid", ctypes.c_int32),
                ("notif", ctypes.c_uint16), ("resp", ctypes.c_uint16), ("data", ctypes.c_uint16),
                ("cookie_len", ctypes.c_uint64)]


def notification(request_id: int = 7, pid: int | None = None, nr: int = 133) -> bytes:
    return NOTIFICATION.pack(request_id, os.getpid() if pid is None else pid, 0, nr, 0xC000003E).ljust(80, b"\0")


def test_the_header_is_laid_out_as_the_c_struct():
    c = ProxyMsg(0, 11, 22, *SIZES, 6)
    assert HEADER.size == ctypes.sizeof(ProxyMsg) == 32
    assert HEADER.pack(0, 11, 22, *SIZES, 6) == bytes(c)


def test_a_message_is_header_notification_response_and_cookie():
    message = seccomp_notify.pack_message(100, 200, SIZES, notification(request_id=9), b"sesame")

    assert HEADER.unpack_from(message) == (0, 100, 200, 80, 24, 64, 6)
    assert message[32:112] == notification(request_id=9)
    # The response for the proxy to fill: the notification's id, the rest zero, the kernel's size.
    assert message[112:136] == RESPONSE.pack(9, 0, 0, 0)
    assert message[136:] == b"sesame" and len(message) == 142


def test_without_a_cookie_the_message_ends_with_the_response():
    message = seccomp_notify.pack_message(1, 2, SIZES, notification(), b"")
    assert len(message) == 136 and HEADER.unpack_from(message)[-1] == 0


def test_a_reply_of_another_length_is_not_taken():
    good = b"\0" * 112 + RESPONSE.pack(7, 5, 0, 0)
    assert seccomp_notify.reply_response(good, SIZES, 7) == RESPONSE.pack(7, 5, 0, 0)
    assert seccomp_notify.reply_response(good + b"sesame", SIZES, 7) is None   # the cookie echoed back
    assert seccomp_notify.reply_response(good[:-1], SIZES, 7) is None
    assert seccomp_notify.reply_response(b"", SIZES, 7) is None


def test_a_reply_with_another_id_answers_the_notification_asked_about():
    reply = b"\0" * 112 + RESPONSE.pack(99, 0, -errno.EPERM, 1)
    assert seccomp_notify.reply_response(reply, SIZES, 7) == RESPONSE.pack(7, 0, -errno.EPERM, 1)


def test_the_default_answer_is_enosys():
    assert seccomp_notify.default_response(7, 24) == RESPONSE.pack(7, 0, -errno.ENOSYS, 0)


@pytest.mark.parametrize("value, address", [
    ("unix:/run/proxy.sock", "/run/proxy.sock"),
    # LXC 5.0.2 connects to the abstract name without its last character (checked with lxc-start).
    ("unix:@proxy", "\0prox"),
])
def test_proxy_address_is_where_lxc_connects(value, address):
    assert seccomp_notify.proxy_address(value) == address


# --- the relay ---------------------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.events.append((level, event, fields))

    def named(self, event: str) -> list[dict]:
        return [fields for _level, name, fields in self.events if name == event]


class FakeListener:
    """A listener whose notifications are queued by the test; its answers recorded."""

    def __init__(self) -> None:
        self.fd, self._write_end = os.pipe()
        self.sizes = SIZES
        self.queue: list[bytes | OSError] = []
        self.answers: list[bytes] = []
        self.valid = True

    def receive(self) -> bytes:
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def id_valid(self, request_id: int) -> bool:
        return self.valid

    def respond(self, response: bytes) -> None:
        self.answers.append(response)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write_end)


@pytest.fixture
def proxy(tmp_path):
    """A listening proxy socket: .accept() its next connection."""
    path = str(tmp_path / "proxy.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(4)
    yield SimpleNamespace(path=path, accept=server.accept, close=server.close)
    server.close()


@pytest.fixture
def listener():
    fake = FakeListener()
    yield fake
    fake.close()


def _receive(conn: socket.socket) -> tuple[bytes, int]:
    message, ancillary, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(12))
    fds = struct.unpack("3i", ancillary[0][2])
    for fd in fds:
        os.close(fd)
    return message, len(fds)


def test_the_proxys_reply_answers_the_notification(proxy, listener):
    log = Log()
    relay = ProxyRelay(listener, f"unix:{proxy.path}", "sesame", 4242, log)
    conn, _ = proxy.accept()
    # The reply is queued first: the relay reads it right after sending (no thread needed).
    conn.send(b"\0" * 112 + RESPONSE.pack(7, 3, 0, 0))
    listener.queue.append(notification())

    assert relay.handle(hung_up=False) is True

    message, fd_count = _receive(conn)
    assert HEADER.unpack_from(message) == (0, os.getpid(), 4242, *SIZES, 6) and fd_count == 3
    assert listener.answers == [RESPONSE.pack(7, 3, 0, 0)]
    assert log.named("seccomp notification") == [{"id": 7, "task": os.getpid(), "syscall": 133}]
    relay.close()
    conn.close()


def test_a_reply_of_the_wrong_size_gets_enosys(proxy, listener):
    log = Log()
    relay = ProxyRelay(listener, f"unix:{proxy.path}", None, 4242, log)
    conn, _ = proxy.accept()
    conn.send(b"short")
    listener.queue.append(notification())

    relay.handle(hung_up=False)

    assert listener.answers == [RESPONSE.pack(7, 0, -errno.ENOSYS, 0)]
    assert log.named("seccomp proxy's answer has the wrong size")[0]["size"] == 5
    relay.close()
    conn.close()


def test_a_task_gone_before_its_proc_files_were_opened_gets_enosys_and_the_proxy_nothing(proxy, listener):
    relay = ProxyRelay(listener, f"unix:{proxy.path}", None, 4242, Log())
    conn, _ = proxy.accept()
    listener.valid = False
    listener.queue.append(notification())

    relay.handle(hung_up=False)

    assert listener.answers == [RESPONSE.pack(7, 0, -errno.ENOSYS, 0)]
    conn.setblocking(False)
    with pytest.raises(BlockingIOError):
        conn.recv(4096)
    relay.close()
    conn.close()


def test_a_restarted_proxy_is_reconnected_to_and_the_message_sent_again(proxy, listener):
    log = Log()
    relay = ProxyRelay(listener, f"unix:{proxy.path}", None, 4242, log)
    proxy.accept()[0].close()   # the proxy went away; its successor listens on the same socket
    listener.queue.append(notification())
    # The successor's reply is queued as soon as it accepts: the relay connects from within handle().
    original_connect = relay.connect

    def connect_and_reply() -> None:
        original_connect()
        successor, _ = proxy.accept()
        successor.send(b"\0" * 112 + RESPONSE.pack(7, 0, -errno.EACCES, 0))
        connections.append(successor)

    connections: list[socket.socket] = []
    relay.connect = connect_and_reply

    relay.handle(hung_up=False)

    assert listener.answers == [RESPONSE.pack(7, 0, -errno.EACCES, 0)]
    assert _receive(connections[0])[1] == 3
    assert [fields["attempt"] for fields in log.named("cannot forward seccomp notification")] == [1]
    relay.close()
    connections[0].close()


def test_no_proxy_to_reconnect_to_gets_enosys(proxy, listener):
    log = Log()
    relay = ProxyRelay(listener, f"unix:{proxy.path}", None, 4242, log)
    proxy.accept()[0].close()
    proxy.close()
    os.unlink(proxy.path)
    listener.queue += [notification(request_id=7), notification(request_id=8)]

    relay.handle(hung_up=False)
    relay.handle(hung_up=False)   # no connection left: LXC's "No seccomp proxy registered"

    assert listener.answers == [RESPONSE.pack(7, 0, -errno.ENOSYS, 0), RESPONSE.pack(8, 0, -errno.ENOSYS, 0)]
    assert len(log.named("cannot reconnect to the seccomp proxy")) == 1
    assert len(log.named("no seccomp proxy")) == 1


def test_an_aborted_syscall_is_not_answered_and_a_hung_up_listener_is_left(proxy, listener):
    log = Log()
    relay = ProxyRelay(listener, f"unix:{proxy.path}", None, 4242, log)
    listener.queue.append(OSError(errno.ENOENT, "aborted"))

    assert relay.handle(hung_up=False) is True
    assert relay.handle(hung_up=True) is False

    assert listener.answers == [] and log.named("notified syscall aborted") == [{}]
    relay.close()


def test_a_proxy_that_is_not_there_fails_the_relay_naming_the_key_value(tmp_path, listener):
    with pytest.raises(OSError) as info:
        ProxyRelay(listener, f"unix:{tmp_path}/none.sock", None, 4242, Log())
    assert info.value.errno == errno.ENOENT and info.value.filename == f"unix:{tmp_path}/none.sock"
