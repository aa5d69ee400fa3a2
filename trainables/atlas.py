"""ATLAS missing-transverse-energy models (seed 002): the ``Wrap``-padded CNN and boosted trees.

- :class:`Wrap` pads φ (the last axis) circularly and η with zeros before every convolution,
  so a φ-rolled input gives the φ-rolled output (the seed's ``custom_layers.Wrap``).
- :class:`EtmissCNN` predicts either the hard-scatter E_T image (``target=image``; MET is then
  computed from it, each bin contributing E_T·(−cos φ, −sin φ)) or the MET vector directly
  (``target=met``: :class:`PolarMetHead` predicts per bin a radial and a tangential transverse
  energy in that bin's own frame and sums them with the bin's (−cos φ, −sin φ) and
  (sin φ, −cos φ); so a φ-rolled event gives the rotated MET, as the physics does. A head that
  pools over φ first cannot tell where the energy is and cannot beat predicting zero).
- The ``met`` kind trains on the mean squared error of the two MET components; augmentation
  rolls φ by a random number of bins (rotating the target MET with it) and flips η.
  Objective ``<split>_met_resolution``: the RMS of the E_x^miss, E_y^miss residuals (GeV);
  also ``<split>_met_response`` (mean projection of the prediction on the true direction over
  the mean true |MET|). Figures: response and residual width binned in true MET.
- The ``gbdt`` kind is the seed's "simple models" on the same platform: scikit-learn's
  ``HistGradientBoostingRegressor`` (one per MET component) on hand features — ΣE_T and the
  MET vector and magnitude of every input channel; each epoch adds ``iterations`` boosting
  iterations (warm start), so ASHA can stop it like any trial. Its checkpoint keeps the
  iteration count; a resumed trial re-grows the (seeded, deterministic) trees to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.base import DataInfo
from trainables.loop import Kind, fetch, iterate_minibatches, register_kind


def phi_centres(phi_bins: int) -> np.ndarray:
    return -math.pi + (np.arange(phi_bins) + 0.5) * 2 * math.pi / phi_bins


def met_of(images: torch.Tensor) -> torch.Tensor:
    """MET vector (…, 2) of E_T images (…, n_eta, n_phi)."""
    phi = torch.as_tensor(phi_centres(images.shape[-1]), dtype=images.dtype, device=images.device)
    per_phi = images.sum(-2)
    return torch.stack([-(per_phi * torch.cos(phi)).sum(-1), -(per_phi * torch.sin(phi)).sum(-1)], -1)


def rotate(met: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate MET vectors (B, 2) by ``angle`` (B,) radians."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * met[:, 0] - s * met[:, 1], s * met[:, 0] + c * met[:, 1]], -1)


class Wrap(nn.Module):
    """Pad φ (last axis) circularly and η (second to last) with zeros by ``pad`` bins."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        x = F.pad(x, (self.pad, self.pad, 0, 0), mode="circular")
        return F.pad(x, (0, 0, self.pad, self.pad), mode="constant", value=0.0)


class PolarMetHead(nn.Module):
    """Features (B, W, η, φ) → MET (B, 2): per-bin radial and tangential E_T (a 1×1
    convolution), each summed along its bin's own direction, so rolling φ rotates the output."""

    def __init__(self, width: int):
        super().__init__()
        self.per_bin = nn.Conv2d(width, 2, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        per_phi = self.per_bin(features).sum(-2)  # (B, 2, φ)
        phi = torch.as_tensor(phi_centres(per_phi.shape[-1]), dtype=per_phi.dtype,
                              device=per_phi.device)
        cos, sin = torch.cos(phi), torch.sin(phi)
        radial, tangential = per_phi[:, 0], per_phi[:, 1]
        return torch.stack([(-radial * cos + tangential * sin).sum(-1),
                            (-radial * sin - tangential * cos).sum(-1)], -1)


class EtmissCNN(nn.Module):
    """Wrap-padded CNN predicting the hard-scatter image (GeV) or the MET vector (GeV)."""

    def __init__(self, channels: int, n_conv: int, width: int, kernel: int, batch_norm: bool,
                 target: str, input_scale: float):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for _ in range(n_conv):
            layers += [Wrap(kernel // 2), nn.Conv2d(c_in, width, kernel),
                       nn.BatchNorm2d(width) if batch_norm else nn.Identity(), nn.ReLU(inplace=True)]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.target, self.scale = target, input_scale
        if target == "image":
            self.head: nn.Module = nn.Sequential(Wrap(0), nn.Conv2d(width, 1, 1))
        else:
            self.head = PolarMetHead(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, η, φ) in units of ``input_scale`` → image (B, η, φ) or MET (B, 2), GeV."""
        out = self.head(self.body(x))
        if self.target == "image":
            return F.relu(out[:, 0]) * self.scale
        return out * self.scale

    def met(self, x: torch.Tensor) -> torch.Tensor:
        out = self(x)
        return met_of(out) if self.target == "image" else out


def channel_selection(config: Mapping[str, Any], info: DataInfo) -> list[int]:
    names = list(info.extra.get("channels", ()))
    wanted = str(config.get("inputs", "all"))
    if wanted == "all" or not names:
        return list(range(info.input_shape[0]))
    keep = [i for i, n in enumerate(names) if not n.startswith("tracks")] if wanted == "calo" else \
        [i for i, n in enumerate(names) if n in wanted.split("+")]
    return keep or list(range(info.input_shape[0]))


class ChannelPick(nn.Module):
    def __init__(self, channels: list[int], inner: nn.Module):
        super().__init__()
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long), persistent=False)
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.index_select(1, self.channels))

    def met(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.met(x.index_select(1, self.channels))


def build_etmiss(config: Mapping[str, Any], info: DataInfo) -> ChannelPick:
    channels = channel_selection(config, info)
    cnn = EtmissCNN(len(channels), int(config["n_conv"]), int(config["width"]),
                    int(config["kernel"]), config["batch_norm"] in (True, "true", "True"),
                    str(config["target"]), float(info.extra.get("input_scale", 10.0)))
    return ChannelPick(channels, cnn)


def met_metrics(pred: np.ndarray, true: np.ndarray, split: str) -> dict[str, float]:
    residual = pred - true
    magnitude = np.linalg.norm(true, axis=1)
    direction = true / np.clip(magnitude[:, None], 1e-6, None)
    projected = (pred * direction).sum(1)
    return {f"{split}_met_resolution": float(np.sqrt((residual**2).mean())),
            f"{split}_met_response": float(projected.mean() / max(magnitude.mean(), 1e-6)),
            f"{split}_loss": float((residual**2).mean())}


def met_figure(pred: np.ndarray, true: np.ndarray) -> bytes:
    """Response and resolution in bins of true MET, and the residual distribution."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    magnitude = np.linalg.norm(true, axis=1)
    direction = true / np.clip(magnitude[:, None], 1e-6, None)
    projected = (pred * direction).sum(1)
    residual = pred - true
    edges = np.linspace(0, max(float(magnitude.max()), 1.0), 9)
    centres, response, width = [], [], []
    for lo, hi in zip(edges, edges[1:], strict=False):
        sel = (magnitude >= lo) & (magnitude < hi)
        if sel.sum() >= 3:
            centres.append((lo + hi) / 2)
            response.append(projected[sel].mean() / max(magnitude[sel].mean(), 1e-6))
            width.append(np.sqrt((residual[sel] ** 2).mean()))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(centres, response, "o-")
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set(xlabel="true MET [GeV]", ylabel="response", title="response")
    axes[1].plot(centres, width, "o-")
    axes[1].set(xlabel="true MET [GeV]", ylabel="RMS residual [GeV]", title="resolution")
    axes[2].hist(residual.ravel(), bins=40)
    axes[2].set(xlabel="E_x,y^miss residual [GeV]", title="residuals")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


class MetKind(Kind):
    """MSE of the MET components; φ-roll and η-flip augmentation (see the module doc)."""

    def batch_loss(self, model, data, idx, cfg, rng, ctx):
        device = ctx.device
        x = fetch(data, "x", idx, cfg, device)
        met = fetch(data, "met", idx, cfg, device)
        if bool(cfg.get("augment", True)):
            shift = int(rng.integers(x.shape[-1]))
            x = torch.roll(x, shift, dims=-1)
            angle = torch.full((len(idx),), 2 * math.pi * shift / x.shape[-1], device=device)
            met = rotate(met, angle)
            if rng.random() < 0.5:
                x = x.flip(-2)  # η → −η leaves MET unchanged
        loss = F.mse_loss(model.met(x).float(), met)
        return loss, {"train_loss": loss.detach()}

    @torch.no_grad()
    def predict(self, model, data, indices, cfg, ctx) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        preds, trues = [], []
        for idx in iterate_minibatches(indices, 256, None):
            preds.append(model.met(fetch(data, "x", idx, cfg, ctx.device)).float().cpu().numpy())
            trues.append(np.asarray(data.batch("met", idx, cfg), dtype=np.float32))
        return np.concatenate(preds), np.concatenate(trues)

    def evaluate(self, model, data, split, cfg, ctx):
        pred, true = self.predict(model, data, getattr(data, split), cfg, ctx)
        if split == "val":
            ctx.scratch["last_met"] = (pred, true)
        return met_metrics(pred, true, split)

    def figures(self, model, data, cfg, ctx) -> dict[str, bytes]:
        last = ctx.scratch.get("last_met")
        return {"met_residuals": met_figure(*last)} if last else {}


# -- boosted trees on hand features -------------------------------------------------------------

def hand_features(images: np.ndarray) -> np.ndarray:
    """(B, C, η, φ) → (B, 4C): ΣE_T and MET x, y, |MET| of every channel."""
    scaled = torch.from_numpy(np.asarray(images, dtype=np.float64))
    met = met_of(scaled).numpy()  # (B, C, 2)
    total = scaled.sum((-1, -2)).numpy()
    magnitude = np.linalg.norm(met, axis=-1)
    return np.concatenate([total, met[..., 0], met[..., 1], magnitude], axis=1)


class GbdtModel(nn.Module):
    """Two HistGradientBoostingRegressors (E_x^miss, E_y^miss) behind a torch interface."""

    def __init__(self, config: Mapping[str, Any], input_scale: float):
        super().__init__()
        self.config = dict(config)
        self.scale = input_scale
        self.register_buffer("fitted_iterations", torch.zeros((), dtype=torch.long))
        self.regressors: list[Any] | None = None

    def make_regressors(self) -> list[Any]:
        from sklearn.ensemble import HistGradientBoostingRegressor

        c = self.config
        return [HistGradientBoostingRegressor(
            max_depth=int(c["max_depth"]), learning_rate=float(c["learning_rate"]),
            l2_regularization=float(c["l2_regularization"]),
            min_samples_leaf=int(c["min_samples_leaf"]), max_iter=0, warm_start=True,
            early_stopping=False, random_state=axis) for axis in range(2)]

    def grow(self, features: np.ndarray, met: np.ndarray, iterations: int) -> None:
        """Add ``iterations`` boosting iterations (warm start) to both regressors."""
        if self.regressors is None:
            self.regressors = self.make_regressors()
        for axis, reg in enumerate(self.regressors):
            reg.set_params(max_iter=reg.max_iter + iterations)
            reg.fit(features, met[:, axis])
        self.fitted_iterations.fill_(self.regressors[0].max_iter)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        if self.regressors is None or self.regressors[0].max_iter == 0:
            return np.zeros((len(features), 2))
        return np.stack([reg.predict(features) for reg in self.regressors], axis=1)

    def met(self, x: torch.Tensor) -> torch.Tensor:
        features = hand_features(x.detach().cpu().numpy() * self.scale)
        return torch.from_numpy(self.predict_features(features).astype(np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.met(x)


def build_gbdt(config: Mapping[str, Any], info: DataInfo) -> GbdtModel:
    return GbdtModel(config, float(info.extra.get("input_scale", 10.0)))


class NoOptimizer:
    """Trees need no gradient optimizer; this keeps the loop's checkpoint format."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class GbdtKind(Kind):
    """Boosting iterations per epoch; MET metrics and figures as the ``met`` kind."""

    mixed_precision = False  # trees grow in float64 on hand features; no network, no autocast

    def make_optimizer(self, model, cfg):
        return NoOptimizer()

    def _features(self, data, indices, cfg, cache: dict | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        cache = {} if cache is None else cache
        key = (indices[0] if len(indices) else -1, len(indices))
        if key not in cache:
            feats, mets = [], []
            for idx in iterate_minibatches(indices, 512, None):
                feats.append(hand_features(data.batch("x", idx, cfg) * float(
                    data.info.extra.get("input_scale", 10.0))))
                mets.append(np.asarray(data.batch("met", idx, cfg), dtype=np.float64))
            cache[key] = (np.concatenate(feats), np.concatenate(mets))
        return cache[key]

    def ready_for_inference(self, model, data, cfg) -> None:
        """A model loaded from a checkpoint holds only its iteration count: re-grow the
        (seeded, hence identical) trees on the training split."""
        if model.regressors is None and int(model.fitted_iterations) > 0:
            features, met = self._features(data, data.train, cfg)
            model.grow(features, met, int(model.fitted_iterations))

    def train_epoch(self, model, data, opt, cfg, rng, ctx):
        features, met = self._features(data, data.train, cfg, ctx.scratch.setdefault("features", {}))
        resumed = int(model.fitted_iterations)
        if model.regressors is None and resumed > 0:
            model.grow(features, met, resumed)  # re-grow the checkpointed (seeded) trees
        model.grow(features, met, int(cfg["iterations"]))
        pred = model.predict_features(features)
        return {"train_loss": float(((pred - met) ** 2).mean())}

    def evaluate(self, model, data, split, cfg, ctx):
        features, met = self._features(data, getattr(data, split), cfg,
                                       ctx.scratch.setdefault("features", {}))
        pred = model.predict_features(features)
        if split == "val":
            ctx.scratch["last_met"] = (pred, met)
        return met_metrics(pred, met, split)

    def figures(self, model, data, cfg, ctx) -> dict[str, bytes]:
        last = ctx.scratch.get("last_met")
        return {"met_residuals": met_figure(*last)} if last else {}


register_kind("met", MetKind())
register_kind("gbdt", GbdtKind())
