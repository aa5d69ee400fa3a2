"""Particle Generator spaces: the EWM transport step on cases with a known answer, the seed's
architectures, the image data (synthetic, digits, user files) and the two-stage ae → ewm path
through the CLI."""

from __future__ import annotations

import itertools
import math

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from datasets import get_dataset
from datasets.base import DataError, DataInfo
from search_spaces import get_space
from tests.conftest import run_cli
from tests.test_e2e import runs_of
from trainables.loop import FitSettings, fit
from trainables.particle_generator import (
    ConvAutoEncoder,
    EwmKind,
    MlpAutoEncoder,
    build_mlp_gan,
    ot_step,
    transport_cost,
)

POINTS = torch.tensor([[0.0], [0.1], [0.2], [3.0]])  # three samples crowd the first target
TARGETS = torch.tensor([[0.0], [1.0], [2.0], [3.0]])


def run_transport(cost: str, steps: int = 3000, record_from: int = 2000):
    psi = torch.zeros(len(TARGETS), requires_grad=True)
    optimizer = torch.optim.Adam([psi], lr=0.05)
    rng = torch.Generator().manual_seed(0)
    counts, costs = np.zeros(len(TARGETS)), []
    votes = np.zeros((len(POINTS), len(TARGETS)))  # where each point goes, step by step
    for step in range(steps):
        idx = torch.randint(0, len(POINTS), (64,), generator=rng)
        assign = ot_step(POINTS[idx], TARGETS, psi, optimizer, cost)
        if step >= record_from:
            counts += np.bincount(assign.numpy(), minlength=len(TARGETS))
            costs.append(transport_cost(POINTS[idx], TARGETS, cost)[torch.arange(64), assign].mean())
            with torch.no_grad():
                now = (transport_cost(POINTS, TARGETS, cost) + psi).argmin(1).numpy()
            votes[np.arange(len(POINTS)), now] += 1
    return votes.argmax(1), counts / counts.sum(), float(torch.stack(costs).mean())


def optimal_cost(cost: str) -> float:
    c = transport_cost(POINTS, TARGETS, cost).numpy()
    return min(sum(c[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4))) / 4


def test_transport_step_finds_the_known_optimal_assignment_l2():
    """Nearest targets would send three samples to y0; the balanced optimum under squared L2
    is the sorted matching 0→0, 0.1→1, 0.2→2, 3→3, which argmin(c + ψ) must reproduce."""
    assignment, shares, mean_cost = run_transport("l2")
    assert assignment.tolist() == [0, 1, 2, 3]  # the usual assignment of each sample
    np.testing.assert_allclose(shares, 0.25, atol=0.02)
    assert mean_cost == pytest.approx(optimal_cost("l2"), rel=0.05)


def test_transport_step_balances_and_is_optimal_in_cost_l1():
    """Under L1 in 1D several matchings are optimal; the step must still reach uniform
    assignment shares at the optimal transport cost (psi = 0 gives a much higher share to y0)."""
    _, shares, mean_cost = run_transport("l1")
    np.testing.assert_allclose(shares, 0.25, atol=0.02)
    assert mean_cost == pytest.approx(optimal_cost("l1"), rel=0.03)
    nearest = transport_cost(POINTS, TARGETS, "l1").argmin(1)
    assert np.bincount(nearest.numpy(), minlength=4)[0] == 3  # the problem is not trivial


def test_assignment_histogram_rule():
    uniform = np.repeat(np.arange(200), 30)
    skewed = np.concatenate([uniform, np.zeros(3000, dtype=np.int64)])
    assert EwmKind.near_uniform(uniform, 200)[0]
    done, tv = EwmKind.near_uniform(skewed, 200)
    assert not done and tv > 0.2
    assert not EwmKind.near_uniform(np.arange(50), 200)[0], "too few samples to judge"


def test_mlp_gan_follows_the_seed():
    info = DataInfo(input_shape=(1, 32, 32))
    config = dict(get_space("mlp_gan").seed_config)
    model = build_mlp_gan(config, info)
    linears = [m for m in model.generator if isinstance(m, nn.Linear)]
    assert len(linears) == config["n_layers"] + 1
    assert linears[0].in_features == 100 and linears[-1].out_features == 32 * 32
    assert {m.out_features for m in linears[:-1]} == {512}
    assert isinstance(model.generator[-2], nn.Tanh)
    assert isinstance(model.discriminator[-1], nn.Sigmoid)
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.5}  # the seed's later layers.py blocks, shared by G and D
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Linear)])
    assert abs(weights.std().item() - 0.02) < 0.002
    sample = model.sample(5, torch.device("cpu"))
    assert sample.shape == (5, 1, 32, 32) and sample.abs().max() <= 1


def test_autoencoders_follow_the_seed():
    mlp = MlpAutoEncoder((1, 32, 32), l_dim=20, n_layers=4)
    widths = [m.out_features for m in mlp.encoder if isinstance(m, nn.Linear)]
    assert widths == [2048, 1024, 512, 256, 20]  # base 256 above 28×28, widest first
    small = MlpAutoEncoder((1, 8, 8), l_dim=4, n_layers=2)
    assert [m.out_features for m in small.encoder if isinstance(m, nn.Linear)] == [256, 128, 4]
    conv = ConvAutoEncoder((1, 32, 32), l_dim=6, n_layers=3, depth=32)
    channels = [m.out_channels for m in conv.encoder if isinstance(m, nn.Conv2d)]
    assert channels == [8, 16, 32, 6]
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert conv.encode(x).shape == (3, 6 * 4 * 4) and conv(x).shape == x.shape
    assert mlp(x).shape == x.shape and mlp(x).abs().max() <= 1


def test_digits_are_the_bundled_real_set():
    spec = get_dataset("larcv")
    data = spec.load(spec.prepare("digits", 0, 0, {}), 0, {})
    assert data.arrays["x"].shape == (1797, 8, 8)
    batch = data.batch("x", data.val[:10], {})
    assert batch.shape == (10, 1, 8, 8) and batch.min() >= -1 and batch.max() <= 1
    assert data.info.extra["scale"] == 16.0


def write_images(path, images, labels=None):
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        if labels is not None:
            f.create_dataset("labels", data=labels)
    return str(path)


def test_user_image_file_and_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    images = np.where(rng.random((40, 16, 16)) < 0.05, rng.uniform(1, 5, (40, 16, 16)), 0.0)
    spec = get_dataset("larcv")
    good = spec.prepare(write_images(tmp_path / "ok.h5", images), 0, 0, {})
    assert spec.load(good, 0, {}).batch("x", np.arange(3), {}).shape == (3, 1, 16, 16)
    cases = [
        (np.full((40, 16, 16), -1.0), None, "negative"),
        (np.full((40, 16, 16), np.nan), None, "NaN"),
        (np.zeros((40, 16)), None, "expected"),
        (images, np.zeros(3, dtype=np.int64), "must match"),
        (np.zeros((40, 4, 4)), None, "at least 8×8"),
    ]
    for i, (bad, labels, message) in enumerate(cases):
        with pytest.raises(DataError, match=message):
            spec.prepare(write_images(tmp_path / f"bad{i}.h5", bad, labels), 0, 0, {})
    with pytest.raises(DataError, match="size"):
        spec.prepare(None, 100, 0, {"size": "48"})


def test_codes_stage_trains_the_seed_autoencoder_on_the_spot(tiny_data):
    data = tiny_data("ae_codes")
    codes = data.arrays["codes"]
    assert codes.shape == (data.arrays["x"].shape[0], 20)  # the seed AE's l_dim
    assert data.info.extra["targets"] == len(data.train)
    model = get_space("ewm").build(dict(get_space("ewm").seed_config), data.info)
    x = torch.from_numpy(data.batch("x", np.sort(data.train[:4]), {}))
    np.testing.assert_allclose(model(x).detach().numpy(), codes[np.sort(data.train[:4])], atol=1e-5)


def test_every_memory_size_changes_the_ewm_epoch(tiny_data):
    """``mem_size`` is the paper's memory (batches of (z, j*) pairs): the transport phase fills
    it and the fit takes one step per stored batch, so sizes above half the targets differ."""
    from trainables.loop import FitSettings, fit

    data = tiny_data("ae_codes")
    targets = len(data.train)
    space = get_space("ewm")
    small = max(60, targets // 2 + 10)
    runs = {}
    for memory in (small, 3 * small):
        config = dict(space.seed_config, mem_size=memory, n_hidden=128, n_layers=2)
        epochs: list[dict] = []
        fit(space, config, data, FitSettings(max_epochs=1, figure_every=0),
            report=lambda m, s, seen=epochs: seen.append(m))
        runs[memory] = epochs[0]
        assert epochs[0]["train_fit_steps"] == memory
        assert memory <= epochs[0]["train_ot_iterations"] <= max(targets, memory)
    assert runs[small]["train_fit_loss"] != runs[3 * small]["train_fit_loss"]
    assert runs[small]["val_quality"] != runs[3 * small]["val_quality"]


@pytest.mark.slow  # the digits loader is tested directly above; this is the CLI path
@pytest.mark.parametrize("space", ["mlp_gan", "ae"])
def test_cli_on_digits(tmp_path, space):
    db = tmp_path / "mlflow.db"
    result = run_cli("--space", space, "--trials", "2", "--max-epochs", "1", "--data", "digits",
                     "--experiment", space, "--mlflow-uri", f"sqlite:///{db}",
                     "--storage", str(tmp_path / "ray"), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children = runs_of(db, space)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    metric = get_space(space).metric
    assert all(math.isfinite(c.data.metrics[metric]) for c in children)
    picture = "samples.png" if space == "mlp_gan" else "reconstructions.png"
    assert any(f"figures/epoch_001/{picture}" in [a.path for a in client.list_artifacts(
        c.info.run_id, "figures/epoch_001")] for c in children)


@pytest.mark.slow  # two CLI searches, ~75 s; `make test-slow`
def test_two_stage_ae_then_ewm_through_mlflow(tmp_path):
    """Stage one is an 'ae' search; 'ewm' reads its best checkpoint back from MLflow."""
    db = tmp_path / "mlflow.db"
    common = ["--max-epochs", "1", "--samples", "120", "--mlflow-uri", f"sqlite:///{db}",
              "--storage", str(tmp_path / "ray")]
    first = run_cli("--space", "ae", "--trials", "1", "--experiment", "stage1", *common,
                    cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    # The seed's memory of 5,000 batches takes minutes per epoch on a CPU: the path is tested
    # with a small memory (the seed configuration is projected into the narrowed space).
    small_memory = tmp_path / "small_memory.yaml"
    small_memory.write_text("space: ewm\nparams:\n  mem_size: {low: 50, high: 80}\n")
    second = run_cli("--space", "ewm", "--trials", "2", "--experiment", "stage2",
                     "--space-file", str(small_memory),
                     "--data-option", "ae_experiment=stage1", *common, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    _, _, children = runs_of(db, "stage2")
    assert len(children) == 2
    assert all(math.isfinite(c.data.metrics["val_quality"]) for c in children)
    missing = run_cli("--space", "ewm", "--trials", "1", "--experiment", "stage3",
                      "--data-option", "ae_experiment=nope", *common, cwd=tmp_path)
    assert missing.returncode == 2 and "no such MLflow experiment" in missing.stderr
    wrong = run_cli("--space", "ewm", "--trials", "1", "--experiment", "stage4",
                    "--data-option", "ae_experiment=stage2", *common, cwd=tmp_path)
    assert wrong.returncode == 2 and "not 'ae'" in wrong.stderr


def test_seed_autoencoder_learns_more_than_the_background(tiny_data):
    """On mostly-zero images a tanh AE can saturate at the background and learn nothing; the
    seed configuration must beat the all-background reconstruction within a few epochs."""
    spec = get_dataset("larcv")
    data = spec.load(spec.prepare(None, 300, 0, {}), 0, {})
    val = data.batch("x", np.sort(data.val), {})
    background = float(((val - val.min()) ** 2).mean())
    space = get_space("ae")
    config = dict(space.seed_config, batch_size=16)
    losses = []
    fit(space, config, data, FitSettings(max_epochs=6, figure_every=0),
        report=lambda m, s: losses.append(m["val_recon_loss"]))
    assert losses[-1] < 0.9 * background, (losses, background)


def test_leaky_relu_slope_is_searched_and_the_seeds_follow_their_code(tiny_data):
    """The seed's code used LeakyReLU 0.2 (early GAN, AE layers) and 0.5 (the later blocks
    its G and D share): the slope is searched, and each seed configuration builds its own."""
    import optuna

    data = tiny_data("larcv")

    def slopes(model: torch.nn.Module) -> set[float]:
        return {m.negative_slope for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)}

    assert slopes(get_space("mlp_gan").build(dict(get_space("mlp_gan").seed_config),
                                             data.info)) == {0.5}
    assert slopes(get_space("ae").build(dict(get_space("ae").seed_config), data.info)) == {0.2}
    for name in ("mlp_gan", "ae"):
        space = get_space(name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        seen = set()
        for _ in range(30):
            trial = study.ask()
            space.suggest(trial, data.info)
            study.tell(trial, 0.0)
            if trial.params.get("arch", "mlp") == "mlp":
                built = slopes(space.build(dict(trial.params), data.info))
                assert built == {trial.params["leaky_slope"]}
                seen |= built
        assert seen == {0.2, 0.5}, name
