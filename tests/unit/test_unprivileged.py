"""A start by an ordinary user: the default LXCPATH, what preflight asks of the host for it
(engine/config/unprivileged.py) and how its id maps are written (engine/linux/idmap.py).

Runs as anyone: the user's ids, /etc/subuid, the helpers and the cgroup layout are the
test's (monkeypatched), never the machine's.
"""

from __future__ import annotations

import os
import stat

import pytest

from lxcsm.engine.config import loader, lxcpath, unprivileged
from lxcsm.engine.config.model import ConfigError
from lxcsm.engine.linux import cgroups, idmap

UID, GID, FIRST = 1000, 1000, 200000
MAPS = f"lxc.idmap = u 0 {FIRST} 65536\nlxc.idmap = g 0 {FIRST} 65536\n"


def test_roots_default_lxcpath_is_var_lib_lxc_and_a_users_is_in_its_home(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert lxcpath.default_lxcpath() == "/var/lib/lxc"
    monkeypatch.setattr(os, "geteuid", lambda: UID)
    monkeypatch.setenv("HOME", "/home/ada")
    assert lxcpath.default_lxcpath() == "/home/ada/.local/share/lxc"
    monkeypatch.delenv("HOME")
    assert lxcpath.default_lxcpath() == "/.local/share/lxc"   # LXC's "/" without a HOME


def test_subordinate_ranges_are_the_users_by_name_or_uid(tmp_path):
    listing = tmp_path / "subuid"
    listing.write_text("ada:200000:65536\nbob:300000:65536\n1000:500000:10\nbroken line\n")
    assert unprivileged.subordinate_ranges(str(listing), "ada", 1000) == [(200000, 65536), (500000, 10)]
    assert unprivileged.subordinate_ranges(str(tmp_path / "absent"), "ada", 1000) == []


def test_a_helper_writes_the_map_as_its_arguments(tmp_path):
    """newuidmap PID INSIDE OUTSIDE COUNT..., as LXC runs it; its complaint is the error."""
    record = tmp_path / "argv"
    helper = tmp_path / "newuidmap"
    helper.write_text(f'#!/bin/sh\necho "$@" > {record}\n[ "$2" = 0 ] || {{ echo "newuidmap: uid range'
                      f' [$3-...) -> [$2-...) not allowed" >&2; exit 1; }}\n')
    helper.chmod(0o755)
    idmap.write_map_with_helper(4242, "u", [(0, FIRST, 65536), (65536, UID, 1)], str(helper))
    assert record.read_text().split() == ["4242", "0", str(FIRST), "65536", "65536", str(UID), "1"]
    with pytest.raises(OSError, match="not allowed"):
        idmap.write_map_with_helper(4242, "u", [(1, FIRST, 10)], str(helper))


def test_a_helper_is_privileged_when_setuid(tmp_path):
    helper = tmp_path / "newgidmap"
    helper.write_text("")
    helper.chmod(0o755)
    assert not idmap.helper_privileged(str(helper))
    helper.chmod(0o755 | stat.S_ISUID)
    assert idmap.helper_privileged(str(helper))


@pytest.fixture
def user_host(tmp_path, monkeypatch):
    """The caller is uid/gid 1000 ("ada") with FIRST.. in subuid/subgid, setuid helpers on PATH,
    on a cgroup2-only host in a cgroup delegated to it."""
    monkeypatch.setattr(os, "geteuid", lambda: UID)
    monkeypatch.setattr(os, "getegid", lambda: GID)
    monkeypatch.setattr(unprivileged.pwd, "getpwuid", lambda uid: type("pw", (), {"pw_name": "ada"}))
    for kind in ("u", "g"):
        listing = tmp_path / f"sub{kind}id"
        listing.write_text(f"ada:{FIRST}:65536\n")
        monkeypatch.setitem(unprivileged.SUBORDINATE_FILES, kind, str(listing))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in idmap.HELPERS.values():
        (bin_dir / name).write_text("")
        (bin_dir / name).chmod(0o755 | stat.S_ISUID)
    monkeypatch.setenv("PATH", str(bin_dir))
    mine = tmp_path / "cgroup" / "user.scope"
    mine.mkdir(parents=True)
    (mine / "cgroup.procs").write_text("")
    monkeypatch.setattr(idmap, "DELEGATE_LIST", str(tmp_path / "absent"))   # cgroup.procs alone
    unified = cgroups.Hierarchy(str(tmp_path / "cgroup"), (), 2, str(mine), str(mine))
    monkeypatch.setattr(cgroups, "hierarchies", lambda: [unified])
    (tmp_path / "rootfs").mkdir()

    def config(text: str = MAPS):
        path = tmp_path / "config"
        path.write_text(f"lxc.rootfs.path = dir:{tmp_path}/rootfs\n{text}")
        return loader.load(str(path), "c1")
    return config


def refusal(config) -> str:
    with pytest.raises(ConfigError) as refused:
        unprivileged.check(config)
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_a_user_with_the_range_helpers_and_a_delegated_cgroup_may_start(user_host):
    unprivileged.check(user_host())
    unprivileged.check(user_host(f"lxc.idmap = u 0 {UID} 1\nlxc.idmap = g 0 {GID} 1\n"))   # its own ids
    unprivileged.check(user_host(MAPS + f"lxc.idmap = u 65536 {UID} 1\n"))   # the ranges and its own uid


def test_a_user_start_without_lxc_idmap_is_refused_naming_subuid(user_host):
    assert "needs its own user namespace" in refusal(user_host(""))
    assert "/etc/subuid" in refusal(user_host(""))


def test_ids_outside_the_users_ranges_are_refused_with_the_usermod_that_gives_them(user_host):
    line = refusal(user_host(f"lxc.idmap = u 0 {FIRST} 65536\nlxc.idmap = g 0 100000 65536\n"))
    assert "lxc.idmap" in line and f"{FIRST}-{FIRST + 65535}" in line
    assert "host gids 100000-165535 are not ada's" in line and "usermod --add-subgids 100000-165535 ada" in line


def test_missing_helpers_name_the_package(user_host, monkeypatch, tmp_path):
    os.unlink(tmp_path / "bin" / "newgidmap")
    assert "newgidmap is not installed" in refusal(user_host()) and "apt-get install uidmap" in refusal(user_host())
    (tmp_path / "bin" / "newgidmap").write_text("")
    (tmp_path / "bin" / "newgidmap").chmod(0o755)
    assert "neither setuid root nor has file capabilities" in refusal(user_host())


def test_a_veth_is_refused_naming_lxc_user_nic(user_host):
    line = refusal(user_host(MAPS + "lxc.net.0.type = veth\n"))
    assert "lxc.net.0.type" in line and "lxc-user-nic" in line and "lxc.net.0.type = empty" in line
    unprivileged.check(user_host(MAPS + "lxc.net.0.type = empty\n"))


def test_an_idmapped_bind_is_refused_as_root_only(user_host, tmp_path):
    line = refusal(user_host(MAPS + f"lxc.mount.entry = {tmp_path} srv none bind,idmap=container 0 0\n"))
    assert f"{tmp_path}/config:4: lxc.mount.entry: idmap= needs root on the host" in line


def test_a_host_with_v1_controllers_is_refused(user_host, monkeypatch, tmp_path):
    v1 = cgroups.Hierarchy(str(tmp_path), ("memory",), 1, str(tmp_path), str(tmp_path))
    found = [v1, *cgroups.hierarchies()]
    monkeypatch.setattr(cgroups, "hierarchies", lambda: found)
    line = refusal(user_host())
    assert "cgroup v1 hierarchies (memory)" in line and "cgroup2-only host" in line


def test_a_cgroup_not_delegated_to_the_user_is_refused_with_the_systemd_run_that_makes_one(
        user_host, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: not path.endswith("cgroup.procs"))
    line = refusal(user_host())
    assert "is not delegated to you" in line and "systemd-run --user --scope -p Delegate=yes" in line


def test_the_plan_of_an_ordinary_users_start_names_the_helpers_and_the_leaf(user_host):
    from lxcsm.engine.start.context import StartRequest
    from lxcsm.states.monitor import monitor_cgroup, write_id_maps
    config = user_host(MAPS + f"lxc.idmap = u 65536 {UID} 1\n")
    request = StartRequest(name="c1", lxcpath="/tmp", config=config, command=config.init_cmd, foreground=False)

    assert write_id_maps.plan(request)[:2] == [f"newuidmap CHILD 0 {FIRST} 65536 65536 {UID} 1",
                                               f"newgidmap CHILD 0 {FIRST} 65536"]
    assert monitor_cgroup.plan(request)[0] == ("move the processes of the (delegated) cgroup we start "
                                               "in to init below it")
