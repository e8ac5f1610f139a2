"""Tests for medmae_nb.data.transforms: the fine-tuning augmentations (sizes, what each strength does, what it never
does), the seeded horizontal flip and the gray-to-RGB repeat; errors name the fix."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from medmae_nb.data.transforms import STRENGTHS, hflip, to_rgb, train_transform


def ramp(channels: int = 1, h: int = 48, w: int = 64) -> torch.Tensor:
    """Rows bright at the top, dark at the bottom (the skin side of an ultrasound scan), columns a weaker ramp."""
    rows = torch.linspace(0.9, 0.1, h).view(h, 1)
    cols = torch.linspace(0.0, 0.1, w).view(1, w)
    return (rows + cols).clamp(0, 1).expand(channels, h, w).clone()


@pytest.mark.parametrize("strength", STRENGTHS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_strength_returns_a_square_of_the_asked_side(strength, channels):
    t = train_transform(24, strength)
    for seed in range(3):
        torch.manual_seed(seed)
        out = t(ramp(channels))
        assert out.shape == (channels, 24, 24) and out.dtype == torch.float32


def test_none_is_a_plain_resize():
    x = ramp()
    torch.testing.assert_close(train_transform(24, "none")(x), v2.functional.resize(x, [24, 24], antialias=True))
    assert [type(s) for s in train_transform(24, "none").transforms] == [v2.Resize]


def test_light_crops_at_least_half_and_flips_only_left_right():
    t = train_transform(32, "light")
    crop, flip = t.transforms
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.5, 1.0) and list(crop.size) == [32, 32]
    assert isinstance(flip, v2.RandomHorizontalFlip)
    assert not any(isinstance(s, v2.RandomVerticalFlip) for s in t.transforms)
    for seed in range(10):  # the skin stays on top: never upside down
        torch.manual_seed(seed)
        out = t(ramp())
        assert out[:, :8].mean() > out[:, -8:].mean()


def test_medium_adds_a_small_rotation_and_brightness_contrast_jitter():
    steps = train_transform(32, "medium").transforms
    assert [type(s) for s in steps] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandomRotation,
                                        v2.ColorJitter]
    assert list(steps[2].degrees) == [-10.0, 10.0]
    assert steps[3].brightness == (0.8, 1.2) and steps[3].contrast == (0.8, 1.2) and steps[3].hue is None


def test_a_seed_repeats_the_augmentation():
    t = train_transform(24, "medium")
    torch.manual_seed(3)
    a = t(ramp())
    torch.manual_seed(3)
    assert torch.equal(a, t(ramp()))


def test_an_unknown_strength_lists_the_strengths():
    with pytest.raises(ValueError, match=r"unknown strength 'strong'; use one of \('none', 'light', 'medium'\)"):
        train_transform(32, "strong")


def test_hflip_mirrors_columns_with_probability_p_from_torch_s_generator():
    x = torch.arange(12.0).view(1, 3, 4)
    assert torch.equal(hflip(x, p=1.0), x[..., [3, 2, 1, 0]])
    assert hflip(x, p=0.0) is x
    torch.manual_seed(0)
    flips = [not torch.equal(hflip(x), x) for _ in range(400)]
    assert 150 < sum(flips) < 250  # p = 0.5 by default
    torch.manual_seed(0)
    assert [not torch.equal(hflip(x), x) for _ in range(400)] == flips  # seeded runs repeat


def test_to_rgb_repeats_gray_and_keeps_rgb():
    gray = torch.rand(1, 5, 6)
    rgb = to_rgb(gray)
    assert rgb.shape == (3, 5, 6) and all(torch.equal(rgb[c], gray[0]) for c in range(3))
    batch = torch.rand(2, 1, 5, 6)
    out = to_rgb(batch)
    assert out.shape == (2, 3, 5, 6) and torch.equal(out[:, 2], batch[:, 0])
    colour = torch.rand(2, 3, 5, 6)
    assert to_rgb(colour) is colour
    with pytest.raises(ValueError, match=r"expected 1 or 3 channels in dim 0, got shape \(2, 5, 6\)"):
        to_rgb(torch.rand(2, 5, 6))
    with pytest.raises(ValueError, match=r"expected 1 or 3 channels in dim 1, got shape \(2, 4, 5, 6\)"):
        to_rgb(torch.rand(2, 4, 5, 6))
