"""Augmentations for fine-tuning on small medical data sets (``torchvision.transforms.v2`` on image tensors)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

STRENGTHS = ("none", "light", "medium")


def train_transform(image_size: int, strength: str = "light") -> v2.Compose:
    """Training augmentation for ``(C, H, W)`` float tensors in ``[0, 1]``, returning ``image_size`` squares.

    Crops keep at least half the image so that a small lesion is rarely cropped away, which would silently
    turn a malignant sample into an unlabelled "normal" one. Flips are horizontal only: in ultrasound the top of
    the image is the skin surface, so a vertical flip makes an image no scanner produces.

    Args:
        image_size: output side.
        strength: ``"none"`` (resize only), ``"light"`` (crop + flip) or ``"medium"`` (+ small rotation and
            brightness/contrast jitter, as gain and probe pressure vary between scans).

    Example:
        >>> train_transform(32)(torch.rand(1, 64, 64)).shape
        torch.Size([1, 32, 32])
    """
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; use one of {STRENGTHS}")
    if strength == "none":
        return v2.Compose([v2.Resize((image_size, image_size), antialias=True)])
    steps = [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    if strength == "medium":
        steps += [v2.RandomRotation(10), v2.ColorJitter(brightness=0.2, contrast=0.2)]
    return v2.Compose(steps)


def hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flips one image ``(C, H, W)`` left-right with probability ``p`` (torch's global generator, so seeded runs
    repeat). The only augmentation that can never crop a lesion away or change its appearance.

    Example:
        >>> hflip(torch.arange(4.0).view(1, 1, 4), p=1.0)
        tensor([[[3., 2., 1., 0.]]])
    """
    return torch.flip(x, dims=[-1]) if torch.rand(()) < p else x


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Repeats a gray image ``(1, H, W)`` or batch ``(N, 1, H, W)`` to 3 channels; 3-channel input is returned as is.

    Example:
        >>> to_rgb(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    dim = x.dim() - 3
    if x.shape[dim] == 3:
        return x
    if x.shape[dim] != 1:
        raise ValueError(f"expected 1 or 3 channels in dim {dim}, got shape {tuple(x.shape)}")
    return x.repeat_interleave(3, dim=dim)
