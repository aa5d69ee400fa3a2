"""``cae``, ``mlp_ae``, ``cnn``, ``pheno_nn``, ``mmnn``: the CS 273B multimodal project (seed 004).

Classifiers are scored by validation ROC AUC (accuracy logged too). The auto-encoders are
scored by what the project wanted their code for, downstream classification: ``val_probe_auc``,
the validation ROC AUC of a logistic-regression probe on the code, fitted on the training
subjects' codes with the diagnosis label (:func:`trainables.autoencode.probe_auc`). Searched
against reconstruction alone, the CAE's sparsity weight λ could only lose. Logged beside it:
``val_recon_loss`` and ``val_objective``, the full training loss on the validation split
(reconstruction + λ·KL(ρ ‖ ρ̂) for ``cae``; reconstruction + ``l1``·Σ|W| for ``mlp_ae``, whose
only loss-side regulariser is that L1 weight term, 0 in its seed). The CAE's feature-map code
is average-pooled to a 4³ grid per channel for the probe (:meth:`trainables.cs273b.SparseCAE.probe_codes`).

L1 (``l1``) and L2 (``weight_decay``) regularisation, batch norm and dropout are searchable
throughout, as the project's notes recommend.
"""

from __future__ import annotations

from typing import Any

from datasets.base import DataInfo
from search_spaces import Space, Upstream, register
from trainables.cs273b import build_cae, build_cnn, build_mmnn, build_pheno, build_volume_ae

#: The seed table's first configuration: 2 layers, strides (1, 1), 3×3 filters, lr 1e-3,
#: RMSprop with decay (β1) 0.99, ρ 0.5, λ 0.6, no batch norm. The project averaged one scalar
#: activation over the whole code. Widths are not in the table: base 8.
CAE_SEED: dict[str, Any] = {
    "layers": 2, "layer/0/stride": 1, "layer/0/filter": 3, "layer/1/stride": 1,
    "layer/1/filter": 3, "base_width": 8, "ae_lr": 1e-3, "ae_opt": "rmsprop", "beta1": 0.99,
    "rho": 0.5, "lambda": 0.6, "sparsity": "scalar", "batch_norm": False, "batch_size": 16,
}
#: The project's plain AE, NN and CNN hyperparameters are not recorded in the seed text;
#: these are conventional starting points in its spirit (batch norm on, no L1).
AE_SEED: dict[str, Any] = {"n_layers": 2, "hidden": 512, "code": 64, "batch_norm": True,
                           "dropout": 0.0, "ae_lr": 1e-3, "ae_opt": "adam", "l1": 0.0,
                           "batch_size": 16}
CNN_SEED: dict[str, Any] = {"n_conv": 3, "base_width": 8, "hidden": 64, "batch_norm": True,
                            "dropout": 0.2, "lr": 1e-3, "optimizer": "adam", "l1": 0.0,
                            "weight_decay": 0.0, "batch_size": 16}
PHENO_SEED: dict[str, Any] = {"n_layers": 2, "width": 64, "batch_norm": True, "dropout": 0.2,
                              "lr": 1e-3, "optimizer": "adam", "l1": 0.0, "weight_decay": 0.0,
                              "batch_size": 32}
MMNN_SEED: dict[str, Any] = {
    **{f"cnn/{k}": v for k, v in CNN_SEED.items() if k in ("n_conv", "base_width", "hidden",
                                                           "batch_norm", "dropout")},
    **{f"pheno/{k}": v for k, v in PHENO_SEED.items() if k in ("n_layers", "width",
                                                               "batch_norm", "dropout")},
    "hidden": 64, "dropout": 0.2, "lr": 1e-3, "optimizer": "adam", "l1": 0.0,
    "weight_decay": 0.0, "batch_size": 16,
}


def suggest_training(trial: Any, lr_name: str = "lr") -> None:
    """Optimizer, rate, L1 and L2 weights, batch size."""
    trial.suggest_float(lr_name, 1e-4, 1e-2, log=True)
    trial.suggest_categorical("optimizer", ("adam", "sgd", "rmsprop"))
    trial.suggest_float("l1", 0.0, 1e-4)
    trial.suggest_float("weight_decay", 0.0, 1e-3)
    trial.suggest_categorical("batch_size", (8, 16, 32))


def suggest_cae(trial: Any, info: DataInfo) -> None:
    layers = trial.suggest_int("layers", 1, 3)
    for i in range(layers):
        trial.suggest_int(f"layer/{i}/stride", 1, 3)
        trial.suggest_categorical(f"layer/{i}/filter", (3, 5))
    trial.suggest_categorical("base_width", (4, 8, 16))
    trial.suggest_float("ae_lr", 1e-4, 1e-2, log=True)
    if trial.suggest_categorical("ae_opt", ("rmsprop", "adam", "adagrad")) != "adagrad":
        trial.suggest_float("beta1", 0.8, 0.999)
    trial.suggest_float("rho", 0.05, 0.9)
    trial.suggest_float("lambda", 0.0, 1.0)
    trial.suggest_categorical("sparsity", ("scalar", "per_unit"))
    trial.suggest_categorical("batch_norm", (False, True))
    trial.suggest_categorical("batch_size", (8, 16, 32))


def suggest_volume_ae(trial: Any, info: DataInfo) -> None:
    trial.suggest_int("n_layers", 1, 3)
    trial.suggest_categorical("hidden", (128, 256, 512, 1024))
    trial.suggest_categorical("code", (16, 32, 64, 128))
    trial.suggest_categorical("batch_norm", (False, True))
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("ae_lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("ae_opt", ("adam", "rmsprop", "adagrad"))
    trial.suggest_float("l1", 0.0, 1e-5)
    trial.suggest_categorical("batch_size", (8, 16, 32))


def _cnn_branch(trial: Any, prefix: str = "") -> None:
    trial.suggest_int(f"{prefix}n_conv", 2, 4)
    trial.suggest_categorical(f"{prefix}base_width", (4, 8, 16))
    trial.suggest_categorical(f"{prefix}hidden", (32, 64, 128))
    trial.suggest_categorical(f"{prefix}batch_norm", (False, True))
    trial.suggest_float(f"{prefix}dropout", 0.0, 0.5)


def _pheno_branch(trial: Any, prefix: str = "") -> None:
    trial.suggest_int(f"{prefix}n_layers", 1, 4)
    trial.suggest_categorical(f"{prefix}width", (16, 32, 64, 128, 256))
    trial.suggest_categorical(f"{prefix}batch_norm", (False, True))
    trial.suggest_float(f"{prefix}dropout", 0.0, 0.5)


def suggest_cnn(trial: Any, info: DataInfo) -> None:
    _cnn_branch(trial)
    suggest_training(trial)


def suggest_pheno(trial: Any, info: DataInfo) -> None:
    _pheno_branch(trial)
    suggest_training(trial)


def suggest_mmnn(trial: Any, info: DataInfo) -> None:
    """Branch architectures, unless they come from earlier searches' checkpoints; the head."""
    init = info.extra.get("init", {})
    if "cnn" not in init:
        _cnn_branch(trial, "cnn/")
    if "pheno" not in init:
        _pheno_branch(trial, "pheno/")
    trial.suggest_categorical("hidden", (32, 64, 128))
    trial.suggest_float("dropout", 0.0, 0.5)
    suggest_training(trial)


CLASSIFIER_METRICS = ("val_top1", "val_loss")
AE_METRICS = ("val_recon_loss", "val_objective")
register(Space(name="cae", suggest=suggest_cae, seed_config=CAE_SEED, build=build_cae,
               kind="autoencode", dataset="multimodal", metric="val_probe_auc", mode="max",
               description="CS 273B sparse 3D convolutional auto-encoder (seed 004)",
               extra_metrics=(*AE_METRICS, "val_code_mean")))
register(Space(name="mlp_ae", suggest=suggest_volume_ae, seed_config=AE_SEED,
               build=build_volume_ae, kind="autoencode", dataset="multimodal",
               metric="val_probe_auc", mode="max",
               description="CS 273B fully connected auto-encoder of volumes (seed 004)",
               extra_metrics=AE_METRICS))
register(Space(name="cnn", suggest=suggest_cnn, seed_config=CNN_SEED, build=build_cnn,
               kind="classify", dataset="multimodal", metric="val_auc", mode="max",
               description="CS 273B 3D CNN on volumes, binary diagnosis (seed 004)",
               extra_metrics=CLASSIFIER_METRICS))
register(Space(name="pheno_nn", suggest=suggest_pheno, seed_config=PHENO_SEED,
               build=build_pheno, kind="classify", dataset="multimodal", metric="val_auc",
               mode="max", description="CS 273B phenotype MLP, binary diagnosis (seed 004)",
               extra_metrics=CLASSIFIER_METRICS))
register(Space(name="mmnn", suggest=suggest_mmnn, seed_config=MMNN_SEED, build=build_mmnn,
               kind="classify", dataset="multimodal", metric="val_auc", mode="max",
               description="CS 273B multimodal NN: CNN ⊕ phenotype features (seed 004)",
               extra_metrics=CLASSIFIER_METRICS,
               upstream=(Upstream(name="cnn", space="cnn", option="cnn_experiment"),
                         Upstream(name="pheno", space="pheno_nn", option="pheno_experiment"))))
