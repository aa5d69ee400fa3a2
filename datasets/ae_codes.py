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
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datasets import larcv, register
from datasets.base import (
    DataError,
    DatasetSpec,
    DataSplits,
    UpstreamModel,
    atomic_h5,
    cache_dir,
    cache_key,
    memmap_dataset,
    read_h5,
)

VERSION = 2  # 2: images in [-0.95, 0.95]
OPTIONS = {
    **larcv.OPTIONS,
    "ae_experiment": "MLflow experiment of a finished 'ae' search whose best checkpoint encodes "
                     "the images (default: train an 'ae' with its seed configuration now)",
    "ae_epochs": "epochs of the on-the-spot 'ae' (default 10)",
}
IMAGE_OPTIONS = ("size", "data_seed")


def _image_options(options: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in options.items() if k in IMAGE_OPTIONS}


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str],
            upstream: Mapping[str, UpstreamModel] | None = None) -> str:
    """Images (validated/generated), then the stage-one ``ae`` model, then the cached codes."""
    import torch

    larcv.check_options(options, OPTIONS)
    stage = (upstream or {}).get("ae")
    if stage is None:
        raise DataError("ae_codes needs its 'ae' stage, which the search resolves: search the "
                        "'ewm' space (or prepare it with search.stages.prepare_data)")
    image_options = _image_options(options)
    images_path = larcv.prepare(path, samples, seed, image_options)
    stat = os.stat(images_path)
    key = cache_key(v=VERSION, images=images_path, m=stat.st_mtime_ns, source=stage.source,
                    opts=sorted(image_options.items()))
    target = cache_dir() / f"ae-codes-{key}.h5"
    weights = Path(str(target) + ".ae.pt")
    if target.exists() and weights.exists():
        return str(target)
    data = larcv.load(images_path, seed, image_options)
    config, state = stage.weights(data)
    model = stage.build(config, data.info)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"the 'ae' checkpoint does not fit these images ({str(exc)[:160]}); use "
                        "an ae_experiment trained on the same --data and size") from None
    model.eval()
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
    """The images' splits with the codes added (``arrays['codes']``) and the AE described."""
    import dataclasses

    with read_h5(path) as f:
        images_path = str(f.attrs["images"])
        ae_config = json.loads(f.attrs["ae_config"])
    data = larcv.load(images_path, seed, _image_options(options))
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
