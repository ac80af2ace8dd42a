"""The one error a state raises on purpose, and how any error is worded for the user.

A leaf: imports nothing of lxcsm, so every layer (the kernel calls, hooks,
states, the runtime) can raise and word errors the same way.
"""

from __future__ import annotations

import errno


class StateError(Exception):
    """A state could not do its work, for a reason its message states in full.

    The supervisor reports these as they are; any other exception is a bug,
    and its traceback is logged at DEBUG as well.
    """


def describe(err: BaseException) -> str:
    """One line for an error: an OSError as 'strerror (ECODE): filename', anything else its text."""
    if isinstance(err, OSError) and err.errno:
        text = f"{err.strerror} ({errno.errorcode.get(err.errno, err.errno)})"
        return f"{text}: {err.filename}" if err.filename else text
    return str(err) or type(err).__name__
