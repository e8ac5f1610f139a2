"""Patch tokens and token masks: patchify/unpatchify, random and informed masking, lesion-coverage scores.

Every masking scheme in the book is the same bookkeeping with a different per-token *order key*: tokens are sorted by
their key, the ``len_keep`` smallest stay visible and the rest are hidden. Random masking (MAE) uses uniform noise as
the key; informed masking (entropy, attention) uses ``score / tau + Gumbel noise`` — the Gumbel-top-k trick, which
samples the hidden set without replacement with probability proportional to ``exp(score / tau)``. Only the key
changes, so every scheme returns the same :class:`MaskInfo` and plugs into the same encoder and decoder.

Layout convention (MAE, FCMAE, SparK): an image ``(N, C, H, W)`` becomes ``(N, L, p*p*C)`` tokens, patches in
row-major order, pixels inside a token in ``(row, column, channel)`` order — channel last.

References:
    He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
    Kool et al., "Stochastic Beams and Where to Find Them: the Gumbel-Top-k Trick", ICML 2019.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "MaskInfo",
    "MaskingError",
    "entropy_masking",
    "entropy_scores",
    "fully_hidden",
    "gather_tokens",
    "informed_masking",
    "lesion_coverage",
    "mask_from_keys",
    "mask_to_pixels",
    "num_visible",
    "patch_entropy",
    "patch_grid",
    "patchify",
    "random_masking",
    "unpatchify",
]


class MaskingError(ValueError):
    """Raised for a bad patch size, image size or mask ratio, with a message that says what to change."""


class MaskInfo(NamedTuple):
    """Which tokens a masking step keeps, and how to put them back in image order.

    Attributes:
        keep_idx: int64 ``(N, len_keep)`` indices of the visible tokens, in the (shuffled) order the encoder sees.
        mask: float ``(N, L)``, 1 where a token is hidden (removed), 0 where visible — MAE's convention.
        restore: int64 ``(N, L)``; ``restore[n, i]`` is the position of token ``i`` in the sequence
            ``cat(visible tokens, mask tokens)``, so ``gather(that_sequence, restore)`` is back in image order.
        hidden_idx: int64 ``(N, L - len_keep)`` indices of the hidden tokens, in the order of the mask tokens in
            that sequence (the tokens a reconstruction loss scores).
    """

    keep_idx: Tensor
    mask: Tensor
    restore: Tensor
    hidden_idx: Tensor

    @property
    def len_keep(self) -> int:
        """Number of visible tokens per sample."""
        return self.keep_idx.shape[1]

    @property
    def num_tokens(self) -> int:
        """Number of tokens ``L`` per sample."""
        return self.mask.shape[1]

    def to(self, device: torch.device | str) -> MaskInfo:
        """Return the same mask on another device."""
        return MaskInfo(*(t.to(device) for t in self))


# --------------------------------------------------------------------------------------------- patches <-> tokens
def _pair(size: int | tuple[int, int] | torch.Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise MaskingError(f"image size must be an int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def patch_grid(image_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Number of patches ``(h, w)`` along height and width, checking that the patches tile the image exactly.

    Args:
        image_size: ``H`` (square) or ``(H, W)`` in pixels.
        patch_size: side ``p`` of a square patch in pixels.

    Returns:
        ``(H // p, W // p)``.

    Raises:
        MaskingError: if ``p`` is not a positive integer or does not divide ``H`` and ``W``.

    Example:
        >>> patch_grid(64, 8)
        (8, 8)
        >>> patch_grid((32, 48), 16)
        (2, 3)
    """
    height, width = _pair(image_size)
    if not isinstance(patch_size, int) or patch_size < 1:
        raise MaskingError(f"patch_size must be a positive int, got {patch_size!r}")
    if height % patch_size or width % patch_size or height < 1 or width < 1:
        raise MaskingError(
            f"image size {height}x{width} is not divisible by patch size {patch_size}; resize or crop the images "
            f"to a multiple of {patch_size} (e.g. {max(1, height // patch_size) * patch_size}x"
            f"{max(1, width // patch_size) * patch_size}) or choose a patch size that divides both sides"
        )
    return height // patch_size, width // patch_size


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Cut images into flattened patches (tokens).

    Args:
        x: images ``(N, C, H, W)``; ``H`` and ``W`` must be multiples of ``patch_size``.
        patch_size: side ``p`` of a square patch.

    Returns:
        ``(N, L, p*p*C)`` with ``L = (H/p)(W/p)`` patches in row-major order and pixels ordered ``(row, col, channel)``
        inside each token.

    Raises:
        MaskingError: if ``x`` is not 4-D or ``p`` does not divide ``H`` and ``W``.

    Example:
        >>> patchify(torch.zeros(2, 3, 32, 32), 8).shape
        torch.Size([2, 16, 192])
    """
    if x.ndim != 4:
        raise MaskingError(f"patchify expects images (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, height, width = x.shape
    h, w = patch_grid((height, width), patch_size)
    p = patch_size
    x = x.reshape(n, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)  # n, h, w, p(row), q(col), c
    return x.reshape(n, h * w, p * p * c)


def unpatchify(tokens: Tensor, patch_size: int, channels: int, image_size: int | tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: reassemble ``(N, L, p*p*C)`` tokens into ``(N, C, H, W)`` images.

    Args:
        tokens: ``(N, L, p*p*C)`` in :func:`patchify`'s layout.
        patch_size: side ``p`` of a square patch.
        channels: number of image channels ``C``.
        image_size: ``H`` (square) or ``(H, W)``.

    Returns:
        images ``(N, C, H, W)``.

    Raises:
        MaskingError: if the token shape does not match the patch size, channels and image size.

    Example:
        >>> x = torch.rand(2, 1, 16, 24)
        >>> torch.equal(unpatchify(patchify(x, 8), 8, 1, (16, 24)), x)
        True
    """
    h, w = patch_grid(image_size, patch_size)
    p = patch_size
    if tokens.ndim != 3 or tokens.shape[1] != h * w or tokens.shape[2] != p * p * channels:
        raise MaskingError(
            f"tokens of shape {tuple(tokens.shape)} do not fit patch_size={p}, channels={channels}, "
            f"image_size={_pair(image_size)}: expected (N, {h * w}, {p * p * channels})"
        )
    n = tokens.shape[0]
    x = tokens.reshape(n, h, w, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # n, c, h, p, w, q
    return x.reshape(n, channels, h * p, w * p)


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Pick tokens along dimension 1 per sample: ``out[n, k] = x[n, idx[n, k]]``.

    Args:
        x: ``(N, L)`` or ``(N, L, *D)``.
        idx: int64 ``(N, K)`` token indices.

    Returns:
        ``(N, K)`` or ``(N, K, *D)``.

    Example:
        >>> gather_tokens(torch.arange(6.).reshape(1, 3, 2), torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    if x.ndim == 2:
        return torch.gather(x, 1, idx)
    # expand is a view, so the index costs no copy of the feature dimension
    index = idx.reshape(*idx.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, index)


# ---------------------------------------------------------------------------------------------------- masking
def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """How many tokens stay visible: ``floor(L * (1 - mask_ratio))``, at least 1.

    This is MAE's ``int(L * (1 - ratio))`` (floor; SparK rounds instead). A tiny tolerance guards against
    floating-point artefacts such as ``100 * (1 - 0.9) = 9.999…`` (MAE would keep 9 tokens there; we keep 10).

    Raises:
        MaskingError: if ``mask_ratio`` is not strictly between 0 and 1, or ``num_tokens < 1``.

    Example:
        >>> num_visible(64, 0.75), num_visible(10, 0.75), num_visible(4, 0.99)
        (16, 2, 1)
    """
    try:  # numbers, numpy and 0-d torch scalars; not strings
        ratio = math.nan if isinstance(mask_ratio, (str, bytes)) else float(mask_ratio)
    except (TypeError, ValueError):
        ratio = math.nan
    if not 0.0 < ratio < 1.0:  # also rejects NaN
        raise MaskingError(
            f"mask_ratio must lie strictly between 0 and 1 (the fraction of tokens hidden), got {mask_ratio!r}; "
            "to encode all tokens without masking use the model's forward_features_all"
        )
    if num_tokens < 1:
        raise MaskingError(f"num_tokens must be >= 1, got {num_tokens}")
    return max(1, int(num_tokens * (1.0 - ratio) + 1e-6))


def mask_from_keys(keys: Tensor, len_keep: int) -> MaskInfo:
    """Build a :class:`MaskInfo` from per-token order keys: the ``len_keep`` smallest keys stay visible.

    This is the one piece of bookkeeping every masking scheme shares; schemes differ only in how they draw ``keys``.

    Args:
        keys: ``(N, L)`` real keys; ties are broken by ``argsort``.
        len_keep: number of visible tokens, ``1 <= len_keep <= L``.

    Returns:
        The :class:`MaskInfo` (``mask`` has the dtype of ``keys`` if floating, else float32).
    """
    if keys.ndim != 2:
        raise MaskingError(f"keys must have shape (N, L), got {tuple(keys.shape)}")
    if not 1 <= len_keep <= keys.shape[1]:
        raise MaskingError(f"len_keep must lie in 1..{keys.shape[1]}, got {len_keep}")
    order = torch.argsort(keys, dim=1)  # token ids, visible first
    restore = torch.argsort(order, dim=1)  # rank of each token = its slot in cat(visible, mask tokens)
    dtype = keys.dtype if keys.is_floating_point() else torch.float32
    mask = (restore >= len_keep).to(dtype)
    return MaskInfo(order[:, :len_keep], mask, restore, order[:, len_keep:])


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    # Draw on the generator's device, then move: a CPU generator gives the same mask on every device.
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return u.to(device) if device is not None else u


def random_masking(
    n: int,
    num_tokens: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    noise: Tensor | None = None,
) -> MaskInfo:
    """MAE's uniform random masking: per sample, hide exactly ``L - num_visible(L, mask_ratio)`` tokens.

    Each sample's visible set is uniform among all sets of that size (argsort of uniform noise).

    Args:
        n: batch size.
        num_tokens: tokens per image ``L``.
        mask_ratio: fraction hidden, in ``(0, 1)``; the visible count is floored (see :func:`num_visible`).
        generator: optional ``torch.Generator`` for reproducible masks.
        device: device of the returned tensors (default: the generator's device, else CPU).
        noise: ready uniform noise ``(n, num_tokens)`` to argsort instead of drawing it (e.g. per-sample noise from
            :meth:`medmae_nb.models.base.Batch.rand`); ``generator`` is then unused.

    Returns:
        :class:`MaskInfo`.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.

    Example:
        >>> info = random_masking(2, 16, 0.75, generator=torch.Generator().manual_seed(0))
        >>> info.keep_idx.shape, info.mask.sum(1).tolist()
        (torch.Size([2, 4]), [12.0, 12.0])
    """
    len_keep = num_visible(num_tokens, mask_ratio)
    if noise is not None:
        if tuple(noise.shape) != (n, num_tokens):
            raise MaskingError(f"noise must have shape ({n}, {num_tokens}), got {tuple(noise.shape)}")
        return mask_from_keys(noise if device is None else noise.to(device), len_keep)
    if device is None and generator is not None:
        device = generator.device
    return mask_from_keys(_uniform((n, num_tokens), generator, device), len_keep)


def informed_masking(
    scores: Tensor,
    mask_ratio: float,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> MaskInfo:
    """Score-guided masking by Gumbel-top-k: hide tokens with high scores more often, but not deterministically.

    Hides the ``k = L - num_visible(L, mask_ratio)`` tokens with the largest keys ``score / tau + G``, ``G`` standard
    Gumbel noise — i.e. samples the hidden set without replacement with probability proportional to
    ``exp(score / tau)``. ``tau -> 0`` gives deterministic top-k of the scores; ``tau -> inf`` (``float('inf')`` is
    allowed) gives MAE's uniform masking. With constant scores the result equals :func:`random_masking` drawn with
    the same generator state, since the Gumbel transform of uniform noise is monotonic.

    Args:
        scores: ``(N, L)`` informativeness per token (entropy, attention, …); higher = hidden more often.
        mask_ratio: fraction hidden, in ``(0, 1)``.
        tau: temperature ``> 0``.
        generator: optional ``torch.Generator`` for reproducible masks.
        noise: ready uniform noise ``(N, L)`` in ``[0, 1)`` to turn into the Gumbel noise (e.g. per-sample noise
            from :meth:`medmae_nb.models.base.Batch.rand`); ``generator`` is then unused.

    Returns:
        :class:`MaskInfo` on ``scores.device``.

    Raises:
        MaskingError: for a bad ``mask_ratio``, ``tau <= 0`` or ``scores`` that are not 2-D.

    References:
        Kool et al., "Stochastic Beams and Where to Find Them: the Gumbel-Top-k Trick", ICML 2019.

    Example:
        >>> s = torch.tensor([[0., 0., 5., 9.]])
        >>> informed_masking(s, 0.5, tau=1e-4).mask.tolist()
        [[0.0, 0.0, 1.0, 1.0]]
    """
    if scores.ndim != 2:
        raise MaskingError(f"scores must have shape (N, L), got {tuple(scores.shape)}")
    if not tau > 0:
        raise MaskingError(f"tau must be > 0 (small = top-k, large = uniform), got {tau!r}")
    len_keep = num_visible(scores.shape[1], mask_ratio)
    if noise is not None:
        if tuple(noise.shape) != tuple(scores.shape):
            raise MaskingError(f"noise must have the shape of scores {tuple(scores.shape)}, got {tuple(noise.shape)}")
        u = noise.to(scores.device)
    else:
        u = _uniform(tuple(scores.shape), generator, scores.device)
    gumbel = -torch.log(-torch.log(u))  # u = 0 gives -inf: that token is simply kept first
    dtype = torch.promote_types(scores.dtype, torch.float32)
    # mask_from_keys keeps the smallest keys, so the largest (score / tau + Gumbel) are hidden
    keys = scores.to(dtype) / tau + gumbel.to(dtype)
    return mask_from_keys(keys, len_keep)


# ------------------------------------------------------------------------------------------ entropy masking
def patch_entropy(images: Tensor, patch_size: int, bins: int = 16,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Shannon entropy (nats) of each patch's intensity histogram, ``B`` bins over a *fixed* range.

    A fixed range matters on ultrasound: with per-patch min–max bins, flat but speckled background and the black
    border would look maximally entropic. Colour images are averaged to grey first; values outside ``value_range``
    count in the end bins. A constant patch has entropy 0, a patch whose pixels fill every bin equally ``log B``.
    Vectorised: one ``scatter_add`` over ``(N, L, p*p)``, no Python loop.

    Args:
        images: ``(N, C, H, W)`` intensities *before* mean/std normalisation (the book's images are in ``[0, 1]``).
        patch_size: side of a patch; must divide ``H`` and ``W``.
        bins: histogram bins ``B >= 2``.
        value_range: ``(low, high)`` of the bins.

    Returns:
        float32 ``(N, L)``, patches in row-major order (as :func:`patchify`).

    References:
        Shannon, "A Mathematical Theory of Communication", 1948.

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); x[..., 4:] = torch.arange(4.) / 4  # right half: one pixel per bin
        >>> h = patch_entropy(x, 4, bins=4)
        >>> [round(abs(v), 3) for v in h[0].tolist()]
        [0.0, 1.386, 0.0, 1.386]
    """
    if images.ndim != 4:
        raise MaskingError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not isinstance(bins, int) or bins < 2:
        raise MaskingError(f"bins must be an int >= 2, got {bins!r}")
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise MaskingError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    grey = images.float().mean(dim=1, keepdim=True)
    tokens = patchify(grey, patch_size)  # (N, L, p*p)
    idx = ((tokens - low) * (bins / (high - low))).floor().clamp_(0, bins - 1).long()
    counts = torch.zeros(*tokens.shape[:2], bins, device=tokens.device).scatter_add_(2, idx, torch.ones_like(tokens))
    p = counts / tokens.shape[-1]
    return -torch.special.xlogy(p, p).sum(dim=-1)  # xlogy(0, 0) = 0: empty bins add nothing


def entropy_scores(images: Tensor, patch_size: int, bins: int = 16, value_range: tuple[float, float] = (0.0, 1.0),
                   direction: str = "high", eps: float = 1e-6) -> Tensor:
    """Patch entropy standardised per image (zero mean, unit std over its patches), signed by ``direction``.

    ``direction="high"`` scores high-entropy patches high (they are hidden first: the harder pretext, like
    AttMask-High); ``"low"`` flips the sign (low-entropy patches hidden first). Standardising per image makes ``tau``
    mean the same on a busy and on a flat image; a constant image gives all-zero scores, i.e. uniform masking.
    """
    if direction not in ("high", "low"):
        raise MaskingError(f"direction must be 'high' (hide high-entropy patches first) or 'low', got {direction!r}")
    h = patch_entropy(images, patch_size, bins, value_range)
    z = (h - h.mean(dim=1, keepdim=True)) / h.std(dim=1, keepdim=True, correction=0).clamp_min(eps)
    return z if direction == "high" else -z


def entropy_masking(images: Tensor, patch_size: int, mask_ratio: float, tau: float = 0.5, direction: str = "high",
                    bins: int = 16, value_range: tuple[float, float] = (0.0, 1.0),
                    generator: torch.Generator | None = None, noise: Tensor | None = None) -> MaskInfo:
    """Entropy-guided masking: Gumbel-top-k (:func:`informed_masking`) on :func:`entropy_scores`.

    Hides exactly ``L - num_visible(L, mask_ratio)`` patches per image, drawn without replacement with probability
    proportional to ``exp(score / tau)``: ``tau -> 0`` hides the top-k entropy patches deterministically, ``tau ->
    inf`` is MAE's uniform masking. This is the book's reconstruction of an entropy-guided MAE (the published paper
    does not give its masking rule); every choice here is a parameter.

    Args:
        images: ``(N, C, H, W)`` intensities before normalisation, after any geometric augmentation (so the mask and
            the crop align).
        patch_size: mask patch side.
        mask_ratio: fraction hidden.
        tau: temperature ``> 0``.
        direction: ``"high"`` or ``"low"`` (see :func:`entropy_scores`).
        bins: histogram bins.
        value_range: histogram range.
        generator: optional generator for the Gumbel noise.
        noise: ready uniform noise ``(N, L)`` instead of ``generator``.

    Returns:
        :class:`MaskInfo` on ``images.device``.

    References:
        Florindo & Moura, arXiv:2605.21970, 2026 (entropy-guided MAE; rule not public); Kakogeorgiou et al.,
        "What to Hide from Your Students: Attention-Guided Masked Image Modeling", ECCV 2022 (AttMask).

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); x[..., :4, :4] = torch.rand(4, 4)
        >>> entropy_masking(x, 4, 0.25, tau=1e-4).mask.tolist()
        [[1.0, 0.0, 0.0, 0.0]]
    """
    scores = entropy_scores(images, patch_size, bins, value_range, direction)
    return informed_masking(scores, mask_ratio, tau, generator=generator, noise=noise)


# ---------------------------------------------------------------------------------------- masks vs. lesions
def mask_to_pixels(mask: Tensor, patch_size: int, image_size: int | tuple[int, int]) -> Tensor:
    """Expand a token mask ``(N, L)`` to a pixel map ``(N, H, W)`` (each token's value fills its patch).

    Example:
        >>> mask_to_pixels(torch.tensor([[1., 0., 0., 1.]]), 2, 4)[0].tolist()[1]
        [1.0, 1.0, 0.0, 0.0]
    """
    h, w = patch_grid(image_size, patch_size)
    if mask.ndim != 2 or mask.shape[1] != h * w:
        raise MaskingError(
            f"mask of shape {tuple(mask.shape)} does not fit a {h}x{w} patch grid: expected (N, {h * w})"
        )
    n, p = mask.shape[0], patch_size
    return mask.reshape(n, h, 1, w, 1).expand(n, h, p, w, p).reshape(n, h * p, w * p)


def _hidden_and_total(mask: Tensor, lesion: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
    if lesion.ndim == 4 and lesion.shape[1] == 1:
        lesion = lesion[:, 0]
    if lesion.ndim != 3 or lesion.shape[0] != mask.shape[0]:
        raise MaskingError(f"lesion must be (N, H, W) with N = {mask.shape[0]}, got {tuple(lesion.shape)}")
    lesion = lesion.to(device=mask.device, dtype=torch.bool)
    hidden = mask_to_pixels(mask, patch_size, tuple(lesion.shape[-2:])) > 0.5
    return (hidden & lesion).sum(dim=(1, 2)), lesion.sum(dim=(1, 2))


def lesion_coverage(mask: Tensor, lesion: Tensor, patch_size: int) -> Tensor:
    """Fraction of each sample's lesion pixels that the token mask hides.

    Args:
        mask: token mask ``(N, L)``, 1 = hidden.
        lesion: bool lesion masks ``(N, H, W)`` (or ``(N, 1, H, W)``).
        patch_size: side ``p`` of a patch.

    Returns:
        float ``(N,)`` in ``[0, 1]``; NaN where a sample has no lesion pixels.

    Example:
        >>> les = torch.zeros(1, 4, 4, dtype=torch.bool); les[0, :2, :] = True
        >>> lesion_coverage(torch.tensor([[1., 0., 0., 0.]]), les, 2).tolist()
        [0.5]
    """
    hidden, total = _hidden_and_total(mask, lesion, patch_size)
    return torch.where(total > 0, hidden / total.clamp_min(1), torch.full_like(hidden, math.nan, dtype=torch.float32))


def fully_hidden(mask: Tensor, lesion: Tensor, patch_size: int) -> Tensor:
    """Whether the mask hides a sample's whole lesion (False where there is no lesion).

    Args:
        mask: token mask ``(N, L)``, 1 = hidden.
        lesion: bool lesion masks ``(N, H, W)`` (or ``(N, 1, H, W)``).
        patch_size: side ``p`` of a patch.

    Returns:
        bool ``(N,)``.
    """
    hidden, total = _hidden_and_total(mask, lesion, patch_size)
    return (total > 0) & (hidden == total)
