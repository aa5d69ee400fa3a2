"""The sample-quality score sees structure: corrupted real images score clearly worse than
held-out real ones, on both image data sets the generators use (particle crops, WatChMaL
events), and the reference sample is a fixed random subset of the split."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from datasets import get_dataset
from datasets.base import DataInfo, DataSplits
from trainables import sample_quality as sq
from trainables.sample_quality import reference_indices, sample_quality

SAMPLES = 320  # per data set: a 160-image reference and 160 held-out images
FACTOR, MARGIN = 3.0, 1.0  # a corruption scores ≥ FACTOR × and ≥ MARGIN + held-out real


@pytest.fixture(scope="module", params=["larcv", "watchmal"])
def real_sets(request):
    """(reference, its labels, held-out) real images as the generator kinds score them:
    particle crops mapped to [0, 1] (``ewm``, ``mlp_gan``), events as model input (``dcgan``)."""
    from trainables.gan import to_unit

    spec = get_dataset(request.param)
    data = spec.load(spec.prepare(None, SAMPLES, 0, {}), 0, {})
    everything = np.arange(data.arrays["x"].shape[0])
    ref = reference_indices(everything, SAMPLES // 2, seed=1)
    held = np.setdiff1d(everything, ref)
    images = data.batch("x", everything, {})
    if request.param == "larcv":
        images = to_unit(images)
    labels = np.asarray(data.arrays["y"])
    return request.param, images[ref], labels[ref], images[held]


def corruptions(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Real images broken in ways a blind score would miss or reward."""
    rng = np.random.default_rng(seed)
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w)
    order = np.stack([rng.permutation(h * w) for _ in range(n)])[:, None, :]
    shuffled = np.take_along_axis(flat, np.broadcast_to(order, flat.shape), 2)
    rolled = np.stack([np.roll(im, (rng.integers(h // 4, 3 * h // 4 + 1),
                                    rng.integers(w // 4, 3 * w // 4 + 1)), axis=(1, 2))
                       for im in images])
    occupancy = (images.sum(1) > 0).mean((1, 2))  # salt noise with each image's occupancy
    lit = images[images > 0]
    salt = np.zeros_like(images)
    for i in range(n):
        mask = rng.random((h, w)) < occupancy[i]
        salt[i][:, mask] = rng.choice(lit, size=(c, int(mask.sum())))  # the real spectrum
    return {"shuffled pixels": shuffled.reshape(images.shape), "rolled": rolled,
            "mode collapse": np.repeat(images[:1], n, 0), "all zeros": np.zeros_like(images),
            "salt noise": salt}


def test_corrupted_images_score_clearly_worse_than_held_out_real(real_sets):
    name, reference, labels, held_out = real_sets
    held = sample_quality(held_out, reference, seed=0, labels=labels)["score"]
    scores = {k: sample_quality(v, reference, seed=0, labels=labels)["score"]
              for k, v in corruptions(held_out).items()}
    table = f"{name}: held-out real {held:.3f}, " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
    assert held < 0.5, table
    for score in scores.values():
        assert score >= FACTOR * held and score >= held + MARGIN, table


def test_score_is_deterministic_for_a_seed_and_logs_its_parts(real_sets):
    name, reference, labels, held_out = real_sets
    first = sample_quality(held_out, reference, seed=0, labels=labels)
    assert set(first) == set(sq.KEYS)
    assert first == sample_quality(held_out, reference, seed=0, labels=labels)  # cached CNN
    if name == "larcv":  # retrained from scratch (cheap here): the same CNN, the same score
        sq._CACHE.clear()
        assert first == sample_quality(held_out, reference, seed=0, labels=labels)
    other = sample_quality(held_out, reference, seed=1, labels=labels)
    assert other != first and other["score"] < 0.5


def test_non_finite_samples_score_inf_and_flat_samples_work():
    import torch

    rng = np.random.default_rng(0)
    real = np.abs(rng.normal(size=(40, 1, 8, 8))) * (rng.random((40, 1, 8, 8)) < 0.3)
    plain = sample_quality(real[:20], real[20:])
    sq._CACHE.clear()  # the CNN trains in fp32 with gradients whatever the caller's context
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert sample_quality(real[:20], real[20:]) == plain
    bad = real.copy()
    bad[3, 0, 2, 2] = np.nan
    result = sample_quality(bad, real)
    assert set(result) == set(sq.KEYS) and all(v == float("inf") for v in result.values())
    flat = real.reshape(40, -1)
    good, zeros = sample_quality(flat[:20], flat[20:]), sample_quality(0 * flat[:20], flat[20:])
    assert np.isfinite(good["score"]) and zeros["score"] > good["score"]
    with pytest.raises(ValueError, match="shapes differ"):
        sample_quality(real[:, :, :4], real)


@pytest.mark.parametrize("kind_name", ["gan", "ewm"])
def test_kinds_score_against_a_fixed_random_reference_sample(kind_name, monkeypatch):
    """On a class-ordered file the first sorted indices are one class; the reference sample
    is a seeded random subset instead, the same at every call, with its labels."""
    import trainables.particle_generator  # noqa: F401 - registers 'ewm'
    from trainables.gan import EVAL_SAMPLES, EVAL_SEED, to_unit
    from trainables.loop import get_kind

    n = 3000
    labels = np.repeat(np.arange(3), n // 3)  # ordered by class
    images = np.random.default_rng(0).random((n, 1, 8, 8)).astype(np.float32)
    val = np.arange(0, n, 2)
    data = DataSplits({"x": images, "y": labels}, np.arange(1, n, 2), val, np.array([1]),
                      DataInfo(input_shape=(1, 8, 8)))
    kind = get_kind(kind_name)
    seen = []
    module = "trainables.gan" if kind_name == "gan" else "trainables.particle_generator"
    monkeypatch.setattr(f"{module}.sample_quality",
                        lambda fake, real, seed, labels: seen.append((real, labels)) or {"score": 0.0})
    monkeypatch.setattr(type(kind), "generate", lambda self, model, k, device: np.zeros((k, 1, 8, 8)))
    model = SimpleNamespace(to_image=lambda x: x)
    for _ in range(2):
        assert kind.evaluate(model, data, "val", {}, SimpleNamespace(device="cpu")) == {"val_quality": 0.0}
    expected = reference_indices(val, EVAL_SAMPLES, EVAL_SEED)
    assert len(expected) == EVAL_SAMPLES and set(expected) <= set(val)
    assert not np.array_equal(expected, np.sort(val)[:EVAL_SAMPLES])
    scored = images[expected] if kind_name == "gan" else to_unit(images[expected])
    for real, ref_labels in seen:
        np.testing.assert_array_equal(real, scored)
        np.testing.assert_array_equal(ref_labels, labels[expected])
        assert np.bincount(ref_labels, minlength=3).min() > EVAL_SAMPLES / 5  # every class
