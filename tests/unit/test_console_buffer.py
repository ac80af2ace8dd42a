"""lxc.console.buffer.size: the console's ring buffer (engine/linux/terminal.py RingBuffer) and
the command that reads it, CONSOLE_LOG (engine/protocol/command_server.py), as LXC 5.0.2's
lxc_ringbuf and lxc_cmd_console_log_callback behave (what they answered on this VM is in
tests/integration/test_console_buffer.py, against lxc-start's monitor)."""

from __future__ import annotations

import errno
import time

import pytest

from lxcsm.engine.config.values import console_size
from lxcsm.engine.linux.terminal import LXC_CONSOLE_READ, RingBuffer
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import CONSOLE_LOG_REQUEST, HEADER, Cmd
from tests.unit import test_commands
from tests.unit.test_commands import connect, serve_while

server = test_commands.server   # the command server fixture, a bound socket of a unique name
PAGE = 4096


@pytest.mark.parametrize(("value", "size"), [(None, 0), ("", 0), ("auto", 1 << 17), ("100", PAGE),
                                             ("5000", 8192), ("64kB", 65536), ("1MB", 1 << 20)])
def test_buffer_size_as_lxc_sets_it(value, size):
    assert console_size(value) == size   # at least a page, rounded up to a power of two


def test_ring_buffer_keeps_what_fits_in_order():
    ring = RingBuffer(PAGE)
    ring.write(b"line0\r\n")
    ring.write(b"line1\r\n")

    assert len(ring) == 14 and ring.take(9) == b"line0\r\nli" and ring.take(100) == b"ne1\r\n"
    assert len(ring) == 0


def test_a_piece_that_does_not_fit_drops_as_many_of_the_oldest_bytes_as_lxc_does():
    ring = RingBuffer(PAGE)
    ring.write(b"a" * (PAGE - 10))
    ring.write(b"b" * 100)   # 10 bytes free: lxc_ringbuf_write drops 100 old ones, not 90

    assert ring.take(PAGE) == b"a" * (PAGE - 110) + b"b" * 100


def test_a_long_output_is_taken_in_lxcs_pieces():
    ring = RingBuffer(PAGE)
    output = bytes(range(256)) * 40   # 10240 bytes: ten pieces of LXC_CONSOLE_READ

    ring.write(output)

    # Each piece past the first four drops a piece's worth: the last four pieces are left.
    assert ring.take(PAGE) == output[-4 * LXC_CONSOLE_READ:]


def console_log(srv, clear=False, read=True, read_max=0, payload=None):
    request = CONSOLE_LOG_REQUEST.pack(clear, read, read_max, False) if payload is None else payload
    reply = serve_while(srv, lambda: command_client.call(srv.lxcpath, srv.name, Cmd.CONSOLE_LOG, request))
    return reply.ret, reply.data


def test_console_log_without_a_buffer_is_efault_as_lxc(server):
    assert console_log(server) == (-errno.EFAULT, b"")


def test_console_log_reads_take_the_output_out_clear_empties_it(server):
    server.console_buffer = RingBuffer(PAGE)
    assert console_log(server) == (-errno.ENODATA, b"")          # nothing to read yet
    server.console_buffer.write(b"hello\r\nworld\r\n")

    assert console_log(server, read_max=3) == (0, b"hel")
    assert console_log(server) == (0, b"lo\r\nworld\r\n")
    assert console_log(server) == (-errno.ENODATA, b"")
    server.console_buffer.write(b"again\r\n")
    assert console_log(server, read=False) == (0, b"")           # neither read nor clear: kept
    assert console_log(server, clear=True, read_max=2) == (0, b"ag")   # read, then all cleared
    assert console_log(server) == (-errno.ENODATA, b"")
    assert console_log(server, payload=b"\1") == (-errno.EINVAL, b"")   # not LXC's 24 bytes


def test_an_answer_larger_than_the_socket_takes_is_sent_as_the_client_reads(server):
    size = 1 << 22   # 4 MiB: more than a unix socket's buffer
    server.console_buffer = RingBuffer(size)
    output = bytes(range(256)) * (size // 256)
    server.console_buffer.write(output)

    assert console_log(server) == (0, output)
    assert server.sending == {} and len(server.console_buffer) == 0


def test_a_client_that_stops_reading_a_large_answer_is_closed_at_the_deadline(server):
    size = 1 << 22
    server.console_buffer = RingBuffer(size)
    server.console_buffer.write(b"x" * size)
    server.request_deadline = 0.2
    sock = connect(server)
    sock.sendall(HEADER.pack(Cmd.CONSOLE_LOG, CONSOLE_LOG_REQUEST.size, 0)
                 + CONSOLE_LOG_REQUEST.pack(False, True, 0, False))
    while not server.sending:   # accepted, read, answered in part
        server.serve_ready()
    assert 0 < server.timeout() <= 0.2

    time.sleep(0.3)   # the client reads nothing meanwhile
    server.serve_ready()

    assert server.sending == {}
    received = b""
    while chunk := sock.recv(1 << 16):
        received += chunk
    sock.close()
    assert HEADER.unpack_from(received)[:2] == (0, size) and len(received) < HEADER.size + size
