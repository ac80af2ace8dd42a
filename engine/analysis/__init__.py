"""Read-only views of a start: plan, explain, graph, timeline, trace-diff.

They read the tables, the state modules and logs; they never run a machine,
parse argv or print (the cli does both).
"""
