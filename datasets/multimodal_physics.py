"""Synthetic multimodal neuroimaging set: a T1-like head volume plus a phenotype vector per subject.

Shaped like the CS 273B project's data (MNI-space brain volumes, 91 x 109 x 91 voxels of 2 mm,
with a phenotype table and a binary diagnosis), but rendered at any grid size, 32^3 by default.

Generative model, per subject ``i`` (each subject has its own random stream ``(seed, i)``, so
subject ``i`` is the same whatever ``n``):

* **Phenotypes** (:data:`PHENOTYPE_NAMES`): acquisition ``site`` (categorical 0-3), age (z-score,
  the mean shifted by site), sex and handedness (binary), education, IQ (correlated with
  education), a memory score (falls with age, rises with IQ), ``apoe4_alleles`` (0/1/2,
  binomial), BMI and head motion (z-scores).
* **Latent risk** ``r = A_VOL * v + A_PHEN * p + SIGMA_RISK * e`` with ``v, e ~ N(0, 1)`` and the
  phenotype liability ``p`` (unit variance, mean 0) a linear score of age, APOE4 alleles, the
  memory score (protective) and a small per-site recruitment offset; ``label = r > 0``.  Only
  ``v`` reaches the image and only ``p`` the table, so each modality alone explains part of the
  label and both together explain more.
* **Volume**: nested smooth ellipsoids in millimetres on the MNI field of view (:data:`FOV_MM`):
  scalp, skull, CSF rim, cortical grey matter with a cosine-folded grey/white boundary, white
  matter, two lateral ventricles and two deep grey-matter nuclei.  The subject's brain is
  scaled (``~4 %``), shifted rigidly by up to :data:`MAX_SHIFT_VOXELS` voxels per axis (no
  rotation) and has its own ventricle size.  The diagnostic signal is atrophy at the fixed
  anatomical positions :data:`LESION_CENTRES` (bilateral, medial-temporal-like, given in the
  unshifted frame and moving with the subject's brain): tissue intensity is multiplied by
  ``1 - depth * exp(-(d / LESION_RADIUS_MM)^2)`` with ``depth = LESION_DEPTH * sigmoid(LESION_SLOPE
  * (v - LESION_OFFSET))``, so the depth varies continuously across subjects.
* **Acquisition**: per-site grey-matter contrast and noise level, a global gain (site times a
  subject log-normal factor), a smooth separable multiplicative bias field and Rician noise
  (``|signal + complex Gaussian|``) whose level grows with head motion.  Site thus shifts both
  the image and, slightly, the diagnosis rate: a realistic confounder.

Simplifications: one shared ellipsoidal anatomy (no atlas, no real gyri), no rotations or
non-linear warps, no partial-volume model beyond tanh edges, noise added on the final grid (no
k-space), the lesion acts on tissue intensity only (no change of shape), and age does not
change the anatomy (so no image signal other than the lesions is tied to the label).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "FOV_MM",
    "LESION_CENTRES",
    "LESION_RADIUS_MM",
    "MAX_SHIFT_VOXELS",
    "NATIVE_SHAPE",
    "PHENOTYPE_NAMES",
    "region_mask",
    "simulate_subjects",
]

NATIVE_SHAPE: tuple[int, int, int] = (91, 109, 91)
FOV_MM: tuple[float, float, float] = (182.0, 218.0, 182.0)  # 2 mm MNI grid, x = L-R, y = P-A, z = I-S

PHENOTYPE_NAMES: tuple[str, ...] = (
    "age",
    "sex",
    "handedness",
    "education",
    "iq",
    "memory_score",
    "apoe4_alleles",
    "bmi",
    "site",
    "motion",
)

# Atrophy regions: fractional coordinates (of FOV_MM) in the subject's unshifted, unscaled frame.
LESION_CENTRES: tuple[tuple[float, float, float], ...] = (
    (0.5 - 28.0 / 182.0, 0.5 - 14.0 / 218.0, 0.5 - 16.0 / 182.0),
    (0.5 + 28.0 / 182.0, 0.5 - 14.0 / 218.0, 0.5 - 16.0 / 182.0),
)
LESION_RADIUS_MM: float = 13.0  # 1/e radius of the Gaussian atrophy profile
LESION_DEPTH: float = 0.6  # maximal fractional intensity loss at a lesion centre
LESION_SLOPE: float = 2.0
LESION_OFFSET: float = 0.0
MAX_SHIFT_VOXELS: float = 2.0

# Latent risk weights: r = A_VOL v + A_PHEN p + SIGMA_RISK e.
A_VOL: float = 1.0
A_PHEN: float = 0.8
SIGMA_RISK: float = 0.25

_N_SITES = 4
_SITE_P = np.array([0.3, 0.3, 0.2, 0.2])
_SITE_AGE = np.array([0.3, -0.2, 0.0, -0.15])  # mean age shift (z units) by site (mean 0)
_SITE_RISK = np.array([0.3, -0.1, 0.0, -0.3])  # recruitment offset in the liability (mean 0)
_SITE_GAIN = np.array([1.0, 0.85, 1.2, 0.95])
_SITE_GM = np.array([0.62, 0.66, 0.58, 0.64])  # grey-matter intensity (white matter = 1)
_SITE_NOISE = np.array([0.035, 0.05, 0.03, 0.045])
_APOE_P = 0.15
# Liability weights; p = (w . x + site offset) / _P_SD has unit variance for the model above.
_W_AGE, _W_APOE, _W_MEM = 0.8, 0.6, -0.7

# Tissue intensities (T1-like, white matter = 1).
_SCALP, _SKULL, _CSF, _WM, _DEEP_GM = 0.5, 0.08, 0.18, 1.0, 0.8
# Head ellipsoid semi-axes (mm) and boundaries in units of the normalised ellipsoidal radius.
_HEAD_AXES = np.array([72.0, 92.0, 78.0])
_R_SKULL, _R_CSF, _R_BRAIN, _R_WM = 0.93, 0.88, 0.85, 0.72
_VENTRICLES = (((-7.0, 4.0, 12.0), (5.0, 20.0, 8.0)), ((7.0, 4.0, 12.0), (5.0, 20.0, 8.0)))
_DEEP = (((-13.0, -6.0, 2.0), (8.0, 11.0, 8.0)), ((13.0, -6.0, 2.0), (8.0, 11.0, 8.0)))


def _liability_sd() -> float:
    """Standard deviation of the raw phenotype liability (memory depends on age and iq)."""
    # memory = -0.4 age + 0.3 iq + sqrt(1 - 0.16 - 0.09) e; age, iq, e independent unit variance.
    # (Site shifts age; the small between-site variances are ignored.)
    age_coef = _W_AGE + _W_MEM * -0.4
    var = age_coef**2 + (_W_MEM * 0.3) ** 2 + _W_MEM**2 * 0.75 + _W_APOE**2
    var += float(_SITE_P @ _SITE_RISK**2)
    return float(np.sqrt(var))


_P_SD = _liability_sd()
_APOE_MEAN = 2 * _APOE_P
_APOE_SD = float(np.sqrt(2 * _APOE_P * (1 - _APOE_P)))


def _axes_mm(shape: tuple[int, int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Voxel-centre coordinates (mm, relative to the FOV centre) per axis, and voxel sizes."""
    vox = np.array([f / s for f, s in zip(FOV_MM, shape, strict=True)])
    axes = [
        ((np.arange(s) + 0.5) * v - f / 2).astype(np.float32)
        for s, v, f in zip(shape, vox, FOV_MM, strict=True)
    ]
    return axes, vox


def region_mask(
    shape: tuple[int, int, int], centre: tuple[float, float, float], radius_mm: float = LESION_RADIUS_MM
) -> np.ndarray:
    """Boolean mask of the voxels within ``radius_mm`` of ``centre`` (fractional FOV coordinates)."""
    axes, _ = _axes_mm(shape)
    c = [(f - 0.5) * fov for f, fov in zip(centre, FOV_MM, strict=True)]
    d2 = (
        ((axes[0] - c[0]) ** 2)[:, None, None]
        + ((axes[1] - c[1]) ** 2)[None, :, None]
        + ((axes[2] - c[2]) ** 2)[None, None, :]
    )
    return d2 <= radius_mm**2


def _phenotypes(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One subject's phenotype vector (order of :data:`PHENOTYPE_NAMES`) and unit liability."""
    site = int(rng.choice(_N_SITES, p=_SITE_P))
    z = rng.standard_normal(7)
    age = z[0] + _SITE_AGE[site]
    sex = float(rng.random() < 0.5)
    hand = float(rng.random() < 0.1)
    edu = z[1]
    iq = 0.5 * edu + np.sqrt(0.75) * z[2]
    mem = -0.4 * age + 0.3 * iq + np.sqrt(0.75) * z[3]
    apoe = float(rng.binomial(2, _APOE_P))
    bmi, motion = z[4], z[5]
    raw = _W_AGE * age + _W_APOE * (apoe - _APOE_MEAN) / _APOE_SD + _W_MEM * mem + _SITE_RISK[site]
    x = np.array([age, sex, hand, edu, iq, mem, apoe, bmi, site, motion], dtype=np.float32)
    return x, raw / _P_SD


def _inside(rho: np.ndarray, r0: float, w: float) -> np.ndarray:
    """Smooth indicator of ``rho < r0`` with edge width ``w``."""
    return 0.5 - 0.5 * np.tanh((rho - r0) * (1.0 / w))


def _box(ax: list[np.ndarray], centre: tuple[float, ...], half: tuple[float, ...]) -> tuple[slice, ...]:
    """Index slices of the grid points within ``centre +- half`` along each (increasing) axis."""
    return tuple(
        slice(int(np.searchsorted(a, c - h)), int(np.searchsorted(a, c + h, side="right")))
        for a, c, h in zip(ax, centre, half, strict=True)
    )


def _ellipsoid_rho(ax: list[np.ndarray], centre: tuple[float, ...], semi: tuple[float, ...]) -> np.ndarray:
    """Normalised ellipsoidal radius on the grid spanned by the 1D coordinate arrays ``ax``."""
    return np.sqrt(
        (((ax[0] - centre[0]) / semi[0]) ** 2)[:, None, None]
        + (((ax[1] - centre[1]) / semi[1]) ** 2)[None, :, None]
        + (((ax[2] - centre[2]) / semi[2]) ** 2)[None, None, :]
    )


def _blend(
    tissue: np.ndarray,
    ax: list[np.ndarray],
    centre: tuple[float, ...],
    semi: tuple[float, ...],
    value: float,
    w: float,
) -> None:
    """Replace ``tissue`` by ``value`` inside a soft-edged ellipsoid (in place, on its bounding box)."""
    box = _box(ax, centre, tuple(x * (1.0 + 6.0 * w) for x in semi))
    sub = [a[b] for a, b in zip(ax, box, strict=True)]
    t = _inside(_ellipsoid_rho(sub, centre, semi), 1.0, w)
    tissue[box] += (value - tissue[box]) * t


def _render(
    rng: np.random.Generator,
    axes: list[np.ndarray],
    vox: np.ndarray,
    site: int,
    motion: float,
    depth: float,
) -> np.ndarray:
    """One subject's volume (float32, non-negative)."""
    shift = (2 * rng.random(3) - 1) * MAX_SHIFT_VOXELS * vox
    scale = float(np.exp(0.04 * rng.standard_normal()))
    vent_scale = float(np.exp(0.25 * rng.standard_normal()))
    gain = float(_SITE_GAIN[site] * np.exp(0.1 * rng.standard_normal()))
    bias_c = rng.normal(0.0, 0.12, size=(3, 2))
    # Subject frame: template millimetres (the brain moves by ``shift`` and is scaled by ``scale``).
    ax = [((a - s) / scale).astype(np.float32) for a, s in zip(axes, shift, strict=True)]
    w = float(0.6 * vox.min() / scale / _HEAD_AXES.min())  # edge width in rho units (~ a voxel)

    rho = _ellipsoid_rho(ax, (0.0, 0.0, 0.0), tuple(_HEAD_AXES))
    # Cortical folding: separable cosines modulate the grey/white boundary.
    fold = rho + (0.035 * np.cos(ax[0] / 6.0))[:, None, None] * np.cos(ax[1] / 7.0 + 1.0)[None, :, None]
    fold += (0.035 * np.cos(ax[1] / 5.0))[None, :, None] * np.cos(ax[2] / 6.5 + 0.5)[None, None, :]
    fold += (0.025 * np.cos(ax[0] / 2.3 + 2.0))[:, None, None] * np.cos(ax[2] / 2.6)[None, None, :]
    gm = float(_SITE_GM[site])
    tissue = _inside(fold, _R_WM, w)
    tissue *= _WM - gm
    tissue += gm
    for c, s in _DEEP:
        _blend(tissue, ax, c, s, _DEEP_GM, 2 * w)
    for c, s in _VENTRICLES:
        _blend(tissue, ax, c, tuple(x * vent_scale for x in s), _CSF, 2 * w)
    # Atrophy at the fixed anatomical positions (moving with the subject's brain).
    for cf in LESION_CENTRES:
        c = tuple((f - 0.5) * fov for f, fov in zip(cf, FOV_MM, strict=True))
        box = _box(ax, c, (3.0 * LESION_RADIUS_MM,) * 3)
        sub = [a[b] for a, b in zip(ax, box, strict=True)]
        r2 = _ellipsoid_rho(sub, c, (LESION_RADIUS_MM,) * 3) ** 2
        tissue[box] *= 1.0 - depth * np.exp(-r2)

    img = _inside(rho, 1.0, w)
    img *= _SCALP
    img += (_SKULL - _SCALP) * _inside(rho, _R_SKULL, w)
    img += (_CSF - _SKULL) * _inside(rho, _R_CSF, w)
    tissue -= _CSF
    tissue *= _inside(rho, _R_BRAIN, w)
    img += tissue

    # Smooth separable multiplicative bias field (linear + quadratic per axis) and global gain.
    bias = [
        np.exp(float(c1) * (a / 90.0) + float(c2) * (a / 90.0) ** 2)
        for (c1, c2), a in zip(bias_c, axes, strict=True)
    ]
    img *= (gain * bias[0])[:, None, None] * bias[1][None, :, None]
    img *= bias[2][None, None, :]
    # Rician noise: magnitude of the signal plus complex Gaussian noise.
    sigma = gain * float(_SITE_NOISE[site]) * float(np.exp(0.2 * motion))
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= sigma
    img += noise
    np.square(img, out=img)
    rng.standard_normal(img.shape, dtype=np.float32, out=noise)
    noise *= sigma
    np.square(noise, out=noise)
    img += noise
    return np.sqrt(img, out=img)


def simulate_subjects(
    n: int,
    seed: int,
    shape: tuple[int, int, int] = (32, 32, 32),
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Simulate ``n`` subjects.

    Returns ``volumes`` float32 ``(n, *shape)``, ``phenotypes`` float32 ``(n, len(PHENOTYPE_NAMES))``
    and ``labels`` int64 ``(n,)``.  ``progress(k)`` is called with the number ``k`` of newly
    finished subjects (every 64 and at the end).  Subject ``i`` depends only on ``(seed, i, shape)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be three sizes >= 4, got {shape}")
    axes, vox = _axes_mm(shape)
    volumes = np.empty((n, *shape), dtype=np.float32)
    phenotypes = np.empty((n, len(PHENOTYPE_NAMES)), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    pending = 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        x, p = _phenotypes(rng)
        v, e = rng.standard_normal(2)
        labels[i] = int(A_VOL * v + A_PHEN * p + SIGMA_RISK * e > 0)
        depth = LESION_DEPTH / (1.0 + np.exp(-LESION_SLOPE * (v - LESION_OFFSET)))
        phenotypes[i] = x
        volumes[i] = _render(rng, axes, vox, int(x[8]), float(x[9]), float(depth))
        pending += 1
        if progress is not None and pending >= 64:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    return {"volumes": volumes, "phenotypes": phenotypes, "labels": labels}
