"""Deferred pictures: a kind's picture travels beside the checkpoint as arrays and a JSON spec
(no pickle) and is drawn where it is logged; what goes in draws the same PNG as drawing it
in the trial would."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from trainables import figures
from trainables.checkpoint import FIGURES_DIR, save_state
from trainables.loop import FIGURES_KEY

PNG = b"\x89PNG\r\n\x1a\n"
rng = np.random.default_rng(0)
CASES = {
    "confusion_matrix": ((rng.integers(0, 5, 200), rng.integers(0, 5, 200),
                          ["aP", "mP", "mC", "oP", "cF"]), {}),
    "roc": (({"e_vs_mu": (rng.random(300), rng.random(300) > 0.5, 0.61),
              "class_1": (rng.random(50).astype(np.float32), rng.random(50) > 0.2, 0.5)},), {}),
    "image_grid": (({"real": rng.random((4, 8, 8)), "generated": torch.rand(4, 8, 8)},),
                   {"title": "validation vs generated"}),
}


def test_every_renderer_has_a_case():
    assert set(CASES) == set(figures.RENDERERS)


@pytest.mark.parametrize("renderer", sorted(CASES))
def test_a_deferred_picture_round_trips_and_draws_what_drawing_now_would(renderer):
    args, kwargs = CASES[renderer]
    picture = figures.later(renderer, *args, **kwargs)
    back = figures.decode_picture(figures.encode_picture(picture))
    assert back.renderer == renderer
    drawn_later = back.png()
    plain = [{k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
             if isinstance(a, dict) else a for a in args]
    drawn_now = figures.RENDERERS[renderer](*plain, **kwargs)
    assert drawn_later.startswith(PNG)
    assert drawn_later == drawn_now, "the decoded arguments must draw the same picture"


def test_unknown_renderers_and_pickles_are_refused():
    with pytest.raises(ValueError, match="no picture renderer 'pie'"):
        figures.later("pie", [1, 2])
    forged = figures.Picture("os.system", ("echo",))
    with pytest.raises(ValueError, match="no picture renderer 'os.system'"):
        figures.decode_picture(figures.encode_picture(forged)).png()
    buffer = io.BytesIO()  # an object array needs pickle: np.load(allow_pickle=False) refuses
    np.savez(buffer, __spec__=np.array('{"renderer": "roc", "args": [], "kwargs": {}}'),
             a0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        figures.decode_picture(buffer.getvalue())
    with pytest.raises(TypeError, match="cannot hold a set"):
        figures.encode_picture(figures.later("roc", {1, 2}))


def test_save_state_writes_deferred_pictures_and_draws_what_a_file_cannot_hold(tmp_path):
    good = figures.later("confusion_matrix", *CASES["confusion_matrix"][0])
    odd = figures.Picture("roc", ({"c": (np.arange(5.0), np.arange(5) > 2, 0.5)},),
                          {})
    class Title:
        def __str__(self) -> str:
            return "a title object"

    drawable = figures.Picture("image_grid", ({"real": np.ones((2, 4, 4))},),
                               {"title": Title()})  # a file cannot hold it, the trial draws it
    broken = figures.Picture("image_grid", ({"real": np.ones((2, 4, 4))},),
                             {"colours": {1, 2}})  # neither storable nor drawable: skipped
    state = {"model": {"w": torch.zeros(2)},
             FIGURES_KEY: {"cm": good, "roc": odd, "raw": PNG + b"rest", "titled": drawable,
                           "broken": broken}}
    save_state(state, str(tmp_path))
    names = sorted(p.name for p in (tmp_path / FIGURES_DIR).iterdir())
    assert names == ["cm.picture.npz", "raw.png", "roc.picture.npz", "titled.png"]
    assert (tmp_path / FIGURES_DIR / "raw.png").read_bytes() == PNG + b"rest"
    assert (tmp_path / FIGURES_DIR / "titled.png").read_bytes().startswith(PNG)
    assert (tmp_path / "checkpoint.pt").exists(), "a picture must never cost the checkpoint"


def test_a_damaged_picture_file_is_skipped_not_fatal(tmp_path, capsys):
    """The driver reads pictures from each checkpoint; a truncated or forged file (a driver
    killed mid-copy) is skipped with a warning, never an error that would fail the trial."""
    from ray.train import Checkpoint

    from tracking.tracker import read_figures

    good = figures.later("confusion_matrix", *CASES["confusion_matrix"][0])
    save_state({"model": {}, FIGURES_KEY: {"cm": good, "roc": good}}, str(tmp_path))
    damaged = tmp_path / FIGURES_DIR / "roc.picture.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    (tmp_path / FIGURES_DIR / "junk.picture.npz").write_bytes(b"not a zip")
    pictures = read_figures(Checkpoint.from_directory(str(tmp_path)))
    assert set(pictures) == {"cm.png"}
    assert figures.as_png(pictures["cm.png"]).startswith(PNG)
    assert capsys.readouterr().err.count("not a picture") == 2
