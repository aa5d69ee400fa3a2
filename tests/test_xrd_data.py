"""XRD data: schema checks with one clear error each, memory-mapped reading, the seed importer."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.base import DataError
from tests.conftest import run_cli

SPEC = get_dataset("xrd")


def write_h5(path, **datasets):
    attrs = datasets.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
        f.attrs.update(attrs)
    return str(path)


def good_arrays(n=30, length=128):
    rng = np.random.default_rng(0)
    return {"patterns": rng.random((n, length), dtype=np.float32),
            "labels": rng.integers(0, 14, n)}


def test_a_valid_user_file_is_read_through_a_memory_map(tmp_path):
    path = write_h5(tmp_path / "ok.h5", **good_arrays())
    resolved = SPEC.prepare(path, 0, 0, {})
    data = SPEC.load(resolved, 0, {})
    assert isinstance(data.arrays["x"], np.memmap)
    assert data.info.input_shape == (1, 128) and data.info.num_classes == 14
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert not set(data.train) & set(data.val) and not set(data.val) & set(data.test)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(np.asarray(data.arrays["x"]), f["patterns"][()])


def test_crystal_system_labels_from_a_bravais_file(tmp_path):
    arrays = good_arrays()
    path = write_h5(tmp_path / "ok.h5", **arrays)
    data = SPEC.load(SPEC.prepare(path, 0, 0, {"labels": "crystal_system"}), 0,
                     {"labels": "crystal_system"})
    assert data.info.num_classes == 7
    from datasets.xrd_physics import BRAVAIS_TO_SYSTEM

    np.testing.assert_array_equal(data.arrays["y"], BRAVAIS_TO_SYSTEM[arrays["labels"]])


BAD_FILES = {
    "missing patterns": ({"labels": np.zeros(5, int)}, "missing dataset 'patterns'"),
    "missing labels": ({"patterns": np.zeros((5, 128), np.float32)}, "missing dataset 'labels'"),
    "wrong rank": ({"patterns": np.zeros((5, 1, 128), np.float32), "labels": np.zeros(5, int)},
                   "expected 2 dimensions"),
    "non-numeric": ({"patterns": np.array([[b"a"] * 128] * 5), "labels": np.zeros(5, int)},
                    "non-numeric"),
    "fractional labels": ({"patterns": np.zeros((5, 128), np.float32),
                           "labels": np.array([0, 1, 2.5, 3, 4])},
                          r"holds 2.5 \(row 2\); class labels are whole numbers"),
    "nan": ({"patterns": np.full((5, 128), np.nan, np.float32), "labels": np.zeros(5, int)},
            "NaN or inf"),
    "inf": ({"patterns": np.where(np.eye(5, 128) > 0, np.inf, 0).astype(np.float32),
             "labels": np.zeros(5, int)}, "NaN or inf"),
    "labels out of range": ({"patterns": np.zeros((5, 128), np.float32),
                             "labels": np.array([0, 1, 2, 3, 14])}, "outside 0..13"),
    "zero samples": ({"patterns": np.zeros((0, 128), np.float32), "labels": np.zeros(0, int)},
                     "zero samples"),
    "mismatched lengths": ({"patterns": np.zeros((5, 128), np.float32),
                            "labels": np.zeros(4, int)}, "must match"),
    "transposed": ({"patterns": np.zeros((128, 5), np.float32), "labels": np.zeros(5, int)},
                   r"looks transposed, one pattern per column: store it as \(5, 128\)"),
    "too short": ({"patterns": np.zeros((5, 8), np.float32), "labels": np.zeros(5, int)},
                  "at least"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_schema_errors_name_the_problem(case, tmp_path):
    arrays, message = BAD_FILES[case]
    path = write_h5(tmp_path / "bad.h5", **arrays)
    with pytest.raises(DataError, match=message):
        SPEC.prepare(path, 0, 0, {})


def test_not_hdf5_truncated_and_missing_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        SPEC.prepare(str(text), 0, 0, {})
    good = write_h5(tmp_path / "good.h5", **good_arrays(200, 512))
    blob = open(good, "rb").read()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DataError, match="damaged or truncated|missing dataset"):
        SPEC.prepare(str(truncated), 0, 0, {})
    with pytest.raises(DataError, match="no such file"):
        SPEC.prepare(str(tmp_path / "absent.h5"), 0, 0, {})


def test_seed_torch_format_is_imported(tmp_path):
    x = torch.rand(40, 1, 300)
    y = torch.nn.functional.one_hot(torch.arange(40) % 14, 14)
    path = tmp_path / "tag_Train.pt"
    torch.save({"X": x, "Y": y}, path)
    data = SPEC.load(SPEC.prepare(str(path), 0, 0, {}), 0, {})
    assert data.info.input_shape == (1, 300)
    np.testing.assert_allclose(np.asarray(data.arrays["x"]), x[:, 0].numpy())
    np.testing.assert_array_equal(data.arrays["y"], (torch.arange(40) % 14).numpy())


class Payload:
    """An arbitrary object: unpickling it must be refused."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_seed_torch_file_with_arbitrary_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"X": Payload(), "Y": [1, 2]}, f)
    with pytest.raises(DataError, match="not a loadable torch file"):
        SPEC.prepare(str(path), 0, 0, {})
    assert "unpickled!" not in capsys.readouterr().out


def test_synthetic_default_is_cached_and_balanced():
    first = SPEC.prepare(None, 140, 0, {})
    second = SPEC.prepare(None, 140, 0, {})
    assert first == second
    data = SPEC.load(first, 0, {})
    assert np.bincount(data.arrays["y"], minlength=14).tolist() == [10] * 14
    assert np.isfinite(np.asarray(data.arrays["x"])).all()


def test_cli_bad_data_is_one_line_exit_2_and_creates_nothing(tmp_path):
    bad = write_h5(tmp_path / "bad.h5", **BAD_FILES["nan"][0])
    result = run_cli("--data", bad, "--trials", "1", "--experiment", "e",
                     "--storage", str(tmp_path / "ray"),
                     "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NaN or inf" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
