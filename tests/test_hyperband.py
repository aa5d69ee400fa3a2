"""``--scheduler hyperband``: Ray's brackets follow the brackets Optuna's study assigned, and
the sampler sees only the trials of the trial's own bracket."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import optuna

from search.driver import make_scheduler
from search.searcher import BracketedHyperBand, PlatformOptunaSearch


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)


def searcher(hyperband):
    return PlatformOptunaSearch(space=space, metric="score", mode="max", max_epochs=9,
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                hyperband=hyperband)


def test_each_trial_runs_in_the_bracket_the_study_gave_it():
    found = searcher((1, 9, 3))
    assert found.n_brackets == 3  # floor(log3(9 / 1)) + 1
    scheduler = make_scheduler("hyperband", 9, 1, found)
    assert isinstance(scheduler, BracketedHyperBand)
    scheduler.set_search_properties("score", "max")
    # Ray's bracket s first compares trials at epoch grace * 3**s, as Optuna's bracket s
    assert [b._rungs[-1][0] for b in scheduler._brackets] == [1, 3, 9]
    placed = Counter()
    for i in range(120):
        trial_id = f"t{i}"
        assert found.suggest(trial_id) is not None
        scheduler.on_trial_add(None, SimpleNamespace(trial_id=trial_id))
        bracket = found.bracket_of(trial_id)
        assert scheduler._trial_info[trial_id] is scheduler._brackets[bracket]
        placed[bracket] += 1
    # Hyperband's allocation: most trials in the aggressive bracket, some in each other
    assert placed[0] > placed[1] > 0 and placed[2] > 0
    # TPE's view of the study under Hyperband: the trials of one bracket only
    study = found._ot_study
    frozen = study.get_trials(deepcopy=False)[5]
    view = optuna.pruners._filter_study(study, frozen)
    mine = found.bracket_of("t5")
    assert 0 < len(view.get_trials(deepcopy=False)) < len(study.get_trials(deepcopy=False))
    assert all(study.pruner._get_bracket_id(study, t) == mine
               for t in view.get_trials(deepcopy=False))


def test_without_hyperband_no_bracket_and_one_study_view():
    found = searcher(None)
    assert found.n_brackets == 1
    found.suggest("a")
    assert found.bracket_of("a") is None
    assert isinstance(found._ot_study.pruner, optuna.pruners.NopPruner)
