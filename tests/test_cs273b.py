"""CS 273B spaces: the two sparsity terms, the sparse CAE's shapes and code, the
auto-encoders' objective (downstream probe AUC) and full training loss, the multimodal
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
from trainables import autoencode
from trainables.autoencode import kl_sparsity
from trainables.cs273b import SparseCAE
from trainables.loop import FitSettings, StepContext, fit, get_kind


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


def test_autoencoders_search_the_downstream_probe():
    """The sparse code is for classification downstream: both CS 273B auto-encoders are
    searched by the probe's validation AUC, reconstruction and the full loss only logged;
    the particle generator's ``ae`` (same kind, no probe) keeps its reconstruction objective."""
    for name in ("cae", "mlp_ae"):
        space = get_space(name)
        assert (space.metric, space.mode) == ("val_probe_auc", "max")
        assert {"val_recon_loss", "val_objective"} <= set(space.extra_metrics)
    assert (get_space("ae").metric, get_space("ae").mode) == ("val_recon_loss", "min")


def _val_batch(data, cfg):
    """The whole validation split as one batch, through the data set's transform."""
    return torch.from_numpy(data.batch("x", np.sort(data.val), cfg))


def _bernoulli_kl(rho: float, rates: np.ndarray) -> float:
    q = np.clip(rates.astype(np.float64), 1e-6, 1 - 1e-6)
    return float(np.sum(rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q))))


def test_cae_reports_probe_auc_and_full_objective(subjects, monkeypatch):
    """``val_objective`` is recon + λ·KL(ρ ‖ ρ̂) on the validation split, ρ̂ over the whole
    split, whichever sparsity form and however evaluation batches the split."""
    space = get_space("cae")
    cfg = {**space.seed_config, "rho": 0.2}  # the seed's ρ 0.5 sits near a fresh sigmoid's
    fitted = fit(space, cfg, subjects, FitSettings(max_epochs=1))
    assert {"val_probe_auc", "val_recon_loss", "val_objective", "val_code_mean"} <= set(fitted)
    assert 0.0 <= fitted["val_probe_auc"] <= 1.0
    model = fitted.model.eval()
    with torch.no_grad():
        x = _val_batch(subjects, cfg)
        recon = torch.mean((model(x) - x) ** 2).item()
        code = model.sparsity_code.reshape(len(x), -1).double().numpy()
    assert fitted["val_recon_loss"] == pytest.approx(recon, rel=1e-4)
    lam = float(cfg["lambda"])
    kl_scalar = _bernoulli_kl(0.2, np.array([code.mean()]))
    assert kl_scalar > 1e-3
    assert fitted["val_objective"] == pytest.approx(recon + lam * kl_scalar, rel=1e-4)
    # per-unit ρ̂, evaluated in batches of 5 subjects: still one ρ̂ per unit over the split
    monkeypatch.setattr(autoencode, "EVAL_BATCH", 5)
    per_unit = {**cfg, "sparsity": "per_unit"}
    metrics = get_kind("autoencode").evaluate(model, subjects, "val", per_unit,
                                              StepContext.create("cpu"))
    expected = recon + lam * _bernoulli_kl(0.2, code.mean(0))
    assert metrics["val_objective"] == pytest.approx(expected, rel=1e-4)
    assert metrics["val_recon_loss"] == pytest.approx(recon, rel=1e-4)


def test_mlp_ae_reports_probe_auc_and_its_l1_objective(subjects):
    """The plain AE's full loss is recon + l1·Σ|W| (weights of dimension ≥ 2)."""
    space = get_space("mlp_ae")
    cfg = {**space.seed_config, "l1": 1e-5}
    fitted = fit(space, cfg, subjects, FitSettings(max_epochs=1))
    assert {"val_probe_auc", "val_recon_loss", "val_objective"} <= set(fitted)
    assert 0.0 <= fitted["val_probe_auc"] <= 1.0
    model = fitted.model.eval()
    with torch.no_grad():
        x = _val_batch(subjects, cfg)
        recon = torch.mean((model(x) - x) ** 2).item()
        weights = sum(p.abs().sum().item() for p in model.parameters() if p.dim() > 1)
    assert fitted["val_recon_loss"] == pytest.approx(recon, rel=1e-4)
    assert fitted["val_objective"] == pytest.approx(recon + 1e-5 * weights, rel=1e-4)
    assert fitted["val_objective"] > fitted["val_recon_loss"]


def test_probe_separates_informative_codes_from_random_ones():
    rng = np.random.default_rng(1)
    y_train, y_val = rng.integers(0, 2, 400), rng.integers(0, 2, 600)
    noise_train, noise_val = rng.normal(size=(400, 16)), rng.normal(size=(600, 16))
    informative_train, informative_val = noise_train.copy(), noise_val.copy()
    informative_train[:, 3] += 2.0 * y_train  # one unit carries the label
    informative_val[:, 3] += 2.0 * y_val
    assert autoencode.probe_auc(informative_train, y_train, informative_val, y_val) > 0.8
    assert autoencode.probe_auc(noise_train, y_train, noise_val, y_val) == pytest.approx(0.5, abs=0.08)
    # feature maps are flattened; one class on either side is chance, not a crash
    assert autoencode.probe_auc(informative_train.reshape(400, 4, 2, 2), y_train,
                                informative_val.reshape(600, 4, 2, 2), y_val) > 0.8
    assert autoencode.probe_auc(noise_train, np.zeros(400), noise_val, y_val) == 0.5
    assert autoencode.probe_auc(noise_train, y_train, noise_val, np.ones(600)) == 0.5
    bad = noise_val.copy()
    bad[0, 0] = np.nan
    assert math.isnan(autoencode.probe_auc(noise_train, y_train, bad, y_val))
    # the probe's training subset: bounded, seeded, sorted
    picked = autoencode.probe_train_indices(np.arange(5000), limit=100)
    assert len(picked) == 100 and np.array_equal(picked, np.sort(picked))
    assert np.array_equal(picked, autoencode.probe_train_indices(np.arange(5000), limit=100))


def test_sparsity_weight_enters_the_full_objective(subjects):
    """λ = 0 and λ > 0 on the same model: same reconstruction, objectives differ by λ·KL."""
    space = get_space("cae")
    torch.manual_seed(0)
    model = space.build(dict(space.seed_config), subjects.info).eval()
    kind, ctx = get_kind("autoencode"), StepContext.create("cpu")
    base = {**space.seed_config, "rho": 0.1}
    off = kind.evaluate(model, subjects, "val", {**base, "lambda": 0.0}, ctx)
    on = kind.evaluate(model, subjects, "val", {**base, "lambda": 0.6}, ctx)
    assert off["val_recon_loss"] == on["val_recon_loss"] == off["val_objective"]
    assert on["val_objective"] > off["val_objective"] + 1e-3
    kl = _bernoulli_kl(0.1, np.array([on["val_code_mean"]]))
    assert on["val_objective"] - off["val_objective"] == pytest.approx(0.6 * kl, rel=1e-3)
    assert on["val_probe_auc"] == off["val_probe_auc"]  # the code itself is unchanged


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


@pytest.mark.slow  # ~19 s; by default the pheno_nn CLI search and the contract suite
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
