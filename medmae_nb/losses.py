"""Losses of the self-supervised methods: masked reconstruction (MAE and its multi-scale variants) for now; the
contrastive and DINO losses join this module with their chapters.
"""

from __future__ import annotations

import torch  # noqa: F401  (the doctests use it)
from torch import Tensor

__all__ = ["masked_mse", "norm_pix_target", "patch_stats"]


def patch_stats(target: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-patch mean and ``sqrt(var + eps)`` over the last dimension (MAE's unbiased variance).

    Args:
        target: patches ``(..., p*p*C)``.
        eps: added to the variance; keeps flat patches finite.

    Returns:
        ``(mean, std)``, each ``(..., 1)``.

    Example:
        >>> mean, std = patch_stats(torch.tensor([[1.0, 3.0]]))
        >>> mean.item(), round(std.item(), 4)
        (2.0, 1.4142)
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return mean, (var + eps).sqrt()


def norm_pix_target(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch standardised by its own mean and std (MAE's ``norm_pix_loss`` target).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
    """
    mean, std = patch_stats(target, eps)
    return (target - mean) / std


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None, norm_pix: bool = False,
               eps: float = 1e-6) -> Tensor:
    """MAE's loss: per-patch mean squared error, averaged over hidden patches only.

    ``pred`` and ``target`` may hold every patch (``(N, L, P)`` with ``mask`` ``(N, L)``, 1 = hidden) or only the
    hidden ones (``(N, K, P)`` with ``mask=None``), which is how :class:`~medmae_nb.models.mae.MaskedAutoencoderViT`
    trains: predicting only what is scored saves the decoder head on visible patches.

    Args:
        pred: predicted patches.
        target: true patches (see :func:`~medmae_nb.masking.patchify`).
        mask: ``(N, L)``, 1 = hidden; visible patches do not contribute. None: every given patch counts.
        norm_pix: standardise each target patch by its own mean and std first (then ``pred`` is in those units).
        eps: variance floor for ``norm_pix``.

    Returns:
        Scalar loss (0 if nothing is hidden).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.

    Example:
        >>> t = torch.rand(2, 4, 8)
        >>> masked_mse(t, t, torch.ones(2, 4)).item()
        0.0
    """
    if norm_pix:
        target = norm_pix_target(target, eps)
    per_patch = (pred - target).pow(2).mean(dim=-1)
    if mask is None:
        return per_patch.mean()
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
