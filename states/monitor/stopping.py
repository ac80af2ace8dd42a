"""stopping (monitor) - init is gone: undo what the boot changed on the host.

Replaces LXC's lxc_end() up to the STOPPED state.

Afterwards the kernel sees no ``lxc.payload.NAME`` and no
``lxc.monitor.NAME`` directory in any hierarchy (the monitor moved back to
the cgroup it started in first), and no container process: init exited, and
with it, by the pid namespace's rules, every other process of the container.
Clients that asked to hear about STOPPING have been told.
"""

from lxcsm.engine.commands import LxcState


def enter(ctx) -> str:
    ctx.commands.set_state(LxcState.STOPPING)
    ctx.boot.undo.unwind(ctx.log)
    return "cleaned_up"


def plan(request) -> list[str]:
    return ["container state STOPPING",
            f"in every hierarchy: rmdir lxc.payload.{request.name}; move the monitor back; rmdir lxc.monitor.{request.name}"]
