"""MoCo v2: contrastive pre-training of a plain timm CNN with a momentum key encoder and a queue of negatives.

Two augmented views of each image go through two networks. The *query* encoder and its projection MLP are trained
by the optimiser; the *key* encoder and projector are an exponential moving average (EMA) of them, updated after
every optimiser step (:meth:`MoCo.after_update`) and never by gradients. Both outputs are L2-normalised; the loss is
InfoNCE (:func:`~medmae_nb.losses.info_nce`): each query must pick its own key (the other view of its image) among
the ``queue_size`` keys of earlier batches, which the EMA keeps consistent with one another. After the loss the
batch's keys replace the oldest ones in the queue (training mode only). The queue and its pointer are registered
buffers, so a checkpoint holds them and a resumed run continues bit for bit. Under DDP the keys of every process are
gathered before they are queued (a no-op on one process).

Views come from the data loader: ``pretrain(..., views=two_views(size))`` (:func:`medmae_nb.data.views.two_views`)
returns two views per image. For gray scans (``channels=1``) those are a random resized crop (20–100 % of the area),
a horizontal flip, brightness/contrast jitter (p=0.8) and Gaussian blur (always on the first view, p=0.1 on the
second); no hue/saturation jitter, no grayscale conversion and no solarisation — there is no colour to be invariant
to.

BatchNorm caveat (be aware of it when reading results): the ResNet encoders normalise with *batch* statistics in
training mode, so a sample's embedding depends on its batch neighbours, and query and key batches hold the same
images. MoCo found that the model can use this intra-batch signal to spot its positive ("cheat" the pretext task)
and fixed it with shuffle-BN: the key batch is shuffled across GPUs so that each key is normalised with statistics of
other images than its query. This module does **not** implement shuffle-BN (nor SyncBN, nor a single-process
emulation with sub-batches): on one process the leak is present, as in the simplest single-GPU MoCo ports. ConvNeXt
encoders (LayerNorm, no batch statistics) are free of it.

Deviations from MoCo v2's ImageNet recipe, each a parameter: ``queue_size`` defaults to 4096 rather than 65536 —
the book's data sets hold hundreds to thousands of images, and a queue longer than an epoch keeps stale keys of the
query's own image as negatives; keep it well below the number of training images.

References:
    He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020 (MoCo).
    Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297, 2020 (MoCo v2).
    Wolf et al., "Self-supervised pre-training with contrastive and masked autoencoder methods for dealing with
    small datasets in deep learning for medical imaging", Sci. Rep. 13:20260, 2023 (MoCo v2 vs SparK on ResNet-50).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from ..losses import info_nce
from .backbones import copy_into_timm, create_encoder
from .base import Batch, MethodOutput, SSLMethod, as_batch
from .registry import register_method

__all__ = ["MoCo", "moco_v2_resnet18", "momentum_at"]

MOMENTUM_SCHEDULES = ("constant", "cosine")


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    """The EMA momentum at ``step``: ``base`` throughout, or a half cosine from ``base`` (step 0) to 1 (last step).

    Example:
        >>> momentum_at(0, 10, 0.99, "cosine"), momentum_at(10, 10, 0.99, "cosine"), momentum_at(5, 10, 0.99)
        (0.99, 1.0, 0.99)
    """
    if schedule == "constant" or total_steps <= 0:
        return float(base)
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _gather(keys: Tensor) -> Tensor:
    """Keys of every process, in rank order (the keys themselves on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


def _projector(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    """MoCo v2's projection head: Linear, ReLU, Linear (no BatchNorm)."""
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))


@register_method("moco", family="contrastive", stores=("all", "encoder"), paper="Chen et al., MoCo v2, 2020",
                 description="momentum contrast: InfoNCE against a queue of keys from an EMA encoder")
class MoCo(SSLMethod):
    """MoCo v2 on a timm CNN: query encoder + MLP, EMA key encoder + MLP, a queue of negative keys, InfoNCE.

    Args:
        encoder: a timm model name (``resnet18``, ``resnet50``, ``convnext_atto`` …) built with
            :func:`~medmae_nb.models.backbones.create_encoder` (no classifier: pooled features).
        in_chans: image channels.
        proj_hidden_dim: hidden width of the projection MLP; None = the encoder's feature width (MoCo v2: 2048 on
            ResNet-50).
        proj_dim: embedding size the loss compares (MoCo v2: 128).
        queue_size: number of negative keys kept (MoCo v2: 65536 on ImageNet; see the module docstring).
        temperature: InfoNCE temperature, > 0 (MoCo v2: 0.2).
        momentum: EMA momentum of the key networks in ``[0, 1]`` (MoCo v2: 0.999; 1 freezes them, 0 copies).
        momentum_schedule: ``"constant"`` (MoCo) or ``"cosine"`` (from ``momentum`` to 1 over the run, as BYOL).
        drop_path_rate: stochastic depth in the encoder.
        encoder_weights: start the encoder from a weights file (or ``True``: timm's ImageNet weights).

    References:
        Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297, 2020.

    Example:
        >>> m = MoCo("resnet18", proj_hidden_dim=64, proj_dim=16, queue_size=32)
        >>> out = m([torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)])
        >>> out.loss.ndim, tuple(m.queue.shape), int(m.queue_ptr)
        (0, (32, 16), 4)
    """

    def __init__(self, encoder: str = "resnet18", in_chans: int = 1, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, queue_size: int = 4096, temperature: float = 0.2, momentum: float = 0.999,
                 momentum_schedule: str = "constant", drop_path_rate: float = 0.0,
                 encoder_weights: str | bool | None = None) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0 (MoCo v2: 0.2; smaller sharpens the softmax), got "
                             f"{temperature!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be in [0, 1] (MoCo v2: 0.999; 1 freezes the key encoder, 0 copies the "
                             f"query encoder every step), got {momentum!r}")
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ValueError(f"momentum_schedule must be one of {MOMENTUM_SCHEDULES}, got {momentum_schedule!r}")
        for name, value in (("queue_size", queue_size), ("proj_dim", proj_dim), ("proj_hidden_dim", proj_hidden_dim)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.encoder = create_encoder(encoder, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate,
                                      pretrained=encoder_weights if encoder_weights is not None else False)
        width = int(self.encoder.num_features)
        hidden = width if proj_hidden_dim is None else proj_hidden_dim
        self.projector = _projector(width, hidden, proj_dim)
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.in_chans, self.temperature = in_chans, float(temperature)
        self.momentum = float(momentum)  # this step's value, set by begin_step
        self.config = {
            "encoder": encoder, "in_chans": in_chans, "proj_hidden_dim": hidden, "proj_dim": proj_dim,
            "queue_size": queue_size, "temperature": float(temperature), "momentum": float(momentum),
            "momentum_schedule": momentum_schedule, "drop_path_rate": drop_path_rate,
            "encoder_weights": getattr(self.encoder, "init_source", "random"),
        }

    # ------------------------------------------------------------------------------------------- hooks
    @classmethod
    def build(cls, img_size: int = 64, in_chans: int = 1, encoder: str = "resnet18", **kw: Any) -> MoCo:
        """A new MoCo on ``encoder``; the image size only sets the views (:meth:`default_views`)."""
        return cls(encoder, in_chans=in_chans, **kw)

    @classmethod
    def default_views(cls, image_size: int) -> Callable:
        """Two augmented crops of each image (MoCo v2's augmentations at ``image_size``)."""
        from ..data.views import two_views

        return two_views(image_size)

    def begin_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Sets this step's EMA momentum from the schedule and returns it for the log."""
        self.momentum = momentum_at(step, total_steps, self.config["momentum"], self.config["momentum_schedule"])
        return {"momentum": self.momentum}

    @torch.no_grad()
    def after_update(self, step: int, total_steps: int) -> None:
        """EMA update of the key encoder and projector: ``k ← m·k + (1 − m)·q`` for every parameter.

        Buffers (BatchNorm running statistics) are not averaged: the key encoder keeps its own, from its forwards.
        """
        m = self.momentum
        pairs = ((self.key_encoder, self.encoder), (self.key_projector, self.projector))
        keys = [k for key_net, _ in pairs for k in key_net.parameters()]
        queries = [q.detach() for _, net in pairs for q in net.parameters()]
        torch._foreach_mul_(keys, m)
        torch._foreach_add_(keys, torch._foreach_mul(queries, 1.0 - m))

    @torch.no_grad()
    def sync_key_encoder(self) -> None:
        """Make the key encoder and projector exact copies of the query ones (weights and buffers), as at the start
        of training; used after loading an encoder-only checkpoint."""
        self.key_encoder.load_state_dict(self.encoder.state_dict())
        self.key_projector.load_state_dict(self.projector.state_dict())

    def restore_from_part(self, part: str) -> None:
        """After a checkpoint that held only the query ``encoder`` was loaded
        (:func:`medmae_nb.pretrained.load_pretrained`): makes the key encoder and projector copies of the query ones
        (:meth:`sync_key_encoder`), as at the start of training, so that the key encoder is the loaded one, not a
        random network, if training goes on.

        Args:
            part: the submodule the checkpoint held; only ``"encoder"`` (the key networks are an average of the
                query ones, so nothing else rebuilds them).

        Raises:
            ValueError: any other part.
        """
        if part != "encoder":
            raise ValueError(f"MoCo rebuilds its key encoder from a checkpoint of its 'encoder' only, got {part!r}; "
                             "store 'encoder' or 'all'")
        self.sync_key_encoder()

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Writes ``keys`` ``(n, proj_dim)`` (normalised) over the oldest queue rows and advances the pointer by
        ``n`` modulo the queue length, wrapping around; of more keys than the queue holds the last ones stay."""
        size, ptr, n = self.queue.shape[0], int(self.queue_ptr), keys.shape[0]
        keep = min(n, size)
        rows = (ptr + n - keep + torch.arange(keep, device=self.queue.device)) % size
        self.queue[rows] = F.normalize(keys[n - keep:].detach().float(), dim=1).to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    # ------------------------------------------------------------------------------------------- forward
    def embed(self, imgs: Tensor) -> Tensor:
        """Normalised query embeddings ``(N, proj_dim)`` (with gradients)."""
        return F.normalize(self.projector(self.encoder(imgs)), dim=1)

    @torch.no_grad()
    def embed_keys(self, imgs: Tensor) -> Tensor:
        """Normalised key embeddings ``(N, proj_dim)`` from the EMA networks (no gradients)."""
        return F.normalize(self.key_projector(self.key_encoder(imgs)), dim=1)

    def forward(self, x: Batch | Tensor | list[Tensor]) -> MethodOutput:
        """InfoNCE of queries from ``views[0]`` against keys from ``views[1]`` and the queue; then (training mode)
        the keys join the queue.

        Args:
            x: a :class:`~medmae_nb.models.base.Batch` with exactly two views, or a list ``[view_1, view_2]``.

        Returns:
            :class:`~medmae_nb.models.base.MethodOutput` with logs ``acc`` (fraction of queries whose positive has
            the largest logit), ``pos_sim`` and ``neg_sim`` (mean cosine to the positive and to the queue), and
            extras ``query`` and ``key``.
        """
        if torch.is_tensor(x):
            raise ValueError("MoCo needs two augmented views of each image, got one tensor; call it with "
                             "[view_1, view_2], or train with pretrain(..., views=two_views(image_size))")
        batch = as_batch(x)
        if len(batch.views) != 2:
            raise ValueError(f"MoCo needs exactly two views per image, got {len(batch.views)}; train with "
                             "pretrain(..., views=two_views(image_size)) (medmae_nb.data.views)")
        query = self.embed(batch.views[0])
        key = self.embed_keys(batch.views[1])
        negatives = self.queue.clone()  # enqueue below writes in place; backward still needs these values
        loss = info_nce(query, key, negatives, self.temperature)
        with torch.no_grad():
            q = query.detach().float()
            pos = (q * key.float()).sum(dim=1)
            neg = q @ negatives.float().t()
            logs = {"acc": (pos > neg.max(dim=1).values).float().mean(), "pos_sim": pos.mean(),
                    "neg_sim": neg.mean()}
            if self.training:
                self.enqueue(_gather(key))
        return MethodOutput(loss, logs=logs, query=query, key=key)

    # ---------------------------------------------------------------------------------------- to timm
    def to_timm(self, num_classes: int = 0, **overrides: Any) -> nn.Module:
        """A fresh timm model with the query encoder's weights (and a new head of ``num_classes``), for fine-tuning."""
        return copy_into_timm(self.encoder, self.config["encoder"], self.in_chans, num_classes,
                              f"moco_v2({self.config['encoder']})", **overrides)


def moco_v2_resnet18(in_chans: int = 1, **kw: Any) -> MoCo:
    """MoCo v2 on a ResNet-18 (11 M parameters; 512-d features, MLP 512→512→128) for CPU chapters.

    References:
        Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297, 2020.
    """
    return MoCo("resnet18", in_chans=in_chans, **kw)
