"""CS 273B multimodal project's networks (seed 004): sparse CAE, plain AE, volume CNN,
phenotype NN and the multimodal NN (FIELD.md §004).

- **Sparse CAE** (3D): ``layers`` conv layers with per-layer stride and filter size (padding
  ``filter // 2``), optional batch norm, ReLU; the last encoder layer's activation is a
  sigmoid, so the code's activations lie in (0, 1) for the KL sparsity term (``sparsity_code``,
  see :mod:`trainables.autoencode`); the decoder mirrors the encoder with transposed
  convolutions and is resized to the input's shape (strides that do not divide it). Channel
  widths are not in the seed's table: 8 × 2^i (searchable base width).
- **Plain AE**: fully connected on the flattened volume, with batch norm and dropout options.
- **Volume CNN**: ``n_conv`` blocks of 3³ conv (+BN) + ReLU + 2³ max-pool, channel width
  doubling, global average pool, a hidden layer with dropout, 2 logits.
- **Phenotype NN**: ``n_layers`` × (Linear (+BN) + ReLU + dropout), 2 logits.
- **Multimodal NN**: the CNN's pooled features concatenated with the phenotype NN's last
  hidden features, then a head. It may start from the best ``cnn`` and ``pheno_nn``
  checkpoints of earlier searches (``datasets/multimodal.py`` options); their architectures
  then come from those searches and only the head and training settings are searched.

Both auto-encoders have ``probe_codes(x)``, their code as flat features for the downstream
probe of :mod:`trainables.autoencode` (the spaces' objective): the plain AE's code vector as it
is; the CAE's code feature map average-pooled to at most ``PROBE_GRID``³ cells per channel
(see :meth:`SparseCAE.probe_codes`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import trainables.autoencode  # noqa: F401 - registers the 'autoencode' kind
from datasets.base import DataInfo

#: cells per axis of the pooled CAE code the probe sees
PROBE_GRID = 4


def _norm3d(channels: int, on: bool) -> nn.Module:
    return nn.BatchNorm3d(channels) if on else nn.Identity()


def _norm1d(width: int, on: bool) -> nn.Module:
    return nn.BatchNorm1d(width) if on else nn.Identity()


class SparseCAE(nn.Module):
    """3D convolutional auto-encoder whose code activations feed a sparsity penalty."""

    def __init__(self, strides: list[int], filters: list[int], base_width: int, batch_norm: bool):
        super().__init__()
        widths = [base_width * 2**i for i in range(len(strides))]
        enc: list[nn.Module] = []
        c_in = 1
        for i, (stride, k, c_out) in enumerate(zip(strides, filters, widths, strict=True)):
            last = i == len(strides) - 1
            enc += [nn.Conv3d(c_in, c_out, k, stride, padding=k // 2), _norm3d(c_out, batch_norm),
                    nn.Sigmoid() if last else nn.ReLU(inplace=True)]
            c_in = c_out
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        outs = widths[::-1][1:] + [1]
        for i, (stride, k, c_out) in enumerate(zip(strides[::-1], filters[::-1], outs, strict=True)):
            last = i == len(strides) - 1
            dec.append(nn.ConvTranspose3d(c_in, c_out, k, stride, padding=k // 2,
                                          output_padding=stride - 1))
            if not last:
                dec += [_norm3d(c_out, batch_norm), nn.ReLU(inplace=True)]
            c_in = c_out
        self.decoder = nn.Sequential(*dec)
        self.sparsity_code: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        self.sparsity_code = code
        out = self.decoder(code)
        if out.shape[2:] != x.shape[2:]:
            out = F.interpolate(out, size=x.shape[2:], mode="trilinear", align_corners=False)
        return out

    def probe_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code, average-pooled to at most ``PROBE_GRID`` cells per axis, flattened:
        (B, channels × cells). Pooled rather than flattened whole: a 32³ input's code is
        ~10⁵-10⁶ numbers per subject for a few hundred subjects (memory, and a probe that can
        only overfit); a coarse grid rather than one global mean keeps where in the volume the
        activation lies (the multimodal signal is local atrophy). Leaves ``sparsity_code``
        alone."""
        code = self.encoder(x)
        cells = [min(PROBE_GRID, s) for s in code.shape[2:]]
        return F.adaptive_avg_pool3d(code, cells).flatten(1)


class VolumeAE(nn.Module):
    """Fully connected auto-encoder of flattened volumes."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], code: int, batch_norm: bool,
                 dropout: float):
        super().__init__()
        d = math.prod(shape)  # a plain int: the model also builds on the meta device
        sizes = [d] + hidden
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes, sizes[1:], strict=False):
            enc += [nn.Linear(a, b), _norm1d(b, batch_norm), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        enc.append(nn.Linear(sizes[-1], code))
        dec: list[nn.Module] = []
        back = [code] + hidden[::-1]
        for a, b in zip(back, back[1:], strict=False):
            dec += [nn.Linear(a, b), _norm1d(b, batch_norm), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        dec.append(nn.Linear(back[-1], d))
        self.encoder, self.decoder, self.shape = nn.Sequential(*enc), nn.Sequential(*dec), shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).view(x.shape[0], *self.shape)

    def probe_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code vector (B, code), for the downstream probe."""
        return self.encoder(x)


class VolumeCNN(nn.Module):
    """3D CNN classifier; ``features`` gives the pooled features the multimodal model uses."""

    def __init__(self, n_conv: int, base_width: int, hidden: int, batch_norm: bool,
                 dropout: float, classes: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(n_conv):
            c_out = base_width * 2**i
            layers += [nn.Conv3d(c_in, c_out, 3, padding=1), _norm3d(c_out, batch_norm),
                       nn.ReLU(inplace=True), nn.MaxPool3d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.feature_size = c_in
        self.head = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(hidden, classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PhenotypeNN(nn.Module):
    """MLP on the phenotype vector."""

    input_keys = ("phen",)

    def __init__(self, inputs: int, n_layers: int, width: int, batch_norm: bool, dropout: float,
                 classes: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = inputs
        for _ in range(n_layers):
            layers += [nn.Linear(c_in, width), _norm1d(width, batch_norm), nn.ReLU(inplace=True),
                       nn.Dropout(dropout)]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.feature_size = width
        self.head = nn.Linear(width, classes)

    def features(self, phen: torch.Tensor) -> torch.Tensor:
        return self.body(phen)

    def forward(self, phen: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(phen))


class MultimodalNN(nn.Module):
    """CNN features ⊕ phenotype features → head → 2 logits."""

    input_keys = ("x", "phen")

    def __init__(self, cnn: VolumeCNN, pheno: PhenotypeNN, hidden: int, dropout: float,
                 classes: int = 2):
        super().__init__()
        self.cnn, self.pheno = cnn, pheno
        self.head = nn.Sequential(nn.Linear(cnn.feature_size + pheno.feature_size, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor, phen: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.cnn.features(x), self.pheno.features(phen)], dim=1))


def _flag(value: Any) -> bool:
    return value in (True, "true", "True", 1)


def build_cae(config: Mapping[str, Any], info: DataInfo) -> SparseCAE:
    layers = int(config["layers"])
    return SparseCAE([int(config[f"layer/{i}/stride"]) for i in range(layers)],
                     [int(config[f"layer/{i}/filter"]) for i in range(layers)],
                     int(config["base_width"]), _flag(config["batch_norm"]))


def build_volume_ae(config: Mapping[str, Any], info: DataInfo) -> VolumeAE:
    hidden = [int(config["hidden"]) // 2**i for i in range(int(config["n_layers"]))]
    return VolumeAE(tuple(info.input_shape), hidden, int(config["code"]),
                    _flag(config["batch_norm"]), float(config["dropout"]))


def build_cnn(config: Mapping[str, Any], info: DataInfo, prefix: str = "") -> VolumeCNN:
    c = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    return VolumeCNN(int(c["n_conv"]), int(c["base_width"]), int(c["hidden"]),
                     _flag(c["batch_norm"]), float(c["dropout"]), info.num_classes)


def build_pheno(config: Mapping[str, Any], info: DataInfo, prefix: str = "") -> PhenotypeNN:
    c = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    return PhenotypeNN(int(info.extra["phenotypes"]), int(c["n_layers"]), int(c["width"]),
                       _flag(c["batch_norm"]), float(c["dropout"]), info.num_classes)


def build_mmnn(config: Mapping[str, Any], info: DataInfo) -> MultimodalNN:
    """Branches from earlier searches' best checkpoints (``info.extra['init']``) or from the
    configuration's ``cnn/…`` and ``pheno/…`` entries."""
    init = info.extra.get("init", {})
    branches = {}
    for name, builder in (("cnn", build_cnn), ("pheno", build_pheno)):
        if name in init:
            branch = builder(init[name]["config"], info)
            branch.load_state_dict(torch.load(init[name]["state_path"], map_location="cpu",
                                              weights_only=True))
        else:
            branch = builder(config, info, prefix=f"{name}/")
        branches[name] = branch
    return MultimodalNN(branches["cnn"], branches["pheno"], int(config["hidden"]),
                        float(config["dropout"]), info.num_classes)
