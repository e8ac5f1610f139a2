"""Losses of the self-supervised methods: masked reconstruction (MAE and its multi-scale variants), the
contrastive InfoNCE loss (MoCo) and DINO's self-distillation cross-entropy (:func:`dino_loss`, with its centre in
:class:`DINOLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["DINOLoss", "dino_loss", "info_nce", "masked_mse", "norm_pix_target", "patch_stats"]


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


def dino_loss(student_logits: Sequence[Tensor], teacher_probs: Sequence[Tensor], student_temp: float = 0.1,
              reduction: str = "mean") -> Tensor:
    """DINO's cross-entropy of the student on every crop against the teacher on each *other* (global) crop.

    Teacher crop ``i`` is the same image crop as student crop ``i`` (the globals come first), and a crop is never
    compared with itself. For each pair ``(i, v)``, ``v ≠ i``, the loss is ``-Σ_k q_ik log p_vk`` with
    ``p_v = softmax(student_logits[v] / student_temp)``, averaged over the batch; the result is the mean over the
    ``n_t·n_s − n_t`` pairs (``2·n_crops − 2`` with DINO's two global crops). Computed in float32 whatever the inputs'
    dtype (autocast-safe). Centring and sharpening the teacher, and detaching it, are the caller's part
    (:meth:`DINOLoss.teacher_probs` does all three).

    Two identities pin it down: all-zero student logits against a uniform teacher give ``log K``; a student whose
    logits equal the teacher's (at the same temperature, no centre) gives the teacher's entropy, since
    ``H(q, p) = H(q) + KL(q ‖ p)``.

    Args:
        student_logits: one ``(N, K)`` tensor per crop, globals first (a ``(V, N, K)`` tensor works too).
        teacher_probs: one ``(N, K)`` probability tensor per global crop (rows sum to 1), at most as many as there
            are student crops.
        student_temp: divides the student logits, > 0 (DINO: 0.1).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one batch-mean loss per pair, in the order teacher crop
            ``i``, then student crop ``v``).

    Returns:
        The loss.

    Raises:
        ValueError: a temperature <= 0, an unknown reduction, shapes that differ, or more teacher crops than student
            crops.

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.

    Example:
        >>> import math
        >>> teacher = [torch.full((3, 8), 1 / 8)] * 2
        >>> student = torch.zeros(4, 3, 8)  # 4 crops of 3 images, 8 prototypes
        >>> loss = dino_loss(student, teacher)
        >>> round(loss.item(), 4) == round(math.log(8), 4), dino_loss(student, teacher, reduction="none").shape
        (True, torch.Size([6]))
    """
    if not (isinstance(student_temp, (int, float)) and student_temp > 0):
        raise ValueError(f"student_temp must be > 0 (DINO uses 0.1), got {student_temp!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    students, teachers = list(student_logits), list(teacher_probs)
    if not teachers or len(teachers) > len(students):
        raise ValueError(f"need 1 to {len(students)} teacher crops for {len(students)} student crops (teacher crop i "
                         f"is student crop i), got {len(teachers)}")
    shape = tuple(students[0].shape)
    bad = [tuple(t.shape) for t in students + teachers if tuple(t.shape) != shape]
    if len(shape) != 2 or bad:
        raise ValueError(f"every crop's logits and probabilities must be (N, K) of one shape; got {shape} and "
                         f"{bad[:3]}")
    log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in students]
    terms = [-(q.float() * log_p[v]).sum(dim=-1).mean()
             for i, q in enumerate(teachers) for v in range(len(students)) if v != i]
    if not terms:
        raise ValueError("one crop gives no pair to compare: pass at least two student crops")
    per_pair = torch.stack(terms)
    return per_pair.mean() if reduction == "mean" else per_pair


class DINOLoss(nn.Module):
    """DINO's loss with its state: the centre subtracted from the teacher's logits before they are sharpened.

    ``forward`` turns raw teacher logits into ``softmax((t − c) / τ_t)`` (:meth:`teacher_probs`) and scores the
    student against them with :func:`dino_loss`. Centring keeps any one prototype from dominating for every image;
    sharpening (a small ``τ_t``) keeps the output from spreading uniformly — together they prevent the two collapses
    of self-distillation. After the loss, :meth:`update_center` moves ``c`` toward the batch mean of the raw teacher
    logits (all processes' under DDP): ``c ← m·c + (1 − m)·mean(t)``. The centre is a buffer, so checkpoints hold it.

    Args:
        out_dim: number of prototypes ``K`` (the head's output width).
        student_temp: student temperature, > 0 (DINO: 0.1).
        center_momentum: EMA momentum of the centre in ``[0, 1]`` (DINO: 0.9; 1 keeps it at zero).

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.

    Example:
        >>> import math
        >>> crit = DINOLoss(8)
        >>> teacher = [torch.zeros(3, 8), torch.zeros(3, 8)]
        >>> round(crit(torch.zeros(4, 3, 8), teacher, teacher_temp=0.04).item(), 4) == round(math.log(8), 4)
        True
        >>> crit.update_center([torch.ones(3, 8)] * 2)  # c = 0.9 * 0 + 0.1 * 1
        >>> crit.center[0, :3]
        tensor([0.1000, 0.1000, 0.1000])
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be a positive integer (the number of prototypes), got {out_dim!r}")
        if not (isinstance(student_temp, (int, float)) and student_temp > 0):
            raise ValueError(f"student_temp must be > 0 (DINO uses 0.1), got {student_temp!r}")
        if not (isinstance(center_momentum, (int, float)) and 0 <= center_momentum <= 1):
            raise ValueError(f"center_momentum must be in [0, 1] (DINO uses 0.9; 1 never moves the centre), got "
                             f"{center_momentum!r}")
        self.student_temp, self.center_momentum = float(student_temp), float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher_logits: Sequence[Tensor], teacher_temp: float) -> list[Tensor]:
        """``softmax((t − center) / teacher_temp)`` per crop, float32, detached."""
        if not (isinstance(teacher_temp, (int, float)) and teacher_temp > 0):
            raise ValueError(f"teacher_temp must be > 0 (DINO: 0.04 to 0.07), got {teacher_temp!r}")
        return [F.softmax((t.detach().float() - self.center) / teacher_temp, dim=-1) for t in teacher_logits]

    def forward(self, student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
                teacher_temp: float) -> Tensor:
        """:func:`dino_loss` of the student against the centred, sharpened teacher (the centre is not updated)."""
        return dino_loss(student_logits, self.teacher_probs(teacher_logits, teacher_temp), self.student_temp)

    @torch.no_grad()
    def update_center(self, teacher_logits: Sequence[Tensor]) -> None:
        """``c ← m·c + (1 − m)·mean(t)`` over every crop and sample of ``teacher_logits`` (raw, before centring), and
        over every process under DDP."""
        logits = torch.cat([t.detach().float() for t in teacher_logits])
        total, count = logits.sum(dim=0, keepdim=True), len(logits)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(total)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)
