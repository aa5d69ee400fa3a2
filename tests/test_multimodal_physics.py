"""Tests for the synthetic multimodal (brain volume + phenotype) set in ``datasets/multimodal_physics.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from datasets.multimodal_physics import (  # noqa: E402
    FOV_MM,
    LESION_CENTRES,
    LESION_RADIUS_MM,
    PHENOTYPE_NAMES,
    region_mask,
    simulate_subjects,
)

N = 400
SHAPE = (32, 32, 32)
SITE = PHENOTYPE_NAMES.index("site")
BRAIN_RADIUS_MM = 50.0


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    return simulate_subjects(N, seed=11, shape=SHAPE)


def _reference_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """Central brain sphere without the neighbourhood of the lesions (the intensity reference)."""
    mask = region_mask(shape, (0.5, 0.5, 0.5), BRAIN_RADIUS_MM)
    for c in LESION_CENTRES:
        mask &= ~region_mask(shape, c, 2.5 * LESION_RADIUS_MM)
    return mask


def _region_feature(volumes: np.ndarray, centres: list[tuple[float, float, float]]) -> np.ndarray:
    """Mean intensity in the spheres at ``centres`` relative to the reference brain mean."""
    shape = volumes.shape[1:]
    region = np.zeros(shape, dtype=bool)
    for c in centres:
        region |= region_mask(shape, c)
    return volumes[:, region].mean(axis=1) / volumes[:, _reference_mask(shape)].mean(axis=1)


def _phenotype_design(phen: np.ndarray) -> np.ndarray:
    """Phenotypes with the categorical site one-hot encoded."""
    site = np.eye(4)[phen[:, SITE].astype(int)]
    return np.hstack([np.delete(phen, SITE, axis=1), site])


def _cv_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Held-out (5-fold cross-validated) ROC AUC of a standardised logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    proba = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def test_shapes_dtypes_and_ranges(cohort: dict[str, np.ndarray]) -> None:
    vol, phen, y = cohort["volumes"], cohort["phenotypes"], cohort["labels"]
    assert 8 <= len(PHENOTYPE_NAMES) <= 12 and len(set(PHENOTYPE_NAMES)) == len(PHENOTYPE_NAMES)
    assert vol.shape == (N, *SHAPE) and vol.dtype == np.float32
    assert phen.shape == (N, len(PHENOTYPE_NAMES)) and phen.dtype == np.float32
    assert y.shape == (N,) and y.dtype == np.int64
    assert np.isfinite(vol).all() and (vol >= 0).all() and np.isfinite(phen).all()
    assert set(np.unique(y)) == {0, 1}
    for name, allowed in (("sex", {0, 1}), ("handedness", {0, 1}), ("site", {0, 1, 2, 3})):
        assert set(np.unique(phen[:, PHENOTYPE_NAMES.index(name)])) == allowed, name
    assert set(np.unique(phen[:, PHENOTYPE_NAMES.index("apoe4_alleles")])) <= {0, 1, 2}
    age = phen[:, PHENOTYPE_NAMES.index("age")]
    assert abs(age.mean()) < 0.3 and 0.7 < age.std() < 1.3


def test_volumes_look_like_a_head(cohort: dict[str, np.ndarray]) -> None:
    vol = cohort["volumes"]
    brain = vol[:, region_mask(SHAPE, (0.5, 0.5, 0.5), 40.0)].mean(axis=1)
    corner = vol[:, :4, :4, :4].mean(axis=(1, 2, 3))
    assert (brain > 5 * corner).all()
    # Bright white matter and darker grey matter / CSF both present: a wide intensity spread inside.
    inside = vol[0][region_mask(SHAPE, (0.5, 0.5, 0.5), 70.0)]
    assert np.percentile(inside, 90) > 1.5 * np.percentile(inside, 10)


def test_labels_roughly_balanced(cohort: dict[str, np.ndarray]) -> None:
    assert 0.3 <= cohort["labels"].mean() <= 0.7


def test_deterministic_and_subject_stable() -> None:
    a = simulate_subjects(5, seed=3)
    b = simulate_subjects(5, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    prefix = simulate_subjects(3, seed=3)
    for key in a:
        np.testing.assert_array_equal(prefix[key], a[key][:3])
    c = simulate_subjects(5, seed=4)
    assert not np.array_equal(a["volumes"], c["volumes"])
    assert not np.array_equal(a["phenotypes"], c["phenotypes"])


def test_shape_parameter_and_progress() -> None:
    calls: list[int] = []
    out = simulate_subjects(70, seed=0, shape=(16, 20, 16), progress=calls.append)
    assert out["volumes"].shape == (70, 16, 20, 16)
    assert out["volumes"].dtype == np.float32 and (out["volumes"] >= 0).all()
    assert out["phenotypes"].shape == (70, len(PHENOTYPE_NAMES)) and out["labels"].shape == (70,)
    assert sum(calls) == 70 and all(k > 0 for k in calls)
    empty = simulate_subjects(0, seed=0)
    assert empty["volumes"].shape == (0, *SHAPE) and empty["labels"].shape == (0,)


@pytest.mark.parametrize("bad", [(32, 32), (32, 32, 2)])
def test_bad_arguments(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        simulate_subjects(2, seed=0, shape=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        simulate_subjects(-1, seed=0)


def test_site_shifts_intensity(cohort: dict[str, np.ndarray]) -> None:
    """Acquisition site is a nuisance variable that also changes the image (a confounder)."""
    vol, site = cohort["volumes"], cohort["phenotypes"][:, SITE].astype(int)
    brain = vol[:, _reference_mask(SHAPE)].mean(axis=1)
    means = np.array([brain[site == s].mean() for s in range(4)])
    assert means.max() / means.min() > 1.2


def test_each_modality_alone_is_informative(cohort: dict[str, np.ndarray]) -> None:
    y = cohort["labels"]
    phen_auc = _cv_auc(_phenotype_design(cohort["phenotypes"]), y)
    assert phen_auc > 0.62, phen_auc
    feat = _region_feature(cohort["volumes"], list(LESION_CENTRES))
    vol_auc = float(roc_auc_score(y, -feat))  # atrophy lowers the lesion-region intensity
    assert vol_auc > 0.62, vol_auc


def test_modalities_are_complementary(cohort: dict[str, np.ndarray]) -> None:
    y = cohort["labels"]
    phen = _phenotype_design(cohort["phenotypes"])
    feat = _region_feature(cohort["volumes"], list(LESION_CENTRES))[:, None]
    phen_auc, vol_auc = _cv_auc(phen, y), _cv_auc(feat, y)
    both_auc = _cv_auc(np.hstack([phen, feat]), y)
    assert both_auc >= max(phen_auc, vol_auc) + 0.05, (phen_auc, vol_auc, both_auc)


def test_volume_signal_is_localised(cohort: dict[str, np.ndarray]) -> None:
    """The same feature at random locations away from the lesions carries no label signal."""
    y = cohort["labels"]
    rng = np.random.default_rng(2024)
    lesions_mm = np.array(LESION_CENTRES) * np.array(FOV_MM)
    taken: list[np.ndarray] = []
    while len(taken) < 3:
        c = rng.uniform(0.3, 0.7, size=3)
        mm = c * np.array(FOV_MM)
        far = np.linalg.norm(np.vstack([lesions_mm, *taken]) - mm, axis=1).min() > 3 * LESION_RADIUS_MM
        if not far or np.linalg.norm(mm - np.array(FOV_MM) / 2) > 45.0:
            continue
        taken.append(mm)
        auc = float(roc_auc_score(y, -_region_feature(cohort["volumes"], [tuple(c)])))
        assert 0.4 <= auc <= 0.6, (tuple(np.round(c, 2)), auc)
