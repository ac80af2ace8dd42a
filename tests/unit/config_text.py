"""Helpers the config tests share: a config written to tmp_path and loaded, and texts
used by more than one test module."""

import sys

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


def lines_run(call) -> int:
    """How many lines of Python `call()` runs (sys.settrace's line events, comprehensions
    and generators included): a measure of work that does not depend on the machine's
    speed or load, so a test can compare the work of two inputs without timing them."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return trace

    before = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(before)
    return count
