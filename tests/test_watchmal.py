"""WatChMaL spaces: architectures as FIELD.md describes them, the event file layout (including
files from an independent writer and bad files), the sample-quality score and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from datasets import get_dataset
from datasets.base import DataError
from search_spaces import get_space
from tests.conftest import run_cli
from tests.test_e2e import runs_of
from trainables.loop import FitSettings, fit, roc_auc
from trainables.sample_quality import sample_quality
from trainables.watchmal import ClNet, Discriminator, Generator


def conv_bn(c_in: int, c_out: int, kh: int, kw: int | None = None) -> int:
    return c_in * c_out * kh * (kw or kh) + 2 * c_out  # bias-free conv + BN weight and bias


def linear(a: int, b: int) -> int:
    return a * b + b


def eresnet_parameters(c_in: int, latent: int, blocks: tuple[int, ...], classes: int) -> int:
    """Parameter count from FIELD.md's layer description (not from the code)."""
    n = conv_bn(c_in, 16, 1) + conv_bn(16, 64, 1) + 2 * conv_bn(64, 64, 3)  # stem + block
    c = 64
    for count, width in zip(blocks, (64, 64, 64, 128), strict=True):
        n += conv_bn(c, width, 4) + conv_bn(width, width, 3) + conv_bn(c, width, 4)  # strided
        n += (count - 1) * 2 * conv_bn(width, width, 3)
        c = width
    n += conv_bn(128, 128, 2) + linear(128, latent)  # collapse 2×2 map, then the latent layer
    dims = [latent, latent // 2, latent // 4, latent // 8]
    n += sum(linear(a, b) for a, b in zip(dims, dims[1:], strict=False)) + linear(dims[-1], classes)
    return n


def test_seed_clnet_matches_the_described_architecture():
    model = ClNet(in_channels=19, latent_dims=128, depth=18, num_classes=3)
    assert sum(p.numel() for p in model.parameters()) == eresnet_parameters(19, 128, (2, 2, 2, 2), 3)
    assert sum(p.numel() for p in ClNet(depth=34).parameters()) == \
        eresnet_parameters(19, 128, (3, 4, 6, 3), 3)
    out = model.eval()(torch.rand(2, 19, 40, 40))
    assert out.shape == (2, 3)
    barrel = ClNet(image_size=(16, 40)).eval()(torch.rand(2, 19, 16, 40))  # old barrel-only files
    assert barrel.shape == (2, 3)


def test_dcgan_matches_the_described_architecture():
    g, d = Generator(128, 64, 19), Discriminator(64, 19)
    expected_g = (128 * 512 * 16 + 2 * 512 + 512 * 256 * 9 + 2 * 256 + 256 * 128 * 16 + 2 * 128
                  + 128 * 64 * 16 + 2 * 64 + 64 * 19 * 9)
    expected_d = (19 * 64 * 16 + 64 * 128 * 16 + 2 * 128 + 128 * 256 * 16 + 2 * 256
                  + 256 * 512 * 16 + 2 * 512 + 512 * 1 * 4)
    assert sum(p.numel() for p in g.parameters()) == expected_g
    assert sum(p.numel() for p in d.parameters()) == expected_d
    fake = g.eval()(torch.randn(4, 128, 1, 1))
    assert fake.shape == (4, 19, 40, 40)
    assert isinstance(list(g.children())[-1], nn.ConvTranspose2d), "no Tanh at the output"
    p = d.eval()(fake)
    assert p.shape == (4, 1) and ((p > 0) & (p < 1)).all()


def test_dcgan_initialisation():
    model = get_space("dcgan").build(dict(get_space("dcgan").seed_config),
                                     get_dataset_info())
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    weights = torch.cat([w.detach().flatten() for w in convs])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    bns = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bns.mean().item() - 1.0) < 0.01 and 0.01 < bns.std().item() < 0.03


def get_dataset_info():
    from datasets.base import DataInfo

    return DataInfo(input_shape=(38, 40, 40), num_classes=3)


def test_roc_auc_on_known_cases():
    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), positive) == 0.75
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


# -- event files ---------------------------------------------------------------------------

def write_independent_file(path: Path, n: int = 60, dtype=np.float64, seed: int = 0,
                           **overrides) -> Path:
    """A WatChMaL-layout file as another group's plain-h5py writer would produce it."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    data = np.zeros((n, 40, 40, 38), dtype=dtype)
    for i, label in enumerate(labels):  # a ring whose sharpness depends on the class
        yy, xx = np.mgrid[:40, :40]
        r = np.hypot(yy - rng.uniform(14, 26), xx - rng.uniform(10, 30))
        width = 0.7 if label == 2 else 2.5
        ring = np.exp(-((r - rng.uniform(5, 9)) ** 2) / (2 * width**2)) * rng.uniform(2, 6)
        data[i, :, :, :19] = ring[..., None] * rng.uniform(0.5, 1.5, 19)
        data[i, :, :, 19:] = np.where(data[i, :, :, :19] > 0.05, 900 + r[..., None], 0)
    datasets = {
        "event_data": data, "labels": labels.astype(np.int32),
        "energies": rng.uniform(100, 1000, (n, 1)), "positions": rng.normal(size=(n, 1, 3)),
        "angles": rng.uniform(0, 3, (n, 2)), "event_ids": np.arange(n),
        "root_files": np.array([f"wcsim_{i % 4}.root".encode() for i in range(n)]),
    }
    datasets.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


def test_independent_float64_file_loads_with_npz_splits(tmp_path):
    path = write_independent_file(tmp_path / "events.h5")
    split = tmp_path / "split.npz"
    np.savez(split, train_idxs=np.arange(0, 40), val_idxs=np.arange(40, 50),
             test_idxs=np.arange(50, 60))
    spec = get_dataset("watchmal")
    options = {"splits": str(split)}
    prepared = spec.prepare(str(path), 0, 0, options)
    data = spec.load(prepared, 0, options)
    assert data.arrays["x"].dtype == np.float64 and isinstance(data.arrays["x"], np.memmap)
    assert list(data.val) == list(range(40, 50))
    batch = data.batch("x", data.val[:4], {"input_channels": "charge_time"})
    assert batch.shape == (4, 38, 40, 40) and batch.dtype == np.float32
    charge_only = data.batch("x", data.val[:4], {})
    assert charge_only.shape == (4, 19, 40, 40)
    np.testing.assert_allclose(charge_only, np.log1p(np.asarray(
        data.arrays["x"][data.val[:4]])[..., :19].transpose(0, 3, 1, 2)), rtol=1e-5, atol=1e-7)
    hits = batch[:, :19] > 0
    assert np.all(batch[:, 19:][~hits] == 0)  # unhit PMTs carry no time
    space = get_space("resnet18")
    metrics = fit(space, dict(space.seed_config, batch_size=16), data,
                  FitSettings(max_epochs=1), report=None)
    assert 0.0 <= metrics["val_top1"] <= 1.0 and "val_auc_e_vs_mu" in metrics


BAD_FILES = [
    ("missing event_data", {"event_data": None}, "missing dataset 'event_data'"),
    ("wrong channels", {"event_data": np.zeros((60, 40, 40, 19))}, "19 channels"),
    ("labels mismatch", {"labels": np.zeros(59, dtype=np.int64)}, "must match"),
    ("labels out of range", {"labels": np.full(60, 7)}, "labels range"),
    ("fractional labels", {"labels": np.full(60, 0.5)}, "class labels are whole numbers"),
    ("bad energies", {"energies": np.zeros((5, 1))}, "'energies' has shape"),
    ("NaN", {"event_data": np.full((60, 40, 40, 38), np.nan)}, "NaN"),
]


@pytest.mark.parametrize("name,overrides,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_event_files_are_refused(tmp_path, name, overrides, message):
    path = write_independent_file(tmp_path / "bad.h5", **overrides)
    with pytest.raises(DataError, match=message):
        get_dataset("watchmal").prepare(str(path), 0, 0, {})


def test_chunked_event_data_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("event_data", data=np.zeros((6, 40, 40, 38), np.float32),
                         chunks=(1, 40, 40, 38), compression="gzip")
        f.create_dataset("labels", data=np.arange(6) % 3)
    with pytest.raises(DataError, match="h5repack -l CONTI"):
        get_dataset("watchmal").prepare(str(path), 0, 0, {})


@pytest.mark.parametrize("splits,message", [
    ({"train_idxs": np.arange(40), "test_idxs": np.arange(40, 50)}, "missing val_idxs"),
    ({"train_idxs": np.arange(40), "val_idxs": np.arange(40, 70), "test_idxs": []},
     "outside 0..59"),
    ({"train_idxs": np.arange(40), "val_idxs": np.arange(30, 50), "test_idxs": []}, "overlap"),
])
def test_bad_split_files_are_refused(tmp_path, splits, message):
    path = write_independent_file(tmp_path / "events.h5")
    split = tmp_path / "split.npz"
    np.savez(split, **splits)
    with pytest.raises(DataError, match=message):
        get_dataset("watchmal").prepare(str(path), 0, 0, {"splits": str(split)})


# -- flips: the PMTs inside a module are mirrored with it ------------------------------------

def dipole_correlations(charges: np.ndarray, vertices: np.ndarray) -> dict[str, float]:
    """Correlation of each hit module's PMT charge dipole with the vertex's offset from the
    module: along z on the barrel, along the azimuth on the barrel, along y on the caps.
    ``charges`` (B, 19, 40, 40) in the simulator's PMT order, ``vertices`` (B, 3)."""
    from datasets.watchmal_physics import _PMT_AXES, pixel_centres

    q = charges.transpose(0, 2, 3, 1)
    total = q.sum(-1)
    along_t1 = (q * _PMT_AXES[1]).sum(-1) / np.maximum(total, 1e-9)
    along_t2 = (q * _PMT_AXES[2]).sum(-1) / np.maximum(total, 1e-9)
    centres = pixel_centres()
    offset = vertices[:, None, None, :] - centres[None]
    phi = (np.arange(40) + 0.5) * 2 * np.pi / 40
    azimuthal = offset[..., 0] * -np.sin(phi) + offset[..., 1] * np.cos(phi)
    barrel = np.zeros((40, 40), bool)
    barrel[12:28] = True
    cap = ~barrel & np.isfinite(centres[..., 0])
    on_barrel, on_cap = (total > 5) & barrel, (total > 5) & cap
    return {"barrel z": np.corrcoef(along_t2[on_barrel], offset[..., 2][on_barrel])[0, 1],
            "barrel azimuth": np.corrcoef(along_t1[on_barrel], azimuthal[on_barrel])[0, 1],
            "cap y": np.corrcoef(along_t2[on_cap], offset[..., 1][on_cap])[0, 1]}


def test_flips_mirror_the_pmts_inside_each_module():
    """A flipped event must look like the mirrored event: a module's PMT charge dipole keeps
    pointing at the (mirrored) vertex. A flip of the module grid alone turns it away."""
    from trainables.loop import flip_image

    spec = get_dataset("watchmal")
    path = spec.prepare(None, 60, 0, {})
    maps = spec.load(path, 0, {}).info.extra["flip_channel_maps"]
    with h5py.File(path, "r") as f:
        charges = torch.from_numpy(f["event_data"][:, :, :, :19].transpose(0, 3, 1, 2).copy())
        vertices = f["positions"][:, 0, :].astype(np.float64)
    before = dipole_correlations(charges.numpy(), vertices)
    assert min(before.values()) > 0.4, before
    for axis, mirror in (("vertical", [1, 1, -1]), ("horizontal", [1, -1, 1])):
        mirrored = vertices * np.array(mirror)  # rows flip z, columns flip y
        kept = dipole_correlations(flip_image(charges, axis, maps[axis]).numpy(), mirrored)
        grid_only = dipole_correlations(flip_image(charges, axis).numpy(), mirrored)
        for name, value in before.items():
            assert kept[name] == pytest.approx(value, abs=0.02), (axis, name, kept)
        turned = [name for name in before if grid_only[name] < -0.4]
        assert turned, (axis, grid_only)  # the check can fail: without the PMT map it does


def test_random_flips_move_charge_and_time_channels_together():
    from trainables.loop import random_flips

    spec = get_dataset("watchmal")
    data = spec.load(spec.prepare(None, 60, 0, {}), 0, {})
    batch = torch.from_numpy(data.batch("x", data.train[:16], {"input_channels": "charge_time"}))
    flipped = random_flips(batch, np.random.default_rng(0), data.info.extra["flip_channel_maps"])
    assert not torch.equal(flipped, batch)
    hit = flipped[:, :19] > 0
    assert torch.all(flipped[:, 19:][~hit] == 0) and torch.any(flipped[:, 19:][hit] != 0)
    torch.testing.assert_close(flipped.sum((1, 2, 3)), batch.sum((1, 2, 3)))  # moved, not lost


def test_files_carry_watchmal_flip_maps_or_their_own(tmp_path):
    from datasets.watchmal import WATCHMAL_FLIP_MAPS

    spec = get_dataset("watchmal")
    path = write_independent_file(tmp_path / "wcsim.h5")
    maps = spec.load(spec.prepare(str(path), 0, 0, {}), 0, {}).info.extra["flip_channel_maps"]
    assert maps["horizontal"].shape == (40, 19)
    assert (maps["horizontal"] == np.array(WATCHMAL_FLIP_MAPS["horizontal"])).all()
    own = np.tile(np.arange(19)[::-1], (40, 1))
    with h5py.File(path, "a") as f:
        f.attrs["flip_map_vertical"] = own
    maps = spec.load(spec.prepare(str(path), 0, 0, {}), 0, {}).info.extra["flip_channel_maps"]
    assert (maps["vertical"] == own).all()
    with h5py.File(path, "a") as f:
        f.attrs["flip_map_vertical"] = np.zeros(19, dtype=np.int64)
    with pytest.raises(DataError, match="'flip_map_vertical' must be a permutation"):
        spec.prepare(str(path), 0, 0, {})


# -- sample quality --------------------------------------------------------------------------

def test_collapsed_generators_score_clearly_worse(tiny_data):
    data = tiny_data("watchmal")
    everything = np.sort(np.concatenate([data.train, data.val, data.test]))
    events = data.batch("x", everything, {})
    real, held_out = events[::2], events[1::2]
    working = sample_quality(held_out, real, seed=0)["score"]
    zeros = sample_quality(np.zeros_like(held_out), real, seed=0)["score"]
    constant = sample_quality(np.full_like(held_out, held_out.mean()), real, seed=0)["score"]
    noise = sample_quality(np.abs(np.random.default_rng(0).normal(
        0, held_out.std(), held_out.shape)), real, seed=0)["score"]
    blurred = 0.5 * (held_out + np.roll(held_out, 3, axis=-1))  # right charge, smeared rings
    partial = sample_quality(blurred, real, seed=0)["score"]
    order = np.random.default_rng(0).permutation(40 * 40)  # same charges, no rings left
    shuffled = held_out.reshape(*held_out.shape[:2], -1)[..., order].reshape(held_out.shape)
    scrambled = sample_quality(shuffled, real, seed=0)["score"]
    assert working < 0.5
    assert working < partial < zeros
    assert min(zeros, constant, noise, scrambled) > 3 * working + 1
    assert sample_quality(held_out, real, seed=0) == sample_quality(held_out, real, seed=0)


# -- through the CLI -------------------------------------------------------------------------

@pytest.mark.parametrize("space,metric,figure", [
    pytest.param("resnet18", "val_top1", "confusion_matrix.png",
                 marks=pytest.mark.slow),  # ~36 s; the contract suite trains resnet18 by default
    ("dcgan", "val_quality", "samples.png")])
def test_cli_search_logs_runs_and_pictures(tmp_path, space, metric, figure):
    db = tmp_path / "mlflow.db"
    extra = ["--data-option", "charge_norm=scale"] if space == "dcgan" else []
    result = run_cli("--space", space, "--trials", "2", "--max-epochs", "1", "--samples", "90",
                     "--experiment", space, "--mlflow-uri", f"sqlite:///{db}", *extra,
                     "--storage", str(tmp_path / "ray"), cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children = runs_of(db, space)
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert math.isfinite(child.data.metrics[metric])
        pictures = [a.path for a in client.list_artifacts(child.info.run_id, "figures/epoch_001")]
        assert f"figures/epoch_001/{figure}" in pictures, pictures


@pytest.mark.slow  # ~21 s; by default the dcgan CLI search and tests/test_import_watchmal.py
def test_cli_trains_on_an_independent_file_and_refuses_a_broken_one(tmp_path):
    events = write_independent_file(tmp_path / "events.h5", n=60)
    split = tmp_path / "split.npz"
    np.savez(split, train_idxs=np.arange(0, 40), val_idxs=np.arange(40, 50),
             test_idxs=np.arange(50, 60))
    db = tmp_path / "mlflow.db"
    common = ["--space", "resnet18", "--trials", "1", "--max-epochs", "1",
              "--mlflow-uri", f"sqlite:///{db}", "--storage", str(tmp_path / "ray")]
    result = run_cli(*common, "--data", str(events), "--data-option", f"splits={split}",
                     "--experiment", "own-file", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, children = runs_of(db, "own-file")
    assert len(children) == 1 and children[0].info.status == "FINISHED"

    broken = write_independent_file(tmp_path / "broken.h5", n=60,
                                    event_data=np.zeros((60, 40, 40, 19), np.float32))
    before = sorted(p.name for p in tmp_path.iterdir())
    refused = run_cli(*common, "--data", str(broken), "--experiment", "broken", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr
    assert "38" in refused.stderr and "broken.h5" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_background_rejection_at_fixed_signal_efficiency():
    """1/ε_bkg of the cut keeping 80 % of the signal: 1.25 for a score that cannot tell the
    classes apart, large for one that can, bounded by the background count when none pass."""
    from trainables.loop import rejection_at_efficiency

    rng = np.random.default_rng(0)
    blind = rng.uniform(size=20000)
    is_signal = rng.uniform(size=20000) < 0.5
    assert rejection_at_efficiency(blind, is_signal) == pytest.approx(1.25, rel=0.03)
    shifted = blind + 0.5 * is_signal  # signal in [0.5, 1.5]: the 80 % cut sits at 0.7
    assert rejection_at_efficiency(shifted, is_signal) == pytest.approx(1 / 0.3, rel=0.03)
    separated = is_signal.astype(float)
    assert rejection_at_efficiency(separated, is_signal) == (~is_signal).sum()
    assert rejection_at_efficiency(shifted, is_signal, 0.5) > rejection_at_efficiency(
        shifted, is_signal, 0.9)
