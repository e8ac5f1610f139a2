"""Every method side by side: the same splits, label budgets and seeds (``python -m medmae_nb.bench methods``).

:func:`run_methods` loads each chapter's book-scale checkpoint (or pre-trains it when asked), runs every downstream
protocol — fine-tuning, a linear classifier and the classical classifiers on frozen features, probability-averaging
ensembles — through :func:`~medmae_nb.budgets.budget_sweep` on one dataset's splits, and appends a tidy CSV: one row
per (method, protocol, budget, metric) with the mean over seeds, its 95 % interval, each seed's value and the row's
config. The file is written atomically after every finished sweep and read back first, so a run that stops resumes
where it was: rows already there are skipped. Each training run is also cached (``MEDMAE_CACHE``), so an ensemble
whose members are already in the table reads their probabilities instead of training them again.

Example:
    >>> from medmae_nb.compare import METHODS
    >>> [m.recipe for m in METHODS.values() if m.kind == "ssl"]  # doctest: +NORMALIZE_WHITESPACE
    ['mae-micro-p8', 'miram-micro-p16-native', 'mconvnext-atto-entropy', 'spark-resnet18-micro',
     'moco-resnet18-micro', 'dino-vit-micro']
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .budgets import BudgetSweep, FrozenFeatures, _score, average_sweeps, budget_sweep, collapsed
from .cache import dataset_fingerprint
from .classical import budgets_for, knn_pipeline, logreg_pipeline, svm_pipeline
from .data import (
    DataError,
    assign_splits,
    label_budget,
    label_fraction,
    load_image_folder,
    load_medmnist,
    make_phantom_splits,
    stratified_sample,
)
from .data.base import ImageDataset
from .evaluate import MetricCI
from .profiles import get_device, get_profile
from .protocol import EvalProtocol, protocol_for

__all__ = ["DATASETS", "METHODS", "PROTOCOLS", "FIELDS", "SMALL_CNN", "MethodSpec", "BenchResult",
           "load_benchmark_data", "method_spec", "results_path", "committed_table", "default_methods", "eval_protocol",
           "headline_rows", "method_costs", "pool_pretrain_seeds", "probs_path", "protocols_of", "read_probs",
           "chapter_sweeps", "table_sweeps",
           "read_results", "run_methods", "seed_figure", "summary_table"]

DATASETS = ("phantom", "busi", "pneumoniamnist", "breastmnist", "folder")
PROTOCOLS = ("fine-tune", "logistic regression", "SVM", "kNN")
FIELDS = ("dataset", "method", "kind", "pretrain_seed", "protocol", "unit", "budget", "n_train", "steps", "augment",
          "selection",
          "metric", "value", "low", "high", "seeds", "per_seed", "collapsed", "seconds", "profile", "key", "config")
# what a frozen-feature protocol records in the steps / augment / selection columns: no network is trained
FROZEN_ROW = {"steps": 0, "augment": "none", "selection": "fixed hyper-parameters"}
METRICS = ("bal_acc", "acc", "auc")
_TRANSFER = "convnext-atto-pneumoniamnist"
SMALL_CNN = "SmallCNN (supervised)"
YARDSTICKS = ("scratch", "supervised")  # the kinds trained from scratch on the labels alone
RESULTS = Path(__file__).resolve().parent / "results"  # the committed real-data tables and their cards


@dataclass(frozen=True)
class MethodSpec:
    """One row group of the benchmark.

    Attributes:
        name: how tables and figures name it.
        kind: ``"ssl"`` (a committed pre-training recipe), ``"transfer"`` (the supervised substitute for ImageNet
            weights, :mod:`medmae_nb.transfer`), ``"scratch"`` (a recipe's backbone at random initialisation:
            fine-tuning trains it from scratch, the frozen protocols read a random network's features — the control)
            or ``"supervised"`` (the SmallCNN trained from scratch: fine-tune only, the book's yardstick).
        recipe: the recipe (``ssl``; for ``scratch`` the recipe whose backbone is built untrained) or substitute
            (``transfer``) name.
        backbone: the encoder, in words.
        chapter: where the book explains it.
        layer_decay: layer-wise learning-rate decay when fine-tuning (ViTs), None for none.
        pretrain_seed: for ``ssl``, the pre-training seed of the checkpoint (None: the recipe's own, the committed
            checkpoint; another: ``RECIPE-sSEED`` from the seed-weights folder, :func:`medmae_nb.pretrained.load_seed`).
    """

    name: str
    kind: str
    recipe: str | None
    backbone: str
    chapter: str
    layer_decay: float | None = None
    pretrain_seed: int | None = None

    def seed_label(self) -> str:
        """The ``pretrain_seed`` column: the checkpoint's pre-training seed (``ssl``), ``""`` for the others."""
        if self.kind != "ssl":
            return ""
        if self.pretrain_seed is not None:
            return str(self.pretrain_seed)
        from .pretrained import get_recipe

        return str(get_recipe(self.recipe).seed)


def _default_methods(real: bool = False) -> dict[str, MethodSpec]:
    """The default comparison: every recipe that says how it is listed (``Recipe.compared``), in recipe order, then
    the transfer substitute, then the supervised yardsticks — each compared backbone trained from scratch (one row
    per distinct backbone, built from the first recipe that has it) and the SmallCNN. Read from the recipes, so a new
    method's recipe (and its backbone's scratch row) joins by itself.

    ``real``: the self-supervised rows use the checkpoints pre-trained on real images (``RECIPE-busi``, BUSI's
    training split) where one exists — the setting of a reader with unlabelled scans of their own; the phantom ones
    otherwise (the phantom's table)."""
    from .pretrained import RECIPES

    compared = [r for r in RECIPES.values() if r.compared]
    ssl = [MethodSpec(r.compared["label"], "ssl", f"{r.name}-busi" if real and f"{r.name}-busi" in RECIPES
                      else r.name, r.compared["backbone"], r.compared["chapter"], r.compared.get("layer_decay"))
           for r in compared]
    scratch: dict[str, MethodSpec] = {}
    for r in compared:
        b = r.compared["backbone"]
        scratch.setdefault(b, MethodSpec(f"scratch {b}", "scratch", r.name, b, r.compared["chapter"],
                                         r.compared.get("layer_decay")))
    yardsticks = [*scratch.values(), MethodSpec(SMALL_CNN, "supervised", None, "SmallCNN (4 conv blocks)", "01")]
    return {m.name: m for m in [*ssl, MethodSpec("transfer ConvNeXt", "transfer", _TRANSFER, "ConvNeXt-Atto", "03"),
                                *yardsticks]}


def _is_real(dataset: str) -> bool:
    """Whether a comparison runs on real images (anything but the phantom): its default self-supervised checkpoints
    are then the real-data ones."""
    try:
        from .data.spec import parse_spec

        return parse_spec(dataset).kind != "phantom"
    except DataError:
        return dataset != "phantom"


METHODS: dict[str, MethodSpec] = _default_methods()
# the ensembles: chapter 03's pair, and every self-supervised method's fine-tuned model
ENSEMBLES = {
    "ensemble: entropy ConvNeXt + transfer": ("entropy-masked ConvNeXt", "transfer ConvNeXt"),
    "ensemble: all self-supervised": tuple(m.name for m in METHODS.values() if m.kind == "ssl"),
}


# ---------------------------------------------------------------------------------------------------------- data
def load_benchmark_data(dataset: str, profile: dict[str, Any], root: str | Path | None = None, seed: int = 0,
                        image_size: int = 64) -> tuple[ImageDataset, ImageDataset]:
    """``(pool, test)`` of a benchmark dataset: the splits every method and chapter uses.

    * ``phantom``: the profile's pool and test set (``make_phantom_splits``, seed ``seed``);
    * ``busi``: the split shared with BreastMNIST (:func:`medmae_nb.data.leaks.shared_busi_split`: 440 train, 79 val,
      261 test), so no BreastMNIST test image is in the pool and the real-data checkpoints (pre-trained on its train
      split) are never scored on an image they saw; the pool is its train split;
    * ``pneumoniamnist`` / ``breastmnist``: the official MedMNIST train and test splits (28 px enlarged);
    * ``folder``: your own class folders at ``root``, split 70 / 30 like BUSI;
    * any dataset spec (:func:`medmae_nb.data.spec.parse_spec`): ``medmnist:NAME`` (official train and test splits,
      native channels), ``folder:PATH`` — split folders are used as split (train / test; val is left for selection),
      class folders are split 70 / 30 — and ``phantom``.

    Raises:
        DataError: an unknown dataset, or a real one not found under ``root`` (``$MEDMAE_DATA``).
    """
    root = root or os.environ.get("MEDMAE_DATA")
    if dataset not in DATASETS:
        return _spec_data(dataset, profile, root, seed, image_size)
    if dataset == "phantom":
        data = make_phantom_splits(profile["n_pool"], 0, 3 * profile["n_per_class_test"], image_size, seed=seed,
                                   cache=True)
    elif dataset == "busi":  # the split derived from BreastMNIST's: what every real-data checkpoint left out
        from .data.leaks import shared_busi_split

        data = shared_busi_split(root, image_size=image_size, channels=1)
    elif dataset in ("pneumoniamnist", "breastmnist"):
        data = load_medmnist(dataset, root, image_size=image_size, channels=1)
    elif dataset == "folder":
        if root is None:
            raise DataError("dataset 'folder' needs a root: class folders of your own images (--root or $MEDMAE_DATA)")
        data = assign_splits(load_image_folder(root, image_size=image_size, channels=1), 0.0, 0.3, seed)
    else:
        raise DataError(f"unknown benchmark dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    pool, test = data.get_split("train"), data.get_split("test")
    if dataset == "busi":
        test = drop_near_duplicates(pool, test)
    if profile["name"] == "smoke":  # seconds per run: stratified samples of the real sets
        pool, test = _cap(pool, profile["n_pool"], seed), _cap(test, 3 * profile["n_per_class_test"], seed)
    return pool, test


def drop_near_duplicates(pool: ImageDataset, test: ImageDataset, verbose: bool = True) -> ImageDataset:
    """``test`` without the images that nearly duplicate a ``pool`` image (the content leak guard's match,
    :func:`medmae_nb.data.leaks.find_overlap`: the same scan at another size, crop or channel count). BUSI holds
    near-identical frames of one scan, and its split shared with BreastMNIST puts one such pair across train and
    test; a score on that image would measure memory. Said on the output when any image is left out."""
    from .data.leaks import find_overlap

    dup = np.unique(find_overlap(pool, test).b_matched)
    if not len(dup):
        return test
    if verbose:
        print(f"{test.name or 'test'}: left out {len(dup)} of {len(test)} test image(s) that nearly duplicate a "
              f"training image (index {', '.join(str(int(i)) for i in dup)})")
    return test.subset(np.setdiff1d(np.arange(len(test)), dup))


def _spec_data(dataset: str, profile: dict[str, Any], root: str | Path | None, seed: int,
               image_size: int) -> tuple[ImageDataset, ImageDataset]:
    from .data.spec import is_unlabelled, load_spec, parse_spec

    spec = parse_spec(dataset)
    if spec.kind == "phantom":
        return load_benchmark_data("phantom", profile, root, seed, image_size)
    if spec.kind == "busi":
        return load_benchmark_data("busi", profile, root, seed, image_size)
    ds = load_spec(spec, image_size=image_size, root=root)
    if is_unlabelled(ds):
        raise DataError(f"{dataset} holds unlabelled images: they can pre-train a method (medmae train RECIPE --data "
                        f"{dataset}) but cannot be compared on; give class folders or split folders")
    has_split = ds.split is not None and len(ds.split) and {"train", "test"} <= set(ds.split)
    data = ds if has_split else assign_splits(ds, 0.0, 0.3, seed)
    pool, test = data.get_split("train"), data.get_split("test")
    if profile["name"] == "smoke":
        pool, test = _cap(pool, profile["n_pool"], seed), _cap(test, 3 * profile["n_per_class_test"], seed)
    return pool, test


def data_identity(ds: ImageDataset) -> dict[str, Any]:
    """What a results row records of its data (:func:`medmae_nb.cache.dataset_fingerprint` with labels), with a
    digest that is the same on every CPU: images read from files hash exactly, but the phantom is drawn with
    floating-point maths whose last bits differ between processor families, so its digest is taken over its labels,
    size and shape and its pixel mean and standard deviation rounded to 4 decimals (``stable:`` prefix). A table
    made on one machine is then resumed, and its recorded command re-checked, on another."""
    fp = dataset_fingerprint(ds, labels=True)
    if str(fp["name"]).startswith("phantom"):
        images = np.asarray(ds.images, dtype=np.float64)
        parts = [fp["name"], fp["n"], fp["shape"], np.asarray(ds.labels).tolist(), f"{images.mean():.4f}",
                 f"{images.std():.4f}"]
        fp["sha256"] = "stable:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return fp


def results_path(dataset: str, profile_name: str, pool: ImageDataset, test: ImageDataset,
                 folder: str | Path = "results") -> Path:
    """The default results table of a dataset and profile: ``FOLDER/NAME-FINGERPRINT-PROFILE.csv``, where the
    fingerprint is a digest of the pool's and test set's images and labels — two folders of other images never
    write into one file, and the same data under another path do."""
    from .data.spec import parse_spec

    try:
        spec = parse_spec(dataset)
        label = spec.name or (Path(spec.path).name if spec.path else spec.kind)
    except DataError:
        label = dataset
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(label)) or "data"
    digest = hashlib.sha256((data_identity(pool)["sha256"] + data_identity(test)["sha256"]).encode()).hexdigest()[:8]
    return Path(folder) / f"{label}-{digest}-{profile_name}.csv"


def _dataset_name(dataset: str) -> str:
    """The legacy short name of a spec where one exists (``medmnist:breastmnist`` -> ``breastmnist``)."""
    return dataset.split(":", 1)[1].split("@")[0] if dataset.startswith("medmnist:") else dataset


def _cap(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    return ds if len(ds) <= n else ds.subset(stratified_sample(ds.labels, n, seed))


def eval_protocol(dataset: str, profile: dict[str, Any]) -> EvalProtocol:
    """The evaluation protocol of a comparison (:func:`medmae_nb.protocol.protocol_for` of the profile): one rule for
    every dataset and learner — the fine-tuned encoders, the scratch backbones and the SmallCNN get the same steps,
    augmentation and selection at each budget."""
    return protocol_for(profile)


def _budgets(dataset: str, profile: dict[str, Any], pool: ImageDataset) -> tuple[str, list[float], list[float]]:
    """``(unit, budgets, fine-tune budgets)``: fine-tuning, the costly protocol, may run on fewer budgets."""
    if _dataset_name(dataset) == "breastmnist":  # the goal is stated in shares of the official training set
        fr = [float(f) for f in profile["ch06_fractions"]]
        return "fraction", fr, fr
    budgets = [int(b) for b in budgets_for(pool, profile["ch06_budgets"])]
    ft = profile.get("ch06_ft_budgets")
    return "per_class", budgets, budgets if ft is None else [b for b in budgets if b in ft]


# ------------------------------------------------------------------------------------------------------- models
def _load_method(spec: MethodSpec, scale: str, train: bool | str, device: Any,
                 seed_weights: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    from .pretrained import load_seed, pretrained, seed_name

    # another seed than the committed checkpoint's (a study recipe has none: every seed is in the seed-weights folder)
    other_seed = spec.pretrain_seed is not None and seed_name(spec.recipe, spec.pretrain_seed) != spec.recipe
    if other_seed and scale == "book" and train is not True:
        return load_seed(spec.recipe, spec.pretrain_seed, seed_weights, device=device)
    seed = {"seed": spec.pretrain_seed} if other_seed else {}  # another scale: pre-trained here with that seed
    method, card = pretrained(spec.recipe, scale=scale, train=train, device=device, verbose=False, **seed)
    return method, card


def _networks(spec: MethodSpec, k: int, scale: str, train: bool | str, device: Any,
              seed: int, channels: int = 1, test: ImageDataset | None = None,
              allow_leak: bool = False,
              seed_weights: str | Path | None = None) -> tuple[nn.Module | None, Any, dict[str, Any]]:
    """``(frozen encoder, fine-tune model or factory, info)`` of one method for a ``k``-class task on images of
    ``channels`` channels: a checkpoint built for another channel count gets its first layer adapted (said in
    the output). A real-data checkpoint whose pre-training images overlap ``test`` (by content, at any size) is
    refused (:func:`medmae_nb.data.leaks.check_no_leak`), or run with a loud warning when ``allow_leak``."""
    from .models import create_encoder
    from .models.channels import adapt_input_channels
    from .transfer import load_substitute

    torch.manual_seed(seed)  # new classifier heads: seeded, so a cached run matches a fresh one
    if spec.kind == "ssl":
        method, card = _load_method(spec, scale, train, device, seed_weights)
        if test is not None:
            from .pretrained import check_pool_against

            check_pool_against(spec.recipe, test, allow=allow_leak, card=card, scale=scale)
        encoder, tuned = method.to_timm().eval(), method.to_timm(num_classes=k)
        if getattr(method, "in_chans", channels) != channels:
            encoder = adapt_input_channels(encoder, channels)
            tuned = adapt_input_channels(tuned, channels, verbose=False)
        info = {"card": card}
    elif spec.kind == "transfer":
        encoder, tuned = load_substitute(spec.recipe).eval(), load_substitute(spec.recipe, num_classes=k)
        if channels != 1:
            encoder = adapt_input_channels(encoder, channels)
            tuned = adapt_input_channels(tuned, channels, verbose=False)
        info = {"source": tuned.init_source}
    elif spec.kind == "supervised":
        from .models import small_cnn

        encoder = None  # no frozen protocols: the SmallCNN is only ever trained on the labels

        def tuned() -> nn.Module:  # a fresh random network per seed
            return small_cnn(channels, k)

        info = {"source": "random init"}
    elif spec.recipe is None:  # a hand-made "scratch" spec without a recipe: ResNet-18 micro
        encoder = create_encoder("resnet18_micro", channels).eval()

        def tuned() -> nn.Module:
            return create_encoder("resnet18_micro", channels, num_classes=k)

        info = {"source": "random init"}
    else:  # the recipe's backbone, untrained
        from .pretrained import get_recipe

        recipe = get_recipe(spec.recipe, scale)

        def tuned(num_classes: int = k) -> nn.Module:  # a fresh random network per seed (seeded by the learner)
            method = recipe.method()
            net = method.to_timm(num_classes=num_classes)
            built = getattr(method, "in_chans", recipe.data.channels)
            return adapt_input_channels(net, channels, verbose=False) if built != channels else net

        encoder = tuned(0).eval()
        info = {"source": "random init"}
    return encoder, tuned, info


def _learners(spec: MethodSpec, encoder: nn.Module | None, tuned: Any, k: int, proto: EvalProtocol,
              device: Any) -> dict[str, Any]:
    """The learners of one method: the fine-tune under the shared protocol (the same steps, augmentation and selection
    for every method, scratch backbone and SmallCNN), and the frozen-feature classifiers (none for the SmallCNN)."""
    from .budgets import FeatureMemo

    name = f"{spec.name}, fine-tune"
    if spec.kind in YARDSTICKS:
        ft = proto.scratch(tuned, name=name, device=device) if spec.layer_decay is None else \
            proto.fine_tune(tuned, name=name, layer_decay=spec.layer_decay, device=device, min_lr=0.0)
    else:
        ft = proto.fine_tune(tuned, name=name, layer_decay=spec.layer_decay, device=device)
    if encoder is None:
        return {"fine-tune": ft}
    memo = FeatureMemo()
    makers = {"logistic regression": logreg_pipeline, "SVM": svm_pipeline,
              "kNN": lambda: knn_pipeline(k)}
    frozen = {p: FrozenFeatures(encoder, make, device=device, name=f"{spec.name}, {p}", memo=memo)
              for p, make in makers.items()}
    return {"fine-tune": ft, **frozen}


def protocols_of(spec: MethodSpec) -> tuple[str, ...]:
    """The protocols a method is evaluated with: the SmallCNN only by training it (``fine-tune``), every other method
    by all of :data:`PROTOCOLS`."""
    return ("fine-tune",) if spec.kind == "supervised" else PROTOCOLS


def _own_seed(spec: MethodSpec, seed_weights: str | Path | None = None) -> MethodSpec:
    """``spec`` pinned to its recipe's own seed when that recipe has no committed checkpoint (a study recipe) and the
    seed-weights folder holds ``NAME-sSEED``: then the default run and the pooled seeds read the same weights (the
    same rows), rather than the default run pre-training its own copy in the cache."""
    if spec.kind != "ssl" or spec.pretrain_seed is not None:
        return spec
    from dataclasses import replace

    from .pretrained import card_path, get_recipe, seed_name
    from .pretrained.run import seed_weights_dir

    seed = get_recipe(spec.recipe).seed
    name, folder = seed_name(spec.recipe, seed), seed_weights_dir(seed_weights)
    if name == spec.recipe or folder is None or not card_path(name, folder).exists():
        return spec
    return replace(spec, pretrain_seed=seed)


def _checkpoint_id(spec: MethodSpec, train: bool | str, scale: str = "book",
                   seed_weights: str | Path | None = None) -> str:
    """What a method's weights are, for the row config: the checkpoint file's sha256 (from its card), ``trained
    here`` or ``random init``."""
    from .pretrained import card_path, seed_name
    from .pretrained.run import seed_weights_dir
    from .transfer import card_file

    if spec.kind in YARDSTICKS:
        return "random init"
    if train is True or (spec.kind == "ssl" and scale != "book"):
        seed = "" if spec.pretrain_seed is None else f", seed {spec.pretrain_seed}"
        return f"pre-trained here ({scale} scale{seed})"
    if spec.kind == "ssl" and spec.pretrain_seed is not None:
        name = seed_name(spec.recipe, spec.pretrain_seed)
        folder = None if name == spec.recipe else seed_weights_dir(seed_weights)
        card = card_path(name, folder)
    else:
        card = card_path(spec.recipe) if spec.kind == "ssl" else card_file(spec.recipe)
        if spec.kind == "ssl" and not card.exists():  # no committed checkpoint: pretrained() trains it here
            return f"pre-trained here ({scale} scale, seed {spec.seed_label()})"
    return json.loads(card.read_text()).get("sha256", "?")[:16] if card.exists() else "missing"


def default_methods(dataset: str) -> list[str]:
    """Every method, except the transfer ConvNeXt on PneumoniaMNIST: its weights were trained with those labels."""
    listed = _default_methods(_is_real(dataset))  # read again: a plugin's recipe registered since import joins too
    return [m for m in listed if not (_dataset_name(dataset) == "pneumoniamnist" and listed[m].kind == "transfer")]


def transfer_overlaps(test: ImageDataset, root: str | Path | None = None, threshold: float = 0.98) -> bool | None:
    """Whether ``test`` holds images the transfer ConvNeXt was trained on (PneumoniaMNIST's train and val splits,
    :mod:`medmae_nb.transfer`), by content at any size or channel count — not by the dataset's name; None when that
    training set is not on disk to compare against (the name rule of :func:`default_methods` then stands)."""
    from .data.leaks import find_overlap
    from .transfer import SUBSTITUTES

    spec = SUBSTITUTES[_TRANSFER]
    try:
        seen = load_medmnist(spec.dataset, root, image_size=test.image_size, channels=1)
    except (DataError, OSError):
        return None
    seen = seen.subset(np.flatnonzero(seen.split != "test"))
    return bool(find_overlap(seen, test, threshold=threshold, crops=((1.0, 1.0),)))


def method_spec(name: str, dataset: str = "phantom") -> MethodSpec:
    """A method of :data:`METHODS`, or any recipe (a registered method's checkpoint: yours too) by recipe name. On
    real data (any ``dataset`` but the phantom) a listed method's checkpoint is the one pre-trained on real images.

    Raises:
        ValueError: neither a method here nor a recipe.
    """
    listed = _default_methods(_is_real(dataset))
    if name in listed:
        return listed[name]
    from .pretrained import RECIPES, get_recipe

    try:
        recipe = get_recipe(name)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; methods: {list(METHODS)}; or any recipe: "
                         f"{', '.join(RECIPES)}") from None
    vit = recipe.method_name in ("mae", "miram") or str(recipe.kwargs.get("encoder", "")).startswith("vit")
    return MethodSpec(name, "ssl", name, recipe.method_name, "-", 0.65 if vit else None)


# -------------------------------------------------------------------------------------------------------- table
def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results CSV, numbers as numbers (``budget``, ``value``, …); ``[]`` when the file is absent.

    Raises:
        DataError: a file that is not a results table of this module (other columns), naming the file.
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise DataError(f"{path} is not a benchmark results table (columns {reader.fieldnames}, expected "
                            f"{list(FIELDS)}); move it away or pass another --out")
        rows = list(reader)
    for r in rows:
        for k in ("budget", "value", "low", "high", "seconds"):
            r[k] = float(r[k])
        for k in ("n_train", "steps", "seeds", "collapsed"):
            r[k] = int(r[k])
    return rows


def _write_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared results folder private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rows(sweep: BudgetSweep, dataset: str, method: str, protocol: str, profile: str,
          config: dict[str, Any], proto: EvalProtocol) -> list[dict[str, Any]]:
    rows = []
    kind, pseed = config.get("kind", "ensemble"), config.get("pretrain_seed", "")
    for i, b in enumerate(sweep.budgets):
        key = _key(dataset, method, protocol, sweep.unit, b, config)
        how = proto.row(sweep.n_train[i]) if protocol == "fine-tune" else FROZEN_ROW
        for m, cis in sweep.metrics.items():
            rows.append({"dataset": dataset, "method": method, "kind": kind, "pretrain_seed": pseed,
                         "protocol": protocol, "unit": sweep.unit,
                         "budget": b, "n_train": sweep.n_train[i], **how, "metric": m, "value": round(cis[i].value, 6),
                         "low": round(cis[i].low, 6), "high": round(cis[i].high, 6), "seeds": len(sweep.seeds),
                         "per_seed": ";".join(f"{v:.4f}" for v in sweep.per_seed[m][i]),
                         "collapsed": int(sweep.collapsed[i].sum()), "seconds": round(sweep.seconds[i], 2),
                         "profile": profile, "key": key, "config": json.dumps(config, sort_keys=True, default=str)})
    return rows


@dataclass
class BenchResult:
    """What :func:`run_methods` returns: the table's rows for this dataset and the sweeps it ran or read."""

    rows: list[dict[str, Any]]
    sweeps: dict[tuple[str, str], BudgetSweep] = field(default_factory=dict)
    path: Path | None = None
    skipped: int = 0


def run_methods(dataset: str = "phantom", profile: str | dict[str, Any] | None = None, out: str | Path | None = None,
                methods: Sequence[str] | None = None, protocols: Sequence[str] | None = None,
                seeds: Sequence[int] | None = None, root: str | Path | None = None, train: bool | str = "auto",
                ensembles: bool = True, all_sweeps: bool = False, device: Any = None,
                verbose: bool = True, allow_leak: bool = False, pretrain_seed: int | None = None,
                seed_weights: str | Path | None = None, fractions: Sequence[float] | None = None,
                per_class: Sequence[int] | None = None) -> BenchResult:
    """Runs every (method, protocol) on one dataset's splits, budgets and seeds; appends the results to ``out``.

    Args:
        dataset: one of :data:`DATASETS`, or any dataset spec (``medmnist:NAME``, ``folder:PATH``).
        profile: a profile name or dict (budgets, fine-tune length, seeds, bootstrap size).
        out: the results CSV (created or resumed); ``"auto"``: :func:`results_path` (one file per dataset content
            and profile); None keeps the rows in memory only.
        methods: names from :data:`METHODS` or recipe names (default all of :data:`METHODS`; the transfer ConvNeXt
            is left out on PneumoniaMNIST, the data its weights were trained on).
        protocols: names from :data:`PROTOCOLS` (default all).
        seeds: one label draw and training run per seed (default: the profile's, at least 3 in ``cpu``/``gpu``).
        root: where the real datasets are (default ``$MEDMAE_DATA``).
        train: ``"auto"`` loads the committed checkpoints (``True``: pre-train them here, cached).
        ensembles: add the probability-averaging ensembles of fine-tuned models (:data:`ENSEMBLES`) whose members
            all ran.
        all_sweeps: also return the sweeps of rows already in ``out`` (their runs are read from the cache, or
            trained again when the cache lost them), for paired comparisons of the test probabilities.
        device: default ``profiles.get_device()``.
        verbose: one line per finished sweep.
        allow_leak: run a checkpoint whose pre-training images overlap the test set, with a loud warning, instead
            of refusing it.
        pretrain_seed: evaluate the self-supervised methods' checkpoints pre-trained with this seed
            (``RECIPE-sSEED`` in ``seed_weights``; the recipe's own seed is the committed checkpoint). Only the
            ``ssl`` methods run (the others do not depend on it), without ensembles; rows record the seed.
        seed_weights: the folder of those checkpoints (default ``$MEDMAE_SEED_WEIGHTS``).
        fractions: label budgets as shares of the labelled pool (``0 < f <= 1``; chapter 04's sweep) instead of
            the profile's budgets; every protocol runs at each of them.
        per_class: label budgets as labels per class (chapter 05's 1 … 1000 sweep) instead of the profile's; those
            above the pool's largest class are dropped (:func:`medmae_nb.classical.budgets_for`); every protocol runs
            at each of them.

    Returns:
        A :class:`BenchResult`; ``sweeps`` holds the sweeps run in this call (rows read from ``out`` have none).

    Raises:
        ValueError: an unknown method or protocol.
        DataError: an unknown dataset, missing real data, or an ``out`` that is not a results table.
    """
    cfg = profile if isinstance(profile, dict) else get_profile(profile)
    device = torch.device(device) if device is not None else get_device()
    asked = methods
    methods = list(methods or default_methods(dataset))
    protocols = list(protocols or PROTOCOLS)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocol {bad}; protocols: {list(PROTOCOLS)}")
    specs = {m: method_spec(m, dataset) for m in methods}  # a ValueError for an unknown method
    if pretrain_seed is None:  # a study recipe's own seed: its checkpoint in the seed-weights folder, if there
        specs = {m: _own_seed(s, seed_weights) for m, s in specs.items()}
    else:
        from dataclasses import replace

        methods = [m for m in methods if specs[m].kind == "ssl"]
        specs = {m: replace(specs[m], pretrain_seed=int(pretrain_seed)) for m in methods}
        ensembles = False
    seeds = [int(s) for s in (seeds or cfg["ft_seeds"])]
    path = Path(out) if out is not None else None
    pool, test = load_benchmark_data(dataset, cfg, root, seed=0, image_size=cfg["img_size"])
    if any(specs[m].kind == "transfer" for m in methods) and transfer_overlaps(test, root):
        if asked and not allow_leak:
            from .data.leaks import DataLeakError

            raise DataLeakError(f"the test set of {dataset} holds images the transfer ConvNeXt was trained on "
                                "(PneumoniaMNIST train/val, found by content): leave it out, or pass allow_leak=True "
                                "(--allow-leak) to run it flagged")
        if not asked:  # the default list: left out, as on PneumoniaMNIST itself
            methods = [m for m in methods if specs[m].kind != "transfer"]
            if verbose:
                print(f"{dataset}: the transfer ConvNeXt is left out: its training images overlap this test set")
    if out == "auto":
        path = results_path(dataset, cfg["name"], pool, test)
    existing = read_results(path) if path is not None else []
    done = {r["key"] for r in existing}
    if fractions and per_class:
        raise ValueError("give fractions or per_class budgets, not both")
    if fractions:
        bad_f = [f for f in fractions if not 0 < float(f) <= 1]
        if bad_f:
            raise ValueError(f"fractions must lie in (0, 1], got {bad_f}: e.g. 0.01 0.1 1 for 1 %, 10 % and all labels")
        unit, budgets = "fraction", sorted(float(f) for f in fractions)
        ft_budgets = budgets
    elif per_class:
        unit, budgets = "per_class", [int(b) for b in budgets_for(pool, sorted({int(b) for b in per_class}),
                                                                   warn=False)]
        ft_budgets = budgets
    else:
        unit, budgets, ft_budgets = _budgets(dataset, cfg, pool)
    k = test.num_classes
    data = {"pool": data_identity(pool), "test": data_identity(test)}
    proto = eval_protocol(dataset, cfg)
    common = {"data": data, "seeds": seeds, "eval_protocol": proto.describe(), "bootstrap": cfg["bootstrap"],
              "img_size": cfg["img_size"]}
    result = BenchResult(list(existing), path=path)

    def sweep_of(learner: Any, todo: list[float]) -> BudgetSweep:
        return budget_sweep(learner, pool, test, todo, seeds=seeds, metrics=METRICS, n_boot=cfg["bootstrap"],
                            cache=True, unit=unit, drop_collapsed=True)

    def add(sweep: BudgetSweep, method: str, protocol: str, config: dict[str, Any]) -> None:
        new = _rows(sweep, dataset, method, protocol, cfg["name"], config, proto)
        result.rows.extend(new)
        result.sweeps.setdefault((method, protocol), sweep)
        if path is not None:
            keys = list(dict.fromkeys(r["key"] for r in new))  # one per budget, in budget order
            _save_probs(path, {k: sweep.probs[i] for i, k in enumerate(keys)}, sweep.y_test)
            _write_atomic(path, result.rows)
        if verbose:
            best = max(sweep.metrics["bal_acc"], key=lambda c: c.value if np.isfinite(c.value) else -1)
            print(f"{dataset}: {method:<40} {protocol:<20} {len(sweep.budgets)} budget(s) in "
                  f"{sum(sweep.seconds):6.0f} s; best bal_acc {best}", flush=True)

    configs = {name: {**common, "method": name, "kind": specs[name].kind, "recipe": specs[name].recipe,
                      "layer_decay": specs[name].layer_decay, "train": train,
                      "pretrain_seed": specs[name].seed_label(),
                      "checkpoint": _checkpoint_id(specs[name], train, cfg["recipe_scale"], seed_weights)}
               for name in methods}
    ens_todo: dict[str, list[float]] = {}
    if ensembles and "fine-tune" in protocols:
        for ens, members in ENSEMBLES.items():
            if all(m in configs for m in members):
                config = {**common, "method": ens, "members": [{**configs[m], "protocol": "fine-tune"}
                                                               for m in members]}
                ens_todo[ens] = [b for b in ft_budgets if _key(dataset, ens, "fine-tune", unit, b, config) not in done]
                configs[ens] = config
                result.skipped += len(ft_budgets) - len(ens_todo[ens])
    for name in methods:
        spec, config = specs[name], configs[name]
        todo = {p: [b for b in (ft_budgets if p == "fine-tune" else budgets)
                    if _key(dataset, name, p, unit, b, {**config, "protocol": p}) not in done]
                for p in protocols if p in protocols_of(spec)}
        needs_ft = all_sweeps or any(name in ENSEMBLES[e] for e, t in ens_todo.items() if t)
        result.skipped += sum(len(ft_budgets if p == "fine-tune" else budgets) - len(t) for p, t in todo.items())
        if not any(todo.values()) and not needs_ft:
            continue
        encoder, tuned, _ = _networks(spec, k, cfg["recipe_scale"], train, device, seed=0, channels=test.channels,
                                      test=test, allow_leak=allow_leak, seed_weights=seed_weights)
        learners = _learners(spec, encoder, tuned, k, proto, device)
        for p in todo:
            # the ensembles need every budget of the members (cached runs), all_sweeps every sweep
            run_all = all_sweeps or (p == "fine-tune" and needs_ft)
            if not todo[p] and not run_all:
                continue
            sweep = sweep_of(learners[p], (ft_budgets if p == "fine-tune" else budgets) if run_all else todo[p])
            result.sweeps[(name, p)] = sweep
            if todo[p]:
                keep = [i for i, b in enumerate(sweep.budgets) if b in todo[p]]
                add(_subset(sweep, keep), name, p, {**config, "protocol": p})
    for ens, todo_e in ens_todo.items():
        if all_sweeps and not todo_e:
            members = [result.sweeps[(m, "fine-tune")] for m in ENSEMBLES[ens]]
            result.sweeps[(ens, "fine-tune")] = average_sweeps(members, name=ens, n_boot=cfg["bootstrap"],
                                                               drop_collapsed=True)
        if todo_e:
            sweep = average_sweeps([result.sweeps[(m, "fine-tune")] for m in ENSEMBLES[ens]], name=ens,
                                   n_boot=cfg["bootstrap"], drop_collapsed=True)
            add(_subset(sweep, [sweep.budgets.index(b) for b in todo_e]), ens, "fine-tune", configs[ens])
    result.rows = [r for r in result.rows if r["dataset"] == dataset]
    return result


def probs_path(results: str | Path) -> Path:
    """``NAME.probs.npz`` beside ``NAME.csv``: every run's test probabilities, by row key (float16), and the test
    labels — so intervals over pooled runs and paired differences can be recomputed from the committed files alone,
    without the weights that made them."""
    return Path(results).with_suffix(".probs.npz")


def read_probs(results: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``({row key: probs (runs, N, K)}, y_test)`` of a results table; empty when it has no probabilities file."""
    path = probs_path(results)
    if not path.exists():
        return {}, None
    with np.load(path) as z:
        probs = {k: z[k].astype(np.float64) for k in z.files if k != "y_test"}
        return probs, (z["y_test"] if "y_test" in z.files else None)


def _save_probs(results: Path, new: dict[str, np.ndarray], y_test: np.ndarray) -> None:
    probs, y = read_probs(results)
    if y is not None and not np.array_equal(y, y_test):
        raise DataError(f"{probs_path(results)} holds another test set's probabilities; move it away")
    probs.update(new)
    path = probs_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, y_test=np.asarray(y_test), **{k: v.astype(np.float16) for k, v in probs.items()})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pool_pretrain_seeds(dataset: str, profile: str | dict[str, Any] | None, out: str | Path,
                        seeds: Sequence[int], *, methods: Sequence[str] | None = None,
                        protocols: Sequence[str] | None = None, seed_weights: str | Path | None = None,
                        root: str | Path | None = None, device: Any = None, verbose: bool = True,
                        evaluate: bool = True, fractions: Sequence[float] | None = None,
                        per_class: Sequence[int] | None = None) -> BenchResult:
    """Each self-supervised method evaluated with its checkpoints of several pre-training ``seeds``, then one pooled
    row per (method, protocol, budget) whose mean and interval hold every run — pre-training seeds × fine-tune seeds
    — and the test resampling (``pretrain_seed`` ``"0+1+2"``). Per-seed rows stay, so a figure can show each
    pre-training seed. The pooled rows are computed from the table's probabilities file (:func:`probs_path`), so
    with ``evaluate=False`` they are made from committed rows alone, without the weights. ``fractions`` /
    ``per_class``: the budgets of :func:`run_methods` (default the profile's).

    Raises:
        FileNotFoundError: a seed's checkpoint is missing (the message gives the command that makes it).
    """
    cfg = profile if isinstance(profile, dict) else get_profile(profile)
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise ValueError(f"give two or more distinct pre-training seeds, got {seeds}")
    path = Path(out)
    if evaluate:
        for s in seeds:
            run_methods(dataset, cfg, path, methods, protocols, root=root, device=device, verbose=verbose,
                        pretrain_seed=s, seed_weights=seed_weights, fractions=fractions, per_class=per_class)
    rows = read_results(path)
    probs, y = read_probs(path)
    done = {r["key"] for r in rows}
    label = "+".join(str(s) for s in seeds)
    groups: dict[tuple[str, str, str, float], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "ssl" and r["dataset"] == dataset and (methods is None or r["method"] in methods) \
                and (protocols is None or r["protocol"] in protocols):
            groups.setdefault((r["method"], r["protocol"], r["unit"], r["budget"]), {}).setdefault(
                r["pretrain_seed"], r)
    proto = eval_protocol(dataset, cfg)
    added = []
    for (method, protocol, unit, budget), by_seed in groups.items():
        parts = [by_seed.get(str(s)) for s in seeds]
        if any(p is None or p["key"] not in probs for p in parts):
            continue
        stack = np.concatenate([probs[p["key"]] for p in parts], axis=0)[None]  # (1 budget, runs, N, K)
        stack = stack / stack.sum(-1, keepdims=True)  # float16 storage: renormalise
        per_seed, metrics, flags = _score(stack, y, METRICS, cfg["bootstrap"], 0.05, drop_collapsed=True)
        pooled = BudgetSweep(method, [budget], list(range(stack.shape[1])), [parts[0]["n_train"]], metrics,
                             per_seed, stack, y, flags, [sum(p["seconds"] for p in parts)], unit=unit)
        each = [json.loads(p["config"]) for p in parts]
        config = {**each[0], "pretrain_seed": label, "pooled_from": seeds,
                  "checkpoint": [c["checkpoint"] for c in each]}
        new = [r for r in _rows(pooled, dataset, method, protocol, parts[0]["profile"], config, proto)
               if r["key"] not in done]
        added.extend(new)
    if added:
        rows.extend(added)
        _write_atomic(path, rows)
    if verbose:
        print(f"{dataset}: {len(added) // len(METRICS)} pooled row(s) over pre-training seeds {label}")
    return BenchResult([r for r in rows if r["dataset"] == dataset], path=path)


def table_sweeps(dataset: str, methods: Sequence[str], protocol: str = "fine-tune",
                 results: str | Path | Sequence[str | Path] | None = None, profile: str | dict[str, Any] = "cpu",
                 *, pool: ImageDataset | None = None, test: ImageDataset | None = None, root: str | Path | None = None,
                 device: Any = None, pooled: bool = True) -> dict[str, BudgetSweep]:
    """The runs of a results table as :class:`~medmae_nb.budgets.BudgetSweep` objects, rebuilt from its rows and its
    probabilities file without training: what a chapter shows when running the protocol itself would take longer
    than its time budget.

    Each method's headline rows (:func:`headline_rows`: the pooled pre-training seeds where the table has them) give
    the budgets, ``n_train``, the metrics exactly as the table states them and the per-run values; the test
    probabilities of every run come from ``NAME.probs.npz``, so paired differences, lesion-size breakdowns and
    confusion matrices can be computed from them. A pooled row's runs are numbered ``100 × pre-training seed +
    fine-tune seed``. :meth:`BudgetSweep.model` fits one run again under the table's protocol (the committed
    checkpoint's runs: seeds ``0, 1, 2``), for explanations; a warning says so when the refit predicts differently
    from the stored run (another machine or thread count).

    Args:
        dataset: a benchmark dataset (its table's ``dataset`` column).
        methods: the table's method names (``MAE p8``, ``SmallCNN (supervised)``…).
        protocol: one of :data:`PROTOCOLS`.
        results: the table(s) to read (default: the committed ``DATASET-PROFILE.csv`` and, where there is one, its
            ``-variants`` table).
        profile: the profile the table was made in (bootstrap size, data, protocol).
        pool, test: the table's splits (default: :func:`load_benchmark_data`); ``test`` must be the set it scored.
        root: where the real datasets are (default ``$MEDMAE_DATA``).
        device: where a refit trains (default ``profiles.get_device()``).
        pooled: the pooled pre-training seeds' runs where the table has them (default); False: the committed
            checkpoint's runs only (pre-training seed 0), e.g. to pair them run by run with a learner that has no
            pre-training seeds, as an ensemble does.

    Raises:
        DataError: a method the tables do not hold under ``protocol``, a run without stored probabilities, or a
            ``test`` set other than the one the table scored.
    """
    from .budgets import _refit

    cfg = profile if isinstance(profile, dict) else get_profile(profile)
    if results is None:
        base = committed_table(dataset, cfg["name"])
        paths = [base] + [q for q in [base.with_name(f"{base.stem}-variants.csv")] if q.exists()]
    else:
        paths = [Path(results)] if isinstance(results, (str, Path)) else [Path(q) for q in results]
    if pool is None or test is None:
        pool, test = load_benchmark_data(dataset, cfg, root, seed=0, image_size=cfg["img_size"])
    proto = eval_protocol(dataset, cfg)
    out: dict[str, BudgetSweep] = {}
    for method in methods:
        path = next((q for q in paths if any(r["method"] == method and r["protocol"] == protocol
                                             and r["dataset"] == dataset for r in read_results(q))), None)
        if path is None:
            raise DataError(f"{method!r} ({protocol}) is not in {', '.join(str(q) for q in paths)}: run "
                            f"`medmae compare --data {dataset} --methods '{method}'` to add it")
        rows = [r for r in read_results(path) if r["dataset"] == dataset]
        probs, y = read_probs(path)
        if y is None or not np.array_equal(y, test.labels):
            raise DataError(f"{path} scored another test set than the {dataset} test set given here "
                            f"({'no probabilities file' if y is None else f'{len(y)} vs {len(test)} images'})")
        shown = headline_rows(rows) if pooled else [r for r in rows if str(r["pretrain_seed"]) in ("", "0")]
        mine = sorted([r for r in shown if r["method"] == method and r["protocol"] == protocol],
                      key=lambda r: r["budget"])
        made_on = json.loads(mine[0]["config"]).get("data", {})
        here = {"pool": data_identity(pool), "test": data_identity(test)}
        if made_on and json.dumps(made_on, sort_keys=True) != json.dumps(here, sort_keys=True):
            raise DataError(f"{path} scored another test set or drew from another pool than the {dataset} splits "
                            f"given here (made on {made_on}, given {here}): load them with load_benchmark_data")
        budgets = sorted({r["budget"] for r in mine})
        unit = mine[0]["unit"]
        metric_names = list(dict.fromkeys(r["metric"] for r in mine))
        stacks, runs_of = [], []
        for b in budgets:
            head = next(r for r in mine if r["budget"] == b)
            cfg_row = json.loads(head["config"])
            seeds_of_row = cfg_row.get("pooled_from")  # not `pooled`: the argument holds for every method
            if seeds_of_row:  # the per-seed rows this pooled row was made from
                parts = [next(r for r in rows if r["method"] == method and r["protocol"] == protocol
                              and r["budget"] == b and r["metric"] == head["metric"]
                              and r["pretrain_seed"] == str(ps)) for ps in seeds_of_row]
            else:
                parts, seeds_of_row = [head], [0]
            missing = [q["key"] for q in parts if q["key"] not in probs]
            if missing:
                raise DataError(f"{probs_path(path)} has no probabilities for {method}, {protocol}, budget {b:g}")
            stack = np.concatenate([probs[q["key"]] for q in parts], axis=0)
            stacks.append(stack / stack.sum(-1, keepdims=True))  # float16 storage: renormalise
            ft = [int(s) for s in cfg_row.get("seeds", cfg["ft_seeds"])]
            runs_of.append([100 * int(ps) + s for ps in seeds_of_row for s in ft])
        if any(r != runs_of[0] for r in runs_of):
            raise DataError(f"{method}: budgets of {path} hold different runs ({runs_of}); re-run the table")
        stack = np.stack(stacks)  # (budgets, runs, N, K)
        cell = {(r["budget"], r["metric"]): r for r in mine}
        metrics = {m: [MetricCI(cell[b, m]["value"], cell[b, m]["low"], cell[b, m]["high"]) for b in budgets]
                   for m in metric_names}
        per_seed = {m: np.array([[float(v) for v in cell[b, m]["per_seed"].split(";")] for b in budgets])
                    for m in metric_names}
        flags = np.array([[collapsed(p, test.labels) for p in row] for row in stack], dtype=bool)
        n_train = [int(cell[b, metric_names[0]]["n_train"]) for b in budgets]
        budgets_out = [float(b) if unit == "fraction" else int(b) for b in budgets]
        sweep = BudgetSweep(method, budgets_out, runs_of[0], n_train, metrics, per_seed, stack, test.labels, flags,
                            [cell[b, metric_names[0]]["seconds"] for b in budgets], unit=unit,
                            config={"table": path.name, "method": method, "protocol": protocol})
        spec, learner = method_spec(method, dataset), {}

        def refit(b: Any, s: int, cached: np.ndarray, spec: MethodSpec = spec, learner: dict = learner,
                  unit: str = unit) -> Any:
            if not learner:  # built once, on the first model asked for
                dev = torch.device(device) if device is not None else get_device()
                encoder, tuned, _ = _networks(spec, test.num_classes, cfg["recipe_scale"], "auto", dev, seed=0,
                                              channels=test.channels, test=test)
                learner["it"] = _learners(spec, encoder, tuned, test.num_classes, proto, dev)[protocol]
            if unit == "per_class":  # the draw the table made (it said when a class gave all it has)
                idx = label_budget(pool.labels, b, seed=s, warn=False)
            else:
                idx = label_fraction(pool.labels, b, seed=s)
            return _refit(learner["it"], pool.subset(idx), s, None, test, cached, f"{spec.name}, {b:g}, seed {s}",
                          atol=1e-3)  # the table stores float16

        for i, b in enumerate(budgets_out):
            for j, s in enumerate(sweep.seeds):
                if s < 100:  # the committed checkpoint's runs
                    run = stack[i, j].copy()
                    sweep.refits[(b, s)] = lambda b=b, s=s, run=run, f=refit: f(b, s, run)
        out[method] = sweep
    return out


def chapter_sweeps(dataset: str, names: Mapping[str, str], *, results: str | Path | Sequence[str | Path] | None = None,
                   pool: ImageDataset | None = None, test: ImageDataset | None = None, device: Any = None,
                   pooled: bool = True, verbose: bool = True) -> dict[str, BudgetSweep]:
    """A chapter's learners read from committed tables (:func:`table_sweeps`), named as the chapter names them:
    ``names`` maps the chapter's name to the table's method (``{"MAE p8": "MAE p8", "SmallCNN": SMALL_CNN}``), in
    the chapter's order. Prints which tables were read and how long it took (no training)."""
    t0 = time.perf_counter()
    got = table_sweeps(dataset, list(dict.fromkeys(names.values())), results=results, pool=pool, test=test,
                       device=device, pooled=pooled)
    sweeps = {mine: replace(got[theirs], name=mine) for mine, theirs in names.items()}
    if verbose:
        tables = sorted({str(s.config.get("table", "?")) for s in sweeps.values()})
        print(f"{dataset}: {len(sweeps)} learners read from {', '.join(tables)} in {time.perf_counter() - t0:.1f} s "
              "(no training)")
    return sweeps


def _subset(sweep: BudgetSweep, keep: list[int]) -> BudgetSweep:
    """The sweep's rows ``keep`` (budgets), everything else unchanged."""
    if keep == list(range(len(sweep.budgets))):
        return sweep
    pick = np.asarray(keep, dtype=int)
    return BudgetSweep(sweep.name, [sweep.budgets[i] for i in keep], sweep.seeds, [sweep.n_train[i] for i in keep],
                       {m: [c[i] for i in keep] for m, c in sweep.metrics.items()},
                       {m: v[pick] for m, v in sweep.per_seed.items()}, sweep.probs[pick], sweep.y_test,
                       sweep.collapsed[pick], [sweep.seconds[i] for i in keep], config=sweep.config, unit=sweep.unit)


# --------------------------------------------------------------------------------------------------------- costs
def method_costs(methods: Sequence[str] | None = None, dataset: str = "phantom") -> list[dict[str, Any]]:
    """Pre-training cost of each method from its committed card: minutes, optimiser steps, seconds per step,
    images seen, encoder parameters (millions), device and threads. Methods without pre-training get zeros."""
    from .pretrained import card_path, get_recipe

    rows = []
    for name in methods or METHODS:
        spec = method_spec(name, dataset)
        row: dict[str, Any] = {"method": name, "backbone": spec.backbone, "chapter": spec.chapter,
                               "pretrain_min": 0.0, "steps": 0, "s_per_step": float("nan"), "images_seen": 0,
                               "params_M": float("nan"), "device": "", "threads": 0}
        if spec.kind == "ssl" and card_path(spec.recipe).exists():
            card = json.loads(card_path(spec.recipe).read_text())
            rec = get_recipe(spec.recipe)
            steps = rec.epochs * (int(card["data"]["n"]) // rec.batch_size)  # the card's pool: no data needed
            row.update(pretrain_min=card["wall_time_s"] / 60, steps=steps, s_per_step=card["wall_time_s"] / steps,
                       images_seen=steps * rec.batch_size, device=card["run"].get("device", ""),
                       threads=card["run"].get("threads", 0))
            enc = rec.method().to_timm()
        elif spec.kind == "transfer":
            from .transfer import card_file

            card = json.loads(card_file(spec.recipe).read_text())
            row.update(pretrain_min=card["wall_time_s"] / 60, device=card.get("device", ""),
                       threads=card.get("threads", 0))
            from .models import create_encoder

            enc = create_encoder("convnext_atto", 1)
        elif spec.kind == "supervised":
            from .models import small_cnn

            enc = small_cnn(1, 0)
        elif spec.recipe is not None:  # a backbone from scratch: the recipe's, untrained
            enc = get_recipe(spec.recipe).method().to_timm()
        else:
            from .models import create_encoder

            enc = create_encoder("resnet18_micro", 1)
        row["params_M"] = sum(p.numel() for p in enc.parameters()) / 1e6
        rows.append(row)
    return rows


def committed_table(dataset: str, profile: str = "cpu") -> Path:
    """The results table committed with the package for ``dataset`` (made by ``bench methods`` in ``profile``)."""
    return RESULTS / f"{dataset}-{profile}.csv"


def card_file(results: str | Path) -> Path:
    """The card beside a results CSV: ``NAME.json`` for ``NAME.csv``."""
    return Path(results).with_suffix(".json")


def write_card(results: str | Path, dataset: str, profile: str | dict[str, Any] | None, seconds: float,
               extra: str = "", commit: str | None = None) -> Path:
    """Records how a results table was made (command, profile, code commit — ``commit``, taken when the run
    started, else the checkout's now —, versions, machine, wall time of the last call), written atomically beside
    it. A table made by several calls (other methods, budgets or pre-training seeds added to it) keeps every call in
    ``calls`` (command, created, code commit, wall time), oldest first; ``command`` is the last one."""
    import platform

    from . import __version__
    from .pretrained.store import code_commit as _commit

    cfg = profile if isinstance(profile, dict) else get_profile(profile)
    path = card_file(results)
    card = {"results": Path(results).name, "dataset": dataset, "profile": cfg["name"],
            "command": f"python -m medmae_nb compare --data {dataset} --profile {cfg['name']} "
                       f"--out {Path(results).name}{extra}",
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "code_commit": commit or _commit(),
            "eval_protocol": eval_protocol(dataset, cfg).describe(),
            "wall_time_s_last_call": round(seconds, 1), "threads": torch.get_num_threads(),
            "device": str(get_device()), "machine": platform.machine(), "cpus": os.cpu_count(),
            "versions": {"medmae_nb": __version__, "torch": torch.__version__}, "rows": len(read_results(results))}
    calls = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        calls = old.get("calls") or ([{k: old.get(k) for k in ("command", "created", "code_commit")}
                                      | {"wall_time_s": old.get("wall_time_s_last_call")}] if old.get("command")
                                     else [])
    card["calls"] = [*calls, {"command": card["command"], "created": card["created"],
                              "code_commit": card["code_commit"], "wall_time_s": card["wall_time_s_last_call"]}]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(card, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def row_label(r: dict[str, Any]) -> str:
    """How tables name a row: ``method, protocol``, with ``(pre-train seeds 0+1+2)`` on a pooled row and
    ``(pre-train seed 1)`` on another seed's row."""
    ps = str(r.get("pretrain_seed", ""))
    tag = "" if ps in ("", "0") else f" (pre-train seed{'s' if '+' in ps else ''} {ps})"
    return f"{r['method']}, {r['protocol']}{tag}"


def cell_text(r: dict[str, Any] | None) -> str:
    """``value [low, high]``; ``*`` when some runs collapsed (left out of the mean), ``collapsed k/n`` when all did."""
    if r is None:
        return "-"
    if not np.isfinite(r["value"]):
        return f"collapsed {r['collapsed']}/{r['seeds']}"
    star = f"{r['collapsed']}*" if r["collapsed"] else ""
    return f"{star}{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def headline_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a table or figure shows: for each (method, protocol, budget, metric) the pooled pre-training-seed row
    when there is one, else the committed checkpoint's (seed-0, or no pre-training); other seeds' rows are left out
    (they are drawn by :func:`seed_figure`)."""
    pooled = {(r["method"], r["protocol"], r["budget"], r["metric"]) for r in rows
              if "+" in str(r.get("pretrain_seed", ""))}
    out = []
    for r in rows:
        ps = str(r.get("pretrain_seed", ""))
        key = (r["method"], r["protocol"], r["budget"], r["metric"])
        if "+" in ps or (ps in ("", "0") and key not in pooled):
            out.append(r)
    return out


def summary_table(rows: Sequence[dict[str, Any]], metric: str = "bal_acc") -> str:
    """A plain-text leaderboard: one line per (method, protocol[, pre-training seeds]), one column per budget,
    ``value [low, high]``; ``k*`` marks a cell where k runs collapsed to a near-constant prediction (left out of the
    mean), ``collapsed k/n`` one where every run did. The steps every learner got are in the last line."""
    rows = [r for r in rows if r["metric"] == metric]
    budgets = sorted({(r["unit"], r["budget"]) for r in rows}, key=lambda t: t[1])
    label = {b: (f"{b[1] * 100:g} %" if b[0] == "fraction" else f"{b[1]:g}/class") for b in budgets}
    groups: dict[str, dict[tuple[str, float], dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(row_label(r), {})[(r["unit"], r["budget"])] = r
    width = max((len(g) for g in groups), default=10)
    lines = [f"{'method, protocol':<{width}} " + " ".join(f"{label[b]:>24}" for b in budgets)]
    for g, cells in groups.items():
        lines.append(f"{g:<{width}} " + " ".join(f"{cell_text(cells.get(b)):>24}" for b in budgets))
    if any(r["collapsed"] for r in rows):
        lines.append("k* k runs collapsed (near-constant predictions): left out of the mean, not results")
    steps = {label[(r["unit"], r["budget"])]: r["steps"] for r in rows if r["protocol"] == "fine-tune"}
    if steps:
        lines.append("fine-tune steps, every learner alike: " + ", ".join(f"{b} {n}" for b, n in steps.items()))
    return "\n".join(lines)


def main_methods(dataset: str, profile: str | None, out: str | Path | None, methods: Sequence[str] | None = None,
                 protocols: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                 root: str | None = None, train: bool | str = "auto", metric: str = "bal_acc",
                 allow_leak: bool = False, pretrain_seeds: Sequence[int] | None = None,
                 seed_weights: str | Path | None = None, fractions: Sequence[float] | None = None,
                 per_class: Sequence[int] | None = None) -> BenchResult:
    """What ``medmae compare`` runs: :func:`run_methods`, with ``pretrain_seeds`` then
    :func:`pool_pretrain_seeds`, and the leaderboard."""
    from .pretrained.store import code_commit

    start, commit = time.perf_counter(), code_commit()  # the code the run imported, not what is checked out later
    res = run_methods(dataset, profile, "auto" if out is None else out, methods, protocols, seeds, root, train,
                      allow_leak=allow_leak, fractions=fractions, per_class=per_class, seed_weights=seed_weights)
    if pretrain_seeds:
        res = pool_pretrain_seeds(dataset, profile, res.path, pretrain_seeds, methods=methods, protocols=protocols,
                                  seed_weights=seed_weights, root=root, fractions=fractions, per_class=per_class)
    import shlex

    extra = "".join(f" {flag} " + " ".join(shlex.quote(str(v)) for v in values)
                    for flag, values in (("--methods", methods), ("--protocols", protocols), ("--seeds", seeds),
                                         ("--pretrain-seeds", pretrain_seeds), ("--fractions", fractions),
                                         ("--per-class", per_class))
                    if values)
    if res.path is not None:
        print(f"results: {res.path}")
        write_card(res.path, dataset, profile, time.perf_counter() - start, extra=extra, commit=commit)
    print(f"\n{dataset}: {len(res.rows) // len(METRICS)} result rows ({res.skipped} budget(s) already in "
          f"{res.path}), {time.perf_counter() - start:.0f} s\n")
    print(summary_table([r for r in res.rows if r["pretrain_seed"] in ("", "0") or "+" in r["pretrain_seed"]],
                        metric))
    return res


# -------------------------------------------------------------------------------------------------------- figures
def _colors(methods: Sequence[str]) -> dict[str, Any]:
    from . import viz

    palette = list(viz.PALETTE) + ["#e377c2", "#bcbd22", "#17becf", "#000000"]
    greys = ["#7f7f7f", "#a0a0a0", "#5a5a5a", "#c0c0c0", "#404040"]
    yard = [m for m in methods if m.startswith("scratch ") or m == SMALL_CNN]  # the yardsticks: grey
    fixed = {m: ("#000000" if m == SMALL_CNN else greys[i % len(greys)]) for i, m in enumerate(yard)}
    rest = [m for m in methods if m not in fixed]
    return {**{m: palette[i % len(palette)] for i, m in enumerate(rest)}, **{m: c for m, c in fixed.items()
                                                                              if m in methods}}


def curves_figure(rows: Sequence[dict[str, Any]], metric: str = "bal_acc", protocols: Sequence[str] = PROTOCOLS,
                  title: str = "", chance: float | None = None):
    """Label-efficiency curves of every method, one panel per protocol: the metric (mean over seeds, 95 % interval
    as a band) against the number of labelled training images (log scale). Ensembles are drawn dashed on the
    fine-tune panel. A point is the mean of the runs that did not collapse; a result that cannot be ranked (most of
    its runs collapsed, :func:`medmae_nb.claims.rankable`) is not drawn. Rows of other pre-training seeds are left
    out (a pooled row, ``0+1+2``, replaces the seed-0 row where there is one)."""
    import matplotlib.pyplot as plt

    from . import viz
    from .claims import rankable

    rows = headline_rows([r for r in rows if r["metric"] == metric and rankable(r)])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(protocols), figsize=(3.6 * len(protocols), 3.4), sharex=True, sharey=True,
                             squeeze=False)
    for ax, p in zip(axes[0], protocols):
        for m in methods:
            pts = sorted((r["n_train"], r["value"], r["low"], r["high"]) for r in rows
                         if r["method"] == m and r["protocol"] == p)
            if not pts:
                continue
            x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
            dashed = m.startswith("ensemble")
            yard = m.startswith("scratch ") or m == SMALL_CNN
            style = "--" if dashed else ("s:" if yard else "o-")
            ax.plot(x, y, style, color="black" if m.endswith("self-supervised") else colors[m],
                    lw=1.2, ms=3.5, label=m)
            ax.fill_between(x, lo, hi, color=colors[m], alpha=0.10, lw=0)
        if chance is not None:
            ax.axhline(chance, color="gray", ls=":", lw=1)
        ax.set(xlabel="labelled training images", title=p)
        viz.log_axis(ax)  # 20, 50, 100 … rather than crowded 3 × 10^1 minor labels
        ax.title.set_fontsize(9)
    axes[0, 0].set_ylabel(metric)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines() if not h.get_label().startswith("_")}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(5, len(handles)), fontsize=7,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * (len(handles) // 5), 1, 1))
    return fig


def best_per_method(rows: Sequence[dict[str, Any]], budget: float, metric: str = "bal_acc",
                    protocols: Sequence[str] = PROTOCOLS) -> dict[str, dict[str, Any]]:
    """Each method's best protocol at one budget: ``{method: row}`` (the row with the highest mean). Rows where a
    seed's model collapsed (near-constant predictions) are not results and are left out, as are results most of
    whose runs collapsed (never ranked); pooled pre-training-seed rows replace seed-0 rows where present."""
    from .claims import rankable

    headline = headline_rows(rows)
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["metric"] == metric and r["budget"] == budget and r["protocol"] in protocols and rankable(r) \
                and r in headline:
            if r["method"] not in out or r["value"] > out[r["method"]]["value"]:
                out[r["method"]] = r
    return out


def cost_figure(rows: Sequence[dict[str, Any]], costs: Sequence[dict[str, Any]], budget: float,
                metric: str = "bal_acc", title: str = ""):
    """Accuracy against cost: each method's best protocol at ``budget`` (with its interval) against its pre-training
    time (left) and its encoder's parameters (right)."""
    import matplotlib.pyplot as plt

    best = best_per_method(rows, budget, metric)
    cost = {c["method"]: c for c in costs}
    names = [m for m in best if m in cost]
    colors = _colors(names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, label in ((axes[0], "pretrain_min", "pre-training wall time (min, from the card)"),
                           (axes[1], "params_M", "encoder parameters (millions)")):
        for m in names:
            r, x = best[m], cost[m][key]
            ax.errorbar([x], [r["value"]], yerr=[[r["value"] - r["low"]], [r["high"] - r["value"]]], fmt="o",
                        color=colors[m], ms=5, capsize=2, label=f"{m} ({r['protocol']})")
        ax.set(xlabel=label)
    axes[0].set_ylabel(f"{metric}, best protocol")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def seed_figure(rows: Sequence[dict[str, Any]], budget: float, protocol: str = "fine-tune", metric: str = "bal_acc",
                title: str = ""):
    """Each self-supervised method at one budget: a dot per pre-training seed (its mean over fine-tune seeds) and
    the pooled mean with its interval over every run (pre-training seeds × fine-tune seeds × test resampling); the
    yardsticks (scratch backbones, SmallCNN) as bars of their own interval for reference."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["metric"] == metric and r["protocol"] == protocol and r["budget"] == budget]
    pooled = {r["method"]: r for r in rows if "+" in str(r["pretrain_seed"])}
    per_seed: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "ssl" and "+" not in str(r["pretrain_seed"]):
            per_seed.setdefault(r["method"], []).append(r)
    yard = [r for r in rows if r["kind"] in YARDSTICKS]
    names = list(dict.fromkeys([*per_seed, *(r["method"] for r in yard)]))
    colors = _colors(names)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(names) + 1.5), 3.6))
    for x, m in enumerate(names):
        if m in per_seed:
            seeds = sorted(per_seed[m], key=lambda r: str(r["pretrain_seed"]))
            ax.scatter([x + 0.12 * (i - (len(seeds) - 1) / 2) for i in range(len(seeds))],
                       [r["value"] for r in seeds], color=colors[m], s=14, zorder=3,
                       label="one pre-training seed" if x == 0 else None)
            if m in pooled:
                p = pooled[m]
                ax.errorbar([x], [p["value"]], yerr=[[p["value"] - p["low"]], [p["high"] - p["value"]]], fmt="_",
                            color="black", ms=14, capsize=3, zorder=4,
                            label="pooled over seeds" if x == 0 else None)
        else:
            r = next(r for r in yard if r["method"] == m)
            ax.errorbar([x], [r["value"]], yerr=[[r["value"] - r["low"]], [r["high"] - r["value"]]], fmt="s",
                        color=colors[m], ms=4, capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric}, {protocol}")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- verdicts
def _best(rows: Sequence[dict[str, Any]], kinds: Sequence[str], budget: float, metric: str,
          protocols: Sequence[str] = PROTOCOLS) -> dict[str, Any] | None:
    from .claims import rankable

    pick = [r for r in headline_rows(rows) if r["kind"] in kinds and r["budget"] == budget and r["metric"] == metric
            and r["protocol"] in protocols and rankable(r)]
    return max(pick, key=lambda r: r["value"], default=None)


def standings(rows: Sequence[dict[str, Any]], budget: float, metric: str = "bal_acc") -> dict[str, Any]:
    """Who leads at one budget, computed from the table: ``leaders`` (the best rankable (method, protocol) and every
    one not distinguishable from it), the best self-supervised result, the SmallCNN, the best backbone from scratch,
    and how the best self-supervised result compares with each (``higher`` / ``lower`` / ``not distinguishable
    here``, :func:`medmae_nb.claims.compare_rows`)."""
    from .claims import compare_rows, leaders

    cells = [r for r in headline_rows(rows) if r["budget"] == budget and r["metric"] == metric]
    ssl = _best(rows, ("ssl",), budget, metric)
    cnn = _best(rows, ("supervised",), budget, metric)
    scratch = _best(rows, ("scratch",), budget, metric, ("fine-tune",))
    return {"budget": budget, "leaders": leaders(cells), "ssl": ssl, "cnn": cnn, "scratch": scratch,
            "ssl_vs_cnn": compare_rows(ssl, cnn) if ssl and cnn else "not testable here",
            "ssl_vs_scratch": compare_rows(ssl, scratch) if ssl and scratch else "not testable here"}


def standings_text(rows: Sequence[dict[str, Any]], metric: str = "bal_acc") -> str:
    """:func:`standings` at every budget of a table, as lines of text."""
    lines = []
    for unit, b in sorted({(r["unit"], r["budget"]) for r in rows if r["metric"] == metric}, key=lambda t: t[1]):
        s = standings(rows, b, metric)
        where = f"{b * 100:g} % of labels" if unit == "fraction" else f"{b:g} labels/class"
        shown = s["leaders"][:3]
        lead = "; ".join(f"{row_label(r)} {cell_text(r)}" for r in shown) or "no rankable result"
        more = len(s["leaders"]) - len(shown)
        lines.append(f"{where}: best {lead}" + (f"; and {more} more not distinguishable from the best" if more else
                                                 ("" if len(shown) > 1 else ", ahead of every other result")))
        for key, who in (("cnn", "the SmallCNN"), ("scratch", "the best backbone from scratch")):
            if s["ssl"] is not None and s[key] is not None:
                lines.append(f"   best self-supervised ({row_label(s['ssl'])} {cell_text(s['ssl'])}) vs {who} "
                             f"({row_label(s[key])} {cell_text(s[key])}): {s['ssl_vs_' + key]}")
    return "\n".join(lines)


def _budget_label(r: dict[str, Any]) -> str:
    return f"{r['budget'] * 100:g} % of labels" if r["unit"] == "fraction" else f"{r['budget']:g} labels/class"


def benchmark_claims(rows: Sequence[dict[str, Any]], dataset: str, metric: str = "bal_acc") -> list[Any]:
    """The claims chapter 06 checks on one table, each with a verdict computed from the table's numbers
    (:mod:`medmae_nb.claims`): self-supervision against the supervised SmallCNN at the smallest and largest budget,
    each method against its own backbone from scratch at the middle budget, "MoCo v2 leads" and "an ensemble of all
    self-supervised models is at least as good as its best member" (the earlier edition's headlines)."""
    from .claims import claim_greater, claim_not_worse, untestable

    rows = [r for r in headline_rows(rows) if r["metric"] == metric]
    budgets = sorted({r["budget"] for r in rows})
    if not budgets:
        return []
    lo, mid, hi = budgets[0], budgets[len(budgets) // 2], budgets[-1]
    steps = {r["budget"]: r["steps"] for r in rows if r["protocol"] == "fine-tune"}

    def setting(b: float) -> str:
        r = next(r for r in rows if r["budget"] == b)
        runs = f"{r['seeds']} run{'s' if r['seeds'] != 1 else ''}"
        return (f"{dataset}, {_budget_label(r)} ({r['n_train']} images), {steps.get(b, '?')} fine-tune steps for "
                f"every learner, {runs}")

    def cell(method: str, b: float, protocol: str | None = None) -> dict[str, Any] | None:
        from .claims import rankable

        pick = [r for r in rows if r["method"] == method and r["budget"] == b and rankable(r)
                and (protocol is None or r["protocol"] == protocol)]
        return max(pick, key=lambda r: r["value"], default=None)

    def named(r: dict[str, Any] | None, fallback: str) -> str:
        return row_label(r) if r is not None else fallback

    out = []
    for b, when in ((lo, "with few labels"), (hi, "with the most labels here")):
        ssl, cnn = _best(rows, ("ssl",), b, metric), _best(rows, ("supervised",), b, metric)
        out.append(claim_greater("premise of the book", f"self-supervised pre-training beats a supervised CNN {when}",
                                 setting(b), ssl, cnn, (named(ssl, "best self-supervised"), named(cnn, SMALL_CNN)),
                                 chapter="06"))
    kinds = {r["method"]: r["kind"] for r in rows}
    specs = {m: method_spec(m, dataset) for m in kinds if kinds[m] == "ssl"}
    for m, spec in specs.items():
        scratch = f"scratch {spec.backbone}"
        a, b_ = cell(m, mid), cell(scratch, mid)  # each at its best protocol
        out.append(claim_greater(f"chapter {spec.chapter}", f"{m} beats its backbone trained from scratch",
                                 setting(mid), a, b_, (named(a, m), named(b_, scratch)), chapter="06"))
    if "MoCo v2" in specs:
        moco = cell("MoCo v2", mid)
        others = [c for c in (cell(m, mid) for m in specs if m != "MoCo v2") if c is not None]
        rival = max(others, key=lambda r: r["value"], default=None)
        out.append(claim_greater("earlier edition", "MoCo v2 leads the self-supervised methods", setting(mid), moco,
                                 rival, (named(moco, "MoCo v2"), named(rival, "runner-up")), chapter="06"))
    ens = "ensemble: all self-supervised"
    if ens in kinds:
        e = cell(ens, mid, "fine-tune")
        members = [c for c in (cell(m, mid, "fine-tune") for m in specs) if c is not None]
        top = max(members, key=lambda r: r["value"], default=None)
        out.append(claim_not_worse("Florindo & Moura 2026 (ensembles)", "averaging the fine-tuned self-supervised "
                                   "models is at least as good as the best of them", setting(mid), e, top,
                                   (ens, named(top, "best member")), chapter="06"))
    else:
        out.append(untestable("Florindo & Moura 2026 (ensembles)", "averaging the fine-tuned self-supervised "
                              "models is at least as good as the best of them", setting(mid),
                              "the ensemble was not run on this table", chapter="06"))
    return out
