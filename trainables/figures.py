"""Pictures the task kinds attach to checkpoints, logged by the driver to the trial's MLflow run.

Each ``*_png`` function draws PNG bytes. A kind may return those bytes, drawn in the trial, or a
:class:`Picture` made by :func:`later`: the renderer's registered name and its arguments
(arrays, numbers, strings), written beside the checkpoint as ``<name>.picture.npz`` and drawn
by the driver when it logs the picture. Drawing takes a tenth of a second or more of CPU;
a deferred picture keeps that off the trial's training loop (on a GPU an epoch of the
default data set takes about half a second).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PICTURE_SUFFIX = ".picture.npz"  # a deferred picture's file, beside the checkpoint


@dataclass(frozen=True)
class Picture:
    """A picture not drawn yet: a renderer of :data:`RENDERERS` and its arguments."""

    renderer: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def png(self) -> bytes:
        """Draw it (PNG bytes)."""
        if self.renderer not in RENDERERS:
            raise ValueError(f"no picture renderer {self.renderer!r} (have {sorted(RENDERERS)})")
        return RENDERERS[self.renderer](*self.args, **self.kwargs)


def later(renderer: str, *args: Any, **kwargs: Any) -> Picture:
    """A picture to be drawn by the driver: ``RENDERERS[renderer](*args, **kwargs)``.
    Arguments may be arrays, numbers, strings, None and lists, tuples or string-keyed dicts
    of those (tuples come back as lists)."""
    if renderer not in RENDERERS:
        raise ValueError(f"no picture renderer {renderer!r} (have {sorted(RENDERERS)})")
    return Picture(renderer, tuple(args), dict(kwargs))


def as_png(picture: bytes | Picture) -> bytes:
    """PNG bytes of a picture, drawn now if it was deferred."""
    return picture.png() if isinstance(picture, Picture) else picture


def encode_picture(picture: Picture) -> bytes:
    """A deferred picture as ``.npz`` bytes: its arrays, and a JSON spec naming them (no pickle)."""
    arrays: dict[str, np.ndarray] = {}

    def enc(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {"__array__": key}
        if isinstance(value, np.generic):
            return value.item()
        if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
            return enc(value.detach().cpu().numpy())
        if isinstance(value, (list, tuple)):
            return [enc(v) for v in value]
        if isinstance(value, Mapping):
            return {"__dict__": [[str(k), enc(v)] for k, v in value.items()]}
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise TypeError(f"a deferred picture cannot hold a {type(value).__name__}")

    spec = {"renderer": picture.renderer, "args": enc(list(picture.args)),
            "kwargs": enc(picture.kwargs)}
    buffer = io.BytesIO()
    np.savez(buffer, __spec__=np.array(json.dumps(spec)), **arrays)
    return buffer.getvalue()


def decode_picture(blob: bytes) -> Picture:
    """The :class:`Picture` of :func:`encode_picture`'s bytes (arrays read without pickle)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    spec = json.loads(str(arrays.pop("__spec__")))

    def dec(value: Any) -> Any:
        if isinstance(value, list):
            return [dec(v) for v in value]
        if isinstance(value, dict) and "__array__" in value:
            return arrays[value["__array__"]]
        if isinstance(value, dict) and "__dict__" in value:
            return {k: dec(v) for k, v in value["__dict__"]}
        return value

    return Picture(str(spec["renderer"]), tuple(dec(spec["args"])), dec(spec["kwargs"]))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    _pyplot().close(fig)
    return buffer.getvalue()


def confusion_matrix_png(labels: np.ndarray, predicted: np.ndarray,
                         class_names: Sequence[str]) -> bytes:
    """Row-normalised confusion matrix (true class × predicted class) with counts."""
    plt = _pyplot()
    k = len(class_names)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    rates = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    size = max(3.5, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 8:  # per-cell text is most of the drawing time for many classes
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{rates[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center",
                        fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(f"validation confusion (accuracy {np.trace(counts) / max(counts.sum(), 1):.3f})")
    fig.tight_layout()
    return _png(fig)


def roc_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curves: ``name → (score, is_signal, auc)``; signal efficiency vs background
    rejection, as particle physicists plot them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, (score, positive, auc) in curves.items():
        order = np.argsort(-score)
        hits = positive[order]
        tpr = np.cumsum(hits) / max(hits.sum(), 1)
        fpr = np.cumsum(~hits) / max((~hits).sum(), 1)
        ax.plot(tpr, 1 - fpr, label=f"{name.replace('_', ' ')} (AUC {auc:.3f})")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background rejection")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def image_grid_png(rows: Mapping[str, np.ndarray], title: str = "") -> bytes:
    """One row of images per entry (``name → (n, H, W)`` arrays), each image scaled to its
    row's range (so real and generated rows compare by shape, their scales are in the title)."""
    plt = _pyplot()
    n = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 0.6, 1.4 * len(rows) + 0.4),
                             squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        top = float(np.max(images)) if images.size else 1.0
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="viridis", vmin=0, vmax=top if top > 0 else 1.0)
        axes[r, 0].set_ylabel(f"{name}\n(max {top:.3g})", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


#: renderers a deferred picture may name (:func:`later`)
RENDERERS: dict[str, Callable[..., bytes]] = {
    "confusion_matrix": confusion_matrix_png,
    "roc": roc_png,
    "image_grid": image_grid_png,
}
