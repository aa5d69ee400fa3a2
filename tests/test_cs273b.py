"""CS 273B spaces: the two sparsity terms, the sparse CAE's shapes and code, the multimodal
model's two inputs, bad files, blackout and branch initialisation through the CLI."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.base import DataError
from search_spaces import get_space
from tests.conftest import run_cli
from tests.test_e2e import runs_of
from trainables.autoencode import kl_sparsity
from trainables.cs273b import SparseCAE
from trainables.loop import FitSettings, fit


def test_sparsity_terms():
    rho = 0.2
    at_target = torch.full((4, 10), rho)
    assert kl_sparsity(at_target, rho, "scalar").item() == pytest.approx(0.0, abs=1e-6)
    assert kl_sparsity(at_target, rho, "per_unit").item() == pytest.approx(0.0, abs=1e-6)
    code = torch.zeros(4, 10)
    code[:, :5] = 0.4  # mean activation 0.2 overall, but units at 0.4 and 0
    assert kl_sparsity(code, rho, "scalar").item() == pytest.approx(0.0, abs=1e-6)
    per_unit = kl_sparsity(code, rho, "per_unit").item()
    kl = lambda q: rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))  # noqa: E731
    assert per_unit == pytest.approx(5 * kl(0.4) + 5 * kl(1e-6), rel=1e-3)


def test_sparse_cae_shapes_and_code():
    model = SparseCAE(strides=[1, 3], filters=[3, 5], base_width=4, batch_norm=True)
    x = torch.randn(2, 1, 16, 20, 16)
    out = model(x)
    assert out.shape == x.shape
    code = model.sparsity_code
    assert code is not None and code.min() >= 0 and code.max() <= 1
    assert code.shape[1] == 8 and code.shape[2] == 6  # 16 → stride 1 → stride 3


@pytest.fixture(scope="module")
def subjects():
    spec = get_dataset("multimodal")
    return spec.load(spec.prepare(None, 80, 0, {"size": "16"}), 0, {"size": "16"})


def test_multimodal_model_uses_both_inputs(subjects):
    space = get_space("mmnn")
    model = space.build(dict(space.seed_config), subjects.info).eval()
    idx = np.sort(subjects.val[:4])
    x = torch.from_numpy(subjects.batch("x", idx, {}))
    phen = torch.from_numpy(subjects.batch("phen", idx, {}))
    with torch.no_grad():
        base = model(x, phen)
        assert not torch.allclose(base, model(torch.zeros_like(x), phen))
        assert not torch.allclose(base, model(x, torch.zeros_like(phen)))
    metrics = fit(space, dict(space.seed_config), subjects, FitSettings(max_epochs=1))
    assert 0 <= metrics["val_auc"] <= 1 and "val_top1" in metrics


def test_cae_logs_code_activation_beside_rho(subjects):
    space = get_space("cae")
    metrics = fit(space, dict(space.seed_config), subjects, FitSettings(max_epochs=1))
    assert math.isfinite(metrics["val_recon_loss"]) and 0 < metrics["val_code_mean"] < 1


@pytest.mark.parametrize("overrides,message", [
    ({"labels": np.full(20, 2)}, "labels must be 0 or 1"),
    ({"phenotypes": np.zeros((19, 5))}, "must match"),
    ({"volumes": np.full((20, 8, 8, 8), np.nan)}, "NaN"),
    ({"volumes": np.zeros((20, 4, 4, 4))}, "at least 8"),
])
def test_bad_multimodal_files(tmp_path, overrides, message):
    data = {"volumes": np.zeros((20, 8, 8, 8), np.float32), "phenotypes": np.zeros((20, 5)),
            "labels": np.arange(20) % 2}
    data.update(overrides)
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
    with pytest.raises(DataError, match=message):
        get_dataset("multimodal").prepare(str(path), 0, 0, {})


def test_cli_blackout_after_a_cnn_search(tmp_path):
    db, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    common = ["--max-epochs", "1", "--samples", "60", "--data-option", "size=16",
              "--mlflow-uri", f"sqlite:///{db}", "--storage", str(storage)]
    search = run_cli("--space", "cnn", "--trials", "1", "--experiment", "cnn1", *common,
                     cwd=tmp_path, timeout=300)
    assert search.returncode == 0, search.stderr[-3000:]
    done = run_cli("blackout", "--experiment", "cnn1", "--storage", str(storage), "--patch", "8",
                   "--samples", "6", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parents, _ = runs_of(db, "cnn1")
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "blackout")}
    assert {"blackout/blackout.png", "blackout/blackout.npy"} <= logged
    heat = np.load(client.download_artifacts(parents[0].info.run_id, "blackout/blackout.npy"))
    assert heat.shape == (2, 2, 2) and np.isfinite(heat).all() and heat.max() > 0
    missing = run_cli("blackout", "--experiment", "nope", "--storage", str(storage), cwd=tmp_path)
    assert missing.returncode == 2 and "no experiment 'nope'" in missing.stderr


@pytest.mark.slow
def test_cli_mmnn_starts_from_earlier_branch_searches(tmp_path):
    db, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    common = ["--max-epochs", "1", "--samples", "60", "--data-option", "size=16",
              "--mlflow-uri", f"sqlite:///{db}", "--storage", str(storage)]
    for space, name in (("cnn", "volumes"), ("pheno_nn", "pheno")):
        result = run_cli("--space", space, "--trials", "1", "--experiment", name, *common,
                         cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("--space", "mmnn", "--trials", "2", "--experiment", "both", *common,
                     "--data-option", "cnn_experiment=volumes", "--data-option",
                     "pheno_experiment=pheno", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, children = runs_of(db, "both")
    assert len(children) == 2
    params = children[0].data.params
    assert "cnn/n_conv" not in params and "hidden" in params  # branches came from the searches
    wrong = run_cli("--space", "mmnn", "--trials", "1", "--experiment", "x", *common,
                    "--data-option", "cnn_experiment=pheno", cwd=tmp_path)
    assert wrong.returncode == 2 and "not 'cnn'" in wrong.stderr


# cae and mlp_ae (~18 s each) in the slow suite: the contract suite trains both in the default run
@pytest.mark.parametrize("space", [pytest.param("cae", marks=pytest.mark.slow),
                                   pytest.param("mlp_ae", marks=pytest.mark.slow), "pheno_nn"])
def test_cli_search_of_each_remaining_space(tmp_path, space):
    db = tmp_path / "mlflow.db"
    result = run_cli("--space", space, "--trials", "2", "--max-epochs", "1", "--samples", "40",
                     "--data-option", "size=16", "--experiment", space,
                     "--mlflow-uri", f"sqlite:///{db}", "--storage", str(tmp_path / "ray"),
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, children = runs_of(db, space)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    metric = get_space(space).metric
    assert all(math.isfinite(c.data.metrics[metric]) for c in children)
