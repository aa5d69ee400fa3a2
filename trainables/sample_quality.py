"""One sample-quality score for every generator (GAN, EWM, DCGAN): lower is better.

``sample_quality(generated, real, seed, labels=None)`` compares generated images (N, C, H, W)
with a *reference sample* of real ones (flat samples (N, D) are read as 1 × D images). It
follows the evaluation recommended for generative models in high-energy physics by Kansal et
al., "Evaluating generative models in high energy physics" (arXiv:2211.10295: Wasserstein
distances of individual physics features plus kernel/Fréchet distances of feature vectors)
and the physics-feature comparisons of sparse particle images of arXiv:2307.13687. No
raw-pixel distance: it cannot tell real images from the same pixels shuffled. Three parts,
each unitless, ~0 for a perfect generator and ~1 for one that puts every sample at the real
data's average:

- ``physics``: the mean of the 1D Wasserstein-1 distances between generated and real
  distributions of physics features (each also returned under the feature's name). *Lit*
  pixels are those of the channel-summed image above ``LIT_FRACTION`` of the real images'
  median non-zero summed pixel. Features:
  ``spectrum`` (the pixel-intensity spectrum: pooled values of every lit pixel of every
  channel), ``occupancy`` (fraction of lit pixels), ``intensity`` (charge on lit pixels),
  ``clusters`` (number of 8-connected clusters of lit pixels, :func:`scipy.ndimage.label`:
  tracks, showers, Cherenkov-ring fragments), ``extent`` (bounding-box diagonal of the image's
  highest-charge cluster: the track or ring length), ``cluster_energy`` (pooled charge of every
  cluster), ``centroid_row``/``centroid_col`` (charge-weighted centre) and ``width``
  (charge-weighted RMS radius around it, the shower width of calorimeter-image studies). Each
  W1 (on 64 quantiles, 1 %-99 %) is divided by the real distribution's W1 to a point mass at
  its median (its mean absolute deviation), floored at half a pixel for positions and half a
  cluster for counts (``PIXEL_FLOOR``).
- ``kpd``: the kernel physics distance, an unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (x·y/d + 1)³, between per-image physics-feature vectors (``VECTOR``: the per-image
  features above and the mean lit-pixel charge), so correlations count, not only marginals.
- ``kid``: the kernel inception distance (Bińkowski et al., arXiv:1801.01401), the same
  estimator in the 32 penultimate-layer features of a small CNN trained on the *real reference
  sample only* (not an ImageNet network: these are not natural images). The CNN (three 3×3
  convolutions, an adaptive average pool to a 4 × 4 grid, which keeps where the charge is, and
  a 32-unit layer; input divided by each channel's 99th percentile of lit real pixels) learns
  the data set's class labels when the caller passes ``labels`` with two or more classes
  (particle type for WatChMaL events, topology for the particle crops), always together with
  a self-supervised regression of each image's standardised physics-feature vector, so its
  features describe the images' physics even for unlabelled data or for classes that look
  alike (e and γ). It is trained on CPU, on one thread, for ``CNN_EPOCHS`` passes over the
  reference (40-200 Adam steps: a few seconds), deterministically for a seed, and kept in an
  in-process cache keyed by a hash of the reference images, labels and seed, so every epoch
  of a trial reuses it.

KID/KPD rather than Fréchet distances: the unbiased MMD² has expectation 0 for identical
distributions at any sample size, while the Fréchet distance is biased upward by a term
growing with feature dimension over N (Kansal et al. extrapolate FPD to N → ∞, which 256
samples cannot support). Kernel inputs are standardised by the real sample and clipped at
±``CLIP`` standard deviations, so one absurd feature saturates instead of overflowing the cubic
kernel. Both MMD² are divided by the MMD² between the real sample and a point mass at its
mean, the analogue of the W1 scale above; being unbiased they can be slightly negative.

``score`` is the mean of the three parts after :func:`compress` (a part below 0 counts 0, up
to 1 as itself, above 1 as 1 + log(part)): the parts weigh equally, and the log keeps one
hopeless part (salt noise has tens of times the real number of clusters) from swamping the others.
Measured with 160 reference images of each data set (the tests): held-out real images
score 0.05 (crops) and 0.14 (events); shuffled pixels, rolled images, one real image repeated,
all-zero images and salt noise with the real occupancy and spectrum score 1.3-5.9
(``tests/test_sample_quality.py`` asserts ≥ 3× and ≥ 1 more). Non-finite generated values
score ``inf`` in every key.

Reference sample: the generator kinds (``GanKind``, ``EwmKind``) score against
``EVAL_SAMPLES`` images of the split drawn at random with a fixed seed
(:func:`reference_indices`), the same subset every epoch and trial, with their labels
(:func:`reference_labels`), rather than the first indices of the sorted split (on a file
ordered by class: one class).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict

import numpy as np

QUANTILES = np.linspace(0.01, 0.99, 64)
LIT_FRACTION = 0.1  # lit pixel: above this fraction of the real median non-zero pixel
POOL_MAX = 100_000  # values of a pooled distribution kept (seeded subsample)
PIXEL_FLOOR = 0.5  # scale floor of position features (pixels) and counts (clusters)
FEATURES = ("spectrum", "occupancy", "intensity", "clusters", "extent", "cluster_energy",
            "centroid_row", "centroid_col", "width")
FLOORED = ("clusters", "extent", "centroid_row", "centroid_col", "width")
#: per-image feature vector of the KPD and of the CNN's regression target
VECTOR = ("occupancy", "intensity", "clusters", "extent", "centroid_row", "centroid_col",
          "width", "mean_lit")
CLIP = 5.0  # standardised kernel inputs are clipped at ±CLIP real standard deviations
CNN_EPOCHS = 50  # passes over the reference sample, within [CNN_MIN_STEPS, CNN_MAX_STEPS] steps
CNN_MIN_STEPS, CNN_MAX_STEPS = 40, 200
CNN_BATCH = 64
CNN_FEATURES = 32
CNN_LR = 2e-3
CACHE_SIZE = 4
KEYS = ("score", "physics", "kpd", "kid", *FEATURES)

_CACHE: OrderedDict[str, _Reference] = OrderedDict()


def reference_indices(split: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``n`` indices of ``split`` (all of it if smaller), sorted
    for reading: the same reference sample every time for the same split and seed."""
    split = np.asarray(split)
    if len(split) <= n:
        return np.sort(split)
    return np.sort(np.random.default_rng(seed).choice(split, size=n, replace=False))


def reference_labels(data, indices: np.ndarray) -> np.ndarray | None:
    """The class labels (``arrays['y']``) of the reference sample, if the data set has them."""
    labels = getattr(data, "arrays", {}).get("y")
    return None if labels is None else np.asarray(labels[indices], dtype=np.int64)


# -- physics features ------------------------------------------------------------------------

def _as_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:  # flat samples: one channel, one row of D pixels
        return x[:, None, None, :]
    if x.ndim == 3:  # (N, H, W)
        return x[:, None]
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images or (N, D) samples, got {x.shape}")
    return x


def _thresholds(real: np.ndarray) -> tuple[float, float]:
    """Lit thresholds of single pixels (any channel) and of the channel-summed image."""
    lit = real[real > 0]
    summed = real.sum(1)
    lit_sum = summed[summed > 0]
    pixel = LIT_FRACTION * float(np.median(lit)) if lit.size else 1e-6
    total = LIT_FRACTION * float(np.median(lit_sum)) if lit_sum.size else 1e-6
    return pixel, total


def physics_features(images: np.ndarray, thresholds: tuple[float, float], seed: int = 0
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-image features (each (N,)) and pooled distributions (spectrum, cluster energy)."""
    from scipy import ndimage

    pixel_threshold, sum_threshold = thresholds
    n, _, height, width = images.shape
    summed = images.sum(1)
    lit = summed > sum_threshold
    charge = np.where(lit, summed, 0.0)
    total = charge.sum((1, 2))
    occupancy = lit.mean((1, 2))

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected inside an image, never across images
    labels, count = ndimage.label(lit, structure=structure)
    index = np.arange(1, count + 1)
    clusters = np.zeros(n)
    extent = np.zeros(n)
    cluster_energy = np.zeros(0)
    if count:
        cluster_energy = np.asarray(ndimage.sum_labels(charge, labels, index))
        slices = ndimage.find_objects(labels)
        image_of = np.array([s[0].start for s in slices])
        diagonal = np.array([np.hypot(s[1].stop - s[1].start, s[2].stop - s[2].start)
                             for s in slices])
        clusters = np.bincount(image_of, minlength=n).astype(np.float64)
        # highest-charge cluster of each image: sort by (image, energy), take the last
        order = np.lexsort((cluster_energy, image_of))
        last = np.r_[image_of[order][1:] != image_of[order][:-1], True]
        extent[image_of[order][last]] = diagonal[order][last]

    rows = np.arange(height, dtype=np.float64)[None, :, None]
    cols = np.arange(width, dtype=np.float64)[None, None, :]
    safe = np.where(total > 0, total, 1.0)
    centre_row = np.where(total > 0, (charge * rows).sum((1, 2)) / safe, (height - 1) / 2)
    centre_col = np.where(total > 0, (charge * cols).sum((1, 2)) / safe, (width - 1) / 2)
    radius2 = (rows - centre_row[:, None, None]) ** 2 + (cols - centre_col[:, None, None]) ** 2
    spread = np.sqrt((charge * radius2).sum((1, 2)) / safe)
    lit_count = lit.sum((1, 2))
    mean_lit = np.where(lit_count > 0, total / np.maximum(lit_count, 1), 0.0)

    spectrum = images[images > pixel_threshold]
    rng = np.random.default_rng(seed)
    if spectrum.size > POOL_MAX:
        spectrum = spectrum[rng.integers(0, spectrum.size, POOL_MAX)]
    if cluster_energy.size > POOL_MAX:
        cluster_energy = cluster_energy[rng.integers(0, cluster_energy.size, POOL_MAX)]
    per_image = {"occupancy": occupancy, "intensity": total, "clusters": clusters,
                 "extent": extent, "centroid_row": centre_row, "centroid_col": centre_col,
                 "width": spread, "mean_lit": mean_lit}
    pooled = {"spectrum": spectrum, "cluster_energy": cluster_energy}
    return per_image, pooled


def _quantiles(x: np.ndarray) -> np.ndarray:
    return np.quantile(x if x.size else np.zeros(1), QUANTILES)


def _w1_scale(q: np.ndarray, floor: float) -> float:
    """W1 between a distribution (its quantiles) and a point mass at its median, floored."""
    mad = float(np.abs(q - np.median(q)).mean())
    return max(mad, floor, 1e-12)


# -- kernel distances ------------------------------------------------------------------------

def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (KID's and KPD's estimator)."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return float("nan")
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean())


def _point_mass_mmd2(x: np.ndarray) -> float:
    """MMD² between ``x`` (standardised: mean 0) and a point mass at its mean."""
    m = len(x)
    if m < 2:
        return 1.0
    kxx = _poly_kernel(x, x)
    return max(float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))) - 1.0, 1e-12)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-8 * (np.abs(mean) + 1.0), std, 1.0)


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised by the real sample and clipped at ±CLIP: one absurd feature saturates
    instead of overflowing the cubic kernel (and the unbiased estimate's variance)."""
    return np.clip((x - mean) / std, -CLIP, CLIP)


def compress(part: float) -> float:
    """A part as it enters ``score``: itself up to 1, then 1 + log(part)."""
    if np.isnan(part):  # fewer than two samples: no kernel distance
        return 0.0
    return max(part, 0.0) if part <= 1.0 else 1.0 + float(np.log(part))


# -- the reference: everything derived from the real sample, cached ---------------------------

class _Reference:
    """Thresholds, feature distributions, standardisers and the trained CNN of one real set."""

    def __init__(self, real: np.ndarray, labels: np.ndarray | None, seed: int):
        self.thresholds = _thresholds(real)
        per_image, pooled = physics_features(real, self.thresholds, seed)
        self.quantiles: dict[str, np.ndarray] = {}
        self.scales: dict[str, float] = {}
        for name in FEATURES:
            values = pooled[name] if name in pooled else per_image[name]
            q = _quantiles(values)
            self.quantiles[name] = q
            floor = PIXEL_FLOOR if name in FLOORED else 1e-3 * (abs(float(np.median(q))) + 1e-9)
            self.scales[name] = _w1_scale(q, floor)
        vector = np.stack([per_image[k] for k in VECTOR], 1)
        self.vector_mean, self.vector_std = _standardiser(vector)
        self.vector = _standardise(vector, self.vector_mean, self.vector_std)
        self.kpd_unit = _point_mass_mmd2(self.vector)

        self.pixel_scale = self._pixel_scale(real)
        self.net = _train_cnn(real / self.pixel_scale, self.vector, labels, seed)
        features = _cnn_features(self.net, real / self.pixel_scale)
        self.feature_mean, self.feature_std = _standardiser(features)
        self.features = _standardise(features, self.feature_mean, self.feature_std)
        self.kid_unit = _point_mass_mmd2(self.features)

    def _pixel_scale(self, real: np.ndarray) -> np.ndarray:
        """Per-channel divisor of the CNN's input: the 99th percentile of lit real pixels."""
        scale = np.ones((1, real.shape[1], 1, 1))
        for c in range(real.shape[1]):
            lit = real[:, c][real[:, c] > 0]
            if lit.size:
                scale[0, c, 0, 0] = max(float(np.percentile(lit, 99)), 1e-6)
        return scale


def _reference(real: np.ndarray, labels: np.ndarray | None, seed: int) -> _Reference:
    digest = hashlib.sha256()
    digest.update(repr((real.shape, seed)).encode())
    digest.update(np.ascontiguousarray(real).tobytes())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    key = digest.hexdigest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    ref = _Reference(real, labels, seed)
    _CACHE[key] = ref
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ref


# -- the CNN ---------------------------------------------------------------------------------

def _build_cnn(channels: int, height: int, width: int, regress: int, classes: int):
    from torch import nn

    layers: list[nn.Module] = []
    h, w, c_in = height, width, channels
    for c_out in (16, 32, 32):
        stride = (2 if h >= 16 else 1, 2 if w >= 16 else 1)
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
        h, w, c_in = (h + 1) // stride[0], (w + 1) // stride[1], c_out
    grid = (min(4, h), min(4, w))
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten(),
                         nn.Linear(c_in * grid[0] * grid[1], CNN_FEATURES), nn.ReLU())
    heads = nn.ModuleDict({"regress": nn.Linear(CNN_FEATURES, regress)})
    if classes > 1:
        heads["classify"] = nn.Linear(CNN_FEATURES, classes)
    return nn.ModuleDict({"body": body, "heads": heads})


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread while the CNN runs: a tiny network gains nothing from more, and
    on shared cores the thread pool's spin-waits made training 10× slower (measured). Also
    fp32 with gradients, whatever the caller's context (autocast, no_grad)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.autocast("cpu", enabled=False), torch.enable_grad():
            yield
    finally:
        torch.set_num_threads(before)


def _train_cnn(images: np.ndarray, targets: np.ndarray, labels: np.ndarray | None, seed: int):
    """Train the feature CNN on the real images: physics regression (+ class labels)."""
    import torch
    from torch.nn import functional as F

    classes = 0
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} real samples")
        uniq, labels = np.unique(labels, return_inverse=True)
        classes = len(uniq)
    _, channels, height, width = images.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _build_cnn(channels, height, width, targets.shape[1], classes)
    x = torch.as_tensor(images, dtype=torch.float32)
    t = torch.as_tensor(targets, dtype=torch.float32)
    y = torch.as_tensor(labels) if classes > 1 else None
    opt = torch.optim.Adam(net.parameters(), lr=CNN_LR, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    batch = min(CNN_BATCH, len(x))
    steps = int(np.clip(np.ceil(CNN_EPOCHS * len(x) / batch), CNN_MIN_STEPS, CNN_MAX_STEPS))
    net.train()
    with _one_thread():
        for _ in range(steps if len(x) > 1 else 0):
            idx = torch.randint(len(x), (batch,), generator=gen)
            hidden = net["body"](x[idx])
            loss = F.mse_loss(net["heads"]["regress"](hidden), t[idx])
            if y is not None:
                loss = loss + F.cross_entropy(net["heads"]["classify"](hidden), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def _cnn_features(net, images: np.ndarray) -> np.ndarray:
    import torch

    out = []
    with _one_thread(), torch.no_grad():
        for start in range(0, len(images), 256):
            x = torch.as_tensor(images[start : start + 256], dtype=torch.float32)
            out.append(net["body"](x).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, CNN_FEATURES))


# -- the score -------------------------------------------------------------------------------

def sample_quality(generated: np.ndarray, real: np.ndarray, seed: int = 0,
                   labels: np.ndarray | None = None) -> dict[str, float]:
    """Distances between ``generated`` and ``real`` samples (see the module docstring).

    ``labels``: optional class of each real sample, learnt by the feature CNN. Returns
    ``score`` (lower is better), its parts ``physics``, ``kpd``, ``kid`` and every
    feature's W1 under its name (``occupancy``, ``clusters``, …)."""
    generated = _as_images(generated)
    real = _as_images(real)
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(f"shapes differ: generated {generated.shape}, real {real.shape}")
    if not np.isfinite(generated).all():
        return dict.fromkeys(KEYS, float("inf"))
    ref = _reference(real, labels, seed)
    per_image, pooled = physics_features(generated, ref.thresholds, seed + 1)
    out: dict[str, float] = {}
    for name in FEATURES:
        values = pooled[name] if name in pooled else per_image[name]
        w1 = np.abs(_quantiles(values) - ref.quantiles[name]).mean() / ref.scales[name]
        out[name] = float(w1)
    physics = float(np.mean([out[name] for name in FEATURES]))

    vector = _standardise(np.stack([per_image[k] for k in VECTOR], 1), ref.vector_mean,
                          ref.vector_std)
    kpd = mmd2_unbiased(vector, ref.vector) / ref.kpd_unit
    features = _cnn_features(ref.net, generated / ref.pixel_scale)
    features = _standardise(features, ref.feature_mean, ref.feature_std)
    kid = mmd2_unbiased(features, ref.features) / ref.kid_unit
    score = float(np.mean([compress(part) for part in (physics, kpd, kid)]))
    return {"score": score, "physics": physics, "kpd": float(kpd), "kid": float(kid), **out}
