"""setup_hostname (child) - name the container, and give it a keyring of its own.

Replaces LXC's setup_utsname() and lxc_setup_keyring() (conf.c), which
lxc_setup() runs one after the other.

Afterwards the container's own uts namespace carries lxc.uts.name as its
hostname; the host's is untouched.  Without lxc.uts.name the container keeps
the name it inherited, as under LXC.  In a uts namespace joined with
lxc.namespace.share.uts the hostname is left as it is, as LXC's lxc_setup()
leaves it: it is the other container's (or process's) too.

And the child, so init and all it runs, has a new empty session keyring
(keyctl JOIN_SESSION_KEYRING): no key of the session lxcsm was started from
is within the container's reach.  lxc.keyring.session = 1 leaves the
inherited one, as LXC 5.0 does (its parser stores 1 as "disable", whatever
its manual says).  A kernel without keyrings, or one that refuses (ENOSYS,
EACCES, EPERM), leaves the inherited keyring, as LXC does; so does any other
error, with a warning.
"""

from __future__ import annotations

import errno
import socket

from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    name = ctx.request.config.uts_name
    if "uts" in ctx.request.config.namespace_shares():
        ctx.log.trace("hostname kept", reason="lxc.namespace.share.uts")
    elif name:
        socket.sethostname(name)
        ctx.log.trace("hostname set", hostname=name)
    if _new_keyring(ctx.request.config):
        try:
            ctx.log.trace("session keyring joined", serial=kernel.join_new_session_keyring())
        except OSError as err:
            level = ctx.log.debug if err.errno in (errno.ENOSYS, errno.EACCES, errno.EPERM) else ctx.log.warn
            level("session keyring kept", error=err.strerror)
    return "hostname_set"


def _new_keyring(config) -> bool:
    return config.get_item("lxc.keyring.session") != "1"


def plan(request: StartRequest) -> list[str]:
    name = request.config.uts_name
    if "uts" in request.config.namespace_shares():
        steps = ["keep the joined uts namespace's hostname (lxc.namespace.share.uts)"]
    else:
        steps = [f"sethostname({name})"] if name else ["keep the inherited hostname (lxc.uts.name unset)"]
    if _new_keyring(request.config):
        return steps + ["keyctl(JOIN_SESSION_KEYRING): a new, empty session keyring"]
    return steps + ["keep the inherited session keyring (lxc.keyring.session = 1)"]
