"""``launch.py convert SRC --space NAME --out FILE.h5``: a seed's own format written as the
platform's HDF5 file, through the real command line; bad requests exit 2 with one line and
write nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def convert(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {"SCITUNE_CACHE": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "launch.py"), "convert", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def seed_torch_file(tmp_path):
    """The XRD seed's own file: torch.save({'X': (N, 1, L) float, 'Y': (N,) long})."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((42, 1, 512), dtype=np.float32))
    y = torch.from_numpy(np.arange(42) % 14).long()
    path = tmp_path / "patterns.pt"
    torch.save({"X": x, "Y": y}, path)
    return path, x.numpy()[:, 0], y.numpy()


def test_convert_writes_the_platforms_file_with_its_provenance(tmp_path, seed_torch_file):
    src, x, y = seed_torch_file
    out = tmp_path / "out" / "xrd.h5"
    out.parent.mkdir()
    done = convert(str(src), "--space", "resnet1d", "--out", str(out), cache=tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["patterns"][()], x)
        assert sorted(set(f["labels"][()].tolist())) == sorted(set(y.tolist()))
        assert f.attrs["imported_from"] == str(src)
    assert not list(out.parent.glob("*.part")), "the temporary file was left behind"
    # the converted file is a valid --data for the space: converting it again copies it
    again = tmp_path / "again.h5"
    copied = convert(str(out), "--space", "resnet1d", "--out", str(again), cache=tmp_path / "c")
    assert copied.returncode == 0, copied.stderr
    assert "already in the platform's layout" in copied.stdout
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("case", ["exists", "missing source", "unknown space", "no folder",
                                  "not data"])
def test_bad_requests_exit_2_with_one_line_and_write_nothing(tmp_path, seed_torch_file, case):
    src, _, _ = seed_torch_file
    out = tmp_path / "out.h5"
    args = [str(src), "--space", "resnet1d", "--out", str(out)]
    if case == "exists":
        out.write_bytes(b"keep me")
    elif case == "missing source":
        args[0] = str(tmp_path / "nowhere.pt")
    elif case == "unknown space":
        args[2] = "resnet9000"
    elif case == "no folder":
        args[4] = str(tmp_path / "no" / "such" / "out.h5")
    elif case == "not data":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a torch file")
        args[0] = str(bad)
    done = convert(*args, cache=tmp_path / "c")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    if case == "exists":
        assert out.read_bytes() == b"keep me", "an existing file was overwritten"
    else:
        assert not out.exists()
    if case == "not data":
        assert str(tmp_path / "bad.pt") in lines[0], "the error must name the user's file"


def test_force_replaces_an_existing_out_atomically(tmp_path, seed_torch_file):
    src, x, _ = seed_torch_file
    out = tmp_path / "xrd.h5"
    out.write_bytes(b"an older file")
    done = convert(str(src), "--space", "resnet1d", "--out", str(out), "--force",
                   cache=tmp_path / "c")
    assert done.returncode == 0, done.stderr
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["patterns"][()], x)
    assert not list(tmp_path.glob("*.part")), "the temporary file was left behind"
