"""The XRD learning-curve benchmark (``bench/xrd_learning_curves.py``) end to end at toy size:
runs, stops, scores on the real-structure set, saves, resumes and redraws."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # four runs of the script, about a minute

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "xrd_learning_curves.py"),
           "--variants", "intensities=random", "--pool", "560", "--val", "60",
           "--settings", "1", "--max-epochs", "2", "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_learning_curves_run_resume_and_redraw(tmp_path):
    out = tmp_path / "curves"
    first = run(out, "--sizes", "140,280")
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    rows = results["intensities=random"]
    assert [(r["size"], r["train_patterns"]) for r in rows] == [(140, 98), (280, 196)]
    for r in rows:
        assert r["stopped"] == "max_epochs" and r["epochs"] == len(r["curve"]) == 2
        assert r["val_patterns"] == 60 and sum(map(sum, r["val_confusion"])) == 60
        assert 0.0 <= r["real_bravais_top1"] <= r["real_bravais_top3"] <= 1.0
        assert 0.0 <= r["val_bravais_top1"] <= 1.0 and 0.0 <= r["real_system_top1"] <= 1.0
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "| `intensities=random` | 140 (98) | 1 |" in first.stdout

    # done runs are kept; a run killed part-way is redone; a new size is added
    rows[1]["stopped"] = "killed"
    rows[0]["curve"][0]["val_top1"] = 0.987  # marks the kept run
    out.with_suffix(".json").write_text(json.dumps(results))
    again = run(out, "--sizes", "140,280,420")
    assert again.returncode == 0, again.stderr[-2000:]
    rows = json.loads(out.with_suffix(".json").read_text())["intensities=random"]
    assert [r["size"] for r in rows] == [140, 280, 420]
    assert rows[0]["curve"][0]["val_top1"] == 0.987
    assert rows[1]["stopped"] == "max_epochs" and "140 patterns" not in again.stdout
    assert "280 patterns, seed 0" in again.stdout

    redraw = run(out, "--sizes", "140", "--plot-only")
    assert redraw.returncode == 0 and "| 420 (294) |" in redraw.stdout

    too_small = run(out, "--sizes", "140,900")
    assert too_small.returncode != 0 and "--pool 560 is smaller than size 900" in too_small.stderr
