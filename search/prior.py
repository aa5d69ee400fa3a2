"""``--prior``: what the user already knows, as a prior the searcher starts from.

A :class:`PriorSampler` wraps the searcher's own Optuna sampler. Each new trial is a *prior
trial* with probability ``weight / (weight + n)``, where ``n`` counts the trials that have
already finished (complete, stopped early or failed): the first proposals come from the prior,
and its share decays as evidence accumulates (with the default weight 5: one half after 5
finished trials, one fifth after 20, one in twenty after 95). Every other trial is proposed by
the wrapped sampler (TPE, ...), which learns from the prior trials like from any other, so a
good prior pulls the search towards its region and a bad one costs only its decaying share.

A prior trial draws each parameter around the prior's centre (the seed configuration, or a
file's configuration over it):

- floats: a normal step of ``WIDTH`` (15 %) of the searched range on the parameter's own scale
  (log for log-scaled ones), kept inside the range (reflected at the bounds), then rounded to
  the step where the parameter has one;
- integers and categorical choices: kept with probability ``1 - MOVE`` (0.6), otherwise moved
  to a neighbour (the next value on the parameter's grid, ×2/÷2 for log-scaled integers, or
  the next choice in the space's order) on either side with equal probability (at an edge,
  the one inside);
- a parameter the centre does not hold (a conditional part the seed switches off), or whose
  value the space no longer offers: proposed by the wrapped sampler.

The decision and every draw come from a generator seeded by ``--seed`` and the trial's number,
so a search is reproducible where the order of finished trials is.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optuna.samplers import BaseSampler

from common.errors import BadInput

WEIGHT = 5.0  # pseudo-trials the prior counts for (see the module doc)
WIDTH = 0.15  # standard deviation of a float's step, as a share of its searched range
MOVE = 0.4  # probability that an integer or a choice moves to a neighbour
PRIOR_ATTR = "scitune_prior"  # user attribute of a prior trial in the Optuna study

PRIOR_CHOICES = ("seed", "none")


def parse_prior_file(path: str | Path, space_name: str) -> dict[str, Any]:
    """The ``config:`` of FILE.yaml (an ``--export-best`` file, or ``config:`` written by hand,
    with an optional ``space:``), checked for form only; raises :class:`BadInput`."""
    import yaml

    path = Path(path)
    where = f"--prior {path}"
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadInput(f"{where}: cannot read it ({exc.strerror}); name an --export-best file "
                       "or 'seed' or 'none'") from None
    except UnicodeDecodeError:
        raise BadInput(f"{where}: not a text (UTF-8) file; name an --export-best file or "
                       "'seed' or 'none'") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"{where}: not valid YAML{at}; fix the syntax") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("config"), Mapping) \
            or not doc["config"]:
        raise BadInput(f"{where}: expected a non-empty 'config:' mapping (write one with "
                       "--export-best, or by hand: config: {lr: 0.001})")
    if doc.get("space") not in (None, space_name):
        raise BadInput(f"{where} is for space {doc['space']!r}, not {space_name!r}; fix --space "
                       "or the file")
    config = dict(doc["config"])
    nested = [k for k, v in config.items() if isinstance(v, Mapping | list)]
    if nested:
        raise BadInput(f"{where}: {nested[0]}: expected a single value")
    return config


def read_prior(path: str | Path, space: Any, info: Any) -> dict[str, Any]:
    """The configuration in FILE.yaml, its names and types checked against the space (whose
    parameters depend on the data's shape, ``info``); raises :class:`BadInput`."""
    from search.space_file import catalog, normalise

    config = parse_prior_file(path, space.name)
    fixed = normalise(config, catalog(space, info), f"--prior {Path(path)}")
    return {name: entry["fixed"] for name, entry in fixed.items()}


def prior_centre(choice: str | None, space: Any, info: Any) -> dict[str, Any] | None:
    """The centre of ``--prior CHOICE`` (None for ``none``): the seed configuration, updated
    with a file's values."""
    if choice in (None, "none"):
        return None
    centre = dict(space.seed_config)
    if choice != "seed":
        centre.update(read_prior(choice, space, info))
    return centre


def _reflect(x: float, low: float, high: float) -> float:
    """``x`` folded back into ``[low, high]`` at its bounds."""
    if high <= low:
        return low
    span = 2 * (high - low)
    x = (x - low) % span
    return low + (x if x <= high - low else span - x)


class PriorSampler(BaseSampler):
    """An Optuna sampler: prior trials drawn around ``centre``, the rest by ``base``."""

    def __init__(self, base: Any, centre: Mapping[str, Any], seed: int = 0,
                 weight: float = WEIGHT):
        self.base = base
        self.centre = dict(centre)
        self.seed = int(seed)
        self.weight = float(weight)
        self._prior_trials: set[int] = set()
        self._decided: set[int] = set()

    # -- the decision -----------------------------------------------------------------------
    def _rng(self, number: int, name: str = "") -> Any:
        import numpy as np

        return np.random.default_rng([self.seed, number, zlib.crc32(name.encode())])

    def is_prior_trial(self, number: int) -> bool:
        return number in self._prior_trials

    def prior_probability(self, finished: int) -> float:
        """Probability that the next trial is a prior trial after ``finished`` trials."""
        return self.weight / (self.weight + finished)

    def before_trial(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        if trial.number not in self._decided:
            self._decided.add(trial.number)
            finished = len(study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
            if self._rng(trial.number).random() < self.prior_probability(finished):
                self._prior_trials.add(trial.number)
                study._storage.set_trial_user_attr(trial._trial_id, PRIOR_ATTR, True)
        self.base.before_trial(study, trial)

    # -- Optuna's sampler interface ---------------------------------------------------------
    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        if self.is_prior_trial(trial.number):
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]
                        ) -> dict[str, Any]:
        if self.is_prior_trial(trial.number):
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        if self.is_prior_trial(trial.number) and name in self.centre:
            value = self.draw(distribution, self.centre[name], self._rng(trial.number, name))
            if value is not None:
                return value
        return self.base.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    # -- one draw ---------------------------------------------------------------------------
    @staticmethod
    def draw(distribution: Any, centre: Any, rng: Any) -> Any:
        """One value of ``distribution`` around ``centre`` (None where ``centre`` does not fit
        it: the caller asks the wrapped sampler)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if isinstance(distribution, CategoricalDistribution):
            choices = list(distribution.choices)
            index = next((i for i, c in enumerate(choices)
                          if type(c) is type(centre) and c == centre), None)
            if index is None:
                return None
            return choices[_neighbour(index, 0, len(choices) - 1, rng)]
        if isinstance(centre, bool) or not isinstance(centre, int | float) \
                or not math.isfinite(centre):
            return None
        low, high = distribution.low, distribution.high
        if isinstance(distribution, IntDistribution):
            value = int(min(max(round(centre), low), high))
            if distribution.log:
                grid = sorted({low, high, *(v for v in _doublings(value, low, high))})
            else:
                step = distribution.step
                value = low + round((value - low) / step) * step
                grid = list(range(low, high + 1, step))
            index = min(range(len(grid)), key=lambda i: abs(grid[i] - value))
            return int(grid[_neighbour(index, 0, len(grid) - 1, rng)])
        if isinstance(distribution, FloatDistribution):
            centre = float(min(max(centre, low), high))
            if distribution.log:
                a, b = math.log(low), math.log(high)
                x = _reflect(math.log(centre) + rng.normal(0.0, WIDTH * (b - a)), a, b)
                value = math.exp(x)
            else:
                value = _reflect(centre + rng.normal(0.0, WIDTH * (high - low)), low, high)
            if distribution.step is not None:
                value = low + round((value - low) / distribution.step) * distribution.step
            return float(min(max(value, low), high))
        return None


def _neighbour(index: int, first: int, last: int, rng: Any) -> int:
    """``index`` kept with probability ``1 - MOVE``, else moved by one to either side."""
    if last == first or rng.random() >= MOVE:
        return index
    if index == first:
        return index + 1
    if index == last:
        return index - 1
    return index + (1 if rng.random() < 0.5 else -1)


def _doublings(value: int, low: int, high: int) -> list[int]:
    """The log-grid of an integer parameter through ``value``: value·2^k inside the range."""
    out, v = [value], value
    while v * 2 <= high:
        v *= 2
        out.append(v)
    v = value
    while v // 2 >= max(low, 1) and v // 2 < v:
        v //= 2
        out.append(v)
    return out
