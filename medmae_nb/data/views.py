"""Several augmented views of one image, for self-supervised methods: two views, and DINO's multi-crop.

Contrastive methods (SimCLR, MoCo) and BYOL compare two views of an image; DINO compares two global views with
several small local crops. :class:`MultiView` calls one transform per view on the same image; :func:`two_views` and
:func:`multi_crop` build those transforms from ``torchvision.transforms.v2`` with augmentations chosen by modality:

- **gray** (``channels=1``: ultrasound, X-ray, CT slices): random resized crop, horizontal flip only (the top of an
  ultrasound image is the skin surface and the top of a chest film is the apex, so a vertical flip makes images no
  scanner produces), brightness/contrast jitter (gain, depth compensation and probe pressure vary between scans),
  Gaussian blur, and an optional small rotation (the probe is held at an angle). No hue or saturation jitter, no
  grayscale conversion (there is no colour to remove) and no solarisation by default: inverting bright pixels of a
  gray scan turns echogenic tissue dark, which is not a nuisance the model should ignore.
- **RGB** (``channels=3``: dermoscopy, histology, fundus photographs): the SimCLR/BYOL/DINO recipe, colour jitter
  (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with p=0.8, random grayscale with p=0.2, Gaussian blur and
  solarisation on the second global view.

Blur follows BYOL and DINO asymmetrically: always on the first global view, with p=0.1 on the second, p=0.5 on local
crops; its sigma range is DINO's 0.1–2.0 px at 224 px, scaled with the view's size, so that a 64-px view is blurred
as much, relative to its content, as a 224-px one.

All randomness comes from torch's global generator, so ``torch.manual_seed(s)`` before a call repeats its views.

References:
    Chen et al., "A simple framework for contrastive learning of visual representations" (SimCLR), ICML 2020.
    Grill et al., "Bootstrap your own latent: a new approach to self-supervised learning" (BYOL), NeurIPS 2020.
    Caron et al., "Emerging properties in self-supervised vision transformers" (DINO), ICCV 2021.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

Transform = Callable[[torch.Tensor], torch.Tensor]

_MIN_SIZE = 8
_JITTER_GRAY = {"brightness": 0.4, "contrast": 0.4}
_JITTER_RGB = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class MultiView:
    """Calls each of several transforms on the same image and returns the views as a list.

    Args:
        transforms: one transform per view, each taking and returning a ``(C, H, W)`` tensor; globals first where
            views differ in size (the order of the returned list).

    Raises:
        ValueError: no transforms.
        TypeError: a transform that is not callable.

    References:
        Caron et al., "Emerging properties in self-supervised vision transformers" (DINO), ICCV 2021.

    Example:
        >>> views = MultiView([v2.RandomHorizontalFlip(), v2.RandomHorizontalFlip()])
        >>> [tuple(v.shape) for v in views(torch.rand(1, 8, 8))], views.n_views
        ([(1, 8, 8), (1, 8, 8)], 2)
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        transforms = tuple(transforms)
        if not transforms:
            raise ValueError("MultiView needs at least one transform, e.g. MultiView([view_1, view_2])")
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"MultiView: transform {i} is a {type(t).__name__}, not a callable")
        self.transforms = transforms

    @property
    def n_views(self) -> int:
        return len(self.transforms)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]

    def __repr__(self) -> str:
        # Stable across runs (it goes into cache keys): v2's RandomApply leaves its probability out of its repr, and
        # objects without a repr of their own show a memory address, so both are written out here.
        views = ",\n".join(f"  {_describe(t)}" for t in self.transforms)
        return f"MultiView(n_views={self.n_views}, [\n{views}\n])"


def two_views(
    image_size: int,
    channels: int = 1,
    scale: tuple[float, float] = (0.2, 1.0),
    rotation: float = 0.0,
    blur: bool = True,
    solarize: bool | None = None,
) -> MultiView:
    """Two augmented views of one image, for contrastive methods (SimCLR, MoCo) and BYOL.

    The two views are drawn from the same distribution except for BYOL's asymmetry: blur always on the first view
    and with p=0.1 on the second, and (RGB) solarisation with p=0.2 on the second only. The crop keeps 20–100 % of
    the image rather than ImageNet's 8–100 %: a medical scan is mostly background texture around one small
    structure, and a crop of 8 % would often show speckle alone. See the module docstring for the augmentations
    chosen per modality and why.

    Args:
        image_size: side of both views (at least 8).
        channels: 1 for gray (ultrasound, X-ray) or 3 for RGB; the input image must have this many channels.
        scale: range of the fraction of the image area each crop keeps, within ``(0, 1]``.
        rotation: largest rotation in degrees (0 for none), applied before cropping.
        blur: apply Gaussian blur at all (switch off for tiny images such as 28-px MedMNIST).
        solarize: solarise the second view with p=0.2; None means yes for RGB and no for gray.

    Returns:
        A :class:`MultiView` returning two float32 ``(channels, image_size, image_size)`` views in ``[0, 1]``.

    Raises:
        ValueError: a size below 8, a scale outside ``(0, 1]``, channels other than 1 or 3, or a rotation outside
            ``[0, 180]``.

    References:
        Chen et al., SimCLR, ICML 2020. Grill et al., BYOL, NeurIPS 2020.

    Example:
        >>> views = two_views(32)
        >>> [tuple(v.shape) for v in views(torch.rand(1, 64, 64))]
        [(1, 32, 32), (1, 32, 32)]
    """
    _check_size("image_size", image_size)
    _check_scale("scale", scale)
    channels, rotation, solarize = _check_common(channels, rotation, solarize)
    return MultiView(
        [
            _view(image_size, scale, channels, rotation, blur_p=1.0 if blur else 0.0, solarize_p=0.0),
            _view(
                image_size, scale, channels, rotation, blur_p=0.1 if blur else 0.0, solarize_p=0.2 if solarize else 0.0
            ),
        ]
    )


def multi_crop(
    global_size: int,
    local_size: int,
    n_local: int = 6,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    channels: int = 1,
    rotation: float = 0.0,
    blur: bool = True,
    solarize: bool | None = None,
) -> MultiView:
    """DINO's multi-crop: two global views of most of the image and ``n_local`` small local crops.

    The student sees every view, the teacher only the globals, so the model learns that a small patch of tissue
    should map to the same representation as the whole scan ("local-to-global" correspondence). Globals are built
    as in :func:`two_views` (blur always on the first, p=0.1 on the second, RGB solarisation p=0.2 on the second);
    local crops get blur with p=0.5 and no solarisation, as in DINO. Scales are DINO's defaults.

    Args:
        global_size: side of the two global views (at least 8).
        local_size: side of the local views (at least 8, at most ``global_size``).
        n_local: number of local crops (0 gives the two globals only).
        global_scale: range of the image-area fraction of a global crop, within ``(0, 1]``.
        local_scale: range of the image-area fraction of a local crop, within ``(0, 1]``.
        channels: 1 for gray (ultrasound, X-ray) or 3 for RGB; the input image must have this many channels.
        rotation: largest rotation in degrees (0 for none), applied before cropping.
        blur: apply Gaussian blur at all.
        solarize: solarise the second global view with p=0.2; None means yes for RGB and no for gray.

    Returns:
        A :class:`MultiView` returning ``2 + n_local`` float32 views in ``[0, 1]``: the two globals first
        (``global_size``), then the locals (``local_size``).

    Raises:
        ValueError: a size below 8 or ``local_size > global_size``, a scale outside ``(0, 1]``, ``n_local < 0``,
            channels other than 1 or 3, or a rotation outside ``[0, 180]``.

    References:
        Caron et al., "Emerging properties in self-supervised vision transformers" (DINO), ICCV 2021.

    Example:
        >>> views = multi_crop(32, 16, n_local=2, channels=3)
        >>> [tuple(v.shape) for v in views(torch.rand(3, 64, 64))]
        [(3, 32, 32), (3, 32, 32), (3, 16, 16), (3, 16, 16)]
    """
    _check_size("global_size", global_size)
    _check_size("local_size", local_size)
    if local_size > global_size:
        raise ValueError(
            f"local_size ({local_size}) must not exceed global_size ({global_size}): local crops are the small views"
        )
    if isinstance(n_local, bool) or not isinstance(n_local, int) or n_local < 0:
        raise ValueError(f"n_local must be an integer >= 0 (the number of local crops), got {n_local!r}")
    _check_scale("global_scale", global_scale)
    _check_scale("local_scale", local_scale)
    channels, rotation, solarize = _check_common(channels, rotation, solarize)
    b = 1.0 if blur else 0.0
    views = [
        _view(global_size, global_scale, channels, rotation, blur_p=1.0 * b, solarize_p=0.0),
        _view(global_size, global_scale, channels, rotation, blur_p=0.1 * b, solarize_p=0.2 if solarize else 0.0),
    ]
    # One transform object serves every local view: it holds no state, and each call draws fresh random numbers.
    local = _view(local_size, local_scale, channels, rotation, blur_p=0.5 * b, solarize_p=0.0)
    return MultiView(views + [local] * n_local)


class _CheckImage:
    """First step of every preset view: the input must be a float ``(C, H, W)`` image in [0, 1] with ``channels``."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected one image tensor (C, H, W), got {shape}; views are made per image")
        if not x.is_floating_point():
            raise ValueError(f"expected a float image in [0, 1], got dtype {x.dtype}; convert with x.float() / 255")
        if x.shape[0] != self.channels:
            raise ValueError(
                f"these views were built for {self.channels}-channel images, got shape {tuple(x.shape)}; build them "
                f"with channels={x.shape[0]}" + (" or convert the image" if x.shape[0] in (1, 3) else "")
            )
        lo, hi = torch.aminmax(x)
        if lo < -1e-4 or hi > 1 + 1e-4:  # normalised (mean/std) images would be clipped into nonsense by the jitter
            raise ValueError(f"expected values in [0, 1], got [{lo:.3g}, {hi:.3g}]; normalise after the views")
        return x.float()

    def __repr__(self) -> str:
        return f"CheckImage(channels={self.channels})"


class _Clamp:
    """Last step: keeps values in [0, 1] whatever rounding the interpolations left."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return "Clamp(0, 1)"


def _view(
    size: int, scale: tuple[float, float], channels: int, rotation: float, blur_p: float, solarize_p: float
) -> v2.Compose:
    steps: list[Transform] = [_CheckImage(channels)]
    if rotation:
        steps.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR))
    steps += [
        v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.ColorJitter(**(_JITTER_GRAY if channels == 1 else _JITTER_RGB))], p=0.8),
    ]
    if channels == 3:
        steps.append(v2.RandomGrayscale(p=0.2))
    if blur_p > 0:
        sigma_max = max(0.1, 2.0 * size / 224)
        kernel = 2 * math.ceil(3 * sigma_max) + 1  # +-3 sigma holds 99.7 % of the Gaussian's weight
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, sigma_max))], p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))
    steps.append(_Clamp())
    return v2.Compose(steps)


def _describe(t: object) -> str:
    if isinstance(t, v2.Compose):
        return "Compose(" + ", ".join(_describe(s) for s in t.transforms) + ")"
    if isinstance(t, v2.RandomApply):
        return f"RandomApply(p={t.p}, " + ", ".join(_describe(s) for s in t.transforms) + ")"
    return _ADDRESS.sub("", " ".join(repr(t).split()))


def _check_size(label: str, size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_SIZE:
        raise ValueError(f"{label} must be an integer >= {_MIN_SIZE} (pixels), got {size!r}")


def _check_scale(label: str, scale: tuple[float, float]) -> None:
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a pair (min, max) of area fractions, got {scale!r}") from None
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"{label} must satisfy 0 < min <= max <= 1 (fractions of the image area), got {scale!r}")


def _check_common(channels: int, rotation: float, solarize: bool | None) -> tuple[int, float, bool]:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray: ultrasound, X-ray) or 3 (RGB), got {channels!r}")
    if not (isinstance(rotation, (int, float)) and 0 <= rotation <= 180):
        raise ValueError(f"rotation must be a number of degrees in [0, 180] (0 for none), got {rotation!r}")
    return channels, float(rotation), channels == 3 if solarize is None else bool(solarize)
