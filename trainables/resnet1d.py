"""The 1D ResNet of seed 003 (powder XRD classification), with its config and output types.

Faithful to the seed's ``ResNet.py`` as documented (FIELD.md §003):
``CNN1dLayer`` = Conv1d → BatchNorm → GELU → Dropout; ``CNN1dLayerNoAct`` = Conv1d → BN →
Dropout; a residual block is (Layer → LayerNoAct) + (1×1 conv downsample when the shape
changes), then GELU; stem conv layer → max-pool → stages → global average pool → Linear.

Choices the seed text leaves open (stated here so they can be checked): convolutions keep
their bias and use ``padding = kernel // 2``; the stride of a stage sits on its first block's
first conv and on that block's 1×1 downsample (which has a bias and no BN); the stem is a
``CNN1dLayer``. The seed model's unused ``adv`` head (unsupervised logit) is left out: it has
no gradient in supervised training and would break DDP's unused-parameter check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ResnetConfig:
    """Hyperparameters of :class:`ResnetClassifier`; defaults are the seed's own."""

    input_dim: int = 1
    output_dim: int = 14
    res_dims: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    res_kernel: list[int] = field(default_factory=lambda: [5, 7, 17, 13])
    res_stride: list[int] = field(default_factory=lambda: [4, 4, 5, 3])
    num_blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    first_kernel_size: int = 13
    first_stride: int = 1
    first_pool_kernel_size: int = 7
    first_pool_stride: int = 7
    dropout: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.res_dims)
        if not (len(self.res_kernel) == len(self.res_stride) == len(self.num_blocks) == n):
            raise ValueError("res_dims, res_kernel, res_stride and num_blocks need equal lengths")

    def output_length(self, length: int) -> int:
        """Length of the feature map before global pooling for an input of ``length`` points."""
        length = _conv_len(length, self.first_kernel_size, self.first_stride)
        length = (length - self.first_pool_kernel_size) // self.first_pool_stride + 1
        for kernel, stride in zip(self.res_kernel, self.res_stride, strict=True):
            length = _conv_len(length, kernel, stride)
        return length


def _conv_len(length: int, kernel: int, stride: int) -> int:
    return (length + 2 * (kernel // 2) - kernel) // stride + 1


class CNN1dLayer(nn.Sequential):
    """Conv1d → BatchNorm1d → GELU → Dropout."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
            nn.BatchNorm1d(c_out),
            nn.GELU(),
            nn.Dropout(dropout),
        )


class CNN1dLayerNoAct(nn.Sequential):
    """Conv1d → BatchNorm1d → Dropout (no activation)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
            nn.BatchNorm1d(c_out),
            nn.Dropout(dropout),
        )


class Resnet1DBlock(nn.Module):
    """GELU((Layer → LayerNoAct)(x) + downsample(x))."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float):
        super().__init__()
        self.hidden = nn.Sequential(
            CNN1dLayer(c_in, c_out, kernel, stride, dropout),
            CNN1dLayerNoAct(c_out, c_out, kernel, 1, dropout),
        )
        self.downsample = (
            nn.Conv1d(c_in, c_out, 1, stride=stride) if (c_in != c_out or stride != 1) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return F.gelu(self.hidden(x) + residual)


class Resnet(nn.Module):
    """Stem conv → max-pool → residual stages; returns the last feature map."""

    def __init__(self, config: ResnetConfig):
        super().__init__()
        c = config
        self.stem = CNN1dLayer(c.input_dim, c.res_dims[0], c.first_kernel_size, c.first_stride,
                               c.dropout)
        self.pool = nn.MaxPool1d(c.first_pool_kernel_size, c.first_pool_stride)
        stages = []
        prev = c.res_dims[0]
        for dim, kernel, stride, blocks in zip(c.res_dims, c.res_kernel, c.res_stride,
                                               c.num_blocks, strict=True):
            layers = [Resnet1DBlock(prev, dim, kernel, stride, c.dropout)]
            layers += [Resnet1DBlock(dim, dim, kernel, 1, c.dropout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            prev = dim
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.pool(self.stem(x)))


@dataclass
class ModelOutput:
    """Logits and loss with the seed's accuracy helpers."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)

    def accuracy(self, labels: torch.Tensor) -> float:
        return (self.predictions == labels).float().mean().item()

    def top_k_preds(self, k: int) -> torch.Tensor:
        return self.logits.topk(min(k, self.logits.shape[-1]), dim=-1).indices

    def top_k_acc(self, labels: torch.Tensor, k: int) -> float:
        return (self.top_k_preds(k) == labels[:, None]).any(dim=-1).float().mean().item()


class ResnetClassifier(nn.Module):
    """1D ResNet → global average pool → Linear classifier; ``forward`` returns logits."""

    def __init__(self, config: ResnetConfig):
        super().__init__()
        self.config = config
        self.resnet = Resnet(config)
        self.classifier = nn.Linear(config.res_dims[-1], config.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x[:, None, :]
        return self.classifier(self.resnet(x).mean(dim=-1))

    def output(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        """Forward pass wrapped in :class:`ModelOutput` (with cross-entropy if labels given)."""
        logits = self(x)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ModelOutput(logits, loss)


def config_from_flat(config: Mapping[str, Any], num_classes: int) -> ResnetConfig:
    """Build a :class:`ResnetConfig` from a flat search config (``stages/<i>/<name>`` keys)."""
    n_stages = int(config["n_stages"])

    def per_stage(name: str) -> Sequence[int]:
        return [int(config[f"stages/{i}/{name}"]) for i in range(n_stages)]

    return ResnetConfig(
        input_dim=1,
        output_dim=num_classes,
        res_dims=list(per_stage("dim")),
        res_kernel=list(per_stage("kernel")),
        res_stride=list(per_stage("stride")),
        num_blocks=list(per_stage("blocks")),
        first_kernel_size=int(config["first_kernel_size"]),
        first_stride=int(config["first_stride"]),
        first_pool_kernel_size=int(config["first_pool_kernel_size"]),
        first_pool_stride=int(config["first_pool_stride"]),
        dropout=float(config.get("dropout", 0.0)),
    )


def build(config: Mapping[str, Any], info: Any) -> ResnetClassifier:
    """Model factory used by the ``resnet1d`` space."""
    cfg = config_from_flat(config, info.num_classes)
    if cfg.output_length(info.input_shape[-1]) < 1:
        raise ValueError(
            f"configuration downsamples {info.input_shape[-1]} points to nothing; "
            "reduce strides or pooling"
        )
    return ResnetClassifier(cfg)
