"""Wire formats and their typed ends: the monitor/child sync channel, and LXC's
command socket (its shared format, the monitor's server, the tools' client)."""
