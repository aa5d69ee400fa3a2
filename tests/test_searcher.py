"""What Optuna is told about each trial: COMPLETE, PRUNED with intermediate values, or FAIL."""

from __future__ import annotations

import subprocess
import sys

from search.searcher import PlatformOptunaSearch
from tests.conftest import REPO


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)


def drive(searcher: PlatformOptunaSearch) -> None:
    """Tune's protocol: every result but the last goes to ``on_trial_result``; the last one
    (the result a scheduler stops a trial on, or the final epoch) only to ``on_trial_complete``."""
    for trial_id in ("full", "stopped", "diverged"):
        assert searcher.suggest(trial_id) is not None
    for epoch, value in enumerate((0.2, 0.4), 1):
        searcher.on_trial_result("full", {"acc": value, "epoch": epoch,
                                          "training_iteration": epoch})
    searcher.on_trial_complete("full", {"acc": 0.5, "epoch": 3, "training_iteration": 3})
    searcher.on_trial_complete("stopped", {"acc": 0.1, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete("diverged", {"acc": float("nan"), "epoch": 1,
                                            "training_iteration": 1,
                                            "failure_reason": "diverged: loss nan"})


def test_trials_are_told_complete_pruned_or_failed():
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3, seed=0)
    drive(searcher)
    trials = searcher._ot_study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert trials[0].value == 0.5 and trials[0].intermediate_values == {1: 0.2, 2: 0.4, 3: 0.5}
    # stopped on its first result: that result must still reach Optuna as an intermediate value
    assert trials[1].intermediate_values == {1: 0.1}
    assert trials[2].intermediate_values == {}


def test_trials_are_mirrored_into_a_persistent_journal(tmp_path):
    import pickle

    from tracking.optuna_store import StudyMirror, load_study

    mirror = StudyMirror(tmp_path / "optuna.log", "exp", "max")
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3, seed=0,
                                    mirror=mirror)
    searcher.suggest("running")
    searcher.on_trial_result("running", {"acc": 0.3, "training_iteration": 1})
    drive(searcher)
    study = load_study(tmp_path, "exp")
    by_ray_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_ray_id) == {"running", "full", "stopped", "diverged"}
    assert by_ray_id["running"].state.name == "RUNNING"
    assert by_ray_id["running"].intermediate_values == {1: 0.3}
    assert by_ray_id["full"].state.name == "COMPLETE" and by_ray_id["full"].value == 0.5
    assert by_ray_id["full"].intermediate_values == {1: 0.2, 2: 0.4, 3: 0.5}
    assert by_ray_id["stopped"].state.name == "PRUNED"
    assert by_ray_id["stopped"].intermediate_values == {1: 0.1}
    assert by_ray_id["diverged"].state.name == "FAIL"
    assert by_ray_id["full"].params == searcher._ot_study.trials[1].params

    # a resumed search (searcher unpickled from Tune's state) reopens the journal and marks
    # trials it never heard of (started after the saved state) as failed orphans
    state_file = tmp_path / "searcher.pkl"
    searcher.save(str(state_file))
    mirror.started("ghost", {"x": 0.5}, searcher._ot_study.trials[0].distributions)
    restored = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3, seed=0)
    restored.restore(str(state_file))
    restored.on_trial_complete("running", {"acc": 0.6, "training_iteration": 3})
    trials = {t.user_attrs["ray_trial_id"]: t for t in load_study(tmp_path, "exp").trials}
    assert trials["ghost"].state.name == "FAIL" and trials["ghost"].user_attrs["orphaned"]
    assert trials["running"].state.name == "COMPLETE" and trials["running"].value == 0.6
    assert pickle.loads(pickle.dumps(mirror)).path == mirror.path


def test_pruning_semantics_can_be_switched_off():
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3,
                                    tell_pruned=False, seed=0)
    searcher.suggest("stopped")
    searcher.on_trial_complete("stopped", {"acc": 0.1, "epoch": 1, "training_iteration": 1})
    assert searcher._ot_study.trials[0].state.name == "COMPLETE"


def test_progress_line_counts_and_estimates():
    from types import SimpleNamespace

    from search.progress import ProgressLine

    progress = ProgressLine(total=4, metric="val_top1", mode="max", max_epochs=3, every=1e9)
    progress.start -= 60  # a minute in
    trial = SimpleNamespace(trial_id="a1", status="RUNNING", last_result={"epoch": 1})
    progress.on_trial_result(0, [trial], trial, {"val_top1": 0.25})
    progress.on_trial_result(0, [trial], trial, {"val_top1": 0.2})
    progress.on_trial_complete(0, [trial], trial)  # stopped after 1 of 3 epochs
    line = progress.line(running=1)
    assert "trials 1/4 done (1 stopped early), 1 running" in line
    assert "best val_top1 0.25 (trial_a1)" in line
    assert "~3m" in line  # 60 s per trial, 3 to go


def test_a_trial_that_just_ended_is_not_counted_running(capsys):
    """Ray calls on_trial_complete while the trial's status is still RUNNING: the line of a
    search's last trial read "trials 2/2 done, 1 running"."""
    from types import SimpleNamespace

    from search.progress import ProgressLine

    progress = ProgressLine(total=2, metric="val_top1", mode="max", max_epochs=1, every=1e9)
    trials = [SimpleNamespace(trial_id=f"t{i}", status="RUNNING", last_result={"epoch": 1})
              for i in range(2)]
    progress.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    progress.on_trial_error(0, trials, trials[1])
    lines = capsys.readouterr().out.splitlines()
    assert "trials 1/2 done, 1 running" in lines[0], lines
    assert "trials 2/2 done (1 failed), 0 running" in lines[1], lines


def test_an_unwritable_journal_never_stops_the_search(tmp_path, capsys):
    from tracking.optuna_store import StudyMirror

    (tmp_path / "optuna.log").mkdir()  # a folder where the journal file should be
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3, seed=0,
                                    mirror=StudyMirror(tmp_path / "optuna.log", "exp", "max"))
    drive(searcher)
    assert [t.state.name for t in searcher._ot_study.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "Optuna journal" in line]
    assert len(warnings) == 1, warnings  # said once, not once per event


def test_intermediate_values_are_indexed_by_epoch_and_a_replayed_epoch_is_told_once():
    """A multi-worker trial resumed from its Ray Train checkpoint restarts Tune's
    ``training_iteration`` at 1 and reports its restored epoch again: Optuna must still see
    each epoch once, at its own step."""
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3, seed=0)
    assert searcher.suggest("ddp") is not None
    searcher.on_trial_result("ddp", {"acc": 0.2, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_result("ddp", {"acc": 0.3, "epoch": 2, "training_iteration": 2})
    # the driver restarts; the trial reports epoch 2 again, then epoch 3 last
    searcher.on_trial_result("ddp", {"acc": 0.3, "epoch": 2, "training_iteration": 1})
    searcher.on_trial_complete("ddp", {"acc": 0.5, "epoch": 3, "training_iteration": 2})
    trial = searcher._ot_study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.value == 0.5
    assert trial.intermediate_values == {1: 0.2, 2: 0.3, 3: 0.5}


def test_schedulers_count_epochs_not_results():
    from search.driver import TIME_ATTR, make_scheduler

    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=9, seed=0)
    for name in ("asha", "hyperband", "median"):
        scheduler = make_scheduler(name, 9, 1, searcher)
        assert scheduler._time_attr == TIME_ATTR == "epoch", name


def test_the_journal_keeps_an_enqueued_configuration_outside_the_space(tmp_path, capsys):
    """The seed configuration is evaluated first, also where it lies outside the ranges its
    space samples from (``resnet1d`` on 1024-point patterns: its last stage strides 3, the
    space at most 2 there). Optuna samples with it but refused to store it, so the mirror
    broke at the seed and the search's journal (optuna-dashboard) stayed empty."""
    import optuna

    from datasets import DataInfo
    from search_spaces import registry
    from tracking.optuna_store import StudyMirror, load_study

    space = registry()["resnet1d"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(dict(space.seed_config))
    trial = study.ask()
    space.suggest(trial, DataInfo(input_shape=(1, 1024), num_classes=14))
    assert trial.params["stages/3/stride"] == space.seed_config["stages/3/stride"]
    outside = [name for name, dist in trial.distributions.items()
               if not dist._contains(dist.to_internal_repr(trial.params[name]))]
    assert outside, "the seed lies inside the space: this test no longer tests anything"
    mirror = StudyMirror(tmp_path / "optuna.log", "exp", "max")
    mirror.started("seed", trial.params, trial.distributions)
    mirror.reported("seed", 1, 0.5)
    mirror.finished("seed", optuna.trial.TrialState.COMPLETE, 0.5)
    stored = load_study(tmp_path, "exp").trials
    assert "Optuna journal" not in capsys.readouterr().err
    assert len(stored) == 1 and stored[0].params == trial.params
    assert stored[0].state.name == "COMPLETE" and stored[0].intermediate_values == {1: 0.5}


def test_a_widened_distribution_holds_the_value():
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from tracking.optuna_store import containing

    def holds(distribution, value) -> bool:
        try:
            return distribution._contains(distribution.to_internal_repr(value))
        except ValueError:
            return False

    inside = FloatDistribution(0.0, 1.0)
    assert containing(inside, 0.5) is inside
    for before, value in [(IntDistribution(1, 2), 3), (IntDistribution(3, 25, step=2), 4),
                          (IntDistribution(1, 8, log=True), 0),
                          (FloatDistribution(1e-4, 3e-3, log=True), 0.5),
                          (FloatDistribution(0.0, 0.3, step=0.1), 0.35),
                          (CategoricalDistribution((32, 64)), 128)]:
        assert not holds(before, value)
        after = containing(before, value)
        assert holds(after, value), (before, value, after)
        assert type(after) is type(before)


def test_a_write_cut_short_leaves_the_shared_journal_readable(tmp_path):
    """A journal append cut short by the file system (disk full, a quota: here the process's
    file-size limit, a real failed write) left a line without its end; the next append, by
    any search in the same --storage, continued it, and every study in the file became
    unreadable. Also a line torn by a kill mid-write is dropped before the next append."""
    import optuna

    from tracking.optuna_store import StudyMirror, load_study

    journal = tmp_path / "optuna.log"
    distribution = optuna.distributions.CategoricalDistribution(["x" * 50_000, "y"])
    first = StudyMirror(journal, "first", "max")
    first.started("a", {"c": "y"}, {"c": distribution})
    first.finished("a", optuna.trial.TrialState.COMPLETE, 0.5)
    writer = f"""
import resource, signal, sys
sys.path.insert(0, {str(REPO)!r})
import optuna
from tracking.optuna_store import StudyMirror
mirror = StudyMirror({str(journal)!r}, "second", "max")
mirror._open()  # the study exists; now only {journal.stat().st_size + 20_000} bytes may be
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({journal.stat().st_size} + 20_000,) * 2)
dist = optuna.distributions.CategoricalDistribution(["x" * 50_000, "y"])
mirror.started("b", {{"c": "y"}}, {{"c": dist}})  # a 50 kB line: the write fails part-way
print("broken" if mirror._broken else "written")
"""
    result = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "broken", (result.stdout, result.stderr[-2000:])
    assert "create trial failed" in result.stderr
    assert journal.read_bytes().endswith(b"\n"), "a torn line was left in the journal"
    first.started("c", {"c": "y"}, {"c": distribution})  # the next append, as before
    assert [t.user_attrs["ray_trial_id"] for t in load_study(tmp_path, "first").trials] == \
        ["a", "c"]
    with journal.open("ab") as f:  # a kill in the middle of a write
        f.write(b'{"op_code":4,"worker_id":"w","study_id":0,"datetime_st')
    first.started("d", {"c": "y"}, {"c": distribution})
    assert [t.user_attrs["ray_trial_id"] for t in load_study(tmp_path, "first").trials] == \
        ["a", "c", "d"]
