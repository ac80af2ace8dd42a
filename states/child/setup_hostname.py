"""setup_hostname (child) - name the container.

Replaces LXC's setup_utsname() (conf.c).

Afterwards the container's own uts namespace carries lxc.uts.name as its
hostname; the host's is untouched.  Without lxc.uts.name the container keeps
the name it inherited, as under LXC.
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    name = ctx.request.config.uts_name
    if name:
        socket.sethostname(name)
        ctx.log.trace("hostname set", hostname=name)
    return "hostname_set"


def plan(request: StartRequest) -> list[str]:
    name = request.config.uts_name
    return [f"sethostname({name})"] if name else ["keep the inherited hostname (lxc.uts.name unset)"]
