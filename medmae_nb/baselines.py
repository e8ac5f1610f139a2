"""Label-budget curves of a supervised baseline trained from scratch: how good is a classifier with n labels/class?

This is the yardstick of the whole book: chapter 00 uses it to calibrate the phantom's difficulty, and later
chapters put their pre-trained models beside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data.base import ImageDataset
from .data.splits import label_budget
from .data.transforms import hflip
from .evaluate import METRICS, MetricCI, predict_proba
from .models.cnn import small_cnn
from .train import fit_supervised


@dataclass
class BudgetCurve:
    """Results of :func:`budget_curve`: one row per label budget.

    Attributes:
        budgets: labels per class of each row.
        n_train: labelled images actually used (smaller classes give all they have).
        metrics: ``{metric: [MetricCI per budget]}`` — the mean over repeats, with a test-set bootstrap interval.
        per_repeat: ``{metric: array (budgets, repeats)}`` — one value per label draw.
        seconds: training time per budget (all repeats).
        y_test: the test labels.
        probs: test probabilities, ``(budgets, repeats, N, K)``.
        models: with ``keep_models``, the model of the last repeat of each budget.
    """

    budgets: list[int]
    n_train: list[int]
    metrics: dict[str, list[MetricCI]]
    per_repeat: dict[str, np.ndarray]
    seconds: list[float] = field(default_factory=list)
    y_test: np.ndarray | None = None
    probs: np.ndarray | None = None
    models: dict[int, nn.Module] = field(default_factory=dict)

    def table(self, metric: str = "bal_acc") -> str:
        """A plain-text table of one metric."""
        lines = [f"{'labels/class':>12} {'n train':>8} {metric + ' [95% CI]':>24} {'per draw':>16} {'time':>6}"]
        for i, b in enumerate(self.budgets):
            draws = " ".join(f"{v:.3f}" for v in self.per_repeat[metric][i])
            lines.append(f"{b:>12} {self.n_train[i]:>8} {str(self.metrics[metric][i]):>24} {draws:>16} "
                         f"{self.seconds[i]:>5.0f}s")
        return "\n".join(lines)


def _mean_over_repeats_ci(metric: Callable, y: np.ndarray, probs: np.ndarray, n_boot: int, seed: int) -> MetricCI:
    """Mean over repeats of ``metric``, with a bootstrap over test cases shared by all repeats (paired)."""
    point = float(np.mean([metric(y, p) for p in probs]))
    batch = getattr(metric, "_batch", None)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        vals = [batch(y[idx][None], p[idx][None])[0] if batch else metric(y[idx], p[idx]) for p in probs]
        stats.append(np.mean(vals))
    stats = np.asarray(stats)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return MetricCI(point, math.nan, math.nan)
    low, high = np.percentile(stats, [2.5, 97.5])
    return MetricCI(point, float(low), float(high))


def budget_curve(
    train: ImageDataset,
    test: ImageDataset,
    budgets: Sequence[int],
    *,
    repeats: int = 2,
    epochs: int = 12,
    min_steps: int = 150,
    batch_size: int = 64,
    make_model: Callable[[], nn.Module] | None = None,
    metrics: Sequence[str] = ("bal_acc", "acc", "auc"),
    n_boot: int = 500,
    seed: int = 0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = hflip,
    progress: bool = False,
    fit: Callable[..., tuple[nn.Module, object]] = fit_supervised,
    fit_kwargs: dict | None = None,
    keep_models: bool = False,
) -> BudgetCurve:
    """Trains a fresh model per (budget, repeat) on ``n`` labels per class and scores it on ``test``.

    Each repeat draws a different nested label set (seed ``seed + r``) and initialises the model with that seed.
    Small budgets would see only a handful of optimiser steps in ``epochs`` epochs, so every run trains for at least
    ``min_steps`` steps.

    Args:
        train: the labelled pool to draw budgets from.
        test: the held-out set every run is scored on.
        budgets: labels per class, e.g. ``[5, 20, 100, 1000]``.
        repeats: label draws per budget.
        epochs: minimum passes over the labelled set.
        min_steps: minimum optimiser steps per run.
        batch_size: images per step (capped at the labelled set size).
        make_model: builds a fresh classifier; default :func:`~medmae_nb.models.cnn.small_cnn`.
        metrics: names from :data:`medmae_nb.evaluate.METRICS`.
        n_boot: bootstrap resamples of the test set.
        seed: base seed.
        augment: per-image training augmentation (default: random left-right flip); None for none.
        progress: show a progress bar per run.
        fit: the training function, ``fit(model, train_ds, epochs=..., batch_size=..., seed=..., augment=...,
            progress=..., **fit_kwargs) -> (model, history)``; default
            :func:`~medmae_nb.train.fit_supervised` (from scratch), or :func:`~medmae_nb.train.finetune` for a
            pre-trained model.
        fit_kwargs: extra keyword arguments for ``fit``.
        keep_models: keep the last repeat's model of each budget in ``BudgetCurve.models``.

    Returns:
        A :class:`BudgetCurve`.

    Example:
        >>> curve = budget_curve(pool, test, [5, 50], repeats=1)  # doctest: +SKIP
        >>> print(curve.table())  # doctest: +SKIP
    """
    import time

    if make_model is None:
        def make_model() -> nn.Module:
            return small_cnn(train.channels, train.num_classes)

    fit_kwargs = {"warmup_epochs": None, **(fit_kwargs or {})}
    per_repeat = {m: np.zeros((len(budgets), repeats)) for m in metrics}
    out = {m: [] for m in metrics}
    n_train, seconds, all_probs, models = [], [], [], {}
    for i, b in enumerate(budgets):
        start = time.perf_counter()
        probs = []
        for r in range(repeats):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a class smaller than the budget gives all it has
                idx = label_budget(train.labels, b, seed=seed + r)
            subset = train.subset(idx)
            bs = min(batch_size, len(subset))
            steps_per_epoch = math.ceil(len(subset) / bs)
            n_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
            torch.manual_seed(seed + r)
            model = make_model()
            kwargs = dict(fit_kwargs)
            if kwargs["warmup_epochs"] is None:
                kwargs["warmup_epochs"] = min(1, n_epochs / 10)
            model, _ = fit(model, subset, epochs=n_epochs, batch_size=bs, seed=seed + r, augment=augment,
                           progress=progress, **kwargs)
            y, p = predict_proba(model, test)
            probs.append(p)
            for m in metrics:
                per_repeat[m][i, r] = METRICS[m](y, p)
        probs = np.stack(probs)
        all_probs.append(probs)
        if keep_models:
            models[b] = model
        for m in metrics:
            out[m].append(_mean_over_repeats_ci(METRICS[m], y, probs, n_boot, seed))
        n_train.append(len(idx))
        seconds.append(time.perf_counter() - start)
    return BudgetCurve(list(budgets), n_train, out, per_repeat, seconds, y, np.stack(all_probs), models)
