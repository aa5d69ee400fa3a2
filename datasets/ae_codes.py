"""Auto-encoder codes of the particle images: the finite target set of the two-stage ``ewm``.

Stage one is an ``ae`` model, resolved by the search layer (:mod:`search.stages`, declared
by the ``ewm`` space) and handed over as ``upstream["ae"]``: either

- ``--data-option ae_experiment=NAME``: the best checkpoint of an earlier ``ae`` search, read
  back from the parent run of MLflow experiment ``NAME`` in the same tracking store
  (``best_config.json`` and ``best_checkpoint.pt``); or
- by default, an ``ae`` trained on the spot with its seed configuration for ``ae_epochs``
  epochs (default 10) on the training split, on the driver, before any trial starts.

Every image is then encoded (in the model's [-1, 1] input space, as the seed's code-vector
notebook did) and the codes are cached as ``codes`` (N, code size) beside the AE weights
(``*.ae.pt``, loaded with ``weights_only=True``). Trials read the images (``datasets/larcv.py``)
and the codes through memory maps, with the same train/val/test split; the EWM targets are
the training codes, and the AE decoder turns generated codes into images for evaluation.

``--data-option codes=FOLDER`` takes the EWM target set from the seed's own code vectors
instead: a folder (any nesting; the seed's ``code_vectors_<D>_<L>/code_vectors_<D>_<L>/``) of
``target_<i>.npy`` files, each (1, l_dim) (or (l_dim,)), numbered without gaps. They are
imported once (:func:`import_code_vectors`, cached by content) as ``codes`` (M, l_dim) float32
in index order, and become ``targets`` (M, l_dim) of the prepared file and
``arrays['targets']`` after :func:`load`: all M vectors are the targets
(``info.extra['targets'] == M``), and the images' own codes are not computed (``arrays`` has no
``codes``). The ``ae`` stage is still needed, for its decoder: its code size must be l_dim,
and the vectors are taken to be codes of its encoder (printed as an assumption), so pass
``ae_experiment`` naming the search whose encoder made them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets import importing, larcv, register
from datasets.base import (
    DataError,
    DatasetSpec,
    DataSplits,
    UpstreamModel,
    atomic_h5,
    cache_dir,
    cache_key,
    check_finite,
    memmap_dataset,
    open_h5,
    read_h5,
    require_dataset,
)

VERSION = 2  # 2: images in [-0.95, 0.95]
OPTIONS = {
    **larcv.OPTIONS,
    "ae_experiment": "MLflow experiment of a finished 'ae' search whose best checkpoint encodes "
                     "the images (default: train an 'ae' with its seed configuration now)",
    "ae_epochs": "epochs of the on-the-spot 'ae' (default 10)",
    "codes": "folder of the seed's code vectors (target_<i>.npy, each (1, l_dim)) to use as the "
             "EWM targets (default: the AE codes of the training images)",
}
IMAGE_OPTIONS = ("size", "data_seed")
CODES_IMPORTER = "ewm-codes"
CODES_IMPORT_VERSION = 1
CODE_FILE = re.compile(r"target_(\d+)\.npy")
CODES_WHAT = "code vectors (code_vectors_<D>_<L>/.../target_<i>.npy)"


def _image_options(options: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in options.items() if k in IMAGE_OPTIONS}


def code_files(folder: str) -> list[Path]:
    """The ``target_<i>.npy`` files under ``folder``, in index order; a missing folder, no
    such files, an index found twice or a gap in the indices raises DataError."""
    where = f"--data-option codes={folder}"
    root = Path(folder)
    if not root.exists():
        raise DataError(f"{where}: no such folder; check the path")
    if not root.is_dir():
        raise DataError(f"{where}: not a folder; point it at the folder that holds the "
                        "target_<i>.npy files")
    numbered: dict[int, Path] = {}
    for file in sorted(root.rglob("target_*.npy")):
        match = CODE_FILE.fullmatch(file.name)
        if match is None or not file.is_file():
            continue
        index = int(match.group(1))
        if index in numbered:
            raise DataError(f"{where}: {numbered[index]} and {file} both hold target {index}; "
                            "keep one folder of code vectors")
        numbered[index] = file
    if not numbered:
        raise DataError(f"{where}: a folder with no {CODES_WHAT} in it; point it at the folder "
                        "that holds them")
    order = sorted(numbered)
    for expected, index in enumerate(order, start=order[0]):
        if index != expected:
            raise DataError(f"{where}: target_{expected}.npy is missing (the folder has "
                            f"target_{order[0]} to target_{order[-1]}); copy the whole folder")
    return [numbered[i] for i in order]


def _read_code(file: Path, folder: str) -> np.ndarray:
    """One code vector as a flat float array (DataError naming ``file`` if it is not one)."""
    try:
        vector = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"--data-option codes={folder}: {file} is not a readable .npy file "
                        f"({reason}); remove or regenerate it") from None
    if not isinstance(vector, np.ndarray) or vector.dtype.kind not in "fiu" or not (
            vector.ndim == 1 or (vector.ndim == 2 and vector.shape[0] == 1)) or vector.size == 0:
        shape = getattr(vector, "shape", "?")
        dtype = getattr(vector, "dtype", type(vector).__name__)
        raise DataError(f"--data-option codes={folder}: {file} holds {dtype} of shape {shape}; "
                        "each code vector must be numbers of shape (1, l_dim)")
    return vector.reshape(-1)


def validate_codes(path: str) -> int:
    """Check an imported code-vector file; return the number of vectors. Raises DataError."""
    with open_h5(path) as f:
        codes = require_dataset(f, "codes", path, ndim=2)
        if codes.shape[0] < 2:
            raise DataError(f"--data-option codes={path}: {codes.shape[0]} code vector; EWM "
                            "needs at least 2 targets")
        check_finite(codes, path, "codes")
        return int(codes.shape[0])


def import_code_vectors(folder: str) -> str:
    """The cached HDF5 file (``codes`` (M, l_dim) float32, index order) converted once from the
    folder of the seed's ``target_<i>.npy`` code vectors."""
    files = code_files(folder)

    def write(out: Any, sources: Sequence[Path]) -> None:
        first = _read_code(sources[0], folder)
        codes = out.create_dataset("codes", shape=(len(sources), first.size), dtype=np.float32)
        block: list[np.ndarray] = []
        start = 0
        for i, file in enumerate(importing.progress(sources, len(sources),
                                                    "importing code vectors")):
            vector = first if i == 0 else _read_code(file, folder)
            if vector.size != first.size:
                raise DataError(f"--data-option codes={folder}: {file} has {vector.size} values "
                                f"but {sources[0]} has {first.size}; all code vectors must have "
                                "one l_dim: keep only the vectors of one auto-encoder")
            if not np.isfinite(vector).all():
                raise DataError(f"--data-option codes={folder}: {file} holds NaN or inf; "
                                "regenerate it")
            block.append(vector)
            if len(block) == 4096 or i + 1 == len(sources):
                codes[start : i + 1] = np.stack(block).astype(np.float32)
                start, block = i + 1, []
        index = CODE_FILE.fullmatch(sources[0].name)
        out.attrs["first_index"] = int(index.group(1)) if index else 0
        out.attrs["l_dim"] = int(first.size)

    return importing.import_once(folder, files, CODES_IMPORTER, CODES_IMPORT_VERSION, write,
                                 validate_codes)


def _load_stage(stage: UpstreamModel, data: DataSplits) -> tuple[dict[str, Any], dict, Any]:
    """The ``ae`` stage's (config, state, model in eval mode) for ``data``."""
    config, state = stage.weights(data)
    model = stage.build(config, data.info)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"the 'ae' checkpoint does not fit these images ({str(exc)[:160]}); use "
                        "an ae_experiment trained on the same --data and size") from None
    return config, state, model.eval()


def _write_external(target: Path, weights: Path, codes_path: str, folder: str, images_path: str,
                    stage: UpstreamModel, config: Mapping[str, Any], state: dict, model: Any
                    ) -> str:
    """The prepared file whose EWM targets are the imported code vectors."""
    import torch

    code_size = int(model.code_shape[0])
    with read_h5(codes_path) as f:
        vectors = np.asarray(f["codes"][()], dtype=np.float32)
    if vectors.shape[1] != code_size:
        raise DataError(f"--data-option codes={folder}: the code vectors have {vectors.shape[1]} "
                        f"values but the 'ae' stage ({stage.source}) makes codes of "
                        f"{code_size}; pass --data-option ae_experiment=NAME of the ae search "
                        f"(l_dim {vectors.shape[1]}) whose encoder made them")
    torch.save(state, weights)
    with atomic_h5(target) as f:
        f.create_dataset("targets", data=vectors)
        f.attrs["images"] = images_path
        f.attrs["ae_config"] = json.dumps(dict(config))
        f.attrs["ae_source"] = stage.source
        f.attrs["targets_from"] = os.path.abspath(folder)
    return str(target)


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str],
            upstream: Mapping[str, UpstreamModel] | None = None) -> str:
    """Images (validated/imported/generated), then the stage-one ``ae`` model, then the cached
    codes (or the imported ``--data-option codes`` vectors as the targets)."""
    import torch

    larcv.check_options(options, OPTIONS)
    folder = options.get("codes")
    codes_path = import_code_vectors(folder) if folder else None
    stage = (upstream or {}).get("ae")
    if stage is None:
        raise DataError("ae_codes needs its 'ae' stage, which the search resolves: search the "
                        "'ewm' space (or prepare it with search.stages.prepare_data)")
    if folder:
        importing.assume(f"the code vectors in {folder} are codes of the 'ae' stage's encoder "
                         f"({stage.source}): its decoder turns generated codes into images for "
                         "val_quality; --data-option ae_experiment=NAME names the ae search that "
                         "made them")
    image_options = _image_options(options)
    images_path = larcv.prepare(path, samples, seed, image_options)
    stat = os.stat(images_path)
    extra_key = {"targets": codes_path} if codes_path else {}
    key = cache_key(v=VERSION, images=images_path, m=stat.st_mtime_ns, source=stage.source,
                    opts=sorted(image_options.items()), **extra_key)
    target = cache_dir() / f"ae-codes-{key}.h5"
    weights = Path(str(target) + ".ae.pt")
    if target.exists() and weights.exists():
        return str(target)
    data = larcv.load(images_path, seed, image_options)
    config, state, model = _load_stage(stage, data)
    if codes_path and folder:
        return _write_external(target, weights, codes_path, folder, images_path, stage, config,
                               state, model)
    everything = np.arange(data.arrays["x"].shape[0])
    codes = []
    with torch.no_grad():
        for start in range(0, len(everything), 512):
            x = torch.from_numpy(data.batch("x", everything[start : start + 512], config))
            codes.append(model.encode(x).numpy().astype(np.float32))
    torch.save(state, weights)
    with atomic_h5(target) as f:
        f.create_dataset("codes", data=np.concatenate(codes))
        f.attrs["images"] = images_path
        f.attrs["ae_config"] = json.dumps(config)
        f.attrs["ae_source"] = stage.source
    return str(target)


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    """The images' splits with the codes added (``arrays['codes']``, or the imported
    ``arrays['targets']``) and the AE described."""
    import dataclasses

    with read_h5(path) as f:
        images_path = str(f.attrs["images"])
        ae_config = json.loads(f.attrs["ae_config"])
        external = "targets" in f
        targets_from = str(f.attrs.get("targets_from", ""))
    data = larcv.load(images_path, seed, _image_options(options))
    if external:  # --data-option codes: all imported vectors are the targets
        targets = memmap_dataset(path, "targets")
        extra = dict(data.info.extra, ae_config=ae_config, ae_state_path=str(path) + ".ae.pt",
                     targets=int(targets.shape[0]), code_dim=int(targets.shape[1]),
                     targets_from=targets_from)
        info = dataclasses.replace(data.info, extra=extra)
        return dataclasses.replace(data, arrays={**data.arrays, "targets": targets}, info=info,
                                   source=path)
    codes = memmap_dataset(path, "codes")
    extra = dict(data.info.extra, ae_config=ae_config, ae_state_path=str(path) + ".ae.pt",
                 targets=len(data.train), code_dim=int(codes.shape[1]))
    info = dataclasses.replace(data.info, extra=extra)
    return dataclasses.replace(data, arrays={**data.arrays, "codes": codes}, info=info,
                               source=path)


register(DatasetSpec(
    name="ae_codes", prepare=prepare, load=load,
    description="AE codes of particle images (targets of the two-stage ewm)",
    options=OPTIONS, default_samples=larcv.DEFAULT_SAMPLES,
))
