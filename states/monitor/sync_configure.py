"""sync_configure (monitor) - the child's namespaces exist; configure them from outside.

Replaces the part of LXC's lxc_spawn() between START_SYNC_CONFIGURE and
START_SYNC_POST_CONFIGURE: lxc_create_network_priv() and the host side of
netdev_configure_server_veth() and _macvlan().

The child sends CONFIGURE after unsharing its cgroup namespace.  For each
``lxc.net.N.type = veth`` the monitor creates a veth pair whose container
end is born inside the child's network namespace (under a transient name the
child renames in setup_network), with lxc.net.N.mtu, else the bridge's MTU,
else 1500.  Its host end is named lxc.net.N.veth.pair or "veth" and six
random characters, gets a MAC starting with fe (so the bridge keeps the
host's), is attached to the bridge lxc.net.N.link if there is one, and is
set up.  A ``macvlan`` (lxc.net.N.macvlan.mode, default private) on the host's
lxc.net.N.link is created directly inside the child's namespace, under its
transient name; nothing of it stays on the host.  With ``empty`` (or no
network) the container keeps the namespace it was cloned with, holding only
lo; with ``none`` it shares the host's.  In a network namespace joined with
lxc.namespace.share.net no device is made at all, as LXC creates none there.

Then, as LXC does here too, each lxc.proc.KEY = VALUE is written to the
child's /proc/PID/KEY, and each lxc.prlimit.RESOURCE = SOFT[:HARD] set on it
with prlimit(2) (one value is both; "unlimited" is RLIM_INFINITY).

Afterwards the kernel sees, on the host, one veth per veth device, each
recorded for removal; nothing new for empty/none networks; the child with
its resource limits and /proc files.  In a user namespace (lxc.idmap) the
child made its network namespace only now (become_userns_root): with a stop
hook, the monitor holds it open from here on, as spawn holds the others
(LXC preserves it at the same point).
"""

from __future__ import annotations

import os

from lxcsm import hooks
from lxcsm.engine.linux import kernel
from lxcsm.engine.protocol.sync import SyncMsg

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.start.context import MonitorContext, StartRequest


def enter(ctx: MonitorContext) -> str:
    assert ctx.boot.channel is not None   # spawn opened it
    ctx.boot.channel.wait_for(SyncMsg.CONFIGURE)
    _keep_network_namespace(ctx)
    for position, device in enumerate(ctx.request.config.netlink_devices()):
        if device.type == "veth":
            _create_veth(ctx, position, device)
        else:
            _create_macvlan(ctx, position, device)
    for device in ctx.request.config.devices("empty", "none"):
        ctx.log.trace("network", index=device.index, type=device.type)
    if "net" in (shares := ctx.request.config.namespace_shares()):
        ctx.log.trace("network namespace joined: no device made", of=shares["net"])
    _write_proc_files(ctx)
    _set_resource_limits(ctx)
    return "network_ready"


def _keep_network_namespace(ctx) -> None:
    """A network namespace the child unshared after the clone (with a user namespace), held
    for the stop hooks, which run once init is gone."""
    namespaces = ctx.request.config.namespaces()
    if "user" in namespaces and "net" in namespaces and hooks.keeps_namespaces(ctx.request.config):
        fd = os.open(f"/proc/{ctx.boot.init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        ctx.boot.undo.record("kept_fd", fd)
        ctx.boot.namespace_fds["net"] = fd


def _write_proc_files(ctx) -> None:
    """lxc.proc.KEY = VALUE: written to the child's /proc/PID/KEY (LXC's setup_proc_filesystem)."""
    for key, setting in ctx.request.config.in_effect("lxc.proc"):
        path = f"/proc/{ctx.boot.init_pid}/{key.removeprefix('lxc.proc.')}"
        setting.write_to(path)
        ctx.log.trace("proc file set", file=path, value=setting.value)


def _set_resource_limits(ctx) -> None:
    """lxc.prlimit.RESOURCE = SOFT[:HARD]: prlimit(2) on the child (LXC's setup_resource_limits)."""
    settings = ctx.request.config.in_effect("lxc.prlimit")
    if not settings:
        return
    import resource  # only configs with limits pay for it
    for key, setting in settings:
        name = key.removeprefix("lxc.prlimit.")
        soft, _, hard = setting.value.partition(":")
        soft_limit, hard_limit = (resource.RLIM_INFINITY if v.strip() == "unlimited" else int(v)
                                  for v in (soft, hard or soft))
        try:
            resource.prlimit(ctx.boot.init_pid, kernel.RLIMITS[name], (soft_limit, hard_limit))
        except OSError as err:
            raise OSError(err.errno, f"{setting.file}:{setting.line}: {setting.key}: prlimit {setting.value}: "
                                     f"{err.strerror}") from None
        ctx.log.trace("resource limit set", resource=name, soft=soft_limit, hard=hard_limit)


def _create_veth(ctx, position: int, device) -> None:
    from lxcsm.engine.linux import netlink  # loaded by spawn, for configs with a veth only
    host = device.veth_pair or netlink.host_name()
    mtu = device.mtu or (device.link and netlink.link_mtu(device.link)) or netlink.DEFAULT_MTU
    netlink.create_veth(host, netlink.transient_name(position), ctx.boot.init_pid, mtu)
    ctx.boot.undo.record("netdev", host)
    ctx.command_server.running_items[f"lxc.net.{device.index}.veth.pair"] = host
    netlink.attach_host_end(host, device.link)
    ctx.log.trace("veth created", index=device.index, host=host, bridge=device.link, mtu=mtu)


def _create_macvlan(ctx, position: int, device) -> None:
    """A macvlan on the host's lxc.net.N.link, born in the child's namespace: nothing stays on
    the host, the device goes when the namespace does (LXC's default mode: private)."""
    from lxcsm.engine.linux import netlink
    mode = device.extra.get("macvlan.mode", "private")
    netlink.create_macvlan(netlink.transient_name(position), device.link, mode, ctx.boot.init_pid, device.mtu)
    ctx.log.trace("macvlan created", index=device.index, link=device.link, mode=mode)


def plan(request: StartRequest) -> list[str]:
    steps = ["wait for CONFIGURE"]
    networks = request.config.networks
    if "net" in request.config.namespace_shares():
        return [*steps, "no network device: the child joined another network namespace (lxc.namespace.share.net),"
                        " where LXC creates none"]
    if not networks:
        steps.append("no network configured: the container keeps its empty network namespace (lo only, down)")
    what = {"empty": "nothing on the host: an empty namespace, lo only",
            "none": "nothing: the container shares the host's network namespace"}
    made = request.config.netlink_devices()
    for device in networks:
        if device.type == "veth":
            host = device.veth_pair or "veth + 6 random characters"
            mtu = device.mtu or (f"of {device.link}" if device.link else 1500)
            bridge = f", attach it to bridge {device.link}" if device.link else ""
            steps.append(f"net {device.index}: type veth: create veth {host} with its peer "
                         f"lxcsm{made.index(device)} in the child's network namespace, mtu {mtu}"
                         f"{bridge}, set it up")
        elif device in made:
            steps.append(f"net {device.index}: type macvlan: create macvlan lxcsm{made.index(device)} "
                         f"on {device.link} ({device.extra.get('macvlan.mode', 'private')}) in the child's "
                         f"network namespace")
        else:
            steps.append(f"net {device.index}: type {device.type}: "
                         + what.get(device.type, "not supported yet, skipped"))
    steps += [f"write {s.value} to /proc/CHILD/{key.removeprefix('lxc.proc.')}"
              for key, s in request.config.in_effect("lxc.proc")]
    steps += [f"prlimit(CHILD, RLIMIT_{key.removeprefix('lxc.prlimit.').upper()}, {s.value})"
              for key, s in request.config.in_effect("lxc.prlimit")]
    return steps
