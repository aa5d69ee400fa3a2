"""``resnet18`` (ClNet) and ``dcgan`` (GanNet): WatChMaL's water-Cherenkov models (seed 000).

``resnet18`` classifies γ / e / μ events (objective: validation accuracy; also logged: e-vs-μ
and e-vs-γ ROC AUC, the confusion matrix and ROC curves as pictures). ``dcgan`` generates
19-channel charge images (objective: the shared sample-quality score against held-out real
events, lower is better; real-vs-generated grids logged as pictures).
"""

from __future__ import annotations

from typing import Any

from datasets.base import DataInfo
from search_spaces import Space, register
from trainables.watchmal import build_classifier, build_gan

#: The seed's best ClNet run: 19 charge channels, 128 latent dims, EresNet-18, Adam lr 1e-4,
#: weight decay 1e-4, batch 512, horizontal+vertical flips.
CLASSIFIER_SEED: dict[str, Any] = {
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "batch_size": 512,
    "latent_dims": 128,
    "depth": 18,
    "optimizer": "adam",
    "flip_augment": True,
    "input_channels": "charge",
}

#: The seed's GanNet: the PyTorch DCGAN tutorial's settings (lr 2e-4, Adam β = (0.5, 0.999),
#: batch 128, ngf = ndf = 64) with 128 latent dims (WatChMaL's num_latent_dims); no label
#: smoothing and one discriminator step per generator step, as in the tutorial.
GAN_SEED: dict[str, Any] = {
    "g_lr": 2e-4,
    "d_lr": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "latent_dims": 128,
    "ngf": 64,
    "ndf": 64,
    "label_smoothing": 0.0,
    "d_steps": 1,
    "batch_size": 128,
}


def suggest_classifier(trial: Any, info: DataInfo) -> None:
    """Learning rate, weight decay, batch, latent width, depth, optimizer, flips, input."""
    trial.suggest_float("lr", 1e-5, 3e-3, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_categorical("batch_size", (32, 64, 128, 256, 512))
    trial.suggest_categorical("latent_dims", (32, 64, 128, 256))
    trial.suggest_categorical("depth", (18, 34))
    trial.suggest_categorical("optimizer", ("adam", "adamw", "sgd"))
    trial.suggest_categorical("flip_augment", (True, False))
    trial.suggest_categorical("input_channels", ("charge", "charge_time"))


def suggest_gan(trial: Any, info: DataInfo) -> None:
    """Both learning rates, Adam betas, latent size, widths, smoothing, D steps, batch."""
    trial.suggest_float("g_lr", 2e-5, 2e-3, log=True)
    trial.suggest_float("d_lr", 2e-5, 2e-3, log=True)
    trial.suggest_float("beta1", 0.0, 0.9)
    trial.suggest_float("beta2", 0.9, 0.999)
    trial.suggest_categorical("latent_dims", (32, 64, 128, 256))
    trial.suggest_categorical("ngf", (16, 32, 64))
    trial.suggest_categorical("ndf", (16, 32, 64))
    trial.suggest_float("label_smoothing", 0.0, 0.3)
    trial.suggest_int("d_steps", 1, 3)
    trial.suggest_categorical("batch_size", (32, 64, 128))


register(Space(
    name="resnet18", suggest=suggest_classifier, seed_config=CLASSIFIER_SEED,
    build=build_classifier, kind="classify", dataset="watchmal", metric="val_top1", mode="max",
    description="WatChMaL ClNet (EresNet + latent classifier): γ/e/μ water-Cherenkov events (seed 000)",
    extra_metrics=("val_auc_e_vs_mu", "val_auc_e_vs_gamma", "val_rejection_e_vs_mu",
                   "val_rejection_e_vs_gamma", "val_loss"),
))
register(Space(
    name="dcgan", suggest=suggest_gan, seed_config=GAN_SEED, build=build_gan, kind="gan",
    dataset="watchmal", metric="val_quality", mode="min",
    description="WatChMaL GanNet (DCGAN, 19×40×40, no Tanh): event generation (seed 000)",
    extra_metrics=("val_physics", "val_kpd", "val_kid", "val_intensity", "val_occupancy"),
))
