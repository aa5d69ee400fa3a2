"""``mlp_gan``, ``ae`` and the two-stage ``ewm``: Particle Generator's models (seed 001).

All three work on sparse particle images (synthetic LArCV-like crops by default,
``--data digits`` for the bundled 8×8 digits, or an HDF5 image file). Generators are scored
with the shared sample-quality score (lower is better); the auto-encoder by its held-out
reconstruction loss. Seed configurations are the seed's argparser defaults (FIELD.md §001).
"""

from __future__ import annotations

import math
from typing import Any

from datasets.base import DataInfo
from search_spaces import Space, Upstream, register
from trainables.particle_generator import build_autoencoder, build_ewm, build_mlp_gan

GAN_SEED: dict[str, Any] = {
    "n_layers": 4, "n_hidden": 512, "z_dim": 100, "g_lr": 1e-4, "d_lr": 1e-4,
    "g_opt": "adam", "d_opt": "adam", "beta": 0.5, "p": 0.9, "dropout": 0.0, "batch_size": 24,
    "leaky_slope": 0.5,  # the seed's layers.py blocks (see trainables.particle_generator)
}
AE_SEED: dict[str, Any] = {
    "arch": "mlp", "l_dim": 20, "n_layers": 4, "leaky_slope": 0.2, "ae_opt": "adam",
    "ae_lr": 1e-4, "batch_size": 24,
}
EWM_SEED: dict[str, Any] = {
    "g_lr": 1e-4, "g_opt": "adam", "n_hidden": 512, "n_layers": 4, "z_dim": 100,
    "psi_lr": 0.1, "mem_size": 5000, "cost": "l1",
}


def suggest_gan(trial: Any, info: DataInfo) -> None:
    """Depth, width, noise size, both optimizers and rates, β1, SGD momentum, D dropout,
    LeakyReLU slope, batch."""
    trial.suggest_int("n_layers", 2, 5)
    trial.suggest_categorical("n_hidden", (128, 256, 512, 1024))
    trial.suggest_categorical("z_dim", (32, 64, 100, 128))
    trial.suggest_float("g_lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("d_lr", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("g_opt", ("adam", "sgd"))
    trial.suggest_categorical("d_opt", ("adam", "sgd"))
    trial.suggest_float("beta", 0.0, 0.9)
    trial.suggest_float("p", 0.5, 0.99)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_categorical("leaky_slope", (0.2, 0.5))
    trial.suggest_categorical("batch_size", (24, 64, 128))


def suggest_ae(trial: Any, info: DataInfo) -> None:
    """MLP or conv AE; code size, depth (layers; conv: deepest channel count), the MLP's
    LeakyReLU slope, optimizer."""
    height, width = info.input_shape[-2:]
    halvings = int(math.log2(math.gcd(int(height), int(width))))
    arch = trial.suggest_categorical("arch", ("mlp", "conv"))
    trial.suggest_int("l_dim", 4, 512, log=True)
    if arch == "conv":
        depth = trial.suggest_categorical("depth", (8, 16, 32, 64))
        trial.suggest_int("n_layers", 1, max(1, min(halvings, int(math.log2(depth)) + 1, 5)))
    else:
        trial.suggest_int("n_layers", 1, 4)
        trial.suggest_categorical("leaky_slope", (0.2, 0.5))
    if trial.suggest_categorical("ae_opt", ("adam", "sgd")) == "sgd":
        trial.suggest_float("p", 0.5, 0.99)
    trial.suggest_float("ae_lr", 1e-5, 1e-2, log=True)
    trial.suggest_categorical("batch_size", (24, 64, 128))


def suggest_ewm(trial: Any, info: DataInfo) -> None:
    """Generator rate/optimizer/shape, noise size, dual step, buffer size, transport cost."""
    trial.suggest_float("g_lr", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("g_opt", ("adam", "sgd"))
    trial.suggest_categorical("n_hidden", (128, 256, 512, 1024))
    trial.suggest_int("n_layers", 2, 5)
    trial.suggest_categorical("z_dim", (16, 32, 64, 100, 128))
    trial.suggest_float("psi_lr", 1e-3, 1.0, log=True)
    trial.suggest_int("mem_size", 50, 5000, log=True)
    trial.suggest_categorical("cost", ("l1", "l2"))


register(Space(
    name="mlp_gan", suggest=suggest_gan, seed_config=GAN_SEED, build=build_mlp_gan, kind="gan",
    dataset="larcv", metric="val_quality", mode="min",
    description="Particle Generator MLP GAN on sparse particle images (seed 001)",
    extra_metrics=("val_physics", "val_kpd", "val_kid", "val_intensity", "val_occupancy"),
))
register(Space(
    name="ae", suggest=suggest_ae, seed_config=AE_SEED, build=build_autoencoder,
    kind="autoencode", dataset="larcv", metric="val_recon_loss", mode="min",
    description="Particle Generator auto-encoder (MLP or conv) on particle images (seed 001)",
    extra_metrics=("train_recon_loss",),
))
register(Space(
    name="ewm", suggest=suggest_ewm, seed_config=EWM_SEED, build=build_ewm, kind="ewm",
    dataset="ae_codes", metric="val_quality", mode="min",
    description="Particle Generator EWM generator on AE codes, two-stage (seed 001)",
    extra_metrics=("val_physics", "val_kpd", "val_kid", "val_intensity", "val_occupancy",
                   "train_assignment_tv", "train_fit_steps"),
    upstream=(Upstream(name="ae", space="ae", option="ae_experiment",
                       train_epochs_option="ae_epochs"),),
))
