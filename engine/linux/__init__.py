"""The kernel and the host: system calls, cgroupfs, netlink, seccomp, terminals, paths.

Knows no config and no machine: each module wraps one concern of the host
and takes plain values.  Imports only the leaves (log, errors).
"""
