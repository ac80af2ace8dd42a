"""lxc.container.conf(5) in, a frozen Config out: value parsers, the key table,
the loader (includes, fstab, -s overrides), LXC's seccomp policy language, and
the preflight checks a start makes before it changes anything."""
