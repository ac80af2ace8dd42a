"""What hooks.environment() gives every hook of a boot, as LXC 5.0.2's lxc_init() sets it, and
verify_start()'s refusal of a start hook that is not a file of the rootfs (verify_start_hooks()).
The same, measured against lxc-start itself: tests/integration/test_hooks.py."""

from __future__ import annotations

import os

import pytest

from lxcsm import hooks
from lxcsm.engine.config import loader
from lxcsm.engine.errors import StateError


def _config(tmp_path, *lines: str):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir(exist_ok=True)
    path = tmp_path / "config"
    path.write_text("".join(f"{line}\n" for line in (f"lxc.rootfs.path = dir:{rootfs}", *lines)))
    return loader.load(str(path), "c1")


def test_the_variables_of_a_plain_config(tmp_path):
    config = _config(tmp_path)
    cgns = {"LXC_CGNS_AWARE": "1"} if os.path.exists("/proc/self/ns/cgroup") else {}
    assert hooks.environment("c1", config, None) == {
        "LXC_NAME": "c1", "LXC_CONFIG_FILE": str(tmp_path / "config"),
        "LXC_ROOTFS_MOUNT": str(tmp_path / "rootfs"), "LXC_ROOTFS_PATH": str(tmp_path / "rootfs"),
        **cgns, "LXC_LOG_LEVEL": "ERROR", "LXC_HOOK_VERSION": "0"}


@pytest.mark.parametrize("lines, option, level", [
    ((), None, "ERROR"),                            # neither: LXC's default
    ((), "DEBUG", "DEBUG"),                         # -l alone
    (("lxc.log.level = INFO",), "DEBUG", "INFO"),   # lxc.log.level wins over -l (measured)
    (("lxc.log.level = 1",), None, "DEBUG"),        # a number: its name
])
def test_the_log_level_is_lxc_log_level_else_the_option_else_error(tmp_path, lines, option, level):
    assert hooks.environment("c1", _config(tmp_path, *lines), option)["LXC_LOG_LEVEL"] == level


def test_console_rootfs_mount_and_version_one(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    env = hooks.environment("c1", _config(tmp_path, "lxc.console.path = none",
                                          f"lxc.console.logfile = {tmp_path}/console.log",
                                          f"lxc.rootfs.mount = {mount}", "lxc.hook.version = 1"), None)
    assert (env["LXC_CONSOLE"], env["LXC_CONSOLE_LOGPATH"], env["LXC_ROOTFS_MOUNT"], env["LXC_HOOK_VERSION"]) == (
        "none", f"{tmp_path}/console.log", str(mount), "1")


def test_a_start_hook_must_be_an_executable_file_of_the_rootfs_by_its_whole_value(tmp_path):
    hook = tmp_path / "rootfs" / "hook.sh"
    config = _config(tmp_path, "lxc.hook.start = /hook.sh")
    with pytest.raises(StateError, match=r"config:2: lxc.hook.start: start hook '/hook.sh' not found in container"):
        hooks.verify_start(config, str(tmp_path / "rootfs"))
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    hooks.verify_start(config, str(tmp_path / "rootfs"))
    with pytest.raises(StateError, match=r"start hook '/hook.sh arg' not found"):
        hooks.verify_start(_config(tmp_path, "lxc.hook.start = /hook.sh arg"), str(tmp_path / "rootfs"))
    # Only the first start hook is looked at, as by LXC.
    hooks.verify_start(_config(tmp_path, "lxc.hook.start = /hook.sh", "lxc.hook.start = /bin/sh -c true"),
                       str(tmp_path / "rootfs"))
