"""The chapters run on a researcher's own class folders: ``-p DATASET folder -p DATA_ROOT ROOT`` (smoke profile).

A small phantom is written as PNG class folders with ``NAME_mask.png`` lesion masks, as a user would lay out their
scans, and each chapter is executed on it with papermill; the executed copy must show the folder's data was used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.book import ROOT, toc_notebooks

OWN_DATA = [p for p in toc_notebooks() if "DATASET" in (ROOT / p).read_text()]


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    from medmae_nb.data import make_phantom

    root = tmp_path_factory.mktemp("my_scans")
    ds = make_phantom(60, image_size=48, seed=5, class_probs=(1 / 3, 1 / 3, 1 / 3))
    for i in range(len(ds)):
        folder = root / ds.class_names[ds.labels[i]]
        folder.mkdir(exist_ok=True)
        Image.fromarray((ds.images[i, 0] * 255).astype(np.uint8)).save(folder / f"scan{i}.png")
        Image.fromarray(ds.masks[i].astype(np.uint8) * 255).save(folder / f"scan{i}_mask.png")
    return root


@pytest.mark.notebooks
@pytest.mark.parametrize("path", OWN_DATA, ids=str)
def test_chapter_runs_on_your_own_class_folders(path: Path, own_folder: Path, tmp_path: Path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("MEDMAE_PROFILE", "smoke")
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / path.name
    pm.execute_notebook(str(ROOT / path), str(out), parameters={"DATASET": "folder", "DATA_ROOT": str(own_folder)},
                        cwd=str(ROOT / path.parent), progress_bar=False, kernel_name="python3")
    cells = json.loads(out.read_text())["cells"]
    texts = [o.get("text", "") for c in cells for o in c.get("outputs", [])]
    printed = "".join("".join(t) if isinstance(t, list) else t for t in texts)
    assert f"ImageDataset('{own_folder.name}" in printed, "the chapter did not show the folder's dataset"


def _busi_split_folders(root: Path) -> Path:
    """BUSI laid out as split folders (``train/CLASS``, ``val/CLASS``, ``test/CLASS``), by the split shared with
    BreastMNIST: symbolic links to the shared copy, so nothing is duplicated."""
    import os

    from medmae_nb.data.leaks import shared_busi_split

    ds = shared_busi_split(image_size=32, channels=1)
    busi = Path(os.environ["MEDMAE_DATA"]) / "busi_256"
    files = {p.name: p for p in busi.glob("*/*.png") if "_mask" not in p.name}
    for split, name, label in zip(ds.split, ds.meta["file"], ds.labels):
        src = files[Path(str(name)).name]
        dst = root / str(split) / ds.class_names[label] / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    return root


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    """One cache for the chapter-06 runs below: the smoke-scale pre-training of the six recipes (on the phantom,
    the same for every dataset) is done once, not once per dataset."""
    return tmp_path_factory.mktemp("ch06-cache")


@pytest.mark.notebooks
@pytest.mark.parametrize("spec", ["folder:BUSI", "split-folders:BUSI", "medmnist:breastmnist"])
def test_chapter_06_runs_on_any_dataset_spec(spec: str, tmp_path: Path, monkeypatch, smoke_cache: Path):
    """Chapter 06 (every method side by side) in the smoke profile on a class-folder copy of BUSI, on BUSI as split
    folders (used as split, never re-split), and on a MedMNIST file by its spec."""
    import os

    import papermill as pm

    data = os.environ.get("MEDMAE_DATA")
    if not data or not (Path(data) / "busi_256").is_dir() or not list(Path(data).glob("**/breastmnist.npz")):
        pytest.skip("needs BUSI and BreastMNIST under $MEDMAE_DATA (CI sets it to ../shared/data)")
    if spec == "folder:BUSI":
        spec = f"folder:{Path(data) / 'busi_256'}"
    elif spec == "split-folders:BUSI":
        spec = f"folder:{_busi_split_folders(tmp_path / 'busi_split')}"
    monkeypatch.setenv("MEDMAE_PROFILE", "smoke")
    monkeypatch.setenv("MEDMAE_CACHE", str(smoke_cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "06.ipynb"
    path = ROOT / "nbs" / "06-benchmark.ipynb"
    pm.execute_notebook(str(path), str(out), parameters={"DATASET": spec, "REAL_TABLES": False},
                        cwd=str(path.parent), progress_bar=False, kernel_name="python3")
    cells = json.loads(out.read_text())["cells"]
    texts = [o.get("text", "") for c in cells for o in c.get("outputs", [])]
    printed = "".join("".join(t) if isinstance(t, list) else t for t in texts)
    assert "(method, protocol, budget) results" in printed and "Traceback" not in printed
