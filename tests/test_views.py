"""Multi-view transforms: counts, sizes, range, seeding, modality presets and argument errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torchvision.transforms import v2

from medmae_nb.data import MultiView, multi_crop, two_views


def gradient(channels: int = 1, size: int = 64) -> torch.Tensor:
    """Bright at the top (the skin in ultrasound), dark at the bottom, plus a left-right ramp so views differ."""
    rows = torch.linspace(0.9, 0.1, size).view(size, 1)
    cols = torch.linspace(0.0, 0.1, size).view(1, size)
    image = (rows + cols).clamp(0, 1).expand(channels, size, size).clone()
    if channels == 3:
        image[1] *= 0.5  # some colour, so that colour jitter and random grayscale have something to change
    return image


def top_minus_bottom(view: torch.Tensor) -> float:
    """Mean of the top quarter of rows minus that of the bottom quarter."""
    q = max(1, view.shape[-2] // 4)
    return float(view[..., :q, :].mean() - view[..., -q:, :].mean())


def test_two_views_shapes_dtype_range() -> None:
    views = two_views(32)
    assert views.n_views == 2
    for seed in range(20):
        torch.manual_seed(seed)
        out = views(gradient(size=48))
        assert isinstance(out, list) and len(out) == 2
        for v in out:
            assert v.shape == (1, 32, 32) and v.dtype == torch.float32
            assert v.min() >= 0.0 and v.max() <= 1.0


def test_multi_crop_counts_and_sizes_globals_first() -> None:
    views = multi_crop(40, 16, n_local=3, channels=3)
    assert views.n_views == 5
    torch.manual_seed(0)
    out = views(gradient(3, 64))
    assert [tuple(v.shape) for v in out] == [(3, 40, 40)] * 2 + [(3, 16, 16)] * 3
    assert multi_crop(32, 16, n_local=0).n_views == 2


def test_range_holds_under_strong_jitter_and_extreme_inputs() -> None:
    # A black/white checkerboard drives brightness and contrast jitter to their limits.
    board = (torch.arange(32).view(32, 1) // 4 + torch.arange(32).view(1, 32) // 4) % 2
    for channels in (1, 3):
        image = board.float().expand(channels, 32, 32).clone()
        views = multi_crop(16, 8, n_local=2, channels=channels, rotation=15.0)
        for seed in range(25):
            torch.manual_seed(seed)
            for v in views(image):
                assert v.dtype == torch.float32 and 0.0 <= v.min() and v.max() <= 1.0


def test_float64_input_gives_float32_views() -> None:
    out = two_views(16)(gradient(size=32).double())
    assert all(v.dtype == torch.float32 for v in out)


def test_same_seed_same_views_other_seed_other_views() -> None:
    views = multi_crop(32, 16, n_local=2, channels=3)
    image = gradient(3, 48)
    torch.manual_seed(7)
    first = views(image)
    torch.manual_seed(7)
    again = views(image)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(8)
    other = views(image)
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_the_views_of_one_call_differ() -> None:
    image = gradient(1, 48)
    for seed in range(5):
        torch.manual_seed(seed)
        a, b = two_views(32)(image)
        assert (a - b).abs().mean() > 1e-3
        torch.manual_seed(seed)
        out = multi_crop(32, 16, n_local=2)(image)
        assert not torch.equal(out[2], out[3])  # one shared local transform still draws fresh crops


def test_input_is_not_modified() -> None:
    image = gradient(3, 32)
    before = image.clone()
    torch.manual_seed(0)
    multi_crop(16, 8, n_local=2, channels=3, solarize=True)(image)
    torch.testing.assert_close(image, before, rtol=0, atol=0)


def no_view_upside_down(views: MultiView, seeds: int = 60) -> bool:
    """True when, over many seeds, no view of a top-bright image is brighter at the bottom than at the top."""
    image = gradient(1, 48)
    for seed in range(seeds):
        torch.manual_seed(seed)
        if any(top_minus_bottom(v) < -1e-4 for v in views(image)):
            return False
    return True


def test_gray_preset_never_flips_vertically() -> None:
    # Crops, horizontal flips, brightness/contrast jitter and blur keep the top brighter than the bottom; a vertical
    # flip (or an inversion) would not.
    assert no_view_upside_down(two_views(32))
    assert no_view_upside_down(multi_crop(32, 16, n_local=4))


def test_upside_down_check_catches_a_vertical_flip() -> None:
    # The check above must be able to fail: the same views followed by a 50 % vertical flip are caught.
    preset = two_views(32)
    flipping = MultiView([v2.Compose([t, v2.RandomVerticalFlip(p=0.5)]) for t in preset.transforms])
    assert not no_view_upside_down(flipping)


def test_gray_preset_has_no_colour_or_solarise_steps() -> None:
    text = repr(multi_crop(32, 16, n_local=2))
    for absent in ("VerticalFlip", "hue", "saturation", "Grayscale", "Solarize"):
        assert absent not in text
    assert "Solarize" in repr(two_views(32, solarize=True).transforms[1])


def test_rgb_preset_colour_and_solarise_on_second_global_only() -> None:
    views = multi_crop(32, 16, n_local=2, channels=3)
    described = [repr(MultiView([t])) for t in views.transforms]
    assert ["RandomSolarize" in d for d in described] == [False, True, False, False]
    assert all("hue=(-0.1, 0.1)" in d and "RandomGrayscale(p=0.2)" in d for d in described)
    assert "RandomApply(p=0.8, ColorJitter" in described[0]
    assert "Solarize" not in repr(two_views(32, channels=3, solarize=False))


def test_rgb_views_are_sometimes_gray_and_keep_three_channels() -> None:
    views = two_views(16, channels=3, blur=False)
    image = gradient(3, 32)
    gray = 0
    for seed in range(40):
        torch.manual_seed(seed)
        for v in views(image):
            assert v.shape[0] == 3
            gray += bool(torch.allclose(v[0], v[1]) and torch.allclose(v[1], v[2]))
    assert 3 <= gray <= 40  # random grayscale with p=0.2 over 80 views: about 16


def test_channel_mismatch_and_bad_inputs_are_clear() -> None:
    with pytest.raises(ValueError, match=r"built for 1-channel images, got shape \(3, 16, 16\).*channels=3"):
        two_views(16)(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"dtype torch\.uint8.*x\.float\(\) / 255"):
        two_views(16)(torch.zeros(1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        two_views(16)(torch.randn(1, 16, 16) * 3)
    with pytest.raises(ValueError, match=r"one image tensor \(C, H, W\), got \(2, 1, 16, 16\)"):
        two_views(16)(torch.rand(2, 1, 16, 16))


def test_repr_is_stable_and_tells_configs_apart() -> None:
    a, b = repr(multi_crop(32, 16, n_local=2)), repr(multi_crop(32, 16, n_local=2))
    assert a == b and "0x" not in a and "n_views=4" in a
    assert "p=0.1" in a and "p=1.0" in a and "p=0.5" in a  # blur probabilities, which v2's repr leaves out
    others = [
        multi_crop(32, 16, n_local=3),
        multi_crop(32, 16, n_local=2, global_scale=(0.5, 1.0)),
        multi_crop(32, 16, n_local=2, channels=3),
        multi_crop(32, 16, n_local=2, rotation=10.0),
        multi_crop(32, 16, n_local=2, blur=False),
    ]
    assert len({a, *map(repr, others)}) == 1 + len(others)


def test_repr_of_custom_transforms_has_no_address() -> None:
    class Plain:
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return x

    text = repr(MultiView([Plain(), lambda x: x]))
    assert "0x" not in text and "Plain object" in text and "<lambda>" in text


def test_multiview_calls_each_transform_on_the_same_image() -> None:
    views = MultiView([lambda x: x + 1, lambda x: x * 2, torch.neg])
    assert [v.item() for v in views(torch.tensor(3.0))] == [4.0, 6.0, -3.0]
    with pytest.raises(ValueError, match="at least one transform"):
        MultiView([])
    with pytest.raises(TypeError, match="transform 1 is a int, not a callable"):
        MultiView([torch.neg, 3])


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: two_views(4), r"image_size must be an integer >= 8.*got 4"),
        (lambda: two_views(32.0), r"image_size must be an integer"),
        (lambda: two_views(32, scale=(0.0, 1.0)), r"scale must satisfy 0 < min <= max <= 1.*\(0\.0, 1\.0\)"),
        (lambda: two_views(32, scale=(0.5, 1.2)), r"scale must satisfy"),
        (lambda: two_views(32, scale=(0.8, 0.5)), r"scale must satisfy"),
        (lambda: two_views(32, scale=0.5), r"scale must be a pair"),
        (lambda: two_views(32, channels=2), r"channels must be 1 .* or 3"),
        (lambda: two_views(32, channels=True), r"channels must be 1"),
        (lambda: two_views(32, rotation=-5), r"rotation must be .*\[0, 180\]"),
        (lambda: multi_crop(32, 16, n_local=-1), r"n_local must be an integer >= 0.*-1"),
        (lambda: multi_crop(32, 16, n_local=2.5), r"n_local must be an integer"),
        (lambda: multi_crop(32, 4), r"local_size must be an integer >= 8"),
        (lambda: multi_crop(6, 6), r"global_size must be an integer >= 8"),
        (lambda: multi_crop(16, 32), r"local_size \(32\) must not exceed global_size \(16\)"),
        (lambda: multi_crop(32, 16, local_scale=(0.05, 1.5)), r"local_scale must satisfy"),
        (lambda: multi_crop(32, 16, global_scale=(-0.1, 1.0)), r"global_scale must satisfy"),
    ],
)
def test_bad_arguments(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
