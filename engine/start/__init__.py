"""The runtime: the machines' tables, the supervisor that runs them, the contexts
the states share, the monitor and child processes, the undo record, breakpoints
and the flight record kept after a start."""
