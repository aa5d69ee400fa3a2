"""ATLAS MET spaces: the Wrap padding's φ equivariance, MET from images, boosted trees that
grow per epoch and resume exactly, bad files, and the CLI."""

from __future__ import annotations

import copy
import math

import h5py
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.base import DataError
from datasets.calo_physics import met_of_image
from search_spaces import get_space
from tests.conftest import run_cli
from tests.test_e2e import runs_of
from trainables.atlas import EtmissCNN, met_of, rotate
from trainables.loop import FitSettings, fit


def test_wrap_makes_the_cnn_equivariant_to_phi_rolls():
    torch.manual_seed(0)
    model = EtmissCNN(3, n_conv=3, width=8, kernel=5, batch_norm=True, target="image",
                      input_scale=10.0).eval()
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        for shift in (1, 7, 23):
            rolled = model(torch.roll(x, shift, dims=-1))
            torch.testing.assert_close(rolled, torch.roll(model(x), shift, dims=-1))
    broken = torch.nn.functional.pad(x, (2, 2, 2, 2))  # zero padding in φ is not periodic
    conv = torch.nn.Conv2d(3, 1, 5)
    with torch.no_grad():
        plain = conv(broken)[..., :, :]
        plain_rolled = conv(torch.nn.functional.pad(torch.roll(x, 5, -1), (2, 2, 2, 2)))
    assert not torch.allclose(plain_rolled, torch.roll(plain, 5, -1)), "the check can fail"


def test_met_of_images_follows_the_rule():
    image = np.zeros((8, 16), np.float32)
    phi = -math.pi + (np.arange(16) + 0.5) * 2 * math.pi / 16
    k = int(np.argmin(np.abs(phi)))  # the bin nearest φ = 0
    image[3, k] = 10.0
    expected = [-10 * math.cos(phi[k]), -10 * math.sin(phi[k])]
    np.testing.assert_allclose(met_of(torch.from_numpy(image)).numpy(), expected, atol=1e-4)
    rng = np.random.default_rng(0)
    images = rng.exponential(1.0, (5, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(met_of(torch.from_numpy(images)).numpy(), met_of_image(images),
                               rtol=1e-4, atol=1e-3)
    rolled = met_of(torch.roll(torch.from_numpy(images), 3, -1))
    turned = rotate(met_of(torch.from_numpy(images)), torch.full((5,), 3 * 2 * math.pi / 16))
    torch.testing.assert_close(rolled, turned, atol=1e-3, rtol=1e-4)


def test_met_target_rotates_with_phi_rolls():
    torch.manual_seed(0)
    model = EtmissCNN(3, n_conv=2, width=8, kernel=3, batch_norm=True, target="met",
                      input_scale=10.0).eval()
    x = torch.rand(4, 3, 16, 24)
    with torch.no_grad():
        met = model(x)
        assert met.shape == (4, 2) and float(met.norm(dim=1).min()) > 0
        for shift in (1, 5, 13):
            turned = rotate(met, torch.full((4,), shift * 2 * math.pi / 24))
            torch.testing.assert_close(model(torch.roll(x, shift, dims=-1)), turned,
                                       atol=1e-3, rtol=1e-4)
            assert float((turned - met).norm(dim=1).min()) > 1e-2  # a rotation, not a no-op


def test_a_trained_met_target_beats_the_raw_cluster_met():
    """The MET-regressing CNN learns pile-up suppression: on held-out events its resolution
    beats the MET of the raw clusters (the baseline any method must beat) clearly."""
    torch.manual_seed(0)
    spec = get_dataset("calo")
    data = spec.load(spec.prepare(None, 800, 0, {"bins": "16"}), 0, {"bins": "16"})
    images = np.asarray(data.batch("x", data.val, {})) * 10.0
    true = np.asarray(data.batch("met", data.val, {}))
    raw = float(np.sqrt(((met_of_image(images[:, 0]) - true) ** 2).mean()))
    zero = float(np.sqrt((true ** 2).mean()))
    assert raw < 0.6 * zero  # the raw clusters already carry the MET
    space = get_space("etmiss")
    metrics = fit(space, dict(space.seed_config, target="met"), data,
                  FitSettings(max_epochs=8, figure_every=0))
    assert metrics["val_met_resolution"] < 0.9 * raw, (metrics["val_met_resolution"], raw)


@pytest.fixture(scope="module")
def calo_data(tmp_path_factory):
    spec = get_dataset("calo")
    return spec.load(spec.prepare(None, 150, 0, {"bins": "16"}), 0, {"bins": "16"})


def test_gbdt_grows_per_epoch_and_resumes_exactly(calo_data):
    space = get_space("etmiss_gbdt")
    config = dict(space.seed_config, iterations=5)
    straight, states = [], []
    fit(space, config, calo_data, FitSettings(max_epochs=2, figure_every=0),
        report=lambda m, s: (straight.append(m), states.append(copy.deepcopy(s))))  # saved now
    assert int(states[1]["model"]["fitted_iterations"]) == 10
    assert straight[1]["train_loss"] < straight[0]["train_loss"]
    resumed = []
    fit(space, config, calo_data, FitSettings(max_epochs=2, figure_every=0),
        report=lambda m, s: resumed.append(m), state=states[0])
    assert resumed[0]["val_met_resolution"] == pytest.approx(straight[1]["val_met_resolution"])


def test_cnn_and_trees_report_comparable_metrics(calo_data):
    for name in ("etmiss", "etmiss_gbdt"):
        space = get_space(name)
        metrics = fit(space, dict(space.seed_config), calo_data, FitSettings(max_epochs=1))
        assert math.isfinite(metrics["val_met_resolution"]) and metrics["val_met_resolution"] > 0
        assert math.isfinite(metrics["val_met_response"])


def write_calo(path, **overrides):
    n = 20
    datasets = {"images": np.zeros((n, 16, 16, 3), np.float32), "met": np.zeros((n, 2)),
                "truth": np.zeros((n, 16, 16))}
    datasets.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return str(path)


@pytest.mark.parametrize("overrides,message", [
    ({"met": None}, "missing dataset 'met'"),
    ({"met": np.zeros((20, 3))}, "expected \\(20, 2\\)"),
    ({"truth": np.zeros((20, 8, 8))}, "'truth' has shape"),
    ({"images": np.full((20, 16, 16, 3), np.nan)}, "NaN"),
])
def test_bad_calorimeter_files(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message):
        get_dataset("calo").prepare(write_calo(tmp_path / "bad.h5", **overrides), 0, 0, {})


# etmiss_gbdt (~14 s) in the slow suite: its trees train in the contract suite by default
@pytest.mark.parametrize("space", ["etmiss", pytest.param("etmiss_gbdt", marks=pytest.mark.slow)])
def test_cli_search(tmp_path, space):
    db = tmp_path / "mlflow.db"
    result = run_cli("--space", space, "--trials", "2", "--max-epochs", "1", "--samples", "120",
                     "--data-option", "bins=16", "--experiment", space,
                     "--mlflow-uri", f"sqlite:///{db}", "--storage", str(tmp_path / "ray"),
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    client, _, children = runs_of(db, space)
    assert len(children) == 2
    assert all(math.isfinite(c.data.metrics["val_met_resolution"]) for c in children)
    assert any("figures/epoch_001/met_residuals.png" in [a.path for a in client.list_artifacts(
        c.info.run_id, "figures/epoch_001")] for c in children)
