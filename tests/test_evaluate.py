"""Tests for medmae_nb.evaluate: metrics against scikit-learn, bootstrap intervals, tables, predict_proba."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from medmae_nb import evaluate as ev


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


def test_predict_proba_restores_mode_and_keeps_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    model.train()
    x = torch.rand(10, 1, 4, 4)
    labels = torch.arange(10) % 3
    ds = torch.utils.data.TensorDataset(x, labels)
    y, p = ev.predict_proba(model, ds, batch_size=4)
    assert model.training  # restored
    np.testing.assert_array_equal(y, labels.numpy())
    assert p.shape == (10, 3) and y.dtype == np.int64
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(x), 1).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)  # eval mode: no dropout
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    y2, p2 = ev.predict_proba(model, loader, device="cpu")
    np.testing.assert_allclose(p2, p, rtol=1e-5, atol=1e-6)
    res = ev.evaluate(y, p, n_boot=20)
    assert set(res) == {"acc", "bal_acc", "auc", "ap", "f1"}
