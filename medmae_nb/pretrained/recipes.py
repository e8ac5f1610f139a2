"""Named pre-training recipes, as data: a registered method, its settings, a pool of unlabelled images, a schedule.

Pre-training that fits into a chapter's few CPU minutes learns little, so each chapter's pre-trained models are
trained once from a *recipe* (``python -m medmae_nb train RECIPE``; ``make checkpoints`` runs them all) and committed
under ``medmae_nb/checkpoints/`` with a card (:mod:`medmae_nb.pretrained.store`). A recipe holds no code: the method
is a name from the registry (:mod:`medmae_nb.models.registry`) with keyword settings, the views are the method's
default views unless named, and the pool is a :class:`PhantomData` or a :class:`SpecData` (any dataset spec:
``busi``, ``medmnist:NAME``, ``folder:PATH``). Any recipe re-targets another pool with :meth:`Recipe.on`, which is
what ``python -m medmae_nb train RECIPE --data SPEC`` does.

Example:
    >>> r = get_recipe("mae-micro-p8")
    >>> r.method_name, r.kwargs["patch_size"], r.data.n
    ('mae', 8, 20000)
    >>> r.on("medmnist:pneumoniamnist", epochs=2).data.spec
    'medmnist:pneumoniamnist'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cache import _canonical, array_digest, describe
from ..data.base import DataError, ImageDataset
from ..data.synthetic import GENERATOR_VERSION, SPECKLE, make_phantom
from ..data.transforms import hflip
from ..data.views import multi_crop, two_views
from ..models.registry import get_method, method_name
from .store import WEIGHT_FORMATS

__all__ = ["RECIPES", "SCALES", "PhantomData", "Recipe", "SpecData", "get_recipe", "list_recipes",
           "register_recipe"]

SCALES = ("book", "smoke")


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
    channels: int = 1

    @property
    def spec(self) -> str:
        return "phantom"

    def config(self) -> dict[str, Any]:
        # the generator version changes whenever the pictures do, so a card never passes for other images
        keys = ("n", "image_size", "seed", "difficulty", "speckle") + (("downsample",) if self.downsample != 1 else ())
        extra = {"channels": self.channels} if self.channels != 1 else {}
        return {"dataset": "phantom", "generator_version": GENERATOR_VERSION, **{k: getattr(self, k) for k in keys},
                **extra}

    def load(self) -> ImageDataset:
        ds = make_phantom(self.n, self.image_size * self.downsample, seed=self.seed, difficulty=self.difficulty,
                          cache=True, speckle=self.speckle)
        ds = ds if self.downsample == 1 else ds.downsample(self.downsample)
        return ds if self.channels == 1 else ds.to_rgb()


@dataclass(frozen=True)
class SpecData:
    """A pool of real (or your own) images named by a dataset spec: ``busi`` (BUSI with the split derived from
    BreastMNIST's official one, :func:`medmae_nb.data.leaks.shared_busi_split`), ``medmnist:NAME`` (official
    splits) or ``folder:PATH`` (class folders, split folders, or a folder of unlabelled images).

    Only ``split`` is read (``"train"`` by default: never a test image of a dataset the book evaluates on); a folder
    without splits is used whole. The card records the pool's *content* (a digest of the pixels and each image's
    small signature for the leak guard), never a path, so a checkpoint made from a copy elsewhere still matches.
    """

    spec: str
    split: str | None = "train"
    image_size: int = 64
    channels: int = 1
    downsample: int = 1  # loaded at image_size * downsample and averaged down (MIRAM's native x2 target)
    root: str | None = field(default=None, compare=False)  # where the data lie ($MEDMAE_DATA by default)

    @property
    def n(self) -> int:
        return len(self.load())

    def load(self) -> ImageDataset:
        return _load_spec_pool(self.spec, self.split, self.image_size, self.channels, self.downsample, self.root)

    def config(self) -> dict[str, Any]:
        ds = self.load()
        kind = self.spec.split(":", 1)[0]
        name = self.spec if kind in ("busi", "phantom", "medmnist") else kind  # never a local path
        keep = {"dataset": name, "split": self.split, "image_size": self.image_size, "channels": self.channels}
        if self.downsample != 1:
            keep["downsample"] = self.downsample
        return {**keep, "n": len(ds), "content": _content_digest(ds)}


def _content_digest(ds: ImageDataset) -> str:
    """A digest of the pool's pixels quantised to 8 bits (so float noise in a resize does not change it)."""
    return array_digest(np.round(np.asarray(ds.images, np.float32) * 255).astype(np.uint8))


@functools.lru_cache(maxsize=8)
def _load_spec_pool(spec: str, split: str | None, image_size: int, channels: int, downsample: int,
                    root: str | None) -> ImageDataset:
    size = image_size * downsample
    if spec == "busi":
        from ..data.leaks import shared_busi_split

        ds = shared_busi_split(root, image_size=size, channels=channels)
    else:
        from ..data.spec import load_spec

        ds = load_spec(spec, image_size=size, channels=channels, root=root)
    if split is not None and ds.split is not None and len(ds.split):
        keep = np.flatnonzero(ds.split == split)
        if not len(keep):
            raise DataError(f"{spec} has no {split!r} images (splits: {sorted(set(ds.split))})")
        ds = ds.subset(keep)
    return ds if downsample == 1 else ds.downsample(downsample)


@dataclass(frozen=True)
class Recipe:
    """A named way to pre-train one method at book scale (and, scaled down, at smoke scale for tests).

    Attributes:
        name: the recipe's (and its checkpoint's) name.
        description: one line for listings and cards.
        method_name: a method of the registry (``"mae"``, ``"dino"``, …, or one registered by you).
        kwargs: the method's settings (passed to its ``build`` with the pool's image size and channels).
        data: the unlabelled pool.
        epochs: passes over the pool.
        batch_size: global batch.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length.
        min_lr: learning rate at the end of the cosine.
        clip_grad: gradient-norm clipping (None: off).
        views: per-image view maker (see :func:`medmae_nb.train.pretrain`); ``"default"`` takes the method's
            :meth:`~medmae_nb.models.base.SSLMethod.default_views` at the pool's image size.
        seed: the run's seed.
        snapshots: epochs after which an encoder snapshot is kept beside the run (for downstream accuracy against
            pre-training length); not committed.
        smoke: overrides for the ``smoke`` scale (seconds on a CPU, for tests).
        stored: what the committed file holds: ``"all"`` (the whole method, so chapters can show reconstructions)
            or the name of one submodule (``"encoder"``): the rest — a decoder, MoCo's key encoder and queue — is
            re-initialised on load. A storage choice, not part of the training config.
        weights: ``"float16"`` or ``"int8"`` (see :func:`medmae_nb.pretrained.store.pack`); a storage choice too.
        compared: how the method comparison (:mod:`medmae_nb.compare`, chapter 06) lists this recipe by default —
            ``{"label": …, "backbone": …, "chapter": …, "layer_decay": …}`` — or None to leave it out of the default
            list (any recipe can still be compared by name). Presentation, not part of the training config.
        build: an escape hatch for experiments, not for recipes: ``build(image_size) -> method`` used instead of the
            registry (a chapter whose parameters differ from the recipe's passes one to :func:`pretrained`); the
            card still records the method's class and full config, so nothing about the run is lost.
    """

    name: str
    description: str
    method_name: str
    kwargs: dict[str, Any]
    data: PhantomData | SpecData
    epochs: int
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    clip_grad: float | None = None
    views: Any = "default"
    seed: int = 0
    snapshots: tuple[int, ...] = ()
    smoke: dict[str, Any] = field(default_factory=lambda: {"data": PhantomData(64, 32), "epochs": 1,
                                                          "batch_size": 16, "snapshots": (1,)})
    stored: str = "all"
    weights: str = "float16"
    compared: dict[str, Any] | None = field(default=None, compare=False)
    build: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_FORMATS:
            raise ValueError(f"recipe {self.name}: weights={self.weights!r}; use one of {WEIGHT_FORMATS}")
        entry = get_method(self.method_name)  # a clear KeyError for an unknown method
        if self.stored not in entry.stores:
            raise ValueError(f"recipe {self.name}: stored={self.stored!r}; method {self.method_name!r} stores one "
                             f"of {entry.stores}")

    def at(self, scale: str = "book") -> Recipe:
        """This recipe at ``scale`` (``"book"`` or ``"smoke"``)."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")
        return self if scale == "book" else replace(self, **self.smoke)

    def on(self, spec: str, *, channels: int | None = None, image_size: int | None = None, split: str | None = "train",
           root: str | None = None, **changes: Any) -> Recipe:
        """This recipe on another pool: ``spec`` (``"phantom"`` keeps the recipe's phantom), at the recipe's image
        size and channels unless given; ``changes`` override other fields (``epochs=…``, ``name=…``)."""
        size = image_size or self.data.image_size
        chans = channels or self.data.channels
        if spec == "phantom":
            data: PhantomData | SpecData = replace(self.data, image_size=size, channels=chans) if isinstance(
                self.data, PhantomData) else PhantomData(20_000, size, channels=chans)
        else:
            data = SpecData(spec, split=split, image_size=size, channels=chans, downsample=self.data.downsample,
                            root=root)
        return replace(self, data=data, **changes)

    def view_maker(self) -> Any:
        if self.views == "default":
            return get_method(self.method_name).default_views(self.data.image_size)
        return self.views

    def method(self) -> nn.Module:
        """A freshly initialised method (seeded by the recipe's seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.build is not None:
                return self.build(self.data.image_size)
            return get_method(self.method_name).build(img_size=self.data.image_size, in_chans=self.data.channels,
                                                      **self.kwargs)

    def config(self) -> dict[str, Any]:
        """What the recipe is, as the canonical dict a card must match."""
        method = self.method()
        return _canonical({"recipe": self.name, "method": {"class": type(method).__name__, **method.config},
                           "data": self.data.config(), "epochs": self.epochs, "batch_size": self.batch_size,
                           "lr": self.lr, "weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs,
                           "min_lr": self.min_lr, "clip_grad": self.clip_grad, "views": _name(self.view_maker()),
                           "seed": self.seed})

    def summary(self) -> str:
        """One line: method, pool, length."""
        return (f"{self.method_name} ({method_name(type(self.method()))}) on {self.data.spec}, {self.epochs} epochs, "
                f"batch {self.batch_size}")


def _name(fn: Any) -> Any:
    """A package function by its dotted name: unlike a bytecode fingerprint, it reads the same under every Python
    version, so a card written here still matches on Colab."""
    module, qualname = getattr(fn, "__module__", ""), getattr(fn, "__qualname__", "")
    if module.startswith("medmae_nb.") and qualname and "<" not in qualname:
        return f"{module}.{qualname}"
    return describe(fn)


# The book's recipes. Pool size, speckle and length were chosen from the measurements in book/checkpoints.md.
_BOOK_POOL = PhantomData(n=20_000, image_size=64, seed=0, difficulty=1.0, speckle=0.3)
# Chapter 02's pool: the same kind of scenes drawn at 128 px; the encoders see them averaged down to 64 px, and
# MIRAM's native target is the 128-px drawing, detail no encoder sees.
_HIRES_POOL = PhantomData(n=20_000, image_size=128, seed=0, difficulty=1.0, speckle=0.3)
_HIRES_SEEN = replace(_HIRES_POOL, image_size=64, downsample=2)
_HIRES_EPOCHS = 20
_CONVNEXT_EPOCHS = 15
# Chapter 04: both methods see the same images the same number of times (MoCo two views of each); the encoder is
# all that is committed (its decoder / key encoder would not fit the weights budget and no chapter needs them)
_SPARK_EPOCHS = 25
_SMOKE = {"data": PhantomData(64, 32), "epochs": 1, "batch_size": 16, "snapshots": (1,)}
_MOCO_SMOKE = {**_SMOKE, "kwargs": {"encoder": "resnet18_micro", "queue_size": 64, "momentum": 0.99},
               "views": two_views(32)}
# Chapter 05: DINO's small-data settings, chosen with two probe rounds (its defaults, 2048 prototypes and no BatchNorm
# in the head, collapsed to a uniform output within 2 epochs): 1024 prototypes, BatchNorm in the head, teacher
# temperature 0.02 (Nielsen et al.'s start), no stochastic depth, Nielsen et al.'s crop scales. Only the teacher's
# encoder is committed, in int8 (per output row).
_DINO_KW = dict(encoder="vit_micro", patch_size=8, out_dim=1024, use_bn_in_head=True, teacher_temp=0.02,
                warmup_teacher_temp=0.02, freeze_last_layer=0.0, momentum=0.99, drop_path_rate=0.0)


def _dino_views(size: int) -> Any:
    return multi_crop(size, size // 2, n_local=2, global_scale=(0.5, 1.0), local_scale=(0.1, 0.5))


_DINO_SMOKE = {**_SMOKE, "kwargs": {**_DINO_KW, "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16},
               "views": _dino_views(32)}
_SMOKE_SEEN = {**_SMOKE, "data": PhantomData(64, 32, downsample=2)}
_MAE = {"arch": "micro", "norm_pix_loss": True}


def _listed(label: str, backbone: str, chapter: str, layer_decay: float | None = None) -> dict[str, Any]:
    """How the method comparison lists a recipe (``Recipe.compared``)."""
    return {"label": label, "backbone": backbone, "chapter": chapter, "layer_decay": layer_decay}

_CNN = {"encoder": "resnet18_micro"}

_BOOK: list[Recipe] = [
    Recipe("mae-micro-p16", "MAE, ViT-micro encoder, 16-px patches (16 tokens), mask 0.75, 64-px phantom",
           "mae", {**_MAE, "patch_size": 16}, _BOOK_POOL, epochs=40, views=hflip, snapshots=(1, 3, 10, 20, 40)),
    Recipe("mae-micro-p8", "MAE, ViT-micro encoder, 8-px patches (64 tokens), mask 0.75, 64-px phantom",
           "mae", {**_MAE, "patch_size": 8}, _BOOK_POOL, epochs=40, views=hflip, snapshots=(1, 3, 10, 20, 40),
           compared=_listed("MAE p8", "ViT-micro p8", "01", 0.65)),
    Recipe("mae-micro-p16-hires", "MAE, ViT-micro, 16-px patches, on the 128-px phantom averaged to 64 px "
           "(chapter 02's single-scale baseline)", "mae", {**_MAE, "patch_size": 16}, _HIRES_SEEN,
           epochs=_HIRES_EPOCHS, views=hflip, smoke=_SMOKE_SEEN),
    Recipe("miram-micro-p16-upsampled", "MIRAM x1 + x2, ViT-micro, 16-px patches, x2 target = the 64-px input "
           "upsampled (the authors' code)", "miram", {**_MAE, "patch_size": 16, "scales": (1, 2),
                                                      "target": "upsampled"},
           _HIRES_SEEN, epochs=_HIRES_EPOCHS, views=hflip, smoke=_SMOKE_SEEN),
    Recipe("miram-micro-p16-native", "MIRAM x1 + x2, ViT-micro, 16-px patches, encoder on the 128-px phantom "
           "averaged to 64 px, x2 target = the 128-px drawing", "miram",
           {**_MAE, "patch_size": 16, "scales": (1, 2), "target": "native"}, _HIRES_POOL,
           epochs=_HIRES_EPOCHS, views=hflip, smoke={**_SMOKE_SEEN, "data": PhantomData(64, 64)},
           compared=_listed("MIRAM", "ViT-micro p16", "02", 0.65)),
    Recipe("mconvnext-atto-random", "masked ConvNeXt-Atto (FCMAE dense masking), 16-px cells, uniform random "
           "mask 0.6, 64-px phantom (chapter 03's baseline)", "masked-convnext",
           {"encoder": "convnext_atto", "mask_patch": 16, "masking": "random"}, _BOOK_POOL,
           epochs=_CONVNEXT_EPOCHS, lr=1e-3, views=hflip),
    Recipe("mconvnext-atto-entropy", "masked ConvNeXt-Atto, 16-px cells, entropy-guided mask 0.6 (hide "
           "high-entropy cells first, tau 0.5), 64-px phantom", "masked-convnext",
           {"encoder": "convnext_atto", "mask_patch": 16, "masking": "entropy"}, _BOOK_POOL,
           epochs=_CONVNEXT_EPOCHS, lr=1e-3, views=hflip,
           compared=_listed("entropy-masked ConvNeXt", "ConvNeXt-Atto", "03")),
    Recipe("spark-resnet18-micro", "SparK on resnet18_micro (ResNet-18, stages at quarter width, 0.7 M), "
           "16-px cells, mask 0.6, 64-px phantom (chapter 04)", "spark", {**_CNN, "mask_stride": 16}, _BOOK_POOL,
           epochs=_SPARK_EPOCHS, lr=1e-3, views=hflip, stored="encoder",
           compared=_listed("SparK", "ResNet-18 micro", "04")),
    Recipe("moco-resnet18-micro", "MoCo v2 on resnet18_micro (ResNet-18, stages at quarter width, 0.7 M), "
           "queue 4096, momentum 0.99, tau 0.2, two crops of each 64-px phantom image (chapter 04)", "moco",
           {**_CNN, "queue_size": 4096, "momentum": 0.99}, _BOOK_POOL, epochs=_SPARK_EPOCHS, lr=1e-3,
           views=two_views(64), stored="encoder", smoke=_MOCO_SMOKE,
           compared=_listed("MoCo v2", "ResNet-18 micro", "04")),
    Recipe("dino-vit-micro", "DINO, ViT-micro, 8-px patches, 2 global 64-px + 2 local 32-px crops, 1024 "
           "prototypes, BatchNorm head, teacher temperature 0.02, 64-px phantom (chapter 05)", "dino", _DINO_KW,
           _BOOK_POOL, epochs=6, lr=5e-4, weight_decay=0.04, clip_grad=3.0, views=_dino_views(64),
           stored="teacher_encoder", weights="int8", smoke=_DINO_SMOKE,
           compared=_listed("DINO", "ViT-micro p8", "05", 0.65)),
]

# Real ultrasound: each chapter-06 method's book recipe on BUSI's training images (the split derived from
# BreastMNIST's official one, so no BreastMNIST or BUSI test image is ever pre-trained on), 64 px, gray. Every method
# sees the same number of images (REAL_EPOCHS passes over the pool): a pool of about 550 images is small, so the
# passes are many; the phantom recipes' lengths differ by method and are not comparable in compute.
REAL_EPOCHS = 150
_REAL_SMOKE = {"epochs": 1, "batch_size": 16, "snapshots": ()}


def _real(recipe_name: str, weights: str | None = None, epochs: int = REAL_EPOCHS, **kwargs: Any) -> Recipe:
    base = next(r for r in _BOOK if r.name == recipe_name)
    if kwargs:
        base = replace(base, kwargs={**base.kwargs, **kwargs})
    # the phantom recipe's image size: MIRAM's native recipe takes 128-px images (its encoder sees them averaged to
    # 64 px, its x2 target is the 128-px original)
    data = SpecData("busi", "train", base.data.image_size, base.data.channels, downsample=base.data.downsample)
    views = base.views if base.views is hflip else "default"
    real = replace(base, name=f"{recipe_name}-busi", data=data, epochs=epochs, snapshots=(), views=views,
                   compared=None, warmup_epochs=max(base.warmup_epochs, epochs / 40), weights=weights or base.weights,
                   description=f"{base.description.split(', 64-px phantom')[0].split(', on the 128-px')[0]}; "
                               f"pre-trained on BUSI's training images (shared BUSI/BreastMNIST split), "
                               f"{data.image_size} px, "
                               f"{epochs} passes")
    # the smoke scale keeps the phantom recipe's small phantom pool: seconds, and no real data needed
    return replace(real, smoke={**base.smoke, **_REAL_SMOKE})


_REAL_BASES = ("mae-micro-p8", "miram-micro-p16-native", "mconvnext-atto-entropy", "spark-resnet18-micro",
               "moco-resnet18-micro", "dino-vit-micro")
RECIPES: dict[str, Recipe] = {r.name: r for r in _BOOK}
# MoCo's queue must be smaller than the pool, or it holds several keys of every image, and a query's own image turns
# up among its negatives: the book recipe's 4,096 keys over about 440 images (9 of each) drove InfoNCE up from 5.2 to
# 7.4 in a trial run here, with negatives as similar as 0.58. 256 keys is about 60 % of the pool.
_REAL_CHANGES = {"moco-resnet18-micro": {"queue_size": 256}}
RECIPES.update({f"{b}-busi": _real(b, **_REAL_CHANGES.get(b, {})) for b in _REAL_BASES})

# Chapter studies on real ultrasound: the settings a chapter's claim compares, each pre-trained exactly like the -busi
# recipes above (BUSI's training images, REAL_EPOCHS passes) with one thing changed. Their weights are not committed:
# every seed, 0 included, is NAME-sSEED in the seed-weights folder (:func:`medmae_nb.pretrained.seed_name`), and the
# committed results tables hold what they score (provenance in medmae_nb/results/pretrain-seeds.json).
_BUSI = "pre-trained on BUSI's training images (shared BUSI/BreastMNIST split)"


def _study(base: str, name: str, description: str, **kwargs: Any) -> Recipe:
    return replace(_real(base, **kwargs), name=name,
                   description=f"{description}; {_BUSI}, 64 px, {REAL_EPOCHS} passes")


STUDIES: dict[str, Recipe] = {r.name: r for r in [
    # chapter 01: mask ratio at 8-px patches (0.75 is mae-micro-p8-busi), patch size at mask 0.75
    _study("mae-micro-p8", "mae-micro-p8-m50-busi", "MAE, ViT-micro, 8-px patches (64 tokens), mask 0.5",
           mask_ratio=0.5),
    _study("mae-micro-p8", "mae-micro-p8-m90-busi", "MAE, ViT-micro, 8-px patches (64 tokens), mask 0.9",
           mask_ratio=0.9),
    _study("mae-micro-p16", "mae-micro-p16-busi", "MAE, ViT-micro, 16-px patches (16 tokens), mask 0.75"),
    # chapter 02 at chapter 01's small patches: single-scale MAE and both MIRAM targets, one pool (128-px images; the
    # encoders see them averaged to 64 px; MIRAM's x2 target is the 128-px image, or the 64-px input upsampled)
    _study("mae-micro-p16-hires", "mae-micro-p8-hires-busi", "MAE, ViT-micro, 8-px patches, mask 0.75, on 128-px "
           "images averaged to 64 px (chapter 02's single-scale baseline)", patch_size=8),
    _study("miram-micro-p16-native", "miram-micro-p8-native-busi", "MIRAM x1 + x2, ViT-micro, 8-px patches, mask "
           "0.75, encoder on 128-px images averaged to 64 px, x2 target = the 128-px image", patch_size=8),
    _study("miram-micro-p16-upsampled", "miram-micro-p8-upsampled-busi", "MIRAM x1 + x2, ViT-micro, 8-px patches, "
           "mask 0.75, x2 target = the 64-px input upsampled (the authors' code)", patch_size=8),
    # chapter 03: the random-mask twin of mconvnext-atto-entropy-busi
    _study("mconvnext-atto-random", "mconvnext-atto-random-busi", "masked ConvNeXt-Atto (FCMAE dense masking), "
           "16-px cells, uniform random mask 0.6 (chapter 03's baseline)"),
]}
RECIPES.update(STUDIES)


def register_recipe(recipe: Recipe, replace_existing: bool = False) -> Recipe:
    """Adds a recipe (e.g. for a method you registered) so that ``train``, ``compare`` and the chapters find it."""
    if recipe.name in RECIPES and not replace_existing:
        raise ValueError(f"a recipe named {recipe.name!r} exists; choose another name or pass replace_existing=True")
    RECIPES[recipe.name] = recipe
    return recipe


def list_recipes(method: str | None = None) -> list[str]:
    """Recipe names, optionally only those of one registered method."""
    return [n for n, r in RECIPES.items() if method is None or r.method_name == method]


def get_recipe(name: str, scale: str = "book") -> Recipe:
    """The recipe called ``name`` at ``scale``; a clear ``KeyError`` listing the recipes for an unknown name."""
    if name not in RECIPES:
        from ..models.registry import _load_plugins

        _load_plugins()  # a plugin module may add recipes
    if name not in RECIPES:
        raise KeyError(f"no recipe named {name!r}; the recipes are: {', '.join(sorted(RECIPES))} "
                       "(python -m medmae_nb train list)")
    return RECIPES[name].at(scale)
