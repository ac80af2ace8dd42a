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

from lxcsm.engine import kernel


def _number(word: str) -> int:
    return int(word) if word.isdigit() else kernel.CAPABILITIES[word.lower().removeprefix("cap_")]


def dropped(config) -> list[int]:
    """The capability numbers to drop from the bounding set, in ascending order."""
    keep = config.in_effect("lxc.cap.keep")
    if keep:
        kept: set[int] = set()
        for _key, setting in keep:
            for word in setting.value.split():
                kept = set() if word == "none" else kept | {_number(word)}
        return [cap for cap in range(kernel.last_capability() + 1) if cap not in kept]
    return sorted({_number(word) for _key, setting in config.in_effect("lxc.cap.drop")
                   for word in setting.value.split()})


def enter(ctx) -> str:
    caps = dropped(ctx.request.config)
    for cap in caps:
        kernel.drop_bounding_capability(cap)
    if caps:
        names = {number: name for name, number in kernel.CAPABILITIES.items()}
        ctx.log.trace("capabilities dropped", caps=" ".join(names.get(c, str(c)) for c in caps))
    return "capabilities_set"


def plan(request) -> list[str]:
    caps = dropped(request.config)
    names = {number: name for name, number in kernel.CAPABILITIES.items()}
    if not caps:
        return ["keep every capability (no lxc.cap.drop or lxc.cap.keep)"]
    return ["drop from the bounding set: " + " ".join(names.get(c, str(c)) for c in caps)]
