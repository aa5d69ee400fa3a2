"""The Particle Generator seed's own files (seed 001) given as they are.

Images: folders of 8-bit greyscale PNG crops, ``larcv_png_<N>/larcv_png_<N>/*.png``, which the
seed reads with its ``LArCV_loader`` (``Image.open(f).convert('L')``) and
``ToTensor()`` + ``Normalize([0.5], [0.5])``, i.e. a pixel p becomes (p / 255 - 0.5) / 0.5.
EWM targets: folders of code vectors ``code_vectors_<D>_<L>/.../target_<i>.npy``, each
(1, l_dim). The files here are written with Pillow and numpy directly, and the expected model
input is computed here from the seed's definition, not by the module under test (which maps
to [-TANH_RANGE, TANH_RANGE] rather than [-1, 1]: see datasets.base.TANH_RANGE)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from datasets import get_dataset
from datasets.base import TANH_RANGE, DataError, UpstreamModel

LARCV = get_dataset("larcv")
CODES = get_dataset("ae_codes")
SIZE = 16


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))


def crops(n: int, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    """Sparse uint8 crops, every one different (pixel (0, 0) holds its number)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        image = (rng.integers(1, 256, (size, size)) * (rng.random((size, size)) < 0.15))
        image[0, 0] = k + 1
        out.append(image.astype(np.uint8))
    return out


def write_pngs(folder: Path, images: list[np.ndarray], names: list[str] | None = None) -> Path:
    """``images`` as 8-bit greyscale PNGs ``img_<k>.png`` in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        png = Image.fromarray(image)
        assert png.mode == "L"
        png.save(folder / (names[k] if names else f"img_{k}.png"))
    return folder


def seed_layout(root: Path, images: list[np.ndarray], size: int = SIZE) -> Path:
    """The seed's layout ``larcv_png_<N>/larcv_png_<N>/img_<k>.png``; returns the outer folder
    (what the seed's ``--data_root`` + ``larcv_png_<N>/`` names)."""
    outer = root / f"larcv_png_{size}"
    write_pngs(outer / f"larcv_png_{size}", images)
    return outer


def seed_input(image: np.ndarray) -> np.ndarray:
    """The seed's model input of one crop: ToTensor (uint8 / 255) then Normalize([0.5], [0.5])."""
    return (image.astype(np.float64) / 255.0 - 0.5) / 0.5


def test_png_crops_give_the_seeds_normalised_pixels_in_natural_order(tmp_path):
    images = crops(12)
    source = seed_layout(tmp_path, images)
    path = LARCV.prepare(str(source), 0, 0, {})
    data = LARCV.load(path, 0, {})
    assert data.info.input_shape == (1, SIZE, SIZE)
    everything = np.arange(len(images))
    x = data.batch("x", everything, {})
    assert x.shape == (12, 1, SIZE, SIZE) and x.dtype == np.float32
    # row k is img_<k> (natural order: img_2 before img_10), scaled as the seed scales it
    expected = np.stack([seed_input(image) for image in images])[:, None] * TANH_RANGE
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert x.min() >= -TANH_RANGE - 1e-6 and x.max() <= TANH_RANGE + 1e-6
    with h5py.File(path, "r") as f:
        assert f.attrs["imported_from"] == os.path.abspath(source)
        assert f.attrs["importer"].startswith("larcv-png")
    assert LARCV.prepare(str(source), 0, 0, {}) == path  # imported once, then cached
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(
        source / f"larcv_png_{SIZE}" / "img_3.png")
    changed = LARCV.prepare(str(source), 0, 0, {})
    assert changed != path
    np.testing.assert_allclose(LARCV.load(changed, 0, {}).batch("x", np.array([3]), {}),
                               np.full((1, 1, SIZE, SIZE), -TANH_RANGE), atol=1e-6)


def test_png_crops_at_any_depth_and_their_image_folder_classes(tmp_path):
    # the inner folder itself (PNGs at the top) is read as well as the seed's outer folder
    images = crops(5, seed=1)
    inner = write_pngs(tmp_path / "flat", images)
    data = LARCV.load(LARCV.prepare(str(inner), 0, 0, {}), 0, {})
    np.testing.assert_allclose(data.batch("x", np.arange(5), {})[:, 0],
                               np.stack([seed_input(i) for i in images]) * TANH_RANGE, atol=1e-6)
    # two class folders: ImageFolder's labels (sorted folder names), files in natural order
    tracks, showers = crops(4, seed=2), crops(3, seed=3)
    root = tmp_path / "classes"
    write_pngs(root / "b_tracks" / "deep", tracks)
    write_pngs(root / "a_showers", showers, [f"img_{k}.png" for k in (9, 10, 100)])
    data = LARCV.load(LARCV.prepare(str(root), 0, 0, {}), 0, {})
    assert data.info.num_classes == 2
    np.testing.assert_array_equal(data.arrays["y"], [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(np.asarray(data.arrays["x"]), np.stack(showers + tracks))


def test_colour_mixed_sizes_and_empty_folders_are_refused_naming_the_file(tmp_path):
    cache = tmp_path / "cache" / "datasets"
    colour = seed_layout(tmp_path / "colour", crops(6))
    bad = colour / f"larcv_png_{SIZE}" / "img_4.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(bad)
    with pytest.raises(DataError, match=r"img_4\.png is a colour PNG \(mode 'RGB'\).*mode 'L'"):
        LARCV.prepare(str(colour), 0, 0, {})
    mixed = seed_layout(tmp_path / "mixed", crops(6))
    write_pngs(mixed / f"larcv_png_{SIZE}", [np.zeros((SIZE * 2, SIZE), np.uint8)],
               ["img_7.png"])
    with pytest.raises(DataError, match=r"img_7\.png is 16×32 pixels.*one size"):
        LARCV.prepare(str(mixed), 0, 0, {})
    assert not list(cache.glob("larcv-png-*"))  # a refused import leaves no cache entry
    empty = tmp_path / "empty" / f"larcv_png_{SIZE}" / f"larcv_png_{SIZE}"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("no crops here")
    with pytest.raises(DataError, match=r"empty/larcv_png_16: a folder with no PNG crops"):
        LARCV.prepare(str(tmp_path / "empty" / f"larcv_png_{SIZE}"), 0, 0, {})
    with pytest.raises(DataError, match=r"img_0\.png: a single PNG crop; point --data at the folder"):
        LARCV.prepare(str(colour / f"larcv_png_{SIZE}" / "img_0.png"), 0, 0, {})
    broken = seed_layout(tmp_path / "broken", crops(4))
    (broken / f"larcv_png_{SIZE}" / "img_2.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"img_2\.png is not a readable PNG"):
        LARCV.prepare(str(broken), 0, 0, {})


def write_codes(folder: Path, vectors: np.ndarray | list[np.ndarray]) -> Path:
    """``target_<i>.npy`` files, each (1, l_dim), as the seed's code-target notebook saves them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, vector in enumerate(vectors):
        np.save(folder / f"target_{i}.npy", np.asarray(vector)[None] if np.ndim(vector) == 1
                else np.asarray(vector))
    return folder


def ae_stage(l_dim: int) -> UpstreamModel:
    """An untrained seed-configuration ``ae`` with code size ``l_dim`` (no search, no MLflow)."""
    from search_spaces.particle_generator import AE_SEED
    from trainables.particle_generator import build_autoencoder

    config = dict(AE_SEED, l_dim=l_dim)
    return UpstreamModel(space="ae", source=f"test ae l_dim {l_dim}",
                         weights=lambda data: (config, build_autoencoder(config, data.info)
                                               .state_dict()),
                         build=build_autoencoder)


def test_code_vectors_become_the_ewm_targets_in_index_order(tmp_path):
    from search_spaces import get_space

    images = seed_layout(tmp_path, crops(9))
    vectors = np.random.default_rng(4).normal(size=(12, 5)).astype(np.float32)
    folder = write_codes(tmp_path / "code_vectors_16_5" / "code_vectors_16_5", vectors)
    options = {"codes": str(tmp_path / "code_vectors_16_5")}
    path = CODES.prepare(str(images), 0, 0, options, upstream={"ae": ae_stage(5)})
    data = CODES.load(path, 0, options)
    targets = np.asarray(data.arrays["targets"])
    np.testing.assert_array_equal(targets, vectors)  # target_10, target_11 after target_9
    assert data.info.extra["targets"] == 12 and data.info.extra["code_dim"] == 5
    assert data.info.extra["targets_from"] == os.path.abspath(folder.parent)
    assert "codes" not in data.arrays  # the images' own codes are not the targets here
    assert data.arrays["x"].shape == (9, SIZE, SIZE)
    model = get_space("ewm").build(dict(get_space("ewm").seed_config), data.info)
    assert model.psi.shape == (12,)
    assert model.generator[-1].out_features == 5
    # float64 vectors are kept as float32 values
    wide = write_codes(tmp_path / "wide", vectors.astype(np.float64) / 3.0)
    again = CODES.load(CODES.prepare(str(images), 0, 0, {"codes": str(wide)},
                                     upstream={"ae": ae_stage(5)}), 0, {})
    np.testing.assert_array_equal(again.arrays["targets"],
                                  (vectors.astype(np.float64) / 3.0).astype(np.float32))


def test_inconsistent_code_vectors_are_refused_naming_the_file(tmp_path):
    images = seed_layout(tmp_path, crops(6))
    stage = {"ae": ae_stage(5)}
    rng = np.random.default_rng(5)
    mixed = [rng.normal(size=5) for _ in range(8)]
    mixed[6] = rng.normal(size=7)
    folder = write_codes(tmp_path / "mixed", mixed)
    with pytest.raises(DataError, match=r"target_6\.npy has 7 values but .*target_0\.npy has 5"):
        CODES.prepare(str(images), 0, 0, {"codes": str(folder)}, upstream=stage)
    assert not list((tmp_path / "cache" / "datasets").glob("ewm-codes-*"))
    square = write_codes(tmp_path / "square", [rng.normal(size=5) for _ in range(4)])
    np.save(square / "target_2.npy", rng.normal(size=(2, 5)))
    with pytest.raises(DataError, match=r"target_2\.npy holds float64 of shape \(2, 5\)"):
        CODES.prepare(str(images), 0, 0, {"codes": str(square)}, upstream=stage)
    gap = write_codes(tmp_path / "gap", [rng.normal(size=5) for _ in range(5)])
    (gap / "target_3.npy").unlink()
    with pytest.raises(DataError, match=r"target_3\.npy is missing"):
        CODES.prepare(str(images), 0, 0, {"codes": str(gap)}, upstream=stage)
    with pytest.raises(DataError, match=r"codes=.*nowhere: no such folder"):
        CODES.prepare(str(images), 0, 0, {"codes": str(tmp_path / "nowhere")}, upstream=stage)
    empty = tmp_path / "no_codes"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no_codes: a folder with no code vectors"):
        CODES.prepare(str(images), 0, 0, {"codes": str(empty)}, upstream=stage)
    # vectors of another l_dim than the 'ae' stage's code: refused, naming the fix
    fine = write_codes(tmp_path / "fine", [rng.normal(size=5) for _ in range(4)])
    with pytest.raises(DataError, match=r"have 5 values but the 'ae' stage .* codes of 3; pass "
                                        r"--data-option ae_experiment"):
        CODES.prepare(str(images), 0, 0, {"codes": str(fine)}, upstream={"ae": ae_stage(3)})
    # the code vectors given as --data get a pointer to the option
    with pytest.raises(DataError, match=r"--data-option codes="):
        LARCV.prepare(str(fine), 0, 0, {})


def test_ewm_trains_on_external_code_vectors(tmp_path):
    """One EWM epoch through the platform's loop with the seed's code vectors as its target
    set: the dual potential has one entry per vector and the transport runs on them."""
    from search.stages import prepare_data
    from search_spaces import registry
    from trainables.loop import FitSettings, fit

    space = registry()["ewm"]
    vectors = np.random.default_rng(3).normal(size=(30, 20)).astype(np.float32)
    folder = write_codes(tmp_path / "code_vectors_64_20", list(vectors))
    options = {"codes": str(folder)}
    data = get_dataset(space.dataset).load(prepare_data(space, None, 64, 0, options), 0, options)
    np.testing.assert_array_equal(np.asarray(data.arrays["targets"]), vectors)
    config = dict(space.seed_config, mem_size=4)
    fitted = fit(space, config, data, FitSettings(max_epochs=1, seed=0, figure_every=0))
    assert fitted.model.psi.shape == (30,)
    assert np.isfinite(fitted[space.metric]) and fitted.model.psi.detach().abs().sum() > 0
