"""lxcsm's engine.  __version__ is the package's version, defined here once: `lxcsm --version`
reads it for free, where asking the installed metadata (importlib.metadata) costs tens of ms."""

__version__ = "0.1.0"
