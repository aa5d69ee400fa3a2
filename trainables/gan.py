"""The ``gan`` task kind: adversarial training of a generator against a discriminator.

Any space whose ``build`` returns a :class:`GanModule` uses it. Config keys: ``g_lr``,
``d_lr``, ``beta1`` or ``beta`` (Adam β1; ``beta2`` optional), ``g_opt``/``d_opt``
(adam|sgd|rmsprop, default adam), ``p`` (SGD momentum, default 0.9), ``batch_size``,
``label_smoothing`` (real target 1 − s, default 0) and
``d_steps`` (discriminator updates per generator update, default 1). The discriminator ends in
a sigmoid (as in the seeds), so the losses are binary cross-entropies on probabilities.

Evaluation: :func:`trainables.sample_quality.sample_quality` of a fixed, seeded batch of
generated samples against a fixed, seeded random reference sample of the split's real ones
and their class labels where the data has them (``<split>_quality``, lower is better, and its
parts as ``<split>_<part>``).
Figures: real samples next to generated ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainables.loop import Kind, TrialDiverged, fetch, iterate_minibatches, register_kind
from trainables.sample_quality import reference_indices, reference_labels, sample_quality

EVAL_SAMPLES = 256
EVAL_SEED = 12345


class GanModule(nn.Module):
    """A generator and a discriminator; ``forward(x)`` is the discriminator's probability.

    ``tanh_output``: the data and the generator live in [-1, 1] (mapped to [0, 1] images for
    the sample-quality score); otherwise they are compared as they are."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 latent_shape: tuple[int, ...], tanh_output: bool = False):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_shape = tuple(latent_shape)
        self.tanh_output = tanh_output

    def to_image(self, x: np.ndarray) -> np.ndarray:
        """Model space → the images the score compares."""
        return to_unit(x) if self.tanh_output else x

    def noise(self, n: int, device: torch.device, generator: torch.Generator | None = None):
        return torch.randn((n, *self.latent_shape), device=device, generator=generator)

    def sample(self, n: int, device: torch.device, generator: torch.Generator | None = None):
        return self.generator(self.noise(n, device, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)


def to_unit(images: np.ndarray) -> np.ndarray:
    """Tanh model space ([-TANH_RANGE, TANH_RANGE] for data) → [0, 1] images."""
    from datasets.base import TANH_RANGE

    return np.clip((images / TANH_RANGE + 1.0) / 2.0, 0.0, 1.0)


class MultiOptimizer:
    """Several named optimizers that checkpoint as one ``state_dict``."""

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.optimizers[name]

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def build_optimizer(name: str, params: Any, lr: float, betas: tuple[float, float],
                    momentum: float = 0.9):
    """``adam`` (with ``betas``), ``sgd`` (with ``momentum``) or ``rmsprop``."""
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Conv1d | nn.Conv3d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.BatchNorm3d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class GanKind(Kind):
    """Step functions of the ``gan`` kind (see the module docstring)."""

    def make_optimizer(self, model: GanModule, cfg: Mapping[str, Any]) -> MultiOptimizer:
        betas = (float(cfg.get("beta1", cfg.get("beta", 0.5))), float(cfg.get("beta2", 0.999)))
        momentum = float(cfg.get("p", 0.9))
        return MultiOptimizer(
            g=build_optimizer(str(cfg.get("g_opt", "adam")), model.generator.parameters(),
                              float(cfg["g_lr"]), betas, momentum),
            d=build_optimizer(str(cfg.get("d_opt", "adam")), model.discriminator.parameters(),
                              float(cfg["d_lr"]), betas, momentum),
        )

    def train_epoch(self, model, data, opt, cfg, rng, ctx):
        device = ctx.device
        model.train()
        real_target = 1.0 - float(cfg.get("label_smoothing", 0.0))
        d_steps = int(cfg.get("d_steps", 1))
        torch_rng = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
        totals = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        batches = 0
        for idx in iterate_minibatches(data.train, int(cfg["batch_size"]), rng):
            if len(idx) < 2:
                continue
            real = fetch(data, "x", idx, cfg, device)
            n = len(idx)
            for _ in range(d_steps):
                with ctx.autocast():
                    fake = model.sample(n, device, torch_rng).detach()
                    p_real = model.discriminator(real).float().view(-1)
                    p_fake = model.discriminator(fake).float().view(-1)
                # binary cross-entropy in fp32, outside autocast (which refuses it on CUDA)
                d_loss = F.binary_cross_entropy(p_real, torch.full_like(p_real, real_target)) + \
                    F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake))
                ctx.step(d_loss, opt["d"])
            with ctx.autocast():
                p_gen = model.discriminator(model.sample(n, device, torch_rng)).float().view(-1)
            g_loss = F.binary_cross_entropy(p_gen, torch.ones_like(p_gen))
            ctx.step(g_loss, opt["g"])
            if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
                raise TrialDiverged(f"GAN losses became d={d_loss.item()}, g={g_loss.item()}")
            totals["d_loss"] += d_loss.item()
            totals["g_loss"] += g_loss.item()
            totals["d_real"] += p_real.mean().item()
            totals["d_fake"] += p_fake.mean().item()
            batches += 1
        return {f"train_{k}": v / max(batches, 1) for k, v in totals.items()}

    @torch.no_grad()
    def generate(self, model: GanModule, n: int, device: torch.device) -> np.ndarray:
        """``n`` samples from a fixed noise batch (the same for every epoch and trial)."""
        model.eval()
        noise_rng = torch.Generator(device="cpu").manual_seed(EVAL_SEED)
        z = model.noise(n, torch.device("cpu"), noise_rng).to(device)
        return model.generator(z).float().cpu().numpy()

    def real_samples(self, data, split: str, cfg, n: int) -> np.ndarray:
        """The split's reference sample: ``n`` events drawn at random with a fixed seed (the
        same every epoch and trial), not the first indices of the sorted split."""
        return data.batch("x", reference_indices(getattr(data, split), n, EVAL_SEED), cfg)

    def evaluate(self, model, data, split, cfg, ctx):
        indices = reference_indices(getattr(data, split), EVAL_SAMPLES, EVAL_SEED)
        real = model.to_image(data.batch("x", indices, cfg))
        fake = model.to_image(self.generate(model, len(real), ctx.device))
        quality = sample_quality(fake, real, seed=EVAL_SEED, labels=reference_labels(data, indices))
        return {f"{split}_{k if k != 'score' else 'quality'}": v for k, v in quality.items()}

    def figures(self, model, data, cfg, ctx) -> dict[str, Any]:
        from trainables.figures import later

        real = model.to_image(self.real_samples(data, "val", cfg, 8))
        fake = model.to_image(self.generate(model, 8, ctx.device))
        collapse = (lambda a: a.sum(1)) if real.ndim == 4 else (lambda a: a)
        return {"samples": later("image_grid", {"real": collapse(real), "generated": collapse(fake)},
                                          title="validation events vs generated (summed channels)")}


register_kind("gan", GanKind())
