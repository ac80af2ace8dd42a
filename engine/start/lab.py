"""Lab mode: start a container with one step of the start left out, to see what it is for.

For teaching, never for production.  Talks and labs that build a container
from scratch show what a process sees when a step is missing (the host's /,
the host's processes in ps, the full cgroup path, a bounding set untouched);
here a student can do the same with the real start, one named step at a time:
``lxcsm start --lab --lab-skip STEP -F NAME -- COMMAND`` (`lxcsm lab` runs
ready-made exercises with it).

SKIPS is the one table of what can be left out.  Each entry names the state
that does the step and, when the state does more than that step, the part of
it left out; the LXC function the step corresponds to; and what the
container sees without it.  A step is left out in one of two ways, both read
from the table, so no state knows about lab mode:

* ``not_entered``: states the supervisor passes over (it fires their normal
  trigger without calling ``enter``), with ``instead`` run in place of the
  first one when the step's absence would otherwise touch the host;
* ``config``: a change to the loaded Config that makes the state leave its
  part out, exactly as the equivalent lxc.* setting would (the table says
  which).

Every state a skip concerns logs a WARN event ``lab skipped`` when it is
reached (the trace, the flight record and `lxcsm info` show it), and
`lxcsm start` refuses --lab-skip without --lab, -F and a COMMAND: a lab
start is watched, runs only what the student named, and never comes from a
config file.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections import namedtuple
from collections.abc import Callable

from lxcsm.engine.linux import kernel

TYPE_CHECKING = False   # typing itself costs every start ~5 ms to import
if TYPE_CHECKING:
    from lxcsm.engine.config.model import Config


class Skip(namedtuple("Skip", ("name", "state", "part", "lxc", "sees", "not_entered", "config", "instead"))):
    name: str                  # what --lab-skip takes
    state: str                 # "side:state" doing the step
    part: str | None           # the part of that state left out; None: the whole state
    lxc: str                   # the LXC function (file) that does the step
    sees: str                  # what the container sees without it
    not_entered: tuple[str, ...]                      # "side:state"s the supervisor passes over
    config: Callable[[Config], Config] | None         # the Config the states then read
    instead: Callable[[], None] | None                # run in place of not_entered[0]

    __slots__ = ()

    def left_out(self) -> str:
        """What is left out, where: for the banner, the lab's listing and its exercises."""
        text = f"{self.state} (the whole state)" if self.part is None else f"{self.part}, in {self.state}"
        return ", and ".join([text, *(f"{where} (the whole state)" for where in self.not_entered
                                      if where != self.state)])


def _host_root_read_only() -> None:
    """every mount of the host's / remounted read-only, nodev and nosuid, in the container's mount namespace

    Without pivot_root the container's / is the host's.  Its mounts are slaves since
    setup_rootfs, and a mount's flags never propagate: nothing of this reaches the host.  A lab
    command can look at the host's files but change none, open no device node and gain nothing
    from a setuid file.  A mount point that no path leads to any more (another mount hides it:
    ENOENT, or EINVAL where the path now lies inside the mount on top) is out of reach already.
    """
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    for point in dict.fromkeys(points):   # once each; a stacked mount point: its top mount
        # mountinfo writes a blank, tab, newline or backslash in a path as \ and 3 octal digits
        path = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda digits: bytes([int(digits[1], 8)]), point))
        try:
            kernel.mount(None, path, None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY
                         | kernel.MS_NODEV | kernel.MS_NOSUID)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.EINVAL):
                raise


def _own_devices_refused(config: Config) -> Config:
    """Without a network namespace of its own the child would make and configure a config's veth or
    macvlan devices on the host's network: such a config is refused (preflight refuses the veth,
    as under lxc.namespace.keep = net; this, every device lxcsm makes)."""
    from lxcsm.engine.config.model import ConfigError
    for device in config.netlink_devices():
        raise ConfigError(device.origin.file, device.origin.line, device.origin.key,
                          f"--lab-skip net_ns: this {device.type} device would be made on the host's own"
                          f" network; leave out net_ns only for a container without one")
    return config


SKIPS = {skip.name: skip for skip in (
    Skip("pivot_root", "child:setup_pivot_root", None,
         "lxc_pivot_root() (conf.c), and lxc_setup_boot_id() and setup_sysctl_parameters() after it",
         "the host's / (read-only in lab mode): its files, its /etc/os-release, its /proc - and the "
         "rootfs only as a directory somewhere below; init's COMMAND is the host's program of that name",
         # setup_sysctl writes /dev/.lxc-boot-id and /proc/sys: without the pivot, the host's.
         ("child:setup_pivot_root", "child:setup_sysctl"), None, _host_root_read_only),
    Skip("proc", "child:setup_mounts", "the proc filesystem of lxc.mount.auto",
         "lxc_mount_auto_mounts() (conf.c), its proc entry",
         "an empty /proc directory: ps lists no process at all, /proc/self does not exist",
         (), lambda config: config._replace(mount_proc=None), None),
    Skip("pid_ns", "monitor:spawn", "CLONE_NEWPID in clone3's flags (as lxc.namespace.keep = pid)",
         "lxc_spawn() (start.c), the CLONE_NEWPID of its clone flags",
         "the host's processes: ps lists every one of them, and init's pid is not 1",
         (), lambda config: config._replace(namespace_keep=config.namespace_keep | {"pid"}), None),
    Skip("net_ns", "monitor:spawn", "CLONE_NEWNET in clone3's flags (as lxc.namespace.keep = net)",
         "lxc_spawn() (start.c), the CLONE_NEWNET of its clone flags",
         "the host's network interfaces in /proc/net/dev (and as root could change them, or use its ports)",
         (), lambda config: _own_devices_refused(config._replace(namespace_keep=config.namespace_keep | {"net"})),
         None),
    Skip("cgroup_ns", "child:configure", "unshare(CLONE_NEWCGROUP) (as lxc.namespace.keep = cgroup)",
         "do_start()'s unshare(CLONE_NEWCGROUP) (start.c)",
         "its full cgroup path in the host's hierarchy in /proc/self/cgroup (.../lxc.payload.NAME) instead of /",
         (), lambda config: config._replace(namespace_keep=config.namespace_keep | {"cgroup"}), None),
    Skip("cap_drop", "child:setup_capabilities", None,
         "setup_caps() and dropcaps_except() (conf.c)",
         "CapBnd in /proc/self/status as the host's root has it: lxc.cap.drop takes nothing away",
         ("child:setup_capabilities",), None, None),
    Skip("hostname", "child:setup_hostname", None,
         "setup_utsname() (conf.c), and lxc_setup_keyring(), which the same state does",
         "the host's hostname: a new uts namespace starts as a copy of its parent's (and the session "
         "keyring lxcsm was started with)",
         ("child:setup_hostname",), None, None),
)}


def parse(names: list[str]) -> tuple[str, ...]:
    """--lab-skip values (each one name or a comma-separated list) as SKIPS' names, in the
    table's order; ValueError names the unknown one and the valid ones."""
    chosen = set()
    for name in (n.strip() for value in names for n in value.split(",")):
        if name not in SKIPS:
            raise ValueError(f"--lab-skip {name}: no such step (steps: {', '.join(SKIPS)})")
        chosen.add(name)
    return tuple(name for name in SKIPS if name in chosen)


def refusal(skips: tuple[str, ...], acknowledged: bool, foreground: bool, command: list[str]) -> str | None:
    """Why a start may not leave these steps out, or None: lab mode must be asked for
    (--lab), watched (-F) and run only a command the student named."""
    if not skips:
        return "--lab without --lab-skip: name the steps to leave out" if acknowledged else None
    asked = ",".join(skips)
    if not acknowledged:
        return (f"--lab-skip {asked}: leaving out a step of the start is lab mode, for teaching only, never for a"
                f" real container; add --lab to say that is what you want")
    if not foreground:
        return f"--lab-skip {asked}: a lab start runs in the foreground only (-F), watched"
    if not command:
        return (f"--lab-skip {asked}: a lab start runs a command you name (-- COMMAND), never the container's"
                f" own init")
    return None


def banner(skips: tuple[str, ...]) -> str:
    """What `lxcsm start` prints before a lab start, whatever the log level."""
    lines = ["lxcsm: LAB MODE (for teaching, never for production): this start leaves out"]
    for name in skips:
        skip = SKIPS[name]
        lines.append(f"  {name}: {skip.left_out()} (LXC: {skip.lxc})")
        lines.append(f"    the container sees {skip.sees}")
    return "\n".join(lines)


def config_without(config: Config, skips: tuple[str, ...]) -> Config:
    """The config the states read with these steps left out."""
    for name in skips:
        change = SKIPS[name].config
        if change is not None:
            config = change(config)
    return config


class Passed(namedtuple("Passed", ("skip", "entered", "instead"))):
    """What the supervisor does at one state a lab skip concerns."""
    skip: Skip
    entered: bool                       # False: passed over, its normal trigger fired
    instead: Callable[[], None] | None  # run where the state would have been

    __slots__ = ()


def concerned(skips: tuple[str, ...]) -> dict[tuple[str, str], Passed]:
    """(side, state) -> what the supervisor does there, for every state these skips concern."""
    found = {}
    for name in skips:
        skip = SKIPS[name]
        first = skip.not_entered[0] if skip.not_entered else None
        for where in (skip.state, *skip.not_entered):
            side, _, state = where.partition(":")
            found[(side, state)] = Passed(skip, entered=where not in skip.not_entered,
                                          instead=skip.instead if where == first else None)
    return found


# LXC's own default (its config/common.conf drops these): the lab container drops them too.
LAB_CAP_DROP = "mac_admin mac_override sys_time sys_module sys_rawio"


def make_container(lxcpath: str, name: str, busybox: str = "/bin/busybox") -> str:
    """A throwaway container for the lab: LXCPATH/NAME/rootfs, a busybox system like the one
    LXC's busybox template makes (a static busybox - Debian's busybox-static - and a link per
    applet), and its config with LXC's usual proc, sys and capability settings.  Returns the
    config's path.  OSError (or CalledProcessError from `busybox --list`) if it cannot be made."""
    root = os.path.join(lxcpath, name, "rootfs")
    for directory in ("bin", "sbin", "dev", "etc", "proc", "sys", "tmp", "root", "run"):
        os.makedirs(os.path.join(root, directory), exist_ok=True)
    shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc", "passwd"), "w") as passwd:
        passwd.write("root:x:0:0:root:/root:/bin/sh\n")
    config = os.path.join(lxcpath, name, "config")
    with open(config, "w") as lines:
        lines.write(f"lxc.uts.name = {name}\n"
                    f"lxc.rootfs.path = dir:{root}\n"
                    "lxc.net.0.type = empty\n"
                    "lxc.mount.auto = proc:mixed sys:ro\n"
                    f"lxc.cap.drop = {LAB_CAP_DROP}\n")
    return config


def plan(skips: tuple[str, ...], side: str, state: str, steps: list[str]) -> list[str]:
    """A state's plan (its module's plan()) as a start leaving out these steps runs it: for
    `lxcsm plan` and the pauses of --break-at and --step."""
    passed = concerned(skips).get((side, state)) if skips else None
    if passed is None:
        return steps
    if not passed.entered:
        instead = passed.instead.__doc__.splitlines()[0] if passed.instead and passed.instead.__doc__ else None
        return [f"LAB MODE: not entered ({passed.skip.name})" + (f"; instead: {instead}" if instead else "")]
    return [f"LAB MODE: without {passed.skip.part} ({passed.skip.name})", *steps]
