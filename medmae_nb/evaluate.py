"""Classification metrics with percentile-bootstrap confidence intervals, on NumPy alone.

Every metric takes ``y_true (N,)`` integer labels and ``probs (N, K)`` class probabilities; predictions are the
row-wise argmax. With ``K == 2`` AUC and AP are the binary scores of the positive class (column 1); with ``K > 2``
they are macro one-vs-rest means. Metrics that are undefined for a sample (AUC/AP when a class is absent from
``y_true``, as happens in small bootstrap resamples) return NaN instead of raising, and :func:`bootstrap_ci` skips
those resamples.

Two kinds of interval:

* :func:`bootstrap_ci` / :func:`evaluate` — one trained model: resamples the test set, so the interval says how
  much the score would move on another test set of the same size.
* :func:`bootstrap_runs_ci` / :func:`evaluate_runs` — R training runs (seeds) scored on the same test set: a
  two-level bootstrap over runs and test cases, so the interval also holds the spread between training runs.

The metrics are written on NumPy (rank statistics, confusion-matrix counts) so a 1000-resample bootstrap costs
milliseconds; the tests pin each one to its scikit-learn counterpart. The module imports nothing but NumPy, so
results can be scored and tabulated without torch (probabilities come from :func:`medmae_nb.inference.predict_proba`;
torch tensors are accepted and converted).

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
    "bootstrap_runs_ci",
    "blocks_statistic_ci",
    "evaluate",
    "log_slope_weights",
    "one_vs_rest",
    "paired_difference_ci",
    "evaluate_runs",
    "results_table",
    "to_records",
    "to_frame",
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


def _as_array(a: Any, float_dtype: bool = False) -> np.ndarray:
    """``a`` as a NumPy array; a torch tensor (recognised by its methods, so torch is never imported) is detached and
    copied to the CPU first, and cast to float32 when ``float_dtype`` (NumPy has no bfloat16)."""
    if hasattr(a, "detach") and hasattr(a, "cpu") and hasattr(a, "numpy"):
        a = a.detach().cpu()
        a = (a.float() if float_dtype and a.is_floating_point() else a).numpy()
    return np.asarray(a, dtype=np.float64) if float_dtype else np.asarray(a)


def _check(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true (N,) int64, probs (N, K) float64)``; raises ValueError saying what is wrong."""
    y = _as_array(y_true)
    p = _as_array(probs, float_dtype=True)
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


def _tie_runs(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of row-wise sorted ``(B, N)`` values, the first and last position of its run of ties."""
    n = sorted_rows.shape[1]
    pos = np.broadcast_to(np.arange(n), sorted_rows.shape)
    new_run = np.ones(sorted_rows.shape, dtype=bool)
    new_run[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    last = np.ones(sorted_rows.shape, dtype=bool)
    last[:, :-1] = new_run[:, 1:]
    start = np.maximum.accumulate(np.where(new_run, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos, n)[:, ::-1], axis=1)[:, ::-1]
    return start, end


def _rank_rows(score: np.ndarray) -> np.ndarray:
    """1-based ranks within each row of ``(B, N)`` scores, ties given their average rank (scipy's ``rankdata``)."""
    order = np.argsort(score, axis=1, kind="stable")
    start, end = _tie_runs(np.take_along_axis(score, order, axis=1))
    ranks = np.empty(score.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2 + 1, axis=1)
    return ranks


def _auc_rows(pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Binary ROC AUC of each row of ``(B, N)`` arrays by the Mann-Whitney rank sum (ties count one half)."""
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    u = (_rank_rows(score) * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2
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
    _, run_end = _tie_runs(s)
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
    return _cm_batch(y[None], p[None])[0]


METRICS: dict[str, Callable[[Any, Any], float]] = {
    "acc": accuracy,
    "bal_acc": balanced_accuracy,
    "auc": roc_auc,
    "ap": average_precision,
    "f1": f1,
}


# -------------------------------------------------------------------------------------------------------- bootstrap

_RUN_STREAM = 1  # the run draws of bootstrap_runs_ci come from their own stream, so test resamples match bootstrap_ci


def _check_boot(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a whole number >= 0, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1) (0.05 gives a 95% interval), got {alpha}")


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


def _check_runs(y_true: Any, probs_runs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y (N,) int64, probs (R, N, K) float64)``."""
    if isinstance(probs_runs, (list, tuple)):
        runs = [_as_array(p, float_dtype=True) for p in probs_runs]
        shapes = {r.shape for r in runs}
        if len(shapes) > 1:
            raise ValueError(f"every run must give probabilities of the same shape (N, K), got shapes {sorted(shapes)}")
        p = np.stack(runs) if runs else np.empty((0, 0, 0))
    else:
        p = _as_array(probs_runs, float_dtype=True)
    if p.ndim != 3:
        raise ValueError(
            f"probs_runs must be 3-D (R, N, K): one (N, K) probability array per training run, got shape {p.shape}; "
            "for a single run pass probs[None] (or use bootstrap_ci)"
        )
    if p.shape[0] == 0:
        raise ValueError("probs_runs holds no runs")
    for r in range(p.shape[0]):
        try:
            y, _ = _check(y_true, p[r])
        except ValueError as err:
            raise ValueError(f"run {r}: {err}") from None
    return y, p


def _run_test_stats(
    metric_fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, p: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """``(n_boot,)`` statistics of the two-level bootstrap of :func:`bootstrap_runs_ci` (``p`` is ``(R, N, K)``)."""
    return _replicate_means(metric_fn, y, p[None], n_boot, seed)[:, 0]


def _replicate_means(
    metric_fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, blocks: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """``(n_boot, F)``: each replicate's mean metric over the drawn runs of every block (``blocks`` is
    ``(F, R, N, K)``, run ``r`` of every block paired).

    Replicate b draws test cases ``idx_b`` (the stream and chunks of :func:`bootstrap_ci`, so R = 1 reproduces it)
    and R runs with replacement, the same for every block; a block's mean is ``sum_r count_br * metric(run r,
    idx_b) / R``, so each run is scored once per test resample. A replicate is NaN for a block when the metric is
    undefined for a run it drew.
    """
    n_blocks, r_runs, n, k = blocks.shape
    batch_fn = getattr(metric_fn, "_batch", None)
    run_rng = np.random.default_rng([seed, _RUN_STREAM])
    chunk = max(1, min(n_boot, 2_000_000 // (n * k)))  # bound one run's resampled probs to ~16 MB
    out = []
    for idx in _resample_indices(n, n_boot, seed, chunk):
        b = len(idx)
        picks = run_rng.integers(0, r_runs, size=(b, r_runs))
        counts = np.bincount((np.arange(b)[:, None] * r_runs + picks).ravel(), minlength=b * r_runs)
        counts = counts.reshape(b, r_runs)
        chosen = counts > 0
        means = np.empty((b, n_blocks))
        for f in range(n_blocks):
            scores = np.empty((b, r_runs))
            for r in range(r_runs):
                if batch_fn is not None:
                    scores[:, r] = batch_fn(y[idx], blocks[f, r][idx])
                else:
                    scores[:, r] = [metric_fn(y[i], blocks[f, r][i]) for i in idx]
            m = (np.where(chosen, scores, 0.0) * counts).sum(axis=1) / r_runs
            means[:, f] = np.where((np.isnan(scores) & chosen).any(axis=1), np.nan, m)
        out.append(means)
    return np.concatenate(out) if out else np.empty((0, n_blocks))


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: Any,
    probs: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> MetricCI:
    """Percentile-bootstrap confidence interval of a metric of one model.

    Resamples the N cases with replacement ``n_boot`` times, recomputes the metric on each resample and takes the
    ``alpha/2`` and ``1 - alpha/2`` percentiles. Resamples where the metric is undefined (NaN, e.g. AUC with a class
    missing) are skipped. The same ``seed`` draws the same resamples, so metrics from one call are paired.

    This interval covers test-set sampling only; for several training runs use :func:`bootstrap_runs_ci`.

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
    _check_boot(n_boot, alpha)
    y, p = _check(y_true, probs)
    point = metric_fn(y, p)
    return _percentile_ci(point, _run_test_stats(metric_fn, y, p[None], int(n_boot), seed), alpha)


def bootstrap_runs_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: Any,
    probs_runs: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> MetricCI:
    """Mean of a metric over R training runs, with an interval that holds both test sampling and run-to-run spread.

    ``probs_runs[r]`` are the test-set probabilities of training run ``r`` (another seed: initialisation, label
    subset, data order), all on the same test set. The point is the mean over runs of the metric. The interval is a
    two-level (hierarchical) percentile bootstrap: each replicate draws R runs with replacement and N test cases
    with replacement, the *same* test resample for every drawn run (the runs share one test set, so their errors on
    it are correlated and must be resampled together), and its statistic is the mean over the drawn runs. Resampling
    the test set alone, as :func:`bootstrap_ci` does, treats the training run as fixed and so ignores the variance
    that seeds add, which in small-data benchmarks is often as large as the test-set variance (Bouthillier et al.);
    resampling only the runs would ignore the finite test set. With R = 1 this is :func:`bootstrap_ci` exactly
    (same ``seed``, same test resamples), so intervals from one seed and from several are comparable and paired.

    With few runs the run level is coarse: resampling R runs gives a run variance ``(R - 1) / R`` of the sample
    variance, so with 3 seeds the interval is somewhat too narrow; report R beside it. Replicates where the metric
    is undefined for a drawn run (AUC with a class missing from the test resample) are skipped.

    Args:
        metric: ``metric(y_true, probs) -> float``, e.g. :func:`roc_auc` or a value of :data:`METRICS`; metrics with
            a batch kernel (all of :data:`METRICS`) score all resamples of a run at once.
        y_true: ``(N,)`` integer labels of the shared test set.
        probs_runs: ``(R, N, K)`` class probabilities, or a list of R ``(N, K)`` arrays.
        n_boot: number of replicates (0 gives a NaN interval).
        alpha: 1 - confidence level.
        seed: seed of the resampling; the test resamples are those of :func:`bootstrap_ci` with the same seed.

    Returns:
        ``MetricCI(mean over runs, low, high)``; NaN point when the metric is undefined for a run.

    Raises:
        ValueError: ``probs_runs`` is not ``(R, N, K)``, a run's probabilities do not match ``y_true``, or bad
            ``n_boot`` / ``alpha``.

    References:
        Bouthillier et al., Accounting for Variance in Machine Learning Benchmarks, MLSys 2021 (seed variance, and
        randomising every source of variation when comparing methods). Saravanan, Berman & Sober, Application of the
        hierarchical bootstrap to multi-level data in neuroscience, NBDT 2020 (resampling every level).

    Example:
        >>> y = np.array([0, 1] * 50)
        >>> runs = np.stack([np.eye(2)[y], np.eye(2)[1 - y]])  # one perfect run, one always wrong
        >>> ci = bootstrap_runs_ci(accuracy, y, runs, n_boot=200)
        >>> ci.value, ci.low, ci.high
        (0.5, 0.0, 1.0)
    """
    _check_boot(n_boot, alpha)
    y, p = _check_runs(y_true, probs_runs)
    point = float(np.mean([metric(y, p[r]) for r in range(len(p))]))
    return _percentile_ci(point, _run_test_stats(metric, y, p, int(n_boot), seed), alpha)


def one_vs_rest(probs: Any, k: int) -> np.ndarray:
    """Two-column probabilities ``[1 - p_k, p_k]`` of class ``k`` against the rest, from ``(…, N, K)``
    probabilities, so the binary metrics (AUC, AP on column 1) score "class k vs rest" (e.g. malignant vs rest).

    Example:
        >>> one_vs_rest(np.array([[0.2, 0.3, 0.5]]), 2).tolist()
        [[0.5, 0.5]]
    """
    p = _as_array(probs, float_dtype=True)
    if not 0 <= k < p.shape[-1]:
        raise ValueError(f"class {k} is not among the {p.shape[-1]} columns of probs")
    return np.stack([1 - p[..., k], p[..., k]], axis=-1)


def paired_difference_ci(metric: Callable[[np.ndarray, np.ndarray], float], y_true: Any, probs_a: Any,
                         probs_b: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> MetricCI:
    """``metric(B) - metric(A)``, mean over paired runs, with the two-level bootstrap of :func:`bootstrap_runs_ci`.

    Run ``r`` of A and run ``r`` of B are a pair (the same seed: the same labelled subset); each replicate draws pairs
    and one test resample shared by both, so what the two models have in common (the labels they saw, the hard test
    cases) cancels in the difference instead of widening it, as two separate intervals would.

    Args:
        metric: ``metric(y_true, probs) -> float``, e.g. :func:`average_precision`.
        y_true: ``(N,)`` labels of the shared test set.
        probs_a, probs_b: ``(R, N, K)`` probabilities of the two models, paired by run.
        n_boot, alpha, seed: as in :func:`bootstrap_runs_ci`.

    Returns:
        ``MetricCI(mean difference B - A, low, high)``.

    Example:
        >>> y = np.array([0, 1] * 20)
        >>> good, bad = np.eye(2)[y][None], np.full((1, 40, 2), 0.5)
        >>> paired_difference_ci(accuracy, y, bad, good, n_boot=50).value  # argmax of a tie is class 0
        0.5
    """
    _, a = _check_runs(y_true, probs_a)
    _, b = _check_runs(y_true, probs_b)
    if a.shape != b.shape:
        raise ValueError(f"probs_a {a.shape} and probs_b {b.shape} must hold the same runs, test set and classes")
    k = a.shape[-1]

    def difference(y: np.ndarray, pair: np.ndarray) -> float:
        return metric(y, pair[:, k:]) - metric(y, pair[:, :k])

    batch = getattr(metric, "_batch", None)
    if batch is not None:  # score all resamples at once, as bootstrap_runs_ci does for the metric itself
        difference._batch = lambda y, pair: batch(y, pair[..., k:]) - batch(y, pair[..., :k])
    return bootstrap_runs_ci(difference, y_true, np.concatenate([a, b], axis=-1), n_boot, alpha, seed)


def blocks_statistic_ci(metric: Callable[[np.ndarray, np.ndarray], float], y_true: Any, blocks: Any,
                        statistic: Callable[[np.ndarray], float] | Sequence[float], n_boot: int = 1000,
                        alpha: float = 0.05, seed: int = 0) -> MetricCI:
    """A statistic of several paired results — a difference, a slope over budgets, a ratio — with the two-level
    bootstrap of :func:`bootstrap_runs_ci`.

    ``blocks[f]`` holds the runs of result ``f`` (a method at a budget), ``(F, R, N, K)``: run ``r`` of every block
    is paired (the same seed: labelled subset, pre-training seed), and all share one test set. Each replicate draws R
    runs with replacement (the same draw for every block) and one test resample (the same for every block and run),
    takes each block's mean metric over the drawn runs, ``m (F,)``, and evaluates ``statistic(m)``; the point is
    ``statistic`` of the blocks' mean metrics on the whole test set.

    ``statistic`` is a function of ``m``, or weights ``w`` for the linear contrast ``w @ m``: ``[-1, 1]`` is
    :func:`paired_difference_ci` (B − A), ``[1]`` is :func:`bootstrap_runs_ci`, the same figures for the same
    ``seed``; centred log-budget weights give the slope of the metric against the log of the budget.

    Raises:
        ValueError: ``blocks`` is not ``(F, R, N, K)`` with ``F, R >= 1``, labels do not match, weights do not
            number F, or bad ``n_boot`` / ``alpha``.

    Example:
        >>> y = np.array([0, 1] * 20)
        >>> good, bad = np.eye(2)[y][None], np.full((1, 40, 2), 0.5)
        >>> blocks_statistic_ci(accuracy, y, np.stack([bad, good]), [-1, 1], n_boot=50).value
        0.5
    """
    _check_boot(n_boot, alpha)
    arr = _as_array(blocks, float_dtype=True)
    if arr.ndim != 4 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"blocks must be (F results, R runs, N cases, K classes), got shape {arr.shape}")
    n_blocks, r_runs = arr.shape[:2]
    y, _ = _check_runs(y_true, arr[0])
    if callable(statistic):
        stat_fn = statistic
    else:
        w = np.asarray(statistic, dtype=np.float64)
        if w.shape != (n_blocks,):
            raise ValueError(f"{len(w)} weights for {n_blocks} blocks: give one weight per block")

        def stat_fn(m: np.ndarray) -> float:
            return float(w @ m)

    point = stat_fn(np.array([np.mean([metric(y, arr[f, r]) for r in range(r_runs)]) for f in range(n_blocks)]))
    means = _replicate_means(metric, y, arr, int(n_boot), seed)
    stats = np.array([stat_fn(row) if np.isfinite(row).all() else np.nan for row in means])
    return _percentile_ci(point, stats, alpha)


def log_slope_weights(budgets: Sequence[float]) -> np.ndarray:
    """Weights ``w`` such that ``w @ m`` is the least-squares slope of ``m`` against ``log10(budget)``: the change of
    the metric per tenfold more labels (for :func:`blocks_statistic_ci`).

    Example:
        >>> w = log_slope_weights([0.01, 0.1, 1.0])
        >>> round(float(w @ np.array([0.5, 0.6, 0.7])), 6)
        0.1
    """
    x = np.log10(np.asarray(budgets, dtype=np.float64))
    if x.ndim != 1 or len(x) < 2 or np.ptp(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"give two or more distinct positive budgets, got {list(budgets)}")
    c = x - x.mean()
    return c / (c @ c)


def bootstrap_mean_ci(values: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> MetricCI:
    """Mean of ``values`` (NaNs dropped) with a percentile-bootstrap confidence interval.

    Example:
        >>> bootstrap_mean_ci([1.0, 1.0, float("nan")], n_boot=20)
        MetricCI(value=1.0, low=1.0, high=1.0)
    """
    _check_boot(n_boot, alpha)
    v = _as_array(values, float_dtype=True).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return MetricCI(float("nan"), float("nan"), float("nan"))
    chunk = max(1, 2_000_000 // len(v))
    stats = [v[idx].mean(axis=1) for idx in _resample_indices(len(v), int(n_boot), seed, chunk)]
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
        probs: ``(N, K)`` class probabilities (e.g. from :func:`medmae_nb.inference.predict_proba`).
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


def evaluate_runs(
    y_true: Any,
    probs_runs: Any,
    n_boot: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = ("acc", "bal_acc", "auc", "ap", "f1"),
    alpha: float = 0.05,
) -> dict[str, MetricCI]:
    """:func:`evaluate` for R training runs on one test set: each metric's mean over runs with the two-level
    interval of :func:`bootstrap_runs_ci` (paired resamples across metrics).

    Args:
        y_true: ``(N,)`` integer labels of the shared test set.
        probs_runs: ``(R, N, K)`` class probabilities, one ``(N, K)`` array per run (seed).
        n_boot: bootstrap replicates per metric.
        seed: seed of the resampling, shared by the metrics.
        metrics: names from :data:`METRICS`.
        alpha: 1 - confidence level.

    Returns:
        ``{name: MetricCI(mean over runs, low, high)}`` in the order of ``metrics``; it fits :func:`results_table`.

    Example:
        >>> y = np.array([0, 1, 2] * 10)
        >>> evaluate_runs(y, np.stack([np.eye(3)[y]] * 3), n_boot=20)["acc"]
        MetricCI(value=1.0, low=1.0, high=1.0)
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    y, p = _check_runs(y_true, probs_runs)
    return {m: bootstrap_runs_ci(METRICS[m], y, p, n_boot=n_boot, alpha=alpha, seed=seed) for m in metrics}


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
