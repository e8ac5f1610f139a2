"""Tests for the breast-ultrasound phantom (medmae_nb/data/synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from medmae_nb.data import (
    BINARY_CLASS_NAMES,
    CLASS_NAMES,
    STEP_NAMES,
    DataError,
    make_phantom,
    make_phantom_splits,
    phantom_steps,
)


@pytest.fixture(scope="module")
def big() -> object:
    """600 images at 32 px: enough for class-wise descriptor statistics, cheap to make."""
    return make_phantom(600, image_size=32, seed=11)


def test_same_seed_identical_and_other_seed_differs() -> None:
    a, b, c = make_phantom(20, 32, seed=3), make_phantom(20, 32, seed=3), make_phantom(20, 32, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)
    for key in a.meta:
        np.testing.assert_array_equal(a.meta[key], b.meta[key])
    assert not np.array_equal(a.images, c.images)


def test_image_i_does_not_depend_on_n() -> None:
    # 300 images at 32 px span several chunks; the first 10 must match a run that stops inside the first chunk.
    small, large = make_phantom(10, 32, seed=5), make_phantom(300, 32, seed=5)
    np.testing.assert_array_equal(small.images, large.images[:10])
    np.testing.assert_array_equal(small.masks, large.masks[:10])


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_dtype_range(size: int) -> None:
    ds = make_phantom(12, image_size=size, seed=1)
    assert ds.images.shape == (12, 1, size, size)
    assert ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert ds.masks.shape == (12, size, size) and ds.masks.dtype == bool
    assert ds.labels.dtype == np.int64 and ds.split is None
    assert ds.name == f"phantom-{size}" and ds.class_names == CLASS_NAMES
    assert all(len(v) == 12 for v in ds.meta.values())
    # Not a constant or saturated picture: speckle and structure spread the grey levels.
    assert ds.images.std() > 0.08 and (ds.images == 1).mean() < 0.05


def test_masks_empty_for_normal_and_present_for_lesions(big) -> None:
    area = big.masks.sum((1, 2))
    normal = big.labels == 0
    assert (area[normal] == 0).all()
    assert (area[~normal] > 0).all()
    assert big.meta["lesion_radius_px"][normal].max() == 0
    np.testing.assert_allclose(big.meta["lesion_area_frac"], area / 32**2, rtol=1e-6)
    # Masks are drawn inside the image, so some lesions must touch no border and lie near their centre.
    ys, xs = big.meta["lesion_y"][~normal], big.meta["lesion_x"][~normal]
    assert ((ys >= 0) & (ys < 32) & (xs >= 0) & (xs < 32)).all()
    i = np.flatnonzero(~normal)[0]
    cy, cx = int(big.meta["lesion_y"][i]), int(big.meta["lesion_x"][i])
    assert big.masks[i, max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].any()


def test_every_lesion_has_a_mask_even_tiny_ones() -> None:
    ds = make_phantom(1000, image_size=32, seed=8, class_probs=(0, 1, 1), difficulty=2.0)
    area = ds.masks.sum((1, 2))
    assert (area > 0).all()
    assert (ds.meta["lesion_radius_px"] < 1.8).sum() > 50  # the case that matters does occur


def test_many_lesions_are_small(big) -> None:
    # At 64 px a third or more of the lesions should have a radius of a few pixels (< 5 px at 64, < 2.5 at 32).
    r = big.meta["lesion_radius_px"][big.labels > 0]
    assert (r < 2.5).mean() > 0.3 and r.max() > 5


def test_lesions_are_darker_than_their_surroundings(big) -> None:
    inside, ring = [], []
    for i in np.flatnonzero(big.meta["lesion_area_frac"] > 0.02)[:50]:
        m = big.masks[i]
        grown = m.copy()
        for axis, shift in ((0, 2), (0, -2), (1, 2), (1, -2)):
            grown |= np.roll(m, shift, axis)
        inside.append(big.images[i, 0][m].mean())
        ring.append(big.images[i, 0][grown & ~m].mean())
    assert np.mean(inside) < np.mean(ring) - 0.05


def test_labels_and_class_probs() -> None:
    ds = make_phantom(300, 32, seed=2)
    assert set(np.unique(ds.labels)) == {0, 1, 2}
    only_malignant = make_phantom(40, 32, seed=2, class_probs=(0, 0, 1))
    assert (only_malignant.labels == 2).all()
    weights = make_phantom(40, 32, seed=2, class_probs=(2, 0, 0))  # normalised
    assert (weights.labels == 0).all() and not weights.masks.any()


def test_descriptors_differ_by_class(big) -> None:
    m, lab = big.meta, big.labels
    ben, mal = lab == 1, lab == 2
    assert m["shape_irregularity"][mal].mean() > m["shape_irregularity"][ben].mean() + 0.05
    assert m["margin"][mal].mean() > m["margin"][ben].mean() + 0.15
    assert (m["posterior"][mal] == -1).mean() > (m["posterior"][ben] == -1).mean() + 0.2
    assert (m["posterior"][ben] == 1).mean() > (m["posterior"][mal] == 1).mean() + 0.2
    assert m["taller_than_wide"][mal].mean() > m["taller_than_wide"][ben].mean() + 0.2
    assert m["n_calcifications"][mal].mean() > m["n_calcifications"][ben].mean()
    # ... but they overlap at the default difficulty: some benign masses look malignant and vice versa.
    assert (m["posterior"][ben] == -1).any() and (m["posterior"][mal] == 1).any()
    # Normal images carry mimics often (more often than lesion images), so a dark blob is no proof of a lesion.
    assert m["has_mimic"][lab == 0].mean() > 0.35
    assert m["has_mimic"][lab == 0].mean() > m["has_mimic"][lab > 0].mean()
    for key in ("shape_irregularity", "margin", "heterogeneity", "n_calcifications", "posterior"):
        assert (m[key][lab == 0] == 0).all()


def _separation(ds, key: str) -> float:
    """Standardised difference of a descriptor between malignant and benign images."""
    v, lab = ds.meta[key].astype(float), ds.labels
    a, b = v[lab == 2], v[lab == 1]
    return (a.mean() - b.mean()) / np.sqrt(0.5 * (a.var() + b.var()) + 1e-12)


def test_difficulty_controls_overlap() -> None:
    easy, default, hard = (make_phantom(450, 32, seed=7, difficulty=d) for d in (0.0, 1.0, 2.5))
    for key in ("shape_irregularity", "margin", "heterogeneity"):
        assert _separation(easy, key) > _separation(default, key) > _separation(hard, key) > 0
    # At difficulty 0 the descriptors do not overlap at all and no image holds a mimic.
    m, lab = easy.meta, easy.labels
    assert m["margin"][lab == 2].min() > m["margin"][lab == 1].max()
    assert not m["has_mimic"].any()
    assert hard.meta["has_mimic"].mean() > default.meta["has_mimic"].mean()


def test_binary_view_matches_breastmnist() -> None:
    three = make_phantom(90, 32, seed=9)
    two = make_phantom(90, 32, seed=9, binary=True)
    assert two.class_names == BINARY_CLASS_NAMES == ("malignant", "normal or benign")
    np.testing.assert_array_equal(two.labels, np.where(three.labels == 2, 0, 1))
    np.testing.assert_array_equal(two.meta["label3"], three.labels)
    np.testing.assert_array_equal(two.images, three.images)


@pytest.mark.parametrize("size", [16, 24, 33, 60, 264, 512])
def test_bad_image_size_raises(size: int) -> None:
    with pytest.raises(DataError, match=r"multiple of 8 between 32 and 256.*got " + str(size)):
        make_phantom(2, image_size=size)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": -1}, "n must be a non-negative integer"),
        ({"n": 2, "seed": -3}, "seed must be a non-negative integer"),
        ({"n": 2, "difficulty": -0.5}, "difficulty must be a finite number"),
        ({"n": 2, "difficulty": float("nan")}, "difficulty must be a finite number"),
        ({"n": 2, "class_probs": (1, 1)}, "class_probs must be 3 non-negative weights"),
        ({"n": 2, "class_probs": (0, 0, 0)}, "class_probs must be 3 non-negative weights"),
        ({"n": 2, "image_size": 64.5}, "image_size must be an integer"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make_phantom(**kwargs)


def test_zero_images() -> None:
    ds = make_phantom(0, 32)
    assert ds.images.shape == (0, 1, 32, 32) and ds.masks.shape == (0, 32, 32)
    assert "posterior" in ds.meta and len(ds.meta["posterior"]) == 0


def test_cache_round_trip(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    first = make_phantom(30, 32, seed=4, cache=True)
    files = list((tmp_path / "phantom").glob("phantom-*.npz"))
    assert len(files) == 1
    again = make_phantom(30, 32, seed=4, cache=True)  # loaded from the file
    fresh = make_phantom(30, 32, seed=4)
    for ds in (first, again):
        np.testing.assert_array_equal(ds.images, fresh.images)
        np.testing.assert_array_equal(ds.labels, fresh.labels)
        np.testing.assert_array_equal(ds.masks, fresh.masks)
        assert set(ds.meta) == set(fresh.meta)
        for key in fresh.meta:
            np.testing.assert_array_equal(ds.meta[key], fresh.meta[key])
            assert ds.meta[key].dtype == fresh.meta[key].dtype
    # The cache really is read: a planted file under the same key is what comes back.
    with np.load(files[0]) as f:
        arrays = dict(f)
    arrays["images"] = np.zeros_like(arrays["images"])
    np.savez(files[0], **arrays)
    assert make_phantom(30, 32, seed=4, cache=True).images.max() == 0
    # Any other argument is another key, hence another file.
    make_phantom(30, 32, seed=4, difficulty=0.5, cache=True)
    make_phantom(30, 32, seed=4, binary=True, cache=True)  # binary is a view: same arrays, same file
    assert len(list((tmp_path / "phantom").glob("phantom-*.npz"))) == 2


def test_splits(tmp_path, monkeypatch) -> None:
    ds = make_phantom_splits(40, 10, 12, image_size=32, seed=1)
    assert len(ds) == 62 and ds.class_counts()["normal"] > 0
    assert [len(ds.get_split(s)) for s in ("train", "val", "test")] == [40, 10, 12]
    np.testing.assert_array_equal(ds.get_split("train").images, make_phantom(40, 32, seed=1).images)
    train, test = ds.get_split("train").images, ds.get_split("test").images
    assert not any(np.array_equal(t, x) for t in test for x in train)
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    cached = make_phantom_splits(40, 10, 12, image_size=32, seed=1, cache=True)
    again = make_phantom_splits(40, 10, 12, image_size=32, seed=1, binary=True, cache=True)
    np.testing.assert_array_equal(cached.images, ds.images)
    np.testing.assert_array_equal(again.split, ds.split)
    np.testing.assert_array_equal(again.labels, np.where(ds.labels == 2, 0, 1))


@pytest.mark.parametrize("label", [0, 1, 2])
def test_phantom_steps(label: int) -> None:
    steps = phantom_steps(64, seed=2, label=label)
    assert tuple(steps) == STEP_NAMES
    assert all(v.shape == (64, 64) for v in steps.values())
    assert steps["lesion_shape"].dtype == bool and steps["lesion_shape"].any() == (label > 0)
    assert steps["final"].dtype == np.float32 and 0 <= steps["final"].min() <= steps["final"].max() <= 1
    if label > 0:  # the lesion step darkens exactly around the lesion; earlier steps are untouched there
        changed = steps["lesion"] != steps["mimics"]
        assert changed[steps["lesion_shape"]].all()
        assert steps["lesion"][steps["lesion_shape"]].mean() < steps["mimics"][steps["lesion_shape"]].mean()


def test_phantom_steps_is_the_generator() -> None:
    ds = make_phantom(1, 64, seed=6)
    steps = phantom_steps(64, seed=6, label=int(ds.labels[0]))
    np.testing.assert_array_equal(steps["final"], ds.images[0, 0])
    np.testing.assert_array_equal(steps["lesion_shape"], ds.masks[0])


def test_phantom_steps_bad_label() -> None:
    with pytest.raises(DataError, match="label must be 0"):
        phantom_steps(32, label=3)
