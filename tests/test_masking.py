"""Tests for medmae_nb.masking: patchify layout and round-trip, mask bookkeeping, Gumbel-top-k limits, lesion scores."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medmae_nb.masking import (
    MaskInfo,
    MaskingError,
    fully_hidden,
    gather_tokens,
    informed_masking,
    lesion_coverage,
    mask_from_keys,
    mask_to_pixels,
    num_visible,
    patch_grid,
    patchify,
    random_masking,
    unpatchify,
)

FAST = settings(max_examples=30, deadline=None)


# ------------------------------------------------------------------------------------------------ patchify
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("p", [4, 8, 16, 32])
def test_patchify_round_trip(channels, p):
    x = torch.rand(2, channels, 64, 96)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (64 // p) * (96 // p), p * p * channels)
    assert torch.equal(unpatchify(tokens, p, channels, (64, 96)), x)


@FAST
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    p=st.sampled_from([1, 2, 3, 4, 8]),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    data=st.data(),
)
def test_patchify_layout_and_round_trip_property(n, c, p, h, w, data):
    x = torch.randn(n, c, h * p, w * p)
    tokens = patchify(x, p)
    assert torch.equal(unpatchify(tokens, p, c, (h * p, w * p)), x)
    # pixel (row r, col s, channel ch) of patch (i, j) sits at token i*w + j, position (r*p + s)*C + ch
    i, j = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    r, s, ch = data.draw(st.integers(0, p - 1)), data.draw(st.integers(0, p - 1)), data.draw(st.integers(0, c - 1))
    assert tokens[0, i * w + j, (r * p + s) * c + ch] == x[0, ch, i * p + r, j * p + s]


def test_patchify_rejects_indivisible_sizes():
    with pytest.raises(MaskingError, match="not divisible by patch size 8"):
        patchify(torch.zeros(1, 1, 30, 32), 8)
    with pytest.raises(MaskingError, match="expects images"):
        patchify(torch.zeros(1, 32, 32), 8)
    with pytest.raises(MaskingError, match="do not fit"):
        unpatchify(torch.zeros(1, 16, 64), 8, 3, 32)
    with pytest.raises(MaskingError, match="positive int"):
        patch_grid(32, 0)
    assert patch_grid((32, 48), 16) == (2, 3)
    assert issubclass(MaskingError, ValueError)


# ------------------------------------------------------------------------------------------------ masking
def _check_mask(info: MaskInfo, n: int, length: int, len_keep: int) -> None:
    assert info.keep_idx.shape == (n, len_keep) and info.mask.shape == (n, length) and info.restore.shape == (n, length)
    assert torch.equal(info.mask.sum(1), torch.full((n,), float(length - len_keep)))  # exact count per sample
    assert torch.all(gather_tokens(info.mask, info.keep_idx) == 0)  # kept tokens are visible
    assert torch.equal(info.restore.sort(1).values, torch.arange(length).expand(n, -1))  # a permutation


@FAST
@given(n=st.integers(1, 4), length=st.integers(1, 300), ratio=st.floats(0.01, 0.99))
def test_random_masking_exact_count_property(n, length, ratio):
    info = random_masking(n, length, ratio, generator=torch.Generator().manual_seed(0))
    len_keep = num_visible(length, ratio)
    assert len_keep == max(1, math.floor(length * (1 - ratio) + 1e-6))
    _check_mask(info, n, length, len_keep)


def test_num_visible_floors_like_mae_and_keeps_one():
    assert num_visible(196, 0.75) == 49
    assert num_visible(10, 0.75) == 2  # floor(2.5)
    assert num_visible(100, 0.9) == 10  # not 9 from 9.999... float error
    assert num_visible(4, 0.99) == 1


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, float("nan"), "0.5"])
def test_mask_ratio_must_lie_in_open_unit_interval(ratio):
    with pytest.raises(MaskingError, match="strictly between 0 and 1"):
        random_masking(2, 16, ratio)
    with pytest.raises(MaskingError, match="strictly between 0 and 1"):
        informed_masking(torch.zeros(2, 16), ratio)


def test_restore_unshuffle_puts_visible_tokens_back():
    n, length, dim = 3, 20, 5
    x = torch.randn(n, length, dim)
    info = random_masking(n, length, 0.6, generator=torch.Generator().manual_seed(1))
    visible = gather_tokens(x, info.keep_idx)
    mask_token = torch.full((n, length - info.len_keep, dim), 7.0)
    back = gather_tokens(torch.cat([visible, mask_token], 1), info.restore)
    keep = info.mask == 0
    assert torch.equal(back[keep], x[keep])
    assert torch.all(back[~keep] == 7.0)


def test_generator_makes_masks_reproducible_and_device_follows():
    a = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(3))
    b = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(3), device="cpu")
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a.keep_idx.dtype == torch.int64 and a.mask.dtype == torch.float32
    assert a.len_keep == 16 and a.num_tokens == 64


def test_informed_masking_small_tau_is_top_k():
    scores = torch.randn(8, 50)
    info = informed_masking(scores, 0.7, tau=1e-6, generator=torch.Generator().manual_seed(0))
    k = 50 - num_visible(50, 0.7)
    top = torch.zeros_like(scores).scatter_(1, scores.topk(k, dim=1).indices, 1.0)
    assert torch.equal(info.mask, top)


def test_informed_masking_large_tau_is_uniform():
    n, length = 4000, 16
    scores = torch.linspace(0, 10, length).expand(n, -1)
    for tau in (1e6, float("inf")):
        info = informed_masking(scores, 0.5, tau=tau, generator=torch.Generator().manual_seed(0))
        freq = info.mask.mean(0)
        assert torch.allclose(freq, torch.full((length,), 0.5), atol=0.04), freq


def test_informed_masking_samples_proportional_to_exp_score():
    # with one hidden token, Gumbel-top-1 hides token i with probability softmax(score / tau)_i
    n, tau = 20000, 0.5
    scores = torch.tensor([0.0, 0.3, 0.6, 1.0]).expand(n, -1)
    info = informed_masking(scores, 0.25, tau=tau, generator=torch.Generator().manual_seed(0))
    assert torch.all(info.mask.sum(1) == 1)
    assert torch.allclose(info.mask.mean(0), torch.softmax(scores[0] / tau, 0), atol=0.015)


def test_random_equals_informed_with_constant_scores():
    # the Gumbel transform is monotonic, so the same uniform draws give the same order
    for seed in range(3):
        a = random_masking(5, 49, 0.75, generator=torch.Generator().manual_seed(seed))
        b = informed_masking(torch.full((5, 49), 2.5), 0.75, tau=0.3, generator=torch.Generator().manual_seed(seed))
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    # and the same statistics: every token hidden with probability 1 - len_keep / L
    info = informed_masking(torch.zeros(3000, 10), 0.6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(info.mask.mean(0), torch.full((10,), 0.6), atol=0.04)


def test_informed_masking_errors():
    with pytest.raises(MaskingError, match="tau must be > 0"):
        informed_masking(torch.zeros(1, 4), 0.5, tau=0)
    with pytest.raises(MaskingError, match=r"scores must have shape \(N, L\)"):
        informed_masking(torch.zeros(4), 0.5)
    with pytest.raises(MaskingError, match="len_keep"):
        mask_from_keys(torch.zeros(1, 4), 0)


def test_gather_tokens_2d_and_3d():
    x = torch.arange(12.0).reshape(2, 3, 2)
    idx = torch.tensor([[2, 0], [1, 1]])
    assert gather_tokens(x, idx).tolist() == [[[4, 5], [0, 1]], [[8, 9], [8, 9]]]
    assert gather_tokens(x[..., 0], idx).tolist() == [[4, 0], [8, 8]]


# ---------------------------------------------------------------------------------------- lesion scores
def test_mask_to_pixels_matches_unpatchify():
    info = random_masking(2, 16, 0.5, generator=torch.Generator().manual_seed(0))
    pix = mask_to_pixels(info.mask, 4, 16)
    ref = unpatchify(info.mask[..., None].expand(-1, -1, 16), 4, 1, 16)[:, 0]
    assert torch.equal(pix, ref)
    with pytest.raises(MaskingError, match="does not fit"):
        mask_to_pixels(info.mask, 8, 16)


def test_lesion_coverage_and_fully_hidden():
    lesion = torch.zeros(3, 8, 8, dtype=torch.bool)
    lesion[0, 0:4, 0:2] = True  # inside patch 0 (top-left)
    lesion[1, 2:6, 2:6] = True  # a quarter in each of the 4 patches
    mask = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    cov = lesion_coverage(mask, lesion, 4)
    assert cov[0] == 1.0 and cov[1] == 0.5 and math.isnan(cov[2])
    assert fully_hidden(mask, lesion, 4).tolist() == [True, False, False]
    assert lesion_coverage(mask, lesion[:, None], 4)[1] == 0.5  # (N, 1, H, W) accepted
