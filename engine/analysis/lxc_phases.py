"""LXC 5.0.2's start sequence in lxcsm's terms: which lxcsm state does the work of each LXC function.

This is a table module, and long on purpose: it is the one place that knows
LXC's function names.  With it `lxcsm trace-diff` (engine/analysis/trace_diff.py)
gives every line of an LXC trace a *phase* - the lxcsm state (side and state)
that does the same work, or a phase only LXC has.  What a newer LXC logs
differently is a row to add here, and nowhere else.

* `RULES`: (category, function, message pattern) -> phase, in the order LXC
  runs them; the first match wins.  A helper used everywhere (mount_utils,
  parse_vfs_attr) is `INHERIT`: it takes the phase of the line before it.
  A rule with `after` applies only after a line of that phase: the same
  line written by different processes (lxc_drop_groups) is told apart so.
  sync.c's lines are `SYNC`: they are read for their sequence names.
* `SYNC_PHASES`: (side, wake or wait, sequence) -> the lxcsm state that does
  the same wake or wait, so that LXC's sync lines land in the same phase;
  `SEQUENCE_ALIASES` and `SEQUENCE_ORDER` name LXC's sequences as lxcsm does
  and give their order in a start.
* `LXC_ONLY` and `LXCSM_ONLY`: the phases only one side has, and why.

`check_rules` checks that every phase named here is an lxcsm state of
engine/start/machine.py's tables or explained in `LXC_ONLY`; a unit test runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxcsm.engine.start.machine import TABLES

INHERIT = "<inherit>"    # the phase of the line before
SYNC = "<sync>"          # from the sequence names, through SYNC_PHASES


@dataclass(frozen=True)
class Rule:
    category: str
    function: str        # regular expression, matched against the whole function name
    phase: str           # "side:state" (an lxcsm state or a key of LXC_ONLY), INHERIT or SYNC
    message: str = ""    # regular expression searched in the message; empty: any message
    after: str = ""      # regular expression the phase of the line before must match; empty: any


R = Rule
# LXC's (category, function) -> phase, in the order LXC 5.0.2 runs them.  First match wins.
RULES: tuple[Rule, ...] = (
    # lxc-start, before there is a monitor: is the container running already?
    R("commands", "lxc_cmd", "client:check-running"),
    # init_handler: lxc_init_handler(), lxc_init() - command socket, STARTING, signal fd, cgroup driver.
    R("start", "lxc_init_handler", "monitor:init_handler"),
    R("commands", "lxc_server_init", "monitor:init_handler"),
    R("lxccontainer", "do_lxcapi_start", "monitor:reboot", "requested reboot"),
    R("lxccontainer", "do_lxcapi_start", "monitor:daemonize"),
    R("start", "lxc_check_inherited", "monitor:daemonize"),
    R("lxccontainer", "wait_on_daemonized_start", "client:wait-running"),
    R("start", "lxc_start", "monitor:init_handler"),
    R("lsm", "lsm_init_static", "monitor:init_handler"),
    R("start", "lxc_init", "monitor:init_handler"),
    R("start", "lxc_serve_state_clients", "monitor:init_handler", r"\bSTARTING\b"),
    R("start", "lxc_serve_state_clients", "monitor:sync_ready_start", r"\bRUNNING\b"),
    R("start", "lxc_serve_state_clients", "monitor:stopping", r"\bSTOPPING\b"),
    R("start", "lxc_serve_state_clients", INHERIT),        # "No state clients registered"
    R("start", "setup_signal_fd", "monitor:init_handler"),
    R("cgfsng", "unpriv_systemd_create_scope|cgroup_hierarchy_add", "monitor:init_handler"),
    R("cgroup", "cgroup_init", "monitor:init_handler"),
    # monitor_cgroup: cgfsng_monitor_create(), cgfsng_monitor_enter().
    R("cgfsng", "__cgroup_tree_create", "monitor:monitor_cgroup", r"lxc\.monitor\."),
    R("cgfsng", "__cgroup_tree_create", "monitor:spawn", r"lxc\.payload\."),
    R("cgfsng", "__cgroup_tree_create", "monitor:stopping", r"lxc\.pivot"),
    R("cgfsng", "cpuset1_cpus_initialize|cpuset1_initialize", INHERIT),
    R("cgfsng", "cgfsng_monitor_create|cgfsng_monitor_enter", "monitor:monitor_cgroup"),
    # Between the monitor's cgroup and the clone: the rootfs pinned open.
    R("storage", "get_storage_by_name", "monitor:rootfs-pin"),
    R("conf", "lxc_rootfs_init", "monitor:rootfs-pin"),
    # spawn: the first half of lxc_spawn() - payload cgroups, clone, namespaces kept, child moved in.
    R("sync", "lxc_sync_init", "monitor:spawn"),
    R("cgfsng", "cgfsng_payload_create|cgfsng_payload_enter", "monitor:spawn"),
    R("start", "lxc_spawn", "monitor:sync_configure", r"network namespace id"),
    R("start", "lxc_spawn", "monitor:sync_cgroup_limits", r"device .*limits|Finished setting up cgroups"),
    R("start", "lxc_spawn", "monitor:spawn"),
    # lxc.namespace.share.*: which namespaces are shared, their fds, the setns before the clone.
    R("start", "resolve_clone_flags|lxc_inherit_namespaces|do_share_ns", "monitor:spawn"),
    R("start", "core_scheduling", "monitor:spawn"),
    R("utils", "lxc_can_use_pidfd", "monitor:spawn"),
    R("start", "lxc_try_preserve_namespace", "monitor:sync_fds", r"^Preserved cgroup namespace"),
    R("start", "lxc_try_preserve_namespace", "monitor:spawn"),
    # write_id_maps (lxc.idmap): lxc_map_ids() right after the clone; the cgroup chown, which
    # LXC makes from a helper process in a user namespace of its own (userns_exec_1).
    R("conf", "lxc_map_ids|get_minimal_idmap|userns_exec_1|run_userns_fn", "monitor:write_id_maps"),
    R("cgfsng", "cgfsng_chown|chown_cgroup_wrapper|fchowmodat", "monitor:write_id_maps"),
    # become_userns_root: do_start() between STARTUP and CONFIGURE in a user namespace.
    R("start", "do_start", "child:become_userns_root", r"Unshared CLONE_NEWNET"),
    R("utils", "lxc_switch_uid_gid", "child:become_userns_root", r"Switched to [ug]id 0$"),
    # sync_idmapped_mounts (lxc.rootfs.options = idmap=...): the monitor's idmapped copy of the
    # rootfs, made right after POST_CONFIGURE, and the child's receipt of it.
    R("conf", "lxc_rootfs_prepare_parent", "monitor:sync_idmapped_mounts"),
    R("mount_utils", "create_detached_idmapped_mount", "monitor:sync_idmapped_mounts"),
    R("conf", "lxc_rootfs_prepare_child", "child:sync_idmapped_mounts"),
    # sync.c: one line per wake or wait, read for its sequence names.
    R("sync", r"lxc_sync_(wait|wake|barrier)_(parent|child)", SYNC),
    # The child: do_start() up to lxc_setup().
    R("start", "do_start", "child:configure"),                           # Unshared CLONE_NEWCGROUP
    R("network", r"netdev_configure_server_\w+|lxc_create_network\w*", "monitor:sync_configure"),
    R("network", "lxc_network_send_to_child", "monitor:sync_post_configure"),
    R("conf", "turn_into_dependent_mounts|lxc_mount_rootfs", "child:setup_rootfs"),
    R("dir", "dir_mount", "child:setup_rootfs"),
    R("conf", "setup_utsname", "child:setup_hostname"),
    R("network", r"lxc_network_recv_from_parent|lxc_setup_network_in_child_namespaces\w*"
                 r"|__netdev_configure_container_common|lxc_network_setup_in_child_namespaces_common",
      "child:setup_network"),
    R("conf", "mount_autodev", "child:setup_mounts"),                    # /dev's tmpfs, before the mounts
    R("conf", "lxc_mount_auto_mounts|mount_entry|setup_mount\\w*", "child:setup_mounts"),
    R("cgfsng", "cgfsng_mount", "child:setup_mounts"),                   # lxc.mount.auto cgroup:...
    R("conf", "parse_vfs_attr", INHERIT),
    # An idmap= option read, of the rootfs (at lxc_init) or of a mount entry; a mount entry
    # with idmap= passed over by the other entries (it is attached after them).
    R("conf", "parse_lxc_mount_attrs", INHERIT),
    R("conf", "mount_entry_on_generic", "child:setup_mounts", r"Skipping idmapped mount entry$"),   # after errno's
    # An idmap= mount entry: LXC's parent idmaps it where lxcsm's monitor does
    # (sync_idmapped_mounts, earlier), its child attaches it where setup_mounts does.
    R("conf", "lxc_idmapped_mounts_parent", "monitor:sync_idmapped_mounts", r"^Parent idmapped detached"),
    R("conf", "__lxc_idmapped_mounts_child", "child:setup_mounts", r"^Attached detached idmapped"),
    R("conf", "lxc_idmapped_mounts_child", "child:idmapped-mounts"),
    R("conf", "lxc_idmapped_mounts_parent", "monitor:idmapped-mounts"),
    # /dev filled after the mounts; lxc_transient_proc checks /proc before devpts needs it.
    R("conf", "lxc_fill_autodev|lxc_transient_proc|lxc_setup_devpts_child", "child:setup_autodev"),
    R("conf", "lxc_setup_dev_console", "child:setup_ttys"),             # the console's pty on /dev/console
    R("conf", "lxc_allocate_ttys|lxc_setup_ttys|lxc_create_ttys", "child:setup_ttys"),
    R("conf", "lxc_pivot_root", "child:setup_pivot_root"),
    R("conf", "setup_sysctl_parameters", "child:setup_sysctl"),
    # lxc_read_seccomp_config(), from lxc_init(): the policy read before anything is created.
    R("seccomp", r"\w+", "monitor:init_handler"),
    R("conf", "setup_personality|capabilities_deny|capabilities_allow|dropcaps_except|setup_caps",
      "child:setup_capabilities"),
    R("conf", "lxc_setup", "child:setup_pivot_root"),                    # "The container is set up"
    R("mount_utils", r"\w+", INHERIT),
    # A hook ("Executing script ..."): part of the phase that runs it (hooks.POINTS).
    R("conf", "run_script_argv|run_buffer", INHERIT),
    # FDS: devpts, ttys and network names handed to the monitor.
    R("conf", "lxc_send_devpts_to_parent|__lxc_send_ttys_to_parent|lxc_sync_fds_child", "child:sync_fds"),
    R("network", "lxc_network_send_name_and_ifindex_to_parent", "child:sync_fds"),
    R("conf", "lxc_recv_devpts_from_child|lxc_recv_ttys_from_child|lxc_sync_fds_parent", "monitor:sync_fds"),
    R("network", "lxc_network_recv_name_and_ifindex_from_child", "monitor:sync_fds"),
    R("terminal", "lxc_terminal_peer_default", "monitor:sync_fds"),     # the console's peer, before READY_START
    R("terminal", r"\w+", INHERIT),
    # exec: the end of do_start() and the start() callback.  Its groups are dropped right after
    # the monitor's READY_START; in a user namespace LXC drops them only twice before, in the
    # cgroup chown's helper (write_id_maps) and in do_start() (become_userns_root).
    R("utils", "lxc_drop_groups", "child:exec", after="monitor:sync_ready_start"),
    R("utils", "lxc_drop_groups", INHERIT),
    R("start", "start", "child:exec"),                                    # Exec'ing "/sbin/init"
    # sync_ready_start: the exec happened, RUNNING.
    R("confile_utils", "lxc_log_configured_netdevs", "monitor:sync_ready_start"),
    R("start", "post_start|lxc_serve_state_socket_pair", "monitor:sync_ready_start"),
    # poll: lxc_poll() and its mainloop handlers; how init ended.
    R("mainloop", r"\w+", "monitor:poll"),
    R("start", "lxc_poll|signal_handler|__lxc_start", "monitor:poll"),
    R("commands", r"lxc_cmd_\w+", "monitor:poll"),
    R("confile", "get_config_unsupported_key", "monitor:poll"),        # a client's get_config_item
    R("error", "lxc_error_set_and_log", "monitor:poll"),
    # stopping and stopped: lxc_end().
    R("network", "lxc_restore_phys_nics_to_netns|lxc_delete_network_priv|lxc_delete_network", "monitor:stopping"),
    R("start", "lxc_expose_namespace_environment", "monitor:stopping"),
    R("cgfsng", "cgroup_tree_remove|cgfsng_monitor_destroy|cgfsng_payload_destroy", "monitor:stopping"),
    R("start", "lxc_end", "monitor:stopped"),
)

# Phases only LXC has, and why lxcsm has no state for them.
LXC_ONLY: dict[str, str] = {
    "client:check-running": "lxc-start asks the command socket whether the container runs; lxcsm's cli "
                            "asks too, before the monitor exists, without logging it",
    "client:wait-running": "lxc-start waits for the daemon to report RUNNING; lxcsm's caller reads a "
                           "status pipe (engine/start/monitor.py daemonize), without logging it",
    "monitor:daemonize": "LXC daemonizes after lxc_init_handler; lxcsm's monitor is daemonized before its "
                         "first state, so its log starts in init_handler",
    "monitor:rootfs-pin": "LXC keeps the rootfs pinned by an open, unlinked .lxc_keep file; lxcsm does not",
    "monitor:idmapped-mounts": "LXC's idmapped-mounts sync point, every start, after the child's other mount "
                               "entries: it hands the monitor each lxc.mount.entry bind with idmap= to idmap "
                               "(lxc_idmapped_mounts_child/parent), and both say when they are done even with "
                               "none.  lxcsm's monitor idmaps those binds earlier, with the rootfs, in "
                               "sync_idmapped_mounts, entered only when there is something to idmap",
    "child:idmapped-mounts": "the child's side of idmapped-mounts (see monitor:idmapped-mounts)",
}

# lxcsm states of a normal start that LXC has no lines for, and why.
LXCSM_ONLY: dict[str, str] = {
    "child:setup_sysctl": "LXC's setup_sysctl_parameters() logs nothing for a config without lxc.sysctl",
    "child:setup_seccomp": "LXC's no_new_privs, lxc_seccomp_load() and start hooks log nothing when they succeed",
}

# (side, wake|wait, sequence) -> the lxcsm state that does it: where lxcsm's states block or send
# (engine/start/machine.py's protocol), so that LXC's sync lines land in the same phase.
SYNC_PHASES: dict[tuple[str, str, str], str] = {
    ("monitor", "wake", "startup"): "monitor:spawn",
    ("child", "wait", "startup"): "child:startup",
    ("child", "wake", "configure"): "child:configure",
    ("monitor", "wait", "configure"): "monitor:sync_configure",
    ("monitor", "wake", "post-configure"): "monitor:sync_post_configure",
    ("child", "wait", "post-configure"): "child:configure",
    ("child", "wake", "idmapped-mounts"): "child:idmapped-mounts",
    ("monitor", "wait", "idmapped-mounts"): "monitor:idmapped-mounts",
    ("child", "wake", "cgroup-limits"): "child:sync_cgroup_limits",
    ("monitor", "wait", "cgroup-limits"): "monitor:sync_cgroup_limits",
    ("child", "wait", "fds"): "child:sync_cgroup_limits",
    ("monitor", "wake", "fds"): "monitor:sync_fds",
    ("monitor", "wait", "fds"): "monitor:sync_fds",
    ("child", "wake", "fds"): "child:sync_fds",
    ("child", "wait", "ready-start"): "child:sync_fds",
    ("monitor", "wake", "ready-start"): "monitor:sync_ready_start",
    ("monitor", "wait", "exec"): "monitor:sync_ready_start",
}
# LXC's parent waits for "restart" after ready-start, which the child never sends: end-of-file (the
# exec closed the socket) ends that wait - exactly lxcsm's wait for "exec".
SEQUENCE_ALIASES = {"restart": "exec"}
SEQUENCE_ORDER = ("startup", "configure", "post-configure", "idmapped-mounts", "cgroup-limits", "fds",
                  "ready-start", "exec")


def is_lxcsm_state(phase: str) -> bool:
    """Whether a phase ("side:state") is a state of lxcsm's machines."""
    side, _, state = phase.partition(":")
    return side in TABLES and state in TABLES[side].states


def check_rules() -> list[str]:
    """Every phase the tables name is an lxcsm state or explained in LXC_ONLY (a test runs this)."""
    problems = []
    named = [r.phase for r in RULES if r.phase not in (INHERIT, SYNC)] + list(SYNC_PHASES.values())
    for phase in named:
        if not is_lxcsm_state(phase) and phase not in LXC_ONLY:
            problems.append(f"{phase}: neither an lxcsm state nor in LXC_ONLY")
    for phase in LXCSM_ONLY:
        if not is_lxcsm_state(phase):
            problems.append(f"LXCSM_ONLY {phase}: not an lxcsm state")
    return problems
