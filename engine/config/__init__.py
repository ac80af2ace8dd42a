"""lxc.container.conf(5) in, a frozen Config out: value parsers (values), the key table
(keys), the Config and its queries (model), the reading of files (loader: includes, fstab,
-s overrides), LXC's seccomp policy language (seccomp_policy), and the preflight checks a
start makes before it changes anything (preflight)."""
