"""engine/cli/explain_failure.py: reading a flight record for its verdict, causes and hints."""

from __future__ import annotations

import pytest

from lxcsm.engine import log as logmod
from lxcsm.engine.cli import explain_failure
from lxcsm.engine.start import postmortem


def event(name: str, t: float, side: str = "monitor", **fields) -> dict:
    return {"name": "box", "side": side, "pid": 40, "category": "x", "event": name,
            "level": logmod.Level.TRACE, "time": t, "where": "states/monitor/x.py:enter:1", **fields}


def explained(events: list[dict], journal: str = "/nonexistent/journal") -> list[str]:
    return explain_failure.explain("box", postmortem.Record("/r/lxcsm-last-start.log", events, []), journal)


START = [event("state", 1.0, state="init_handler"), event(postmortem.CLAIMED_BY, 1.1),
         event("state", 1.2, state="spawn"), event("exec", 1.5, side="child", argv=["/bin/sh", "-c", "/start.sh x"]),
         event("rootfs mounted", 1.3, side="child", source="/nonexistent-rootfs"),
         event("started", 1.6), event("state", 1.7, state="poll")]
STOPPED = [event("state", 9.0, state="stopping"), event("undo", 9.1, kind="cgroup", target="/c"),
           event("state", 9.2, state="stopped"), event(postmortem.MONITOR_EXITED, 9.3)]


# --- a monitor that died ----------------------------------------------------------------------


def test_a_record_without_an_end_is_a_dead_monitor_named_with_its_state_and_hook(tmp_path):
    journal = tmp_path / "journal"
    journal.write_text('{"change": "cgroup", "target": "/sys/fs/cgroup/pids/lxc.payload.box"}\n')
    events = [*START[:3], event("hook", 2.0, kind="start-host", command="exec /h.sh box lxc start-host")]
    first = explained(events, str(journal))[0]
    assert first.startswith("box: the monitor died in spawn (hook start-host running: exec /h.sh box lxc start-host)"
                            " at ")
    assert first.endswith("; run `lxcsm cleanup box`")
    journal.unlink()
    assert explained(events, str(journal))[0].endswith("; nothing it changed is left on the host")


def test_a_hook_still_running_is_named_though_its_output_and_warnings_came_after_it():
    hook = event("hook", 2.0, kind="start-host", command="exec /h.sh")
    talking = [hook, event("hook output", 2.1, kind="start-host", line="working"),
               event("hook still running", 12.0, kind="start-host", command="exec /h.sh", hook_pid=7, seconds=10)]
    assert "died in spawn (hook start-host running: exec /h.sh) at " in explained([*START[:3], *talking])[0]
    ended = [*talking, event("hook ended", 13.0, kind="start-host", status=0)]
    assert "hook start-host running" not in explained([*START[:3], *ended])[0]


def test_a_dead_monitor_paused_at_a_breakpoint_and_the_childs_last_state(tmp_path):
    events = [*START[:3], event("state", 2.0, side="child", state="setup_mounts"),
              event("paused", 2.5, before="monitor:sync_cgroup_limits")]
    first = explained(events)[0]
    assert "died in spawn (paused at a breakpoint before monitor:sync_cgroup_limits); the child's last " \
           "recorded state: setup_mounts at " in first


def test_a_failed_start_shows_the_events_before_the_failure_and_sums_up_the_cleanup():
    events = [*START[:3], event("start failed", 3.0, failed_state="spawn", failed_side="monitor", error="boom"),
              event("undo", 3.1, kind="cgroup", target="/c"), event("undo failed", 3.2, kind="netdev",
                                                                     target="veth0", error="EBUSY"),
              event(postmortem.MONITOR_EXITED, 3.3)]
    lines = explained(events)
    assert lines[0].startswith("box: the last start failed in the monitor state spawn at ") and lines[0].endswith(
        ": boom")
    shown = [line for line in lines if line.startswith("  lxcsm ")]
    assert len(shown) == 4 and " - start failed " in shown[-1]
    assert "Then 1 changes to the host were undone; 1 could not be (the record says which)." in lines


# --- how init ended -----------------------------------------------------------------------------


@pytest.mark.parametrize("signal_name,cause", [
    ("SIGSYS", "the seccomp filter killed it: it made a system call that the policy (/p/policy) denies with kill"),
    ("SIGSEGV", "it crashed: an invalid memory access"),
    ("SIGKILL", "killed outright"),
])
def test_init_killed_by_a_signal_is_read_for_its_cause(signal_name, cause):
    events = [event("seccomp filter built", 1.05, policy="/p/policy"), *START,
              event("init killed", 5.0, signal=signal_name), *STOPPED]
    first = explained(events)[0]
    assert first.startswith(f"box: init was killed by {signal_name} at ") and cause in first, first


def test_a_stop_request_or_a_forwarded_signal_is_named_as_what_ended_init():
    events = [*START, event("command served", 4.0, command="STOP", uid=0), event("init killed", 5.0,
                                                                                   signal="SIGKILL"), *STOPPED]
    assert "a stop request (lxcsm stop / lxc-stop, served at " in explained(events)[0]
    events = [*START, event("forwarding signal", 4.0, signal="SIGTERM", sender=77),
              event("init killed", 5.0, signal="SIGTERM"), *STOPPED]
    assert "the monitor was sent SIGTERM by pid 77 and forwarded it to init" in explained(events)[0]


def test_exit_127_names_a_script_whose_interpreter_is_missing(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "sh").write_text("")
    (rootfs / "start.sh").write_text("#!/usr/bin/python9\n")
    events = [event("rootfs mounted", 1.3, side="child", source=str(rootfs)),
              *[e for e in START if e["event"] != "rootfs mounted"],
              event("init exited", 5.0, status=127), *STOPPED]
    lines = explained(events)
    assert "the shell's 'command not found'" in lines[0]
    assert "hint: /start.sh: its interpreter /usr/bin/python9 (on its #! line) is missing in the container" in lines


def test_interpreter_problems(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_text("")
    for name, text in {"ok": b"#!/bin/sh\n", "dos": b"#!/bin/sh\r\n", "none": b"#!\n", "elf": b"\x7fELF"}.items():
        (tmp_path / name).write_bytes(text)
    assert explain_failure.interpreter_problem(str(tmp_path), "/ok") is None
    assert explain_failure.interpreter_problem(str(tmp_path), "/elf") is None
    assert "carriage return" in explain_failure.interpreter_problem(str(tmp_path), "/dos")
    assert explain_failure.interpreter_problem(str(tmp_path), "/none") == "/none: its #! line names no interpreter"
    assert explain_failure.interpreter_problem(str(tmp_path), "/absent") is None


def test_limits_hit_are_read_from_the_recorded_cgroup_counters():
    events = [*START, event("cgroup limit hit", 4.9, file="/sys/fs/cgroup/pids/lxc.payload.box/pids.events", max=12),
              event("cgroup limit hit", 4.9, file="/sys/fs/cgroup/unified/lxc.payload.box/memory.events", oom_kill=1),
              event("init exited", 5.0, status=2), *STOPPED]
    lines = explained(events)
    assert "  and pids.max was hit 12 time(s): that many forks failed" in "\n".join(lines)
    assert "the OOM killer killed 1 of its processes: memory.max was reached" in "\n".join(lines)


# --- hints ------------------------------------------------------------------------------------


def test_hint_for_a_missing_mount_target():
    error = ("/c/config:5: lxc.mount.entry: mounting tmpfs on data/cache: No such file or directory (ENOENT): "
             "/data/cache")
    assert explain_failure.hints(error) == [
        "the mount target data/cache does not exist in the container: add create=dir to the options of that "
        "lxc.mount.entry (create=file to mount a file), or make it in the rootfs"]


def test_hint_for_a_cgroup_file_typo(monkeypatch):
    monkeypatch.setattr(explain_failure, "cgroup_file_names", lambda: ["memory.max", "pids.current", "pids.max"])
    error = "/c/config:5: lxc.cgroup.pids.mxa: no file pids.mxa in the pids hierarchy (/sys/fs/cgroup/pids)"
    assert explain_failure.hints(error) == ["no cgroup file is named pids.mxa: did you mean pids.max "
                                            "(lxc.cgroup.pids.max)?"]
    assert explain_failure.hints(error.replace("mxa", "zzzzzz")) == []   # nothing close: no guess


def test_the_cgroup_files_of_this_host_include_a_non_root_cgroups(tmp_path, monkeypatch):
    # A hierarchy laid out as cgroupfs lays it out: the root lacks pids.max, a cgroup below has it.
    from lxcsm.engine.linux import cgroups
    root = tmp_path / "pids"
    (root / "some.cgroup").mkdir(parents=True)
    for path in (root / "cgroup.procs", root / "some.cgroup" / "cgroup.procs", root / "some.cgroup" / "pids.max"):
        path.write_text("")
    monkeypatch.setattr(cgroups, "hierarchies",
                        lambda: [cgroups.Hierarchy(str(root), ("pids",), 1, str(root))])
    names = explain_failure.cgroup_file_names()
    assert "cgroup.procs" in names
    assert "pids.max" in names


def test_hint_for_a_missing_bridge():
    error = "/c/config:6: lxc.net.0.link: no network interface br7 on the host"
    assert explain_failure.hints(error) == ["create the bridge first: ip link add br7 type bridge && "
                                            "ip link set br7 up"]


def test_a_refusal_is_the_verdict_with_its_hints():
    events = [event(postmortem.REFUSED, 1.0, side="cli", error="/c/config:6: lxc.net.0.link: no network "
                                                                 "interface br7 on the host", command=[])]
    lines = explained(events)
    assert lines[0].startswith("box: the last start was refused before it began, at ")
    assert lines[1] == "hint: create the bridge first: ip link add br7 type bridge && ip link set br7 up"


def test_a_monitor_that_failed_outside_any_state_is_called_a_bug():
    events = [*START, event(postmortem.MONITOR_FAILED, 3.0, error="KeyError: 'x'"),
              event(postmortem.MONITOR_EXITED, 3.1)]
    assert explained(events)[0].startswith("box: the monitor failed at ")
    assert explained(events)[0].endswith(", outside any state (a bug in lxcsm): KeyError: 'x'")
    assert not any("did not fail" in line for line in explained(events))
