"""Property-based tests (hypothesis) of invariants that hold for every input: patchify round trips, exact mask counts
of every masking scheme and model, nested label budgets, disjoint splits, and what a percentile-bootstrap interval
guarantees.

The properties already in test_masking, test_entropy_masking, test_splits and test_evaluate are not repeated here;
these extend them to the other directions, functions and models (see the section headers).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medmae_nb import evaluate as ev
from medmae_nb.classical import budgets_for
from medmae_nb.data import ImageDataset, make_phantom, make_phantom_splits
from medmae_nb.data.base import SPLITS
from medmae_nb.data.leaks import busi_split_from_breastmnist
from medmae_nb.data.splits import assign_splits, budget_subset, label_budget, label_fraction, stratified_sample
from medmae_nb.masking import (
    MaskInfo,
    entropy_masking,
    informed_masking,
    mask_from_keys,
    mask_to_pixels,
    num_visible,
    patchify,
    random_masking,
    unpatchify,
)
from medmae_nb.models import MaskedAutoencoderViT, child_indices, upsample_tokens
from medmae_nb.models.base import Batch
from medmae_nb.models.masked_convnext import masked_convnext_atto
from medmae_nb.models.spark import spark_resnet18

FAST = settings(max_examples=50, deadline=None, derandomize=True)
FEW = settings(max_examples=12, deadline=None, derandomize=True)  # examples that build a model or images

RATIOS = st.floats(0.01, 0.99)
GRID = 2.0**-24  # torch.rand and Batch.rand draw float32 on this grid


def _quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` without the UserWarning about classes smaller than a budget."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _dataset(counts: list[int]) -> ImageDataset:
    labels = _labels(counts)
    return ImageDataset(np.zeros((len(labels), 1, 2, 2), np.float32), labels,
                        tuple(f"c{i}" for i in range(len(counts))), meta={"id": np.arange(len(labels))})


# ------------------------------------------------------------------------------- 1. patchify <-> unpatchify
# test_masking has unpatchify(patchify(x)) == x for float images; here the other direction, every dtype and memory
# layout, the model methods, and mask_to_pixels.
@FAST
@given(n=st.integers(1, 3), c=st.integers(1, 4), p=st.sampled_from([1, 2, 3, 4, 8]), h=st.integers(1, 5),
       w=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_patchify_inverts_unpatchify_on_any_tokens(n, c, p, h, w, seed):
    tokens = torch.randn(n, h * w, p * p * c, generator=torch.Generator().manual_seed(seed))
    images = unpatchify(tokens, p, c, (h * p, w * p))
    assert images.shape == (n, c, h * p, w * p)
    assert torch.equal(patchify(images, p), tokens)


@FAST
@given(n=st.integers(1, 3), c=st.integers(1, 3), p=st.sampled_from([1, 2, 4]), h=st.integers(1, 4),
       w=st.integers(1, 4), dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64,
                                                   torch.uint8, torch.bool]),
       layout=st.sampled_from(["contiguous", "channels_last", "transposed"]), seed=st.integers(0, 2**31))
def test_patchify_round_trip_keeps_every_dtype_and_memory_layout(n, c, p, h, w, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, w * p, h * p, generator=g) * 200).to(dtype).transpose(-1, -2)  # a strided view
    if layout != "transposed":
        x = x.contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    tokens = patchify(x, p)
    assert tokens.dtype == dtype and tokens.shape == (n, h * w, p * p * c)
    assert torch.equal(unpatchify(tokens, p, c, (h * p, w * p)), x)


@FEW
@given(c=st.integers(1, 3), p=st.sampled_from([2, 4, 8]), h=st.integers(1, 4), w=st.integers(1, 4),
       n=st.integers(1, 3), ratio=RATIOS, seed=st.integers(0, 2**31))
def test_mae_model_patchify_round_trip_and_mask_count_on_any_grid(c, p, h, w, n, ratio, seed):
    model = MaskedAutoencoderViT(img_size=(h * p, w * p), patch_size=p, in_chans=c, embed_dim=8, depth=1,
                                 num_heads=1, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=1)
    x = torch.rand(n, c, h * p, w * p, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    info = model.random_mask(n, ratio, generator=torch.Generator().manual_seed(seed))
    _check_mask_info(info, n, h * w, num_visible(h * w, ratio))


@FAST
@given(n=st.integers(1, 3), p=st.sampled_from([1, 2, 3, 4]), h=st.integers(1, 5), w=st.integers(1, 5),
       seed=st.integers(0, 2**31))
def test_mask_to_pixels_is_unpatchify_of_a_repeated_mask(n, p, h, w, seed):
    mask = (torch.rand(n, h * w, generator=torch.Generator().manual_seed(seed)) < 0.5).float()
    pixels = mask_to_pixels(mask, p, (h * p, w * p))
    assert torch.equal(pixels, unpatchify(mask[..., None].expand(-1, -1, p * p), p, 1, (h * p, w * p))[:, 0])
    assert torch.equal(pixels.sum((1, 2)), mask.sum(1) * p * p)  # each hidden token hides exactly p*p pixels


# ---------------------------------------------------------------------------------------------- 2. mask counts
# test_masking has the exact count of random_masking; test_entropy_masking the count of entropy masks for a few
# fixed ratios. Here: any keys (ties, infinities, NaN), any scores and temperatures, any images, the models' masks,
# and that restore is the inverse permutation of ids_shuffle = cat(keep_idx, hidden_idx).
def _check_mask_info(info: MaskInfo, n: int, length: int, len_keep: int) -> None:
    shuffle = torch.cat([info.keep_idx, info.hidden_idx], 1)  # MAE's ids_shuffle: visible tokens first
    arange = torch.arange(length).expand(n, -1)
    assert info.keep_idx.shape == (n, len_keep) and info.hidden_idx.shape == (n, length - len_keep)
    assert torch.equal(info.mask.sum(1), torch.full((n,), float(length - len_keep), dtype=info.mask.dtype))
    assert torch.equal(torch.gather(shuffle, 1, info.restore), arange)  # restore is the inverse of ids_shuffle
    assert torch.equal(torch.gather(info.restore, 1, shuffle), arange)
    assert torch.all(torch.gather(info.mask, 1, info.keep_idx) == 0)
    assert torch.all(torch.gather(info.mask, 1, info.hidden_idx) == 1)


KEYS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@FAST
@given(rows=st.integers(1, 3).flatmap(lambda n: st.integers(1, 40).flatmap(
    lambda length: st.lists(st.lists(st.one_of(KEYS, st.sampled_from([0.0, 1.0])), min_size=length,
                                     max_size=length), min_size=n, max_size=n))),
    data=st.data())
def test_mask_from_keys_keeps_exactly_len_keep_of_any_keys(rows, data):
    keys = torch.tensor(rows, dtype=torch.float32)
    n, length = keys.shape
    len_keep = data.draw(st.integers(1, length))
    info = mask_from_keys(keys, len_keep)
    _check_mask_info(info, n, length, len_keep)
    for row, keep, hide in zip(keys, info.keep_idx, info.hidden_idx):  # the visible keys are the smallest
        if torch.isfinite(row).all() and len(hide):
            assert row[keep].max() <= row[hide].min()


@FAST
@given(n=st.integers(1, 3), length=st.integers(1, 60), ratio=RATIOS, scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3]),
       tau=st.sampled_from([1e-6, 0.1, 1.0, 10.0, float("inf")]), tied=st.booleans(), seed=st.integers(0, 2**31))
def test_informed_masking_hides_exactly_the_promised_number_for_any_scores(n, length, ratio, scale, tau, tied, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, length, generator=g) * scale
    if tied:  # few distinct scores: ties everywhere
        scores = scores.round()
    info = informed_masking(scores, ratio, tau=tau, generator=g)
    _check_mask_info(info, n, length, num_visible(length, ratio))


@FAST
@given(n=st.integers(1, 3), p=st.sampled_from([1, 2, 4, 8]), h=st.integers(1, 4), w=st.integers(1, 4),
       c=st.integers(1, 3), ratio=RATIOS, tau=st.sampled_from([1e-4, 0.5, 2.0, float("inf")]),
       direction=st.sampled_from(["high", "low"]), bins=st.integers(2, 32),
       kind=st.sampled_from(["uniform", "constant", "out of range", "two levels"]), use_noise=st.booleans(),
       seed=st.integers(0, 2**31))
def test_entropy_masks_hide_exactly_the_promised_number_for_any_image(n, p, h, w, c, ratio, tau, direction, bins,
                                                                      kind, use_noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h * p, w * p, generator=g)
    x = {"uniform": x, "constant": torch.full_like(x, 0.3), "out of range": 4 * x - 2,
         "two levels": (x > 0.9) * 1.0}[kind]
    noise = torch.rand(n, h * w, generator=g) if use_noise else None
    info = entropy_masking(x, p, ratio, tau=tau, direction=direction, bins=bins, generator=g, noise=noise)
    _check_mask_info(info, n, h * w, num_visible(h * w, ratio))


@FAST
@given(n=st.integers(1, 3), length=st.integers(1, 40), ratio=RATIOS, scale=st.sampled_from([0.0, 1.0, 1e6]),
       seed=st.integers(0, 2**31))
def test_infinite_tau_is_random_masking_with_the_same_noise_for_any_scores(n, length, ratio, scale, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, length, generator=g) * scale
    noise = torch.rand(n, length, generator=g)
    a, b = informed_masking(scores, ratio, tau=float("inf"), noise=noise), random_masking(n, length, ratio, noise=noise)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


BUG_CONSTANT_SCORES = ("masking.py informed_masking: a constant score c/tau != 0 added to the Gumbel keys in "
                       "float32 can merge the keys of two adjacent noise values (ties broken by index), so the mask "
                       "is not random_masking's with the same noise, contrary to the docstring")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=BUG_CONSTANT_SCORES)
@settings(max_examples=30, deadline=None, derandomize=True)
@given(k=st.integers(1, 2**24 - 2), score=st.sampled_from([0.0, 0.25, 2.5, 100.0]))
@example(k=2**23 + 12345, score=2.5)  # found by hand; hypothesis alone shrinks to k=6988, score=100.0
def test_constant_scores_mask_like_random_masking_with_the_same_noise(k, score):
    noise = torch.tensor([[(k + 1) * GRID, k * GRID]])  # two adjacent values of the noise grid, larger first
    a = informed_masking(torch.full((1, 2), score), 0.5, tau=0.3, noise=noise)
    b = random_masking(1, 2, 0.5, noise=noise)
    assert torch.equal(a.mask, b.mask)


@FEW
@given(n=st.integers(1, 3), img=st.sampled_from([32, 64]), cell=st.sampled_from([4, 8, 16, 32]), ratio=RATIOS,
       masking=st.sampled_from(["random", "entropy"]), source=st.sampled_from(["generator", "batch noise"]),
       seed=st.integers(0, 2**31))
def test_fcmae_masks_hide_exactly_the_promised_number_of_cells(n, img, cell, ratio, masking, source, seed):
    model = masked_convnext_atto(img_size=img, mask_patch=cell, mask_ratio=ratio, masking=masking)
    x = torch.rand(n, 1, img, img, generator=torch.Generator().manual_seed(seed))
    length = (img // cell) ** 2
    if source == "generator":
        info = model.make_mask(x, generator=torch.Generator().manual_seed(seed))
    else:
        info = model.make_mask(x, noise=Batch([x], torch.arange(n) + seed).rand(length))
    _check_mask_info(info, n, length, num_visible(length, ratio))
    assert torch.equal(model.visible_map(info.mask).sum((1, 2, 3)), torch.full((n,), float(info.len_keep)))


@FEW
@given(n=st.integers(1, 3), img=st.sampled_from([32, 64]), stride=st.sampled_from([16, 32]), ratio=RATIOS,
       seed=st.integers(0, 2**31))
def test_spark_masks_hide_exactly_the_promised_number_of_cells(n, img, stride, ratio, seed):
    model = spark_resnet18(img_size=img, mask_stride=stride, mask_ratio=ratio)
    x = torch.zeros(n, 1, img, img)
    length = (img // stride) ** 2
    for info in (model.make_mask(x, generator=torch.Generator().manual_seed(seed)),
                 model.make_mask(x, noise=Batch([x], torch.arange(n) + seed).rand(length))):
        _check_mask_info(info, n, length, num_visible(length, ratio))
        assert torch.equal(model.visible_map(info.mask).sum((1, 2, 3)), torch.full((n,), float(info.len_keep)))


@FAST
@given(n=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5), scale=st.sampled_from([1, 2, 3, 4]),
       ratio=RATIOS, seed=st.integers(0, 2**31))
def test_miram_scale_masks_hide_exactly_the_children_of_hidden_tokens(n, h, w, scale, ratio, seed):
    info = random_masking(n, h * w, ratio, generator=torch.Generator().manual_seed(seed))
    up = upsample_tokens(info.mask, (h, w), scale)
    assert up.shape == (n, h * w * scale**2)
    assert torch.equal(up.sum(1), info.mask.sum(1) * scale**2)  # s*s times as many, exactly
    hidden_children = torch.zeros_like(up).scatter_(1, child_indices(info.hidden_idx, (h, w), scale), 1.0)
    assert torch.equal(hidden_children, up)  # and exactly the children of the hidden tokens


# --------------------------------------------------------------------------------------- 3. nested label budgets
# test_splits has nested, sorted, class-capped label_budget pairs and nested label_fraction sets. Here: the
# budgets budgets_for keeps, class_names, the documented containment label_budget <= label_fraction, the shared
# per-class order of stratified_sample, and budget_subset within each split.
@FAST
@given(counts=st.lists(st.integers(1, 60), min_size=1, max_size=4),
       budgets=st.lists(st.integers(1, 80), min_size=1, max_size=6), seed=st.integers(0, 2**31))
def test_budgets_for_keeps_what_fits_and_the_kept_sets_grow_strictly(counts, budgets, seed):
    labels = _labels(counts)
    budgets = [1, *budgets]  # at least one fits
    kept = budgets_for(labels, budgets, warn=False)
    assert kept == [b for b in budgets if b <= max(counts)]
    previous: set[int] = set()
    for b in sorted(set(kept)):
        chosen = set(_quiet(label_budget, labels, b, seed).tolist())
        assert previous < chosen  # nested and strictly larger: every kept budget adds labels
        assert np.array_equal(np.bincount(labels[sorted(chosen)], minlength=len(counts)), np.minimum(counts, b))
        previous = chosen


@FAST
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(lambda c: sum(c) > 0),
       extra=st.integers(0, 2), data=st.data(), seed=st.integers(0, 2**31))
def test_label_budget_ignores_absent_classes_whether_named_or_not(counts, extra, data, seed):
    labels = _labels(counts)
    n = data.draw(st.integers(1, max(counts)))
    names = [f"c{i}" for i in range(len(counts) + extra)]  # classes past the last label are absent too
    named = _quiet(label_budget, labels, n, seed, class_names=names)
    np.testing.assert_array_equal(named, _quiet(label_budget, labels, n, seed))
    np.testing.assert_array_equal(np.bincount(labels[named], minlength=len(counts)), np.minimum(counts, n))


@FAST
@given(counts=st.lists(st.integers(1, 120), min_size=1, max_size=4), fraction=st.floats(0.001, 1.0),
       data=st.data(), seed=st.integers(0, 2**31))
def test_label_fraction_contains_exactly_the_budgets_it_keeps_enough_of(counts, fraction, data, seed):
    labels = _labels(counts)
    n = data.draw(st.integers(1, max(counts)))
    frac = label_fraction(labels, fraction, seed)
    budget = _quiet(label_budget, labels, n, seed)
    kept = np.bincount(labels[frac], minlength=len(counts))
    # both are prefixes of one per-class order: contained exactly when the fraction keeps what the budget takes
    assert (set(budget.tolist()) <= set(frac.tolist())) == bool(np.all(kept >= np.minimum(counts, n)))


@FAST
@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=5).filter(lambda c: sum(c) > 0), data=st.data(),
       seed=st.integers(0, 2**31))
def test_stratified_sample_takes_each_class_in_the_budget_order(counts, data, seed):
    labels = _labels(counts)
    idx = stratified_sample(labels, data.draw(st.integers(1, len(labels))), seed)
    take = np.bincount(labels[idx], minlength=len(counts))
    for c in np.flatnonzero(take):
        budget = _quiet(label_budget, labels, int(take[c]), seed)
        np.testing.assert_array_equal(idx[labels[idx] == c], budget[labels[budget] == c])


@FAST
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=4), val=st.floats(0, 0.4), test=st.floats(0, 0.4),
       split=st.sampled_from(SPLITS), data=st.data(), seed=st.integers(0, 2**31))
def test_budget_subset_is_nested_capped_and_stays_in_its_split(counts, val, test, split, data, seed):
    ds = assign_splits(_dataset(counts), val=val, test=test, seed=seed)
    in_split = np.bincount(ds.labels[ds.split == split], minlength=len(counts))
    if in_split.max() == 0:  # an empty split (a fraction of 0, or classes too small to give it a sample)
        return
    small = data.draw(st.integers(1, int(in_split.max())))
    large = data.draw(st.integers(small, int(in_split.max())))
    a, b = (_quiet(budget_subset, ds, k, seed, split) for k in (small, large))
    allowed = set(ds.meta["id"][ds.split == split].tolist())
    assert set(a.meta["id"].tolist()) <= set(b.meta["id"].tolist()) <= allowed
    for sub, k in ((a, small), (b, large)):
        np.testing.assert_array_equal(np.bincount(sub.labels, minlength=len(counts)), np.minimum(in_split, k))


# -------------------------------------------------------------------------------------------------- 4. splits
# test_splits has: assign_splits puts every sample in exactly one split, keeps a training sample per class and one
# per positive-fraction split from three samples up. Here: split sizes match their shares up to rounding, the
# phantom splits, and the BUSI split carried over from BreastMNIST.
@FAST
@given(counts=st.lists(st.integers(1, 200), min_size=1, max_size=4), val=st.floats(0, 0.45), test=st.floats(0, 0.45),
       seed=st.integers(0, 2**31))
def test_split_sizes_are_their_shares_up_to_rounding(counts, val, test, seed):
    ds = assign_splits(_dataset(counts), val=val, test=test, seed=seed)
    for c, n in enumerate(counts):
        shares = {"train": n * (1 - val - test), "val": n * val, "test": n * test}
        if all(s == 0 or s >= 1 for s in shares.values()) and shares["train"] >= 1:
            for name, share in shares.items():  # val and test rounded half up; train takes the rest
                off = 1.0 if name == "train" else 0.5
                assert abs(int((ds.split[ds.labels == c] == name).sum()) - share) <= off + 1e-9, (c, name)


@FEW
@given(sizes=st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 4)).filter(lambda s: sum(s) > 0),
       seed=st.integers(0, 1000))
def test_phantom_splits_have_the_asked_sizes_and_share_no_image(sizes, seed):
    ds = make_phantom_splits(*sizes, image_size=32, seed=seed)
    assert [int((ds.split == s).sum()) for s in SPLITS] == list(sizes)
    np.testing.assert_array_equal(ds.split, np.repeat(SPLITS, sizes))
    flat = ds.images.reshape(len(ds), -1)
    for i, j in zip(*np.triu_indices(len(ds), 1)):
        if ds.split[i] != ds.split[j]:
            assert not np.array_equal(flat[i], flat[j])
    if sizes[0]:
        np.testing.assert_array_equal(ds.get_split("train").images, make_phantom(sizes[0], 32, seed=seed).images)


@pytest.fixture(scope="module")
def scans() -> tuple[np.ndarray, np.ndarray]:
    """Ten phantom 'BUSI' scans at 64 px and their 28-px 'BreastMNIST' versions (resized, as the release was made)."""
    images = make_phantom(10, 64, seed=7).images
    small = F.interpolate(torch.from_numpy(images), size=(28, 28), mode="bilinear", antialias=True)
    return images, small.clamp(0, 1).numpy()


@FEW
@given(data=st.data())
def test_busi_split_never_trains_on_a_copy_of_a_held_out_image(scans, data):
    images, small = scans
    # BUSI holds duplicates: every BUSI image is a copy of one scan, and the release holds each BUSI image once
    source = np.array(data.draw(st.lists(st.integers(0, 9), min_size=4, max_size=14)))
    order = np.array(data.draw(st.permutations(range(len(source)))))
    official = np.array(data.draw(st.lists(st.sampled_from(SPLITS), min_size=len(source), max_size=len(source))))
    busi = ImageDataset(images[source], np.zeros(len(source)), ("x",))
    release = ImageDataset(small[source[order]], np.zeros(len(source)), ("x",), split=official)
    split = busi_split_from_breastmnist(busi, release)
    assert split.shape == (len(source),) and np.isin(split, SPLITS).all()
    held_out = set(source[order][official != "train"].tolist())  # scans with a copy in the release's val/test
    for i, s in enumerate(split):
        assert not (s == "train" and source[i] in held_out), i
        copies = set(official[source[order] == source[i]].tolist())  # the splits of this scan's copies in the release
        assert s in copies or s == "test"  # the split of its (best-matching) copy carried over, or moved to test


# --------------------------------------------------------------------------------------------- 5. bootstrap
# Where the point estimate is guaranteed to lie in a percentile interval: only where every resample repeats it (a
# constant statistic). Otherwise nothing guarantees it, not even for the mean (test_..._need_not_contain_its_point):
# B resamples can all fall on one side of the point, and a biased statistic sits outside its bootstrap distribution.
# What holds for all data is that (low, high) are the alpha/2 and 1 - alpha/2 percentiles of the finite resample
# statistics: low <= high, both within their range. test_evaluate checks the containment for a few fixed data sets.
class Recorder:
    """A metric (or statistic) without a batch kernel that records every value it returns: the point first, then
    each resample's."""

    def __init__(self, fn) -> None:
        self.fn, self.values = fn, []

    def __call__(self, *args: np.ndarray) -> float:
        self.values.append(self.fn(*args))
        return self.values[-1]


def _probs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    p = rng.random(shape) + 0.01
    return p / p.sum(-1, keepdims=True)


def _check_percentiles(ci: ev.MetricCI, stats: np.ndarray, alpha: float) -> None:
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        assert math.isnan(ci.low) and math.isnan(ci.high)
        return
    np.testing.assert_allclose([ci.low, ci.high], np.percentile(stats, [50 * alpha, 100 - 50 * alpha]), rtol=1e-12)
    assert stats.min() <= ci.low <= ci.high <= stats.max()


@FAST
@given(n=st.integers(1, 25), k=st.integers(2, 3), metric=st.sampled_from(["acc", "auc", "f1"]),
       n_boot=st.integers(1, 40), alpha=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_bootstrap_ci_is_the_percentile_interval_of_its_resample_statistics(n, k, metric, n_boot, alpha, seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, k, n), _probs(rng, (n, k))
    rec = Recorder(ev.METRICS[metric])
    ci = ev.bootstrap_ci(rec, y, p, n_boot=n_boot, alpha=alpha, seed=seed)
    assert len(rec.values) == 1 + n_boot
    assert ci.value == rec.values[0] or (math.isnan(ci.value) and math.isnan(rec.values[0]))
    _check_percentiles(ci, np.array(rec.values[1:]), alpha)  # AUC's undefined (NaN) resamples are skipped


@FAST
@given(values=st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1, max_size=30),
       n_boot=st.integers(1, 60), alpha=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_bootstrap_mean_ci_lies_within_the_range_of_the_data(values, n_boot, alpha, seed):
    ci = ev.bootstrap_mean_ci(values, n_boot=n_boot, alpha=alpha, seed=seed)
    v = np.array(values)[np.isfinite(values)]
    if len(v) == 0:
        assert all(math.isnan(x) for x in ci)
        return
    slack = 1e-12 * max(1.0, np.abs(v).max())  # a mean of values <= m may round a few ulps above m
    assert v.min() - slack <= ci.low <= ci.high <= v.max() + slack
    assert v.min() - slack <= ci.value <= v.max() + slack


@FAST
@given(n=st.integers(1, 30), k=st.integers(2, 4), runs=st.integers(1, 4), right=st.booleans(),
       value=st.floats(-1e3, 1e3), n_boot=st.integers(1, 60), alpha=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_a_statistic_every_resample_repeats_has_its_point_inside_the_interval(n, k, runs, right, value, n_boot,
                                                                             alpha, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = np.eye(k)[y if right else (y + 1) % k]  # every prediction right (accuracy 1) or every one wrong (0)
    same = _probs(rng, (runs, n, k))
    for ci in (ev.bootstrap_ci(ev.accuracy, y, probs, n_boot, alpha, seed),
               ev.bootstrap_runs_ci(ev.accuracy, y, np.stack([probs] * runs), n_boot, alpha, seed),
               ev.paired_difference_ci(ev.balanced_accuracy, y, same, same, n_boot, alpha, seed),  # B - A = 0
               ev.bootstrap_mean_ci(np.full(n, value), n_boot, alpha, seed)):
        assert ci.low <= ci.value <= ci.high
        assert ci.low == pytest.approx(ci.value, abs=1e-12) and ci.high == pytest.approx(ci.value, abs=1e-12)


@FAST
@given(n=st.integers(1, 20), k=st.integers(2, 3), runs=st.integers(1, 4), n_boot=st.integers(1, 30),
       alpha=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_runs_interval_lies_within_the_range_of_the_resampled_run_scores(n, k, runs, n_boot, alpha, seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, k, n), _probs(rng, (runs, n, k))
    rec = Recorder(ev.balanced_accuracy)
    ci = ev.bootstrap_runs_ci(rec, y, p, n_boot=n_boot, alpha=alpha, seed=seed)
    point, resampled = np.array(rec.values[:runs]), np.array(rec.values[runs:])
    assert len(resampled) == runs * n_boot and ci.value == pytest.approx(point.mean())
    # each replicate is a mean of its drawn runs' scores, so the interval lies within their range (up to rounding)
    assert resampled.min() - 1e-12 <= ci.low <= ci.high <= resampled.max() + 1e-12


@FAST
@given(blocks=st.integers(1, 3), runs=st.integers(1, 3), n=st.integers(2, 20), n_boot=st.integers(1, 30),
       alpha=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_blocks_statistic_ci_is_the_percentile_interval_of_its_replicates(blocks, runs, n, n_boot, alpha, seed):
    rng = np.random.default_rng(seed)
    y, arr = rng.integers(0, 2, n), _probs(rng, (blocks, runs, n, 2))
    rec = Recorder(lambda m: float(m.max() - m.min() + m @ np.arange(1.0, blocks + 1)))  # any function of m
    ci = ev.blocks_statistic_ci(lambda t, q: ev.roc_auc(t, q), y, arr, rec, n_boot, alpha, seed)
    assert ci.value == rec.values[0] or math.isnan(ci.value)
    _check_percentiles(ci, np.array(rec.values[1:]), alpha)


@FAST
@given(runs=st.integers(1, 3), n=st.integers(2, 25), k=st.integers(2, 3),
       metric=st.sampled_from(["acc", "bal_acc", "auc", "ap"]), n_boot=st.integers(1, 40),
       alpha=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_paired_difference_is_antisymmetric_and_a_linear_contrast(runs, n, k, metric, n_boot, alpha, seed):
    rng = np.random.default_rng(seed)
    y, a, b = rng.integers(0, k, n), _probs(rng, (runs, n, k)), _probs(rng, (runs, n, k))
    fn = ev.METRICS[metric]
    ab = ev.paired_difference_ci(fn, y, a, b, n_boot, alpha, seed)
    ba = ev.paired_difference_ci(fn, y, b, a, n_boot, alpha, seed)
    np.testing.assert_allclose([ba.value, ba.low, ba.high], [-ab.value, -ab.high, -ab.low], atol=1e-12)
    np.testing.assert_allclose(ev.blocks_statistic_ci(fn, y, np.stack([a, b]), [-1, 1], n_boot, alpha, seed), ab,
                               atol=1e-12)
    if not math.isnan(ab.low):
        assert ab.low <= ab.high


def test_a_percentile_interval_need_not_contain_its_point():
    # Why the properties above are the weaker ones. A biased statistic: the share of distinct cases is 1 on the data
    # and about 1 - 1/e on every resample, so no resample (hence no percentile) reaches the point.
    y, s = np.arange(50) % 2, np.linspace(0.01, 0.99, 50)
    p = np.stack([1 - s, s], 1)  # 50 distinct cases
    distinct = ev.bootstrap_ci(lambda t, q: len(np.unique(q, axis=0)) / len(q), y, p, n_boot=200)
    assert distinct.value == 1.0 and distinct.high < 0.8
    # Even the mean: B resamples can all fall on one side of the point (here B = 1)
    ci = ev.bootstrap_mean_ci([0.0, 1.0, 5.0], n_boot=1, seed=0)
    assert ci.low == ci.high != ci.value
