"""Named pre-training recipes and the book-scale checkpoints they produced.

Pre-training that fits into a chapter's few CPU minutes learns little, so each chapter's pre-trained models are
trained once, from a *recipe* written here in code (method, data, optimiser, length), by
``python -m medmae_nb.train RECIPE`` (``make checkpoints`` runs them all), and committed under
``medmae_nb/checkpoints/`` as a small float16 (or int8) file with a JSON *card*: the recipe's config, the data
fingerprint, the code commit, device, wall time and final losses. The book, CI and a Colab user then load the same
weights with no download (:func:`load_pretrained`), and :func:`pretrained` trains a recipe itself when a chapter's
parameters differ from the committed card (another patch size, the ``gpu`` profile, ``PRETRAIN="train"``).

The checkpoints live inside the package (not at the repository root) so that ``pip install`` from the repository —
what the Colab cell does — carries them too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .cache import (
    _canonical,
    atomic_write,
    cache_dir,
    config_key,
    dataset_fingerprint,
    describe,
    image_probe,
    save_json,
    save_torch,
)
from .data.base import ImageDataset
from .data.synthetic import GENERATOR_VERSION, SPECKLE, make_phantom
from .data.transforms import hflip
from .data.views import multi_crop, two_views
from .models.contrastive import MoCo
from .models.dino import dino_vit_micro
from .models.mae import mae_vit_micro, mae_vit_small, mae_vit_tiny
from .models.masked_convnext import masked_convnext_atto
from .models.miram import miram_vit_micro
from .models.spark import SparK
from .profiles import get_device
from .train.checkpoint import CheckpointError, config_diff
from .train.history import History
from .train.pretrain import pretrain, pretrain_config

__all__ = [
    "CHECKPOINTS",
    "RECIPES",
    "SCALES",
    "PhantomData",
    "Recipe",
    "card_path",
    "default_run_dir",
    "get_recipe",
    "learning_curve",
    "load_pretrained",
    "pretrained",
    "train_recipe",
    "weights_path",
]

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
SCALES = ("book", "smoke")
_WEIGHTS = ("float16", "int8")  # how a checkpoint stores its parameters (Recipe.weights)
_INT8_SCALE = ".__int8_scale__"  # suffix of the key under which an int8 tensor's per-row scales are stored
_MAE_FACTORIES = {"micro": mae_vit_micro, "tiny": mae_vit_tiny, "small": mae_vit_small}


@dataclass(frozen=True)
class PhantomData:
    """The unlabelled pool of a recipe: phantom images from the training stream (``make_phantom``'s first ``n``
    images, so every chapter's labelled pool — the first few thousand — is part of it and no test image is)."""

    n: int
    image_size: int = 64
    seed: int = 0
    difficulty: float = 1.0
    speckle: float = SPECKLE
    downsample: int = 1  # drawn at image_size * downsample, then averaged down (ImageDataset.downsample)

    def config(self) -> dict[str, Any]:
        # the generator version changes whenever the pictures do, so a card never passes for other images
        keys = ("n", "image_size", "seed", "difficulty", "speckle") + (("downsample",) if self.downsample != 1 else ())
        return {"dataset": "phantom", "generator_version": GENERATOR_VERSION, **{k: getattr(self, k) for k in keys}}

    def load(self) -> ImageDataset:
        ds = make_phantom(self.n, self.image_size * self.downsample, seed=self.seed, difficulty=self.difficulty,
                          cache=True, speckle=self.speckle)
        return ds if self.downsample == 1 else ds.downsample(self.downsample)


@dataclass(frozen=True)
class Recipe:
    """A named way to pre-train one method at book scale (and, scaled down, at smoke scale for tests).

    Attributes:
        name: the recipe's (and its checkpoint's) name.
        description: one line for listings and cards.
        build: makes the method for an image size: ``build(image_size) -> SSLMethod``.
        data: the unlabelled pool.
        epochs: passes over the pool.
        batch_size: global batch.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length.
        min_lr: learning rate at the end of the cosine.
        clip_grad: gradient-norm clipping (None: off).
        views: per-image view maker (see :func:`medmae_nb.train.pretrain`).
        seed: the run's seed.
        snapshots: epochs after which an encoder snapshot is kept beside the run (for downstream accuracy against
            pre-training length); not committed.
        smoke: overrides for the ``smoke`` scale (seconds on a CPU, for tests).
        stored: what the committed file holds: ``"all"`` (the whole method, so chapters can show reconstructions)
            or the name of one submodule (``"encoder"``): the rest — a decoder, MoCo's key encoder and queue — is
            re-initialised on load. A storage choice, not part of the training config.
        weights: how the stored parameters are written: ``"float16"`` (half the size of float32), or ``"int8"`` —
            weight matrices and conv kernels as int8 with one float16 scale per output row (``max|row| / 127``, so
            each weight is off by at most half a step, ``max|row| / 254``), about a quarter of float32; the other
            parameters float16 — for a checkpoint that would not fit the 40 MiB budget in float16. Buffers are kept
            as they are either way. Like ``stored``, a storage choice, not part of the training config:
            :func:`load_pretrained` reads both.
    """

    name: str
    description: str
    build: Callable[[int], nn.Module]
    data: PhantomData
    epochs: int
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    clip_grad: float | None = None
    views: Callable[[torch.Tensor], Any] | None = hflip
    seed: int = 0
    snapshots: tuple[int, ...] = ()
    smoke: dict[str, Any] = field(default_factory=lambda: {"data": PhantomData(64, 32), "epochs": 1,
                                                          "batch_size": 16, "snapshots": (1,)})
    stored: str = "all"
    weights: str = "float16"

    def __post_init__(self) -> None:
        if self.weights not in _WEIGHTS:
            raise ValueError(f"recipe {self.name}: weights={self.weights!r}; use one of {_WEIGHTS}")

    def at(self, scale: str = "book") -> Recipe:
        """This recipe at ``scale`` (``"book"`` or ``"smoke"``)."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")
        return self if scale == "book" else replace(self, **self.smoke)

    def method(self) -> nn.Module:
        """A freshly initialised method (seeded by the recipe's seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.build(self.data.image_size)

    def config(self) -> dict[str, Any]:
        """What the recipe is, as the canonical dict a card must match."""
        method = self.method()
        return _canonical({"recipe": self.name, "method": {"class": type(method).__name__, **method.config},
                           "data": self.data.config(), "epochs": self.epochs, "batch_size": self.batch_size,
                           "lr": self.lr, "weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs,
                           "min_lr": self.min_lr, "clip_grad": self.clip_grad, "views": _name(self.views),
                           "seed": self.seed})


def _name(fn: Any) -> Any:
    """A package function by its dotted name: unlike a bytecode fingerprint, it reads the same under every Python
    version, so a card written here still matches on Colab."""
    module, qualname = getattr(fn, "__module__", ""), getattr(fn, "__qualname__", "")
    if module.startswith("medmae_nb.") and qualname and "<" not in qualname:
        return f"{module}.{qualname}"
    return describe(fn)


def _mae(model: str, patch_size: int, **kw: Any) -> Callable[[int], nn.Module]:
    factory = _MAE_FACTORIES[model]

    def build(image_size: int) -> nn.Module:
        return factory(img_size=image_size, patch_size=patch_size, in_chans=1, norm_pix_loss=True, **kw)

    build.__qualname__ = f"mae_vit_{model}(patch_size={patch_size}, norm_pix_loss=True)"
    return build


def _miram(patch_size: int, target: str, **kw: Any) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        return miram_vit_micro(img_size=image_size, patch_size=patch_size, in_chans=1, norm_pix_loss=True,
                               scales=(1, 2), target=target, **kw)

    build.__qualname__ = f"miram_vit_micro(patch_size={patch_size}, target={target!r}, norm_pix_loss=True)"
    return build


def _spark(encoder: str, **kw: Any) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        return SparK(encoder, img_size=image_size, in_chans=1, mask_stride=16, **kw)

    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    build.__qualname__ = f"SparK({encoder!r}, mask_stride=16{extra})"
    return build


def _moco(encoder: str, **kw: Any) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        return MoCo(encoder, in_chans=1, **kw)

    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    build.__qualname__ = f"MoCo({encoder!r}{extra})"
    return build


def _dino(**kw: Any) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        return dino_vit_micro(img_size=image_size, **kw)

    build.__qualname__ = "dino_vit_micro(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"
    return build


def _mconvnext(masking: str, **kw: Any) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        return masked_convnext_atto(img_size=image_size, in_chans=1, masking=masking, **kw)

    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    build.__qualname__ = f"masked_convnext_atto(masking={masking!r}{extra})"
    return build


# The book's recipes. Pool size, speckle and length were chosen from the measurements in book/checkpoints.md.
_BOOK_POOL = PhantomData(n=20_000, image_size=64, seed=0, difficulty=1.0, speckle=0.3)
# Chapter 02's pool: the same kind of scenes drawn at 128 px; the encoders see them averaged down to 64 px, and
# MIRAM's native target is the 128-px drawing, detail no encoder sees.
_HIRES_POOL = PhantomData(n=20_000, image_size=128, seed=0, difficulty=1.0, speckle=0.3)
_HIRES_SEEN = replace(_HIRES_POOL, image_size=64, downsample=2)
_HIRES_EPOCHS = 20
_CONVNEXT_EPOCHS = 15
# Chapter 04: both methods see the same images the same number of times (MoCo two views of each); the encoder is
# all that is committed (its decoder / key encoder would not fit the 40 MiB budget and no chapter needs them)
_SPARK_EPOCHS = 25
_MOCO_SMOKE = {"data": PhantomData(64, 32), "epochs": 1, "batch_size": 16, "snapshots": (1,),
               "build": _moco("resnet18_micro", queue_size=64, momentum=0.99), "views": two_views(32)}
# Chapter 05: DINO's small-data settings, chosen with tools/experiments/ch05_dino_probe*.py (its defaults, 2048
# prototypes and no BatchNorm in the head, collapsed to a uniform output within 2 epochs): 1024 prototypes, BatchNorm
# in the head, teacher temperature 0.02 (Nielsen et al.'s start), no stochastic depth, Nielsen et al.'s crop scales.
# Only the teacher's encoder is committed, in int8 (per output row): float16 would not fit the 40 MiB budget.
_DINO_KW = dict(patch_size=8, out_dim=1024, use_bn_in_head=True, teacher_temp=0.02, warmup_teacher_temp=0.02,
                freeze_last_layer=0.0, momentum=0.99, drop_path_rate=0.0)


def _dino_views(size: int) -> Any:
    return multi_crop(size, size // 2, n_local=2, global_scale=(0.5, 1.0), local_scale=(0.1, 0.5))


_DINO_SMOKE = {"data": PhantomData(64, 32), "epochs": 1, "batch_size": 16, "snapshots": (1,),
               "build": _dino(**{**_DINO_KW, "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}),
               "views": _dino_views(32)}
_SMOKE_SEEN = {"data": PhantomData(64, 32, downsample=2), "epochs": 1, "batch_size": 16, "snapshots": (1,)}
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("mae-micro-p16", "MAE, ViT-micro encoder, 16-px patches (16 tokens), mask 0.75, 64-px phantom",
               _mae("micro", 16), _BOOK_POOL, epochs=40, snapshots=(1, 3, 10, 20, 40)),
        Recipe("mae-micro-p8", "MAE, ViT-micro encoder, 8-px patches (64 tokens), mask 0.75, 64-px phantom",
               _mae("micro", 8), _BOOK_POOL, epochs=40, snapshots=(1, 3, 10, 20, 40)),
        Recipe("mae-micro-p16-hires", "MAE, ViT-micro, 16-px patches, on the 128-px phantom averaged to 64 px "
               "(chapter 02's single-scale baseline)", _mae("micro", 16), _HIRES_SEEN, epochs=_HIRES_EPOCHS,
               smoke=_SMOKE_SEEN),
        Recipe("miram-micro-p16-upsampled", "MIRAM x1 + x2, ViT-micro, 16-px patches, x2 target = the 64-px input "
               "upsampled (the authors' code)", _miram(16, "upsampled"), _HIRES_SEEN, epochs=_HIRES_EPOCHS,
               smoke=_SMOKE_SEEN),
        Recipe("miram-micro-p16-native", "MIRAM x1 + x2, ViT-micro, 16-px patches, encoder on the 128-px phantom "
               "averaged to 64 px, x2 target = the 128-px drawing", _miram(16, "native"), _HIRES_POOL,
               epochs=_HIRES_EPOCHS, smoke={**_SMOKE_SEEN, "data": PhantomData(64, 64)}),
        Recipe("mconvnext-atto-random", "masked ConvNeXt-Atto (FCMAE dense masking), 16-px cells, uniform random "
               "mask 0.6, 64-px phantom (chapter 03's baseline)", _mconvnext("random"), _BOOK_POOL,
               epochs=_CONVNEXT_EPOCHS, lr=1e-3),
        Recipe("mconvnext-atto-entropy", "masked ConvNeXt-Atto, 16-px cells, entropy-guided mask 0.6 (hide "
               "high-entropy cells first, tau 0.5), 64-px phantom", _mconvnext("entropy"), _BOOK_POOL,
               epochs=_CONVNEXT_EPOCHS, lr=1e-3),
        Recipe("spark-resnet18-micro", "SparK on resnet18_micro (ResNet-18, stages at quarter width, 0.7 M), "
               "16-px cells, mask 0.6, 64-px phantom (chapter 04)", _spark("resnet18_micro"), _BOOK_POOL,
               epochs=_SPARK_EPOCHS, lr=1e-3, stored="encoder"),
        Recipe("moco-resnet18-micro", "MoCo v2 on resnet18_micro (ResNet-18, stages at quarter width, 0.7 M), "
               "queue 4096, momentum 0.99, tau 0.2, two crops of each 64-px phantom image (chapter 04)",
               _moco("resnet18_micro", queue_size=4096, momentum=0.99), _BOOK_POOL, epochs=_SPARK_EPOCHS, lr=1e-3,
               views=two_views(64), stored="encoder", smoke=_MOCO_SMOKE),
        Recipe("dino-vit-micro", "DINO, ViT-micro, 8-px patches, 2 global 64-px + 2 local 32-px crops, 1024 "
               "prototypes, BatchNorm head, teacher temperature 0.02, 64-px phantom (chapter 05)", _dino(**_DINO_KW),
               _BOOK_POOL, epochs=6, lr=5e-4, weight_decay=0.04, clip_grad=3.0, views=_dino_views(64),
               stored="teacher_encoder", weights="int8", smoke=_DINO_SMOKE),
    ]
}


def get_recipe(name: str, scale: str = "book") -> Recipe:
    """The recipe called ``name`` at ``scale``; a clear ``KeyError`` listing the recipes for an unknown name."""
    if name not in RECIPES:
        raise KeyError(f"no recipe named {name!r}; the recipes are: {', '.join(sorted(RECIPES))} "
                       "(python -m medmae_nb.train list)")
    return RECIPES[name].at(scale)


def weights_path(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder or CHECKPOINTS) / f"{name}.pt"


def card_path(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder or CHECKPOINTS) / f"{name}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "medmae_nb"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _half(method: nn.Module, stored: str = "all") -> dict[str, torch.Tensor]:
    """The state dict with parameters in float16 (half the size) and buffers as they are: fixed tables such as the
    sin-cos position embeddings are exact values the model recomputes, not weights to round. ``stored`` other than
    ``"all"`` keeps only that submodule's entries. The same as ``_pack(method, stored, "float16")``."""
    return _pack(method, stored, "float16")


def _pack(method: nn.Module, stored: str = "all", weights: str = "float16") -> dict[str, torch.Tensor]:
    """The state dict a checkpoint file holds: ``stored``'s entries (``"all"``: every one), parameters in the
    ``weights`` format (see :class:`Recipe`), buffers as they are.

    With ``"int8"`` every floating-point parameter of two or more dimensions (a weight matrix, a conv kernel) is
    stored as int8 under its own name and its float16 per-row scales under ``NAME.__int8_scale__``; the other
    parameters (biases, norms, layer scales: few values, some far from zero-centred) stay float16. A row is the
    first dimension, an output unit, whose weights share a range. :func:`_unpack` inverts it.

    Raises:
        ValueError: an unknown ``weights`` or ``stored``, or a weight too large for a float16 scale.
    """
    if weights not in _WEIGHTS:
        raise ValueError(f"weights={weights!r}; use one of {_WEIGHTS}")
    params = {name for name, _ in method.named_parameters()}
    keep = _stored_keys(method, stored)
    state: dict[str, torch.Tensor] = {}
    for k, v in method.state_dict().items():
        if k not in keep:
            continue
        v = v.detach().cpu()
        if k in params and v.is_floating_point():
            if weights == "int8" and v.ndim >= 2:
                state[k], state[k + _INT8_SCALE] = _int8_rows(k, v)
            else:
                state[k] = v.half()
        else:
            state[k] = v
    return state


def _int8_rows(name: str, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of ``w`` (row = first dimension): ``q = round(w / s)`` with ``s = max|row| / 127``
    rounded *up* to float16, so that no value is clipped and each is off by at most ``s / 2``; an all-zero row gets
    ``s = 1`` (its zeros round-trip either way)."""
    rows = w.float().flatten(1)
    exact = rows.abs().amax(dim=1) / 127
    scale = exact.half()
    scale = torch.where(scale.float() < exact, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    if not torch.isfinite(scale).all():
        raise ValueError(f"{name} holds values beyond what int8 with a float16 scale per row stores (|w| up to "
                         f"{127 * 65504:.3g}, finite); store it with weights='float16'")
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(rows / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def _unpack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict as float32 tensors ``load_state_dict`` takes: int8 entries with their
    ``NAME.__int8_scale__`` dequantised (``q * scale`` per row) and their scale entries dropped, float16 (and other
    floating-point) entries in float32, the rest as they are. A scale without its tensor is kept, so that the key
    check of :func:`load_pretrained` reports it.

    Raises:
        ValueError: the file holds no state dict, or an int8 entry does not fit its scales.
    """
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
    odd = sorted(str(k) for k, v in state.items() if not torch.is_tensor(v))
    if odd:
        raise ValueError(f"it holds a dict whose entries {odd[:5]} are not tensors, not a state dict")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith(_INT8_SCALE) and k[:-len(_INT8_SCALE)] in state:
            continue
        scale = state.get(k + _INT8_SCALE)
        if scale is None:
            out[k] = v.float() if v.is_floating_point() else v
            continue
        if v.dtype != torch.int8 or v.ndim < 1 or scale.shape != v.shape[:1] or not scale.is_floating_point():
            raise ValueError(f"entry {k!r} ({v.dtype}, shape {tuple(v.shape)}) does not fit its int8 scales "
                             f"({scale.dtype}, shape {tuple(scale.shape)})")
        out[k] = v.float() * scale.float().reshape(-1, *[1] * (v.ndim - 1))
    return out


def _stored_keys(method: nn.Module, stored: str) -> set[str]:
    keys = set(method.state_dict())
    if stored == "all":
        return keys
    part = getattr(method, stored, None)
    if not isinstance(part, nn.Module):
        raise ValueError(f"stored={stored!r}: {type(method).__name__} has no submodule of that name; use 'all' or "
                         f"one of {[n for n, _ in method.named_children()]}")
    return {k for k in keys if k.startswith(stored + ".")}


def default_run_dir(name: str, scale: str = "book") -> Path:
    """Where a recipe's resumable run and snapshots live: keyed by the recipe's config, so a changed recipe never
    resumes from, or mixes snapshots with, an older one."""
    return cache_dir() / "runs" / f"{name}-{scale}-{config_key(get_recipe(name, scale).config())[:8]}"


def train_recipe(name: str, scale: str = "book", out: str | Path | None = None, run_dir: str | Path | None = None,
                 progress: bool = True, num_threads: int | None = None, num_workers: int = 0,
                 compile: bool = False) -> dict[str, Any]:
    """Trains a recipe (resuming from ``run_dir`` when a run was interrupted) and writes ``NAME.pt`` and its card.

    Works unchanged under ``torchrun`` (rank 0 writes). The weights are stored in float16 (half the size; the
    chapters compute in float32) or, with the recipe's ``weights="int8"``, weight matrices in int8, the card as JSON
    beside them.

    Args:
        name: the recipe.
        scale: ``"book"`` or ``"smoke"``.
        out: folder for the checkpoint and card (default: the package's ``checkpoints/``).
        run_dir: folder for ``last.pt`` (resume) and encoder snapshots (default: the cache's ``runs/NAME-SCALE``).
        progress: show a progress bar.
        num_threads: torch CPU threads.
        num_workers: DataLoader workers.
        compile: ``torch.compile`` the method.

    Returns:
        The card.
    """
    recipe = get_recipe(name, scale)
    commit = _commit()  # the code that trains, not whatever is checked out when the run ends
    out = Path(out) if out is not None else CHECKPOINTS
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(name, scale)
    pool = recipe.data.load()
    method = recipe.method()

    def snapshot(epoch: int, history: History) -> None:
        if epoch in recipe.snapshots:
            state = _half(method)
            save_torch(run_dir / "snapshots" / f"epoch{epoch:04d}.pt", state)

    method, history = pretrain(method, pool, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                               min_lr=recipe.min_lr, weight_decay=recipe.weight_decay,
                               warmup_epochs=recipe.warmup_epochs, clip_grad=recipe.clip_grad, seed=recipe.seed,
                               views=recipe.views, checkpoint_dir=run_dir, progress=progress,
                               num_threads=num_threads, num_workers=num_workers, compile=compile, callback=snapshot)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
        return {}
    weights = weights_path(name, out)
    state = _pack(method, recipe.stored, recipe.weights)
    save_torch(weights, state)
    last = history.last
    fmt = ("float16" if recipe.weights == "float16" else
           "int8-per-row (weight matrices and kernels int8 with a float16 scale per output row, other parameters "
           "float16)")
    card = {
        "recipe": name,
        "scale": scale,
        "description": recipe.description,
        "config": recipe.config(),
        "pretrain_config": pretrain_config(method, pool, epochs=recipe.epochs, batch_size=recipe.batch_size,
                                           lr=recipe.lr, min_lr=recipe.min_lr, weight_decay=recipe.weight_decay,
                                           betas=(0.9, 0.95), warmup_epochs=recipe.warmup_epochs,
                                           clip_grad=recipe.clip_grad, seed=recipe.seed, views=recipe.views),
        "data": dataset_fingerprint(pool),
        "data_probe": image_probe(pool.images),  # survives the float noise a sha256 of the pixels does not
        "code_commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run": {**history.info, "epochs": len(history), "resumed": history.resumed_from is not None},
        "wall_time_s": round(history.info.get("seconds", 0.0), 1),
        "final": {k: v for k, v in last.items() if k not in ("epoch", "step", "lr", "seconds", "img_per_s")},
        "loss_by_epoch": [round(v, 5) for v in history.column("loss")],
        # the method's own logs per epoch (e.g. MIRAM's loss at each scale), for the chapters' curves
        "logs_by_epoch": {k: [round(float(v), 5) for v in history.column(k)] for k in last
                          if k not in ("epoch", "step", "lr", "seconds", "img_per_s", "loss")},
        "file": weights.name,
        "sha256": _sha256(weights),
        "bytes": weights.stat().st_size,
        "stored_as": (f"{fmt} state_dict of the whole method (encoder and decoder)" if recipe.stored == "all" else
                      f"{fmt} state_dict of the method's {recipe.stored!r} only (the rest is re-initialised on "
                      "load)"),
        "versions": {"medmae_nb": __version__, "torch": torch.__version__.split("+")[0]},
    }
    save_json(card_path(name, out), card)
    return card


def load_pretrained(name: str, folder: str | Path | None = None, scale: str = "book",
                    device: torch.device | str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The committed pre-trained method ``name`` (float32, eval mode) and its card, after checking both.

    A checkpoint that holds one submodule (``Recipe.stored``) loads into a fresh method, whose
    ``restore_from_part(stored)``, where it has one, then rebuilds the rest from it (MoCo's key encoder, DINO's
    other encoder). Float16 and int8 files (``Recipe.weights``) both load.

    Raises:
        KeyError: no such recipe.
        FileNotFoundError: the checkpoint or card is missing (``python -m medmae_nb.train NAME`` makes them).
        CheckpointError: the file's sha256 differs from the card's (a truncated or replaced file), the card is no
            JSON, the card was made by a recipe that differs from the one in the code (the message lists the
            differences), or the file is not a checkpoint of this recipe (no torch file, other keys or shapes). The
            message names the file and says what to do.

    Example:
        >>> mae, card = load_pretrained("mae-micro-p8")  # doctest: +SKIP
        >>> card["final"]["loss"]  # doctest: +SKIP
    """
    recipe = get_recipe(name, scale)
    weights, card_file = weights_path(name, folder), card_path(name, folder)
    for path in (weights, card_file):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; train it with `python -m medmae_nb.train {name}` "
                                    "(about an hour on 2 CPU cores, minutes on a GPU)")
    retrain = f"retrain with `python -m medmae_nb.train {name}` (or restore the committed file with git)"
    try:
        card = json.loads(card_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"the card {card_file} is not valid JSON ({err}): it is truncated or damaged; "
                              f"{retrain}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the card {card_file} holds a JSON {type(card).__name__}, not a checkpoint card; "
                              f"{retrain}")
    digest = _sha256(weights)
    if card.get("sha256") != digest:
        raise CheckpointError(f"{weights} has sha256 {digest[:12]}…, its card says {str(card.get('sha256'))[:12]}…: "
                              f"the file is damaged or not the one the card describes; retrain with "
                              f"`python -m medmae_nb.train {name}`")
    expected = recipe.config()
    if card.get("config") != expected:
        diffs = "; ".join(config_diff(card.get("config", {}), expected)) or "(layout differs)"
        raise CheckpointError(f"the card of {name} was made by a different recipe than the one in the code — {diffs}. "
                              f"Retrain with `python -m medmae_nb.train {name}`, or check out the code of commit "
                              f"{card.get('code_commit')}")
    method = recipe.method()
    try:
        state = _unpack(torch.load(weights, map_location="cpu", weights_only=True))
    except ValueError as e:
        raise CheckpointError(f"{weights} is not a checkpoint of recipe {name}: {e}; retrain with "
                              f"`python -m medmae_nb.train {name}`") from None
    except Exception as e:  # not a torch file, or a truncated one whose card was rewritten to match it
        first = (str(e).strip().splitlines() or ["no message"])[0]
        raise CheckpointError(f"cannot read {weights} as a checkpoint of recipe {name}: it is truncated, damaged or "
                              f"not a torch file ({type(e).__name__}: {first}); {retrain}") from None
    expected_keys = _stored_keys(method, recipe.stored)
    if set(state) != expected_keys:
        missing, extra = sorted(expected_keys - set(state))[:5], sorted(set(state) - expected_keys)[:5]
        raise CheckpointError(f"{weights} does not hold what recipe {name} stores ({recipe.stored!r}): missing "
                              f"{missing}, unexpected {extra}; retrain with `python -m medmae_nb.train {name}`")
    try:
        method.load_state_dict(state, strict=recipe.stored == "all")
    except RuntimeError as e:  # same names, other shapes: another recipe's weights
        lines = str(e).strip().splitlines()[:3] or ["no message"]
        raise CheckpointError(f"{weights} does not fit recipe {name} (the weights of another recipe?): "
                              f"{' '.join(line.strip() for line in lines)}; {retrain}") from None
    if recipe.stored != "all" and hasattr(method, "restore_from_part"):
        # rebuild what the file left at its initialisation from the part it holds (MoCo's key encoder, DINO's
        # student or teacher encoder)
        method.restore_from_part(recipe.stored)
    return method.to(device if device is not None else get_device()).eval(), card


def pretrained(name: str, scale: str = "book", train: bool | str = "auto", device: torch.device | str | None = None,
               verbose: bool = True, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """What a chapter calls: the committed checkpoint when it matches, else the recipe trained here.

    Args:
        name: the recipe.
        scale: its scale.
        train: ``"auto"`` loads the committed checkpoint when the recipe, with ``overrides`` applied, equals the one
            on its card, and trains otherwise; ``True`` always trains (cached by config, so a second call loads);
            ``False`` never trains (an error when no committed checkpoint matches).
        device: where the method is trained and returned (default: ``profiles.get_device()``).
        verbose: print what was loaded or trained.
        **overrides: recipe fields to change (``epochs=…``, ``data=PhantomData(…)``, ``build=…``).

    Returns:
        ``(method, info)``: the card when loaded, else ``{"trained": True, "history": History, "config": …}``.

    Example:
        >>> mae, card = pretrained("mae-micro-p8")  # doctest: +SKIP
    """
    recipe = get_recipe(name, scale)
    changed = replace(recipe, **overrides) if overrides else recipe
    device = torch.device(device) if device is not None else get_device()
    card_file = card_path(name)
    card = json.loads(card_file.read_text()) if card_file.exists() and scale == "book" else None
    if train in ("auto", False) and card is not None and card.get("config") == changed.config():
        method, card = load_pretrained(name, device=device)
        if verbose:
            print(f"loaded the committed checkpoint {name} (trained {card['created']}, {card['wall_time_s']:.0f} s "
                  f"on {card['run'].get('device')}, final loss {card['final'].get('loss', float('nan')):.4f})")
        return method, card
    if train is False:
        raise CheckpointError(f"no committed checkpoint matches recipe {name} with overrides {sorted(overrides)}")
    if verbose:
        why = "its parameters differ from the committed card" if card is not None else "there is no committed card"
        steps = changed.epochs * (changed.data.n // changed.batch_size)
        print(f"training recipe {name} here ({why}): {changed.epochs} epochs, {steps} steps on {device}; on 2 CPU "
              "cores a book-scale recipe takes up to an hour, on a GPU minutes (the cache keeps the result)")
    pool = changed.data.load()
    method, history = pretrain(changed.method(), pool, epochs=changed.epochs, batch_size=changed.batch_size,
                               lr=changed.lr, min_lr=changed.min_lr, weight_decay=changed.weight_decay,
                               warmup_epochs=changed.warmup_epochs, clip_grad=changed.clip_grad, seed=changed.seed,
                               views=changed.views, cache=True, progress=verbose, device=device)
    if verbose and not history.loaded_from_cache:
        print(f"trained: final loss {history.last['loss']:.4f}")
    return method, {"trained": True, "history": history, "config": changed.config()}


# ------------------------------------------------------------------------------------- accuracy against length
def learning_curve(name: str, scale: str = "book", out: str | Path | None = None, run_dir: str | Path | None = None,
                   seeds: tuple[int, ...] | list[int] = (0, 1, 2), probe_budgets: tuple[int, ...] = (25, 100, 1000),
                   finetune_budget: int = 100, n_test_per_class: int = 200, n_boot: int = 1000) -> str:
    """Downstream accuracy of a recipe's encoder snapshots (and of its random initialisation, epoch 0): a linear
    probe (logistic regression on frozen features) at several label budgets and a fine-tune at one, each over
    ``seeds``, on the phantom test split. Writes ``NAME.curve.csv`` beside the checkpoint and returns a text table.

    The labelled pool is the chapters' (``make_phantom_splits(3300, …)``'s training split, the first 3,300 images of
    the pre-training pool); the test split comes from its own random stream, so no test image was pre-trained on.
    """
    import csv

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .budgets import FineTune, FrozenFeatures, budget_sweep, supervised
    from .data.synthetic import make_phantom_splits
    from .data.transforms import train_transform
    from .models.cnn import small_cnn

    recipe = get_recipe(name, scale)
    if not recipe.snapshots:
        raise ValueError(f"recipe {name} keeps no encoder snapshots, so it has no learning curve; the recipes with "
                         f"one: {', '.join(n for n, r in RECIPES.items() if r.snapshots)}")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(name, scale)
    d = recipe.data
    n_pool = min(3300, d.n)
    data = make_phantom_splits(n_pool, 0, 3 * n_test_per_class, d.image_size, seed=d.seed, difficulty=d.difficulty,
                               cache=True, speckle=d.speckle)
    pool, test = data.get_split("train"), data.get_split("test")
    snaps = {0: None} | {int(p.stem[5:]): p for p in sorted((run_dir / "snapshots").glob("epoch*.pt"))}
    rows = []
    for epoch, path in snaps.items():
        method = recipe.method()
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            method.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        probe = FrozenFeatures(method.to_timm(num_classes=0, global_pool="avg").eval(),
                               lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)),
                               name="linear probe")
        ft = FineTune(method.to_timm(num_classes=pool.num_classes, global_pool="avg", drop_path_rate=0.1),
                      epochs=30, min_steps=200, lr=1e-3, layer_decay=0.65, label_smoothing=0.1, warmup_epochs=3,
                      augment=train_transform(d.image_size, "light"), name="fine-tune")
        budgets = [b for b in probe_budgets if b <= n_pool // pool.num_classes] or [n_pool // pool.num_classes]
        for learner, bs in ((probe, budgets), (ft, [finetune_budget])):
            sweep = budget_sweep(learner, pool, test, bs, seeds=seeds, n_boot=n_boot, cache=True)
            for i, b in enumerate(bs):
                m = sweep.metrics["bal_acc"][i]
                rows.append({"recipe": name, "scale": scale, "epoch": epoch, "learner": learner.name,
                             "labels_per_class": b, "bal_acc": round(m.value, 4), "low": round(m.low, 4),
                             "high": round(m.high, 4), "seeds": len(seeds),
                             "collapsed": int(sweep.collapsed[i].sum())})
    # the supervised yardstick of chapter 00 on the same labels: where a pre-trained ViT has to get to
    cnn = supervised(lambda: small_cnn(pool.channels, pool.num_classes), epochs=12, min_steps=150, batch_size=64,
                     name="SmallCNN from scratch")
    cnn_budgets = sorted({*budgets, finetune_budget})
    sweep = budget_sweep(cnn, pool, test, cnn_budgets, seeds=seeds, n_boot=n_boot, cache=True)  # shared by recipes
    for i, b in enumerate(cnn_budgets):
        m = sweep.metrics["bal_acc"][i]
        rows.append({"recipe": name, "scale": scale, "epoch": "", "learner": cnn.name, "labels_per_class": b,
                     "bal_acc": round(m.value, 4), "low": round(m.low, 4), "high": round(m.high, 4),
                     "seeds": len(seeds), "collapsed": int(sweep.collapsed[i].sum())})
    path = Path(out or CHECKPOINTS) / f"{name}.curve.csv"

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
    head = f"{'epoch':>5}  {'learner':<22} {'labels/class':>12}  {'bal_acc [95% CI]':<22} {'collapsed':>9}"
    lines = [head] + [f"{r['epoch']:>5}  {r['learner']:<22} {r['labels_per_class']:>12}  "
                      f"{r['bal_acc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]   {r['collapsed']:>5}/{r['seeds']}"
                      for r in rows]
    return "\n".join(lines)


def read_curve(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``NAME.curve.csv`` written by :func:`learning_curve`, numbers as numbers."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["epoch"] = int(r["epoch"]) if r["epoch"] else None
        for k in ("labels_per_class", "seeds", "collapsed"):
            r[k] = int(r[k])
        for k in ("bal_acc", "low", "high"):
            r[k] = float(r[k])
    return rows


def curve_figure(paths: list[str | Path]):
    """Balanced accuracy against pre-training length, one panel per recipe: linear probes and a fine-tune of each
    snapshot (epoch 0 = random initialisation) with 95 % intervals over seeds and test images, and the SmallCNN from
    scratch on the same labels as dashed lines."""
    import matplotlib.pyplot as plt

    from .viz import PALETTE

    fig, axes = plt.subplots(1, len(paths), figsize=(5.2 * len(paths), 3.8), squeeze=False, sharey=True)
    for ax, path in zip(axes[0], paths):
        rows = read_curve(path)
        series = sorted({(r["learner"], r["labels_per_class"]) for r in rows if r["epoch"] is not None})
        colours = {}
        for learner, b in series:
            pts = sorted((r["epoch"], r) for r in rows if r["learner"] == learner and r["labels_per_class"] == b
                         and r["epoch"] is not None)
            x = [max(e, 0.5) for e, _ in pts]  # epoch 0 drawn at 0.5 on the log axis
            colours[b] = colours.get(b, PALETTE[len(colours) % len(PALETTE)])
            style = "-" if learner == "fine-tune" else "--" if learner == "linear probe" else ":"
            line, = ax.plot(x, [r["bal_acc"] for _, r in pts], style, marker="o", ms=3, color=colours[b],
                            label=f"{learner}, {b}/class")
            ax.fill_between(x, [r["low"] for _, r in pts], [r["high"] for _, r in pts], color=line.get_color(),
                            alpha=0.12, lw=0)
        for r in rows:
            if r["epoch"] is None and r["labels_per_class"] in colours:
                ax.axhline(r["bal_acc"], color=colours[r["labels_per_class"]], ls=":", lw=1.2,
                           label=f"{r['learner']}, {r['labels_per_class']}/class")
        ax.axhline(1 / 3, color="gray", lw=0.8)
        ax.set_xscale("log")
        ticks = sorted({max(r["epoch"], 0.5) for r in rows if r["epoch"] is not None})
        ax.set_xticks(ticks, ["0" if t == 0.5 else str(int(t)) for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="pre-training epochs (0 = random initialisation)", title=rows[0]["recipe"], ylim=(0.3, 1.0))
    axes[0, 0].set_ylabel("balanced accuracy, phantom test set")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
