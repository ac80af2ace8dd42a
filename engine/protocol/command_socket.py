"""The container's command socket: LXC 5's wire format, shared by both ends.

LXC's tools (lxc-info, lxc-stop, lxc-wait, lxc-attach, ...) talk to a running
container's monitor over an abstract unix socket named
``@LXCPATH/NAME/command``; so does `lxcsm stop`.  This module holds what both
ends agree on - the address, the command numbers, the states, the header
layouts - as given in shared/reference/lxc-5.0.2/command-protocol.md.  The
monitor's end is command_server.py, the client's command_client.py.

One request per connection; STOP and state-client connections stay open and
are closed when the container has stopped, which their clients read as
"stopped".
"""

from __future__ import annotations

import enum
import struct

HEADER = struct.Struct("<iiq")        # cmd or ret, datalen, inline value
STATE_MSG = struct.Struct("<i256si")  # struct lxc_msg: type, name, value
MAX_PAYLOAD = 8192
# struct cgroup_fd: layout, utilities, type (fs magic), fd, controller[64]
CGROUP_FD = struct.Struct("<iIii64s")
# struct cgroup_ctx: layout, utilities, fd_len, fd[20], padding to 8-byte alignment
CGROUP_CTX_MAX_FD = 20
CGROUP_CTX = struct.Struct(f"<iII{CGROUP_CTX_MAX_FD}i4x")
# struct lxc_cmd_console_log: clear, read, read_max (0: all), write_logfile (sent by no LXC client)
CONSOLE_LOG_REQUEST = struct.Struct("<??6xQ?7x")


class Cmd(enum.IntEnum):
    GET_TTY_FD = 0
    STOP = 2
    GET_STATE = 3
    GET_INIT_PID = 4
    GET_CLONE_FLAGS = 5
    GET_CGROUP = 6
    GET_CONFIG_ITEM = 7
    GET_NAME = 8
    GET_LXCPATH = 9
    ADD_STATE_CLIENT = 10
    CONSOLE_LOG = 11
    SERVE_STATE_CLIENTS = 12
    FREEZE = 15
    UNFREEZE = 16
    GET_CGROUP2_FD = 17
    GET_INIT_PIDFD = 18
    GET_LIMIT_CGROUP = 19
    GET_LIMIT_CGROUP2_FD = 20
    GET_DEVPTS_FD = 21
    GET_CGROUP_CTX = 23
    GET_CGROUP_FD = 24
    GET_LIMIT_CGROUP_FD = 25
    # lxcsm's own, far above LXC's numbers (LXC answers -ENOSYS from 27 on):
    CONTINUE = 1000   # resume a start paused by --break-at or --step
    START_STATUS = 1001   # what the start is doing: states, running hook, pause (JSON, start_status.py)


class LxcState(enum.IntEnum):
    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    ABORTING = 4
    FREEZING = 5
    FROZEN = 6
    THAWED = 7


REGISTERED = 8   # ADD_STATE_CLIENT's "registered, wait for a message" (MAX_STATE)


class CgroupLayout(enum.IntEnum):
    LEGACY = 0    # cgroup v1 only
    HYBRID = 1    # v1 controllers, and cgroup2 beside them
    UNIFIED = 2   # cgroup2 only


# A hierarchy's type in struct cgroup_fd: its filesystem's magic (statfs f_type).
CGROUP_SUPER_MAGIC = 0x0027E0EB
CGROUP2_SUPER_MAGIC = 0x63677270


def socket_name(lxcpath: str, name: str) -> bytes:
    """The abstract address, hashed (FNV-1a 64) when too long, exactly as LXC builds it."""
    lxcpath = lxcpath.rstrip("/") or "/"
    path = f"{lxcpath}/{name}/command"
    if len(path.encode()) < 106:
        return b"\0" + path.encode()
    digest = 0xCBF29CE484222325
    for byte in f"{lxcpath}/{name}".encode():
        digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return b"\0" + f"lxc/{digest:016x}/command".encode()
