"""setup_capabilities (child) - take away the capabilities init must never have.

Replaces LXC's setup_caps() and dropcaps_except() (conf.c), the last steps
of lxc_setup().

Afterwards the kernel sees the child's capability bounding set without the
capabilities of lxc.cap.drop - or, with lxc.cap.keep, without every
capability it does not name ("none" forgets the names before it; "none"
alone keeps nothing).  The child keeps its own capabilities until it
execs; init, and everything it ever runs, can never hold a dropped one,
whatever its uid or file capabilities.  Without either key the set is
left whole, as under LXC.
"""

from __future__ import annotations

from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    caps = ctx.request.config.dropped_capabilities(kernel.last_capability())
    for cap in caps:
        kernel.drop_bounding_capability(cap)
    if caps:
        names = {number: name for name, number in kernel.CAPABILITIES.items()}
        ctx.log.trace("capabilities dropped", caps=" ".join(names.get(c, str(c)) for c in caps))
    return "capabilities_set"


def plan(request: StartRequest) -> list[str]:
    caps = request.config.dropped_capabilities(kernel.last_capability())
    names = {number: name for name, number in kernel.CAPABILITIES.items()}
    if not caps:
        return ["keep every capability (no lxc.cap.drop or lxc.cap.keep)"]
    return ["drop from the bounding set: " + " ".join(names.get(c, str(c)) for c in caps)]
