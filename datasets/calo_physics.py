"""Fast numpy generator of synthetic ATLAS-like calorimeter eta x phi images for MET regression.

Layout and units: every image is channels-last ``(n, eta_bins, phi_bins[, channel])``, rows are
``eta`` bins of equal width over ``[-eta_max, eta_max]`` (row 0 = most negative eta), columns are
``phi`` bins over ``[-pi, pi)`` with centres ``phi_k = -pi + (k + 0.5) 2 pi / phi_bins`` (periodic:
column ``phi_bins - 1`` neighbours column 0). Pixel values are transverse energies E_T in GeV;
``met`` is a vector (E_x^miss, E_y^miss) in GeV. The MET of an image is
``-sum_bins E_T (cos phi_k, sin phi_k)`` (:func:`met_of_image`).

Channels of ``images`` (:data:`CHANNELS`):

* ``clusters``: calorimeter E_T = hard scatter + pile-up, each bin smeared with a stochastic term
  ``sigma_E = 0.5 sqrt(E)`` (E = E_T cosh(eta) of the bin centre, i.e.
  ``sigma_ET = 0.5 sqrt(E_T / cosh eta)``) and 0.1 GeV of electronic noise, then zeroed below a
  0.3 GeV noise threshold;
* ``clusters_sk``: SoftKiller on ``clusters``: the image is cut into patches (an 8 x 8 grid of
  patches by default, 8 x 8 bins = 0.63 x 0.79 in eta x phi at 64 x 64 and eta_max 2.5), the
  cut is the per-event median over patches of the patch maximum, and bins below it are zeroed;
* ``tracks``: the charged E_T of the hard scatter (primary vertex) within the tracker, |eta| < 2.5:
  each jet constituent is charged with probability 0.6 (so jets carry ~60 % charged E_T with
  large event-by-event fluctuations), electrons are charged; no pile-up tracks (perfect vertex
  association) and no track-momentum smearing.

``truth`` is the hard-scatter visible E_T deposited in the image, before detector smearing, noise
and thresholds (what a perfect pile-up removal with a perfect calorimeter would leave); objects or
parts of showers outside |eta| < eta_max are lost from it.

Physics per event:

* the true MET magnitude is drawn uniformly in [0, 100) GeV and its direction uniformly; ``met``
  is that vector, the vector sum of the invisible (neutrino) p_T, which momentum balance makes
  equal to minus the vector sum of all visible p_T;
* the visible recoil ``-met`` is shared by 1-3 objects (Dirichlet fractions plus random transverse
  kicks that sum to zero); with probability 0.4 the first of them is an electron (narrow shower);
  0-3 extra back-to-back jet pairs of equal p_T (15 GeV + Exp(25 GeV)) are added, so
  ``sum visible + invisible p_T = 0`` exactly;
* object eta ~ N(0, 1) (a few % fall outside |eta| < 2.5: acceptance losses); a jet fragments
  into 8 constituents with Dirichlet(0.5) p_T fractions (lumpy, as real jets), scattered around
  the axis as a 2D Gaussian of width ``clip(0.2 sqrt(20 GeV / p_T), 0.1, 0.2)`` in eta and phi
  units (offsets re-centred so the jet p_T vector is kept); every constituent, and an electron,
  deposits a narrow Gaussian shower (width 0.03, electron 0.02) integrated exactly over the bins
  and wrapped periodically across phi = +-pi;
* pile-up: Poisson(mu) interactions each spraying Poisson(6 per unit eta) point deposits with
  E_T ~ Exp(0.5 GeV), phi uniform, eta 70 % uniform + 30 % rising linearly with |eta| (slightly
  more forward); isotropic, so it adds MET noise but no bias.

Simplifications: no underlying event, no out-of-time pile-up, no jet energy scale or
non-compensation (hadrons and electrons respond alike), particles massless (E_T = p_T), jets are
8 smooth showers rather than a full fragmentation, no magnetic-field bending (tracks point where
their showers are), calorimeter smearing is applied per bin (same variance as independent
per-deposit smearing, Gaussian rather than Poisson), the SoftKiller acts on bins rather than on
particles, the tracker is perfect and pile-up-free, and no neutrinos are rendered (the target
MET vector is drawn first and the visible event built to balance it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import ndtr

__all__ = [
    "CHANNELS",
    "MET_MAX",
    "bin_centres",
    "deposit",
    "eta_centres",
    "met_of_image",
    "softkiller",
    "simulate_events",
]

CHANNELS = ("clusters", "clusters_sk", "tracks")  # channel order of ``images``
MET_MAX = 100.0  # GeV, true |MET| ~ U(0, MET_MAX)

_CHUNK = 32  # events per vectorised batch and per progress call (small batches stay in cache)
_TRACKER_ETA = 2.5
_STOCHASTIC = 0.5  # sigma_E / E = 0.5 / sqrt(E / GeV)
_NOISE = 0.1  # GeV electronic noise per bin
_THRESHOLD = 0.3  # GeV noise threshold on measured bins
_PU_PER_ETA = 6.0  # pile-up deposits per interaction per unit eta
_PU_ET = 0.5  # GeV, mean E_T of a pile-up deposit
_PU_FORWARD = 0.3  # fraction of pile-up deposits with density rising linearly in |eta|
_ETA_SIGMA = 1.0  # spread of hard-scatter object eta
_LEPTON_PROB = 0.4
_LEPTON_WIDTH = 0.02
_KICK = 15.0  # GeV, transverse kick spread among recoil objects
_MAX_RECOIL = 3
_MAX_PAIRS = 3
_PAIR_RATE = 1.0  # mean number of balanced jet pairs
_N_CONST = 8  # constituents (showers) per jet
_FRAG_ALPHA = 0.5  # Dirichlet concentration of constituent momentum fractions (small = lumpy jets)
_JET_WIDTH = (0.1, 0.2)  # range of the constituent spread around the jet axis (eta, phi units)
_SHOWER_WIDTH = 0.03  # calorimeter shower width of one constituent (eta, phi units)
_CHARGED_PROB = 0.6  # probability that a jet constituent is charged


def bin_centres(phi_bins: int) -> np.ndarray:
    """Centres ``phi_k = -pi + (k + 0.5) 2 pi / phi_bins`` (radians) of the phi bins."""
    return -math.pi + (np.arange(phi_bins) + 0.5) * (2.0 * math.pi / phi_bins)


def eta_centres(eta_bins: int, eta_max: float = 2.5) -> np.ndarray:
    """Centres of ``eta_bins`` equal eta bins over ``[-eta_max, eta_max]``."""
    return -eta_max + (np.arange(eta_bins) + 0.5) * (2.0 * eta_max / eta_bins)


def met_of_image(image: np.ndarray, eta_max: float = 2.5) -> np.ndarray:
    """MET vector (GeV, float64, shape ``(..., 2)``) of E_T images ``(..., eta, phi)``.

    Each bin contributes ``E_T (-cos phi_k, -sin phi_k)`` at its phi centre; ``eta_max`` does not
    enter (E_T already is transverse) and is accepted for a uniform signature.
    """
    del eta_max
    image = np.asarray(image)
    phi = bin_centres(image.shape[-1])
    trig = -np.stack([np.cos(phi), np.sin(phi)], axis=-1)  # (phi, 2)
    return image.sum(axis=-2, dtype=np.float64) @ trig


_WINDOW_SIGMAS = 5.0  # showers are rendered within +-5 widths of their centre


def _window(centre: np.ndarray, width: np.ndarray, lo: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin indices ``(..., W)`` (unclipped) around ``centre`` and the Gaussian fraction in each.

    Bins ``i`` span ``[lo + i step, lo + (i + 1) step)``; the window covers +-5 widths.
    """
    half = int(math.ceil(_WINDOW_SIGMAS * float(width.max(initial=0.0)) / step)) + 1
    first = np.floor((centre - lo) / step).astype(np.int64)[..., None] - half
    idx = first + np.arange(2 * half + 1)
    edges = lo + np.concatenate([idx, idx[..., -1:] + 1], axis=-1) * step
    cdf = ndtr((edges - centre[..., None]) / width[..., None])
    return idx, np.diff(cdf, axis=-1)


def _render(
    weights: list[np.ndarray],
    eta: np.ndarray,
    phi: np.ndarray,
    width: np.ndarray,
    eta_bins: int,
    phi_bins: int,
    eta_max: float,
) -> list[np.ndarray]:
    """Render showers ``(n, K)``, once per E_T array in ``weights``, into images ``(n, eta, phi)``."""
    n = eta.shape[0]
    ie, fe = _window(eta, width, -eta_max, 2.0 * eta_max / eta_bins)  # (n, K, We)
    ip, fp = _window(phi, width, -math.pi, 2.0 * math.pi / phi_bins)  # (n, K, Wp)
    inside = (ie >= 0) & (ie < eta_bins)
    fe = np.where(inside, fe, 0.0)
    row = np.arange(n)[:, None, None] * eta_bins + np.clip(ie, 0, eta_bins - 1)  # (n, K, We)
    flat = (row[..., :, None] * phi_bins + np.mod(ip, phi_bins)[..., None, :]).ravel()  # periodic phi
    frac = fe[..., :, None] * fp[..., None, :]  # (n, K, We, Wp)
    size = n * eta_bins * phi_bins
    return [
        np.bincount(flat, weights=(frac * w[..., None, None]).ravel(), minlength=size)
        .reshape(n, eta_bins, phi_bins)
        .astype(np.float32)
        for w in weights
    ]


def deposit(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    width: np.ndarray,
    eta_bins: int = 64,
    phi_bins: int = 64,
    eta_max: float = 2.5,
) -> np.ndarray:
    """Render showers ``(n, K)`` (E_T GeV, eta, phi rad, Gaussian width) into E_T images ``(n, eta, phi)``.

    Each shower is a 2D Gaussian of the given width (in eta and phi units) integrated over the
    bins and periodic in phi (it wraps across +-pi); E_T falling outside ``|eta| < eta_max`` is lost.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (pt, eta, phi, width)]
    return _render([arrays[0]], *arrays[1:], eta_bins, phi_bins, eta_max)[0]


def softkiller(images: np.ndarray, patch: tuple[int, int] | None = None) -> np.ndarray:
    """SoftKiller pile-up suppression of E_T images ``(n, eta, phi)``.

    Per event the cut is the median over ``patch``-sized patches (bins; default an 8 x 8 grid of
    patches) of each patch's maximum E_T; bins below the cut are set to 0. Edge patches may be
    smaller when the patch size does not divide the image.
    """
    n, ne, nphi = images.shape
    pe, pp = patch if patch is not None else (max(1, round(ne / 8)), max(1, round(nphi / 8)))
    pmax = np.maximum.reduceat(images, np.arange(0, ne, pe), axis=1)
    pmax = np.maximum.reduceat(pmax, np.arange(0, nphi, pp), axis=2)
    cut = np.median(pmax.reshape(n, -1), axis=1).astype(images.dtype)
    return images * (images >= cut[:, None, None])


def _hard_scatter(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Objects ``(n, J)`` of the hard scatter: pt, eta, phi, width, charged fraction; and ``met``."""
    met_mag = rng.uniform(0.0, MET_MAX, n)
    met_phi = rng.uniform(-math.pi, math.pi, n)
    met = np.stack([met_mag * np.cos(met_phi), met_mag * np.sin(met_phi)], axis=-1)  # (n, 2)

    # Recoil objects: p_j = f_j (-met) + t_j with sum f_j = 1 and sum t_j = 0.
    k = rng.integers(1, _MAX_RECOIL + 1, n)
    active = np.arange(_MAX_RECOIL)[None, :] < k[:, None]  # (n, R)
    g = rng.standard_gamma(1.0, (n, _MAX_RECOIL)) * active
    frac = g / g.sum(axis=1, keepdims=True)
    kick = rng.normal(0.0, _KICK, (n, _MAX_RECOIL, 2)) * active[..., None]
    kick -= kick.sum(axis=1, keepdims=True) / k[:, None, None] * active[..., None]
    p_rec = frac[..., None] * (-met[:, None, :]) + kick  # (n, R, 2)

    # Balanced back-to-back jet pairs.
    n_pairs = np.minimum(rng.poisson(_PAIR_RATE, n), _MAX_PAIRS)
    on = np.arange(_MAX_PAIRS)[None, :] < n_pairs[:, None]
    pair_pt = (15.0 + rng.exponential(25.0, (n, _MAX_PAIRS))) * on
    pair_phi = rng.uniform(-math.pi, math.pi, (n, _MAX_PAIRS))
    p_one = pair_pt[..., None] * np.stack([np.cos(pair_phi), np.sin(pair_phi)], axis=-1)
    p_all = np.concatenate([p_rec, p_one, -p_one], axis=1)  # (n, J, 2)

    j = p_all.shape[1]
    pt = np.hypot(p_all[..., 0], p_all[..., 1])
    phi = np.arctan2(p_all[..., 1], p_all[..., 0])
    eta = rng.normal(0.0, _ETA_SIGMA, (n, j))
    lepton = rng.random(n) < _LEPTON_PROB

    # Fragmentation: C constituents per object, Dirichlet momentum fractions, Gaussian offsets from
    # the axis (fraction-weighted mean offset 0), each a narrow shower; charged with prob 0.6.
    frac = rng.standard_gamma(_FRAG_ALPHA, (n, j, _N_CONST))
    frac[:, 0] = np.where(lepton[:, None], np.eye(1, _N_CONST)[0], frac[:, 0])
    frac /= frac.sum(axis=-1, keepdims=True)
    spread = np.clip(0.2 * np.sqrt(20.0 / np.maximum(pt, 1e-3)), _JET_WIDTH[0], _JET_WIDTH[1])[..., None]
    d_eta = rng.standard_normal((n, j, _N_CONST)) * spread
    d_phi = rng.standard_normal((n, j, _N_CONST)) * spread
    d_eta -= (frac * d_eta).sum(axis=-1, keepdims=True)
    d_phi -= (frac * d_phi).sum(axis=-1, keepdims=True)
    # Restore the object's p_T exactly along its axis (offsets shorten it at second order).
    pt_c = frac * (pt / np.maximum((frac * np.cos(d_phi)).sum(axis=-1), 1e-6))[..., None]
    charged = rng.random((n, j, _N_CONST)) < _CHARGED_PROB
    charged[:, 0] = np.where(lepton[:, None], True, charged[:, 0])
    width = np.full((n, j, _N_CONST), _SHOWER_WIDTH)
    width[:, 0] = np.where(lepton[:, None], _LEPTON_WIDTH, _SHOWER_WIDTH)
    pt, eta, phi = pt_c, eta[..., None] + d_eta, phi[..., None] + d_phi
    pt, eta, phi, width, charged = (a.reshape(n, -1) for a in (pt, eta, phi, width, charged))
    return {"pt": pt, "eta": eta, "phi": phi, "width": width, "charged": charged, "met": met}


def _pileup(
    rng: np.random.Generator, n: int, eta_bins: int, phi_bins: int, eta_max: float, mu: float
) -> np.ndarray:
    """Pile-up E_T images ``(n, eta, phi)`` (GeV) of point-like soft deposits."""
    n_int = rng.poisson(mu, n) if mu > 0 else np.zeros(n, dtype=np.int64)
    n_dep = rng.poisson(n_int * _PU_PER_ETA * 2.0 * eta_max)
    total = int(n_dep.sum())
    event = np.repeat(np.arange(n), n_dep)
    et = rng.standard_exponential(total, dtype=np.float32) * _PU_ET
    u = rng.random(total, dtype=np.float32)
    mag = np.where(rng.random(total, dtype=np.float32) < _PU_FORWARD, np.sqrt(u), u)  # |eta|/eta_max
    sign = rng.random(total, dtype=np.float32) < 0.5
    x = np.where(sign, mag, -mag)  # eta / eta_max in [-1, 1]
    ie = np.minimum(((x + 1.0) * 0.5 * eta_bins).astype(np.int64), eta_bins - 1)
    ip = rng.integers(0, phi_bins, total)
    flat = (event * eta_bins + ie) * phi_bins + ip
    img = np.bincount(flat, weights=et, minlength=n * eta_bins * phi_bins)
    return img.reshape(n, eta_bins, phi_bins).astype(np.float32)


def _calorimeter(rng: np.random.Generator, true_et: np.ndarray, eta_max: float) -> np.ndarray:
    """Smear E_T images ``(n, eta, phi)`` with the stochastic term and noise, then apply the threshold."""
    cosh = np.cosh(eta_centres(true_et.shape[1], eta_max)).astype(np.float32)[None, :, None]
    sigma = np.sqrt(_STOCHASTIC**2 * true_et / cosh + _NOISE**2)
    meas = true_et + sigma * rng.standard_normal(true_et.shape, dtype=np.float32)
    return np.where(meas >= _THRESHOLD, meas, 0.0).astype(np.float32)


def simulate_events(
    n: int,
    seed: int,
    eta_bins: int = 64,
    phi_bins: int = 64,
    eta_max: float = 2.5,
    mu: float = 40.0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Simulate ``n`` events; deterministic in ``(n, seed)`` and the other arguments.

    Returns float32 arrays: ``images`` ``(n, eta_bins, phi_bins, 3)`` E_T (GeV) per bin in the
    channel order of :data:`CHANNELS`; ``truth`` ``(n, eta_bins, phi_bins)`` the hard-scatter visible
    E_T before detector effects; ``met`` ``(n, 2)`` the true MET vector (GeV), the vector sum of
    the invisible p_T. ``mu`` is the mean number of pile-up interactions. ``progress(k)`` is called
    with the number ``k`` of newly finished events after every batch.
    """
    if n < 0 or eta_bins < 1 or phi_bins < 1 or eta_max <= 0 or mu < 0:
        raise ValueError("need n >= 0, eta_bins, phi_bins >= 1, eta_max > 0 and mu >= 0")
    images = np.empty((n, eta_bins, phi_bins, len(CHANNELS)), dtype=np.float32)
    truth = np.empty((n, eta_bins, phi_bins), dtype=np.float32)
    met = np.empty((n, 2), dtype=np.float32)
    starts = range(0, n, _CHUNK)
    tracker = (np.abs(eta_centres(eta_bins, eta_max)) < _TRACKER_ETA).astype(np.float32)[None, :, None]
    for lo, ss in zip(starts, np.random.SeedSequence(seed).spawn(len(starts)), strict=True):
        rng = np.random.default_rng(ss)
        m = min(_CHUNK, n - lo)
        hs = _hard_scatter(rng, m)
        shape = (hs["eta"], hs["phi"], hs["width"], eta_bins, phi_bins, eta_max)
        hs_img, trk = _render([hs["pt"], hs["pt"] * hs["charged"]], *shape)
        trk *= tracker
        clusters = _calorimeter(rng, hs_img + _pileup(rng, m, eta_bins, phi_bins, eta_max, mu), eta_max)
        images[lo : lo + m, ..., 0] = clusters
        images[lo : lo + m, ..., 1] = softkiller(clusters)
        images[lo : lo + m, ..., 2] = trk
        truth[lo : lo + m] = hs_img
        met[lo : lo + m] = hs["met"]
        if progress is not None:
            progress(m)
    return {"images": images, "truth": truth, "met": met}
