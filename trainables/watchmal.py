"""WatChMaL's networks (seed 000): ClNet (EresNet encoder + LatentClassifier) and GanNet (DCGAN).

Faithful to FIELD.md §000:

- **EresNet** encoder: 1×1 conv C→16 + BN + ReLU, 1×1 conv 16→64 + BN + ReLU, one basic
  block 64→64, then four stages of basic blocks (depth 18: [2,2,2,2]; depth 34: [3,4,6,3])
  with 64, 64, 64, 128 channels, each stage downsampling by 2 (its first conv and its
  downsample are 4×4 stride-2 convs), then a conv whose kernel is the remaining map (2×2 for a
  40×40 input, 1×2 for the barrel-only 16×40) + BN + ReLU, flatten, Linear 128 → latent + ReLU.
- **LatentClassifier**: Linear L → L/2 → L/4 → L/8 → classes, ReLU between.
- **GanNet**: the PyTorch-tutorial DCGAN re-shaped to 19×40×40 with no Tanh at the output;
  widths scale with ``ngf``/``ndf`` (64 in the seed); DCGAN initialisation.

Choices the notes leave open: 3×3 convs (padding 1) inside basic blocks, padding 1 on the
4×4 stride-2 convs (40 → 20 → 10 → 5 → 2), and bias-free convs before BatchNorm (the usual
ResNet convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from datasets.base import DataInfo
from trainables.gan import GanModule, dcgan_init

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STAGE_CHANNELS = (64, 64, 64, 128)


def conv_bn(c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
            padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """ResNet basic block; a downsampling block uses 4×4 stride-2 convs (EresNet)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        if downsample:
            self.conv1 = conv_bn(c_in, c_out, 4, stride=2, padding=1)
            self.shortcut: nn.Module = conv_bn(c_in, c_out, 4, stride=2, padding=1)
        else:
            self.conv1 = conv_bn(c_in, c_out, 3, padding=1)
            self.shortcut = nn.Identity() if c_in == c_out else conv_bn(c_in, c_out, 1)
        self.conv2 = conv_bn(c_out, c_out, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


def _after_stride2(size: int) -> int:
    return (size + 2 - 4) // 2 + 1


class EresNet(nn.Module):
    """The EresNet encoder: image (C, H, W) → latent vector."""

    def __init__(self, in_channels: int, latent_dims: int, depth: int = 18,
                 image_size: Sequence[int] = (40, 40)):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth {depth}: EresNet is built for depths {sorted(STAGE_BLOCKS)}")
        self.stem = nn.Sequential(
            conv_bn(in_channels, 16, 1), nn.ReLU(inplace=True),
            conv_bn(16, 64, 1), nn.ReLU(inplace=True),
            BasicBlock(64, 64, downsample=False),
        )
        layers: list[nn.Module] = []
        c_in = 64
        h, w = image_size
        for blocks, c_out in zip(STAGE_BLOCKS[depth], STAGE_CHANNELS, strict=True):
            layers.append(BasicBlock(c_in, c_out, downsample=True))
            layers += [BasicBlock(c_out, c_out, downsample=False) for _ in range(blocks - 1)]
            c_in = c_out
            h, w = _after_stride2(h), _after_stride2(w)
        if h < 1 or w < 1:
            raise ValueError(f"image {tuple(image_size)} is too small for four stride-2 stages")
        self.stages = nn.Sequential(*layers)
        self.collapse = nn.Sequential(conv_bn(c_in, c_in, (h, w)), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in, latent_dims), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.collapse(self.stages(self.stem(x))))


class LatentClassifier(nn.Sequential):
    """Linear L → L/2 → L/4 → L/8 → classes with ReLU between."""

    def __init__(self, latent_dims: int, num_classes: int):
        dims = [latent_dims, latent_dims // 2, latent_dims // 4, latent_dims // 8]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], num_classes))
        super().__init__(*layers)


class ClNet(nn.Module):
    """WatChMaL's classifier: EresNet encoder followed by the latent classifier."""

    def __init__(self, in_channels: int = 19, latent_dims: int = 128, depth: int = 18,
                 num_classes: int = 3, image_size: Sequence[int] = (40, 40)):
        super().__init__()
        if latent_dims < 8:
            raise ValueError("latent_dims must be at least 8 (the classifier halves it 3 times)")
        self.encoder = EresNet(in_channels, latent_dims, depth, image_size)
        self.classifier = LatentClassifier(latent_dims, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


class Generator(nn.Sequential):
    """DCGAN generator: z (latent × 1 × 1) → nc × 40 × 40, no Tanh."""

    def __init__(self, latent_dims: int = 128, ngf: int = 64, nc: int = 19):
        super().__init__(
            nn.ConvTranspose2d(latent_dims, ngf * 8, 4, 2, 0, bias=False),  # 4×4
            nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 3, 3, 1, bias=False),  # 10×10
            nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 20×20
            nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 40×40
            nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 3, 1, 1, bias=False),  # 40×40, no Tanh
        )


class Discriminator(nn.Sequential):
    """DCGAN discriminator: nc × 40 × 40 → probability of being real."""

    def __init__(self, ndf: int = 64, nc: int = 19):
        super().__init__(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 20
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),  # 10
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),  # 5
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),  # 2
            nn.Conv2d(ndf * 8, 1, 2, 1, 0, bias=False),  # 1
            nn.Sigmoid(),
            nn.Flatten(),
        )


def input_channels(config: Mapping[str, Any]) -> int:
    """19 charge channels, or 38 with the hit times (``input_channels: charge_time``)."""
    return 38 if config.get("input_channels", "charge") == "charge_time" else 19


def build_classifier(config: Mapping[str, Any], info: DataInfo) -> ClNet:
    """ClNet from a flat ``resnet18`` configuration."""
    return ClNet(in_channels=input_channels(config), latent_dims=int(config["latent_dims"]),
                 depth=int(config["depth"]), num_classes=info.num_classes,
                 image_size=tuple(info.input_shape[-2:]))


def build_gan(config: Mapping[str, Any], info: DataInfo) -> GanModule:
    """GanNet (generator + discriminator) from a flat ``dcgan`` configuration."""
    if tuple(info.input_shape[-2:]) != (40, 40):
        raise ValueError(f"the DCGAN generates 40×40 events; the data are {info.input_shape[-2:]}")
    latent = int(config["latent_dims"])
    model = GanModule(Generator(latent, int(config["ngf"]), 19),
                      Discriminator(int(config["ndf"]), 19), latent_shape=(latent, 1, 1))
    dcgan_init(model)
    return model
