"""python -m lxcsm.engine.cli: the same as the `lxcsm` command."""

from lxcsm.engine.cli import run

run()
