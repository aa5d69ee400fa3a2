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

Memory. The volumes enter at the data set's input resolution (``--data-option resolution``,
:mod:`datasets.multimodal`): by default the seed's 31×37×31 for its 91×109×91 scans, where the
largest ``mlp_ae`` (3 layers, 1024 wide, code 128, batch 32) is ~74 M parameters (~1.1 GiB to
train with Adam) and the largest ``cae`` (3 stride-1 layers, base width 16, batch 32) ~2 GiB.
At full 91×109×91 (``resolution=full``) the seed's ``mlp_ae`` alone is 925 M parameters (13.8
GiB with Adam's state) and the largest 1.85 B, and the largest ``cae`` needs ~52 GiB of
activations: the sizes that grow with the input (``mlp_ae``'s ``hidden``, ``cae``'s
``batch_size``, then ``base_width``) keep only the choices whose largest member needs at most
``MEMORY_BUDGET_BYTES`` (:func:`volume_ae_bytes`, :func:`cae_bytes`; parameters, gradients and
Adam's two moments at 4 bytes each, plus one batch's activations), so every member fits a
40 GB GPU at any resolution.
"""

from __future__ import annotations

import math
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


#: training memory the largest member of ``mlp_ae`` / ``cae`` may need: a 40 GB GPU less room for
#: the CUDA context, cuDNN workspaces and allocator slack
MEMORY_BUDGET_BYTES = 36 * 2**30
AE_HIDDEN = (128, 256, 512, 1024)
AE_CODES = (16, 32, 64, 128)
CAE_WIDTHS = (4, 8, 16)
BATCH_SIZES = (8, 16, 32)


def volume_ae_bytes(voxels: int, hidden: int, n_layers: int = 3, code: int = max(AE_CODES),
                    batch: int = max(BATCH_SIZES)) -> int:
    """Training memory of ``mlp_ae`` (:class:`trainables.cs273b.VolumeAE`): 16 bytes a
    parameter (weights, gradients, Adam's two moments) plus one batch's layer outputs."""
    widths = [hidden // 2**i for i in range(n_layers)]
    sizes = [voxels, *widths, code]
    params = 2 * sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    params += 4 * 2 * sum(widths)  # batch norm
    outputs = batch * (2 * voxels + 2 * 4 * sum(widths) + code)
    return 16 * params + 4 * outputs


def cae_bytes(voxels: int, base_width: int, batch: int, layers: int = 3) -> int:
    """Training memory of the largest ``cae`` of ``base_width`` (stride 1 throughout, batch
    norm): its activations, 3 outputs (conv, norm, activation) per layer and voxel each way."""
    widths = [base_width * 2**i for i in range(layers)]
    per_voxel = 3 * sum(widths) + 3 * sum(widths[:-1]) + 1
    params = 2 * 125 * sum(a * b for a, b in zip([1, *widths], widths, strict=False))
    return 16 * params + 4 * batch * voxels * per_voxel


def _voxels(info: DataInfo) -> int:
    return math.prod(int(s) for s in info.input_shape)


def ae_hidden_choices(info: DataInfo) -> tuple[int, ...]:
    """``mlp_ae`` widths whose largest member fits ``MEMORY_BUDGET_BYTES`` (at least the
    smallest)."""
    fit = tuple(h for h in AE_HIDDEN if volume_ae_bytes(_voxels(info), h) <= MEMORY_BUDGET_BYTES)
    return fit or AE_HIDDEN[:1]


def cae_size_choices(info: DataInfo) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``cae`` (base widths, batch sizes) whose largest member fits ``MEMORY_BUDGET_BYTES``:
    batch sizes are dropped first, then widths (at least the smallest of each)."""
    v, widest = _voxels(info), max(CAE_WIDTHS)
    batches = tuple(b for b in BATCH_SIZES if cae_bytes(v, widest, b) <= MEMORY_BUDGET_BYTES)
    if batches:
        return CAE_WIDTHS, batches
    smallest = BATCH_SIZES[0]
    widths = tuple(w for w in CAE_WIDTHS if cae_bytes(v, w, smallest) <= MEMORY_BUDGET_BYTES)
    return widths or CAE_WIDTHS[:1], (smallest,)


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
    widths, batches = cae_size_choices(info)
    trial.suggest_categorical("base_width", widths)
    trial.suggest_float("ae_lr", 1e-4, 1e-2, log=True)
    if trial.suggest_categorical("ae_opt", ("rmsprop", "adam", "adagrad")) != "adagrad":
        trial.suggest_float("beta1", 0.8, 0.999)
    trial.suggest_float("rho", 0.05, 0.9)
    trial.suggest_float("lambda", 0.0, 1.0)
    trial.suggest_categorical("sparsity", ("scalar", "per_unit"))
    trial.suggest_categorical("batch_norm", (False, True))
    trial.suggest_categorical("batch_size", batches)


def suggest_volume_ae(trial: Any, info: DataInfo) -> None:
    trial.suggest_int("n_layers", 1, 3)
    trial.suggest_categorical("hidden", ae_hidden_choices(info))
    trial.suggest_categorical("code", AE_CODES)
    trial.suggest_categorical("batch_norm", (False, True))
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("ae_lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("ae_opt", ("adam", "rmsprop", "adagrad"))
    trial.suggest_float("l1", 0.0, 1e-5)
    trial.suggest_categorical("batch_size", BATCH_SIZES)


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
