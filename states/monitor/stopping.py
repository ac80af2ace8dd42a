"""stopping (monitor) - init is gone: undo what the boot changed on the host.

Replaces LXC's lxc_end() up to the STOPPED state.

Afterwards the kernel sees no ``lxc.payload.NAME`` and no
``lxc.monitor.NAME`` directory in any hierarchy (the monitor moved back to
the cgroup it started in first), and no container process: init exited, and
with it, by the pid namespace's rules, every other process of the container.
Clients that asked to hear about STOPPING have been told, and lxc-monitor
of init's wait status (LXC's exit-code message) and then of STOPPING.  lxc.hook.stop ran
before the cleanup (with the container's namespaces, held open since spawn)
and lxc.hook.post-stop after it, both with LXC_TARGET=stop.
"""

from __future__ import annotations

from lxcsm import hooks
from lxcsm.engine.protocol.command_socket import LxcState

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    assert ctx.command_server is not None   # init_handler bound it before anything could stop
    if ctx.boot.init_status is not None:
        ctx.command_server.announce_exit(ctx.boot.init_status)
    ctx.command_server.set_state(LxcState.STOPPING)
    hooks.run_stop(ctx, "stop")
    ctx.boot.undo.unwind(ctx.log)
    hooks.run_post_stop(ctx, "stop")
    return "cleaned_up"


def plan(request: StartRequest) -> list[str]:
    return ["container state STOPPING", *_hook_steps(request),
            f"in every hierarchy: rmdir lxc.payload.{request.name}; move the monitor back; "
            f"rmdir lxc.monitor.{request.name}"]


def _hook_steps(request) -> list[str]:
    return [f"run lxc.hook.{kind}: {setting.value}" for kind in ("stop", "post-stop")
            for _key, setting in hooks.configured(request.config, kind)]
