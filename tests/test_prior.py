"""``--prior``: the first proposals lie around the centre, and the prior's share decays.

Real Optuna studies with the real samplers (no Ray): the prior sampler wraps them as the
search does."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest

from common.errors import BadInput
from search.prior import MOVE, PRIOR_ATTR, WIDTH, PriorSampler, prior_centre, read_prior

optuna.logging.set_verbosity(optuna.logging.WARNING)

CENTRE = {"lr": 1e-3, "dropout": 0.2, "layers": 3, "batch_size": 64, "act": "gelu"}
ACTS = ["relu", "gelu", "silu", "tanh"]


def define(trial: optuna.Trial) -> dict:
    params = {
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "layers": trial.suggest_int("layers", 1, 6),
        "batch_size": trial.suggest_int("batch_size", 16, 512, log=True),
        "act": trial.suggest_categorical("act", ACTS),
    }
    if params["layers"] > 4:  # conditional: the centre never has it
        params["extra"] = trial.suggest_float("extra", 0.0, 1.0)
    return params


def ask_many(sampler, n: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=sampler)
    trials = [study.ask() for _ in range(n)]
    for trial in trials:
        define(trial)
    return study.get_trials()


def test_first_proposals_lie_around_the_seed():
    prior = ask_many(PriorSampler(optuna.samplers.RandomSampler(seed=1), CENTRE, seed=0), 400)
    uniform = ask_many(optuna.samplers.RandomSampler(seed=1), 400)
    # nothing has finished: every proposal is a prior trial, marked as such in the study
    assert all(t.user_attrs.get(PRIOR_ATTR) for t in prior)

    def decades(trials):
        return [abs(math.log10(t.params["lr"] / CENTRE["lr"])) for t in trials]

    # log-scaled float: a normal step of WIDTH of the 4-decade range, on the log scale
    assert statistics.median(decades(prior)) == pytest.approx(0.674 * WIDTH * 4, rel=0.2)
    assert statistics.median(decades(uniform)) > 2 * statistics.median(decades(prior))
    lrs = [t.params["lr"] for t in prior]
    assert min(lrs) >= 1e-5 and max(lrs) <= 1e-1
    # linear float: centred, spread WIDTH of its range
    dropouts = [t.params["dropout"] for t in prior]
    assert statistics.median(dropouts) == pytest.approx(0.2, abs=0.03)
    assert statistics.pstdev(dropouts) == pytest.approx(WIDTH * 0.5, rel=0.25)
    # integers and choices: kept with 1 - MOVE, else a neighbour
    for name, neighbours in (("layers", {2, 4}), ("batch_size", {32, 128}),
                             ("act", {"relu", "silu"})):
        values = [t.params[name] for t in prior]
        kept = sum(v == CENTRE[name] for v in values) / len(values)
        assert kept == pytest.approx(1 - MOVE, abs=0.07), name
        assert set(values) - {CENTRE[name]} <= neighbours, name
    # a conditional parameter the centre lacks comes from the wrapped sampler
    assert not any("extra" in t.params for t in prior)


def test_the_prior_share_decays_as_trials_finish():
    sampler = PriorSampler(optuna.samplers.RandomSampler(seed=2), CENTRE, seed=0)
    study = optuna.create_study(sampler=sampler)
    for _ in range(95):
        trial = study.ask()
        define(trial)
        study.tell(trial, 0.0)
    for _ in range(400):  # 95 finished: 5 / (5 + 95) = 1 in 20
        study.ask()
    later = study.get_trials()[95:]
    share = sum(bool(t.user_attrs.get(PRIOR_ATTR)) for t in later) / len(later)
    assert share == pytest.approx(sampler.prior_probability(95), abs=0.03)
    assert sampler.prior_probability(0) == 1.0 and sampler.prior_probability(5) == 0.5


def test_a_centre_outside_the_range_is_moved_inside_and_an_unknown_choice_is_not_used():
    centre = {"lr": 5.0, "dropout": -1.0, "layers": 99, "batch_size": 1, "act": "mish"}
    trials = ask_many(PriorSampler(optuna.samplers.RandomSampler(seed=3), centre, seed=0), 100)
    assert all(1e-5 <= t.params["lr"] <= 1e-1 for t in trials)
    assert all(t.params["layers"] in (5, 6) for t in trials)
    assert all(t.params["batch_size"] in (16, 32) for t in trials)
    assert len({t.params["act"] for t in trials}) > 1  # the wrapped sampler's choices


def test_with_tpe_the_prior_region_is_where_the_search_starts():
    """TPE with a good prior (the seed's lr is the best): its first ten trials (TPE's random
    start-up, most of them the prior's) land closer to the best than TPE's own."""
    def objective(trial):
        params = define(trial)
        return -abs(math.log10(params["lr"] / CENTRE["lr"]))

    def first_ten(sampler):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=10)
        return statistics.median(-t.value for t in study.trials)

    with_prior = [first_ten(PriorSampler(optuna.samplers.TPESampler(seed=s), CENTRE, seed=s))
                  for s in range(10)]
    without = [first_ten(optuna.samplers.TPESampler(seed=s)) for s in range(10)]
    assert statistics.median(with_prior) < 0.75 * statistics.median(without)


def write(path, text):
    path.write_text(text)
    return path


def test_prior_file_is_read_and_checked(tmp_path, tiny_data):
    from search_spaces import get_space

    space = get_space("resnet1d")
    info = tiny_data("xrd").info
    good = write(tmp_path / "best.yaml", "space: resnet1d\nsource: {experiment: x}\n"
                 "config: {lr: 0.001, batch_size: 32}\n")
    centre = prior_centre(str(good), space, info)
    assert centre["lr"] == 0.001 and centre["batch_size"] == 32
    assert {k: v for k, v in centre.items() if k not in ("lr", "batch_size")} == \
        {k: v for k, v in space.seed_config.items() if k not in ("lr", "batch_size")}
    assert prior_centre("seed", space, info) == dict(space.seed_config)
    assert prior_centre("none", space, info) is None
    cases = {
        "other.yaml": ("space: etmiss\nconfig: {lr: 0.1}\n", "is for space 'etmiss'"),
        "empty.yaml": ("config: {}\n", "non-empty 'config:'"),
        "bad.yaml": ("config: [\n", "not valid YAML"),
        "unknown.yaml": ("config: {nope: 1}\n", "nope: unknown parameter"),
        "type.yaml": ("config: {lr: fast}\n", "lr: 'fast' is not a number"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(BadInput, match=message):
            read_prior(write(tmp_path / name, text), space, info)
    with pytest.raises(BadInput, match="cannot read it"):
        read_prior(tmp_path / "missing.yaml", space, info)
