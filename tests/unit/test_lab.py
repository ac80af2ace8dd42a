"""Lab mode without root: the table of skippable steps, its refusals, how the supervisor passes a
state over, and the exercises' judging on outputs as the kernel prints them
(tests/integration/test_lab.py runs every exercise on real containers)."""

from __future__ import annotations

import errno
import os
import types

import pytest

from lxcsm.engine.analysis import lab_exercises
from lxcsm.engine.analysis.lab_exercises import EXERCISES, Seen, right_answer
from lxcsm.engine.cli import main as cli_main
from lxcsm.engine.config.model import ConfigError
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.start_status import StartStatus
from lxcsm.engine.start import lab
from lxcsm.engine.start.machine import TABLES
from lxcsm.engine.start.supervisor import Supervisor
from lxcsm.states.child import configure
from lxcsm.states.monitor import spawn
from tests.unit.config_text import load_text


def _where(name: str) -> tuple[str, str]:
    side, _, state = name.partition(":")
    return side, state


@pytest.mark.parametrize("skip", list(lab.SKIPS.values()), ids=list(lab.SKIPS))
def test_each_step_names_real_states_and_changes_something(skip):
    for where in (skip.state, *skip.not_entered):
        side, state = _where(where)
        assert state in TABLES[side].states, where
    # A step is left out either by passing states over or by a config change, never by nothing.
    assert bool(skip.not_entered) != (skip.config is not None)
    # The whole state, or a named part of it that a config change takes away.
    assert (skip.part is None) == (skip.state in skip.not_entered)
    assert skip.instead is None or skip.not_entered
    assert skip.lxc and skip.sees


def test_a_state_passed_over_has_a_normal_way_on():
    for skip in lab.SKIPS.values():
        for where in skip.not_entered:
            side, state = _where(where)
            exits = [t for t, source, _dest in TABLES[side].transitions
                     if state == source or (isinstance(source, tuple) and state in source)]
            assert [t for t in exits if t != "failed"], where


def test_names_are_parsed_in_the_tables_order_and_an_unknown_one_is_refused():
    assert lab.parse(["cap_drop,pivot_root", "proc"]) == ("pivot_root", "proc", "cap_drop")
    with pytest.raises(ValueError, match=r"--lab-skip chroot: no such step \(steps: pivot_root, proc, "):
        lab.parse(["chroot"])


@pytest.mark.parametrize("skips, acknowledged, foreground, command, refused", [
    (("pivot_root",), False, True, ["/bin/sh"], "add --lab to say that is what you want"),
    (("pivot_root",), True, False, ["/bin/sh"], "runs in the foreground only (-F)"),
    (("pivot_root",), True, True, [], "never the container's own init"),
    ((), True, True, ["/bin/sh"], "--lab without --lab-skip"),
    (("pivot_root", "proc"), True, True, ["/bin/sh"], None),
    ((), False, False, [], None),
])
def test_lab_mode_is_refused_unless_asked_for_watched_and_given_a_command(skips, acknowledged, foreground,
                                                                         command, refused):
    said = lab.refusal(skips, acknowledged, foreground, command)
    assert said == refused if refused is None else refused in said


def test_lxcsm_start_refuses_a_lab_skip_it_does_not_know_in_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["start", "--lab", "--lab-skip", "seccomp", "-F", "box", "--", "/bin/sh"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--lab-skip seccomp: no such step" in err and err.count("\n") == 1


def test_config_changes_are_what_the_states_then_do(tmp_path):
    config = load_text(tmp_path, "lxc.rootfs.path = dir:/srv/r\nlxc.mount.auto = proc:mixed sys:ro\n")
    without = lab.config_without(config, ("proc", "pid_ns", "net_ns", "cgroup_ns"))
    assert config.mount_proc == "mixed" and without.mount_proc is None
    assert without.mount_sys == "ro"
    for flag in (kernel.CLONE_NEWPID, kernel.CLONE_NEWNET):
        assert spawn.clone_flags(config) & flag
        assert not spawn.clone_flags(without) & flag
    assert "unshare(CLONE_NEWCGROUP)" in configure.plan(types.SimpleNamespace(config=config))
    assert "unshare(CLONE_NEWCGROUP)" not in configure.plan(types.SimpleNamespace(config=without))
    # Steps passed over change no config.
    assert lab.config_without(config, ("pivot_root", "cap_drop", "hostname")) == config


def test_without_a_network_namespace_a_config_with_devices_to_make_is_refused_naming_the_line(tmp_path):
    config = load_text(tmp_path, "lxc.rootfs.path = dir:/srv/r\nlxc.net.0.type = macvlan\nlxc.net.0.link = eth0\n")
    with pytest.raises(ConfigError) as refused:
        lab.config_without(config, ("net_ns",))
    assert str(refused.value).endswith(":2: lxc.net.0.type: --lab-skip net_ns: this macvlan device would be made"
                                       " on the host's own network; leave out net_ns only for a container"
                                       " without one")


def test_lxcsm_starts_help_names_every_step():
    from lxcsm.engine.cli import parser_for
    _module, parser = parser_for("start")
    text = next(action.help for action in parser._actions if action.dest == "lab_skip")
    assert all(f" {name}," in text or f" {name} (" in text for name in lab.SKIPS)


def test_the_states_concerned_say_whether_they_are_entered_and_what_runs_instead():
    found = lab.concerned(("pivot_root", "cgroup_ns"))
    assert set(found) == {("child", "setup_pivot_root"), ("child", "setup_sysctl"), ("child", "configure")}
    pivot, sysctl, configured = (found[("child", s)] for s in ("setup_pivot_root", "setup_sysctl", "configure"))
    assert (pivot.entered, pivot.instead) == (False, lab.SKIPS["pivot_root"].instead)
    assert (sysctl.entered, sysctl.instead) == (False, None)
    assert (configured.entered, configured.instead) == (True, None)


class _Log:
    def __init__(self, events: list) -> None:
        self.events = events

    def bind(self, **context):
        return self

    def __getattr__(self, level):
        return lambda event, **fields: self.events.append((level, event, fields))


def test_the_supervisor_passes_a_skipped_state_over_and_says_so(monkeypatch):
    ran = []
    monkeypatch.setitem(lab.SKIPS, "pivot_root", lab.SKIPS["pivot_root"]._replace(instead=lambda: ran.append(1)))
    events: list = []
    ctx = types.SimpleNamespace(log=None, failure=None)   # setup_pivot_root's enter would fail on it
    supervisor = Supervisor(TABLES["child"], ctx, _Log(events), lab_skips=("pivot_root",))
    assert supervisor._enter("setup_pivot_root") == "root_pivoted"
    assert supervisor._enter("setup_sysctl") == "sysctls_set"
    assert ran == [1]   # in place of the first state only
    warned = [fields for level, event, fields in events if level == "warn" and event == "lab skipped"]
    assert [w["skip"] for w in warned] == ["pivot_root", "pivot_root"]
    assert warned[0]["entered"] is False and "lxc_pivot_root()" in warned[0]["lxc"]


def test_without_lab_skips_the_supervisor_enters_every_state():
    assert Supervisor(TABLES["child"], types.SimpleNamespace(log=None, failure=None), _Log([])).lab == {}


def test_info_is_told_the_steps_left_out():
    status = StartStatus()
    for skip in ("pid_ns", "pivot_root", "pivot_root"):
        status.observe({"event": "lab skipped", "skip": skip, "time": 1.0})
    assert status.snapshot("RUNNING")["lab_skipped"] == ["pid_ns", "pivot_root"]
    assert StartStatus().snapshot("RUNNING")["lab_skipped"] == []


def test_the_banner_names_every_step_and_what_the_container_sees():
    text = lab.banner(("pivot_root", "cap_drop"))
    assert text.startswith("lxcsm: LAB MODE (for teaching, never for production)")
    assert "child:setup_pivot_root (the whole state)" in text and "setup_caps()" in text


# --- the exercises ------------------------------------------------------------------

def test_every_exercise_leaves_out_a_step_of_the_table():
    for exercise in EXERCISES.values():
        assert exercise.skip in lab.SKIPS and len(exercise.choices) >= 2


HOST_ROOT = frozenset("bin boot dev etc home lib proc root run sbin srv sys tmp usr var work".split())
ROOTFS = frozenset("bin dev etc proc root run sbin sys tmp".split())
FULL_SET = 0x1fffeffffff


HOST_LINKS = frozenset({"lo", "eth0", "ifb0"})
NET_DEV = ("Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo\n")


def net_dev(*names: str) -> str:
    return NET_DEV + "".join(f"{name:>6}:    6486      60    0    0    0     0          0         0\n"
                             for name in names)


def seen(output: str) -> Seen:
    return Seen(output, "lab-x-1", HOST_ROOT, ROOTFS, "vm", FULL_SET, HOST_LINKS)


CGROUPS_WHOLE = "9:name=systemd:/\n1:cpu:/\n0::/\n"
PS_WHOLE = "PID   USER     COMMAND\n    1 root     /bin/sh -c ps\n    2 root     {ps} /bin/sh -c ps\n"
PS_HOST = "PID   USER     COMMAND\n" + "".join(f"{pid:>5} root     [kworker/{pid}]\n" for pid in range(1, 60))

# (exercise, what the whole start printed, what the start without the step printed, the right letter):
# the outputs are what the kernel printed for the lab's probes on a real run.
RUNS = [
    ("pivot_root", "\n".join(sorted(ROOTFS)), "\n".join(sorted(HOST_ROOT)), "a"),
    ("proc", PS_WHOLE, "PID   USER     COMMAND\n", "c"),
    ("pid_ns", "my pid: 1\n" + PS_WHOLE, "my pid: 13128\n" + PS_HOST, "b"),
    ("net_ns", net_dev("lo"), net_dev("lo", "ifb0", "eth0"), "b"),
    ("cgroup_ns", CGROUPS_WHOLE, CGROUPS_WHOLE.replace(":/\n", ":/lxc.payload.lab-x-1\n"), "c"),
    ("cap_drop", "CapBnd:\t000001fffcfcffff\n", "CapBnd:\t000001fffeffffff\n", "a"),
    ("hostname", "lab-x-1\n", "vm\n", "c"),
]


def test_every_exercise_has_a_run_here():
    assert sorted(run[0] for run in RUNS) == sorted(EXERCISES)


@pytest.mark.parametrize("name, whole, without, right", RUNS, ids=[run[0] for run in RUNS])
def test_the_right_answer_is_what_the_run_without_the_step_showed(name, whole, without, right):
    assert right_answer(EXERCISES[name], seen(whole), seen(without)) == right


@pytest.mark.parametrize("name, whole, without, right", RUNS, ids=[run[0] for run in RUNS])
def test_a_step_that_changed_nothing_cannot_be_judged(name, whole, without, right):
    with pytest.raises(ValueError, match=f"the lab cannot judge {name}: the whole start matched"):
        right_answer(EXERCISES[name], seen(whole), seen(whole))


def test_an_output_no_choice_describes_cannot_be_judged():
    with pytest.raises(ValueError, match="the one without cgroup_ns no choice"):
        right_answer(EXERCISES["cgroup_ns"], seen(CGROUPS_WHOLE), seen("0::/somewhere/else\n"))


def test_letters_follow_the_choices():
    assert [lab_exercises.letter(i) for i in range(3)] == ["a", "b", "c"]


def test_lxcsm_lab_lists_every_exercise(capsys):
    assert cli_main(["lab"]) == 0
    out = capsys.readouterr().out
    for name, exercise in EXERCISES.items():
        assert f"  {name} " in out
        assert lab.SKIPS[exercise.skip].left_out() in out


def test_lxcsm_lab_refuses_an_answer_that_is_no_choice(capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["lab", "proc", "--answer", "z"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--answer z: answer with one of a, b, c" in err


def test_a_plan_says_which_states_a_lab_start_passes_over_or_cuts_short():
    assert lab.plan(("pivot_root",), "child", "setup_pivot_root", ["pivot_root(...)"]) == [
        "LAB MODE: not entered (pivot_root); instead: every mount of the host's / remounted read-only, nodev"
        " and nosuid, in the container's mount namespace"]
    assert lab.plan(("pivot_root",), "child", "setup_sysctl", ["write"]) == ["LAB MODE: not entered (pivot_root)"]
    assert lab.plan(("cgroup_ns",), "child", "configure", ["send CONFIGURE"]) == [
        "LAB MODE: without unshare(CLONE_NEWCGROUP) (as lxc.namespace.keep = cgroup) (cgroup_ns)", "send CONFIGURE"]
    assert lab.plan(("cgroup_ns",), "child", "setup_mounts", ["mount"]) == ["mount"]
    assert lab.plan((), "child", "configure", ["send CONFIGURE"]) == ["send CONFIGURE"]


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return list(dict.fromkeys(line.split()[4].replace("\\040", " ") for line in mountinfo))


def test_in_place_of_pivot_root_every_mount_is_remounted_read_only_nodev_nosuid(monkeypatch):
    remounted = []
    monkeypatch.setattr(lab.kernel, "mount", lambda source, target, fstype, flags, data=None:
                        remounted.append((source, target, fstype, flags)))
    lab.SKIPS["pivot_root"].instead()
    flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | kernel.MS_NODEV | kernel.MS_NOSUID
    assert remounted == [(None, point, None, flags) for point in _mount_points()]


@pytest.mark.parametrize("error, tolerated", [(errno.ENOENT, True), (errno.EINVAL, True), (errno.EPERM, False)])
def test_a_mount_no_path_reaches_is_left_but_any_other_failure_fails_the_start(monkeypatch, error, tolerated):
    def mount(source, target, fstype, flags, data=None):
        if target == "/":
            raise OSError(error, os.strerror(error), target)

    monkeypatch.setattr(lab.kernel, "mount", mount)
    if tolerated:
        lab.SKIPS["pivot_root"].instead()
    else:
        with pytest.raises(OSError):
            lab.SKIPS["pivot_root"].instead()
