"""The content-based leak guard (medmae_nb.data.leaks) and the BUSI split derived from BreastMNIST's."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medmae_nb.data import ImageDataset, load_busi, load_medmnist, make_phantom
from medmae_nb.data.base import DataError
from medmae_nb.data.leaks import (
    DEFAULT_CROPS,
    DataLeakError,
    Overlap,
    busi_split_from_breastmnist,
    check_no_leak,
    content_signatures,
    find_overlap,
    match_busi_to_breastmnist,
    pool_signatures,
    score_matrix,
    shared_busi_split,
    signature,
)


# ------------------------------------------------------------------------------------------------------ helpers
def resized(ds: ImageDataset, size: int) -> ImageDataset:
    """A copy of ``ds`` resized to ``size x size`` (antialiased bilinear, as a MedMNIST-style release would)."""
    out = ds.subset(np.arange(len(ds)))
    x = torch.from_numpy(ds.images)
    out.images = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1).numpy()
    out.masks = None
    return out


def centre_cropped(ds: ImageDataset, fh: float, fw: float, size: int) -> ImageDataset:
    """The centred ``fh x fw`` crop of every image, resized to ``size`` (how BreastMNIST was made from BUSI)."""
    h, w = ds.images.shape[2:]
    ch, cw = round(h * fh), round(w * fw)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out = ds.subset(np.arange(len(ds)))
    out.images = np.ascontiguousarray(ds.images[:, :, y0:y0 + ch, x0:x0 + cw])
    out.masks = None
    return resized(out, size)


@pytest.fixture(scope="module")
def phantom() -> ImageDataset:
    return make_phantom(12, 64, seed=3)


# ---------------------------------------------------------------------------------------------------- synthetic
def test_signatures_are_unit_norm_and_zero_mean(phantom: ImageDataset) -> None:
    sig = content_signatures(phantom)
    assert sig.shape == (12, len(DEFAULT_CROPS), 28 * 28) and sig.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(sig, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sig.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(signature(phantom), sig[:, 0], atol=1e-6)  # variant 0 is the full image
    assert signature(phantom, size=16).shape == (12, 256)


def test_identical_images_score_one(phantom: ImageDataset) -> None:
    overlap = find_overlap(phantom, phantom)
    np.testing.assert_allclose(overlap.best_score, 1.0, atol=1e-5)
    np.testing.assert_array_equal(overlap.best_in_a, np.arange(12))
    assert set(map(tuple, overlap.pairs.tolist())) >= {(i, i) for i in range(12)}


@pytest.mark.parametrize("source_size, size", [(64, 28), (64, 32), (256, 28), (64, 64)])
def test_resized_copies_are_found(source_size: int, size: int) -> None:
    ds = make_phantom(6, source_size, seed=1)
    overlap = find_overlap(ds, resized(ds, size))
    assert overlap.best_score.min() >= 0.98, overlap.summary()
    np.testing.assert_array_equal(overlap.best_in_a, np.arange(6))
    # and the other way round: the small copy as the pool, the large original as the test set
    back = find_overlap(resized(ds, size), ds)
    np.testing.assert_array_equal(back.best_in_a, np.arange(6))
    assert back.best_score.min() >= 0.98


def test_rgb_and_gray_copies_are_found(phantom: ImageDataset) -> None:
    rgb = phantom.to_rgb()
    tinted = rgb.subset(np.arange(len(rgb)))
    tinted.images = rgb.images * np.array([1.0, 0.8, 0.6], np.float32)[None, :, None, None]  # a colour cast
    for other in (rgb, tinted, resized(rgb, 28)):
        overlap = find_overlap(phantom, other)
        assert overlap.best_score.min() >= 0.98, overlap.summary()
        np.testing.assert_array_equal(overlap.best_in_a, np.arange(len(phantom)))
    np.testing.assert_allclose(find_overlap(phantom, rgb).best_score, 1.0, atol=1e-5)


def test_brightness_and_contrast_do_not_hide_a_copy(phantom: ImageDataset) -> None:
    other = phantom.subset(np.arange(len(phantom)))
    other.images = 0.2 + 0.5 * phantom.images
    np.testing.assert_allclose(find_overlap(phantom, other).best_score, 1.0, atol=1e-5)


@pytest.mark.parametrize("fh, fw", [(1.0, 0.62), (1.0, 0.8), (0.7, 1.0), (1.0, 0.53)])
def test_centre_cropped_then_resized_copies_are_found(fh: float, fw: float) -> None:
    ds = make_phantom(8, 128, seed=2)
    small = centre_cropped(ds, fh, fw, 28)
    overlap = find_overlap(ds, small)  # the crops are tried on the larger side, ds
    assert overlap.crop_side == "a"
    assert overlap.best_score.min() >= 0.98, overlap.summary()
    np.testing.assert_array_equal(overlap.best_in_a, np.arange(8))
    plain = find_overlap(ds, small, crop_side="none")
    assert plain.best_score.min() < overlap.best_score.min()  # the crop search is what finds them


def test_disjoint_images_do_not_match() -> None:
    a, b = make_phantom(40, 64, seed=10), make_phantom(40, 64, seed=11)
    overlap = find_overlap(a, b)
    assert not overlap and len(overlap.pairs) == 0, overlap.summary()
    assert overlap.best_score.max() < 0.98
    noise = ImageDataset(np.random.default_rng(0).random((20, 1, 32, 32), dtype=np.float32), np.zeros(20), ("x",))
    assert not find_overlap(a, noise)
    assert not find_overlap(noise, resized(a, 28))


def test_flat_images_match_nothing() -> None:
    flat = ImageDataset(np.full((3, 1, 16, 16), 0.5, np.float32), np.zeros(3), ("x",))
    assert not content_signatures(flat).any()
    assert not find_overlap(flat, flat)


def test_check_no_leak_raises_naming_the_count(phantom: ImageDataset) -> None:
    test = make_phantom(10, 64, seed=4)
    pool = ImageDataset(np.concatenate([phantom.images, test.images[[2, 5, 7]]]), np.zeros(15), ("x",))
    with pytest.raises(DataLeakError) as info:
        check_no_leak(pool, resized(test, 28), what="BUSI pool")
    message = str(info.value)
    assert "3 of 10 test images" in message and "BUSI pool" in message and "allow=True" in message
    assert "shared_busi_split" in message
    assert isinstance(info.value, DataError) and isinstance(info.value.overlap, Overlap)
    np.testing.assert_array_equal(info.value.overlap.b_matched, [2, 5, 7])
    np.testing.assert_array_equal(np.sort(info.value.overlap.a_matched), [12, 13, 14])


def test_check_no_leak_warns_with_allow_and_passes_when_clean(phantom: ImageDataset) -> None:
    test = make_phantom(10, 64, seed=4)
    pool = ImageDataset(np.concatenate([phantom.images, test.images[:1]]), np.zeros(13), ("x",))
    with pytest.warns(UserWarning, match=r"ALLOWED data leak: 1 of 10 test images"):
        overlap = check_no_leak(pool, test, allow=True)
    assert len(overlap.b_matched) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = check_no_leak(phantom, test)
    assert not clean and clean.n_b == 10


def test_stored_pool_signatures_replace_the_pool(phantom: ImageDataset) -> None:
    stored = pool_signatures(phantom)
    assert stored.dtype == np.float16 and stored.shape == (12, len(DEFAULT_CROPS), 784)
    # a test set of crops of the pool's images: the stored crop variants find them
    with pytest.raises(DataLeakError, match="12 of 12 test images"):
        check_no_leak(stored, centre_cropped(phantom, 1.0, 0.75, 28))
    # a test set at a larger resolution than the pool: the test side is cropped against the stored full image
    big = make_phantom(5, 128, seed=6)
    small_pool = pool_signatures(centre_cropped(big, 1.0, 0.65, 28), crops=())
    assert small_pool.shape == (5, 1, 784)
    assert find_overlap(small_pool, big).best_score.min() >= 0.98
    assert not find_overlap(pool_signatures(phantom, crops=()), big)
    # 16-px signatures work the same way; the test side follows the stored size
    stored16 = pool_signatures(phantom, size=16)
    assert stored16.shape == (12, len(DEFAULT_CROPS), 256)
    assert find_overlap(stored16, resized(phantom, 28)).best_score.min() >= 0.98


def test_bad_arguments_say_what_to_pass(phantom: ImageDataset) -> None:
    with pytest.raises(DataError, match="threshold must be a correlation"):
        find_overlap(phantom, phantom, threshold=1.5)
    with pytest.raises(DataError, match="crop fractions"):
        content_signatures(phantom, crops=[(1.0, 1.2)])
    with pytest.raises(DataError, match="signature array must be"):
        find_overlap(np.zeros((3, 50), np.float32), phantom)
    with pytest.raises(DataError, match="different sizes"):
        find_overlap(pool_signatures(phantom, size=16), pool_signatures(phantom))
    with pytest.raises(DataError, match="crop_side must be"):
        find_overlap(phantom, phantom, crop_side="left")
    with pytest.raises(DataError, match="full image only"):
        find_overlap(pool_signatures(phantom, crops=()), phantom, crop_side="a")
    with pytest.raises(DataError, match="ImageDataset or a signature array"):
        check_no_leak([1, 2, 3], phantom)
    with pytest.raises(DataError, match="has no split"):
        busi_split_from_breastmnist(phantom, phantom)


def test_summary_names_counts_and_pairs(phantom: ImageDataset) -> None:
    text = find_overlap(phantom, phantom.subset([0, 1]), names=("pool", "test")).summary()
    assert text.startswith("2 of 2 test images (100.0 %) match")
    assert "pool[0]~test[0] 1.0000" in text


def test_split_derivation_on_a_synthetic_release() -> None:
    """A 'BreastMNIST' made from a 'BUSI' by centre crops: every image gets its partner's split, and a duplicate
    pair that the official split puts in train and test goes to test twice."""
    busi = make_phantom(30, 128, seed=7)
    busi.images[29] = busi.images[0]  # a duplicate, like BUSI's benign (433) / malignant (145)
    fractions = np.random.default_rng(0).choice([0.55, 0.7, 0.85, 1.0], size=30)
    small = np.concatenate([centre_cropped(busi.subset([i]), 1.0, f, 28).images for i, f in enumerate(fractions)])
    order = np.random.default_rng(1).permutation(30)  # BreastMNIST position k holds BUSI image order[k]
    official = np.array(["train"] * 20 + ["val"] * 4 + ["test"] * 6, dtype="<U5")
    official[order == 0], official[order == 29] = "train", "test"  # the duplicate's partners: one train, one test
    bm = ImageDataset(small[order], np.zeros(30), ("x",), split=official)
    record = match_busi_to_breastmnist(busi, bm)
    expected = np.empty(30, "<U5")
    expected[order] = official
    expected[[0, 29]] = "test"
    np.testing.assert_array_equal(record.split, expected)
    np.testing.assert_array_equal(busi_split_from_breastmnist(busi, bm), expected)
    # both copies match the train partner equally well (1.0), so one or both were moved from train to test
    assert record.moved.any() and set(np.flatnonzero(record.moved)) <= {0, 29}
    assert record.score.min() >= 0.98 and record.label_agrees is None
    assert f"{int(record.moved.sum())} moved to test" in record.summary()


# ---------------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """BUSI at 64 px with the shared split (computed into a fresh cache), BreastMNIST at 28 px, the match record."""
    if not (shared_data / "medmnist" / "breastmnist.npz").is_file():
        pytest.skip(f"BreastMNIST not found at {shared_data / 'medmnist' / 'breastmnist.npz'}")
    if not any((shared_data / d).is_dir() for d in ("busi_256_gt", "busi_256")):
        pytest.skip(f"BUSI not found under {shared_data}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDMAE_CACHE", str(tmp_path_factory.mktemp("leak-cache")))
        busi = shared_busi_split(shared_data, image_size=64, channels=1)
        again = shared_busi_split(shared_data, image_size=64, channels=1)  # from the cache
    bm = load_medmnist("breastmnist", shared_data)
    return {"busi": busi, "again": again, "bm": bm, "record": match_busi_to_breastmnist(busi, bm)}


def test_shared_split_counts_and_label_agreement(real: dict, shared_data: Path) -> None:
    busi, record = real["busi"], real["record"]
    np.testing.assert_array_equal(real["again"].split, busi.split)  # the second call read the cache
    np.testing.assert_array_equal(record.split, busi.split)  # the cached split is the derivation's
    assert (busi.masks is not None) == (shared_data / "busi_256_gt").is_dir()
    counts = {s: int((busi.split == s).sum()) for s in ("train", "val", "test")}
    before = {s: int((record.matched_split == s).sum()) for s in ("train", "val", "test")}
    print(f"\nshared BUSI split {counts} (by best match alone {before}; BreastMNIST 546/78/156)")
    for s in ("train", "val", "test"):
        print(f"  {s:5s} {busi.get_split(s).class_counts()}")
    print(record.summary())
    assert abs(before["train"] - 546) <= 6 and abs(before["val"] - 78) <= 3 and abs(before["test"] - 156) <= 6
    assert counts["val"] == before["val"] and counts["train"] >= 420 and counts["test"] <= 290
    assert record.label_agrees.mean() >= 0.97
    assert record.score.min() >= 0.98
    assert set(busi.meta["breastmnist_split"]) == {"train", "val", "test"}
    assert busi.meta["breastmnist_score"].min() >= 0.98


def test_shared_split_train_never_matches_breastmnist_val_or_test(real: dict) -> None:
    busi, bm = real["busi"], real["bm"]
    held_out = bm.subset(np.isin(bm.split, ("val", "test")))
    overlap = find_overlap(busi.get_split("train"), held_out)
    assert not overlap, overlap.summary()
    check_no_leak(busi.get_split("train"), bm.get_split("test"), what="shared BUSI train split")


def test_every_breastmnist_test_image_is_in_busi_test(real: dict) -> None:
    busi, bm = real["busi"], real["bm"]
    overlap = find_overlap(busi.get_split("test"), bm.get_split("test"))
    assert len(overlap.b_matched) == (bm.split == "test").sum(), overlap.summary()


def test_busi_pool_with_test_images_is_caught(real: dict) -> None:
    busi, bm = real["busi"], real["bm"]
    test = bm.get_split("test")
    pool = busi.subset(np.isin(busi.split, ("train", "test")))  # pre-trained on "all of BUSI but val"
    with pytest.raises(DataLeakError, match=r"(\d+) of 156 test images") as info:
        check_no_leak(pool, test, what="BUSI pre-training pool (64 px)")
    assert len(info.value.overlap.b_matched) == 156
    # the checkpoint-side form: float16 signatures of the pool, no images needed
    with pytest.raises(DataLeakError, match="156 of 156 test images"):
        check_no_leak(pool_signatures(pool), test)
    # and at 3 channels and another size, still caught: BUSI test images whose best match is a BreastMNIST test one
    some = busi.subset(np.flatnonzero(busi.meta["breastmnist_split"] == "test")[:30]).to_rgb()
    assert score_matrix(resized(some, 48), test).max(1).min() >= 0.98


def test_real_score_distributions(real: dict) -> None:
    """True matches score far above the threshold; unrelated ultrasound (BUSI mirrored) far below."""
    busi, bm = real["busi"], real["bm"]
    true = score_matrix(busi, bm).max(0)
    mirrored = busi.subset(np.arange(len(busi)))
    mirrored.images = np.ascontiguousarray(busi.images[..., ::-1])
    null = score_matrix(busi, mirrored).max(0)
    print(f"\ntrue matches: min {true.min():.4f}, median {np.median(true):.4f}; unrelated (mirrored BUSI): median "
          f"{np.median(null):.3f}, max {null.max():.3f}")
    assert true.min() >= 0.985 and np.median(true) >= 0.999
    assert null.max() < 0.97


def test_shared_split_is_the_same_at_every_size(real: dict, shared_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    rgb = shared_busi_split(shared_data, image_size=32, channels=3)
    assert rgb.images.shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(rgb.split, real["busi"].split)
    np.testing.assert_array_equal(rgb.meta["breastmnist_index"], real["busi"].meta["breastmnist_index"])
    assert len(list((tmp_path / "splits").glob("splits-*.npz"))) == 1


def test_shared_split_needs_breastmnist(tmp_path: Path, shared_data: Path) -> None:
    busi_dir = next((shared_data / d for d in ("busi_256_gt", "busi_256") if (shared_data / d).is_dir()), None)
    if busi_dir is None:
        pytest.skip("BUSI not found")
    (tmp_path / "busi_256").symlink_to(busi_dir)
    with pytest.raises(DataError, match="needs BreastMNIST"):
        shared_busi_split(tmp_path, image_size=32, cache=False)


def test_load_busi_is_what_shared_split_extends(real: dict, shared_data: Path) -> None:
    plain = load_busi(shared_data, 64, 1)
    np.testing.assert_array_equal(plain.images, real["busi"].images)
    np.testing.assert_array_equal(plain.meta["file"], real["busi"].meta["file"])
