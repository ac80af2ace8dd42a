"""setup_hostname (child) - name the container.

Replaces LXC's setup_utsname() (conf.c).

Afterwards the container's own uts namespace carries lxc.uts.name as its
hostname; the host's is untouched.  Without lxc.uts.name the container keeps
the name it inherited, as under LXC.
"""

import socket


def enter(ctx) -> str:
    name = ctx.request.config.uts_name
    if name:
        socket.sethostname(name)
        ctx.log.trace("hostname set", hostname=name)
    return "hostname_set"


def plan(request) -> list[str]:
    name = request.config.uts_name
    return [f"sethostname({name})"] if name else ["keep the inherited hostname (lxc.uts.name unset)"]
