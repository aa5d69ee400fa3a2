"""The layering of the code (pyproject.toml, [tool.importlinter]) holds, and breaks when a
module imports upwards: checked by running import-linter on this tree and on a copy of it
with one upward import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "analysis", "search", "tracking", "search_spaces", "trainables", "datasets",
            "common")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(tool), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def copy_tree(dest: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "message"), [
    ("datasets/base.py", "import search.driver", "datasets is not allowed to import search"),
    ("search/driver.py", "import cli.main", "search is not allowed to import cli"),
    ("trainables/loop.py", "import mlflow", "trainables is not allowed to import mlflow"),
])
def test_an_upward_import_breaks_them(tmp_path, module, line, message):
    tree = copy_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # an upward import\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout[-3000:]


def test_an_import_cycle_inside_a_folder_breaks_them(tmp_path):
    tree = copy_tree(tmp_path)
    path = tree / "search" / "settings.py"  # driver imports settings; now settings imports driver
    path.write_text(path.read_text() + "\nimport search.driver  # a cycle\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in search" in result.stdout, result.stdout[-3000:]
