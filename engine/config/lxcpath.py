"""The default LXCPATH: where a container NAME lives when no -P is given.

As LXC 5.0.2 decides it (initutils.c, lxc_global_config_value()): root's containers are in
/var/lib/lxc (Debian's LXCPATH), any other user's in ~/.local/share/lxc ($HOME, or / when
it is unset).  Kept apart from the rest of engine/config so that every subcommand can ask
it at import time for the price of `os`.
"""

from __future__ import annotations

import os

ROOT_LXCPATH = "/var/lib/lxc"


def default_lxcpath() -> str:
    if os.geteuid() == 0:
        return ROOT_LXCPATH
    return os.path.join(os.environ.get("HOME") or "/", ".local/share/lxc")
