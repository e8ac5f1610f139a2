"""Classification metrics with percentile-bootstrap confidence intervals, and a model-to-probabilities helper.

Every metric takes ``y_true (N,)`` integer labels and ``probs (N, K)`` class probabilities; predictions are the
row-wise argmax. With ``K == 2`` AUC and AP are the binary scores of the positive class (column 1); with ``K > 2``
they are macro one-vs-rest means. Metrics that are undefined for a sample (AUC/AP when a class is absent from
``y_true``, as happens in small bootstrap resamples) return NaN instead of raising, and :func:`bootstrap_ci` skips
those resamples.

The metrics are written on NumPy (rank statistics, confusion-matrix counts) so a 1000-resample bootstrap costs
milliseconds; the tests pin each one to its scikit-learn counterpart.

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> p1 = np.clip(0.5 + 0.3 * (y - 0.5) + 0.2 * rng.standard_normal(200), 0, 1)
    >>> res = evaluate(y, np.stack([1 - p1, p1], 1), n_boot=200)
    >>> print(res["auc"])  # doctest: +SKIP
    0.843 [0.789, 0.893]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

__all__ = [
    "MetricCI",
    "METRICS",
    "accuracy",
    "balanced_accuracy",
    "roc_auc",
    "average_precision",
    "f1",
    "confusion_matrix",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "evaluate",
    "results_table",
    "to_records",
    "to_frame",
    "predict_proba",
]


class MetricCI(NamedTuple):
    """A point estimate with the lower and upper ends of its confidence interval.

    Example:
        >>> str(MetricCI(0.8123, 0.7712, 0.8499))
        '0.812 [0.771, 0.850]'
    """

    value: float
    low: float
    high: float

    def fmt(self, digits: int = 3) -> str:
        """The value and interval as text with ``digits`` decimals."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.fmt()


# ----------------------------------------------------------------------------------------------------------- checks


def _check(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true (N,) int64, probs (N, K) float64)``; raises ValueError saying what is wrong."""
    if isinstance(y_true, torch.Tensor):
        y_true = y_true.detach().cpu().numpy()
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().float().cpu().numpy()
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (N,), got shape {y.shape}")
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K) class probabilities, got shape {p.shape}")
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} labels but probs has {len(p)} rows; they must match")
    if len(y) == 0:
        raise ValueError("y_true and probs are empty")
    k = p.shape[1]
    if k < 2:
        raise ValueError(f"probs must have at least 2 columns (classes), got {k}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("y_true must hold integer class indices")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise ValueError(
            f"labels out of range: y_true holds {y.min()}..{y.max()} but probs has {k} classes (0..{k - 1})"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("probs holds NaN or infinite values")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            "probs must be probabilities in [0, 1] (did you pass logits? apply softmax first); "
            f"got values in [{p.min():.3g}, {p.max():.3g}]"
        )
    return y, p


# ---------------------------------------------------------------------------------------------------------- metrics
# Each metric has a batched twin ``metric._batch(y (B, N), probs (B, N, K)) -> (B,)`` that scores many bootstrap
# resamples in one NumPy call; the public function is the B = 1 case, so the two cannot drift apart.


def _cm_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Confusion matrices ``(B, K, K)`` (rows = truth) of the argmax predictions of ``(B, N, K)`` probabilities."""
    b, k = y.shape[0], p.shape[-1]
    flat = (np.arange(b)[:, None] * k + y) * k + p.argmax(-1)
    return np.bincount(flat.ravel(), minlength=b * k * k).reshape(b, k, k)


def _acc_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    cm = _cm_batch(y, p)
    return np.trace(cm, axis1=1, axis2=2) / cm.sum(axis=(1, 2))


def _bal_acc_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    cm = _cm_batch(y, p)
    support = cm.sum(axis=2)
    present = support > 0
    recall = np.where(present, np.diagonal(cm, axis1=1, axis2=2) / np.maximum(support, 1), 0.0)
    return recall.sum(axis=1) / present.sum(axis=1)


def _f1_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    cm = _cm_batch(y, p)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    denom = cm.sum(axis=2) + cm.sum(axis=1)  # 2TP + FP + FN
    present = denom > 0  # scikit-learn's default labels: those in y_true or in the predictions
    f = np.where(present, 2 * tp / np.maximum(denom, 1), 0.0)
    return f.sum(axis=1) / present.sum(axis=1)


def _auc_rows(pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Binary ROC AUC of each row of ``(B, N)`` arrays by the Mann-Whitney rank sum (ties count one half)."""
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    u = (rankdata(score, axis=1) * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _ap_rows(pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Binary average precision of each row of ``(B, N)`` arrays, as scikit-learn defines it.

    AP = sum over thresholds of (recall step) x precision; tied scores form one threshold, so every positive
    contributes the precision at the end of its run of ties: AP = mean over positives of that precision.
    """
    n = pos.shape[1]
    order = np.argsort(-score, axis=1, kind="stable")
    s = np.take_along_axis(score, order, axis=1)
    t = np.take_along_axis(pos, order, axis=1)
    precision = np.cumsum(t, axis=1) / np.arange(1, n + 1)
    is_end = np.ones_like(t, dtype=bool)
    is_end[:, :-1] = s[:, 1:] != s[:, :-1]
    end = np.where(is_end, np.arange(n), n)
    run_end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]  # index of the end of each position's tie run
    n_pos = t.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = (t * np.take_along_axis(precision, run_end, axis=1)).sum(axis=1) / n_pos
    return np.where(n_pos > 0, ap, np.nan)


def _ovr_batch(rows: Callable[[np.ndarray, np.ndarray], np.ndarray], y: np.ndarray, p: np.ndarray) -> np.ndarray:
    if p.shape[-1] == 2:
        return rows(y == 1, p[..., 1])
    # macro one-vs-rest; NaN (no error) when a class is absent from y_true
    return np.mean([rows(y == c, p[..., c]) for c in range(p.shape[-1])], axis=0)


def _auc_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return _ovr_batch(_auc_rows, y, p)


def _ap_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return _ovr_batch(_ap_rows, y, p)


def _single(batch: Callable[[np.ndarray, np.ndarray], np.ndarray], y_true: Any, probs: Any) -> float:
    y, p = _check(y_true, probs)
    return float(batch(y[None], p[None])[0])


def accuracy(y_true: Any, probs: Any) -> float:
    """Share of samples whose argmax class equals the label."""
    return _single(_acc_batch, y_true, probs)


def balanced_accuracy(y_true: Any, probs: Any) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (as scikit-learn)."""
    return _single(_bal_acc_batch, y_true, probs)


def f1(y_true: Any, probs: Any) -> float:
    """Macro F1 over the classes present in ``y_true`` or in the predictions (as scikit-learn's default)."""
    return _single(_f1_batch, y_true, probs)


def roc_auc(y_true: Any, probs: Any) -> float:
    """ROC AUC: binary on ``probs[:, 1]``, else the macro one-vs-rest mean; NaN when a class is absent."""
    return _single(_auc_batch, y_true, probs)


def average_precision(y_true: Any, probs: Any) -> float:
    """Average precision: binary on ``probs[:, 1]``, else the macro one-vs-rest mean; NaN when a class is absent."""
    return _single(_ap_batch, y_true, probs)


for _fn, _batch in [
    (accuracy, _acc_batch),
    (balanced_accuracy, _bal_acc_batch),
    (f1, _f1_batch),
    (roc_auc, _auc_batch),
    (average_precision, _ap_batch),
]:
    _fn._batch = _batch  # lets bootstrap_ci score all resamples at once
del _fn, _batch


def confusion_matrix(y_true: Any, probs: Any) -> np.ndarray:
    """The ``(K, K)`` confusion matrix of argmax predictions (rows = true class, columns = predicted class)."""
    y, p = _check(y_true, probs)
    return _sk_confusion_matrix(y, p.argmax(1), labels=np.arange(p.shape[1]))


METRICS: dict[str, Callable[[Any, Any], float]] = {
    "acc": accuracy,
    "bal_acc": balanced_accuracy,
    "auc": roc_auc,
    "ap": average_precision,
    "f1": f1,
}


# -------------------------------------------------------------------------------------------------------- bootstrap


def _resample_indices(n: int, n_boot: int, seed: int, chunk: int) -> Iterable[np.ndarray]:
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _percentile_ci(point: float, stats: np.ndarray, alpha: float) -> MetricCI:
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return MetricCI(float(point), float("nan"), float("nan"))
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return MetricCI(float(point), float(low), float(high))


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: Any,
    probs: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> MetricCI:
    """Percentile-bootstrap confidence interval of a metric.

    Resamples the N cases with replacement ``n_boot`` times, recomputes the metric on each resample and takes the
    ``alpha/2`` and ``1 - alpha/2`` percentiles. Resamples where the metric is undefined (NaN, e.g. AUC with a class
    missing) are skipped. The same ``seed`` draws the same resamples, so metrics from one call are paired.

    Args:
        metric_fn: ``metric_fn(y_true, probs) -> float``, e.g. :func:`roc_auc`.
        y_true: ``(N,)`` integer labels.
        probs: ``(N, K)`` class probabilities.
        n_boot: number of resamples (0 gives a NaN interval).
        alpha: 1 - confidence level.
        seed: seed of the resampling.

    Returns:
        ``MetricCI(point, low, high)``: the metric on all the data and the interval; it unpacks as a 3-tuple.

    References:
        Efron & Tibshirani, An Introduction to the Bootstrap, 1993 (percentile interval).

    Example:
        >>> y = np.array([0, 1] * 20)
        >>> bootstrap_ci(accuracy, y, np.eye(2)[y], n_boot=50)
        MetricCI(value=1.0, low=1.0, high=1.0)
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    y, p = _check(y_true, probs)
    point = metric_fn(y, p)
    batch_fn = getattr(metric_fn, "_batch", None)
    stats = []
    chunk = max(1, min(n_boot, 2_000_000 // (len(y) * p.shape[1])))  # bound the resampled probs to ~16 MB
    for idx in _resample_indices(len(y), n_boot, seed, chunk):
        if batch_fn is not None:
            stats.append(batch_fn(y[idx], p[idx]))
        else:
            stats.append(np.array([metric_fn(y[i], p[i]) for i in idx]))
    return _percentile_ci(point, np.concatenate(stats) if stats else np.empty(0), alpha)


def bootstrap_mean_ci(values: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> MetricCI:
    """Mean of ``values`` (NaNs dropped) with a percentile-bootstrap confidence interval.

    Example:
        >>> bootstrap_mean_ci([1.0, 1.0, float("nan")], n_boot=20)
        MetricCI(value=1.0, low=1.0, high=1.0)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return MetricCI(float("nan"), float("nan"), float("nan"))
    stats = [v[idx].mean(axis=1) for idx in _resample_indices(len(v), n_boot, seed, max(1, 2_000_000 // len(v)))]
    return _percentile_ci(float(v.mean()), np.concatenate(stats) if stats else np.empty(0), alpha)


def evaluate(
    y_true: Any,
    probs: Any,
    n_boot: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = ("acc", "bal_acc", "auc", "ap", "f1"),
    alpha: float = 0.05,
) -> dict[str, MetricCI]:
    """Several metrics, each with a percentile-bootstrap confidence interval (paired resamples).

    Args:
        y_true: ``(N,)`` integer labels.
        probs: ``(N, K)`` class probabilities (e.g. from :func:`predict_proba`).
        n_boot: bootstrap resamples per metric.
        seed: seed of the resampling; the same for every metric so the intervals come from the same resamples.
        metrics: names from :data:`METRICS` (``acc``, ``bal_acc``, ``auc``, ``ap``, ``f1``).
        alpha: 1 - confidence level.

    Returns:
        ``{name: MetricCI(value, low, high)}`` in the order of ``metrics``.

    Example:
        >>> y = np.array([0, 1, 2] * 10)
        >>> evaluate(y, np.eye(3)[y], n_boot=20)["acc"].value
        1.0
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    y, p = _check(y_true, probs)
    return {m: bootstrap_ci(METRICS[m], y, p, n_boot=n_boot, alpha=alpha, seed=seed) for m in metrics}


# ----------------------------------------------------------------------------------------------------------- tables


def to_records(rows: Mapping[str, Mapping[str, MetricCI]]) -> list[dict[str, Any]]:
    """Flattens ``{row name: {metric: MetricCI}}`` into one dict per row: ``name``, ``<m>``, ``<m>_low``, ``<m>_high``.

    Example:
        >>> to_records({"mae": {"acc": MetricCI(0.9, 0.8, 1.0)}})
        [{'name': 'mae', 'acc': 0.9, 'acc_low': 0.8, 'acc_high': 1.0}]
    """
    records = []
    for name, res in rows.items():
        rec: dict[str, Any] = {"name": name}
        for m, ci in res.items():
            ci = MetricCI(*ci)
            rec[m], rec[f"{m}_low"], rec[f"{m}_high"] = ci.value, ci.low, ci.high
        records.append(rec)
    return records


def to_frame(rows: Mapping[str, Mapping[str, MetricCI]]):
    """The records of :func:`to_records` as a pandas DataFrame indexed by name (needs pandas, an optional extra)."""
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("to_frame needs pandas (pip install pandas); results_table prints without it") from err
    return pd.DataFrame(to_records(rows)).set_index("name")


def results_table(
    rows: Mapping[str, Mapping[str, MetricCI]], metrics: Sequence[str] | None = None, digits: int = 3
) -> str:
    """A plain-text table, one row per model/setting, each cell ``value [low, high]``.

    Args:
        rows: ``{row name: evaluate(...) result}``.
        metrics: columns to show (default: every metric of the first row, in its order).
        digits: decimals.

    Example:
        >>> print(results_table({"mae": {"acc": MetricCI(0.9, 0.85, 0.95)}}))
        name  acc
        mae   0.900 [0.850, 0.950]
    """
    if not rows:
        return ""
    if metrics is None:
        metrics = list(next(iter(rows.values())))
    header = ["name", *metrics]
    body = []
    for name, res in rows.items():
        cells = [str(name)]
        for m in metrics:
            cells.append(MetricCI(*res[m]).fmt(digits) if m in res else "-")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *body]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ predictions


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    dataset_or_loader: torch.utils.data.Dataset | torch.utils.data.DataLoader,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a classifier over a dataset, in eval mode without gradients.

    Args:
        model: maps an image batch ``(B, C, H, W)`` to logits ``(B, K)``.
        dataset_or_loader: a dataset yielding ``(image, label)`` or a ``DataLoader`` of such batches (kept in order).
        batch_size: batch size when a dataset is given.
        device: where to run; None keeps the model where it is (its parameters' device). A given device moves the
            model there.

    Returns:
        ``(y_true (N,) int64, probs (N, K) float32)`` as NumPy arrays.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
        >>> y, p = predict_proba(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)), ds)
        >>> p.shape
        (4, 2)
    """
    if isinstance(dataset_or_loader, torch.utils.data.DataLoader):
        loader = dataset_or_loader
    else:
        loader = torch.utils.data.DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=False)
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    else:
        device = torch.device(device)
        model.to(device)
    was_training = model.training
    model.eval()
    ys, ps = [], []
    try:
        for batch in loader:
            if isinstance(batch, Mapping):
                x, y = batch["image"], batch["label"]
            else:
                x, y = batch[0], batch[1]
            logits = model(x.to(device))
            ps.append(torch.softmax(logits.float(), dim=1).cpu())
            ys.append(torch.as_tensor(y).reshape(-1).cpu())
    finally:
        model.train(was_training)
    if not ps:
        raise ValueError("the dataset is empty")
    return torch.cat(ys).numpy().astype(np.int64), torch.cat(ps).numpy()
