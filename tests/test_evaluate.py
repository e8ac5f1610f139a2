"""Tests for medmae_nb.evaluate: metrics against scikit-learn, bootstrap intervals and their calibration, tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from medmae_nb import evaluate as ev
from medmae_nb.evaluate import (
    accuracy,
    balanced_accuracy,
    blocks_statistic_ci,
    bootstrap_runs_ci,
    log_slope_weights,
    paired_difference_ci,
)


def _data(n: int, k: int, seed: int = 0, signal: float = 1.0, round_to: int | None = None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) + signal * np.eye(k)[y]
    if round_to is not None:  # creates tied scores
        logits = np.round(logits, round_to)
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("round_to", [None, 1])
def test_metrics_match_sklearn(k, round_to):
    y, p = _data(300, k, seed=k, round_to=round_to)
    pred = p.argmax(1)
    assert ev.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred))
    assert ev.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert ev.f1(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_array_equal(ev.confusion_matrix(y, p), skm.confusion_matrix(y, pred, labels=range(k)))
    if k == 2:
        assert ev.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
        assert ev.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p[:, 1]))
    else:
        assert ev.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
        onehot = np.eye(k)[y]
        assert ev.average_precision(y, p) == pytest.approx(skm.average_precision_score(onehot, p, average="macro"))


def test_metrics_with_a_class_never_predicted_or_absent():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.tile([[0.6, 0.3, 0.1]], (6, 1))  # always predicts class 0; class 2 absent from y_true
    pred = p.argmax(1)
    assert ev.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert ev.f1(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert np.isnan(ev.roc_auc(y, p))
    assert np.isnan(ev.average_precision(y, p))


def test_perfect_predictions_give_one_and_a_collapsed_interval():
    y = np.array([0, 1, 2] * 20)
    res = ev.evaluate(y, np.eye(3)[y], n_boot=200)
    for name, ci in res.items():
        assert ci == (1.0, 1.0, 1.0), name


def test_interval_contains_point_and_narrows_with_more_data():
    small = ev.bootstrap_ci(ev.roc_auc, *_data(100, 2, seed=1), n_boot=500)
    large = ev.bootstrap_ci(ev.roc_auc, *_data(2000, 2, seed=1), n_boot=500)
    for ci in (small, large):
        assert ci.low <= ci.value <= ci.high
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_vectorised_and_looped_bootstrap_agree():
    y, p = _data(150, 3, seed=2)
    for fn in (ev.accuracy, ev.balanced_accuracy, ev.f1, ev.roc_auc, ev.average_precision):
        fast = ev.bootstrap_ci(fn, y, p, n_boot=100, seed=3)
        slow = ev.bootstrap_ci(lambda a, b, fn=fn: fn(a, b), y, p, n_boot=100, seed=3)  # no _batch attribute
        np.testing.assert_allclose(fast, slow)


def test_seeded_bootstrap_is_reproducible():
    y, p = _data(120, 3, seed=4)
    a = ev.evaluate(y, p, n_boot=100, seed=7)
    b = ev.evaluate(y, p, n_boot=100, seed=7)
    c = ev.evaluate(y, p, n_boot=100, seed=8)
    assert a == b
    assert a["auc"] != c["auc"]


def test_auc_bootstrap_with_missing_class_resamples_does_not_crash():
    y = np.array([0] * 30 + [1] * 30 + [2])  # a single class-2 case: most resamples lose it
    p = np.full((len(y), 3), 1 / 3)
    p[np.arange(len(y)), y] = 0.5
    p[np.arange(len(y)), (y + 1) % 3] = 1 / 6
    p /= p.sum(1, keepdims=True)
    with np.errstate(all="raise"):
        ci = ev.bootstrap_ci(ev.roc_auc, y, p, n_boot=200)
    assert np.isfinite(ci.value) and np.isfinite(ci.low) and np.isfinite(ci.high)
    all_nan = ev.bootstrap_ci(ev.roc_auc, np.zeros(5, int), np.tile([[0.7, 0.3]], (5, 1)), n_boot=20)
    assert np.isnan(all_nan.value) and np.isnan(all_nan.low)


def test_bootstrap_mean_ci():
    ci = ev.bootstrap_mean_ci([1.0, 2.0, 3.0, np.nan], n_boot=200)
    assert ci.value == pytest.approx(2.0)
    assert 1.0 <= ci.low <= ci.value <= ci.high <= 3.0
    assert np.isnan(ev.bootstrap_mean_ci([np.nan]).value)


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        (np.zeros(3, int), np.full((4, 2), 0.5), "must match"),
        (np.zeros(3, int), np.full(3, 0.5), "2-D"),
        (np.array([0, 1, 2]), np.full((3, 2), 0.5), "out of range"),
        (np.array([0, -1, 1]), np.full((3, 2), 0.5), "out of range"),
        (np.array([0.5, 1, 0]), np.full((3, 2), 0.5), "integer"),
        (np.zeros(3, int), np.array([[2.0, -1.0]] * 3), "logits"),
        (np.zeros(3, int), np.array([[np.nan, 1.0]] * 3), "NaN"),
        (np.zeros((3, 1), int), np.full((3, 2), 0.5), "1-D"),
    ],
)
def test_bad_input_raises(y, p, match):
    with pytest.raises(ValueError, match=match):
        ev.roc_auc(y, p)


def test_bad_arguments_raise():
    y, p = _data(10, 2)
    with pytest.raises(ValueError, match="unknown metrics"):
        ev.evaluate(y, p, metrics=("acc", "sensitivity"))
    with pytest.raises(ValueError, match="alpha"):
        ev.bootstrap_ci(ev.accuracy, y, p, alpha=1.5)


def test_metric_ci_str_and_tables():
    ci = ev.MetricCI(0.8123, 0.7712, 0.8499)
    assert str(ci) == "0.812 [0.771, 0.850]"
    assert ci.fmt(1) == "0.8 [0.8, 0.8]"
    rows = {"mae": {"acc": ci, "auc": ev.MetricCI(0.9, 0.8, 1.0)}, "dino-knn": {"acc": ci}}
    table = ev.results_table(rows).splitlines()
    assert table[0].split() == ["name", "acc", "auc"]
    assert table[1].startswith("mae ") and "0.900 [0.800, 1.000]" in table[1]
    assert table[2].rstrip().endswith("-")
    recs = ev.to_records(rows)
    assert recs[0] == {
        "name": "mae",
        "acc": 0.8123,
        "acc_low": 0.7712,
        "acc_high": 0.8499,
        "auc": 0.9,
        "auc_low": 0.8,
        "auc_high": 1.0,
    }
    assert ev.results_table({}) == ""


# ---------------------------------------------------------------------------------------------- NumPy only, inputs


def test_module_needs_only_numpy():
    # loaded from its file alone (not through the package, whose __init__ imports torch)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ev', {str(Path(ev.__file__))!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(sorted(m for m in ('torch', 'scipy', 'sklearn', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_tensors_are_accepted():
    y, p = _data(80, 3, seed=5)
    yt, pt = torch.from_numpy(y), torch.from_numpy(p).to(torch.bfloat16).requires_grad_(False)
    assert ev.accuracy(yt, pt) == pytest.approx(ev.accuracy(y, pt.float().numpy()))
    ref = ev.roc_auc(y, pt.float().numpy())
    assert ev.roc_auc(yt, pt) == pytest.approx(ref)
    assert ev.bootstrap_mean_ci(torch.tensor([1.0, 2.0, 3.0]), n_boot=10).value == pytest.approx(2.0)


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.integers(0, 4), min_size=2, max_size=30),  # few distinct values: many ties
    data=st.data(),
)
def test_ranking_metrics_match_sklearn_with_heavy_ties(scores, data):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=len(scores), max_size=len(scores))))
    s = np.array(scores) / 4
    p = np.stack([1 - s, s], 1)
    if 0 < y.sum() < len(y):
        assert ev.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, s))
    else:
        assert np.isnan(ev.roc_auc(y, p))
    if y.sum() > 0:
        assert ev.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, s))


# ----------------------------------------------------------------------------------------- interval calibration


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_bootstrap_ci_percentiles_match_the_exact_bootstrap_distribution(alpha):
    # Resampling N cases with replacement makes the number of correct ones Binomial(N, observed accuracy), so the
    # bootstrap percentiles are known exactly; a 90% interval reported as 95% (or alpha used as the one-sided
    # level) misses them by several atoms.
    n, correct = 2000, 1400
    y = np.zeros(n, int)
    p = np.zeros((n, 2))
    p[:correct, 0] = 1.0
    p[correct:, 1] = 1.0
    ci = ev.bootstrap_ci(ev.accuracy, y, p, n_boot=4000, alpha=alpha, seed=0)
    low, high = stats.binom.ppf([alpha / 2, 1 - alpha / 2], n, correct / n) / n
    assert ci.value == 0.7
    assert ci.low == pytest.approx(low, abs=0.0015) and ci.high == pytest.approx(high, abs=0.0015)
    sd = np.sqrt(0.7 * 0.3 / n)  # the same check against the normal approximation, in its own words
    assert (ci.high - ci.low) / (2 * sd) == pytest.approx(stats.norm.ppf(1 - alpha / 2), rel=0.05)


def test_bootstrap_mean_ci_width_matches_normal_theory():
    v = np.random.default_rng(1).standard_normal(500)
    for alpha in (0.05, 0.1):
        ci = ev.bootstrap_mean_ci(v, n_boot=4000, alpha=alpha)
        sd = v.std() / np.sqrt(len(v))
        assert (ci.high - ci.low) / (2 * sd) == pytest.approx(stats.norm.ppf(1 - alpha / 2), rel=0.06)
        assert ci.low < v.mean() < ci.high


def test_bootstrap_ci_covers_the_true_accuracy():
    # 200 test sets from a model whose true accuracy is 0.8: the 95% interval should miss about 10 times
    rng = np.random.default_rng(2)
    n, sims = 150, 200
    covered = 0
    for _ in range(sims):
        y = rng.integers(0, 2, n)
        right = rng.random(n) < 0.8
        p = np.eye(2)[np.where(right, y, 1 - y)]
        ci = ev.bootstrap_ci(ev.accuracy, y, p, n_boot=300, seed=int(rng.integers(1 << 30)))
        covered += ci.low <= 0.8 <= ci.high
    assert 0.89 <= covered / sims <= 0.99


def test_bad_bootstrap_arguments():
    y, p = _data(10, 2)
    for fn, args in ((ev.bootstrap_ci, (ev.accuracy, y, p)), (ev.bootstrap_runs_ci, (ev.accuracy, y, p[None]))):
        with pytest.raises(ValueError, match="alpha must lie in"):
            fn(*args, alpha=0.0)
        with pytest.raises(ValueError, match="n_boot must be a whole number"):
            fn(*args, n_boot=-1)
        assert np.isnan(fn(*args, n_boot=0).low)
    with pytest.raises(ValueError, match="alpha must lie in"):
        ev.bootstrap_mean_ci([1.0, 2.0], alpha=95)
    with pytest.raises(ValueError, match="n_boot"):
        ev.bootstrap_mean_ci([1.0, 2.0], n_boot=2.5)


# ------------------------------------------------------------------------------------------ several training runs


def _runs(n: int, accuracies: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and R runs of hard binary predictions, run r right on each case with probability accuracies[r]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.random((len(accuracies), n)) < np.asarray(accuracies)[:, None]
    return y, np.eye(2)[np.where(right, y, 1 - y)]


@pytest.mark.parametrize("name", list(ev.METRICS))
def test_one_run_is_the_test_set_bootstrap(name):
    y, p = _data(200, 3, seed=6)
    fn = ev.METRICS[name]
    assert ev.bootstrap_runs_ci(fn, y, p[None], n_boot=300, seed=4) == ev.bootstrap_ci(fn, y, p, n_boot=300, seed=4)


def test_identical_runs_give_the_single_run_interval():
    # every drawn run sees the same test resample, so copies of one run add nothing; resampling the test set per
    # drawn run instead would average the noise away and narrow the interval
    y, p = _data(150, 2, seed=7)
    runs = np.stack([p, p, p])
    for fn in (ev.accuracy, ev.roc_auc):
        single = ev.bootstrap_ci(fn, y, p, n_boot=300, seed=1)
        np.testing.assert_allclose(ev.bootstrap_runs_ci(fn, y, runs, n_boot=300, seed=1), single, rtol=1e-12)
        assert single.high - single.low > 0.05


def test_runs_that_disagree_widen_the_interval():
    y, runs = _runs(500, [0.6, 0.9], seed=3)
    acc = [ev.accuracy(y, r) for r in runs]
    ci = ev.bootstrap_runs_ci(ev.accuracy, y, runs, n_boot=1000)
    assert ci.value == pytest.approx(np.mean(acc))
    # the test-set bootstrap of either run, or of the two runs held fixed, is far narrower than the run spread
    fixed = ev.bootstrap_mean_ci(np.stack([runs[0][:, 1] == y, runs[1][:, 1] == y], 1).mean(1), n_boot=1000)
    for narrow in (ev.bootstrap_ci(ev.accuracy, y, runs[0]), ev.bootstrap_ci(ev.accuracy, y, runs[1]), fixed):
        assert ci.high - ci.low > 3 * (narrow.high - narrow.low)
    assert ci.low < min(acc) + 0.05 and ci.high > max(acc) - 0.05  # reaches both runs
    agree = ev.bootstrap_runs_ci(ev.accuracy, *_runs(500, [0.75, 0.75], seed=3), n_boot=1000)
    assert ci.high - ci.low > 2 * (agree.high - agree.low)


def test_runs_interval_covers_the_mean_over_training_runs():
    # Each training run has its own true accuracy (mean 0.75, sd 0.06 across seeds): the target is the mean over
    # runs. The two-level interval should cover it most of the time; the test-set bootstrap, blind to the seeds,
    # should not.
    rng = np.random.default_rng(8)
    sims, r_runs, n = 120, 6, 300
    covered_runs = covered_test = 0
    for _ in range(sims):
        acc = np.clip(rng.normal(0.75, 0.06, r_runs), 0, 1)
        y, runs = _runs(n, acc.tolist(), seed=int(rng.integers(1 << 30)))
        ci = ev.bootstrap_runs_ci(ev.accuracy, y, runs, n_boot=300, seed=int(rng.integers(1 << 30)))
        covered_runs += ci.low <= 0.75 <= ci.high
        correct = (runs.argmax(-1) == y).mean(0)  # per case, the share of runs right: runs held fixed
        test_only = ev.bootstrap_mean_ci(correct, n_boot=300, seed=int(rng.integers(1 << 30)))
        covered_test += test_only.low <= 0.75 <= test_only.high
    assert covered_runs / sims >= 0.85
    assert covered_test / sims < 0.75


def test_runs_interval_is_seeded_and_takes_lists():
    y, runs = _runs(100, [0.7, 0.8, 0.75], seed=9)
    a = ev.bootstrap_runs_ci(ev.f1, y, runs, n_boot=200, seed=5)
    assert a == ev.bootstrap_runs_ci(ev.f1, y, list(runs), n_boot=200, seed=5)
    assert a == ev.bootstrap_runs_ci(ev.f1, torch.from_numpy(y), torch.from_numpy(runs), n_boot=200, seed=5)
    assert a != ev.bootstrap_runs_ci(ev.f1, y, runs, n_boot=200, seed=6)
    assert a.low <= a.value <= a.high
    plain = ev.bootstrap_runs_ci(lambda t, q: ev.f1(t, q), y, runs, n_boot=200, seed=5)  # no batch kernel
    np.testing.assert_allclose(plain, a)


def test_runs_interval_skips_undefined_replicates():
    y = np.array([0] * 30 + [1] * 30 + [2])  # one class-2 case: most resamples lose it and AUC is undefined
    rng = np.random.default_rng(0)
    runs = rng.dirichlet(np.ones(3), size=(3, len(y)))
    with np.errstate(all="raise"):
        ci = ev.bootstrap_runs_ci(ev.roc_auc, y, runs, n_boot=200)
    assert np.isfinite(ci).all()
    assert ci.value == pytest.approx(np.mean([ev.roc_auc(y, r) for r in runs]))


def test_evaluate_runs():
    y, runs = _runs(120, [0.7, 0.9], seed=10)
    res = ev.evaluate_runs(y, runs, n_boot=100, metrics=("acc", "auc"))
    assert list(res) == ["acc", "auc"]
    assert res["acc"] == ev.bootstrap_runs_ci(ev.accuracy, y, runs, n_boot=100)
    assert "acc" in ev.results_table({"dino": res})
    with pytest.raises(ValueError, match="unknown metrics"):
        ev.evaluate_runs(y, runs, metrics=("sens",))


@pytest.mark.parametrize(
    ("runs", "match"),
    [
        (np.full((4, 2), 0.5), r"3-D \(R, N, K\).*probs\[None\]"),
        (np.full((0, 4, 2), 0.5), "no runs"),
        (np.full((2, 3, 2), 0.5), "run 0: y_true has 4 labels but probs has 3 rows"),
        (np.stack([np.full((4, 2), 0.5), np.full((4, 2), 2.0)]), "run 1: .*logits"),
        ([np.full((4, 2), 0.5), np.full((5, 2), 0.5)], "same shape"),
    ],
)
def test_bad_runs_raise(runs, match):
    with pytest.raises(ValueError, match=match):
        ev.bootstrap_runs_ci(ev.accuracy, np.array([0, 1, 0, 1]), runs, n_boot=10)


def test_one_vs_rest_scores_one_class_against_the_others():
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3],
                      [0.5, 0.4, 0.1]])
    two = ev.one_vs_rest(probs, 2)
    np.testing.assert_allclose(two.sum(1), 1.0)
    assert ev.roc_auc((y == 2).astype(int), two) == pytest.approx(skm.roc_auc_score(y == 2, probs[:, 2]))
    assert ev.one_vs_rest(np.stack([probs, probs]), 1).shape == (2, 6, 2)  # runs pass through
    with pytest.raises(ValueError, match="class 3"):
        ev.one_vs_rest(probs, 3)


def test_paired_difference_is_b_minus_a_and_pairs_runs_and_test_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    noise = rng.random((3, 200))
    a = np.stack([1 - noise, noise], -1)  # runs at chance
    b = np.stack([np.clip(1 - y - 0.3 * noise + 0.15, 0, 1), np.clip(y + 0.3 * noise - 0.15, 0, 1)], -1)
    d = ev.paired_difference_ci(ev.roc_auc, y, a, b, n_boot=300)
    expected = np.mean([ev.roc_auc(y, b[r]) - ev.roc_auc(y, a[r]) for r in range(3)])
    assert d.value == pytest.approx(expected) and d.value > 0.3 and d.low > 0.2  # B better, beyond the interval
    swapped = ev.paired_difference_ci(ev.roc_auc, y, b, a, n_boot=300)
    assert swapped.value == pytest.approx(-d.value) and swapped.high < 0
    # identical models: the difference is exactly 0 in every replicate (a shared resample, not two independent ones)
    assert ev.paired_difference_ci(ev.roc_auc, y, a, a, n_boot=100) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same runs"):
        ev.paired_difference_ci(ev.roc_auc, y, a, b[:2])


# ------------------------------------------------------------------ statistics of several paired results
def _random_runs(rng: np.random.Generator, r: int, n: int, k: int) -> np.ndarray:
    p = rng.random((r, n, k)) + 0.05
    return p / p.sum(-1, keepdims=True)


def test_blocks_statistic_reproduces_the_paired_difference_and_the_runs_interval() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    a, b = _random_runs(rng, 4, 60, 3), _random_runs(rng, 4, 60, 3)
    b[:, np.arange(60), y] += 0.4  # B better
    b /= b.sum(-1, keepdims=True)
    for metric in (balanced_accuracy, accuracy):
        diff = paired_difference_ci(metric, y, a, b, n_boot=300, seed=3)
        got = blocks_statistic_ci(metric, y, np.stack([a, b]), [-1, 1], n_boot=300, seed=3)
        np.testing.assert_allclose(got, diff, atol=1e-12)
        np.testing.assert_allclose(blocks_statistic_ci(metric, y, a[None], [1.0], n_boot=300, seed=3),
                                   bootstrap_runs_ci(metric, y, a, n_boot=300, seed=3), atol=1e-12)
    # a function of the block means: the ratio B / A, point and interval from the same replicates
    ratio = blocks_statistic_ci(accuracy, y, np.stack([a, b]), lambda m: m[1] / m[0], n_boot=300, seed=3)
    mean_a = np.mean([accuracy(y, p) for p in a])
    mean_b = np.mean([accuracy(y, p) for p in b])
    assert ratio.value == pytest.approx(mean_b / mean_a) and ratio.low < ratio.value < ratio.high


def test_a_slope_over_budgets_is_the_least_squares_slope_against_log_budget() -> None:
    budgets = [0.01, 0.05, 0.1, 0.25, 1.0]
    w = log_slope_weights(budgets)
    m = 0.4 + 0.07 * np.log10(budgets)
    assert float(w @ m) == pytest.approx(0.07) and float(w.sum()) == pytest.approx(0.0)
    assert float(w @ np.full(5, 0.8)) == pytest.approx(0.0)  # a flat curve has slope 0
    with pytest.raises(ValueError, match="two or more distinct positive budgets"):
        log_slope_weights([0.1, 0.1])
    # runs whose accuracy is the same at every budget: slope 0, interval collapsed on it
    y = np.arange(40) % 2
    same = np.stack([np.eye(2)[y][None].repeat(3, 0)] * 5)
    ci = blocks_statistic_ci(accuracy, y, same, w, n_boot=100)
    assert ci.value == pytest.approx(0.0) and ci.low == pytest.approx(0.0) and ci.high == pytest.approx(0.0)


def test_blocks_statistic_refuses_bad_shapes_and_weights() -> None:
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match=r"\(F results, R runs, N cases, K classes\)"):
        blocks_statistic_ci(accuracy, y, np.full((3, 10, 2), 0.5), [1, 1, 1])
    with pytest.raises(ValueError, match="one weight per block"):
        blocks_statistic_ci(accuracy, y, np.full((2, 1, 10, 2), 0.5), [1, 1, 1])
