"""``python launch.py blackout --experiment NAME``: occlusion analysis of a finished search.

As the CS 273B project's "blackout": the best checkpoint of a classifier search is loaded,
cubes (or squares) of ``--patch`` voxels of each validation input are blanked in turn (set to
the data set's mean, 0 after standardisation), and the mean absolute change of the predicted
probability of the true class is recorded per region. The map is written as a picture
(central slices of the mean input and of the map) and as a ``.npy`` array, and logged to the
experiment's MLflow parent run under ``blackout/``.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import BadInput


def occlusion_map(model: Any, inputs: list[Any], labels: Any, patch: int) -> np.ndarray:
    """Mean |Δ p(true class)| when each region of ``inputs[0]`` is blanked (0)."""
    import torch

    x = inputs[0]
    spatial = x.shape[2:]
    grid = [int(np.ceil(s / patch)) for s in spatial]
    with torch.no_grad():
        base = torch.softmax(model(*inputs), -1)[torch.arange(len(labels)), labels]
        heat = np.zeros(grid)
        for cell in np.ndindex(*grid):
            blanked = x.clone()
            region = (slice(None), slice(None)) + tuple(
                slice(c * patch, min((c + 1) * patch, s)) for c, s in zip(cell, spatial, strict=True))
            blanked[region] = 0.0
            p = torch.softmax(model(blanked, *inputs[1:]), -1)[torch.arange(len(labels)), labels]
            heat[cell] = float((p - base).abs().mean())
    return heat


def picture(mean_input: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    """Central slices (3D) or the image (2D) of the mean input beside the occlusion map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if heat.ndim == 3:
        slices = [(np.take(mean_input, mean_input.shape[a] // 2, axis=a),
                   np.take(heat, heat.shape[a] // 2, axis=a)) for a in range(3)]
    else:
        slices = [(mean_input, heat)]
    fig, axes = plt.subplots(2, len(slices), figsize=(3.2 * len(slices), 6), squeeze=False)
    for i, (image, occ) in enumerate(slices):
        axes[0, i].imshow(image, cmap="gray")
        axes[0, i].set_title(["sagittal", "coronal", "axial"][i] if len(slices) == 3 else "input")
        shown = axes[1, i].imshow(occ, cmap="inferno", vmin=0, vmax=float(heat.max()) or 1.0,
                                  extent=(0, image.shape[1], image.shape[0], 0))
        axes[1, i].set_title("mean |Δp| when blanked")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(shown, ax=axes[1, :].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    """The ``blackout`` sub-command. (flags parsed by :mod:`cli.blackout`)."""
    import torch

    from datasets import get_dataset
    from search_spaces import get_space
    from tracking.record import SearchRecord
    from trainables.loop import input_keys

    if args.patch < 1 or args.samples < 1:
        raise BadInput("--patch and --samples must be at least 1")
    storage = str(Path(args.storage).absolute())
    override = None
    if args.mlflow_uri is not None:
        from tracking.record import existing_store_uri

        override = existing_store_uri(args.mlflow_uri)
    search = SearchRecord.load(storage, args.experiment, override)
    settings = search.settings
    space = get_space(settings["space"])
    if space.kind != "classify":
        raise BadInput(f"blackout explains classifiers; {args.experiment!r} searched "
                       f"{space.name!r} ({space.kind})")
    config = search.best_record()  # BadInput: not finished, or its MLflow store is gone
    try:
        state = search.best_model_state()
    except BadInput:
        raise BadInput(f"experiment {args.experiment!r} has no best checkpoint yet; let the "
                       "search finish (or --resume it) first") from None
    options = settings.get("data_option") or {}
    data = get_dataset(space.dataset).load(settings["data_path"], int(settings["seed"]), options)
    if len(data.info.input_shape) < 3:
        raise BadInput(f"{space.name!r} takes no image or volume input to blank")
    model = space.build(config["config"], data.info)
    model.load_state_dict(state)
    model.eval()
    idx = np.sort(data.val[: args.samples])
    inputs = [torch.from_numpy(data.batch(k, idx, config["config"])) for k in input_keys(model)]
    labels = torch.from_numpy(np.asarray(data.batch("y", idx, {}), dtype=np.int64))
    heat = occlusion_map(model, inputs, labels, args.patch)
    mean_input = inputs[0].numpy().mean(axis=(0, 1))
    png = picture(mean_input, heat, f"{args.experiment}: {space.name} best trial "
                  f"{config.get('trial', '')}, patch {args.patch}, {len(idx)} validation inputs")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "blackout.png").write_bytes(png)
        np.save(Path(tmp) / "blackout.npy", heat)
        search.client.log_artifacts(search.parent_run_id, tmp, artifact_path="blackout")
    top = np.unravel_index(np.argmax(heat), heat.shape)
    print(f"blackout: {heat.size} regions of {args.patch} voxels over {len(idx)} validation "
          f"inputs; largest effect {heat.max():.4f} at region {tuple(int(t) for t in top)}")
    print(f"logged to MLflow run {search.parent_run_id} under blackout/ (blackout.png, "
          "blackout.npy)")
    return 0
