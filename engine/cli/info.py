"""lxcsm info: a container's state, init's pid and its resource figures, like lxc-info.

`lxcsm info NAME` prints, as lxc-info does (same labels, same layout, sizes
humanized the same way unless -H): Name, State, PID while it runs, and the
figures of its cgroups - CPU use, BlkIO use, Memory use, KMem use - read the
way lxc-info reads them: from the directories the monitor hands out
(GET_LIMIT_CGROUP_FD), in the files of the cgroup v1 controllers.  Where the
container's cgroup is a cgroup2 one (a cgroup2-only host), where lxc-info
finds none of those files and prints no figure, the same figures come from
cgroup2's files (cpu.stat, io.stat, memory.current, memory.stat's kernel).
Pids (pids.current) is lxcsm's addition.  -s, -p and -S pick parts.  Exit 0,
also for a stopped container ("State: STOPPED"); 1 for one that is neither
running nor has LXCPATH/NAME/config, or if the monitor cannot be asked.

While the container is STARTING (lxcsm's monitor only: it answers lxcsm's
START_STATUS), info shows the start itself instead of figures: how long it
has taken, each machine's state and for how long, the hook running now (its
side, state, command, pid, how long) with its output so far, and the
breakpoint it is paused at.  `--start` shows the same of a running
container's start.  A container started in lab mode (`lxcsm start --lab
--lab-skip STEP`) says so first, in a LAB MODE line naming the steps left out.
"""

from __future__ import annotations

import os

from lxcsm.engine.cli.cgroup import NoCgroup, cgroup_dir
from lxcsm.engine.cli.options import Parser, add_name, container_name, fail, lxcpath
from lxcsm.engine.linux import cgroup_files
from lxcsm.engine.protocol import command_client
from lxcsm.engine.protocol.command_socket import Cmd, LxcState
from lxcsm.engine.protocol.start_status import decode

SUMMARY = "show a container's state, init's pid and its CPU, I/O, memory and pids figures (like lxc-info)"


def add_options(parser: Parser) -> None:
    parser.error_status = 1
    add_name(parser)
    parser.add_argument("-s", "--state", action="store_true", help="show the state")
    parser.add_argument("-p", "--pid", action="store_true", help="show init's pid")
    parser.add_argument("-S", "--stats", action="store_true", help="show the CPU, I/O, memory and pids figures")
    parser.add_argument("-H", "--no-humanize", action="store_true",
                        help="print raw numbers (and a single value alone, as lxc-info -H)")
    parser.add_argument("--start", action="store_true",
                        help="show the start: its machines' states, the running hook, the pause "
                             "(always while STARTING)")


def run(parser: Parser, args) -> int:
    name, path = container_name(parser, args), lxcpath(args)
    everything = not (args.state or args.pid or args.stats)
    alone = args.no_humanize and (args.state + args.pid) == 1 and not args.stats
    humanize = not args.no_humanize

    def show(label: str, value: str) -> None:
        print(value if alone else f"{label:<15} {value}")

    try:
        state = command_client.get_state(path, name)
        if state == LxcState.STOPPED and not os.path.exists(os.path.join(path, name, "config")):
            return fail(f"{name} doesn't exist")   # as lxc-info: neither running nor defined
        if everything:
            show("Name:", name)
        if everything or args.state:
            show("State:", state.name)
        if state != LxcState.STOPPED and (everything or args.pid):
            reply = command_client.call(path, name, Cmd.GET_INIT_PID)
            if reply is not None and reply.ret == 0 and reply.value > 0:
                show("PID:", str(reply.value))
        watching = args.start or (everything and state == LxcState.STARTING)
        # Asked of a running container too: a lab start says so whatever else is shown.
        status = start_status(path, name) if state != LxcState.STOPPED and (watching or everything) else None
        if status is not None and status.get("lab_skipped"):
            show("LAB MODE:", f"this start left out {', '.join(status['lab_skipped'])} (lxcsm start --lab-skip):"
                              " a teaching container, not a real one")
        for label, value in start_lines(status) if status is not None and watching else ():
            show(label, value)
        if state != LxcState.STOPPED and (everything or args.stats) and state != LxcState.STARTING:
            for label, value in figures(path, name, humanize):
                show(label, value)
    except command_client.MonitorError as err:
        return fail(str(err))
    return 0


def start_status(path: str, name: str) -> dict | None:
    """The monitor's START_STATUS; None if it is gone or is not lxcsm's (LXC: -ENOSYS)."""
    reply = command_client.call(path, name, Cmd.START_STATUS)
    if reply is None or reply.ret != 0:
        return None
    return decode(reply.data)


def start_lines(status: dict) -> list[tuple[str, str]]:
    """(label, value) of what a start is doing, from START_STATUS."""
    lines = []
    if status["running_for"] is None:
        lines.append(("Starting for:", f"{status['start_for']:.1f} s"))
    else:
        lines.append(("Started in:", f"{status['start_for']:.3f} s, running for {status['running_for']:.1f} s"))
    for side in ("monitor", "child"):
        machine = status["machines"].get(side)
        if machine is not None:
            lines.append((f"{side.capitalize()} state:", f"{machine['state']} (for {machine['for']:.1f} s)"))
    hook = status["hook"]
    if hook is not None:
        lines.append(("Hook:", f"{hook['kind']} ({hook['side']} state {hook['state']}), pid {hook['pid']}, "
                               f"running for {hook['for']:.1f} s: {hook['command']}"))
        lines += [("Hook output:", line) for line in hook["output"]]
    if status["paused"]:
        lines.append(("Paused before:", f"{status['paused']} (lxcsm continue)"))
    return lines


def figures(path: str, name: str, humanize: bool) -> list[tuple[str, str]]:
    """(label, value) of each figure the container's cgroups have, in lxc-info's order."""
    size = _size if humanize else str
    shown = []
    cpu = _either(_number(_read(path, name, "cpuacct", "cpuacct.usage")),
                  lambda: _scaled(_field(_read(path, name, "cpu", "cpu.stat", version=2), "usage_usec"), 1000))
    if cpu is not None:
        shown.append(("CPU use:", f"{cpu / 1e9:.2f} seconds" if humanize else str(cpu)))
    blkio = _either(_blkio_total(_read(path, name, "blkio", "blkio.throttle.io_service_bytes")),
                    lambda: _io_stat_total(_read(path, name, "io", "io.stat", version=2)))
    if blkio is not None:
        shown.append(("BlkIO use:", size(blkio)))
    memory = _either(_number(_read(path, name, "memory", "memory.usage_in_bytes")),
                     lambda: _number(_read(path, name, "memory", "memory.current", version=2)))
    if memory is not None:
        shown.append(("Memory use:", size(memory)))
    kmem = _either(_number(_read(path, name, "memory", "memory.kmem.usage_in_bytes")),
                   lambda: _field(_read(path, name, "memory", "memory.stat", version=2), "kernel"))
    if kmem is not None:
        shown.append(("KMem use:", size(kmem)))
    pids = _number(_read(path, name, "pids", "pids.current"))
    if pids is not None:
        shown.append(("Pids:", str(pids)))
    return shown


def _read(path: str, name: str, controller: str, key: str, version: int | None = None) -> str | None:
    """The container's cgroup file `key` (only from a cgroup of that version, if given); None
    if it has none."""
    try:
        fd, found = cgroup_dir(path, name, controller)
    except NoCgroup:
        return None
    try:
        if version is not None and found != version:
            return None
        return cgroup_files.read(fd, key)
    except OSError:
        return None
    finally:
        os.close(fd)


def _either(value: int | None, otherwise) -> int | None:
    """The v1 figure if there is one, else what otherwise() reads from cgroup2."""
    return value if value is not None else otherwise()


def _number(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _scaled(value: int | None, factor: int) -> int | None:
    return value * factor if value is not None else None


def _field(text: str | None, key: str) -> int | None:
    """The value of `key` in a "key value" per line file (cpu.stat, memory.stat)."""
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == key and words[1].isdigit():
            return int(words[1])
    return None


def _blkio_total(text: str | None) -> int | None:
    """blkio.throttle.io_service_bytes's last line, "Total N", as lxc-info takes it."""
    lines = (text or "").strip().splitlines()
    if lines and lines[-1].startswith("Total "):
        return _number(lines[-1][len("Total "):])
    return None


def _io_stat_total(text: str | None) -> int | None:
    """Bytes read and written, over every device of a cgroup2 io.stat ("MAJ:MIN rbytes=N wbytes=N ...")."""
    if text is None:
        return None
    total = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key in ("rbytes", "wbytes") and value.isdigit():
                total += int(value)
    return total


def _size(value: int) -> str:
    """A byte count as lxc-info humanizes it (size_humanize in lxc_info.c): two decimals, rounded
    as it rounds them."""
    if value > 1 << 30:
        return f"{value >> 30}.{(value & ((1 << 30) - 1)) // 10737419:02d} GiB"
    if value > 1 << 20:
        x = value + 5243
        return f"{x >> 20}.{((x & ((1 << 20) - 1)) * 100) >> 20:02d} MiB"
    if value > 1 << 10:
        x = value + 5
        return f"{x >> 10}.{((x & ((1 << 10) - 1)) * 100) >> 10:02d} KiB"
    return f"{value} bytes"
