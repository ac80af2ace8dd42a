"""What the container sees of the start order: lxcsm against lxc-start 5.0.2, same container.

A probing hook of every kind (fixtures/hook-probe.sh) appends its kind, its NoNewPrivs and Seccomp, and the
container's /dev as it finds it, to a file; init writes its own NoNewPrivs, boot id and
mount table to another.  The same container is started by lxc-start and by lxcsm, with LXC's
common.seccomp policy, lxc.no_new_privs = 1 and cgroup:mixed (issue 11):
* the hooks run in LXC's order - start before start-host - and the start hook already
  under the filter and no_new_privs, with /dev filled only after the mount and autodev hooks;
* init has NoNewPrivs 1, a boot id of its own every boot (never the host's), the same mount
  points as under LXC, every one shared, the boot id's in /dev's peer group (the bind of a
  file on /dev's tmpfs), and no cgroup mounts: it keeps CAP_SYS_ADMIN in its own cgroup
  namespace, so LXC leaves /sys/fs/cgroup to its init (systemd mounts its own layout).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

# lxc-start runs here too: its monitors leave an lxc.pivot cgroup behind, which the fixture removes.
pytestmark = [pytest.mark.root, pytest.mark.usefixtures("lxc_pivot_removed")]

PROBE = Path(__file__).resolve().parents[2] / "fixtures" / "hook-probe.sh"
INIT = ("{ grep NoNewPrivs: /proc/self/status; cat /proc/sys/kernel/random/boot_id; "
        "cut -d' ' -f5,7 /proc/self/mountinfo; echo end; } > /init.out")
ORDER = ["pre-start", "pre-mount", "mount", "autodev", "start", "start-host"]


def _boot(c, lxc: bool) -> tuple[dict[str, list[str]], list[str], str, dict[str, str]]:
    """Start `c` once in the foreground: (what each hook saw, the hooks' order, init's
    NoNewPrivs and boot id line, init's mounts: mount point -> propagation)."""
    for name in ("probe.log", "init.out"):
        (c.rootfs / name).unlink(missing_ok=True)
    if lxc:
        result = subprocess.run(["lxc-start", "-n", c.name, "-P", c.lxcpath, "-F", "--", "/bin/sh", "-c", INIT],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    else:
        result = c.start_fg("/bin/sh", "-c", INIT, options=("-l", "WARN"))
        assert "no_new_privs" not in result.stderr   # honoured: never "not supported yet"
    assert result.returncode == 0, result.stderr
    assert c.monitor_exited()
    probes = [line.split() for line in (c.rootfs / "probe.log").read_text().splitlines()]
    nnp, boot_id, *mounts, end = (c.rootfs / "init.out").read_text().splitlines()
    assert end == "end"
    return ({p[0]: p[1:] for p in probes}, [p[0] for p in probes], f"{nnp.split()[-1]} {boot_id}",
            dict(line.split() for line in mounts))


def test_hooks_seccomp_no_new_privs_boot_id_propagation_and_cgroups_as_under_lxc_start(make_container):
    c = make_container("busybox")
    (c.rootfs / "probe.sh").write_text(PROBE.read_text())
    (c.rootfs / "probe.sh").chmod(0o755)
    c.config.write_text(c.config.read_text() + "\n".join([
        "lxc.mount.auto = proc:mixed sys:ro cgroup:mixed",
        "lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp",
        "lxc.no_new_privs = 1",
        "lxc.pty.max = 4", "lxc.tty.max = 1",   # without pty.max LXC mounts no devpts; lxcsm always does
        *(f"lxc.hook.{kind} = {c.rootfs}/probe.sh" for kind in ORDER if kind != "start"),
        "lxc.hook.start = /probe.sh", ""]))

    lxc_seen, lxc_order, lxc_init, lxc_mounts = _boot(c, lxc=True)
    boots = [_boot(c, lxc=False) for _ in range(2)]

    assert lxc_order == ORDER
    host_boot_id = open("/proc/sys/kernel/random/boot_id").read().strip()
    boot_ids = {lxc_init.split()[1]} | {init.split()[1] for _seen, _order, init, _mounts in boots}
    assert len(boot_ids) == 3 and host_boot_id not in boot_ids    # a fresh one every boot, as LXC
    for seen, order, init, mounts in boots:
        assert order == lxc_order
        for kind in ORDER:   # NoNewPrivs and Seccomp as each hook had them under LXC
            assert (kind, seen[kind][:2]) == (kind, lxc_seen[kind][:2])
        assert seen["start"][:2] == ["NoNewPrivs:1", "Seccomp:2"]
        for kind in ("mount", "autodev", "start"):   # /dev as the container's hooks find it
            assert (kind, seen[kind][2]) == (kind, lxc_seen[kind][2])
        assert "null" not in seen["autodev"][2] and "null" in seen["start"][2]
        assert init.split()[0] == lxc_init.split()[0] == "1"     # NoNewPrivs of init
        assert sorted(mounts) == sorted(lxc_mounts)
        assert all(p.startswith("shared:") for p in mounts.values()), mounts
        assert mounts["/proc/sys/kernel/random/boot_id"] == mounts["/dev"]
        assert not any(point.startswith("/sys/fs/cgroup") for point in mounts)
