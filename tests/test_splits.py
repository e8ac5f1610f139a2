"""Stratified splits and nested label budgets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmae_nb.data.base import SPLITS, DataError, ImageDataset
from medmae_nb.data.splits import assign_splits, budget_subset, label_budget, label_fraction, stratified_sample


def make(counts: list[int]) -> ImageDataset:
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.zeros((len(labels), 1, 2, 2), np.float32)
    return ImageDataset(images, labels, tuple(f"c{i}" for i in range(len(counts))), meta={"id": np.arange(len(labels))})


def test_split_is_stratified_and_complete() -> None:
    ds = assign_splits(make([133, 437, 210]), val=0.15, test=0.15, seed=0)
    assert set(ds.split) == set(SPLITS)
    for s in SPLITS:
        fractions = np.bincount(ds.labels[ds.split == s], minlength=3) / (ds.split == s).sum()
        np.testing.assert_allclose(fractions, [133 / 780, 437 / 780, 210 / 780], atol=0.01)
    assert (ds.split == "test").sum() == pytest.approx(0.15 * 780, abs=3)


def test_split_is_seeded_and_leaves_the_input_alone() -> None:
    base = make([50, 30])
    a, b, c = assign_splits(base, seed=1), assign_splits(base, seed=1), assign_splits(base, seed=2)
    np.testing.assert_array_equal(a.split, b.split)
    assert (a.split != c.split).any()
    assert base.split is None and a.images is not base.images


def test_tiny_classes_get_every_split() -> None:
    ds = assign_splits(make([3, 4, 1, 2]), val=0.1, test=0.1)
    for c in (0, 1):
        assert set(ds.split[ds.labels == c]) == set(SPLITS)
    assert set(ds.split[ds.labels == 2]) == {"train"}  # one sample: training needs it most
    assert "train" in set(ds.split[ds.labels == 3])
    no_val = assign_splits(make([10, 10]), val=0.0, test=0.2)
    assert "val" not in set(no_val.split)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.2, 1.0), (0.5, 0.5), (float("nan"), 0.1), ("0.1", 0.1)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(DataError, match=r"fraction in|must be below 1"):
        assign_splits(make([10, 10]), val=val, test=test)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    val=st.floats(0, 0.4),
    test=st.floats(0, 0.4),
    seed=st.integers(0, 2**31),
)
def test_splits_partition_every_sample(counts: list[int], val: float, test: float, seed: int) -> None:
    ds = assign_splits(make(counts), val=val, test=test, seed=seed)
    assert np.isin(ds.split, SPLITS).all()  # every sample in exactly one split: train/val/test are disjoint
    parts = [set(ds.meta["id"][ds.split == s]) for s in SPLITS]
    assert sum(map(len, parts)) == len(ds) and set().union(*parts) == set(range(len(ds)))
    for c, n in enumerate(counts):
        in_class = ds.split[ds.labels == c]
        assert (in_class == "train").any()
        if n >= 3:
            assert ((in_class == "val").any() or val == 0) and ((in_class == "test").any() or test == 0)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 80), min_size=1, max_size=4),
    small=st.integers(1, 20),
    extra=st.integers(0, 60),
    seed=st.integers(0, 2**31),
)
def test_budgets_are_nested_sorted_and_balanced(counts: list[int], small: int, extra: int, seed: int) -> None:
    labels = make(counts).labels
    large = small + extra
    if large > max(counts):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a, b = label_budget(labels, small, seed), label_budget(labels, large, seed)
    assert set(a) <= set(b)
    assert (np.diff(b) > 0).all() and b.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels[b], minlength=len(counts)), np.minimum(counts, large))


def test_budget_is_seeded() -> None:
    labels = make([100, 100]).labels
    np.testing.assert_array_equal(label_budget(labels, 10, seed=3), label_budget(labels, 10, seed=3))
    assert set(label_budget(labels, 10, seed=3)) != set(label_budget(labels, 10, seed=4))


def test_small_class_warns_and_gives_all() -> None:
    labels = make([50, 4]).labels
    with pytest.warns(UserWarning, match=r"label budget of 10 per class: 'cold' has 4"):
        index = label_budget(labels, 10, class_names=["hot", "cold"])
    assert np.bincount(labels[index]).tolist() == [10, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        label_budget(labels, 10, warn=False)


@pytest.mark.parametrize(("n", "match"), [(0, ">= 1"), (-3, ">= 1"), (2.5, "whole number"), (51, "exceeds every")])
def test_bad_budgets(n: int, match: str) -> None:
    with pytest.raises(DataError, match=match):
        label_budget(make([50, 4]).labels, n)


def test_budget_subset_draws_within_the_training_split() -> None:
    ds = assign_splits(make([60, 40]), seed=0)
    sub = budget_subset(ds, 5, seed=0)
    assert set(sub.split) == {"train"} and sub.class_counts() == {"c0": 5, "c1": 5}
    assert set(sub.meta["id"]) <= set(ds.meta["id"][ds.split == "train"])
    assert len(budget_subset(ds, 5, split=None)) == 10
    with pytest.raises(DataError, match="has no split"):
        budget_subset(make([10, 10]), 2)


def test_stratified_sample_keeps_proportions() -> None:
    labels = make([80, 20]).labels
    index = stratified_sample(labels, 10, seed=0)
    assert np.bincount(labels[index]).tolist() == [8, 2] and (np.diff(index) > 0).all()
    with pytest.raises(DataError, match="n_total"):
        stratified_sample(labels, 101)


# ------------------------------------------------------------------------------------------- stratified sampling


def _hamilton(counts: list[int], n_total: int) -> list[int]:
    """Largest-remainder apportionment in exact integer arithmetic, ties to the lower class index (the reference)."""
    n = sum(counts)
    take = [c * n_total // n for c in counts]
    remainder = [c * n_total % n for c in counts]
    for c in sorted(range(len(counts)), key=lambda c: (-remainder[c], c))[: n_total - sum(take)]:
        take[c] += 1
    return take


def test_stratified_sample_gives_leftover_seats_to_the_largest_remainders() -> None:
    labels = make([50, 30, 20]).labels
    # quotas 3.5, 2.1, 1.4: the one seat left after the floors goes to the largest remainder (class 0), not to the
    # smallest class (which would give [3, 2, 2]) nor by class order alone
    assert np.bincount(labels[stratified_sample(labels, 7)]).tolist() == [4, 2, 1]
    labels = make([10, 65, 25]).labels
    assert np.bincount(labels[stratified_sample(labels, 4)]).tolist() == [0, 3, 1]  # quotas 0.4, 2.6, 1.0


@pytest.mark.parametrize(
    ("counts", "n_total", "expected"),
    [([20, 12, 7], 36, [19, 11, 6]), ([5, 5, 19, 27], 8, [1, 1, 2, 4])],
)
def test_stratified_sample_breaks_tied_remainders_by_class_order(counts, n_total, expected) -> None:
    # 20*36/39 and 7*36/39 have the same remainder 18/39, which floating point makes unequal; ties must go to the
    # lower class index every time, and two classes of equal size must get equal shares when the ties allow it
    labels = make(counts).labels
    assert np.bincount(labels[stratified_sample(labels, n_total)], minlength=len(counts)).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=5), data=st.data(), seed=st.integers(0, 2**31))
def test_stratified_sample_is_a_largest_remainder_apportionment(counts: list[int], data, seed: int) -> None:
    n_total = data.draw(st.integers(1, sum(counts)))
    labels = make(counts).labels
    index = stratified_sample(labels, n_total, seed)
    assert len(index) == n_total and len(set(index.tolist())) == n_total and (np.diff(index) > 0).all()
    take = np.bincount(labels[index], minlength=len(counts))
    n = sum(counts)
    for c, k in enumerate(take):  # within one of the exact quota, never more than the class has
        assert counts[c] * n_total // n <= k <= -(-counts[c] * n_total // n) and k <= counts[c]
    rounded_up = [c for c in range(len(counts)) if take[c] * n > counts[c] * n_total]
    rounded_down = [c for c in range(len(counts)) if take[c] * n < counts[c] * n_total]
    for up in rounded_up:  # a class rounded up never has a smaller remainder than one rounded down
        assert all(counts[up] * n_total % n >= counts[d] * n_total % n for d in rounded_down)
    assert take.tolist() == _hamilton(counts, n_total)


def test_stratified_sample_is_seeded_and_shares_the_budget_order() -> None:
    labels = make([40, 40]).labels
    np.testing.assert_array_equal(stratified_sample(labels, 10, seed=1), stratified_sample(labels, 10, seed=1))
    assert set(stratified_sample(labels, 10, seed=1)) != set(stratified_sample(labels, 10, seed=2))
    # the same per-class permutation as label_budget, so a stratified draw of 2 x 5 is the 5-per-class budget
    np.testing.assert_array_equal(stratified_sample(labels, 10, seed=3), label_budget(labels, 5, seed=3))


@pytest.mark.parametrize("n_total", [0, -1, 2.5, True, 201])
def test_stratified_sample_bad_sizes(n_total) -> None:
    with pytest.raises(DataError, match=r"n_total must be a whole number in 1\.\.200"):
        stratified_sample(make([100, 100]).labels, n_total)


# ------------------------------------------------------------------------------------------- stream independence


def _class_split(ds: ImageDataset, c: int) -> np.ndarray:
    return ds.split[ds.labels == c]


def test_resizing_one_class_leaves_the_others_split_and_budget_alone() -> None:
    before, after = make([30, 40, 25]), make([30, 90, 25])  # class 1 grows; classes 0 and 2 keep their samples
    a, b = assign_splits(before, seed=5), assign_splits(after, seed=5)
    for c in (0, 2):
        np.testing.assert_array_equal(_class_split(a, c), _class_split(b, c))
    la, lb = label_budget(before.labels, 8, seed=5), label_budget(after.labels, 8, seed=5)
    offset = 90 - 40  # class 2's indices shift by the samples added to class 1
    np.testing.assert_array_equal(la[before.labels[la] == 0], lb[after.labels[lb] == 0])
    np.testing.assert_array_equal(la[before.labels[la] == 2] + offset, lb[after.labels[lb] == 2])


def test_split_and_budget_draw_from_different_streams() -> None:
    # with one shared stream the first test samples of each class would be exactly a label budget of the whole set
    ds = assign_splits(make([100, 100]), val=0.1, test=0.1, seed=0)
    test_index = np.flatnonzero(ds.split == "test")
    assert set(label_budget(ds.labels, 10, seed=0)) != set(test_index)


def test_split_counts_round_half_up() -> None:
    ds = assign_splits(make([25, 35]), val=0.1, test=0.1, seed=0)  # 2.5 and 3.5 samples per class and split
    for c, expected in ((0, 3), (1, 4)):  # half up for both, not Python's round-half-to-even (2 and 4)
        assert (_class_split(ds, c) == "test").sum() == expected and (_class_split(ds, c) == "val").sum() == expected


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 300), min_size=1, max_size=5).filter(lambda c: sum(c) > 0),
       seed=st.integers(0, 50))
def test_label_fractions_are_nested_stratified_and_keep_every_class(counts, seed) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    previous: set[int] = set()
    for p in (0.01, 0.05, 0.1, 0.25, 1.0):
        idx = label_fraction(y, p, seed)
        assert previous <= set(idx.tolist()) and np.all(np.diff(idx) > 0)
        previous = set(idx.tolist())
        got = np.bincount(y[idx], minlength=len(counts))
        for c, n in enumerate(counts):
            assert got[c] == (0 if n == 0 else max(1, int(np.floor(p * n + 0.5))))
    assert previous == set(range(len(y)))


def test_label_fraction_agrees_with_label_budget_and_refuses_percentages() -> None:
    y = np.repeat([0, 1, 2], [500, 200, 100])
    assert set(label_budget(y, 2, seed=3)) <= set(label_fraction(y, 0.05, seed=3))
    assert not np.array_equal(label_fraction(y, 0.05, seed=3), label_fraction(y, 0.05, seed=4))
    for bad in (0, 5, -0.1, 1.5, True, "0.1"):
        with pytest.raises(DataError, match="0.05"):
            label_fraction(y, bad)
    with pytest.raises(DataError, match="no labels"):
        label_fraction(np.array([], np.int64), 0.5)
