"""Label-budget sweeps: how good is a *learner* with ``n`` labels per class, over several seeds?

This is the yardstick of the whole book. A learner is anything that turns a small labelled set into a predictor of
class probabilities: fine-tuning a (pre-trained) network, training one from scratch, a linear probe or a scikit-learn
classifier on frozen features, or a probability-averaging ensemble of learners. :func:`budget_sweep` draws nested
label sets per seed (``label_budget``), fits the learner on each, scores it on one test set, and reports every metric
as the mean over seeds with an interval that holds both the test-set sampling and the spread across training runs
(:func:`~medmae_nb.evaluate.bootstrap_runs_ci`). Results are cached per (learner config, data, budget, seed), so a
later chapter reads what an earlier one trained.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .cache import array_digest, dataset_fingerprint, describe, load_npz, load_or_make, module_fingerprint, save_npz
from .data.base import ImageDataset
from .data.splits import label_budget, label_fraction
from .data.transforms import hflip
from .evaluate import METRICS, MetricCI, bootstrap_runs_ci
from .inference import extract_features, predict_proba
from .train.supervised import finetune, linear_probe

__all__ = [
    "BudgetSweep",
    "Ensemble",
    "FeatureMemo",
    "FineTune",
    "Fitted",
    "FrozenFeatures",
    "Learner",
    "LinearProbe",
    "average_sweeps",
    "budget_sweep",
    "collapsed",
    "run_sweeps",
    "supervised",
]


# ------------------------------------------------------------------------------------------------------ learners
@dataclass
class Fitted:
    """A fitted learner: ``predict(dataset) -> (N, K)`` probabilities, and the model behind it (if any)."""

    predict: Callable[[ImageDataset], np.ndarray]
    model: Any = None


class Learner(Protocol):
    """What :func:`budget_sweep` needs from a learner."""

    name: str

    def config(self) -> dict[str, Any]:
        """Everything its results depend on (weights included, as fingerprints), for the cache key."""

    def fit(self, train: ImageDataset, *, seed: int, val: ImageDataset | None = None) -> Fitted:
        """Fits on ``train`` (seeding every random stream from ``seed``); ``val`` may be used for model selection."""


def _model_description(model: nn.Module | Callable[[], nn.Module]) -> dict[str, Any]:
    """Architecture and weights of a model, or of what a factory builds with seed 0 (so a factory closing over
    different pre-trained weights gets a different description)."""
    if isinstance(model, nn.Module):
        return {"class": type(model).__name__, "weights": module_fingerprint(model)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = model()
    return {"factory": describe(model), "class": type(built).__name__, "weights_seed0": module_fingerprint(built)}


@dataclass
class FineTune:
    """Fine-tunes a fresh copy of a network on each label draw (:func:`medmae_nb.train.finetune`).

    Args:
        model: a module (deep-copied for every run, e.g. a pre-trained ViT) or a factory (called after
            ``torch.manual_seed(seed)``, so each seed starts from its own random initialisation).
        epochs: minimum passes over the labelled set.
        min_steps: minimum optimiser steps per run: small budgets would otherwise see a handful of steps.
        batch_size: images per step (capped at the labelled set size).
        lr: peak learning rate (None: ``5e-4 × batch / 256``, MAE's fine-tuning rule).
        min_lr: learning rate at the end of the cosine.
        layer_decay: layer-wise lr decay (timm models); None for none.
        weight_decay: AdamW weight decay.
        label_smoothing: cross-entropy label smoothing.
        augment: per-image training augmentation (default: random left-right flip).
        warmup_epochs: warm-up length; None: a tenth of the run, at most one epoch.
        device: default ``profiles.get_device()``.
        name: how tables name it.
    """

    model: nn.Module | Callable[[], nn.Module]
    epochs: int = 15
    min_steps: int = 150
    batch_size: int = 32
    lr: float | None = None
    min_lr: float = 1e-6
    layer_decay: float | None = 0.75
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    augment: Callable[[torch.Tensor], torch.Tensor] | None = hflip
    warmup_epochs: float | None = None
    device: Any = None
    name: str = "fine-tune"

    def config(self) -> dict[str, Any]:
        keys = ("epochs", "min_steps", "batch_size", "lr", "min_lr", "layer_decay", "weight_decay",
                "label_smoothing", "warmup_epochs")
        return {"learner": "finetune", "model": _model_description(self.model), "augment": describe(self.augment),
                **{k: getattr(self, k) for k in keys}}

    def fit(self, train: ImageDataset, *, seed: int, val: ImageDataset | None = None) -> Fitted:
        bs = min(self.batch_size, len(train))
        epochs = max(self.epochs, math.ceil(self.min_steps / math.ceil(len(train) / bs)))
        warmup = min(1.0, epochs / 10) if self.warmup_epochs is None else self.warmup_epochs
        torch.manual_seed(seed)
        model = copy.deepcopy(self.model) if isinstance(self.model, nn.Module) else self.model()
        model, _ = finetune(model, train, val, epochs=epochs, batch_size=bs, lr=self.lr, min_lr=self.min_lr,
                            layer_decay=self.layer_decay, weight_decay=self.weight_decay,
                            label_smoothing=self.label_smoothing, warmup_epochs=warmup, seed=seed,
                            augment=self.augment, device=self.device, progress=False)
        return Fitted(lambda ds: predict_proba(model, ds, device=self.device)[1], model)


def supervised(model: nn.Module | Callable[[], nn.Module], **kwargs: Any) -> FineTune:
    """A network trained from scratch: :class:`FineTune` with lr 1e-3, no layer decay, cosine to 0.

    Example:
        >>> learner = supervised(lambda: small_cnn(1, 3), epochs=12)  # doctest: +SKIP
    """
    defaults = dict(lr=1e-3, layer_decay=None, min_lr=0.0, name="from scratch")
    return FineTune(model, **{**defaults, **kwargs})


class FeatureMemo:
    """Frozen features memoised per image: what every :class:`FrozenFeatures` learner uses, and several can share.

    :func:`budget_sweep` hands a learner a new subset of the pool for every budget and seed, so a memo keyed by dataset
    would encode the pool's images again for each. This memo keys each image by its pixels (with the encoder's weights
    and the dataset's transform), so every image is encoded once, for all learners sharing the memo, all budgets and all
    seeds; only images not seen before go through the encoder. Pass one instance as ``FrozenFeatures(..., memo=memo)``
    (as :func:`medmae_nb.classical.classical_learners` does).

    The encoder is in eval mode, so an image's features do not depend on the batch it came in (up to floating-point
    rounding). Datasets without an ``images`` array are memoised whole, by their fingerprint.

    Attributes:
        images_encoded: how many images went through the encoder so far.

    Example:
        >>> from medmae_nb.data import make_phantom
        >>> from medmae_nb.models import small_cnn
        >>> memo, enc, ds = FeatureMemo(), small_cnn(1, 0, width=4), make_phantom(6, image_size=32)
        >>> memo(enc, ds.subset([0, 1, 2]), None).shape, memo(enc, ds, None).shape, memo.images_encoded
        ((3, 32), (6, 32), 6)
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[bytes, np.ndarray]] = {}
        self._whole: dict[str, np.ndarray] = {}
        self.images_encoded = 0

    def __call__(self, encoder: Any, ds: Any, device: Any) -> np.ndarray:
        """The ``(len(ds), D)`` features of ``ds``, encoding only the images not seen before."""
        # the encoder's weights are part of the key: an encoder changed in place must not reuse stale features
        weights = module_fingerprint(encoder) if hasattr(encoder, "state_dict") else str(describe(encoder))
        images = getattr(ds, "images", None)
        if not isinstance(images, np.ndarray) or not hasattr(ds, "subset"):
            fp = dataset_fingerprint(ds)
            key = weights + fp["sha256"] + str(len(ds)) + str(fp["transform"])
            if key not in self._whole:
                self._whole[key] = extract_features(encoder, ds, device=device)
                self.images_encoded += len(ds)
            return self._whole[key]
        if len(images) == 0:
            raise ValueError("the dataset is empty; frozen features need at least one image")
        rows = self._rows.setdefault((weights, str(describe(getattr(ds, "transform", None)))), {})
        keys = [_image_key(img) for img in images]
        first: dict[bytes, int] = {}  # each unseen image once (a repeated image is encoded once), in dataset order
        for i, k in enumerate(keys):
            if k not in rows and k not in first:
                first[k] = i
        if first:
            missing = list(first.values())
            feats = extract_features(encoder, ds.subset(missing), device=device)
            rows.update((keys[i], f) for i, f in zip(missing, feats))
            self.images_encoded += len(missing)
        return np.stack([rows[k] for k in keys])


def _image_key(image: np.ndarray) -> bytes:
    image = np.ascontiguousarray(image)
    h = hashlib.blake2b(f"{image.shape}{image.dtype}".encode(), digest_size=16)
    h.update(image.tobytes())
    return h.digest()


@dataclass
class FrozenFeatures:
    """A scikit-learn classifier on frozen encoder features (features computed once per dataset and reused).

    Args:
        encoder: maps images to features (a timm model with ``num_classes=0``, or any module; see
            :func:`medmae_nb.inference.feature_fn`).
        make_classifier: builds a fresh scikit-learn estimator with ``predict_proba``; it gets ``random_state=seed``
            when it has that parameter.
        device: where features are computed.
        name: how tables name it.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> learner = FrozenFeatures(vit, lambda: LogisticRegression(max_iter=2000))  # doctest: +SKIP
    """

    encoder: nn.Module
    make_classifier: Callable[[], Any]
    device: Any = None
    name: str = "frozen features"
    memo: FeatureMemo = field(default_factory=FeatureMemo, repr=False)

    def config(self) -> dict[str, Any]:
        return {"learner": "frozen_features", "encoder": _model_description(self.encoder),
                "classifier": describe(self.make_classifier), "classifier_repr": repr(self.make_classifier())}

    def fit(self, train: ImageDataset, *, seed: int, val: ImageDataset | None = None) -> Fitted:
        clf = self.make_classifier()
        if "random_state" in clf.get_params():
            clf.set_params(random_state=seed)
        clf.fit(self.memo(self.encoder, train, self.device), train.labels)
        k = train.num_classes

        def predict(ds: ImageDataset) -> np.ndarray:
            p = clf.predict_proba(self.memo(self.encoder, ds, self.device))
            out = np.zeros((len(p), k))
            out[:, clf.classes_] = p  # a class missing from a tiny training set gets probability 0
            return out

        return Fitted(predict, clf)


@dataclass
class LinearProbe:
    """MAE's linear probe (:func:`medmae_nb.train.linear_probe`): BatchNorm + linear head on frozen features."""

    encoder: nn.Module
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    device: Any = None
    name: str = "linear probe"

    def config(self) -> dict[str, Any]:
        return {"learner": "linear_probe", "encoder": _model_description(self.encoder), "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr}

    def fit(self, train: ImageDataset, *, seed: int, val: ImageDataset | None = None) -> Fitted:
        torch.manual_seed(seed)
        probe, _ = linear_probe(self.encoder, train, val, epochs=self.epochs, batch_size=min(self.batch_size,
                                len(train)), lr=self.lr, seed=seed, device=self.device, progress=False)
        return Fitted(lambda ds: predict_proba(probe, ds, device=self.device)[1], probe)


@dataclass
class Ensemble:
    """Averages the class probabilities of several learners fitted on the same labels.

    Args:
        members: the learners.
        weights: ``"equal"``, or ``"val"`` — weights on a grid of the simplex (steps of 0.1) chosen by the balanced
            accuracy of the averaged probabilities on the validation set (equal weights when no val set is given).
        name: how tables name it.

    References:
        Dietterich, "Ensemble Methods in Machine Learning", MCS 2000.
    """

    members: Sequence[Any]
    weights: str = "equal"
    name: str = "ensemble"

    def __post_init__(self) -> None:
        if self.weights not in ("equal", "val"):
            raise ValueError(f"weights must be 'equal' or 'val', got {self.weights!r}")
        if len(self.members) < 2:
            raise ValueError("an ensemble needs at least two members")

    def config(self) -> dict[str, Any]:
        return {"learner": "ensemble", "weights": self.weights, "members": [m.config() for m in self.members]}

    def fit(self, train: ImageDataset, *, seed: int, val: ImageDataset | None = None) -> Fitted:
        fitted = [m.fit(train, seed=seed, val=val) for m in self.members]
        w = np.full(len(fitted), 1 / len(fitted))
        if self.weights == "val" and val is not None:
            w = _best_weights([f.predict(val) for f in fitted], val.labels)

        def predict(ds: ImageDataset) -> np.ndarray:
            return sum(wi * f.predict(ds) for wi, f in zip(w, fitted))

        return Fitted(predict, {"members": [f.model for f in fitted], "weights": w.tolist()})


def _simplex_grid(k: int, steps: int = 10) -> np.ndarray:
    def parts(n: int, total: int):
        if n == 1:
            yield (total,)
            return
        for i in range(total + 1):
            for rest in parts(n - 1, total - i):
                yield (i, *rest)

    return np.array(list(parts(k, steps)), dtype=float) / steps


def _best_weights(probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    grid = _simplex_grid(len(probs))
    scores = [METRICS["bal_acc"](y, sum(wi * p for wi, p in zip(w, probs))) for w in grid]
    best = np.flatnonzero(np.isclose(scores, max(scores)))
    # among ties, the weights closest to equal: the least tuned answer
    return grid[best[np.argmin(np.abs(grid[best] - 1 / len(probs)).sum(1))]]


# ------------------------------------------------------------------------------------------------------- results
def collapsed(probs: np.ndarray, y_true: np.ndarray | None = None, share: float = 0.9) -> bool:
    """True for a near-constant predictor: one class takes at least ``share`` of the predictions — and, when the
    labels are given, at least 10 points more than that class's true share (so a good model on a test set that is
    mostly one class is not flagged).

    Such a model can still score a balanced accuracy near ``1/K`` and a lesion recall near the class share, so its
    numbers are flagged rather than reported as results.

    Example:
        >>> collapsed(np.eye(3)[[0] * 19 + [1]]), collapsed(np.eye(3)[[0, 1, 2] * 7])
        (True, False)
    """
    pred = np.asarray(probs).argmax(1)
    counts = np.bincount(pred)
    top = int(counts.argmax())
    if counts[top] < share * len(pred):
        return False
    return y_true is None or counts[top] / len(pred) >= np.mean(np.asarray(y_true) == top) + 0.1


@dataclass
class BudgetSweep:
    """Results of :func:`budget_sweep`.

    Attributes:
        name: the learner's name.
        budgets: labels per class of each row (with ``unit="fraction"``: the share of the pool).
        seeds: the seeds (one label draw and one training run each).
        n_train: labelled images per budget (smaller classes give all they have).
        metrics: ``{metric: [MetricCI per budget]}``: mean over seeds, interval over seeds and test cases; with
            ``drop_collapsed``, over the seeds whose model did not collapse (NaN where every seed collapsed).
        per_seed: ``{metric: array (budgets, seeds)}``.
        probs: test probabilities ``(budgets, seeds, N, K)``.
        y_test: the test labels.
        collapsed: ``(budgets, seeds)`` bool, near-constant predictors (see :func:`collapsed`); with
            ``drop_collapsed`` left out of ``metrics``, always kept in ``per_seed``.
        seconds: wall time per budget (all seeds; near 0 when read from the cache).
        models: with ``keep_models``, ``{(budget, seed): fitted model}`` of the runs trained in this call; a run read
            from the cache is refitted when :meth:`model` asks for it.
        config: the learner's config.
        unit: ``"per_class"`` (budgets are labels per class) or ``"fraction"`` (shares of the labelled pool).
    """

    name: str
    budgets: list[int]
    seeds: list[int]
    n_train: list[int]
    metrics: dict[str, list[MetricCI]]
    per_seed: dict[str, np.ndarray]
    probs: np.ndarray
    y_test: np.ndarray
    collapsed: np.ndarray
    seconds: list[float] = field(default_factory=list)
    models: dict[tuple[int, int], Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    refits: dict[tuple[int, int], Callable[[], Any]] = field(default_factory=dict, repr=False)
    unit: str = "per_class"

    def model(self, budget: int, seed: int | None = None) -> Any:
        """The kept model of a budget (the last seed's by default).

        A run whose result came from the cache has no model in memory: it is fitted again here, once, on the same
        labels with the same seed, so a chapter that explains one model re-trains only that one instead of the whole
        sweep. On the same machine and thread count the fit is deterministic and gives the same weights; otherwise a
        warning says the refitted model predicts differently from the cached run.
        """
        key = (budget, self.seeds[-1] if seed is None else seed)
        if key not in self.models and key in self.refits:
            self.models[key] = self.refits.pop(key)()
        if key not in self.models:
            raise KeyError(f"no model kept for budget {budget}, seed {key[1]}: run budget_sweep(keep_models=True)")
        return self.models[key]

    def metric(self, name: str, budget: int) -> MetricCI:
        """The :class:`MetricCI` of one metric at one budget."""
        return self.metrics[name][self.budgets.index(budget)]

    def table(self, metric: str = "bal_acc") -> str:
        """A plain-text table of one metric: mean [interval], the value of each seed, collapsed runs, time."""
        head = "labels/class" if self.unit == "per_class" else "% of pool"
        lines = [f"{head:>12} {'n train':>8} {metric + ' [95% CI]':>24} {'per seed':>20} "
                 f"{'collapsed':>9} {'time':>6}"]
        for i, b in enumerate(self.budgets):
            seeds = " ".join(f"{v:.3f}" for v in self.per_seed[metric][i])
            label = f"{b:g}" if self.unit == "per_class" else f"{100 * b:g} %"
            lines.append(f"{label:>12} {self.n_train[i]:>8} {str(self.metrics[metric][i]):>24} {seeds:>20} "
                         f"{int(self.collapsed[i].sum()):>5}/{len(self.seeds):<3} {self.seconds[i]:>5.0f}s")
        return "\n".join(lines)

    def to_records(self) -> list[dict[str, Any]]:
        """Tidy rows, one per (budget, metric), for a CSV or a DataFrame."""
        rows = []
        for i, b in enumerate(self.budgets):
            for m, cis in self.metrics.items():
                budget = {"labels_per_class": b} if self.unit == "per_class" else {"fraction": b}
                rows.append({"learner": self.name, **budget, "n_train": self.n_train[i], "metric": m,
                             "value": cis[i].value, "low": cis[i].low, "high": cis[i].high, "seeds": len(self.seeds),
                             "collapsed": int(self.collapsed[i].sum())})
        return rows


def _refit(learner: Learner, train: ImageDataset, seed: int, val: ImageDataset | None, test: ImageDataset,
           cached: np.ndarray, what: str, atol: float = 1e-4) -> Any:
    """Fits a cached run again and checks it predicts what the cache holds, within ``atol`` (another machine, thread
    count or torch version can train slightly different weights; then the model is not the one whose results are
    reported). Probabilities stored as float16 (results tables) need ``atol`` 1e-3."""
    fitted = learner.fit(train, seed=seed, val=val)
    again = np.asarray(fitted.predict(test), dtype=np.float64)
    if not np.allclose(again, cached, atol=atol):
        warnings.warn(f"the refitted model ({what}) predicts differently from the cached run (largest difference "
                      f"{np.abs(again - cached).max():.3g}); its explanations describe a near copy of the scored "
                      "model. "
                      "Re-run budget_sweep with cache=False to score and keep the same models", stacklevel=3)
    return fitted.model


def budget_sweep(learner: Learner, pool: ImageDataset, test: ImageDataset, budgets: Sequence[int], *,
                 seeds: Sequence[int] = (0, 1, 2), val: ImageDataset | None = None,
                 metrics: Sequence[str] = ("bal_acc", "acc", "auc"), n_boot: int = 1000, alpha: float = 0.05,
                 cache: bool = False, keep_models: bool = False, verbose: bool = False,
                 unit: str = "per_class", drop_collapsed: bool = False) -> BudgetSweep:
    """Fits ``learner`` on ``n`` labels per class (or a share of the pool) for every budget and seed, and scores it
    on ``test``.

    For each seed the label sets are nested across budgets (``label_budget(pool.labels, n, seed)``, or
    ``label_fraction(pool.labels, p, seed)``), so a curve shows more labels, not other images. The learner gets the
    same ``seed`` for its own randomness.

    Args:
        learner: a :class:`Learner` (:class:`FineTune`, :func:`supervised`, :class:`LinearProbe`,
            :class:`FrozenFeatures`, :class:`Ensemble`).
        pool: the labelled pool the budgets are drawn from.
        test: the held-out set every run is scored on.
        budgets: labels per class, e.g. ``[5, 20, 100, 1000]``.
        seeds: one label draw and training run per seed (at least 3 for the book's intervals).
        val: optional validation set, passed to the learner (model selection, ensemble weights).
        metrics: names from :data:`medmae_nb.evaluate.METRICS`.
        n_boot: bootstrap replicates of the interval.
        alpha: 1 - confidence level.
        cache: read and write each (learner config, data, budget, seed) result in the cache (``kind="sweeps"``).
        keep_models: keep every model fitted here in ``BudgetSweep.models``; with ``cache``, a result read from the
            cache keeps a way to refit its model on demand (:meth:`BudgetSweep.model`) instead of training now.
        verbose: print one line per run.
        unit: ``"per_class"`` (budgets are labels per class) or ``"fraction"`` (budgets are shares of the pool in
            ``(0, 1]``, stratified, at least one image per class — Wolf et al.'s 1 %…100 % protocol, but random
            and stratified rather than the first images).
        drop_collapsed: leave runs that collapsed to a near-constant prediction out of each budget's mean and
            interval (the comparison's rule, :mod:`medmae_nb.compare`); they stay in ``per_seed`` and are counted.

    Returns:
        A :class:`BudgetSweep`.

    Raises:
        ValueError: no budgets or seeds, repeated seeds, an unknown unit, or ``test`` with classes other than
            ``pool``'s.
        DataError: a fraction outside ``(0, 1]``.

    Example:
        >>> sweep = budget_sweep(supervised(lambda: small_cnn(1, 3)), pool, test, [5, 50])  # doctest: +SKIP
        >>> print(sweep.table())  # doctest: +SKIP
    """
    if unit not in ("per_class", "fraction"):
        raise ValueError(f"unit must be 'per_class' (labels per class) or 'fraction' (share of the pool), got {unit!r}")
    budgets = [float(b) if unit == "fraction" else int(b) for b in budgets]
    seeds = [int(s) for s in seeds]
    if unit == "fraction":
        for b in budgets:
            label_fraction(pool.labels[:1], b)  # a clear error for 5 instead of 0.05, before any training
    if not budgets or not seeds:
        raise ValueError("give at least one budget and one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ (each is one label draw and training run), got {seeds}")
    if tuple(test.class_names) != tuple(pool.class_names):
        raise ValueError(f"test classes {test.class_names} differ from pool classes {pool.class_names}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
    base = {"learner": learner.config(), "pool": dataset_fingerprint(pool, labels=True),
            "test": dataset_fingerprint(test, labels=True),
            "val": None if val is None else dataset_fingerprint(val, labels=True)}
    k = test.num_classes
    probs = np.zeros((len(budgets), len(seeds), len(test), k))
    n_train, seconds, models, refits = [], [], {}, {}
    for i, b in enumerate(budgets):
        start = time.perf_counter()
        for j, s in enumerate(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a class smaller than the budget gives all it has
                idx = (label_budget(pool.labels, b, seed=s) if unit == "per_class"
                       else label_fraction(pool.labels, b, seed=s))
            if j == 0:
                n_train.append(len(idx))

            def run(idx=idx, s=s, b=b) -> np.ndarray:
                fitted = learner.fit(pool.subset(idx), seed=s, val=val)
                if keep_models:
                    models[(b, s)] = fitted.model
                return np.asarray(fitted.predict(test), dtype=np.float64)

            config = {**base, "budget": b, "seed": s, "labels": array_digest(idx),
                      **({"unit": unit} if unit != "per_class" else {})}
            probs[i, j] = load_or_make(config, run, kind="sweeps", suffix=".npz", enabled=cache,
                                       save=lambda path, p: save_npz(path, probs=p),
                                       load=lambda path: load_npz(path)["probs"])
            if keep_models and (b, s) not in models:  # read from the cache: refit when asked for
                cached = probs[i, j].copy()
                refits[(b, s)] = lambda idx=idx, s=s, b=b, cached=cached: _refit(
                    learner, pool.subset(idx), s, val, test, cached, f"{learner.name}, {b}/class, seed {s}")
            if verbose:
                print(f"{learner.name}: {b}/class seed {s}: bal_acc {METRICS['bal_acc'](test.labels, probs[i, j]):.3f}")
        seconds.append(time.perf_counter() - start)
    per_seed, out, flags = _score(probs, test.labels, metrics, n_boot, alpha, drop_collapsed)
    return BudgetSweep(learner.name, budgets, seeds, n_train, out, per_seed, probs, test.labels, flags, seconds,
                       models, base["learner"], refits, unit)


def run_sweeps(learners: Mapping[str, Learner], pool: ImageDataset, test: ImageDataset, budgets: Sequence[float],
               *, verbose: bool = True, **kwargs: Any) -> dict[str, BudgetSweep]:
    """:func:`budget_sweep` for each learner of ``{name: learner}``, at the same budgets, seeds and settings
    (``kwargs``), printing each learner's wall time; what chapters 01–03 run when they train their learners here
    instead of reading them from a committed table."""
    sweeps = {}
    width = max((len(n) for n in learners), default=0)
    for name, learner in learners.items():
        t0 = time.perf_counter()
        sweeps[name] = budget_sweep(learner, pool, test, budgets, **kwargs)
        if verbose:
            print(f"{name:<{width}}  {len(budgets)} budget(s) x {len(sweeps[name].seeds)} seeds: "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return sweeps


def _score(probs: np.ndarray, y: np.ndarray, metrics: Sequence[str], n_boot: int, alpha: float,
           drop_collapsed: bool = False) -> tuple[dict[str, np.ndarray], dict[str, list[MetricCI]], np.ndarray]:
    """Per-seed metrics (every run), and each budget's mean and interval over the runs — with ``drop_collapsed``,
    over the runs that did not collapse: a near-constant predictor is no result, so it is left out of the mean (its
    count is in ``flags``), and a budget where every run collapsed has no value (NaN)."""
    per_seed = {m: np.array([[METRICS[m](y, p) for p in row] for row in probs]) for m in metrics}
    flags = np.array([[collapsed(p, y) for p in row] for row in probs], dtype=bool).reshape(probs.shape[:2])
    keep = ~flags if drop_collapsed else np.ones_like(flags)
    nan = MetricCI(float("nan"), float("nan"), float("nan"))
    out = {m: [bootstrap_runs_ci(METRICS[m], y, probs[i][keep[i]], n_boot=n_boot, alpha=alpha, seed=0)
               if keep[i].any() else nan for i in range(len(probs))] for m in metrics}
    return per_seed, out, flags


def average_sweeps(sweeps: Sequence[BudgetSweep], weights: Sequence[float] | None = None, name: str = "ensemble",
                   n_boot: int = 1000, alpha: float = 0.05, drop_collapsed: bool = False) -> BudgetSweep:
    """The probability-averaging ensemble of finished sweeps: run ``(budget, seed)`` of the ensemble averages the
    members' test probabilities of that run (the same labels, the same seed), and is scored like a sweep.

    This is :class:`Ensemble` with fixed weights, without training the members again; use :class:`Ensemble` with
    ``weights="val"`` to tune the weights on a validation set.

    Args:
        sweeps: member sweeps over the same budgets, seeds and test set.
        weights: one per member, summing to 1 (default: equal).
        name: the ensemble's name.
        n_boot: bootstrap replicates of the interval.
        alpha: 1 - confidence level.

    Raises:
        ValueError: fewer than two members, members that differ in budgets, seeds or test labels, or bad weights.

    Example:
        >>> ens = average_sweeps([sweeps["entropy MAE"], sweeps["ImageNet"]])  # doctest: +SKIP
    """
    sweeps = list(sweeps)
    if len(sweeps) < 2:
        raise ValueError("an ensemble needs at least two member sweeps")
    first = sweeps[0]
    for s in sweeps[1:]:
        if (s.budgets != first.budgets or s.seeds != first.seeds or s.unit != first.unit
                or not np.array_equal(s.y_test, first.y_test)):
            raise ValueError(f"{s.name!r} and {first.name!r} differ in budgets, seeds or test labels; an ensemble "
                             "averages runs on the same labels and test images")
    w = np.full(len(sweeps), 1 / len(sweeps)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(sweeps),) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"weights must be {len(sweeps)} non-negative numbers summing to 1, got {weights!r}")
    probs = sum(wi * s.probs for wi, s in zip(w, sweeps))
    per_seed, out, flags = _score(probs, first.y_test, list(first.metrics), n_boot, alpha, drop_collapsed)
    config = {"learner": "ensemble", "weights": w.tolist(), "members": [s.config for s in sweeps]}
    seconds = [float(sum(t)) for t in zip(*(s.seconds for s in sweeps))]
    return BudgetSweep(name, list(first.budgets), list(first.seeds), list(first.n_train), out, per_seed, probs,
                       first.y_test, flags, seconds, {}, config, unit=first.unit)
