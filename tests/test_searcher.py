"""What Optuna is told about each trial: COMPLETE, PRUNED with intermediate values, or FAIL."""

from __future__ import annotations

from experiment.searcher import PlatformOptunaSearch


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)


def test_trials_are_told_complete_pruned_or_failed():
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3, seed=0)
    for trial_id in ("full", "stopped", "diverged"):
        assert searcher.suggest(trial_id) is not None
    for epoch, value in enumerate((0.2, 0.4, 0.5), 1):
        searcher.on_trial_result("full", {"acc": value, "epoch": epoch,
                                          "training_iteration": epoch})
    searcher.on_trial_complete("full", {"acc": 0.5, "epoch": 3, "training_iteration": 3})
    searcher.on_trial_result("stopped", {"acc": 0.1, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"acc": 0.1, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_result("diverged", {"acc": float("nan"), "epoch": 1,
                                          "training_iteration": 1,
                                          "failure_reason": "diverged: loss nan"})
    searcher.on_trial_complete("diverged", {"acc": float("nan"), "epoch": 1,
                                            "training_iteration": 1,
                                            "failure_reason": "diverged: loss nan"})
    trials = searcher._ot_study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert trials[0].value == 0.5 and trials[0].intermediate_values == {1: 0.2, 2: 0.4, 3: 0.5}
    assert trials[1].intermediate_values == {1: 0.1}


def test_pruning_semantics_can_be_switched_off():
    searcher = PlatformOptunaSearch(space=space, metric="acc", mode="max", max_epochs=3,
                                    tell_pruned=False, seed=0)
    searcher.suggest("stopped")
    searcher.on_trial_result("stopped", {"acc": 0.1, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"acc": 0.1, "epoch": 1, "training_iteration": 1})
    assert searcher._ot_study.trials[0].state.name == "COMPLETE"


def test_progress_line_counts_and_estimates():
    from types import SimpleNamespace

    from experiment.progress import ProgressLine

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
