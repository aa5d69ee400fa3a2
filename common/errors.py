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


class OutOfSpace(Exception):
    """A write failed because a disk or quota is full; printed as one line with the way to
    continue, exit code 1 (the search's finished work is kept)."""



def full_disk_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` of a full disk in ``exc`` or the exceptions it was raised from (also
    SQLite's "database or disk is full", which carries no errno)."""
    import errno

    wanted = {errno.ENOSPC, errno.EFBIG} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in wanted:
            return exc
        if "database or disk is full" in str(exc):  # SQLite's own words, no errno
            return OSError(errno.ENOSPC, "SQLite: database or disk is full")
        exc = exc.__cause__ or exc.__context__
    return None
