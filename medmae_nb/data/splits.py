"""Seeded, stratified train/val/test splits and nested n-labels-per-class budgets.

Every random choice here draws from a generator seeded by ``(seed, class, purpose)``, so one class's selection
does not change when another class is added or resized, and a split never shares its random stream with a budget.
Budgets take a prefix of a fixed per-class permutation, hence they are nested: for one seed the 10-per-class set
lies inside the 100-per-class set, and a label-budget sweep differs only in the labels added.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from .base import DataError, ImageDataset

_SPLIT_STREAM, _BUDGET_STREAM = 1, 2


def assign_splits(ds: ImageDataset, val: float = 0.15, test: float = 0.15, seed: int = 0) -> ImageDataset:
    """Returns a copy of ``ds`` with a stratified ``split`` (replacing any it had).

    Each class is split on its own, so class proportions match across splits up to rounding; a class with at least
    three samples gets at least one in each split whose fraction is positive.

    Args:
        ds: the dataset, e.g. BUSI, which has no official split.
        val: fraction of each class for validation.
        test: fraction of each class for testing.
        seed: the same seed gives the same split.

    Raises:
        DataError: a fraction outside ``[0, 1)`` or ``val + test >= 1``.

    Example:
        >>> ds = ImageDataset(np.zeros((20, 1, 4, 4), np.float32), np.arange(20) % 2, ("a", "b"))
        >>> out = assign_splits(ds, val=0.2, test=0.2)
        >>> [int((out.split == s).sum()) for s in ("train", "val", "test")]
        [12, 4, 4]
    """
    for label, value in (("val", val), ("test", test)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < 1):
            raise DataError(f"{label} must be a fraction in [0, 1), got {value!r}")
    if val + test >= 1:
        raise DataError(f"val + test must be below 1 so that some data is left to train on, got {val} + {test}")
    split = np.full(len(ds), "train", dtype="<U5")
    for c in range(ds.num_classes):
        perm = _permutation(np.flatnonzero(ds.labels == c), seed, c, _SPLIT_STREAM)
        n = len(perm)
        n_test, n_val = _round(test * n), _round(val * n)
        if n >= 3:
            n_test, n_val = max(n_test, int(test > 0)), max(n_val, int(val > 0))
        while n and n_test + n_val > n - 1:  # keep at least one training sample
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        split[perm[:n_test]] = "test"
        split[perm[n_test : n_test + n_val]] = "val"
    out = ds.subset(np.arange(len(ds)))
    out.split = split
    return out


def label_budget(
    labels: np.ndarray,
    n_per_class: int,
    seed: int = 0,
    warn: bool = True,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices of ``n_per_class`` samples of each class, nested across budgets for one seed.

    Args:
        labels: class index per sample.
        n_per_class: labels to keep per class (>= 1).
        seed: the same seed gives the same, nested selections.
        warn: warn when a class has fewer samples than the budget (it then gives all it has).
        class_names: names for the warning; with them, classes absent from ``labels`` are reported too.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        DataError: ``n_per_class < 1``, or a budget larger than every class (almost surely a mistake).

    Example:
        >>> y = np.repeat([0, 1], 50)
        >>> set(label_budget(y, 5)) <= set(label_budget(y, 20))
        True
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if isinstance(n_per_class, bool) or int(n_per_class) != n_per_class or n_per_class < 1:
        raise DataError(f"n_per_class must be a whole number >= 1, got {n_per_class!r}")
    n_per_class = int(n_per_class)
    if len(labels) == 0:
        raise DataError("no labels to draw a label budget from")
    counts = np.bincount(labels, minlength=len(class_names) if class_names is not None else 0)
    if n_per_class > counts.max():
        raise DataError(
            f"a budget of {n_per_class} per class exceeds every class (the largest has "
            f"{int(counts.max())}); choose n_per_class <= {int(counts.max())}"
        )
    present = range(len(counts)) if class_names is not None else np.flatnonzero(counts)
    chosen, short = [], []
    for c in present:
        perm = _permutation(np.flatnonzero(labels == c), seed, int(c), _BUDGET_STREAM)
        chosen.append(perm[:n_per_class])
        if counts[c] < n_per_class:
            short.append(f"{class_names[c] if class_names is not None else c!r} has {int(counts[c])}")
    if warn and short:
        warnings.warn(
            f"label budget of {n_per_class} per class: {', '.join(short)}; those classes give all they have",
            UserWarning,
            stacklevel=2,
        )
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def label_fraction(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the samples, nested across fractions for one seed.

    Each class keeps ``round(fraction * count)`` of its samples (half up), at least one, so every class stays present
    at 1 %; like :func:`label_budget`, the samples are a prefix of the class's seeded permutation — the same one —
    hence 5 % contains 1 % and ``label_fraction(y, p, s)`` contains ``label_budget(y, n, s)`` whenever it keeps at
    least ``n`` of every class. Per-class rounding (not one total shared out) keeps the sets nested: a
    largest-remainder share-out can take a sample away from a class when the total grows.

    Args:
        labels: class index per sample.
        fraction: share of the samples to keep, in ``(0, 1]``.
        seed: the same seed gives the same, nested selections.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        DataError: a fraction outside ``(0, 1]`` (a percentage such as 5 must be given as 0.05), or no labels.

    Example:
        >>> y = np.repeat([0, 1], [300, 100])
        >>> np.bincount(y[label_fraction(y, 0.01)]).tolist()
        [3, 1]
        >>> set(label_fraction(y, 0.05)) <= set(label_fraction(y, 0.25))
        True
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0 < fraction <= 1:
        raise DataError(f"fraction must be a share in (0, 1] (write 5 % as 0.05), got {fraction!r}")
    if len(labels) == 0:
        raise DataError("no labels to draw a label fraction from")
    counts = np.bincount(labels)
    chosen = [_permutation(np.flatnonzero(labels == c), seed, c, _BUDGET_STREAM)[: max(1, _round(fraction * n))]
              for c, n in enumerate(counts) if n]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def budget_subset(ds: ImageDataset, n_per_class: int, seed: int = 0, split: str | None = "train") -> ImageDataset:
    """The samples of :func:`label_budget` drawn within one split of ``ds`` (or all of it when ``split`` is None).

    Example:
        >>> ds = assign_splits(ImageDataset(np.zeros((40, 1, 4, 4), np.float32), np.arange(40) % 2, ("a", "b")))
        >>> budget_subset(ds, 3).class_counts()
        {'a': 3, 'b': 3}
    """
    base = ds if split is None else ds.get_split(split)
    index = label_budget(base.labels, n_per_class, seed, class_names=base.class_names)
    return base.subset(index, name=f"{base.name}[{n_per_class}/class]")


def stratified_sample(labels: np.ndarray, n_total: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n_total`` samples with class proportions as in ``labels`` (largest-remainder rounding).

    Each class gets the floor of its exact quota ``count * n_total / N``; the samples left over go one each to the
    classes with the largest remainders, ties to the lower class index. Within a class the samples are a prefix of
    the same seeded permutation as :func:`label_budget`.

    Example:
        >>> np.bincount(np.asarray([0] * 80 + [1] * 20)[stratified_sample([0] * 80 + [1] * 20, 10)]).tolist()
        [8, 2]
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if isinstance(n_total, bool) or int(n_total) != n_total or not 1 <= n_total <= len(labels):
        raise DataError(f"n_total must be a whole number in 1..{len(labels)}, got {n_total!r}")
    counts = np.bincount(labels)
    # Integer quotient and remainder of counts * n_total / N: in floating point, equal remainders (e.g. 720/39 and
    # 252/39) come out unequal, and the seat left over went to whichever rounding error was larger.
    take, remainder = np.divmod(counts * int(n_total), len(labels))
    order = np.argsort(-remainder, kind="stable")  # ties go to the lower class index
    take[order[: int(n_total) - take.sum()]] += 1
    chosen = [_permutation(np.flatnonzero(labels == c), seed, c, _BUDGET_STREAM)[:k] for c, k in enumerate(take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _permutation(index: np.ndarray, seed: int, cls: int, stream: int) -> np.ndarray:
    return np.random.default_rng([int(seed), cls, stream]).permutation(index)


def _round(x: float) -> int:
    return math.floor(x + 0.5)  # half up, not Python's half-to-even, so 2.5 samples round the same way as 3.5
