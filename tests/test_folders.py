"""Class-folder loading: tiny trees of PNG/JPEG/TIFF/BMP files in several modes written here, and BUSI when present."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmae_nb.data.base import DataError
from medmae_nb.data.folders import load_busi, load_image_folder


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def rect_mask(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[rows, cols] = 255
    return m


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """benign/ with masks (one with two mask files), malignant/ in odd modes, normal/ without masks."""
    root = tmp_path / "data"
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    save(root / "benign" / "b (1).png", np.full((30, 40), 100, np.uint8))  # L, not square
    save(root / "benign" / "b (1)_mask.png", rect_mask(30, 40, slice(None), slice(0, 20)))  # left half
    save(root / "benign" / "b (2).png", rgb)
    save(root / "benign" / "b (2)_mask.png", rect_mask(40, 40, slice(0, 20), slice(None)))  # top half
    save(root / "benign" / "b (2)_mask_1.png", rect_mask(40, 40, slice(20, 40), slice(0, 20)))  # bottom-left
    save(root / "benign" / "b (10).png", np.dstack([rgb, np.full((40, 40), 128, np.uint8)]), "RGBA")
    save(root / "malignant" / "m1.png", np.full((32, 32), 30000, np.uint16))  # 16-bit gray
    save(root / "malignant" / "m2.jpg", rgb)
    save(root / "malignant" / "m3.tif", rgb)
    save(root / "malignant" / "m4.bmp", rgb, "P")
    save(root / "normal" / "n1.png", np.full((20, 20), 255, np.uint8), "P")
    save(root / "normal" / "n2.jpeg", np.full((64, 64), 0, np.uint8))
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


def test_tree_loads_in_deterministic_order(tree: Path) -> None:
    ds = load_image_folder(tree, image_size=16)
    assert ds.class_names == ("benign", "malignant", "normal") and ds.name == "data"
    assert ds.images.shape == (9, 1, 16, 16) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert list(ds.meta["file"][:3]) == ["benign/b (1).png", "benign/b (2).png", "benign/b (10).png"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2] and ds.split is None


def test_modes_are_converted_consistently(tree: Path) -> None:
    ds = load_image_folder(tree, image_size=16)
    value = {f: float(ds.images[i].mean()) for i, f in enumerate(ds.meta["file"])}
    assert value["benign/b (1).png"] == pytest.approx(100 / 255, abs=1e-6)
    assert value["malignant/m1.png"] == pytest.approx(30000 / 65535, abs=1e-4)  # scaled, not clipped to 1
    red = value["benign/b (2).png"]
    assert red == pytest.approx(76 / 255, abs=1e-6)  # ITU-R 601 luma of pure red
    for f in ("benign/b (10).png", "malignant/m3.tif", "malignant/m4.bmp"):  # RGBA, TIFF, palette agree with RGB
        assert value[f] == pytest.approx(red, abs=2 / 255)
    assert value["malignant/m2.jpg"] == pytest.approx(red, abs=6 / 255)  # JPEG is lossy
    assert value["normal/n1.png"] == pytest.approx(1.0) and value["normal/n2.jpeg"] == pytest.approx(0.0, abs=1e-6)


def test_rgb_output(tree: Path) -> None:
    ds = load_image_folder(tree, image_size=8, channels=3)
    files = list(ds.meta["file"])
    red = ds.images[files.index("benign/b (2).png")]
    assert red.shape == (3, 8, 8) and red[0].min() == 1.0 and red[1:].max() == 0.0
    gray = ds.images[files.index("malignant/m1.png")]
    np.testing.assert_array_equal(gray[0], gray[2])


def test_masks_are_resized_and_ored(tree: Path) -> None:
    ds = load_image_folder(tree, image_size=16)
    assert ds.masks is not None and ds.masks.shape == (9, 16, 16) and ds.masks.dtype == bool
    files = list(ds.meta["file"])
    left = ds.masks[files.index("benign/b (1).png")]
    assert left[:, :8].all() and not left[:, 8:].any()
    union = ds.masks[files.index("benign/b (2).png")]
    expected = np.zeros((16, 16), bool)
    expected[:8] = True
    expected[8:, :8] = True
    np.testing.assert_array_equal(union, expected)
    assert not ds.masks[2:].any()  # images without a mask file get an empty mask


def test_masks_absent_or_off(tree: Path) -> None:
    assert load_image_folder(tree, image_size=8, masks=False).masks is None
    assert load_image_folder(tree, image_size=8, classes=["malignant", "normal"]).masks is None


def test_classes_choose_and_order(tree: Path) -> None:
    ds = load_image_folder(tree, image_size=8, classes=["normal", "benign"])
    assert ds.class_names == ("normal", "benign") and ds.class_counts() == {"normal": 2, "benign": 3}
    with pytest.raises(DataError, match=r"unknown or repeated class\(es\) \['tumour'\].*\['benign', 'malignant'"):
        load_image_folder(tree, classes=["benign", "tumour"])


def test_reload_sees_changed_files_and_is_not_aliased(tree: Path) -> None:
    first = load_image_folder(tree, image_size=8)
    first.images[:] = -1.0  # a caller editing its copy must not change the next load
    second = load_image_folder(tree, image_size=8)
    assert second.images.min() >= 0.0
    path = tree / "benign" / "b (1).png"
    save(path, np.full((30, 40), 200, np.uint8))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_image_folder(tree, image_size=8)
    assert third.images[0].mean() == pytest.approx(200 / 255, abs=1e-6)


def test_orphan_mask_warns(tree: Path) -> None:
    save(tree / "normal" / "ghost_mask.png", rect_mask(8, 8, slice(None), slice(None)))
    with pytest.warns(UserWarning, match=r"mask file.*without an image.*ghost_mask"):
        ds = load_image_folder(tree, image_size=8)
    assert len(ds) == 9


def test_bad_folders(tmp_path: Path, tree: Path) -> None:
    with pytest.raises(DataError, match=r"image folder .*nowhere does not exist"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"flat has no class subfolders; expected .*CLASS/IMAGE\.png"):
        load_image_folder(tmp_path / "flat")
    (tree / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty holds no images"):
        load_image_folder(tree)
    with pytest.raises(DataError, match="channels must be 1"):
        load_image_folder(tree, channels=2)


def test_unreadable_image_is_named(tree: Path) -> None:
    (tree / "normal" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*normal/broken\.png"):
        load_image_folder(tree)


@pytest.fixture
def busi(tmp_path: Path) -> Path:
    """A miniature original BUSI release: Dataset_BUSI_with_GT/CLASS/'CLASS (k).png' with masks beside."""
    root = tmp_path / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for k in range(1, n + 1):
            save(root / cls / f"{cls} ({k}).png", np.full((24, 30, 3), 40 * k, np.uint8))
            lesion = slice(4, 12) if cls != "normal" else slice(0, 0)
            mask = rect_mask(24, 30, lesion, lesion)
            save(root / cls / f"{cls} ({k})_mask.png", mask)
    return tmp_path


def test_load_busi_finds_the_release_folder(busi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDMAE_DATA", str(busi))
    ds = load_busi(image_size=12)
    assert ds.class_names == ("normal", "benign", "malignant") and ds.name == "busi"
    assert ds.class_counts() == {"normal": 2, "benign": 3, "malignant": 2}
    assert ds.masks is not None and not ds.masks[ds.labels == 0].any()
    assert ds.masks[ds.labels > 0].any(axis=(1, 2)).all()
    assert len(load_busi(busi / "Dataset_BUSI_with_GT", image_size=12, channels=3)) == 7


def test_load_busi_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDMAE_DATA", raising=False)
    with pytest.raises(DataError, match=r"MEDMAE_DATA is not set.*benign/, malignant/ and normal/"):
        load_busi()
    with pytest.raises(DataError, match=r"BUSI not found: none of .*busi_256.*Dataset_BUSI_with_GT"):
        load_busi(tmp_path)


def test_real_busi(shared_data: Path) -> None:
    if not (shared_data / "busi_256").is_dir():
        pytest.skip(f"{shared_data / 'busi_256'} not found")
    start = time.perf_counter()
    ds = load_busi(shared_data, image_size=64)
    seconds = time.perf_counter() - start
    assert ds.class_counts() == {"normal": 133, "benign": 437, "malignant": 210}
    assert ds.images.shape == (780, 1, 64, 64) and ds.masks is None  # this copy has no masks
    assert 0.05 < ds.images.mean() < 0.95 and seconds < 30
