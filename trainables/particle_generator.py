"""Particle Generator's networks and task kinds (seed 001): MLP GAN, auto-encoders, EWM.

Faithful to the seed's code (kseuro/particle_generator) as documented in FIELD.md §001:

- **MLP GAN**: generator z → ``n_layers`` blocks (Linear + LeakyReLU ``leaky_slope``) of width
  ``n_hidden``
  → Linear → Tanh (images in [-1, 1]); discriminator image → the same blocks → Linear →
  Sigmoid; weights N(0, 0.02), biases 0; BCE, one D step per G step (the ``gan`` kind).
  ``p`` is SGD's momentum, as in the seed's optimizer set-up; ``beta`` is Adam's β1 (the seed
  parses it but never passes it on: here it takes effect); ``dropout`` in the discriminator's
  blocks is an addition (0 in the seed).
- **MLP AE**: encoder image → widths ``base·2^i`` (i < ``n_layers``, widest first; base 128 for
  images up to 28×28, else 256) → Linear → ``l_dim`` (no activation); decoder the mirror →
  Linear → Tanh; LeakyReLU ``leaky_slope`` between. The seed's code changed its slope over
  time (0.2 in its early ``gan.py`` and in ``ae_layers.py``, 0.5 in the later ``layers.py``
  blocks its G and D share): the slope is searched over {0.2, 0.5}, the seed configurations
  take 0.5 for the GAN and 0.2 for the AE (their latest code); a configuration without it
  (an older checkpoint) builds with 0.2. **Conv AE**: ``n_layers`` blocks (3×3 conv,
  LeakyReLU 0.2, 2×2 max-pool) with channels ``depth/2^(n_layers-1) … depth``, then a 3×3 conv to
  ``l_dim`` channels; decoder blocks of bilinear ×2 upsampling, reflection pad, 3×3 conv,
  LeakyReLU, the last with Tanh. MSE loss; Adam(weight decay 1e-5) or SGD(momentum ``p``).
- **EWM** (Chen et al., arXiv:1906.03471): generator z → ``n_layers`` × (Linear + LeakyReLU 0.5)
  → Linear → code (no activation), trained against a finite target set {y_j} (AE codes of the
  training images) by alternating (1) a semi-discrete optimal-transport step: x = G(z),
  j* = argmin_j c(x, y_j) + ψ_j (the paper's rule; the seed code's argmax of c − ψ is a sign
  error), Adam ascent on the dual (loss −mean ψ[j*] + mean ψ, raising ψ of over-assigned
  targets), (z, j*) pairs kept in a ring buffer of ``mem_size`` batches (the paper's memory:
  batches, not targets), stopping once the buffer is full and its assignment histogram is near
  uniform (or after max(targets, ``mem_size``) iterations); and (2) a fit step regressing G(z)
  onto y[j*], one step per buffered batch (L1 or squared L2 cost, as ``cost`` says).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import trainables.autoencode  # noqa: F401 - registers the 'autoencode' kind the ae space uses
from datasets.base import DataInfo
from trainables.gan import (
    EVAL_SAMPLES,
    EVAL_SEED,
    GanModule,
    MultiOptimizer,
    build_optimizer,
    to_unit,
)
from trainables.loop import Kind, TrialDiverged, register_kind
from trainables.sample_quality import reference_indices, reference_labels, sample_quality

EWM_BATCH = 250  # the seed's EWM launch
HISTOGRAM_BINS = 100
NEAR_UNIFORM = (0.8, 1.25)  # min and max bin count / mean: the seed's (200, 320) around 256


def normal_init(module: nn.Module) -> None:
    """Weights N(0, 0.02), biases 0 (the seed's ``weights_init``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def mlp(sizes: list[int], slope: float, dropout: float = 0.0) -> list[nn.Module]:
    """Linear + LeakyReLU (+ dropout) blocks through ``sizes``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope, inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class ToImage(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], *self.shape)


def image_size(info: DataInfo) -> int:
    return int(np.prod(info.input_shape))


def build_mlp_gan(config: Mapping[str, Any], info: DataInfo) -> GanModule:
    """The seed's MLP GAN for images of ``info.input_shape`` (1, H, W)."""
    hidden, layers, z_dim = int(config["n_hidden"]), int(config["n_layers"]), int(config["z_dim"])
    d = image_size(info)
    slope = float(config.get("leaky_slope", 0.2))
    generator = nn.Sequential(*mlp([z_dim] + [hidden] * layers, slope), nn.Linear(hidden, d),
                              nn.Tanh(), ToImage(info.input_shape))
    discriminator = nn.Sequential(nn.Flatten(),
                                  *mlp([d] + [hidden] * layers, slope,
                                       float(config.get("dropout", 0))),
                                  nn.Linear(hidden, 1), nn.Sigmoid())
    model = GanModule(generator, discriminator, latent_shape=(z_dim,), tanh_output=True)
    normal_init(model)
    return model


class MlpAutoEncoder(nn.Module):
    """The seed's fully connected auto-encoder."""

    def __init__(self, shape: tuple[int, ...], l_dim: int, n_layers: int, slope: float = 0.2):
        super().__init__()
        d = int(np.prod(shape))
        base = 128 if d <= 784 else 256
        widths = [base * 2**i for i in range(n_layers)][::-1]
        self.encoder = nn.Sequential(nn.Flatten(), *mlp([d] + widths, slope),
                                     nn.Linear(widths[-1], l_dim))
        self.decoder = nn.Sequential(*mlp([l_dim] + widths[::-1], slope), nn.Linear(widths[0], d),
                                     nn.Tanh(), ToImage(shape))
        self.code_shape: tuple[int, ...] = (l_dim,)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ConvAutoEncoder(nn.Module):
    """The seed's convolutional auto-encoder; codes are flattened to vectors."""

    def __init__(self, shape: tuple[int, ...], l_dim: int, n_layers: int, depth: int):
        super().__init__()
        _, height, width = shape
        if height % 2**n_layers or width % 2**n_layers:
            raise ValueError(f"{height}×{width} images do not halve {n_layers} times")
        if depth // 2 ** (n_layers - 1) < 1:
            raise ValueError(f"depth {depth} is too small for {n_layers} layers")
        channels = [depth // 2**i for i in range(n_layers)][::-1]
        enc: list[nn.Module] = []
        for a, b in zip([1] + channels, channels, strict=False):
            enc += [nn.Conv2d(a, b, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), nn.MaxPool2d(2)]
        enc.append(nn.Conv2d(depth, l_dim, 3, padding=1))
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        dec_channels = [l_dim] + [depth // 2**i for i in range(n_layers - 1)] + [1]
        dec: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dec_channels, dec_channels[1:], strict=False)):
            last = i == n_layers - 1
            dec += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.ReflectionPad2d(1), nn.Conv2d(a, b, 3),
                    nn.Tanh() if last else nn.LeakyReLU(0.2, inplace=True)]
        self.code_map = (l_dim, height // 2**n_layers, width // 2**n_layers)
        self.decoder = nn.Sequential(ToImage(self.code_map), *dec)
        self.code_shape = (int(np.prod(self.code_map)),)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def init_output_bias(model: nn.Module, mean_input: float | None) -> None:
    """Start the decoder's last layer at the data's mean (atanh of it, before the Tanh).

    Not in the seed (its AE kept PyTorch's default init). Without it, on mostly-background
    images Adam drives every output into tanh's flat tail within ~40 steps and the AE never
    leaves the all-background reconstruction (measured on the synthetic crops: val loss stuck
    at 0.0231 for every configuration tried; with it, 0.0137 for the seed MLP AE and 0.0013 for
    a small conv AE after 600 steps)."""
    if mean_input is None:
        return
    last = [m for m in model.decoder.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(math.atanh(float(np.clip(mean_input, -0.9, 0.9))))


def build_autoencoder(config: Mapping[str, Any], info: DataInfo) -> nn.Module:
    """MLP or convolutional AE from a flat ``ae`` configuration."""
    shape = tuple(info.input_shape)
    if config.get("arch", "mlp") == "conv":
        model: nn.Module = ConvAutoEncoder(shape, int(config["l_dim"]), int(config["n_layers"]),
                                           int(config["depth"]))
    else:
        model = MlpAutoEncoder(shape, int(config["l_dim"]), int(config["n_layers"]),
                               float(config.get("leaky_slope", 0.2)))
    init_output_bias(model, info.extra.get("mean_input"))
    return model


class EwmModule(nn.Module):
    """EWM generator, its dual potential ψ over the targets, and the frozen AE decoder."""

    def __init__(self, z_dim: int, n_hidden: int, n_layers: int, autoencoder: nn.Module,
                 targets: int):
        super().__init__()
        code = int(autoencoder.code_shape[0])
        self.generator = nn.Sequential(*mlp([z_dim] + [n_hidden] * n_layers, 0.5),
                                       nn.Linear(n_hidden, code))
        normal_init(self.generator)
        self.psi = nn.Parameter(torch.zeros(targets))
        self.autoencoder = autoencoder.requires_grad_(False)
        self.z_dim = z_dim

    def noise(self, n: int, device: torch.device, generator: torch.Generator | None = None):
        return torch.randn((n, self.z_dim), device=device, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of images ``x`` (the model's input space, for checks and export)."""
        return self.autoencoder.encode(x)

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(self.generator(z))


def build_ewm(config: Mapping[str, Any], info: DataInfo) -> EwmModule:
    """EWM generator over the AE codes described by ``info.extra`` (see datasets/ae_codes)."""
    extra = info.extra
    autoencoder = build_autoencoder(extra["ae_config"], info)
    if extra.get("ae_state_path"):
        state = torch.load(extra["ae_state_path"], map_location="cpu", weights_only=True)
        autoencoder.load_state_dict(state)
    return EwmModule(int(config["z_dim"]), int(config["n_hidden"]), int(config["n_layers"]),
                     autoencoder.eval(), int(extra["targets"]))


def transport_cost(x: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Pairwise cost (B, N) between samples and targets: ``l1``, or squared ``l2``."""
    if kind == "l1":
        return torch.cdist(x, targets, p=1)
    return torch.cdist(x, targets, p=2) ** 2


def ot_step(x: torch.Tensor, targets: torch.Tensor, psi: torch.Tensor,
            optimizer: torch.optim.Optimizer, cost: str) -> torch.Tensor:
    """One semi-discrete OT step (the paper's rule): assign each sample to
    argmin_j c(x, y_j) + ψ_j, then one ascent step on the dual
    F(ψ) = E[ψ_j*] − mean(ψ) (raises ψ of over-assigned targets). Returns the assignment."""
    with torch.no_grad():
        assign = (transport_cost(x, targets, cost) + psi.detach()).argmin(1)
    loss = -(psi[assign].mean() - psi.mean())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return assign


class EwmKind(Kind):
    """Explicit Wasserstein minimisation (see the module docstring). One epoch is one outer
    iteration: an optimal-transport phase, then a fit phase over the buffered pairs."""

    def make_optimizer(self, model: EwmModule, cfg: Mapping[str, Any]) -> MultiOptimizer:
        return MultiOptimizer(
            g=build_optimizer(str(cfg.get("g_opt", "adam")), model.generator.parameters(),
                              float(cfg["g_lr"]), (0.5, 0.999), float(cfg.get("p", 0.9))),
            psi=torch.optim.Adam([model.psi], lr=float(cfg["psi_lr"])),
        )

    @staticmethod
    def near_uniform(assigned: np.ndarray, targets: int) -> tuple[bool, float]:
        """Is the assignment histogram (over ≤ 100 bins of targets) within the seed's bounds?
        Also returns the total-variation distance of the per-target histogram to uniform."""
        bins = min(targets, HISTOGRAM_BINS)
        counts = np.bincount(assigned * bins // targets, minlength=bins)
        mean = counts.mean()
        per_target = np.bincount(assigned, minlength=targets) / max(len(assigned), 1)
        tv = 0.5 * float(np.abs(per_target - 1.0 / targets).sum())
        if mean < 20:  # too few samples to judge
            return False, tv
        return bool(counts.min() >= NEAR_UNIFORM[0] * mean and
                    counts.max() <= NEAR_UNIFORM[1] * mean), tv

    def train_epoch(self, model, data, opt, cfg, rng, ctx):
        device = ctx.device
        model.train()
        # the target set: external code vectors (--data-option codes=FOLDER), else the codes
        # of the training images
        targets = data.arrays["targets"] if "targets" in data.arrays else \
            data.arrays["codes"][data.train]
        codes = torch.from_numpy(np.array(targets, dtype=np.float32)).to(device)
        n = len(codes)
        batch, mem_size, kind = EWM_BATCH, int(cfg["mem_size"]), str(cfg["cost"])
        torch_rng = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
        # The memory is the paper's: the last ``mem_size`` batches of (z, j*) pairs. The phase
        # runs until it is full and its assignments are near uniform, at most one iteration
        # per target (the seed's bound) but never fewer than fill it; the fit then takes one
        # step per stored batch. So ``mem_size`` sets both phases' length, whatever n is.
        max_iters = max(n, mem_size)
        buffer_z = torch.empty((mem_size, batch, model.z_dim), device=device)
        buffer_j = torch.empty((mem_size, batch), dtype=torch.long, device=device)
        filled, steps, done, tv = 0, 0, False, 1.0
        while steps < max_iters and not done:
            z = model.noise(batch, device, torch_rng)
            with torch.no_grad(), ctx.autocast():
                x = model.generator(z).float()  # costs and the dual step stay in fp32
            assign = ot_step(x, codes, model.psi, opt["psi"], kind)
            buffer_z[steps % mem_size], buffer_j[steps % mem_size] = z, assign
            steps += 1
            filled = min(filled + 1, mem_size)
            if filled == mem_size and (steps - mem_size) % 20 == 0:
                done, tv = self.near_uniform(buffer_j.flatten().cpu().numpy(), n)
        fit_total = 0.0
        for slot in rng.permutation(filled):
            with ctx.autocast():
                out = model.generator(buffer_z[slot])
            diff = out.float() - codes[buffer_j[slot]]
            loss = diff.abs().sum(1).mean() if kind == "l1" else (diff**2).sum(1).mean()
            if not torch.isfinite(loss):
                raise TrialDiverged(f"EWM fit loss became {loss.item()}")
            ctx.step(loss, opt["g"])
            fit_total += loss.item()
        return {"train_fit_loss": fit_total / max(filled, 1), "train_ot_iterations": float(steps),
                "train_fit_steps": float(filled),
                "train_assignment_tv": tv, "train_ot_converged": float(done)}

    @torch.no_grad()
    def generate(self, model: EwmModule, n: int, device: torch.device) -> np.ndarray:
        model.eval()
        noise_rng = torch.Generator(device="cpu").manual_seed(EVAL_SEED)
        z = model.noise(n, torch.device("cpu"), noise_rng).to(device)
        return model.images(z).cpu().numpy()

    def evaluate(self, model, data, split, cfg, ctx):
        indices = reference_indices(getattr(data, split), EVAL_SAMPLES, EVAL_SEED)
        real = to_unit(data.batch("x", indices, cfg))
        fake = to_unit(self.generate(model, len(indices), ctx.device))
        quality = sample_quality(fake, real, seed=EVAL_SEED, labels=reference_labels(data, indices))
        out = {f"{split}_{k if k != 'score' else 'quality'}": v for k, v in quality.items()}
        if not all(math.isfinite(v) for v in out.values()):
            raise TrialDiverged("generated images are not finite")
        return out

    def figures(self, model, data, cfg, ctx) -> dict[str, Any]:
        from trainables.figures import later

        real = to_unit(data.batch("x", np.sort(data.val[:8]), cfg))[:, 0]
        fake = to_unit(self.generate(model, 8, ctx.device))[:, 0]
        return {"samples": later("image_grid", {"real": real, "generated": fake},
                                          title="validation images vs EWM samples (decoded)")}


register_kind("ewm", EwmKind())
