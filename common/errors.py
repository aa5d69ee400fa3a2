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


class SearchStopped(Exception):
    """Something the search depends on failed under it (a full disk, a tracking store that
    stopped answering); printed as one line with the way to continue, exit code 1 (the
    search's finished work is kept)."""


class OutOfSpace(SearchStopped):
    """A write failed because a disk or quota is full."""



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


class TrackingFailed(RuntimeError):
    """An MLflow write of the search failed (its store stopped answering, after MLflow's own
    retries): the search stops, and ``--resume`` continues it once the store answers."""

    def __init__(self, tracking_uri: str, cause: BaseException):
        self.tracking_uri = tracking_uri
        self.reason = root_cause(cause)
        super().__init__(f"MLflow bookkeeping failed: {self.reason}")


def root_cause(exc: BaseException) -> str:
    """The first line of the innermost exception ``exc`` was raised from (``[Errno 111]
    Connection refused`` rather than MLflow's and urllib3's wrappers around it)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    text = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def transport_failure(exc: BaseException) -> str | None:
    """Why a request to an MLflow tracking server failed (its root cause, as
    :func:`root_cause` gives it) where ``exc`` is or was raised from a failed HTTP transport
    (refused, reset, timed out, retries exhausted); None for any other error."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.RequestException):
            return root_cause(exc)
        current = current.__cause__ or current.__context__
    return None
