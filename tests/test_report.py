"""``launch.py report``: pictures, a self-contained page and MLflow artifacts of a real search
(the shared ``finished_search`` on an ``mlflow server``; Optuna and MLflow run for real)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.report import TrialView, asha_rungs, parameter_importances, rung_survival
from tests.conftest import run_cli
from tracking.state import ExperimentState, state_path

PNG = b"\x89PNG\r\n\x1a\n"
#: file stem -> section title on the page (importances may be skipped: too few trials)
PICTURES = {"history": "Optimisation history", "importances": "Parameter importances",
            "parallel": "Parallel coordinates", "slices": "Slice plots",
            "learning_curves": "Learning curves", "asha_rungs": "Survivors of each rung"}


def test_rung_survival_counts_trials_reaching_each_rung():
    assert asha_rungs(1, 9) == [1, 3, 9]
    assert asha_rungs(1, 3) == [1, 3]
    assert asha_rungs(1, 10) == [1, 3, 9, 10]
    assert asha_rungs(2, 20) == [2, 6, 18, 20]
    assert asha_rungs(4, 4) == [4]
    assert rung_survival([1, 1, 3, 9, 5, 0, 2], 1, 9) == [(1, 6), (3, 3), (9, 1)]
    assert rung_survival([], 1, 3) == [(1, 0), (3, 0)]


def _trial(number: int, x: float, noise: float, epochs: int) -> TrialView:
    import optuna

    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0),
             "noise": optuna.distributions.FloatDistribution(0.0, 1.0)}
    curve = {e: x * e / epochs + 0.01 * noise for e in range(1, epochs + 1)}
    return TrialView(number=number, state="COMPLETE" if epochs == 3 else "PRUNED",
                     params={"x": x, "noise": noise}, distributions=dists, curve=curve,
                     value=max(curve.values()))


def test_importances_fall_back_to_the_first_rung_and_refuse_too_few_trials():
    trials = [_trial(i, x=(i * 0.37) % 1, noise=(i * 0.61) % 1, epochs=3 if i < 2 else 1)
              for i in range(8)]
    found, note = parameter_importances(trials, "max", grace_epochs=1)
    assert max(found, key=found.get) == "x", found
    assert "after 1 epoch(s) of all 8 trials" in note
    found, note = parameter_importances(trials[:3], "max", grace_epochs=1)
    assert found == {} and "too few trials" in note


@pytest.fixture(scope="module")
def report(finished_search):
    out = finished_search.cwd / "report-out"
    result = run_cli("report", "--experiment", finished_search.experiment,
                     "--storage", str(finished_search.storage), "--out", str(out),
                     cwd=finished_search.cwd, timeout=300)
    return result, out


def test_report_writes_pictures_and_a_self_contained_page(report):
    result, out = report
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report page: {out / 'report.html'}" in result.stdout
    page = (out / "report.html").read_text()
    for stem, title in PICTURES.items():
        assert title in page, title
        png = out / f"{stem}.png"
        if stem == "importances" and not png.exists():  # the 4-trial search is too small
            assert "Not drawn: too few trials for fANOVA" in page
            continue
        data = png.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, stem
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(base64.b64decode(s.split(",", 1)[1]).startswith(PNG) for s in sources)
    assert len(sources) == len(list(out.glob("*.png")))
    assert not re.search(r"<script|<link|\bsrc=\"http|url\(", page)  # nothing external
    # the best trial's own figure (a classifier space: its confusion matrix)
    assert (out / "best_confusion_matrix.png").read_bytes().startswith(PNG)
    assert "confusion matrix" in page and "Best trial" in page
    assert "val_top1 (max)" in page
    # the seed configuration is trial 0 (here projected into the narrowed --space-file space)
    assert re.search(r"<th>seed configuration</th><td>[-+.e0-9]+ \(trial #0, ", page), page[:3000]


def test_report_is_logged_to_the_parent_run(report, finished_search):
    result, out = report
    assert result.returncode == 0, result.stderr[-3000:]
    state = ExperimentState.load(state_path(finished_search.storage, finished_search.experiment))
    client = MlflowClient(finished_search.uri)
    logged = {Path(a.path).name for a in client.list_artifacts(state.data["parent_run_id"], "report")}
    assert {"report.html", "best_confusion_matrix.png"} <= logged
    assert {p.name for p in out.glob("*.png")} <= logged


def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_report_refuses_bad_input(tmp_path, finished_search):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(run_cli("report", "--experiment", "nothing", "--storage",
                            str(finished_search.storage), cwd=tmp_path),
                    "no experiment 'nothing'", "--storage")
    _one_line_error(run_cli("report", "--experiment", finished_search.experiment, "--storage",
                            str(empty), cwd=tmp_path), "no experiment", "--experiment")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _one_line_error(run_cli("report", "--experiment", finished_search.experiment, "--storage",
                            str(finished_search.storage), "--out", str(blocker / "sub"),
                            cwd=tmp_path), "--out", "not a folder")
    _one_line_error(run_cli("report", "--experiment", finished_search.experiment, "--storage",
                            str(finished_search.storage), "--mlflow-uri",
                            f"sqlite:///{tmp_path / 'elsewhere.db'}", cwd=tmp_path),
                    "--mlflow-uri", "no MLflow store there")
    assert not (tmp_path / "reports").exists()  # nothing created


def test_report_refuses_damaged_state_and_a_search_without_results(tmp_path):
    import optuna

    from tracking.optuna_store import StudyMirror, journal_path

    storage = tmp_path / "ray_results"
    damaged = state_path(storage, "damaged")
    damaged.parent.mkdir(parents=True)
    damaged.write_text("{")
    _one_line_error(run_cli("report", "--experiment", "damaged", cwd=tmp_path), "unreadable")
    # a search whose only trial never reported an epoch
    state = state_path(storage, "young")
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"parent_run_id": "x", "tracking_uri": "sqlite:///unused.db",
                                 "settings": {"space": "resnet1d", "max_epochs": 3, "grace_epochs": 1},
                                 "trials": {}}))
    mirror = StudyMirror(journal_path(storage), "young", "max")
    mirror.started("t1", {"lr": 0.001}, {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    _one_line_error(run_cli("report", "--experiment", "young", cwd=tmp_path),
                    "no trial of experiment 'young'", "--resume")
    assert not (tmp_path / "reports").exists() and not (tmp_path / "unused.db").exists()
