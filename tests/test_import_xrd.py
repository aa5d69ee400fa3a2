"""The XRD importer's label conventions: Bravais lattices or space groups, counted from 0 or 1,
said with ``--data-option label_set`` / ``label_base`` or inferred and announced; refusals name
the user's file; one conversion per content and options, with provenance recorded.

Seed files are written the way the seed's DataHelper.createTrainAndValidation does:
``torch.save({'X': data_train_tensor, 'Y': labels_train_tensor}, tag + '_Train.pt')`` with
float patterns of shape (N, 1, L) and long labels."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.base import DataError

SPEC = get_dataset("xrd")
LENGTH = 64


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))


def save_seed_file(folder: Path, labels, tag: str = "tag", seed: int = 0) -> Path:
    """A seed data file as the seed writes it (patterns (N, 1, L) float32, labels int64)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    labels_train_tensor = torch.tensor(list(labels), dtype=torch.long)
    data_train_tensor = torch.rand(len(labels_train_tensor), 1, LENGTH, generator=generator)
    path = folder / f"{tag}_Train.pt"
    torch.save({"X": data_train_tensor, "Y": labels_train_tensor}, path)
    return path


def write_h5(path: Path, labels, attrs=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("patterns", data=rng.random((len(labels), LENGTH), dtype=np.float32))
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        f.create_dataset("two_theta", data=np.linspace(5, 90, LENGTH))
        f.attrs.update(attrs or {})
    return path


def prepare_and_load(path: Path, options=None):
    options = options or {}
    prepared = SPEC.prepare(str(path), 0, 0, options)
    return prepared, SPEC.load(prepared, 0, options)


def cache_entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("*.h5"))


def test_one_based_bravais_labels_are_14_classes_with_label_1_as_class_0(tmp_path, capsys):
    labels = [1 + i % 14 for i in range(42)]
    path = save_seed_file(tmp_path / "data", labels)
    _, data = prepare_and_load(path)
    assert data.info.num_classes == 14
    np.testing.assert_array_equal(data.arrays["y"], np.array(labels) - 1)
    assert data.arrays["y"][0] == 0  # label 1 (aP) is class 0
    err = capsys.readouterr().err
    assert f"labels of {path} are 1-based Bravais classes 1..14" in err
    assert "label_base=0" in err and "label_set=space_group" in err


def test_zero_based_space_groups_are_230_classes(tmp_path):
    labels = list(range(230)) * 2
    path = save_seed_file(tmp_path / "data", labels)
    for options in ({"label_set": "space_group"},
                    {"label_set": "space_group", "label_base": "0"}, {}):
        _, data = prepare_and_load(path, options)
        assert data.info.num_classes == 230
        np.testing.assert_array_equal(data.arrays["y"], labels)
    with h5py.File(SPEC.prepare(str(path), 0, 0, {"label_set": "space_group"})) as f:
        assert f.attrs["label_set"] == "space_group"
        np.testing.assert_array_equal(f["labels"][()], np.array(labels) + 1)  # schema: 1..230


def test_space_group_labels_below_14_stay_space_groups_when_said(tmp_path, capsys):
    labels = [1 + i % 13 for i in range(39)]  # space groups 1..13 only: they look like Bravais
    path = save_seed_file(tmp_path / "data", labels)
    _, data = prepare_and_load(path, {"label_set": "space_group"})
    assert data.info.num_classes == 230
    assert data.info.class_names[0] == "1"
    np.testing.assert_array_equal(data.arrays["y"], np.array(labels) - 1)
    err = capsys.readouterr().err
    assert f"labels of {path} are 1-based space groups 1..230" in err
    assert "label_base=0" in err and "label_set=bravais" not in err
    # without the option the same labels are taken for Bravais classes, and that is said
    _, guessed = prepare_and_load(path)
    assert guessed.info.num_classes == 14
    assert "label_set=space_group to say otherwise" in capsys.readouterr().err


def test_an_inferred_convention_is_announced_and_a_given_one_is_not(tmp_path, capsys):
    path = save_seed_file(tmp_path / "data", [i % 14 for i in range(28)])
    prepare_and_load(path)
    lines = [line for line in capsys.readouterr().err.splitlines() if "assuming" in line]
    assert len(lines) == 1
    assert lines[0].startswith("data: assuming labels of ") and str(path) in lines[0]
    assert "0-based Bravais classes 0..13" in lines[0] and "--data-option" in lines[0]
    prepare_and_load(path, {"label_set": "bravais", "label_base": "0"})
    assert "assuming" not in capsys.readouterr().err


CONTRADICTIONS = {
    "1-based with a 0 label": ([i % 14 for i in range(28)], {"label_base": "1"},
                               "label_base=0"),
    "bravais beyond 14": ([1 + i % 40 for i in range(80)], {"label_set": "bravais"},
                          "label_set=space_group"),
    "0-based bravais reaching 14": ([1 + i % 14 for i in range(28)],
                                    {"label_set": "bravais", "label_base": "0"},
                                    "label_base=1"),
    "0-based space groups reaching 230": ([i % 231 for i in range(462)],
                                          {"label_set": "space_group"}, "outside 0..229"),
}


@pytest.mark.parametrize("case", sorted(CONTRADICTIONS))
def test_impossible_conventions_name_the_users_file_and_the_fix(case, tmp_path):
    labels, options, fix = CONTRADICTIONS[case]
    path = save_seed_file(tmp_path / "data", labels)
    with pytest.raises(DataError) as caught:
        SPEC.prepare(str(path), 0, 0, options)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--data {path}:") and fix in message
    assert str(tmp_path / "cache") not in message and "xrd-import" not in message
    assert cache_entries(tmp_path) == []


def test_bad_option_values_are_refused(tmp_path):
    path = save_seed_file(tmp_path / "data", range(14))
    with pytest.raises(DataError, match="label_base must be 0 or 1"):
        SPEC.prepare(str(path), 0, 0, {"label_base": "2"})
    with pytest.raises(DataError, match="label_set must be one of bravais, space_group"):
        SPEC.prepare(str(path), 0, 0, {"label_set": "cubic"})
    with pytest.raises(DataError, match="describe a --data file"):
        SPEC.prepare(None, 140, 0, {"label_set": "bravais"})


def test_the_import_records_its_source_and_checksum(tmp_path):
    path = save_seed_file(tmp_path / "data", [1 + i % 14 for i in range(28)])
    prepared = SPEC.prepare(str(path), 0, 0, {"label_base": "1"})
    assert Path(prepared).parent == tmp_path / "cache" / "datasets"
    expected = hashlib.sha256(path.name.encode() + b"\0" + path.read_bytes()).hexdigest()
    with h5py.File(prepared) as f:
        assert f.attrs["imported_from"] == os.path.abspath(path)
        assert f.attrs["source_sha256"] == expected
        assert f.attrs["import_label_base"] == "1" and f.attrs["import_label_set"] == "auto"
        assert f.attrs["label_set"] == "bravais"


def test_same_bytes_and_options_are_converted_once(tmp_path, monkeypatch):
    loads = []
    real_load = torch.load

    def counting_load(*args, **kwargs):
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    path = save_seed_file(tmp_path / "data", [1 + i % 14 for i in range(28)])
    first = SPEC.prepare(str(path), 0, 0, {})
    assert SPEC.prepare(str(path), 0, 0, {}) == first
    elsewhere = tmp_path / "copy" / path.name
    elsewhere.parent.mkdir()
    shutil.copy(path, elsewhere)
    assert SPEC.prepare(str(elsewhere), 0, 0, {}) == first  # same bytes: same entry
    assert len(loads) == 1 and len(cache_entries(tmp_path)) == 1
    # other options or other bytes: converted anew
    other = SPEC.prepare(str(path), 0, 0, {"label_set": "space_group"})
    assert other != first and len(loads) == 2
    save_seed_file(tmp_path / "data", [1 + i % 14 for i in range(28)], seed=1)
    assert SPEC.prepare(str(path), 0, 0, {}) not in (first, other) and len(loads) == 3


def test_one_hot_over_230_columns_is_zero_based_space_groups(tmp_path):
    labels = torch.arange(60) % 230 + 5
    path = tmp_path / "onehot_Train.pt"
    torch.save({"X": torch.rand(60, 1, LENGTH), "Y": torch.nn.functional.one_hot(labels, 230)},
               path)
    _, data = prepare_and_load(path)
    assert data.info.num_classes == 230
    np.testing.assert_array_equal(data.arrays["y"], labels.numpy())


def test_hdf5_without_label_set_is_bravais_announced_and_read_in_place(tmp_path, capsys):
    path = write_h5(tmp_path / "data" / "plain.h5", [i % 14 for i in range(28)])
    prepared, data = prepare_and_load(path)
    assert prepared == str(path) and data.info.num_classes == 14
    err = capsys.readouterr().err
    assert f"labels of {path} (no label_set attribute) are 0-based Bravais classes" in err
    assert "label_set=space_group" in err
    assert cache_entries(tmp_path) == []


def test_hdf5_without_label_set_honours_the_options_in_a_converted_copy(tmp_path):
    labels = [1 + i % 230 for i in range(460)]
    path = write_h5(tmp_path / "data" / "sg.h5", labels)
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"sg\.h5: .*outside 0\.\.13.*label_set=space_group"):
        SPEC.prepare(str(path), 0, 0, {})
    prepared, data = prepare_and_load(path, {"label_set": "space_group"})
    assert prepared != str(path) and path.read_bytes() == before
    assert data.info.num_classes == 230
    np.testing.assert_array_equal(data.arrays["y"], np.array(labels) - 1)
    with h5py.File(path) as src, h5py.File(prepared) as f:
        np.testing.assert_array_equal(np.asarray(data.arrays["x"]), src["patterns"][()])
        np.testing.assert_array_equal(f["two_theta"][()], src["two_theta"][()])
        assert f.attrs["imported_from"] == os.path.abspath(path)


def test_hdf5_with_one_based_bravais_labels_and_no_attribute(tmp_path, capsys):
    labels = [1 + i % 14 for i in range(28)]
    path = write_h5(tmp_path / "data" / "one.h5", labels)
    _, data = prepare_and_load(path)
    assert data.info.num_classes == 14
    np.testing.assert_array_equal(data.arrays["y"], np.array(labels) - 1)
    assert "1-based Bravais classes 1..14" in capsys.readouterr().err


def test_hdf5_declared_label_set_is_not_overridden(tmp_path):
    path = write_h5(tmp_path / "data" / "declared.h5", [1 + i % 230 for i in range(230)],
                    {"label_set": "space_group"})
    with pytest.raises(DataError, match=r"declared\.h5: the file's label_set attribute is "
                                        r"'space_group' but --data-option label_set=bravais"):
        SPEC.prepare(str(path), 0, 0, {"label_set": "bravais"})
    prepared, data = prepare_and_load(path, {"label_set": "space_group"})
    assert prepared == str(path) and data.info.num_classes == 230
