"""``etmiss`` (Wrap-padded CNN) and ``etmiss_gbdt`` (boosted trees on hand features): missing
transverse energy from calorimeter images (seed 002). Both are scored by the MET resolution
on the validation split (RMS of the E_x,y^miss residuals, GeV; lower is better), so they
compare directly.
"""

from __future__ import annotations

from typing import Any

from datasets.base import DataInfo
from search_spaces import Space, register
from trainables.atlas import build_etmiss, build_gbdt

#: The seed text keeps no CNN hyperparameters (its models.py was partly lost); a small
#: image-target network with the seed's augmentation is the starting point.
CNN_SEED: dict[str, Any] = {"n_conv": 3, "width": 32, "kernel": 3, "batch_norm": True,
                            "target": "image", "inputs": "all", "augment": True, "lr": 1e-3,
                            "optimizer": "adam", "weight_decay": 0.0, "batch_size": 32}
#: scikit-learn's defaults, as a GridSearchCV over them would start.
GBDT_SEED: dict[str, Any] = {"max_depth": 6, "learning_rate": 0.1, "l2_regularization": 0.0,
                             "min_samples_leaf": 20, "iterations": 20}


def suggest_etmiss(trial: Any, info: DataInfo) -> None:
    trial.suggest_int("n_conv", 2, 5)
    trial.suggest_categorical("width", (16, 32, 64))
    trial.suggest_categorical("kernel", (3, 5))
    trial.suggest_categorical("batch_norm", (True, False))
    trial.suggest_categorical("target", ("image", "met"))
    trial.suggest_categorical("inputs", ("all", "calo"))
    trial.suggest_categorical("augment", (True, False))
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("optimizer", ("adam", "adamw", "sgd"))
    trial.suggest_float("weight_decay", 0.0, 1e-3)
    trial.suggest_categorical("batch_size", (16, 32, 64))


def suggest_gbdt(trial: Any, info: DataInfo) -> None:
    trial.suggest_int("max_depth", 2, 12)
    trial.suggest_float("learning_rate", 0.01, 0.5, log=True)
    trial.suggest_float("l2_regularization", 0.0, 1.0)
    trial.suggest_int("min_samples_leaf", 5, 100, log=True)
    trial.suggest_int("iterations", 5, 50)


register(Space(name="etmiss", suggest=suggest_etmiss, seed_config=CNN_SEED, build=build_etmiss,
               kind="met", dataset="calo", metric="val_met_resolution", mode="min",
               description="ATLAS MET: Wrap-padded CNN on calorimeter images (seed 002)",
               extra_metrics=("val_met_response",)))
register(Space(name="etmiss_gbdt", suggest=suggest_gbdt, seed_config=GBDT_SEED,
               build=build_gbdt, kind="gbdt", dataset="calo", metric="val_met_resolution",
               mode="min", description="ATLAS MET: boosted trees on hand features (seed 002)",
               extra_metrics=("val_met_response",)))
