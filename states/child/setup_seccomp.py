"""setup_seccomp (child) - init's last restrictions, then the lxc.hook.start hooks under them.

Replaces the steps of LXC's do_start() between lxc_setup() and the
CGROUP_LIMITS barrier: PR_SET_NO_NEW_PRIVS (lxc.no_new_privs), then
lxc_seccomp_load(), then run_lxc_hooks("start").

The child is set up: pivoted, its capabilities dropped.  Afterwards the
kernel sees:
* with lxc.no_new_privs = 1: no_new_privs set on the child, which init and
  everything it runs inherit (NoNewPrivs: 1 in /proc/PID/status) - no execve
  can gain privileges through setuid bits or file capabilities;
* with lxc.seccomp.profile: the filter the monitor built (init_handler)
  installed on the child (Seccomp: 2), for every process the container will
  ever have.  As LXC, the filter does not turn no_new_privs on itself;
* whatever the lxc.hook.start hooks did: they run inside the container
  (their program and /bin/sh are the container's), already under the
  filter and no_new_privs, as under LXC.
"""

from __future__ import annotations

from lxcsm import hooks
from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def no_new_privs(config) -> bool:
    return config.get_item("lxc.no_new_privs") == "1"


def enter(ctx: ChildContext) -> str:
    config = ctx.request.config
    if no_new_privs(config):
        kernel.set_no_new_privs()
        ctx.log.trace("no_new_privs set")
    if ctx.seccomp is not None:
        ctx.seccomp.load()
        ctx.log.trace("seccomp filter loaded")
    # Its stdin the console, as LXC's lxc_setup_console() made the console the child's own.
    hooks.run(config, "start", ctx.log, stdin=ctx.console[1] if ctx.console else None)
    return "seccomp_loaded"


def plan(request: StartRequest) -> list[str]:
    config = request.config
    steps = ["prctl(PR_SET_NO_NEW_PRIVS, 1)"] if no_new_privs(config) else []
    policies = config.in_effect("lxc.seccomp.profile")
    if policies:
        steps.append(f"load the seccomp filter of {policies[-1][1].value} (built by init_handler)")
    steps += [f"run lxc.hook.start: {s.value}" for _key, s in hooks.configured(config, "start")]
    return steps or ["nothing: no lxc.no_new_privs, no lxc.seccomp.profile, no lxc.hook.start"]
