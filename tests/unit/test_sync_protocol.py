"""The sync channel (engine/protocol/sync.py) over a real SOCK_SEQPACKET socketpair.

The main sequence runs the monitor's end in this process and the child's end
in a forked process, in the order the two machines use it (engine/start/machine.py).
Every forked child leaves through os._exit and is reaped here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import traceback

import pytest

from lxcsm.engine import log as logmod
from lxcsm.engine.protocol import sync
from lxcsm.engine.protocol.sync import ChildEnd, MonitorEnd, PeerFailed, SyncError, SyncMsg


class TraceLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def trace(self, event, **fields):
        self.events.append((event, fields))


def child_logger(send, **context):
    """The child's logger as engine/supervisor.run_child builds it (only ever called in a forked child)."""
    logmod.record_to(lambda event: send(logmod.portable(event)))
    logmod.set_threshold(logmod.NOTHING)
    return logmod.logger(None, **context)


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def fork_child():
    """fork_child(body) -> pid: run body() in a forked child; it always ends with os._exit."""
    pids = []

    def fork(body) -> int:
        pid = os.fork()
        if pid == 0:
            status = 70
            try:
                body()
                status = 0
            except BaseException as err:
                traceback.print_exc()   # shown with the test's captured output
                status = 3 if isinstance(err, SyncError) else 4
            finally:
                os._exit(status)
        pids.append(pid)
        return pid

    yield fork
    for pid in pids:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def reap(pid: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    raise AssertionError(f"child {pid} did not exit")


@pytest.fixture
def pair():
    monitor_sock, child_sock = sync.socketpair()
    yield monitor_sock, child_sock
    monitor_sock.close()
    child_sock.close()


def test_socketpair_is_seqpacket_and_close_on_exec(pair):
    for sock in pair:
        assert sock.type == socket.SOCK_SEQPACKET
        assert sock.family == socket.AF_UNIX
        assert not os.get_inheritable(sock.fileno())


def test_labels_are_lxc_names():
    assert SyncMsg.POST_CONFIGURE.label == "post-configure"
    assert SyncMsg.READY_START.label == "ready-start"
    assert SyncMsg.STARTUP.label == "startup"


def test_full_start_sequence_with_logs_and_an_fd(pair, fork_child):
    monitor_sock, child_sock = pair

    def child():
        monitor_sock.close()
        end = ChildEnd(child_sock, TraceLog(), timeout=5)
        end.wait_for(SyncMsg.STARTUP)
        end.send_log({"event": "log-1", "level": 0, "n": 1})
        end.send_log({"event": "log-2", "level": 0, "n": 2})
        payload, fds = end.barrier(SyncMsg.CONFIGURE, SyncMsg.POST_CONFIGURE, payload=b"configure me")
        assert payload == b"post" and fds == []
        # the child's real logger forwards through the channel
        logger = child_logger(end.send_log, name="ct", side="child")
        logger.bind(category="setup_rootfs").trace("log-3", path="/x y")
        end.barrier(SyncMsg.CGROUP_LIMITS, SyncMsg.FDS)
        read_end, write_end = os.pipe()
        os.write(write_end, b"through the fd")
        os.close(write_end)
        end.send_log({"event": "log-4", "level": 0})
        payload, fds = end.barrier(SyncMsg.FDS, SyncMsg.READY_START, payload=b"fds", fds=[read_end])
        assert fds == []
        # falling off the end: os._exit closes our end, the monitor reads end-of-file

    order: list = []
    monitor_log = TraceLog()
    end = MonitorEnd(monitor_sock, monitor_log, timeout=5, on_child_log=lambda e: order.append(e["event"]))
    pid = fork_child(child)
    child_sock.close()
    try:
        end.wake(SyncMsg.STARTUP)
        payload, fds = end.wait_for(SyncMsg.CONFIGURE)
        order.append("<configure>")
        assert (payload, fds) == (b"configure me", [])
        end.wake(SyncMsg.POST_CONFIGURE, b"post")
        assert end.wait_for(SyncMsg.CGROUP_LIMITS) == (b"", [])
        order.append("<cgroup-limits>")
        end.wake(SyncMsg.FDS)
        payload, fds = end.wait_for(SyncMsg.FDS)
        order.append("<fds>")
        assert payload == b"fds"
        assert len(fds) == 1
        try:
            assert os.read(fds[0], 100) == b"through the fd"
        finally:
            os.close(fds[0])
        end.wake(SyncMsg.READY_START)
        end.wait_for_exec()     # returns on end-of-file
        order.append("<exec>")
    finally:
        end.close()
    assert reap(pid) == 0
    assert order == ["log-1", "log-2", "<configure>", "log-3", "<cgroup-limits>", "log-4", "<fds>", "<exec>"]
    sequences = [(event, fields["sequence"]) for event, fields in monitor_log.events]
    assert sequences == [
        ("sync wake", "startup"), ("sync wait", "configure"), ("sync wake", "post-configure"),
        ("sync wait", "cgroup-limits"), ("sync wake", "fds"), ("sync wait", "fds"),
        ("sync wake", "ready-start"), ("sync wait", "exec"),
    ]


def test_forwarded_log_event_arrives_unrendered(pair, fork_child):
    monitor_sock, child_sock = pair

    def child():
        monitor_sock.close()
        end = ChildEnd(child_sock, TraceLog(), timeout=5)
        logger = child_logger(end.send_log, name="ct", side="child").bind(category="configure")
        logger.debug("kept", text="two words")
        end.wake(SyncMsg.CONFIGURE)

    events: list[dict] = []
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=events.append)
    pid = fork_child(child)
    child_sock.close()
    end.wait_for(SyncMsg.CONFIGURE)
    assert reap(pid) == 0
    assert len(events) == 1
    event = events[0]
    assert event["event"] == "kept"
    assert event["level"] == logmod.Level.DEBUG
    assert event["text"] == "two words"
    assert (event["name"], event["side"], event["category"]) == ("ct", "child", "configure")
    assert isinstance(event["time"], float)
    assert re.fullmatch(r"\S*test_sync_protocol\.py:child:\d+", event["where"]), event["where"]


def test_error_frame_raises_peer_failed_with_state_and_text(pair, fork_child):
    monitor_sock, child_sock = pair

    def child():
        monitor_sock.close()
        end = ChildEnd(child_sock, TraceLog(), timeout=5)
        end.wait_for(SyncMsg.STARTUP)
        end.send_log({"event": "before the error", "level": 5})
        end.send_error("setup_mounts", "fstab:3: mounting x on y: Permission denied (EACCES)")

    seen = []
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=seen.append)
    pid = fork_child(child)
    child_sock.close()
    end.wake(SyncMsg.STARTUP)
    with pytest.raises(PeerFailed) as caught:
        end.wait_for(SyncMsg.CONFIGURE)
    assert caught.value.side == "child"
    assert caught.value.state == "setup_mounts"
    assert caught.value.error == "fstab:3: mounting x on y: Permission denied (EACCES)"
    assert str(caught.value) == caught.value.error
    assert [e["event"] for e in seen] == ["before the error"]
    assert reap(pid) == 0


def test_error_frame_after_ready_start_fails_wait_for_exec(pair, fork_child):
    monitor_sock, child_sock = pair

    def child():
        monitor_sock.close()
        end = ChildEnd(child_sock, TraceLog(), timeout=5)
        end.wait_for(SyncMsg.READY_START)
        end.send_error("exec", "No such file or directory (ENOENT): /sbin/init")

    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    pid = fork_child(child)
    child_sock.close()
    end.wake(SyncMsg.READY_START)
    with pytest.raises(PeerFailed) as caught:
        end.wait_for_exec()
    assert (caught.value.state, caught.value.error) == ("exec", "No such file or directory (ENOENT): /sbin/init")
    assert reap(pid) == 0


def test_child_dying_while_monitor_waits_is_a_sync_error(pair, fork_child):
    monitor_sock, child_sock = pair

    def child():
        monitor_sock.close()
        os._exit(9)

    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    pid = fork_child(child)
    child_sock.close()
    with pytest.raises(SyncError, match=r"child exited while monitor waited for configure"):
        end.wait_for(SyncMsg.CONFIGURE)
    assert reap(pid) == 9


def test_a_child_that_failed_before_a_wake_is_reported_by_its_error_not_the_broken_pipe(pair):
    """The child failed at once and exited; the monitor's next wake finds the pipe broken,
    but the child's ERROR frame (and its log) are still queued: they are the reason."""
    monitor_sock, child_sock = pair
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    child.send_log({"event": "state", "state": "startup"})
    child.send_error("startup", "failpoint: child state startup made to fail")
    child_sock.close()
    seen = []
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=seen.append)
    with pytest.raises(PeerFailed) as failed:
        end.wake(SyncMsg.STARTUP)
    assert (failed.value.side, failed.value.state) == ("child", "startup")
    assert failed.value.error == "failpoint: child state startup made to fail"
    assert [e["event"] for e in seen] == ["state"]


def test_a_child_that_failed_with_startup_unread_is_reported_by_its_error_not_the_reset(pair):
    """The monitor's STARTUP went out, the child failed before reading it and exited: the
    kernel reports ECONNRESET once, ahead of the child's queued ERROR frame (under a slow
    CPU, e.g. the cgroup2 guest's TCG, the usual order)."""
    monitor_sock, child_sock = pair
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    end.wake(SyncMsg.STARTUP)
    ChildEnd(child_sock, TraceLog(), timeout=5).send_error("startup", "failpoint: child state startup made to fail")
    child_sock.close()   # STARTUP still unread in its queue
    with pytest.raises(PeerFailed) as failed:
        end.wait_for(SyncMsg.CONFIGURE)
    assert (failed.value.state, failed.value.error) == ("startup", "failpoint: child state startup made to fail")


def test_a_peer_gone_without_a_word_is_a_sync_error(pair):
    monitor_sock, child_sock = pair
    child_sock.close()
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    with pytest.raises(SyncError, match=r"child is gone \(sending startup\)"):
        end.wake(SyncMsg.STARTUP)


def test_monitor_dying_while_child_waits_is_a_sync_error(pair):
    monitor_sock, child_sock = pair
    end = ChildEnd(child_sock, TraceLog(), timeout=5)
    monitor_sock.close()
    with pytest.raises(SyncError, match=r"monitor exited while child waited for post-configure"):
        end.wait_for(SyncMsg.POST_CONFIGURE)


def test_silent_peer_times_out(pair):
    monitor_sock, _child_sock = pair     # the child's end stays open and says nothing
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=0.2, on_child_log=lambda e: None)
    started = time.monotonic()
    with pytest.raises(SyncError, match=r"timed out after 0\.2s waiting for child to send configure"):
        end.wait_for(SyncMsg.CONFIGURE)
    elapsed = time.monotonic() - started
    assert 0.19 <= elapsed < 2


def test_log_frames_do_not_extend_the_deadline(pair):
    monitor_sock, child_sock = pair
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    for i in range(3):
        child.send_log({"event": f"chatter {i}", "level": 0})
    seen = []
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=0.2, on_child_log=seen.append)
    with pytest.raises(SyncError, match="timed out"):
        end.wait_for(SyncMsg.CGROUP_LIMITS)
    assert [e["event"] for e in seen] == ["chatter 0", "chatter 1", "chatter 2"]


def test_unexpected_message_names_expected_and_received(pair):
    monitor_sock, child_sock = pair
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    child.wake(SyncMsg.CGROUP_LIMITS)
    with pytest.raises(SyncError, match=r"monitor expected configure but child sent cgroup-limits"):
        end.wait_for(SyncMsg.CONFIGURE)


def test_unexpected_message_does_not_leak_its_fds(pair):
    monitor_sock, child_sock = pair
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    read_end, write_end = os.pipe()
    try:
        before = open_fds()
        child.wake(SyncMsg.FDS, fds=[read_end, write_end])
        with pytest.raises(SyncError, match="expected ready-start but child sent fds"):
            end._wait(SyncMsg.READY_START, lambda e: None)
        assert open_fds() == before
    finally:
        os.close(read_end)
        os.close(write_end)


def test_child_end_rejects_unexpected_message(pair):
    monitor_sock, child_sock = pair
    monitor = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    monitor.wake(SyncMsg.READY_START)
    with pytest.raises(SyncError, match=r"child expected fds but monitor sent ready-start"):
        child.wait_for(SyncMsg.FDS)


def test_sending_to_a_closed_peer_is_a_sync_error(pair):
    monitor_sock, child_sock = pair
    end = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    child_sock.close()
    with pytest.raises(SyncError, match=r"child is gone \(sending startup\)"):
        end.wake(SyncMsg.STARTUP)


def test_monitor_error_frame_reaches_the_child(pair):
    monitor_sock, child_sock = pair
    monitor = MonitorEnd(monitor_sock, TraceLog(), timeout=5, on_child_log=lambda e: None)
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    monitor.send_error("sync_configure", "veth: no such device")
    with pytest.raises(PeerFailed) as caught:
        child.wait_for(SyncMsg.POST_CONFIGURE)
    assert (caught.value.side, caught.value.state, caught.value.error) == \
        ("monitor", "sync_configure", "veth: no such device")


def test_child_skips_log_frames_while_waiting(pair):
    monitor_sock, child_sock = pair
    child = ChildEnd(child_sock, TraceLog(), timeout=5)
    monitor_sock.send(bytes([SyncMsg.LOG]) + json.dumps({"event": "x", "level": 0}).encode())
    monitor_sock.send(bytes([SyncMsg.STARTUP]) + b"go")
    assert child.wait_for(SyncMsg.STARTUP) == (b"go", [])
