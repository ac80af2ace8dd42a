"""What each hook was given in the recorded start of the hook container (tools/record-traces
--lxc hooks: fixtures/traces/*-hook-probe.env, fixtures/hook-probe.sh's records of every hook's
arguments, ids, cwd, open files and environment): lxcsm's and lxc-start 5.0.2's, compared whole
after the normalisations tests/integration/test_hooks.py documents (pids, fd numbers, where the
rootfs is mounted, a socket lxc-start leaks into start-host hooks).  That test compares live
starts; this one keeps the recorded pair honest without root."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_hooks import normalised

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"


def test_the_recorded_hooks_were_given_what_lxc_start_gave_its_own():
    lxc = normalised((TRACES / "lxc-5.0.2-hook-probe.env").read_text().splitlines(), lxc=True)
    ours = normalised((TRACES / "lxcsm-hook-probe.env").read_text().splitlines(), lxc=False)
    assert ours == lxc
    # The record is of every kind the hook container has, each with LXC's variables.
    kinds = [line.split()[0] for line in lxc if " argv 0: " in line]
    assert kinds == ["pre-start", "pre-mount", "mount", "autodev", "start", "start-host"]
    for kind in kinds:
        assert {f"{kind} env: LXC_HOOK_VERSION='0'", f"{kind} env: LXC_LOG_LEVEL='TRACE'",
                f"{kind} env: LXC_NAME='hk'", f"{kind} cwd: /"} <= set(lxc), kind
    assert "start env: container_ttys='pts/1'" in lxc and "start-host env: LXC_PID='PID'" in lxc
