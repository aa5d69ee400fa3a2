"""Pictures the task kinds attach to checkpoints (rendered in the trial, logged by the driver).

Each function returns PNG bytes, so a picture travels with the checkpoint to wherever the
experiment is stored, and the driver logs it to the trial's MLflow run.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np


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
