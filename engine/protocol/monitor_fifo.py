"""State changes announced to `lxc-monitor`, the way LXC's monitor announces them.

`lxc-monitor -n NAME` does not ask the container's command socket.  It starts
(or finds) `lxc-monitord` for the LXCPATH, which reads a FIFO at
``RUNDIR/lxc/LXCPATH/monitor-fifo`` and relays every message to its
subscribers.  LXC's monitor writes one `struct lxc_msg` (type, name, value:
command_socket.STATE_MSG) into that FIFO at each state change, and one with
init's wait status when it ends (monitor.c lxc_monitor_send_state and
lxc_monitor_send_exit_code).  With no lxc-monitord running there is no reader
(or no FIFO at all) and the message is dropped: an announcement is never worth
blocking or failing a start for.
"""

from __future__ import annotations

import errno
import os

from lxcsm.engine.protocol.command_socket import STATE_MSG

# lxc_msg_type_t (monitor.h)
MSG_STATE = 0
MSG_EXIT_CODE = 2

# Where LXC puts its runtime files (RUNTIME_PATH: Debian builds LXC with /run).
RUNTIME_PATH = "/run"
_NAME_BYTES = 255   # name[NAME_MAX + 1], NUL-terminated


def rundir() -> str | None:
    """LXC's get_rundir(): /run if this user owns it (root), else XDG_RUNTIME_DIR, else ~/.cache/lxc/run."""
    try:
        st = os.stat(RUNTIME_PATH)
        if st.st_uid == os.geteuid() or st.st_gid == os.getegid():
            return RUNTIME_PATH
    except OSError:
        pass
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.environ["XDG_RUNTIME_DIR"]
    home = os.environ.get("HOME")
    return f"{home}/.cache/lxc/run/" if home else None


def fifo_path(lxcpath: str, run: str | None = None) -> str | None:
    run = run if run is not None else rundir()
    # Joined as LXC joins them ("%s/lxc/%s/monitor-fifo"): LXCPATH is absolute, so the path has "//".
    return f"{run}/lxc/{lxcpath}/monitor-fifo" if run is not None else None


def announce_state(lxcpath: str, name: str, state: int, run: str | None = None) -> str | None:
    """Tell lxc-monitord that NAME entered `state` (an LxcState); the error text if that failed."""
    return _send(lxcpath, MSG_STATE, name, state, run)


def announce_exit_code(lxcpath: str, name: str, wait_status: int, run: str | None = None) -> str | None:
    """Tell lxc-monitord how init ended (its wait status, as LXC sends it)."""
    return _send(lxcpath, MSG_EXIT_CODE, name, wait_status, run)


def _send(lxcpath: str, kind: int, name: str, value: int, run: str | None) -> str | None:
    path = fifo_path(lxcpath, run)
    if path is None:
        return None
    try:
        # Non-blocking: with no reader the open fails at once (ENXIO) instead of waiting for one.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENXIO, errno.ENOENT):
            return None   # nobody listens: the normal case
        return f"cannot open {path}: {err.strerror}"
    try:
        # One write of less than PIPE_BUF bytes: atomic, never mixed with another monitor's.
        os.write(fd, STATE_MSG.pack(kind, name.encode()[:_NAME_BYTES], value))
    except OSError as err:
        return f"cannot write {path}: {err.strerror}"
    finally:
        os.close(fd)
    return None
