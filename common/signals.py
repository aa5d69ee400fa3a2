"""SIGTERM handled as Ctrl-C, for the long-running commands (a search, ``train``)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def sigterm_as_interrupt(what: str = "the search") -> Iterator[None]:
    """Inside the block, SIGTERM (a batch system's time limit, ``kill``, a job script's stop)
    raises SIGINT, so it stops ``what`` as Ctrl-C does: Tune's own SIGINT handler during a
    search (state saved once more, runs KILLED, the resume command printed), Python's
    KeyboardInterrupt elsewhere. Without it Ray's handler ended the driver at once and left
    every MLflow run RUNNING. A repeated SIGTERM is ignored: a batch system signals every
    process of the job and its script then signals the driver again, which must not cut the
    orderly stop short (Ctrl-C again or SIGKILL stops at once). No-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # a handler installed outside Python (Ray's): the default instead
        previous = signal.SIG_DFL
    received: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        if received:
            return
        received.append(signum)
        print(f"SIGTERM received: stopping {what} as Ctrl-C does (Ctrl-C again or SIGKILL "
              "stops it at once)", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is interrupt:
            signal.signal(signal.SIGTERM, previous)
