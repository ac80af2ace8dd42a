"""setup_hostname (child) - name the container, and give it a keyring of its own.

Replaces LXC's setup_utsname() and lxc_setup_keyring() (conf.c), which
lxc_setup() runs one after the other.

Afterwards the container's own uts namespace carries lxc.uts.name as its
hostname; the host's is untouched.  Without lxc.uts.name the container keeps
the name it inherited, as under LXC.  In a uts namespace joined with
lxc.namespace.share.uts the hostname is left as it is, as LXC's lxc_setup()
leaves it: it is the other container's (or process's) too.  So it is in the
host's own uts namespace (lxc.namespace.keep = uts, or an
lxc.namespace.clone without uts), where LXC 5.0.2 would set lxc.uts.name as
the host's hostname: lxcsm never renames the host.

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
    kept = _why_kept(ctx.request.config)
    if kept:
        ctx.log.trace("hostname kept", reason=kept)
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


def _why_kept(config) -> str | None:
    """Why the uts namespace the child is in is not the container's own to name, or None."""
    if "uts" in config.namespace_shares():
        return "lxc.namespace.share.uts"
    if "uts" not in config.namespaces():   # the host's: its hostname is not the container's
        return "no uts namespace of its own (lxc.namespace.keep or lxc.namespace.clone)"
    return None


def _new_keyring(config) -> bool:
    return config.get_item("lxc.keyring.session") != "1"


def plan(request: StartRequest) -> list[str]:
    name = request.config.uts_name
    kept = _why_kept(request.config)
    if kept:
        steps = [f"keep the uts namespace's hostname ({kept})"]
    else:
        steps = [f"sethostname({name})"] if name else ["keep the inherited hostname (lxc.uts.name unset)"]
    if _new_keyring(request.config):
        return steps + ["keyctl(JOIN_SESSION_KEYRING): a new, empty session keyring"]
    return steps + ["keep the inherited session keyring (lxc.keyring.session = 1)"]
