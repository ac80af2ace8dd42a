"""setup_seccomp (child) - the seccomp filter of lxc.seccomp.profile, built.

Replaces LXC's lxc_read_seccomp_config() (seccomp.c); its lxc_seccomp_load()
is the last thing exec does before execve.

The policy (read and checked by preflight) becomes a libseccomp filter here,
before pivot_root puts libseccomp out of reach: its default action, then one
rule per syscall of the sections for this machine (names libseccomp does not
know are skipped and logged, as LXC does), reject_force_umount as LXC spells
it out.  The kernel sees nothing yet: exec installs the filter right before
execve, so the interpreter's own last steps cannot trip it, and init and
everything it runs are filtered.  As LXC, no_new_privs is left off.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def enter(ctx: ChildContext) -> str:
    policies = ctx.request.config.in_effect("lxc.seccomp.profile")
    if policies:
        # Only configs with a policy pay for the parser and libseccomp.
        from lxcsm.engine.config import seccomp_policy
        from lxcsm.engine.linux import seccomp
        setting = policies[-1][1]
        policy = seccomp_policy.read(setting.as_path())
        ctx.seccomp = seccomp.Filter(policy, os.uname().machine)
        ctx.log.trace("seccomp filter built", policy=setting.value, rules=len(policy.rules),
                      skipped=" ".join(ctx.seccomp.skipped))
    return "seccomp_built"


def plan(request: StartRequest) -> list[str]:
    policies = request.config.in_effect("lxc.seccomp.profile")
    if not policies:
        return ["nothing: no lxc.seccomp.profile"]
    return [f"build a seccomp filter from {policies[-1][1].value} (installed by exec, right before execve)"]
