"""Class-folder loading: tiny trees of PNG/JPEG/TIFF/BMP files in several modes written here, and BUSI when present."""

from __future__ import annotations

import gc
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmae_nb.data.base import DataError
from medmae_nb.data.folders import (
    UNLABELLED,
    detect_folder_layout,
    find_busi,
    folder_channels,
    load_busi,
    load_image_folder,
    load_split_folders,
    load_unlabelled_folder,
)


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
    ds = load_image_folder(tree, image_size=16, channels=1)
    assert ds.class_names == ("benign", "malignant", "normal") and ds.name == "data"
    assert ds.images.shape == (9, 1, 16, 16) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert list(ds.meta["file"][:3]) == ["benign/b (1).png", "benign/b (2).png", "benign/b (10).png"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2] and ds.split is None


def test_modes_are_converted_consistently(tree: Path) -> None:
    ds = load_image_folder(tree, image_size=16, channels=1)
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
    with pytest.raises(
        DataError, match=r"image folder .*b \(1\)\.png is a file, not a folder.*one subfolder per class"
    ):
        load_image_folder(tree / "benign" / "b (1).png")
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


def jpeg_bytes(seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)  # noise: a large file
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("what", ["image", "mask"])
def test_truncated_jpeg_is_named_and_its_file_closed(tree: Path, what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = jpeg_bytes()
    target = tree / "normal" / ("n1_mask.jpg" if what == "mask" else "cut.jpg")
    target.write_bytes(data[: len(data) // 2])  # a copy interrupted half way: the header is fine, the scan is not
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=rf"cannot read image .*normal/{target.name}.*truncated or corrupt"):
            load_image_folder(tree, image_size=8)
        gc.collect()  # a leaked file handle warns when its object is collected
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks and not unraisable, [str(w.message) for w in leaks] + [str(u.exc_value) for u in unraisable]


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
    (tmp_path / "Dataset_BUSI_with_GT.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"BUSI folder .*\.zip is a file, not a folder; it looks like an archive"):
        load_busi(tmp_path / "Dataset_BUSI_with_GT.zip")


def test_real_busi(shared_data: Path) -> None:
    if not (shared_data / "busi_256").is_dir():
        pytest.skip(f"{shared_data / 'busi_256'} not found")
    start = time.perf_counter()
    ds = load_busi(shared_data / "busi_256", image_size=64, channels=1)
    seconds = time.perf_counter() - start
    assert ds.class_counts() == {"normal": 133, "benign": 437, "malignant": 210}
    assert ds.images.shape == (780, 1, 64, 64) and ds.masks is None  # this copy has no masks
    assert 0.05 < ds.images.mean() < 0.95 and seconds < 30
    if (shared_data / "busi_256_gt").is_dir():  # the data root: the copy with masks is preferred
        gt = load_busi(shared_data, image_size=64, channels=1)
        np.testing.assert_array_equal(gt.labels, ds.labels)
        has = gt.masks.any(axis=(1, 2))
        assert gt.masks.shape == (780, 64, 64) and not has[gt.labels == 0].any() and has[gt.labels > 0].all()


def split_value(split: int, label: int, k: int) -> int:
    """A gray level that encodes where an image was written, so a test can check where it was loaded to."""
    return 20 + 60 * split + 20 * label + 5 * k


@pytest.fixture
def splits(tmp_path: Path) -> Path:
    """Train/{benign,malignant}, valid/benign (no malignant), TEST/{benign,malignant}: ISIC-style names and cases."""
    root = tmp_path / "isic"
    layout = {("Train", 0): 3, ("Train", 1): 2, ("valid", 0): 1, ("TEST", 0): 1, ("TEST", 1): 2}
    for (folder, label), n in layout.items():
        s = ["Train", "valid", "TEST"].index(folder)
        for k in range(n):
            cls = ("benign", "malignant")[label]
            save(root / folder / cls / f"{cls}_{k}.png", np.full((12, 12), split_value(s, label, k), np.uint8))
    save(root / "Train" / "malignant" / "malignant_1_mask.png", rect_mask(12, 12, slice(0, 6), slice(None)))
    return root


def test_split_folders_assign_each_image_its_split_and_label(splits: Path) -> None:
    with pytest.warns(UserWarning, match=r"split 'val' has no images of class\(es\) \['malignant'\]"):
        ds = load_split_folders(splits, image_size=6)
    assert ds.class_names == ("benign", "malignant") and ds.name == "isic" and ds.images.shape == (9, 1, 6, 6)
    assert ds.split.tolist() == ["train"] * 5 + ["val"] + ["test"] * 3
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 1]
    assert ds.meta["file"][:2].tolist() == ["Train/benign/benign_0.png", "Train/benign/benign_1.png"]
    for i, file in enumerate(ds.meta["file"]):
        folder, cls, stem = file.split("/")
        s, label, k = ["Train", "valid", "TEST"].index(folder), ds.class_names.index(cls), int(stem[-5])
        assert (s, label) == (["train", "val", "test"].index(ds.split[i]), ds.labels[i])
        assert ds.images[i].mean() == pytest.approx(split_value(s, label, k) / 255, abs=1e-6)
    assert ds.get_split("test").class_counts() == {"benign": 1, "malignant": 2}


def test_split_folders_masks_and_class_order(splits: Path) -> None:
    with pytest.warns(UserWarning, match="has no images"):
        ds = load_split_folders(splits, image_size=6, channels=3, classes=["malignant", "benign"])
    assert ds.class_names == ("malignant", "benign") and ds.images.shape[1] == 3
    assert ds.labels[ds.meta["file"] == "Train/malignant/malignant_0.png"].tolist() == [0]
    assert ds.masks is not None
    masked = ds.masks.any(axis=(1, 2))
    assert ds.meta["file"][masked].tolist() == ["Train/malignant/malignant_1.png"]
    assert ds.masks[masked][0, :3].all() and not ds.masks[masked][0, 3:].any()
    with pytest.warns(UserWarning, match="has no images"):
        assert load_split_folders(splits, image_size=6, masks=False).masks is None


def test_split_folders_complete_splits_load_without_warning(splits: Path) -> None:
    save(splits / "valid" / "malignant" / "m.png", np.zeros((12, 12), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_split_folders(splits, image_size=4)
    assert [int((ds.split == s).sum()) for s in ("train", "val", "test")] == [5, 2, 3]


def test_split_folders_case_clash_is_an_error(splits: Path) -> None:
    (splits / "TEST" / "benign").rename(splits / "TEST" / "Benign")
    with pytest.raises(DataError, match=r"'Benign' \(in \['test'\]\), 'benign' \(in \['train', 'val'\]\).*rename"):
        load_split_folders(splits)


def test_split_folders_layout_errors(splits: Path, tmp_path: Path) -> None:
    save(splits / "val" / "benign" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"both val/ and valid/ name the 'val' split"):
        load_split_folders(splits)
    with pytest.raises(DataError, match=r"split folder .*isic/Train/benign\.png is a file, not a folder"):
        save(splits / "Train" / "benign.png", np.zeros((4, 4), np.uint8))
        load_split_folders(splits / "Train" / "benign.png")
    with pytest.raises(DataError, match=r"split folder .*nowhere does not exist"):
        load_split_folders(tmp_path / "nowhere")


def test_split_folders_unknown_class_and_loose_images(splits: Path) -> None:
    with pytest.raises(DataError, match=r"unknown or repeated class\(es\) \['nevus'\].*\['benign', 'malignant'\]"):
        load_split_folders(splits, classes=["benign", "nevus"])
    loose = splits.parent / "loose"
    save(loose / "train" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"split folder .*loose/train holds images but no class folders"):
        load_split_folders(loose)


def test_split_folders_with_no_split_folder_point_the_way(tree: Path, splits: Path) -> None:
    with pytest.raises(
        DataError, match=r"has no split folders .*\['benign', 'malignant', 'normal'\].*load_image_folder"
    ):
        load_split_folders(tree)
    with pytest.raises(DataError, match=r"no split folders .*one level down, in .*isic"):
        load_split_folders(splits.parent)  # the folder above, as after unzipping into a folder of its own


def test_split_folders_ignore_other_folders_with_a_warning(splits: Path) -> None:
    (splits / "__MACOSX").mkdir()
    (splits / "metadata").mkdir()
    with pytest.warns(UserWarning) as record:
        load_split_folders(splits, image_size=4)
    messages = [str(w.message) for w in record]
    assert any("['metadata'] are not split folders" in m for m in messages)
    assert not any("__MACOSX" in m for m in messages)


def test_image_folder_refuses_split_named_classes(splits: Path) -> None:
    with pytest.raises(DataError, match=r"\['TEST', 'Train', 'valid'\].*named like data splits.*load_split_folders"):
        load_image_folder(splits)
    with pytest.raises(DataError, match=r"allow_split_names=True"):
        load_image_folder(splits, classes=["Train"])
    ds = load_image_folder(splits / "Train", image_size=4)  # one split on its own is an ordinary class folder
    assert ds.class_names == ("benign", "malignant")


def test_image_folder_loads_split_names_when_allowed(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    save(root / "test" / "a.png", np.zeros((4, 4), np.uint8))
    save(root / "other" / "b.png", np.zeros((4, 4), np.uint8))
    ds = load_image_folder(root, image_size=4, allow_split_names=True)
    assert ds.class_names == ("other", "test") and ds.split is None


def test_bad_image_size(tree: Path) -> None:
    for bad in (0, -3, 2.5, "64", True):
        with pytest.raises(DataError, match="image_size must be a positive integer"):
            load_image_folder(tree, image_size=bad)
    assert load_image_folder(tree, image_size=8.0).image_size == 8  # integral floats, as before


def test_real_busi_gt_in_split_folders(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "busi_256_gt"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    # A split layout made of links to a few real images and their masks, as a researcher's own data might be.
    root = tmp_path / "busi_split"
    for split, numbers in (("training", (1, 2, 3)), ("testing", (4, 5))):
        for cls in ("benign", "malignant"):
            (root / split / cls).mkdir(parents=True)
            for k in numbers:
                for path in source.glob(f"{cls}/{cls} ({k})*.png"):
                    (root / split / cls / path.name).symlink_to(path)
    ds = load_split_folders(root, image_size=32)
    assert ds.split.tolist() == ["train"] * 6 + ["test"] * 4
    assert ds.masks is not None and ds.masks.any(axis=(1, 2)).all()  # every benign/malignant image has a lesion
    assert 0.05 < ds.images.mean() < 0.95


def test_no_folder_given_is_a_clear_error():
    with pytest.raises(DataError, match=r"no image folder given \(None\).*set DATA_ROOT"):
        load_image_folder(None, image_size=32)


def test_detect_folder_layout(tree: Path, splits: Path, tmp_path: Path) -> None:
    assert detect_folder_layout(tree) == "class" and detect_folder_layout(splits) == "split"
    (tree / ".thumbnails").mkdir()  # hidden folders and macOS zip debris are no classes
    save(tree / "__MACOSX" / "._b1.png", np.zeros((4, 4), np.uint8))
    assert detect_folder_layout(tree) == "class"
    save(tmp_path / "flat" / "x.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "nested" / "p1" / "s1" / "x.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "nested" / "p2" / "s1" / "x.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "one" / "images" / "x.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "masks_only" / "a" / "x_mask.png", np.zeros((4, 4), np.uint8))  # a mask is no image
    save(tmp_path / "masks_only" / "b" / "y.png", np.zeros((4, 4), np.uint8))
    for name in ("flat", "nested", "one"):
        assert detect_folder_layout(tmp_path / name) == "unlabelled", name
    with pytest.warns(UserWarning, match=r"\['a'\] hold no images directly while \['b'\] do"):
        assert detect_folder_layout(tmp_path / "masks_only") == "unlabelled"
    with pytest.raises(DataError, match=r"does not exist"):
        detect_folder_layout(tmp_path / "missing")


def test_load_unlabelled_folder_walks_every_folder(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    save(root / "z.png", np.full((10, 10), 10, np.uint8))
    save(root / "p2" / "b.png", np.full((10, 10), 20, np.uint8))
    save(root / "p2" / "b_mask.png", rect_mask(10, 10, slice(0, 5), slice(None)))
    save(root / "p1" / "deep" / "a.png", np.full((10, 10), 30, np.uint8))
    save(root / ".cache" / "hidden.png", np.zeros((10, 10), np.uint8))
    ds = load_unlabelled_folder(root, image_size=4)
    assert ds.meta["file"].tolist() == ["z.png", "p1/deep/a.png", "p2/b.png"] and ds.name == "scans"
    assert ds.meta[UNLABELLED].tolist() == [True] * 3 and ds.split is None
    assert ds.class_names in ((), (UNLABELLED,)) and len(set(ds.labels.tolist())) == 1
    assert ds.masks is not None and ds.masks[2, :2].all() and not ds.masks[:2].any()
    assert load_unlabelled_folder(root, image_size=4, masks=False).masks is None
    assert load_unlabelled_folder(root, image_size=4, channels=3, name="x").images.shape == (3, 3, 4, 4)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=r"holds no images, directly or in subfolders"):
        load_unlabelled_folder(tmp_path / "empty")
    with pytest.raises(DataError, match=r"channels must be 1 \(gray\), 3 \(RGB\) or None"):
        load_unlabelled_folder(root, channels=2)


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
def test_load_unlabelled_folder_survives_a_symlink_loop(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    save(root / "a" / "x.png", np.zeros((6, 6), np.uint8))
    (root / "a" / "back").symlink_to(root, target_is_directory=True)
    assert load_unlabelled_folder(root, image_size=4).meta["file"].tolist() == ["a/x.png"]


def test_folder_channels_reads_the_file_modes(tmp_path: Path, tree: Path) -> None:
    gray_modes = {"l.png": (np.full((6, 6), 9, np.uint8), None), "la.png": (np.full((6, 6), 9, np.uint8), "LA"),
                  "p.png": (np.full((6, 6), 9, np.uint8), "P"), "i16.png": (np.full((6, 6), 900, np.uint16), None)}
    for name, (array, mode) in gray_modes.items():
        save(tmp_path / "gray" / name, array, mode)
    assert folder_channels(tmp_path / "gray") == 1
    save(tmp_path / "gray" / "rgb_but_gray.png", np.full((6, 6, 3), 9, np.uint8))  # an RGB file is colour by mode
    assert folder_channels(tmp_path / "gray") == 3
    assert folder_channels(tree) == 3 and folder_channels(tree / "normal") == 1
    with pytest.raises(DataError, match=r"unknown folder layout 'flat'"):
        folder_channels(tree, "flat")


def test_find_busi(busi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_busi(busi) == busi / "Dataset_BUSI_with_GT"
    assert find_busi(busi / "Dataset_BUSI_with_GT") == busi / "Dataset_BUSI_with_GT"
    monkeypatch.setenv("MEDMAE_DATA", str(busi))
    assert find_busi() == busi / "Dataset_BUSI_with_GT"


def test_every_loader_defaults_to_the_native_channels(tmp_path: Path, tree: Path) -> None:
    """One default across loaders and load_spec: channels=None reads the files' native count (colour files load as
    RGB, never turned gray without a word); channels=1 converts only when asked."""
    from medmae_nb.data.spec import load_spec

    assert load_image_folder(tree, image_size=8).channels == 3  # tree holds RGB, RGBA, JPEG files
    assert load_image_folder(tree, image_size=8, classes=["normal"]).channels == 1  # only gray files loaded
    assert load_image_folder(tree, image_size=8, channels=1).channels == 1
    assert load_spec(f"folder:{tree}", image_size=8).channels == load_image_folder(tree, image_size=8).channels
    split = tmp_path / "split"
    save(split / "train" / "a" / "x.png", np.full((6, 6), 9, np.uint8))
    save(split / "test" / "a" / "y.png", np.full((6, 6), 9, np.uint8))
    assert load_split_folders(split, image_size=4).channels == 1
    save(split / "test" / "a" / "z.png", np.full((6, 6, 3), 9, np.uint8))
    assert load_split_folders(split, image_size=4).channels == 3
    assert load_unlabelled_folder(split, image_size=4).channels == 3
    assert load_unlabelled_folder(split, image_size=4, channels=1).channels == 1
    with pytest.raises(DataError, match="channels must be 1 .gray., 3 .RGB. or None"):
        load_image_folder(tree, image_size=8, channels=2)


def test_load_busi_defaults_to_its_rgb_files(busi: Path) -> None:
    assert load_busi(busi, image_size=16).channels == 3  # stored as RGB files, like the release
    assert load_busi(busi, image_size=16, channels=1).channels == 1
