"""DINO: self-distillation with no labels — a student learns to match an EMA teacher across multi-crop views.

Each image comes as two *global* crops and ``n_local`` small *local* crops (:func:`medmae_nb.data.views.multi_crop`:
``pretrain(..., views=multi_crop(64, 32, n_local=6))``; the loader stacks each view position separately, so views of
two sizes need nothing special). The *student* — a timm encoder and a :class:`DINOHead` — sees every crop; the
*teacher*, an exponential moving average (EMA) of the student, sees only the two globals. Both heads end in ``K``
prototype scores. The loss (:func:`~medmae_nb.losses.dino_loss`) is the cross-entropy between the teacher's
distribution ``softmax((t − c) / τ_t)`` on global crop ``i`` and the student's ``softmax(s / τ_s)`` on every other crop
``v ≠ i``, averaged over the ``2·n_crops − 2`` pairs: a small patch of tissue must predict what the teacher says about
the whole scan. As DINO's ``MultiCropWrapper`` does, the backbone runs once per run of same-size crops
(:func:`multi_crop_forward`) and the head once on all of them.

Self-distillation can collapse — every image mapped to the same output — and the loss alone does not show it, so
the method logs the two monitors of the DINO paper's study of collapse: ``teacher_entropy``, the mean entropy of the
centred, sharpened teacher distribution, and ``kl``, KL(teacher ‖ student) over the pairs of the two global crops
(their cross-entropy is exactly ``teacher_entropy + kl``). Collapse shows as ``kl`` falling to 0 with the entropy at 0
(one prototype dominates: too little centring) or at ``log K`` (a uniform output: too little sharpening). Also logged:
``teacher_temp`` and ``momentum`` of the step.

Schedules from the step fraction. The loop (:func:`medmae_nb.train.pretrain`) tells a method its step and the run's
total steps (:meth:`DINO.begin_step`), not the epoch. DINO measures two things in epochs — the teacher temperature's
linear warm-up (``warmup_teacher_temp_epochs``) and the last layer's freeze (``freeze_last_layer``) — so the method is
told the run's length, ``epochs`` (the number given to ``pretrain``), and places a step at epoch
``step / total_steps × epochs``, a fraction: the temperature rises every step rather than once per epoch as in DINO's
code, and reaches ``teacher_temp`` at epoch ``warmup_teacher_temp_epochs`` (DINO's per-epoch table reaches it one epoch
earlier). The EMA momentum follows DINO's half cosine from ``momentum`` to 1 over the whole run
(:func:`~medmae_nb.models.contrastive.momentum_at`) and needs no epochs.

The last layer's freeze drops its gradients (``grad = None``, in :meth:`DINO.before_update`) so that AdamW skips it
entirely, weight decay included; zeroed gradients would still let weight decay shrink it.

Small-data defaults (each a parameter; DINO's ImageNet values in brackets): ``out_dim`` 2048 prototypes [65536], head
hidden width 512 [2048] and bottleneck 256 [256] — a few thousand scans do not fill 65536 prototypes, and DINO issues
#61, #246, #273 and #279 report a loss stuck at ``log K`` or collapse on small sets, with 1k–8k prototypes and a teacher
momentum of 0.99–0.9995 among the fixes; teacher momentum 0.99 [0.996], as AttMask's recipe on 20 % of ImageNet, since
a book run has hundreds, not hundreds of thousands, of steps; teacher temperature 0.04 with no warm-up, student 0.1,
centre momentum 0.9, last layer frozen for 1 epoch, weight-normalised last layer with unit norms — all as DINO's
code. Train with AdamW as the loop does; DINO's own optimiser settings are ``lr = 5e-4 × batch / 256``, weight decay
0.04 (rising to 0.4 in DINO; constant in the loop), ``betas=(0.9, 0.999)`` and ``clip_grad=3.0``.

Encoders: any book or timm encoder (:func:`~medmae_nb.models.backbones.create_encoder`). ViTs are built with
``dynamic_img_size=True`` so local crops get interpolated position embeddings (the teacher and the exported model
too); CNNs take any size. The teacher is built without stochastic depth, as in DINO. BatchNorm caveat: as in DINO's
code, the teacher stays in training mode, so ResNet encoders normalise with the statistics of the batch (student and
teacher alike); ViTs (LayerNorm) are unaffected.

References:
    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.
    Nielsen et al., "Self-Supervision for Medical Image Classification: State-of-the-Art Performance with ~100
    Labeled Training Samples per Class", Bioengineering 10(8):895, 2023 (DINO features + classical classifiers).
    Kakogeorgiou et al., "What to Hide from Your Students: Attention-Guided Masked Image Modeling" (AttMask), ECCV
    2022 (DINO on 20 % of ImageNet: 8192 prototypes, teacher momentum 0.99).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from ..losses import DINOLoss, dino_loss
from .backbones import copy_into_timm, create_encoder
from .base import Batch, MethodOutput, SSLMethod, as_batch
from .contrastive import momentum_at
from .registry import register_method

__all__ = ["DINO", "DINOHead", "dino_resnet18_micro", "dino_vit_micro", "multi_crop_forward", "teacher_temp_at"]

WHICH = ("teacher", "student")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _non_negative(name: str, value: Any, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 ({unit}), got {value!r}")
    return float(value)


def _init_linear(module: nn.Module) -> None:
    """DINO's initialisation of the head: truncated normal weights (std 0.02), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DINOHead(nn.Module):
    """DINO's projection head: an MLP to a bottleneck, L2 normalisation, then a weight-normalised linear layer to
    ``out_dim`` prototype scores.

    The MLP has ``n_layers`` linear layers (in → hidden → … → bottleneck) with GELU (and optional BatchNorm) between
    them. The last layer has no bias and is weight-normalised (``torch.nn.utils.parametrizations.weight_norm``: each
    prototype row is ``g · v / ‖v‖``); ``g`` starts at 1 and, with ``norm_last_layer=True``, stays frozen at 1, so every
    prototype is a unit vector and the scores are cosine similarities in ``[-1, 1]`` — DINO's choice for stability.
    The MLP's weights are truncated normal with std 0.02; the prototypes keep torch's default initialisation, as in
    DINO.

    Args:
        in_dim: the encoder's feature width.
        out_dim: number of prototypes ``K`` (DINO: 65536; the book: 2048, see the module docstring).
        hidden_dim: width of the hidden layers (DINO: 2048 for a 384-d ViT-S).
        bottleneck_dim: width before the prototypes (DINO: 256).
        n_layers: linear layers of the MLP, >= 1 (DINO: 3).
        use_bn: BatchNorm after each hidden linear layer (DINO: off for ViTs).
        norm_last_layer: freeze the prototypes' norms at 1 (DINO: on; off in its "boosted" ViT-S recipe).

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.

    Example:
        >>> head = DINOHead(128, out_dim=64, hidden_dim=32, bottleneck_dim=16)
        >>> head(torch.randn(4, 128)).shape, round(float(head.last_layer.weight.detach().norm(dim=1).mean()), 4)
        (torch.Size([4, 64]), 1.0)
    """

    def __init__(self, in_dim: int, out_dim: int = 2048, hidden_dim: int = 512, bottleneck_dim: int = 256,
                 n_layers: int = 3, use_bn: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                            ("bottleneck_dim", bottleneck_dim), ("n_layers", n_layers)):
            _positive_int(name, value)
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < n_layers - 1:
                layers += [nn.BatchNorm1d(b), nn.GELU()] if use_bn else [nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        self.apply(_init_linear)
        # the prototypes keep torch's default init (rows of norm ~0.58), as in DINO, whose init runs before the last
        # layer exists: with the norms fixed, the scale of v only sets how fast Adam's steps turn them
        # original0 = g (out_dim, 1), original1 = v (out_dim, bottleneck_dim)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)
        self.norm_last_layer = bool(norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        """Prototype scores ``(N, out_dim)`` of features ``(N, in_dim)``."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def multi_crop_forward(backbone: nn.Module, head: nn.Module, views: Sequence[Tensor]) -> list[Tensor]:
    """Head outputs of every view, with the backbone run once per run of consecutive same-size views and the head
    once on all features (DINO's ``MultiCropWrapper``): ``[head(backbone(v)) for v in views]`` in fewer, larger calls.

    Args:
        backbone: maps ``(M, C, H, W)`` images to ``(M, D)`` features, for every size among ``views``.
        head: maps ``(M, D)`` features to outputs.
        views: ``(N, C, H_v, W_v)`` tensors sharing ``N``; globals first, then locals, so each size forms one run.

    Returns:
        One ``(N, ...)`` output per view, in the order of ``views``.

    Example:
        >>> net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> outs = multi_crop_forward(net, nn.Identity(), [torch.ones(2, 3, 8, 8)] * 2 + [torch.zeros(2, 3, 4, 4)])
        >>> [tuple(o.shape) for o in outs], float(outs[0].sum()), float(outs[2].sum())
        ([(2, 3), (2, 3), (2, 3)], 6.0, 0.0)
    """
    views = list(views)
    features, start = [], 0
    for end in range(1, len(views) + 1):
        if end == len(views) or views[end].shape[-2:] != views[start].shape[-2:]:
            features.append(backbone(torch.cat(views[start:end])))
            start = end
    return list(head(torch.cat(features)).split(views[0].shape[0]))


def teacher_temp_at(epoch: float, teacher_temp: float, warmup_teacher_temp: float, warmup_epochs: float) -> float:
    """The teacher temperature at a (fractional) ``epoch``: a line from ``warmup_teacher_temp`` (epoch 0) to
    ``teacher_temp`` (epoch ``warmup_epochs``), then constant.

    Example:
        >>> [round(teacher_temp_at(e, 0.04, 0.02, 10), 4) for e in (0, 5, 10, 30)]
        [0.02, 0.03, 0.04, 0.04]
    """
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return float(teacher_temp)
    return warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * max(epoch, 0.0) / warmup_epochs


@register_method("dino", family="self-distillation", stores=("all", "teacher_encoder", "encoder"),
                 paper="Caron et al., ICCV 2021", description="self-distillation with a centred, sharpened EMA teacher")
class DINO(SSLMethod):
    """DINO on a timm encoder: student encoder + :class:`DINOHead`, EMA teacher, centring and sharpening, multi-crop.

    Args:
        encoder: a book or timm encoder name (``vit_micro``, ``resnet18_micro``, ``vit_small`` …), built with
            :func:`~medmae_nb.models.backbones.create_encoder` (no classifier: pooled or CLS features).
        in_chans: image channels.
        img_size: the global crops' side, for ViTs (the size of the position table; local crops interpolate it);
            None = the encoder's default (book ViTs: 64). CNNs ignore it.
        patch_size: ViT patch side (book ViTs: 8); None = the encoder's default. Not for CNNs.
        out_dim: number of prototypes ``K`` (DINO: 65536; see the module docstring for 2048).
        hidden_dim: head MLP width (DINO: 2048).
        bottleneck_dim: head bottleneck width (DINO: 256).
        head_layers: linear layers of the head MLP (DINO: 3).
        use_bn_in_head: BatchNorm in the head MLP (DINO: off).
        norm_last_layer: keep the prototypes at unit norm (DINO: on; off trains them too, better but less stable).
        student_temp: student temperature τ_s, > 0 (DINO: 0.1).
        teacher_temp: teacher temperature τ_t after the warm-up, > 0 (DINO: 0.04; above 0.07 it becomes unstable).
        warmup_teacher_temp: τ_t at the start of the warm-up, > 0 (DINO: 0.04).
        warmup_teacher_temp_epochs: warm-up length in epochs, fractions allowed (DINO's code: 0; "boosted": 30).
        center_momentum: EMA momentum of the centre in ``[0, 1]`` (DINO: 0.9).
        momentum: teacher EMA momentum at the start, in ``[0, 1]``; it follows a half cosine to 1 (DINO: 0.996).
        freeze_last_layer: epochs during which the head's last layer gets no updates, fractions allowed (DINO: 1).
        epochs: the run's length in epochs — the ``epochs`` given to ``pretrain`` — needed when
            ``warmup_teacher_temp_epochs`` or ``freeze_last_layer`` is above 0 (see the module docstring).
        drop_path_rate: stochastic depth in the student encoder (DINO: 0.1 for ViTs); the teacher has none.
        encoder_weights: start the encoder from a weights file (or ``True``: timm's ImageNet weights, as Nielsen et
            al. started from an ImageNet XCiT).

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.

    Example:
        >>> m = DINO("vit_micro", img_size=32, out_dim=64, hidden_dim=32, bottleneck_dim=16)
        >>> views = [torch.rand(2, 1, 32, 32)] * 2 + [torch.rand(2, 1, 16, 16)] * 2
        >>> out = m(views)
        >>> out.loss.ndim, sorted(out.logs), len(out.student_logits)
        (0, ['kl', 'momentum', 'teacher_entropy', 'teacher_temp'], 4)
    """

    def __init__(self, encoder: str = "vit_micro", in_chans: int = 1, img_size: int | None = None,
                 patch_size: int | None = None, out_dim: int = 2048, hidden_dim: int = 512, bottleneck_dim: int = 256,
                 head_layers: int = 3, use_bn_in_head: bool = False, norm_last_layer: bool = True,
                 student_temp: float = 0.1, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: float = 0.0, center_momentum: float = 0.9, momentum: float = 0.99,
                 freeze_last_layer: float = 1.0, epochs: int | None = None, drop_path_rate: float = 0.0,
                 encoder_weights: str | bool | None = None) -> None:
        super().__init__()
        for name, value in (("teacher_temp", teacher_temp), ("warmup_teacher_temp", warmup_teacher_temp)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be > 0 (DINO: 0.04 to 0.07; smaller sharpens the teacher), got "
                                 f"{value!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be in [0, 1] (DINO: 0.996, small data 0.99 to 0.9995; 1 freezes the "
                             f"teacher), got {momentum!r}")
        warmup_epochs = _non_negative("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs, "epochs")
        freeze = _non_negative("freeze_last_layer", freeze_last_layer, "epochs; 0 never freezes")
        if epochs is not None:
            _positive_int("epochs", epochs)
        self.criterion = DINOLoss(out_dim, student_temp, center_momentum)  # validates the three
        self.encoder, self._arch = _build_encoder(encoder, in_chans, img_size, patch_size, drop_path_rate,
                                                  encoder_weights)
        width = int(self.encoder.num_features)
        self.head = DINOHead(width, out_dim, hidden_dim, bottleneck_dim, head_layers, use_bn_in_head, norm_last_layer)
        # the teacher: the same weights, no stochastic depth (as DINO builds it), never trained by gradients
        self.teacher_encoder = create_encoder(encoder, in_chans=in_chans, num_classes=0, **self._arch)
        self.teacher_encoder.load_state_dict(self.encoder.state_dict())
        self.teacher_encoder.init_source = self.encoder.init_source
        self.teacher_head = copy.deepcopy(self.head)
        self.teacher_encoder.requires_grad_(False)
        self.teacher_head.requires_grad_(False)
        self.in_chans = in_chans
        # this step's values, set by begin_step
        self.teacher_temp = teacher_temp_at(0.0, teacher_temp, warmup_teacher_temp, warmup_epochs)
        self.momentum = float(momentum)
        self.config = {
            "encoder": encoder, "in_chans": in_chans, "img_size": img_size, "patch_size": patch_size,
            "out_dim": out_dim, "hidden_dim": hidden_dim, "bottleneck_dim": bottleneck_dim, "head_layers": head_layers,
            "use_bn_in_head": bool(use_bn_in_head), "norm_last_layer": bool(norm_last_layer),
            "student_temp": float(student_temp), "teacher_temp": float(teacher_temp),
            "warmup_teacher_temp": float(warmup_teacher_temp), "warmup_teacher_temp_epochs": warmup_epochs,
            "center_momentum": float(center_momentum), "momentum": float(momentum), "freeze_last_layer": freeze,
            "epochs": epochs, "drop_path_rate": float(drop_path_rate),
            "encoder_weights": getattr(self.encoder, "init_source", "random"),
        }

    @property
    def center(self) -> Tensor:
        """The centre ``(1, out_dim)`` subtracted from the teacher's logits (a buffer of :attr:`criterion`)."""
        return self.criterion.center

    def no_weight_decay(self) -> set[str]:
        """The encoder's own exemptions (a timm ViT's ``pos_embed`` and ``cls_token``, timm's convention; DINO's code
        decays them), beyond biases and norms, which are exempt by their shape."""
        own = self.encoder.no_weight_decay() if hasattr(self.encoder, "no_weight_decay") else set()
        return {f"encoder.{name}" for name in own}

    # ------------------------------------------------------------------------------------------- hooks
    def epoch_at(self, step: int, total_steps: int) -> float:
        """Where ``step`` lies in the run, in epochs: ``step / total_steps × epochs`` (see the module docstring).

        Raises:
            ValueError: ``epochs`` was not given although a schedule is measured in epochs, or the run's
                ``total_steps`` is not a multiple of ``epochs`` (``pretrain`` was given another number of epochs).
        """
        epochs = self.config["epochs"]
        if epochs is None:
            raise ValueError(
                f"DINO measures warmup_teacher_temp_epochs={self.config['warmup_teacher_temp_epochs']} and "
                f"freeze_last_layer={self.config['freeze_last_layer']} in epochs, but the training loop tells a method "
                "only its step and the run's total steps: build it with epochs= the number of epochs you give "
                "pretrain (or set both to 0)")
        if total_steps % epochs:
            raise ValueError(f"the run has {total_steps} steps, not a multiple of the method's epochs={epochs}: build "
                             "DINO with the same epochs as you give pretrain")
        return step / total_steps * epochs

    def _needs_epochs(self) -> bool:
        return self.config["warmup_teacher_temp_epochs"] > 0 or self.config["freeze_last_layer"] > 0

    @classmethod
    def build(cls, img_size: int = 64, in_chans: int = 1, encoder: str = "vit_micro", **kw: Any) -> DINO:
        """A new DINO on ``encoder`` (timm name or one of the book's encoders); ViTs get ``img_size``."""
        if encoder.startswith("vit"):
            kw["img_size"] = img_size
        return cls(encoder, in_chans=in_chans, **kw)

    @classmethod
    def default_views(cls, image_size: int) -> Callable:
        """The book's multi-crop: 2 global crops of ``image_size`` (scale 0.5–1) and 2 local crops of half that
        size (scale 0.1–0.5), Nielsen et al.'s scales for small medical images (DINO's own default has 6–10 local
        crops and a global scale from 0.4, chosen for ImageNet at 224 px)."""
        from ..data.views import multi_crop

        return multi_crop(image_size, image_size // 2, n_local=2, global_scale=(0.5, 1.0), local_scale=(0.1, 0.5))

    def begin_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Sets this step's teacher temperature (warm-up by epoch fraction) and EMA momentum (cosine to 1), and
        returns them for the log."""
        cfg = self.config
        epoch = self.epoch_at(step, total_steps) if self._needs_epochs() else 0.0
        self.teacher_temp = teacher_temp_at(epoch, cfg["teacher_temp"], cfg["warmup_teacher_temp"],
                                            cfg["warmup_teacher_temp_epochs"])
        self.momentum = momentum_at(step, total_steps, cfg["momentum"], "cosine")
        return {"teacher_temp": self.teacher_temp, "momentum": self.momentum}

    def before_update(self, step: int, total_steps: int) -> None:
        """During the first ``freeze_last_layer`` epochs, drops the gradients of the head's last layer, so the
        optimiser leaves it untouched (no step, no weight decay)."""
        if self.config["freeze_last_layer"] > 0 and self.epoch_at(step, total_steps) < self.config["freeze_last_layer"]:
            for p in self.head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def after_update(self, step: int, total_steps: int) -> None:
        """EMA update of the teacher: ``θ_t ← m·θ_t + (1 − m)·θ_s`` for every parameter of encoder and head.

        Buffers (BatchNorm running statistics) are not averaged: the teacher keeps its own.
        """
        m = self.momentum
        teacher = [*self.teacher_encoder.parameters(), *self.teacher_head.parameters()]
        student = [p.detach() for p in (*self.encoder.parameters(), *self.head.parameters())]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, torch._foreach_mul(student, 1.0 - m))

    @torch.no_grad()
    def restore_from_part(self, part: str) -> None:
        """After a checkpoint that held one encoder was loaded (:func:`medmae_nb.pretrained.load_pretrained`): copies
        it into the other encoder, so that student and teacher start equal, as DINO starts, and the student — what
        goes on training, or :meth:`to_timm` with ``which="student"`` — is the loaded network, not a random one.

        ``"teacher_encoder"`` (the network DINO evaluates, the one a chapter commits) is copied into the student
        ``encoder``; ``"encoder"`` into ``teacher_encoder``. Weights and buffers are copied. The heads stay as
        initialised: neither is in such a checkpoint, and the teacher head is built as a copy of the student head,
        so the two already agree.

        Args:
            part: the submodule the checkpoint held: ``"teacher_encoder"`` or ``"encoder"``.

        Raises:
            ValueError: any other part (a head or the centre alone cannot rebuild the encoders).
        """
        if part == "teacher_encoder":
            self.encoder.load_state_dict(self.teacher_encoder.state_dict())
        elif part == "encoder":
            self.teacher_encoder.load_state_dict(self.encoder.state_dict())
        else:
            raise ValueError(f"DINO rebuilds its networks from a checkpoint of 'teacher_encoder' or 'encoder', got "
                             f"{part!r}; store one of those or 'all'")

    # ------------------------------------------------------------------------------------------- forward
    def student_logits(self, views: Sequence[Tensor]) -> list[Tensor]:
        """The student's prototype scores ``(N, out_dim)`` for every view (with gradients)."""
        return multi_crop_forward(self.encoder, self.head, views)

    @torch.no_grad()
    def teacher_logits(self, views: Sequence[Tensor]) -> list[Tensor]:
        """The teacher's raw (uncentred) prototype scores ``(N, out_dim)`` for each view (no gradients)."""
        return multi_crop_forward(self.teacher_encoder, self.teacher_head, views)

    def forward(self, x: Batch | Sequence[Tensor]) -> MethodOutput:
        """DINO's loss on the two global and any local views; then (training mode) the centre update.

        Args:
            x: a :class:`~medmae_nb.models.base.Batch` (or a list of views) with the two global crops first, then
                the local crops (:func:`medmae_nb.data.views.multi_crop`).

        Returns:
            :class:`~medmae_nb.models.base.MethodOutput` with logs ``teacher_entropy``, ``kl``, ``teacher_temp`` and
            ``momentum`` (see the module docstring), and extras ``student_logits`` (one ``(N, out_dim)`` per view)
            and ``teacher_probs`` (one per global view).
        """
        if torch.is_tensor(x):
            raise ValueError("DINO needs multi-crop views of each image (two global crops, then local ones), got one "
                             "tensor; train with pretrain(..., views=multi_crop(global_size, local_size)) "
                             "(medmae_nb.data.views)")
        batch = as_batch(x)
        views = batch.views
        if len(views) < 2 or views[0].shape != views[1].shape:
            shapes = [tuple(v.shape[1:]) for v in views]
            raise ValueError(f"DINO needs two global views of one size first, then local views; got views of shapes "
                             f"{shapes}; train with pretrain(..., views=multi_crop(global_size, local_size))")
        student = self.student_logits(views)
        teacher = self.teacher_logits(views[:2])
        probs = self.criterion.teacher_probs(teacher, self.teacher_temp)
        loss = dino_loss(student, probs, self.criterion.student_temp)
        with torch.no_grad():
            entropy = torch.stack([-torch.special.xlogy(q, q).sum(dim=-1).mean() for q in probs]).mean()
            cross = dino_loss([s.detach() for s in student[:2]], probs, self.criterion.student_temp)
            logs = {"teacher_entropy": entropy, "kl": cross - entropy, "teacher_temp": self.teacher_temp,
                    "momentum": self.momentum}
            if self.training:
                self.criterion.update_center(teacher)
        return MethodOutput(loss, logs=logs, student_logits=student, teacher_probs=probs)

    # ---------------------------------------------------------------------------------------- to timm
    def to_timm(self, num_classes: int = 0, which: str = "teacher", **overrides: Any) -> nn.Module:
        """A fresh timm model with the teacher's (or student's) encoder weights and a new head of ``num_classes``.

        The teacher is the default because it is what DINO evaluates: an average of the student over the last
        steps, it gave better k-NN accuracy than the student throughout training in the DINO paper's study of the
        teacher network. A ViT is exported with ``dynamic_img_size=True``, as it was trained; its weights load
        strictly into the plain model as well.

        Args:
            num_classes: classifier outputs; 0 gives a feature extractor.
            which: ``"teacher"`` or ``"student"``.
            **overrides: further ``create_encoder`` / timm arguments (e.g. ``drop_path_rate=0.1``).
        """
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH} (DINO evaluates the teacher), got {which!r}")
        encoder = self.teacher_encoder if which == "teacher" else self.encoder
        return copy_into_timm(encoder, self.config["encoder"], self.in_chans, num_classes,
                              f"dino({self.config['encoder']}, {which})", **{**self._arch, **overrides})


def _build_encoder(name: str, in_chans: int, img_size: int | None, patch_size: int | None, drop_path_rate: float,
                   weights: str | bool | None) -> tuple[nn.Module, dict[str, Any]]:
    """The student encoder, and the arguments that rebuild its architecture (for the teacher and the export).

    A model with timm's ``dynamic_img_size`` switch (the ViT family) gets it on, so that one network takes crops of
    every size; its skeleton is built on the meta device to find out, which costs no memory.
    """
    arch: dict[str, Any] = {"img_size": img_size}
    try:
        with torch.device("meta"):
            probe = create_encoder(name, in_chans=in_chans, img_size=img_size)
    except (RuntimeError, NotImplementedError):  # a constructor that reads tensor values cannot run on meta
        probe = create_encoder(name, in_chans=in_chans, img_size=img_size)
    if hasattr(probe, "dynamic_img_size"):
        arch["dynamic_img_size"] = True
        if patch_size is not None:
            arch["patch_size"] = _positive_int("patch_size", patch_size)
    elif patch_size is not None:
        raise ValueError(f"patch_size applies to ViT encoders only; {name!r} is a {type(probe).__name__}: leave "
                         "patch_size=None")
    encoder = create_encoder(name, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate,
                             pretrained=weights if weights is not None else False, **arch)
    return encoder, arch


def dino_vit_micro(img_size: int = 64, patch_size: int = 8, in_chans: int = 1, drop_path_rate: float = 0.1,
                   **kw: Any) -> DINO:
    """DINO on the book's ViT-micro (128-d, 6 blocks, 4 heads; 8-px patches at 64 px: 64 tokens per global crop),
    with DINO's stochastic depth 0.1 in the student, for CPU chapters.

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.

    Example:
        >>> dino_vit_micro(out_dim=64, hidden_dim=32).config["patch_size"]
        8
    """
    return DINO("vit_micro", in_chans=in_chans, img_size=img_size, patch_size=patch_size,
                drop_path_rate=drop_path_rate, **kw)


def dino_resnet18_micro(in_chans: int = 1, **kw: Any) -> DINO:
    """DINO on ``resnet18_micro`` (ResNet-18's blocks at quarter width, 0.7 M parameters, 128-d features): the CNN
    counterpart of :func:`dino_vit_micro`, and chapter 04's CPU encoder.

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021.

    Example:
        >>> dino_resnet18_micro(out_dim=64, hidden_dim=32).encoder.num_features
        128
    """
    return DINO("resnet18_micro", in_chans=in_chans, **kw)
