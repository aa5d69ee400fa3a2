"""The ``autoencode`` task kind: reconstruction training, optionally with a sparsity term.

Config keys: ``ae_lr``; ``ae_opt`` (adam | sgd | rmsprop | adagrad; default adam); ``beta1``,
``beta2`` (Adam's betas; RMSprop's decay is ``beta1``; defaults 0.9, 0.999); ``p`` (SGD
momentum, 0.9); ``weight_decay`` (default 1e-5 for Adam, the seed-001 setting, else 0);
``l1`` (weight of an L1 penalty on the weights, default 0); ``batch_size``.

Loss: mean squared reconstruction error. A model with a ``sparsity_code`` attribute (the last
code it produced, activations in (0, 1)) adds ``lambda`` × a KL sparsity term towards the
target activation ``rho``: ``sparsity=scalar`` — KL(ρ ‖ ρ̂) with ρ̂ the mean activation of the
whole code, as the CS 273B project computed it — or ``sparsity=per_unit`` — Σ_j KL(ρ ‖ ρ̂_j)
over the code units, Ng's sparse auto-encoder; ``l1`` > 0 adds ``l1`` × Σ|W| (weights of
dimension ≥ 2).

Evaluation of a split, for every auto-encoder: ``<split>_recon_loss`` (mean squared error);
``<split>_objective``, the training loss on the split: reconstruction + λ·KL + ``l1``·Σ|W|,
the KL term computed exactly as :func:`kl_sparsity` computes it in training but with ρ̂ taken
over the whole split (one batch of the split, not a mean of per-batch terms: the value does not
depend on how evaluation batches the split), in eval mode (batch-norm running statistics, no
dropout). The optimizer's ``weight_decay`` acts in the optimizer step and is not part of
it. A model with a ``sparsity_code`` also logs ``<split>_code_mean`` (ρ̂) beside ``rho``.

A model with a ``probe_codes(x) -> (B, F)`` method (its code as flat features: the CS 273B
auto-encoders, :mod:`trainables.cs273b`) on a data set with binary labels ``arrays['y']`` also
logs ``<split>_probe_auc``: what the code is for downstream. A logistic-regression probe
(:func:`probe_auc`) is fitted on the codes of the train split (a seeded subset of at most
:data:`PROBE_TRAIN_MAX` subjects) and scored by ROC AUC on the split. Which of these metrics a
space searches is the space's choice (``metric``); auto-encoders without ``probe_codes``
log no probe AUC. Figures: inputs next to their reconstructions (central slices of volumes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainables.loop import Kind, fetch, iterate_minibatches, register_kind, roc_auc

EPS = 1e-6
#: evaluation batch size (subjects per forward pass)
EVAL_BATCH = 256
#: the probe is fitted on at most this many train subjects (a seeded subset)
PROBE_TRAIN_MAX = 1024
#: the probe's seed (train subset, solver) and iteration bound
PROBE_SEED = 0
PROBE_MAX_ITER = 200
#: the probe's inverse L2 strength (scikit-learn's ``C``) on standardised codes
PROBE_C = 0.1


def bernoulli_kl(rho: float, rho_hat: torch.Tensor) -> torch.Tensor:
    """Summed KL(ρ ‖ ρ̂) of Bernoulli activation rates ``rho_hat`` (clamped into (0, 1))."""
    rho_hat = rho_hat.clamp(EPS, 1 - EPS)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return kl.sum()


def kl_sparsity(code: torch.Tensor, rho: float, form: str) -> torch.Tensor:
    """KL(ρ ‖ ρ̂) of Bernoulli activations: ρ̂ over the whole code (``scalar``) or per unit."""
    flat = code.reshape(code.shape[0], -1)
    return bernoulli_kl(rho, flat.mean() if form == "scalar" else flat.mean(0))


def probe_auc(train_codes: np.ndarray, train_labels: np.ndarray, codes: np.ndarray,
              labels: np.ndarray, seed: int = PROBE_SEED, max_iter: int = PROBE_MAX_ITER,
              c: float = PROBE_C) -> float:
    """ROC AUC on (``codes``, ``labels``) of a logistic-regression probe fitted on
    (``train_codes``, ``train_labels``): codes standardised with the training codes' mean and
    standard deviation, L2 strength ``1/c``, lbfgs for at most ``max_iter`` iterations (its
    non-convergence warning silenced), ``seed`` fixed. Labels are binary, 1 the positive
    class. 0.5 (chance) when either side holds one class only; NaN when a code is not finite
    (the loop then stops the trial as diverged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_codes = np.asarray(train_codes, dtype=np.float64).reshape(len(train_codes), -1)
    codes = np.asarray(codes, dtype=np.float64).reshape(len(codes), -1)
    train_pos, pos = np.asarray(train_labels) == 1, np.asarray(labels) == 1
    if not (np.isfinite(train_codes).all() and np.isfinite(codes).all()):
        return float("nan")
    if train_pos.all() or not train_pos.any() or pos.all() or not pos.any():
        return 0.5
    probe = make_pipeline(StandardScaler(), LogisticRegression(
        C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_codes, train_pos.astype(np.int64))
    auc = roc_auc(probe.decision_function(codes), pos)
    return auc if math.isfinite(auc) else 0.5


def probe_train_indices(train: np.ndarray, limit: int = PROBE_TRAIN_MAX,
                        seed: int = PROBE_SEED) -> np.ndarray:
    """The train subjects the probe is fitted on: all, or a seeded subset of ``limit``."""
    if len(train) <= limit:
        return np.sort(train)
    return np.sort(np.random.default_rng(seed).choice(train, limit, replace=False))


def make_ae_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The auto-encoder optimizer named by ``ae_opt`` (see the module doc)."""
    name, lr = str(cfg.get("ae_opt", "adam")), float(cfg["ae_lr"])
    beta1, beta2 = float(cfg.get("beta1", 0.9)), float(cfg.get("beta2", 0.999))
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, beta2),
                                weight_decay=float(cfg.get("weight_decay", 1e-5)))
    decay = float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(cfg.get("p", 0.9)),
                               weight_decay=decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=beta1, weight_decay=decay)
    if name == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=lr, weight_decay=decay)
    raise ValueError(f"unknown optimizer {name!r}")


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for name, p in model.named_parameters() if p.dim() > 1)


def _middle(x: np.ndarray) -> np.ndarray:
    """(B, C, ...) → (B, H, W): the first channel, central slice of a volume."""
    x = x[:, 0]
    while x.ndim > 3:
        x = x[:, x.shape[1] // 2]
    return x


class AutoEncodeKind(Kind):
    """Step functions of the ``autoencode`` kind (see the module doc)."""

    def make_optimizer(self, model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
        return make_ae_optimizer(model, cfg)

    def _sparsity(self, model: nn.Module, cfg: Mapping[str, Any]) -> torch.Tensor | None:
        code = getattr(getattr(model, "module", model), "sparsity_code", None)
        if code is None or float(cfg.get("lambda", 0.0)) == 0.0:
            return None
        return float(cfg["lambda"]) * kl_sparsity(code.float(), float(cfg["rho"]),
                                                  str(cfg.get("sparsity", "scalar")))

    def batch_loss(self, model, data, idx, cfg, rng, ctx):
        x = fetch(data, "x", idx, cfg, ctx.device)
        recon = F.mse_loss(model(x).float(), x)
        loss = recon
        sparsity = self._sparsity(model, cfg)
        if sparsity is not None:
            loss = loss + sparsity
        l1 = float(cfg.get("l1", 0.0))
        if l1 > 0:
            loss = loss + l1 * l1_penalty(model)
        return loss, {"train_recon_loss": recon.detach()}

    @torch.no_grad()
    def evaluate(self, model, data, split, cfg, ctx):
        device = ctx.device
        model.eval()
        total = seen = 0.0
        unit_sum: torch.Tensor | None = None  # Σ over subjects of each code unit's activation
        core = getattr(model, "module", model)
        for idx in iterate_minibatches(getattr(data, split), EVAL_BATCH, None):
            x = fetch(data, "x", idx, cfg, device)
            total += F.mse_loss(model(x), x, reduction="sum").item() / x[0].numel()
            code = getattr(core, "sparsity_code", None)
            if code is not None:
                batch_sum = code.reshape(len(idx), -1).double().sum(0)
                unit_sum = batch_sum if unit_sum is None else unit_sum + batch_sum
            seen += len(idx)
        recon = total / max(seen, 1)
        objective = recon
        out = {f"{split}_recon_loss": recon}
        if unit_sum is not None:
            unit_mean = unit_sum / max(seen, 1)  # ρ̂ of each unit over the split
            out[f"{split}_code_mean"] = unit_mean.mean().item()
            lam = float(cfg.get("lambda", 0.0))
            if lam != 0.0:
                rho, form = float(cfg["rho"]), str(cfg.get("sparsity", "scalar"))
                rates = unit_mean.mean() if form == "scalar" else unit_mean
                objective += lam * bernoulli_kl(rho, rates).item()
        l1 = float(cfg.get("l1", 0.0))
        if l1 > 0:
            objective += l1 * l1_penalty(core).item()
        out[f"{split}_objective"] = objective
        if callable(getattr(core, "probe_codes", None)) and "y" in data.arrays:
            out[f"{split}_probe_auc"] = self.probe(core, data, split, cfg, ctx)
        return out

    @torch.no_grad()
    def codes(self, core: nn.Module, data, indices: np.ndarray, cfg, ctx
              ) -> tuple[np.ndarray, np.ndarray]:
        """``core.probe_codes`` of ``indices`` (eval mode) and their labels ``arrays['y']``."""
        codes, labels = [], []
        for idx in iterate_minibatches(indices, EVAL_BATCH, None):
            x = fetch(data, "x", idx, cfg, ctx.device)
            codes.append(core.probe_codes(x).float().reshape(len(idx), -1).cpu().numpy())
            labels.append(np.asarray(data.batch("y", idx, cfg)).reshape(-1))
        return np.concatenate(codes), np.concatenate(labels)

    def probe(self, core: nn.Module, data, split: str, cfg, ctx) -> float:
        """Probe AUC of ``split`` (see :func:`probe_auc`), fitted on the train split's codes."""
        core.eval()
        if len(data.train) == 0 or len(getattr(data, split)) == 0:
            return 0.5
        train_codes, train_labels = self.codes(core, data, probe_train_indices(data.train),
                                               cfg, ctx)
        codes, labels = self.codes(core, data, getattr(data, split), cfg, ctx)
        return probe_auc(train_codes, train_labels, codes, labels)

    @torch.no_grad()
    def figures(self, model, data, cfg, ctx) -> dict[str, Any]:
        from trainables.figures import later

        model.eval()
        x = fetch(data, "x", np.sort(data.val[:8]), cfg, ctx.device)
        recon = model(x).cpu().numpy()
        inputs = x.cpu().numpy()
        low, high = float(inputs.min()), float(inputs.max())  # the inputs' range for both rows
        rows = {"input": _middle(inputs), "reconstruction": _middle(recon)}
        rows = {k: np.clip((v - low) / (high - low + 1e-12), 0, 1) for k, v in rows.items()}
        return {"reconstructions": later(
            "image_grid", rows, title="validation inputs and their reconstructions")}


register_kind("autoencode", AutoEncodeKind())
