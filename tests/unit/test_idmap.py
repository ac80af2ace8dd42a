"""lxc.idmap's values (engine/config/values.py) and the map files' content (engine/linux/idmap.py)."""

from __future__ import annotations

import glob
import os

import pytest

from lxcsm.engine.config.values import IdMap, parse_idmap
from lxcsm.engine.linux import idmap


def test_an_idmap_line_reads_as_kind_inside_outside_count():
    assert parse_idmap("u 0 100000 65536") == IdMap("u", 0, 100000, 65536)
    assert parse_idmap(" g\t1000  1000 1 ") == IdMap("g", 1000, 1000, 1)


@pytest.mark.parametrize("value,error", [
    ("x 0 0 1", "u|g NSID HOSTID RANGE"),
    ("u 0 100000", "u|g NSID HOSTID RANGE"),
    ("u 0 -1 5", "u|g NSID HOSTID RANGE"),
    ("u 0 100000 0", "at least 1"),
    ("u 0 4294967290 10", "must end below 4294967295"),
])
def test_an_idmap_the_kernel_could_not_take_is_refused(value, error):
    with pytest.raises(ValueError, match=error):
        parse_idmap(value)


def test_a_range_maps_the_ids_it_covers_and_no_other():
    mapped = IdMap("u", 1000, 300000, 10)
    assert [mapped.host_id(i) for i in (999, 1000, 1009, 1010)] == [None, 300000, 300009, None]


def test_the_map_files_content_is_one_line_a_range():
    assert idmap.map_text([(0, 100000, 1000), (1000, 300000, 10)]) == "0 100000 1000\n1000 300000 10\n"


def test_a_map_longer_than_the_kernel_takes_is_refused_before_any_write():
    with pytest.raises(ValueError, match="at most 4096"):
        idmap.write_map(1, "u", "0 100000 1\n" * 400)


def test_cgroup2_delegates_what_the_kernel_lists_and_v1_adds_tasks(tmp_path, monkeypatch):
    listing = tmp_path / "delegate"
    listing.write_text("cgroup.procs\ncgroup.threads\ncgroup.subtree_control\nmemory.oom.group\n")
    monkeypatch.setattr(idmap, "DELEGATE_LIST", str(listing))
    assert idmap.delegated_files(2) == ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control",
                                        "memory.oom.group"]
    assert idmap.delegated_files(1) == ["cgroup.procs", "tasks"]
    monkeypatch.setattr(idmap, "DELEGATE_LIST", str(tmp_path / "absent"))
    assert idmap.delegated_files(2) == ["cgroup.procs"]



def test_the_first_directory_the_mapped_root_cannot_search_is_found(monkeypatch):
    from types import SimpleNamespace

    from lxcsm.engine.config import preflight
    tree = {"/srv": (0, 0, 0o755), "/srv/closed": (0, 0, 0o700),
            "/srv/closed/rootfs": (100000, 100000, 0o700), "/srv/group": (0, 100000, 0o750),
            "/srv/mapped": (100005, 100007, 0o700)}
    fake_os = SimpleNamespace(path=os.path, stat=lambda path: SimpleNamespace(
        st_uid=tree[path][0], st_gid=tree[path][1], st_mode=0o040000 | tree[path][2]))
    monkeypatch.setattr(preflight, "os", fake_os)
    maps = [IdMap("u", 0, 100000, 65536), IdMap("g", 0, 100000, 65536)]
    find = preflight._unsearchable_ancestor
    assert find("/srv/closed/rootfs", 100000, 100000, maps) == ("/srv/closed", 0o700)
    assert find("/srv/group", 100000, 100000, maps) is None           # the group's x bit
    assert find("/srv/group", 100000, 200000, maps) == ("/srv/group", 0o750)
    # A directory whose owner and group the namespace maps is searched with its root's capabilities.
    assert find("/srv/mapped", 100000, 100000, maps) is None


SHIPPED = sorted(glob.glob("/usr/share/lxc/config/*userns.conf"))


@pytest.mark.skipif(not SHIPPED, reason="LXC's configs are not installed")
@pytest.mark.parametrize("shipped", SHIPPED)
def test_lxcs_shipped_userns_configs_load_as_lxc_reads_them(tmp_path, shipped):
    """userns.conf ends in lxc.include of userns.conf.d/, which LXC does not ship: a directory
    that is not there includes nothing, as under LXC.  Its settings take effect."""
    from lxcsm.engine.config import loader
    (tmp_path / "rootfs").mkdir()
    path = tmp_path / "config"
    path.write_text(f"lxc.rootfs.path = dir:{tmp_path}/rootfs\nlxc.cap.drop = sys_module\n"
                    f"lxc.include = {shipped}\nlxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n")
    config = loader.load(str(path), "c1")
    assert config.id_maps() == (IdMap("u", 0, 100000, 65536), IdMap("g", 0, 100000, 65536))
    assert (config.container_root_id("u"), config.container_root_id("g")) == (100000, 100000)
    assert "user" in config.namespaces()
    if shipped.endswith("/userns.conf"):
        assert config.dropped_capabilities(40) == []   # "Start with a full set of capabilities"
        assert config.mount_sys == "rw"


@pytest.fixture
def helpers(monkeypatch, tmp_path):
    """newuidmap/newgidmap as preflight finds them (found: privileged), and root's lines of
    /etc/subuid and /etc/subgid, files of the test's."""
    from lxcsm.engine.config import preflight, unprivileged
    state = {"installed": True}
    monkeypatch.setattr(preflight.idmap, "find_helper",
                        lambda kind: f"/usr/bin/new{kind}idmap" if state["installed"] else None)
    monkeypatch.setattr(preflight.idmap, "helper_privileged", lambda path: True)
    files = {"u": tmp_path / "subuid", "g": tmp_path / "subgid"}
    for file in files.values():
        file.write_text("someone:100000:65536\n")
    monkeypatch.setattr(unprivileged, "SUBORDINATE_FILES", {kind: str(file) for kind, file in files.items()})
    state["files"] = files
    return state


def _config(tmp_path, *lines):
    from lxcsm.engine.config import loader
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    path = tmp_path / "config"
    path.write_text(f"lxc.rootfs.path = dir:{tmp_path}/rootfs\n" + "".join(f"{line}\n" for line in lines))
    return loader.load(str(path), "c1")


MAPPED = ("lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536")


def test_with_the_map_helpers_installed_roots_maps_must_be_roots_ranges_as_lxc_wants(tmp_path, helpers):
    from lxcsm.engine.config import preflight
    from lxcsm.engine.config.model import ConfigError
    config = _config(tmp_path, *MAPPED)

    with pytest.raises(ConfigError) as refused:
        preflight._check_roots_ranges(config)
    assert refused.value.line == 2 and "usermod --add-subuids 100000-165535 root" in str(refused.value)

    for file in helpers["files"].values():
        file.write_text("root:100000:65536\n")
    preflight._check_roots_ranges(config)   # root's own ranges: what newuidmap would write


def test_without_the_helpers_or_mapping_the_hosts_root_root_writes_any_map_as_lxc(tmp_path, helpers):
    from lxcsm.engine.config import preflight
    preflight._check_roots_ranges(_config(tmp_path, "lxc.idmap = u 0 0 65536", "lxc.idmap = g 0 0 65536"))
    helpers["installed"] = False
    preflight._check_roots_ranges(_config(tmp_path, *MAPPED))


@pytest.mark.parametrize("lines,expected", [
    ((), {"mnt", "pid", "uts", "ipc", "net"}),
    (MAPPED, {"user", "mnt", "pid", "uts", "ipc", "net"}),
    ((*MAPPED, "lxc.net.0.type = none"), {"user", "mnt", "pid", "uts", "ipc"}),
    ((*MAPPED, "lxc.namespace.keep = ipc"), {"user", "mnt", "pid", "uts", "net"}),
    ((*MAPPED, "lxc.namespace.clone = mnt pid user cgroup"), {"user", "mnt", "pid"}),
], ids=["no-idmap", "idmap", "net-none", "keep-ipc", "clone"])
def test_the_containers_namespaces_are_lxcs_with_a_user_namespace_for_an_idmap(tmp_path, lines, expected):
    config = _config(tmp_path, *lines)
    assert config.namespaces() == expected   # never cgroup: the child unshares it after STARTUP
    assert (config.container_root_id("u"), config.container_root_id("g")) == ((100000, 100000) if lines else
                                                                             (None, None))
