"""LXC hooks (lxc.hook.*): where running them will live.

Not run yet: a config's hooks are parsed and checked - preflight refuses a hook
that is missing or not executable, since LXC would fail when it came to run it -
and a start warns that each is not supported yet.  Running them at their points
of a start (pre-start and start-host in the monitor, pre-mount, mount, autodev
and start in the child, stop and post-stop after init) belongs here, as one
runner and a table binding each hook kind to its state.
"""
