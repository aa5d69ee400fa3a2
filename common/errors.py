"""Errors every layer may raise. The command line turns any :class:`BadInput` into one line
on stderr and exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class BadInput(Exception):
    """Input the user must fix; printed as one line, exit code 2."""


class DataError(BadInput, ValueError):
    """A data file or data request that cannot be used; the message names the fix."""


class UnknownSpaceError(BadInput, KeyError):
    """Raised for a space name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])
