"""Run a search: Ray start or join, the Optuna searcher and the scheduler, the Tuner, progress
and the end-of-search summary. The API for notebooks and scripts::

    from search import SearchSettings, run_search

    result = run_search(SearchSettings(space="resnet1d", trials=20, max_epochs=3))
    result.best_config, result.trials  # the best configuration; every trial as a DataFrame
"""

from __future__ import annotations

from search.settings import SearchResult, SearchSettings

__all__ = ["SearchResult", "SearchSettings", "run_search"]


def run_search(settings: SearchSettings) -> SearchResult:
    """Run (or resume) one search and return its result; raises ``common.errors.BadInput``
    (with a message naming the fix) for settings or data that cannot be used, and
    ``common.errors.SearchStopped`` (its message names the ``--resume`` command) where a disk
    filled or the MLflow store stopped answering during the search."""
    from search.driver import run_search as run

    return run(settings)
