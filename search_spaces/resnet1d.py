"""``resnet1d``: the powder-XRD 1D ResNet of seed 003 (Bravais lattice classification).

Searched: the number of stages and, per stage, width (``res_dims``), kernel (``res_kernel``),
stride (``res_stride``) and depth (``num_blocks``); the stem conv and max-pool; dropout; Adam's
learning rate (log) and eps (log); optional weight decay (log); batch size; and the level of
the seed's uniform-background augmentation. Strides are bounded by the feature-map length
reached so far, so every sampled configuration keeps at least one point per channel, and by
their kernel (max-pool and stage convolutions), so no input point falls between two windows.
"""

from __future__ import annotations

from typing import Any

from datasets.base import DataInfo
from search_spaces import Space, register
from trainables.resnet1d import build

MAX_STAGES = 5
MAX_UNSTRIDED_LENGTH = 128
MAX_ACTIVATION = 4096  # points × channels after a stage

#: The seed's ``init_models``: ResnetConfig(res_dims=[32,64,64,64], res_kernel=[5,7,17,13],
#: res_stride=[4,4,5,3], num_blocks=[2,2,2,2], first_kernel_size=13, first_stride=1,
#: first_pool_kernel_size=7, first_pool_stride=7), Adam(lr=0.5e-3, eps=1e-5).
#: The seed text names no batch size, dropout or background level: 64, 0.0 and 0.05 are our
#: reading of it (batch 64 per GPU; dropout layers present but off; a small uniform offset).
SEED_CONFIG: dict[str, Any] = {
    "n_stages": 4,
    **{f"stages/{i}/dim": d for i, d in enumerate((32, 64, 64, 64))},
    **{f"stages/{i}/kernel": k for i, k in enumerate((5, 7, 17, 13))},
    **{f"stages/{i}/stride": s for i, s in enumerate((4, 4, 5, 3))},
    **{f"stages/{i}/blocks": b for i, b in enumerate((2, 2, 2, 2))},
    "first_kernel_size": 13,
    "first_stride": 1,
    "first_pool_kernel_size": 7,
    "first_pool_stride": 7,
    "dropout": 0.0,
    "lr": 5e-4,
    "eps": 1e-5,
    "use_weight_decay": False,
    "batch_size": 64,
    "background": 0.05,
}


def suggest(trial: Any, info: DataInfo) -> None:
    """Optuna define-by-run space (conditional on ``n_stages`` and ``use_weight_decay``).

    Compute stays bounded whatever is sampled: a stage whose input is longer than
    ``MAX_UNSTRIDED_LENGTH`` points must downsample, and its width is capped so that
    points × channels after the stage stay within ``MAX_ACTIVATION`` (width steps of 16).
    """
    length = info.input_shape[-1]
    first_kernel = trial.suggest_int("first_kernel_size", 3, 25, step=2)
    first_stride = trial.suggest_int("first_stride", 1, 2)
    length = (length + 2 * (first_kernel // 2) - first_kernel) // first_stride + 1
    # A window must reach the next one (stride <= kernel), or the points between windows are
    # never seen: the same rule bounds every stage's stride by its kernel below.
    pool_kernel = trial.suggest_int("first_pool_kernel_size", 3, 9)
    pool_stride = trial.suggest_int("first_pool_stride", 3, pool_kernel)
    length = max(1, (length - pool_kernel) // pool_stride + 1)
    n_stages = trial.suggest_int("n_stages", 2, MAX_STAGES)
    for i in range(n_stages):
        kernel = trial.suggest_int(f"stages/{i}/kernel", 3, 21, step=2)  # odd: "same" padding
        low = 2 if length > MAX_UNSTRIDED_LENGTH else 1
        stride = trial.suggest_int(f"stages/{i}/stride", low, max(low, min(5, length, kernel)))
        length = (length + 2 * (kernel // 2) - kernel) // stride + 1
        widest = min(128, max(16, (MAX_ACTIVATION // max(length, 1)) // 16 * 16))
        trial.suggest_int(f"stages/{i}/dim", 16, widest, step=16)
        trial.suggest_int(f"stages/{i}/blocks", 1, 3)
    trial.suggest_float("dropout", 0.0, 0.3)
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("eps", 1e-9, 1e-4, log=True)
    if trial.suggest_categorical("use_weight_decay", (False, True)):
        trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_categorical("batch_size", (32, 64, 128, 256))
    trial.suggest_float("background", 0.0, 0.2)
    return None


register(
    Space(
        name="resnet1d",
        suggest=suggest,
        seed_config=SEED_CONFIG,
        build=build,
        kind="classify",
        dataset="xrd",
        metric="val_top1",
        mode="max",
        description="1D ResNet on powder XRD patterns, Bravais lattice (seed 003)",
        extra_metrics=("val_top3", "val_loss", "train_loss"),
    )
)
