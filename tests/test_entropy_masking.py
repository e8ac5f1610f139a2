"""Entropy-guided masking: the entropy itself, exact mask counts, the temperature limits, per-sample noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medmae_nb.masking import (
    MaskingError,
    entropy_masking,
    entropy_scores,
    informed_masking,
    num_visible,
    patch_entropy,
    random_masking,
)


def test_constant_patch_has_zero_entropy_and_an_even_histogram_log_b():
    bins = 8
    x = torch.full((1, 1, 8, 8), 0.3)
    assert patch_entropy(x, 8, bins=bins).item() == 0.0
    # 64 pixels, 8 per bin: the histogram is uniform, so the entropy is log B
    levels = (torch.arange(64) % bins).float() / bins + 0.5 / bins
    x = levels.reshape(1, 1, 8, 8)
    assert patch_entropy(x, 8, bins=bins).item() == pytest.approx(math.log(bins), abs=1e-6)
    # two equally filled bins: log 2, wherever in the range they lie
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2, :] = 0.95
    assert patch_entropy(x, 4, bins=bins).item() == pytest.approx(math.log(2), abs=1e-6)


def test_the_bin_range_is_fixed_not_per_patch():
    """Per-patch min-max bins would give faint speckle (0.00-0.02) the entropy of a full-range texture."""
    g = torch.Generator().manual_seed(0)
    faint = torch.rand(1, 1, 16, 16, generator=g) * 0.02
    full = torch.rand(1, 1, 16, 16, generator=g)
    h = patch_entropy(torch.cat([faint, full]), 16, bins=16)
    assert h[0].item() == 0.0 and h[1].item() > 2.5
    # values outside the range count in the end bins
    x = torch.cat([torch.full((1, 1, 4, 2), -1.0), torch.full((1, 1, 4, 2), 2.0)], dim=-1)
    assert patch_entropy(x, 4, bins=4).item() == pytest.approx(math.log(2), abs=1e-6)


def test_colour_images_are_averaged_to_grey_and_patches_are_row_major():
    x = torch.zeros(1, 3, 8, 8)
    x[:, :, 4:, 4:] = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    h = patch_entropy(x, 4)
    assert h.shape == (1, 4) and (h[0, :3] == 0).all() and h[0, 3] > 0
    torch.testing.assert_close(h, patch_entropy(x.mean(1, keepdim=True), 4))


@settings(max_examples=25, deadline=None)
@given(bins=st.integers(2, 32), seed=st.integers(0, 10_000), p=st.sampled_from([2, 4, 8]))
def test_entropy_lies_between_zero_and_log_b(bins, seed, p):
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    h = patch_entropy(x, p, bins=bins)
    assert h.shape == (2, (16 // p) ** 2)
    assert (h >= -1e-6).all() and (h <= math.log(min(bins, p * p)) + 1e-5).all()


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.6, 0.75, 0.9])
@pytest.mark.parametrize("direction", ["high", "low"])
def test_entropy_masks_hide_exactly_the_asked_number(ratio, direction):
    x = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    info = entropy_masking(x, 16, ratio, tau=0.5, direction=direction, generator=torch.Generator().manual_seed(3))
    hidden = 16 - num_visible(16, ratio)
    assert info.mask.sum(1).tolist() == [hidden] * 5
    assert info.keep_idx.shape == (5, 16 - hidden) and info.hidden_idx.shape == (5, hidden)


def _busy_and_flat(n: int = 64) -> torch.Tensor:
    """Images whose left half is noise (high entropy) and right half flat (entropy 0), 16 cells of 8 px."""
    g = torch.Generator().manual_seed(4)
    x = torch.full((n, 1, 32, 32), 0.5)
    x[..., :16] = torch.rand(n, 1, 32, 16, generator=g)
    return x


def test_tau_to_zero_is_top_k_entropy_in_either_direction():
    x = _busy_and_flat(4)
    busy = torch.tensor([c % 4 < 2 for c in range(16)])  # row-major 4x4 grid, left two columns
    high = entropy_masking(x, 8, 0.5, tau=1e-6, direction="high", generator=torch.Generator().manual_seed(5))
    low = entropy_masking(x, 8, 0.5, tau=1e-6, direction="low", generator=torch.Generator().manual_seed(5))
    assert (high.mask.bool() == busy).all()
    assert (low.mask.bool() == ~busy).all()


def test_tau_to_infinity_is_uniform_masking_with_the_same_noise():
    x = _busy_and_flat(8)
    u = torch.rand(8, 16, generator=torch.Generator().manual_seed(6))
    guided = entropy_masking(x, 8, 0.75, tau=float("inf"), noise=u)
    uniform = random_masking(8, 16, 0.75, noise=u)
    assert torch.equal(guided.mask, uniform.mask) and torch.equal(guided.restore, uniform.restore)


def test_moderate_tau_prefers_high_entropy_but_stays_random():
    x = _busy_and_flat(400)
    busy = torch.tensor([c % 4 < 2 for c in range(16)])
    info = entropy_masking(x, 8, 0.5, tau=1.0, generator=torch.Generator().manual_seed(7))
    share_busy = info.mask[:, busy].mean().item()
    assert 0.6 < share_busy < 0.99  # preferred, not always
    distinct = {tuple(m.tolist()) for m in info.mask}
    assert len(distinct) > 20


def test_per_sample_noise_makes_a_sample_mask_independent_of_its_batch():
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(8))
    u = torch.rand(6, 16, generator=torch.Generator().manual_seed(9))
    whole = entropy_masking(x, 8, 0.6, noise=u)
    part = entropy_masking(x[2:4], 8, 0.6, noise=u[2:4])
    assert torch.equal(whole.mask[2:4], part.mask)


def test_scores_are_standardised_per_image_and_flat_images_mask_uniformly():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(10))
    z = entropy_scores(x, 8)
    torch.testing.assert_close(z.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(1, correction=0), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(entropy_scores(x, 8, direction="low"), -z)
    assert (entropy_scores(torch.zeros(1, 1, 32, 32), 8) == 0).all()


def test_informed_masking_takes_ready_noise_like_random_masking():
    s = torch.randn(3, 10, generator=torch.Generator().manual_seed(11))
    a = informed_masking(s, 0.5, tau=0.7, generator=torch.Generator().manual_seed(12))
    b = informed_masking(s, 0.5, tau=0.7, noise=torch.rand(3, 10, generator=torch.Generator().manual_seed(12)))
    assert torch.equal(a.mask, b.mask)
    with pytest.raises(MaskingError, match="noise must have the shape"):
        informed_masking(s, 0.5, noise=torch.rand(3, 9))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(bins=1), "bins must be an int >= 2"),
        (dict(value_range=(1.0, 0.0)), "high > low"),
        (dict(direction="up"), "direction must be 'high'"),
        (dict(tau=0.0), "tau must be > 0"),
        (dict(mask_ratio=1.0), "mask_ratio must lie strictly between 0 and 1"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, match):
    args = dict(patch_size=8, mask_ratio=0.5) | kwargs
    with pytest.raises(MaskingError, match=match):
        entropy_masking(torch.rand(1, 1, 16, 16), **args)


def test_images_must_be_4d_and_tile_into_patches():
    with pytest.raises(MaskingError, match=r"\(N, C, H, W\)"):
        patch_entropy(torch.rand(16, 16), 8)
    with pytest.raises(MaskingError):
        patch_entropy(torch.rand(1, 1, 20, 20), 8)
