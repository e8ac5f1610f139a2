"""Losses of the self-supervised methods: masked reconstruction (MAE and its multi-scale variants) and the
contrastive InfoNCE loss (MoCo); the DINO loss joins this module with its chapter.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["info_nce", "masked_mse", "norm_pix_target", "patch_stats"]


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


def info_nce(query: Tensor, keys_pos: Tensor, negatives: Tensor, temperature: float,
             reduction: str = "mean") -> Tensor:
    """InfoNCE: cross-entropy of picking each query's positive key among it and ``K`` shared negatives.

    For query ``q_i`` the logits are ``[q_i·k_i, q_i·n_1, …, q_i·n_K] / temperature`` and the loss is
    ``-log softmax(logits)[0]``. The inputs are used as they are: L2-normalise them first to score cosine
    similarities (as MoCo does). Computed in float32 whatever the inputs' dtype (autocast-safe).

    Args:
        query: ``(N, D)`` queries.
        keys_pos: ``(N, D)`` positive key of each query (row ``i`` for query ``i``).
        negatives: ``(K, D)`` negative keys shared by every query (MoCo's queue).
        temperature: divides the logits, > 0 (MoCo v2: 0.2; smaller sharpens the softmax).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (``(N,)``, one loss per query).

    Returns:
        The loss.

    References:
        van den Oord et al., "Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748, 2018;
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> round(info_nce(q, q, torch.tensor([[0.0, 1.0]]), temperature=1.0).item(), 4)  # log(1 + e^-1)
        0.3133
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (MoCo v2 uses 0.2), got {temperature!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if query.shape != keys_pos.shape or negatives.ndim != 2 or negatives.shape[1] != query.shape[-1]:
        raise ValueError(f"expected query and keys_pos (N, D) and negatives (K, D); got {tuple(query.shape)}, "
                         f"{tuple(keys_pos.shape)} and {tuple(negatives.shape)}")
    q = query.float()
    l_pos = (q * keys_pos.float()).sum(dim=-1, keepdim=True)  # (N, 1)
    l_neg = q @ negatives.float().t()  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)  # the positive is column 0
    return F.cross_entropy(logits, target, reduction=reduction)
