"""ImageDataset helpers: concatenation rules and the folder check the loaders share."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from medmae_nb.data import concat_datasets
from medmae_nb.data.base import DataError, ImageDataset, require_folder

CLASSES = ("benign", "malignant")


def part(
    n: int,
    value: float,
    name: str,
    classes: tuple[str, ...] = CLASSES,
    shape: tuple[int, int, int] = (1, 8, 8),
    masks: bool = False,
    split: str | None = None,
    **meta: np.ndarray,
) -> ImageDataset:
    """``n`` constant images of ``value`` (so each sample's origin is visible), labels 0, 1, 0, …"""
    m = None
    if masks:
        m = np.zeros((n, *shape[1:]), bool)
        m[:, 0, 0] = True
    return ImageDataset(
        images=np.full((n, *shape), value, np.float32),
        labels=np.arange(n) % len(classes),
        class_names=classes,
        masks=m,
        split=None if split is None else np.full(n, split),
        meta=dict(meta),
        name=name,
    )


def test_samples_labels_and_sources_in_order() -> None:
    a, b = part(2, 0.25, "a"), part(3, 0.75, "b")
    b.labels = np.array([1, 1, 0])
    out = concat_datasets(a, b)
    assert len(out) == 5 and out.class_names == CLASSES and out.name == "a+b"
    assert out.images[:, 0, 0, 0].tolist() == [0.25, 0.25, 0.75, 0.75, 0.75]
    assert out.labels.tolist() == [0, 1, 1, 1, 0]
    assert out.meta["source"].tolist() == ["a", "a", "b", "b", "b"]
    assert out.masks is None and out.split is None and "has_mask" not in out.meta
    assert concat_datasets([a, b], name="both").name == "both"  # a single list works too


def test_result_does_not_alias_the_parts() -> None:
    a, b = part(2, 0.25, "a"), part(1, 0.5, "b")
    out = concat_datasets(a, b)
    out.images[:] = 0.0
    assert a.images.min() == 0.25 and b.images.min() == 0.5


def test_source_survives_nested_concatenation() -> None:
    ab = concat_datasets(part(1, 0.1, "a"), part(1, 0.2, "b"))
    out = concat_datasets(ab, part(2, 0.3, "c"))
    assert out.meta["source"].tolist() == ["a", "b", "c", "c"] and out.name == "a+b+c"


def test_class_order_mismatch_says_how_to_fix() -> None:
    a, b = part(2, 0.1, "a"), part(2, 0.2, "b", classes=("malignant", "benign"))
    with pytest.raises(DataError, match=r"same classes in a different order.*classes=\['benign', 'malignant'\]"):
        concat_datasets(a, b)


def test_class_set_mismatch_names_the_differences() -> None:
    a, b = part(2, 0.1, "a"), part(2, 0.2, "b", classes=("benign", "normal"))
    with pytest.raises(DataError, match=r"only in 'a': \['malignant'\], only in 'b': \['normal'\].*classes=\[\.\.\.\]"):
        concat_datasets(a, b)


def test_shape_mismatch_names_both_shapes_and_the_fix() -> None:
    a, b = part(1, 0.1, "a", shape=(1, 8, 8)), part(1, 0.2, "b", shape=(3, 8, 8))
    with pytest.raises(DataError, match=r"'a' has 1x8x8, 'b' has 3x8x8.*image_size=8, channels=1.*to_rgb"):
        concat_datasets(a, b)
    with pytest.raises(DataError, match=r"'a' has 1x8x8, 'c' has 1x16x16.*same image_size and channels"):
        concat_datasets(a, part(1, 0.2, "c", shape=(1, 16, 16)))


def test_masks_missing_from_a_part_become_empty_and_are_flagged() -> None:
    a, b = part(2, 0.1, "a", masks=True), part(3, 0.2, "b")
    out = concat_datasets(a, b)
    assert out.masks is not None and out.masks.shape == (5, 8, 8)
    assert out.masks[:2, 0, 0].all() and not out.masks[2:].any()
    assert out.meta["has_mask"].tolist() == [True, True, False, False, False]
    # A later concatenation keeps the flag of the samples that never had masks.
    again = concat_datasets(out, part(1, 0.3, "c", masks=True))
    assert again.meta["has_mask"].tolist() == [True, True, False, False, False, True]
    both = concat_datasets(a, part(1, 0.3, "c", masks=True))
    assert both.masks is not None and "has_mask" not in both.meta


def test_splits_all_or_none() -> None:
    out = concat_datasets(part(2, 0.1, "a", split="train"), part(1, 0.2, "b", split="test"))
    assert out.split.tolist() == ["train", "train", "test"] and len(out.get_split("test")) == 1
    with pytest.raises(DataError, match=r"\['b'\] have no split but the other datasets do.*assign_splits"):
        concat_datasets(part(2, 0.1, "a", split="train"), part(1, 0.2, "b"))


def test_meta_keys_in_every_part_are_kept_others_dropped_with_a_warning() -> None:
    a = part(2, 0.1, "a", file=np.array(["x.png", "y.png"]), index=np.array([0, 1]))
    b = part(1, 0.2, "b", file=np.array(["a_much_longer_name.png"]))
    with pytest.warns(UserWarning, match=r"meta key\(s\) \['index'\] are missing from some datasets"):
        out = concat_datasets(a, b)
    assert out.meta["file"].tolist() == ["x.png", "y.png", "a_much_longer_name.png"]  # no truncation
    assert "index" not in out.meta
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        concat_datasets(a, a)  # same keys: no warning


def test_transforms_must_agree() -> None:
    a, b = part(1, 0.1, "a"), part(1, 0.2, "b")
    a.transform = b.transform = np.negative
    assert concat_datasets(a, b).transform is np.negative
    b.transform = np.positive
    with pytest.raises(DataError, match=r"different transforms; set \.transform = None on the parts"):
        concat_datasets(a, b)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="at least one dataset"):
        concat_datasets()
    with pytest.raises(DataError, match=r"argument 1 is a ndarray, not an ImageDataset"):
        concat_datasets(part(1, 0.1, "a"), np.zeros((1, 1, 8, 8)))


def test_a_single_part_is_copied() -> None:
    a = part(2, 0.1, "a")
    out = concat_datasets(a)
    assert out is not a and out.name == "a" and out.meta["source"].tolist() == ["a", "a"]


def test_require_folder(tmp_path: Path) -> None:
    assert require_folder(tmp_path, "data root", "fix") == tmp_path
    with pytest.raises(DataError, match=r"data root .*nowhere does not exist; pass a folder"):
        require_folder(tmp_path / "nowhere", "data root", "pass a folder")
    (tmp_path / "scan.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"scan\.png is a file, not a folder; it looks like a single data file"):
        require_folder(tmp_path / "scan.png", "image folder", "pass a folder")
    (tmp_path / "isic.zip").write_bytes(b"x")
    with pytest.raises(DataError, match=r"isic\.zip is a file, not a folder; it looks like an archive: unpack it"):
        require_folder(tmp_path / "isic.zip", "image folder", "pass a folder")


def test_downsample_averages_blocks_and_keeps_half_covered_mask_pixels() -> None:
    images = np.random.default_rng(0).random((2, 1, 4, 6), dtype=np.float32)
    masks = np.zeros((2, 4, 6), bool)
    masks[0, :2, :2] = True  # a full block -> lesion
    masks[0, 2, 2] = masks[0, 3, 3] = True  # half a block -> lesion
    masks[1, 0, 4] = True  # a quarter -> not
    ds = ImageDataset(images, np.array([0, 1]), ("a", "b"), masks=masks, meta={"r": np.array([1.0, 2.0])}, name="x")
    small = ds.downsample(2)
    assert small.images.shape == (2, 1, 2, 3) and small.images.dtype == np.float32 and small.name == "x-down2"
    np.testing.assert_allclose(small.images[1, 0, 1, 2], images[1, 0, 2:4, 4:6].mean(), rtol=1e-6)
    assert small.masks.tolist() == [[[True, False, False], [False, True, False]], [[False] * 3, [False] * 3]]
    assert small.meta["r"].tolist() == [1.0, 2.0] and ds.images.shape == (2, 1, 4, 6)  # the original is untouched
    with pytest.raises(DataError, match="do not divide into 4x4"):
        ds.downsample(4)
    with pytest.raises(DataError, match="positive int"):
        ds.downsample(0)
