"""The seccomp notify proxy: what the monitor tells it of each notified syscall, and its answer.

A policy rule with the `notify` action makes the kernel stop the calling task
and queue a notification on the filter's listener (the child hands it to the
monitor in sync_fds).  With lxc.seccomp.notify.proxy = unix:PATH, the
monitor connects to that SOCK_SEQPACKET socket when poll begins - a start
whose proxy is not there is aborted then, as LXC's lxc_poll() fails at
lxc_seccomp_setup_proxy() - and forwards every notification to it, then
answers the kernel with the proxy's reply (LXC's seccomp_notify_handler()).

One message each way, with LXC 5.0.2's layout (struct seccomp_notify_proxy_msg
in lxcseccomp.h), in the machine's byte order::

    u64 reserved (0)  i32 monitor pid  i32 init pid
    u16 sizeof seccomp_notif  u16 sizeof seccomp_notif_resp  u16 sizeof seccomp_data  2 bytes padding
    u64 cookie length
    struct seccomp_notif       (the kernel's size)
    struct seccomp_notif_resp  (its id the notification's, the rest 0: for the proxy to fill)
    the cookie                 (lxc.seccomp.notify.cookie, no NUL; absent without one)

with three fds (SCM_RIGHTS): the notified task's /proc/PID directory, its
/proc/PID/mem opened read-write, and the listener itself.  The proxy replies
with the same layout without the cookie, exactly that long, and the monitor
hands the kernel the reply's seccomp_notif_resp - with the notification's id
if the proxy wrote another one (LXC does not check the reply's reserved field
either).  Every other outcome gets LXC's default answer, ENOSYS: no proxy
(it is reconnected to once per notification, as LXC does), a task gone before
its /proc files were opened, a message the proxy does not take (after one
reconnection and retry), no reply within 30 seconds, a reply of another
length.  The monitor waits for each reply before reading the next
notification, as LXC's does.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from lxcsm.engine.errors import describe

HEADER = struct.Struct("=QiiHHH2xQ")
# The start of struct seccomp_notif (id, pid, flags, data.nr, data.arch) and of struct
# seccomp_notif_resp (id, val, error, flags): the fields as the kernel defines them.
NOTIFICATION = struct.Struct("=QIIiI")
RESPONSE = struct.Struct("=QqiI")
# As LXC's lxc_socket_set_timeout(fd, 30, 30) on the proxy's socket.
PROXY_TIMEOUT = 30.0
# A reply longer than this is not the one expected either.
_MAX_REPLY = 1 << 16


def proxy_address(value: str) -> str:
    """The address lxc.seccomp.notify.proxy's unix:PATH names, as LXC 5.0.2 connects to it:
    a path, or for unix:@NAME an abstract name - without NAME's last character, since LXC
    passes connect() the name's length counting its leading NUL."""
    path = value.removeprefix("unix:")
    return "\0" + path[1:-1] if path.startswith("@") else path


def pack_message(monitor_pid: int, init_pid: int, sizes: tuple[int, int, int], notification: bytes,
                 cookie: bytes) -> bytes:
    """The message for the proxy about `notification`, with the response for it to fill."""
    request_id = NOTIFICATION.unpack_from(notification)[0]
    return (HEADER.pack(0, monitor_pid, init_pid, *sizes, len(cookie)) + notification
            + RESPONSE.pack(request_id, 0, 0, 0).ljust(sizes[1], b"\0") + cookie)


def reply_response(reply: bytes, sizes: tuple[int, int, int], request_id: int) -> bytes | None:
    """The seccomp_notif_resp to give the kernel from the proxy's `reply`, with the request's
    id; None if the reply is not header, notification and response long."""
    if len(reply) != HEADER.size + sizes[0] + sizes[1]:
        return None
    response = reply[HEADER.size + sizes[0]:]
    return RESPONSE.pack(request_id, *RESPONSE.unpack_from(response)[1:]) + response[RESPONSE.size:]


def default_response(request_id: int, size: int) -> bytes:
    """LXC's answer when the proxy cannot give one: the syscall fails with ENOSYS."""
    return RESPONSE.pack(request_id, 0, -errno.ENOSYS, 0).ljust(size, b"\0")


class ProxyRelay:
    """The monitor's end of the proxy: the listener it reads (a linux.seccomp.Listener), the
    connection it forwards on."""

    def __init__(self, listener, config_value: str, cookie: str | None, init_pid: int, log) -> None:
        self.listener, self.init_pid, self.log = listener, init_pid, log
        self.config_value, self.address = config_value, proxy_address(config_value)
        self.cookie = (cookie or "").encode()
        self.sizes: tuple[int, int, int] = listener.sizes
        self.proxy: socket.socket | None = None
        self.connect()

    def connect(self) -> None:
        """(Re)connect to the proxy: OSError if it is not there."""
        self.close()
        proxy = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            proxy.settimeout(PROXY_TIMEOUT)
            proxy.connect(self.address)
        except OSError as err:
            proxy.close()
            raise OSError(err.errno, f"cannot connect to the seccomp proxy ({err.strerror})",
                          self.config_value) from None
        self.proxy = proxy

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None

    def handle(self, hung_up: bool) -> bool:
        """Relay one notification; False once the listener has hung up (no task is left under
        the filter) and is to be left alone, as LXC's handler then disarms itself."""
        if hung_up:
            self.log.trace("seccomp listener hung up", listener=self.listener.fd)
            return False
        try:
            notification = self.listener.receive()
        except OSError as err:
            if err.errno == errno.ENOENT:
                self.log.trace("notified syscall aborted")
            elif err.errno != errno.EAGAIN:
                self.log.error("cannot read seccomp notification", error=describe(err))
            return True
        request_id, pid, _flags, number, _arch = NOTIFICATION.unpack_from(notification)
        self.log.trace("seccomp notification", id=request_id, task=pid, syscall=number)
        response = self._ask_proxy(notification, request_id, pid)
        answer = RESPONSE.unpack_from(response)
        try:
            self.listener.respond(response)
        except OSError as err:   # ENOENT: the task is gone meanwhile
            self.log.error("cannot answer seccomp notification", id=request_id, error=describe(err))
            return True
        self.log.trace("seccomp notification answered", id=request_id, val=answer[1], error=answer[2],
                       flags=answer[3])
        return True

    def _ask_proxy(self, notification: bytes, request_id: int, pid: int) -> bytes:
        """The proxy's response, or LXC's default one (why is logged)."""
        default = default_response(request_id, self.sizes[1])
        if self.proxy is None:
            try:
                self.connect()
            except OSError as err:
                self.log.error("no seccomp proxy", error=describe(err))
                return default
        task_fds: list[int] = []
        try:
            task_fds.append(os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            task_fds.append(os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC))
            # The task could have died and its pid been reused before the opens.
            if not self.listener.id_valid(request_id):
                self.log.error("seccomp notification no longer valid", id=request_id)
                return default
            message = pack_message(os.getpid(), self.init_pid, self.sizes, notification, self.cookie)
            if not self._send(message, [*task_fds, self.listener.fd]):
                return default
        except OSError as err:
            self.log.error("cannot open the notified task's /proc files", task=pid, error=describe(err))
            return default
        finally:
            for fd in task_fds:
                os.close(fd)
        assert self.proxy is not None   # _send connected it
        try:
            reply = self.proxy.recv(_MAX_REPLY)
        except OSError as err:
            self.log.error("no answer from the seccomp proxy", id=request_id, error=describe(err))
            return default
        response = reply_response(reply, self.sizes, request_id)
        if response is None:
            self.log.error("seccomp proxy's answer has the wrong size", id=request_id, size=len(reply),
                           expected=HEADER.size + self.sizes[0] + self.sizes[1])
            return default
        return response

    def _send(self, message: bytes, fds: list[int]) -> bool:
        """Send, reconnecting once if the proxy does not take it (it may have restarted)."""
        for attempt in (1, 2):
            try:
                assert self.proxy is not None
                sent = self.proxy.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                       struct.pack(f"{len(fds)}i", *fds))])
                if sent == len(message):
                    return True
                failure = f"sent {sent} of {len(message)} bytes"
            except OSError as err:
                failure = describe(err)
            self.log.error("cannot forward seccomp notification", error=failure, attempt=attempt)
            if attempt == 1:
                try:
                    self.connect()
                except OSError as err:
                    self.log.error("cannot reconnect to the seccomp proxy", error=describe(err))
                    return False
        return False
