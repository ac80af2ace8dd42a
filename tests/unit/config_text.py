"""Helpers the config tests share: a config written to tmp_path and loaded, and texts
used by more than one test module."""

import pytest

from lxcsm.engine.config.loader import load
from lxcsm.engine.config.model import ConfigError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def load_text(tmp_path, text, overrides=(), name="bb"):
    return load(write(tmp_path / "config", text), name, overrides)


def error_of(tmp_path, text, overrides=()):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, overrides)
    return caught.value


COMMON_SECCOMP = """\
2
denylist
reject_force_umount  # comment this to allow umount -f;  not recommended
[all]
kexec_load errno 1
open_by_handle_at errno 1
init_module errno 1
finit_module errno 1
delete_module errno 1
"""
