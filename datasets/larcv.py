"""Sparse particle images (seed 001): LArCV-like synthetic crops, user image files, the seed's
own PNG crops, 8×8 digits.

HDF5 schema of a user file (contiguous, uncompressed datasets are memory-mapped):

================  ==============  ===============================================
dataset           shape           meaning
================  ==============  ===============================================
``images``        (N, H, W)       non-negative pixel values (charge), any float or int
                  or (N, 1, H, W)
``labels``        (N,)            optional integer topology / class per image
================  ==============  ===============================================

``--data FOLDER`` takes the seed's own crops as they are: a folder of 8-bit greyscale PNGs
(``larcv_png_<N>/larcv_png_<N>/*.png``, any nesting), all of one size, imported once into the
schema above (:func:`import_png_folder`, cached by content): ``images`` (N, H, W) uint8 as
stored in the PNGs, with ``scale`` 255, in the natural order of the files' paths (``img_2``
before ``img_10``). ``labels`` are ImageFolder's classes: the index of each file's first-level
sub-folder of ``FOLDER`` in sorted order (one class for the seed's layout). After the batch
transform below a pixel ``p`` is ``(2 p / 255 - 1) * 0.95``: the seed's ``ToTensor()`` then
``Normalize([0.5], [0.5])`` (its ``LArCV_loader``), times ``TANH_RANGE``. Not reproduced: the
seed's ``RandomHorizontalFlip`` augmentation, and its ``convert('L')`` of colour files (a
colour PNG is refused here rather than silently turned into luma).

``--data digits`` selects scikit-learn's bundled 8×8 handwritten digits (1,797 images, no
download), the real-data stand-in for the seed's MNIST proof of concept. With no ``--data``,
synthetic LArCV-like crops (``datasets/larcv_physics.py``): tracks and showers, centred on the
charge centroid, ≥ 1 % of pixels non-zero, ``--data-option size=32|64``.

Model input, per batch: images divided by a fixed scale (the 99.5th percentile of non-zero
training pixels; 16 for digits, 255 for PNG crops), clipped to [0, 1] and mapped to
[-0.95, 0.95] (the seed's ``Normalize([0.5], [0.5])`` maps to [-1, 1]; see
``datasets.base.TANH_RANGE`` for why not quite), shape (B, 1, H, W).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets import importing, register
from datasets.base import (
    TANH_RANGE,
    DataError,
    DataInfo,
    DatasetSpec,
    DataSplits,
    atomic_h5,
    cache_dir,
    cache_key,
    check_finite,
    check_room,
    int_option,
    memmap_dataset,
    no_such_data,
    open_h5,
    read_h5,
    reject_unknown_options,
    require_dataset,
    split_indices,
)

GENERATOR_VERSION = 1
DEFAULT_SAMPLES = 4000
DIGITS = "digits"
SIZES = ("32", "64")
STATS_IMAGES = 512
OPTIONS = {
    "size": "synthetic crop size in pixels: 32 (default) or 64",
    "data_seed": "seed of the synthetic set and of the train/val/test split (default 0)",
}


PNG_IMPORTER = "larcv-png"
PNG_IMPORT_VERSION = 1
PNG_PATTERNS = ("*.png", "*.PNG")
PNG_WHAT = "PNG crops (larcv_png_<N>/larcv_png_<N>/*.png)"
PNG_SCALE = 255.0  # the seed's ToTensor(): uint8 / 255
PNG_BLOCK = 1024  # images converted per write
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def _data_seed(options: Mapping[str, str]) -> int:
    return int_option(options, "data_seed", 0)


def check_options(options: Mapping[str, str], known: Mapping[str, str] = OPTIONS) -> None:
    reject_unknown_options(options, known)
    if options.get("size", "32") not in SIZES:
        raise DataError(f"--data-option size={options['size']}: use 32 or 64")
    _data_seed(options)


def generate(samples: int, size: int, seed: int, path: os.PathLike[str] | str) -> None:
    """Write synthetic LArCV-like crops (and their topology labels) atomically."""
    from tqdm import tqdm

    from datasets.larcv_physics import simulate_images

    with tqdm(total=samples, desc=f"simulating {size}px LArCV-like images", unit="image") as bar:
        images, labels = simulate_images(samples, size, seed, progress=bar.update)
    with atomic_h5(path) as f:
        f.create_dataset("images", data=images.astype(np.float32))
        f.create_dataset("labels", data=labels.astype(np.int64))
        f.attrs["generator"] = f"scitune larcv v{GENERATOR_VERSION}"


def write_digits(path: os.PathLike[str] | str) -> None:
    """scikit-learn's 8×8 digits (values 0-16) in the image schema."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    with atomic_h5(path) as f:
        f.create_dataset("images", data=digits.images.astype(np.float32))
        f.create_dataset("labels", data=digits.target.astype(np.int64))
        f.attrs["scale"] = 16.0
        f.attrs["source"] = "sklearn.datasets.load_digits"


def validate(path: str) -> int:
    """Check a user image file; return the number of images. Raises DataError."""
    with open_h5(path) as f:
        images = require_dataset(f, "images", path)
        if images.ndim == 4 and images.shape[1] == 1:
            shape = images.shape[2:]
        elif images.ndim == 3:
            shape = images.shape[1:]
        else:
            raise DataError(f"--data {path}: 'images' has shape {images.shape}; expected "
                            "(N, H, W) or (N, 1, H, W)")
        n = images.shape[0]
        if n < 3:
            raise DataError(f"--data {path}: {n} images; need at least 3 for train/val/test")
        if min(shape) < 8:
            raise DataError(f"--data {path}: images are {shape[0]}×{shape[1]}; need at least 8×8")
        if "labels" in f:
            labels = require_dataset(f, "labels", path, ndim=1, integer=True)
            if labels.shape[0] != n:
                raise DataError(f"--data {path}: 'images' has {n} rows but 'labels' has "
                                f"{labels.shape[0]}; they must match")
        check_finite(images, path, "images", chunk_rows=1024)
        for start in range(0, n, 4096):
            if np.asarray(images[start : start + 4096]).min() < 0:
                raise DataError(f"--data {path}: 'images' holds negative values; store "
                                "non-negative charge (subtract pedestals first)")
        return n


def natural_key(path: Path, root: Path | None = None) -> tuple:
    """Sort key of a file: its path (relative to ``root``) with runs of digits compared as
    numbers (``img_2.png`` before ``img_10.png``), ties broken by the plain text."""
    name = path.relative_to(root) if root is not None else path
    parts = tuple(
        tuple(int(chunk) if i % 2 else chunk.lower()
              for i, chunk in enumerate(re.split(r"(\d+)", part)))
        for part in name.parts
    )
    return parts, str(name)


def _read_png(file: Path, source: str) -> np.ndarray:
    """One crop as (H, W) uint8; a file that is not an 8-bit greyscale PNG raises DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            mode = image.mode
            if mode == "L":
                image.load()
                return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"--data {source}: {file} is not a readable PNG ({reason}); remove or "
                        "re-export it") from None
    kind = "colour" if mode in COLOUR_MODES else "not 8-bit greyscale"
    raise DataError(f"--data {source}: {file} is a {kind} PNG (mode {mode!r}); the crops must "
                    "be 8-bit greyscale (mode 'L'): convert them, e.g. with PIL's "
                    "Image.open(f).convert('L').save(f)")


def png_files(path: str) -> list[Path]:
    """The PNG crops under folder ``path``, in natural order of their relative paths."""
    try:
        files = importing.source_files(path, PNG_PATTERNS, PNG_WHAT)
    except DataError as exc:
        root = Path(path)
        if root.is_dir() and next(root.rglob("target_*.npy"), None) is not None:
            raise DataError(f"{exc}; its target_<i>.npy code vectors are EWM targets: "
                            f"--space ewm --data-option codes={path}") from None
        raise
    root = Path(path)
    return sorted(files, key=lambda f: natural_key(f, root))


def _classes(files: Sequence[Path], root: Path) -> tuple[list[str], np.ndarray]:
    """ImageFolder's classes: each file's first-level sub-folder of ``root`` ('' for files
    directly in it), numbered in sorted order."""
    firsts = [f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else ""
              for f in files]
    names = sorted(set(firsts))
    index = {name: i for i, name in enumerate(names)}
    return names, np.asarray([index[name] for name in firsts], dtype=np.int64)


def import_png_folder(path: str) -> str:
    """The cached HDF5 file (module schema, uint8 ``images`` with ``scale`` 255) converted once
    from the folder of 8-bit greyscale PNG crops at ``path``."""
    files = png_files(path)
    root = Path(path)

    def write(out: Any, sources: Sequence[Path]) -> None:
        first = _read_png(sources[0], path)
        height, width = first.shape
        images = out.create_dataset("images", shape=(len(sources), height, width), dtype=np.uint8)
        block = np.empty((min(PNG_BLOCK, len(sources)), height, width), dtype=np.uint8)
        start = 0
        for i, file in enumerate(importing.progress(sources, len(sources),
                                                    "importing PNG crops")):
            pixels = first if i == 0 else _read_png(file, path)
            if pixels.shape != (height, width):
                raise DataError(f"--data {path}: {file} is {pixels.shape[1]}×{pixels.shape[0]} "
                                f"pixels but {sources[0]} is {width}×{height}; all crops must "
                                "have one size: point --data at one larcv_png_<N> folder")
            block[i - start] = pixels
            if i - start + 1 == len(block) or i + 1 == len(sources):
                images[start : i + 1] = block[: i + 1 - start]
                start = i + 1
        names, labels = _classes(sources, root)
        out.create_dataset("labels", data=labels)
        out.attrs["scale"] = PNG_SCALE
        out.attrs["class_names"] = json.dumps(names)
        out.attrs["normalisation"] = ("pixel/255 (ToTensor), then 2x-1 (Normalize([0.5],[0.5])), "
                                      "times TANH_RANGE")

    return importing.import_once(path, files, PNG_IMPORTER, PNG_IMPORT_VERSION, write,
                                 validate)


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str]) -> str:
    """Validate a user's file, import a folder of the seed's PNG crops, write the digits set,
    or generate synthetic crops."""
    check_options(options)
    if path == DIGITS and not os.path.exists(DIGITS):
        target = cache_dir() / "digits-8x8.h5"
        if not target.exists():
            write_digits(target)
        return str(target)
    if path is None:
        if samples < 30:
            raise DataError("--samples must be at least 30 for larcv")
        size = int(options.get("size", "32"))
        data_seed = _data_seed(options)
        key = cache_key(v=GENERATOR_VERSION, n=samples, size=size, seed=data_seed)
        target = cache_dir() / f"larcv{size}-{samples}-{key}.h5"
        if not target.exists():
            # float32 image, int64 label; peak RSS grew 2.0× the file's size (1000 vs 3000 samples)
            check_room(target, samples, size * size * 4 + 8, memory_factor=2.5, fewest=30)
            generate(samples, size, data_seed, target)
        return str(target)
    if not os.path.exists(path):
        raise no_such_data(path, "check the path (or --data digits)")
    if os.path.isdir(path):
        return import_png_folder(path)
    if Path(path).suffix.lower() == ".png":
        raise DataError(f"--data {path}: a single PNG crop; point --data at the folder that "
                        "holds the crops (larcv_png_<N>/larcv_png_<N>/*.png)")
    if Path(path).suffix.lower() == ".npy":
        raise DataError(f"--data {path}: a .npy file, not images; code vectors (target_<i>.npy) "
                        "are EWM targets: --space ewm --data-option codes=FOLDER")
    labelled = importing.integer_labels(path, validate)  # validated when it was made
    if labelled == path:
        validate(path)
    return os.path.abspath(labelled)


class ImageTransform:
    """Stored rows → (B, 1, H, W) float32 in [-0.95, 0.95] (see the module doc)."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, rows: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
        x = (np.clip(rows.astype(np.float32) / self.scale, 0.0, 1.0) * 2.0 - 1.0) * TANH_RANGE
        if x.ndim == 3:
            x = x[:, None]
        return np.ascontiguousarray(x)


def image_scale(images: np.ndarray, train: np.ndarray, stored: float | None) -> float:
    """The fixed divisor that maps charge to [0, 1]."""
    if stored:
        return float(stored)
    sample = np.asarray(images[np.sort(train[:STATS_IMAGES])], dtype=np.float64)
    lit = sample[sample > 0]
    return float(np.percentile(lit, 99.5)) if lit.size else 1.0


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    """Memory-map the images; seeded split; per-batch scaling to [-1, 1]."""
    images = memmap_dataset(path, "images")
    with read_h5(path) as f:
        stored_scale = f.attrs.get("scale")
        labels = np.asarray(f["labels"][()], dtype=np.int64) if "labels" in f \
            else np.zeros(images.shape[0], dtype=np.int64)
    train, val, test = split_indices(images.shape[0], _data_seed(options))
    scale = image_scale(images, train, stored_scale)
    transform = ImageTransform(scale)
    height, width = images.shape[-2:]
    mean_input = float(transform(np.asarray(images[np.sort(train[:STATS_IMAGES])]), {}).mean())
    info = DataInfo(input_shape=(1, height, width), num_classes=int(labels.max()) + 1,
                    extra={"scale": scale, "mean_input": mean_input})
    return DataSplits({"x": images, "y": labels}, train, val, test, info, source=path,
                      transforms={"x": transform})


register(DatasetSpec(
    name="larcv", prepare=prepare, load=load,
    description="sparse particle images: LArCV-like tracks/showers (default) or --data digits",
    options=OPTIONS, default_samples=DEFAULT_SAMPLES,
))
