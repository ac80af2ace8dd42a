"""setup_sysctl (child) - the container's kernel parameters.

Replaces LXC's setup_sysctl_parameters() (conf.c), near the end of lxc_setup().

Afterwards the kernel sees each lxc.sysctl.KEY = VALUE written to
/proc/sys/KEY (dots as slashes: net.ipv4.ip_forward is
/proc/sys/net/ipv4/ip_forward) of the container - after pivot_root, so only
parameters of the container's own namespaces can be changed, and only where
its /proc lets them be (proc:mixed keeps /proc/sys read-only but for net).
A value the kernel refuses fails the start, naming the file, line and key.
"""

from __future__ import annotations

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import ChildContext, StartRequest


def _path(key: str) -> str:
    return "/proc/sys/" + key.removeprefix("lxc.sysctl.").replace(".", "/")


def enter(ctx: ChildContext) -> str:
    for key, setting in ctx.request.config.in_effect("lxc.sysctl"):
        path = _path(key)
        setting.write_to(path)
        ctx.log.trace("sysctl set", file=path, value=setting.value)
    return "sysctls_set"


def plan(request: StartRequest) -> list[str]:
    return [f"write {setting.value} to {_path(key)}"
            for key, setting in request.config.in_effect("lxc.sysctl")] or ["nothing: no lxc.sysctl"]
