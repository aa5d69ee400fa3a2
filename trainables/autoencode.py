"""The ``autoencode`` task kind: reconstruction training, optionally with a sparsity term.

Config keys: ``ae_lr``; ``ae_opt`` (adam | sgd | rmsprop | adagrad; default adam); ``beta1``,
``beta2`` (Adam's betas; RMSprop's decay is ``beta1``; defaults 0.9, 0.999); ``p`` (SGD
momentum, 0.9); ``weight_decay`` (default 1e-5 for Adam, the seed-001 setting, else 0);
``l1`` (weight of an L1 penalty on the weights, default 0); ``batch_size``.

Loss: mean squared reconstruction error. A model with a ``sparsity_code`` attribute (the last
code it produced, activations in (0, 1)) adds ``lambda`` × a KL sparsity term towards the
target activation ``rho``: ``sparsity=scalar`` — KL(ρ ‖ ρ̂) with ρ̂ the mean activation of the
whole code, as the CS 273B project computed it — or ``sparsity=per_unit`` — Σ_j KL(ρ ‖ ρ̂_j)
over the code units, Ng's sparse auto-encoder. Objective ``<split>_recon_loss`` (the
reconstruction part only); ``<split>_code_mean`` (ρ̂) is logged beside ``rho``.
Figures: inputs next to their reconstructions (central slices of volumes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainables.loop import Kind, fetch, iterate_minibatches, register_kind

EPS = 1e-6


def kl_sparsity(code: torch.Tensor, rho: float, form: str) -> torch.Tensor:
    """KL(ρ ‖ ρ̂) of Bernoulli activations: ρ̂ over the whole code (``scalar``) or per unit."""
    flat = code.reshape(code.shape[0], -1)
    rho_hat = flat.mean() if form == "scalar" else flat.mean(0)
    rho_hat = rho_hat.clamp(EPS, 1 - EPS)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return kl.sum()


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
        return loss, {"train_recon_loss": recon.item()}

    @torch.no_grad()
    def evaluate(self, model, data, split, cfg, ctx):
        device = ctx.device
        model.eval()
        total = seen = code_sum = 0.0
        core = getattr(model, "module", model)
        for idx in iterate_minibatches(getattr(data, split), 256, None):
            x = fetch(data, "x", idx, cfg, device)
            total += F.mse_loss(model(x), x, reduction="sum").item() / x[0].numel()
            code = getattr(core, "sparsity_code", None)
            if code is not None:
                code_sum += code.reshape(len(idx), -1).mean(1).sum().item()
            seen += len(idx)
        out = {f"{split}_recon_loss": total / max(seen, 1)}
        if getattr(core, "sparsity_code", None) is not None:
            out[f"{split}_code_mean"] = code_sum / max(seen, 1)
        return out

    @torch.no_grad()
    def figures(self, model, data, cfg, ctx) -> dict[str, bytes]:
        from trainables.figures import image_grid_png

        model.eval()
        x = fetch(data, "x", np.sort(data.val[:8]), cfg, ctx.device)
        recon = model(x).cpu().numpy()
        inputs = x.cpu().numpy()
        low, high = float(inputs.min()), float(inputs.max())  # the inputs' range for both rows
        rows = {"input": _middle(inputs), "reconstruction": _middle(recon)}
        rows = {k: np.clip((v - low) / (high - low + 1e-12), 0, 1) for k, v in rows.items()}
        return {"reconstructions": image_grid_png(
            rows, title="validation inputs and their reconstructions")}


register_kind("autoencode", AutoEncodeKind())
