"""The installed package is complete: a wheel built from this checkout holds every committed checkpoint, card and
results table, so a pip or Colab install loads the same weights and tables as the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIRS = ("medmae_nb/checkpoints", "medmae_nb/results")


def _committed(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if not p.endswith(".py")]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the committed files")
    src = tmp_path_factory.mktemp("src")
    # build from a copy of the committed tree, so the build writes nothing into this checkout
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("medmae_nb/", "pyproject.toml", "README.md", "LICENSE")) and (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(out)], check=True, capture_output=True)
    (wheel,) = out.glob("medmae_nb-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.parametrize("folder", DATA_DIRS)
def test_wheel_holds_every_committed_data_file(wheel_names: set[str], folder: str):
    committed = _committed(folder)
    assert committed, f"nothing committed under {folder}"
    missing = [p for p in committed if p not in wheel_names]
    assert not missing, f"not in the wheel (add their pattern to [tool.setuptools.package-data]): {missing}"


def test_wheel_holds_every_module(wheel_names: set[str]):
    modules = [p for p in subprocess.run(["git", "ls-files", "medmae_nb"], cwd=ROOT, capture_output=True, text=True,
                                         check=True).stdout.splitlines() if p.endswith(".py")]
    assert [p for p in modules if p not in wheel_names] == []
