"""lxcsm cgroup / freeze / info without a container: argument shapes, key checks, the freezer
files, and lxc-info's humanized sizes (tests/integration/test_runtime_cgroups.py runs them for real)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from lxcsm.engine.cli import cgroup, info
from lxcsm.engine.cli import main as cli_main
from lxcsm.engine.linux import cgroup_files


@pytest.mark.parametrize("argv, expected", [
    (["box", "pids.max"], ("box", "pids.max", None)),
    (["box", "pids.max", "20"], ("box", "pids.max", "20")),
    (["-n", "box", "pids.max"], ("box", "pids.max", None)),
    (["-n", "box", "pids.max", "20"], ("box", "pids.max", "20")),
])
def test_cgroup_takes_lxc_cgroups_words(argv, expected):
    from lxcsm.engine.cli import parser_for
    _module, parser = parser_for("cgroup")
    assert cgroup.split_words(parser, parser.parse_args(argv)) == expected


@pytest.mark.parametrize("argv, message", [
    (["box"], "give the container's name and a cgroup file"),
    (["box", "pids.max", "1", "2"], "too many arguments: 2"),
    (["box", "../memory.max"], "not a cgroup file name"),
    (["box", ".hidden"], "not a cgroup file name"),
])
def test_cgroup_refuses_bad_words_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        cli_main(["cgroup", *argv])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("key", ["memory.max", "pids.current", "cgroup.freeze", "cpuacct.usage"])
def test_cgroup_file_names_are_accepted(key):
    assert cgroup_files.check_key(key) == key
    assert cgroup_files.controller_of(key) == key.split(".")[0]


@pytest.mark.parametrize("value, shown", [
    # lxc_info.c size_humanize, worked by hand for each branch
    (0, "0 bytes"), (1024, "1024 bytes"), (1025, "1.00 KiB"), (389120, "380.00 KiB"),
    (1536, "1.50 KiB"), (1048577, "1.00 MiB"), (64 << 20, "64.00 MiB"),
    ((3 << 30) + (1 << 29), "3.49 GiB"),   # sic: LXC divides the rest by 10737419 and truncates
])
def test_sizes_are_humanized_as_lxc_info_does(value, shown):
    assert info._size(value) == shown


def test_figures_of_cgroup2_files_are_read_as_lxc_info_reads_v1s():
    assert info._blkio_total("8:0 Read 10\n8:0 Write 20\nTotal 30\n") == 30
    assert info._io_stat_total("8:0 rbytes=100 wbytes=20 rios=1 wios=2\n253:0 rbytes=1 wbytes=0\n") == 121
    assert info._field("usage_usec 1500\nuser_usec 1000\n", "usage_usec") == 1500
    assert info._field("anon 5\nkernel 4096\n", "kernel") == 4096
    assert info._field("anon 5\n", "kernel") is None


@pytest.fixture
def freezer_dir(tmp_path):
    """A directory standing in for a cgroup, with the freezer files of both versions; its fd."""
    (tmp_path / "freezer.state").write_text("THAWED")
    (tmp_path / "cgroup.freeze").write_text("0")
    (tmp_path / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def test_freeze_v1_writes_the_state_and_is_done_when_the_freezer_says_so(freezer_dir):
    path, fd = freezer_dir
    assert cgroup_files.freeze(fd, 1, True, timeout=1)           # a file keeps what is written: done at once
    assert (path / "freezer.state").read_text() == "FROZEN"
    assert cgroup_files.frozen(fd, 1)


def test_freeze_v2_waits_for_cgroup_events(freezer_dir):
    path, fd = freezer_dir
    assert not cgroup_files.freeze(fd, 2, True, timeout=0.05)    # the "kernel" never said frozen
    assert (path / "cgroup.freeze").read_text() == "1"

    def kernel_done():
        time.sleep(0.1)
        (path / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    thread = threading.Thread(target=kernel_done)
    thread.start()
    assert cgroup_files.freeze(fd, 2, True, timeout=10)
    thread.join()


def test_a_directory_outside_every_cgroup_mount_is_refused(freezer_dir):
    _path, fd = freezer_dir
    with pytest.raises(ValueError, match="is not in a cgroup hierarchy mounted here"):
        cgroup_files.check_directory(fd)


def test_info_of_a_stopped_container_and_of_none(tmp_path, capsys):
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "config").write_text("lxc.uts.name = box\n")
    assert cli_main(["info", "box", "-P", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "Name:           box\nState:          STOPPED\n"
    assert cli_main(["info", "-s", "-H", "box", "-P", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "STOPPED\n"
    assert cli_main(["info", "nobox", "-P", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "lxcsm: nobox doesn't exist\n"
