"""Tests for medmae_nb.budgets: learners, seeds and nested draws, intervals over seeds, the cache, collapse flags."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from medmae_nb.budgets import (
    Ensemble,
    FineTune,
    Fitted,
    FrozenFeatures,
    LinearProbe,
    average_sweeps,
    budget_sweep,
    collapsed,
    supervised,
)
from medmae_nb.data import DataError, label_budget, make_phantom_splits
from medmae_nb.evaluate import METRICS, bootstrap_runs_ci
from medmae_nb.inference import predict_proba
from medmae_nb.models.cnn import small_cnn


@pytest.fixture(scope="module")
def data():
    ds = make_phantom_splits(90, 30, 45, image_size=32, seed=1)
    return ds.get_split("train"), ds.get_split("val"), ds.get_split("test")


@dataclass
class Spy:
    """A learner that records what it is given and predicts from a seeded random generator."""

    name: str = "spy"
    calls: list = field(default_factory=list)
    knob: int = 0

    def config(self):
        return {"learner": "spy", "knob": self.knob}

    def fit(self, train, *, seed, val=None):
        self.calls.append((tuple(np.flatnonzero(np.isin(np.arange(len(train)), np.arange(len(train))))),
                           len(train), seed, val is not None, train.images.sum()))
        rng = np.random.default_rng(seed)

        def predict(ds):
            p = rng.random((len(ds), ds.num_classes)) + np.eye(ds.num_classes)[ds.labels] * 0.2 * len(train) / 30
            return p / p.sum(1, keepdims=True)

        return Fitted(predict, model=f"model-{seed}")


def test_each_seed_draws_its_own_nested_labels_and_runs_with_that_seed(data):
    pool, val, test = data
    spy = Spy()
    sweep = budget_sweep(spy, pool, test, [2, 5], seeds=(0, 1, 2), val=val, n_boot=50, keep_models=True)
    assert [c[2] for c in spy.calls] == [0, 1, 2, 0, 1, 2] and all(c[3] for c in spy.calls)
    assert sweep.n_train == [6, 15] and [c[1] for c in spy.calls] == [6, 6, 6, 15, 15, 15]
    # different seeds see different images; one seed's sets are nested across budgets
    sums = [c[4] for c in spy.calls]
    assert len(set(np.round(sums[:3], 4))) == 3
    for s in range(3):
        assert set(label_budget(pool.labels, 2, seed=s)) < set(label_budget(pool.labels, 5, seed=s))
    assert sweep.probs.shape == (2, 3, len(test), 3) and np.array_equal(sweep.y_test, test.labels)
    assert sweep.models[(5, 1)] == "model-1" and sweep.model(5) == "model-2"
    with pytest.raises(KeyError, match="keep_models"):
        budget_sweep(spy, pool, test, [2], seeds=(0,), n_boot=10).model(2)


def test_intervals_hold_the_spread_across_seeds(data):
    pool, _, test = data
    sweep = budget_sweep(Spy(), pool, test, [2, 5], seeds=(0, 1, 2), n_boot=200)
    for m in ("bal_acc", "acc", "auc"):
        for i, ci in enumerate(sweep.metrics[m]):
            assert ci.value == pytest.approx(sweep.per_seed[m][i].mean())
            expected = bootstrap_runs_ci(METRICS[m], test.labels, sweep.probs[i], n_boot=200, seed=0)
            assert (ci.low, ci.high) == pytest.approx((expected.low, expected.high))
    assert sweep.per_seed["bal_acc"].shape == (2, 3) and len(set(sweep.per_seed["bal_acc"][0])) == 3
    table = sweep.table()
    assert "labels/class" in table and "0/3" in table
    rows = sweep.to_records()
    assert len(rows) == 2 * 3 and {r["metric"] for r in rows} == {"bal_acc", "acc", "auc"}


def test_fraction_budgets_draw_nested_stratified_shares_of_the_pool(data):
    pool, _, test = data
    spy = Spy()
    sweep = budget_sweep(spy, pool, test, [0.1, 0.5, 1.0], seeds=(0, 1, 2), n_boot=50, unit="fraction")
    assert sweep.unit == "fraction" and sweep.budgets == [0.1, 0.5, 1.0]
    assert sweep.n_train == [9, 45, 90] and [c[1] for c in spy.calls[::3]] == [9, 45, 90]
    assert "% of pool" in sweep.table() and "10 %" in sweep.table()
    assert {"fraction"} <= set(sweep.to_records()[0]) and "labels_per_class" not in sweep.to_records()[0]
    ens = average_sweeps([sweep, sweep])
    assert ens.unit == "fraction" and ens.budgets == sweep.budgets
    per_class = budget_sweep(Spy(), pool, test, [1], seeds=(0, 1, 2), n_boot=20)  # 1 label per class ...
    with pytest.raises(ValueError, match="differ in budgets"):  # ... is not 100 % of the pool, though 1 == 1.0
        average_sweeps([per_class, budget_sweep(Spy(), pool, test, [1.0], seeds=(0, 1, 2), n_boot=20,
                                                unit="fraction")])
    with pytest.raises(DataError, match="0.05"):
        budget_sweep(Spy(), pool, test, [5], unit="fraction")
    with pytest.raises(ValueError, match="unit must be"):
        budget_sweep(Spy(), pool, test, [5], unit="percent")


def test_bad_arguments_are_refused(data):
    pool, _, test = data
    with pytest.raises(ValueError, match="seeds must differ"):
        budget_sweep(Spy(), pool, test, [2], seeds=(1, 1))
    with pytest.raises(ValueError, match="unknown metrics"):
        budget_sweep(Spy(), pool, test, [2], metrics=("accuracy",))
    with pytest.raises(ValueError, match="at least one budget"):
        budget_sweep(Spy(), pool, test, [])


def test_cache_reads_results_per_budget_and_seed(data, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    pool, _, test = data
    first = Spy()
    a = budget_sweep(first, pool, test, [2, 5], seeds=(0, 1), n_boot=20, cache=True)
    assert len(first.calls) == 4 and len(list((tmp_path / "sweeps").glob("*.npz"))) == 4
    again = Spy()
    b = budget_sweep(again, pool, test, [2, 5], seeds=(0, 1), n_boot=20, cache=True)
    assert again.calls == [] and np.array_equal(a.probs, b.probs)
    more = Spy()
    budget_sweep(more, pool, test, [2, 5, 10], seeds=(0, 1, 2), n_boot=20, cache=True)
    assert sorted((c[1], c[2]) for c in more.calls) == [(6, 2), (15, 2), (30, 0), (30, 1), (30, 2)]
    # another learner config, another test set or a validation set: new runs, not cached ones
    for learner, kw in ((Spy(knob=1), {}), (Spy(), {"test": pool}), (Spy(), {"val": test})):
        budget_sweep(learner, pool, kw.get("test", test), [2], seeds=(0,), n_boot=5, cache=True,
                     val=kw.get("val"))
        assert len(learner.calls) == 1



def test_cached_sweep_keeps_models_by_refitting_only_the_one_asked_for(data, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    pool, _, test = data
    learner = supervised(lambda: small_cnn(1, 3, width=4), epochs=1, min_steps=4, batch_size=8)
    first = budget_sweep(learner, pool, test, [2, 5], seeds=(0, 1), n_boot=10, cache=True, keep_models=True)
    assert len(first.models) == 4 and not first.refits  # trained here: every model kept
    assert len(list((tmp_path / "sweeps").glob("*.npz"))) == 4  # and every result cached
    fits = []
    real_fit = learner.fit
    monkeypatch.setattr(learner, "fit", lambda *a, **k: fits.append(k["seed"]) or real_fit(*a, **k))
    again = budget_sweep(learner, pool, test, [2, 5], seeds=(0, 1), n_boot=10, cache=True, keep_models=True)
    assert fits == [] and np.array_equal(again.probs, first.probs)  # read, not trained
    model = again.model(5, 0)
    assert fits == [0] and again.model(5, 0) is model  # one refit, the seed asked for, then kept
    for a, b in zip(model.state_dict().values(), first.model(5, 0).state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same labels and seed: the same weights
    np.testing.assert_array_equal(predict_proba(model, test)[1], again.probs[1, 0])
    with pytest.raises(KeyError, match="no model kept for budget 7"):
        again.model(7)

def test_finetune_learners_differ_by_seed_and_weights(data):
    pool, _, test = data
    learner = supervised(lambda: small_cnn(1, 3, width=4), epochs=1, min_steps=4, batch_size=8)
    sweep = budget_sweep(learner, pool, test, [5], seeds=(0, 1), n_boot=20, keep_models=True)
    a, b = sweep.model(5, 0), sweep.model(5, 1)
    assert not torch.equal(a.head.weight, b.head.weight)
    draws = []

    def factory():  # records the first random number of each initialisation
        draws.append(torch.rand(1).item())
        return small_cnn(1, 3, width=4)

    budget_sweep(supervised(factory, epochs=1, min_steps=1, batch_size=8), pool, test, [2], seeds=(3, 4), n_boot=5)
    expected = [torch.Generator().manual_seed(s) for s in (3, 4)]
    assert draws[1:] == [torch.rand(1, generator=g).item() for g in expected]  # draws[0]: the config fingerprint
    again = budget_sweep(learner, pool, test, [5], seeds=(0,), n_boot=20)
    np.testing.assert_array_equal(again.probs[0, 0], sweep.probs[0, 0])  # and repeats exactly
    # a module is fine-tuned from a copy: the original keeps its weights
    torch.manual_seed(0)
    net = small_cnn(1, 3, width=4)
    before = net.head.weight.clone()
    budget_sweep(FineTune(net, epochs=1, min_steps=2, batch_size=8), pool, test, [2], seeds=(0,), n_boot=10)
    assert torch.equal(net.head.weight, before)


def test_learner_configs_tell_different_weights_apart():
    torch.manual_seed(0)
    a = small_cnn(1, 3, width=4)
    torch.manual_seed(1)
    b = small_cnn(1, 3, width=4)
    assert FineTune(a).config() != FineTune(b).config()
    assert FineTune(lambda: a).config() != FineTune(lambda: b).config()  # factories closing over other weights
    assert FineTune(a).config() == FineTune(a).config()
    assert FineTune(a, lr=1e-3).config() != FineTune(a).config()


def test_frozen_features_probe_and_ensemble(data):
    pool, val, test = data
    torch.manual_seed(0)
    encoder = small_cnn(1, 0, width=4).eval()
    probe = FrozenFeatures(encoder, lambda: LogisticRegression(max_iter=500), name="logreg")
    lin = LinearProbe(encoder, epochs=3)
    sweep = budget_sweep(probe, pool, test, [5], seeds=(0, 1), n_boot=20)
    assert np.allclose(sweep.probs.sum(-1), 1)
    ens = Ensemble([probe, lin], weights="val")
    out = budget_sweep(ens, pool, test, [5], seeds=(0,), val=val, n_boot=20, keep_models=True)
    w = out.model(5)["weights"]
    assert len(w) == 2 and sum(w) == pytest.approx(1)
    equal = budget_sweep(Ensemble([probe, lin]), pool, test, [5], seeds=(0,), n_boot=20, keep_models=True)
    assert equal.model(5)["weights"] == [0.5, 0.5]
    p_probe = budget_sweep(probe, pool, test, [5], seeds=(0,), n_boot=20).probs[0, 0]
    p_lin = budget_sweep(lin, pool, test, [5], seeds=(0,), n_boot=20).probs[0, 0]
    np.testing.assert_allclose(equal.probs[0, 0], (p_probe + p_lin) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([probe])


def test_an_ensemble_of_identical_models_is_the_model(data):
    pool, val, test = data
    torch.manual_seed(0)
    encoder = small_cnn(1, 0, width=4).eval()
    probe = FrozenFeatures(encoder, lambda: LogisticRegression(max_iter=500), name="logreg")
    single = budget_sweep(probe, pool, test, [5], seeds=(0, 1), n_boot=20)
    twice = budget_sweep(Ensemble([probe, probe]), pool, test, [5], seeds=(0, 1), n_boot=20)
    np.testing.assert_allclose(twice.probs, single.probs, atol=1e-12)
    averaged = average_sweeps([single, single], n_boot=20)
    np.testing.assert_allclose(averaged.probs, single.probs, atol=1e-12)
    for m in single.metrics:
        assert averaged.metrics[m] == single.metrics[m] and np.array_equal(averaged.per_seed[m], single.per_seed[m])


def test_average_sweeps_weights_members_and_refuses_mismatches(data):
    pool, val, test = data
    torch.manual_seed(0)
    encoder = small_cnn(1, 0, width=4).eval()
    a = budget_sweep(FrozenFeatures(encoder, lambda: LogisticRegression(max_iter=500), name="lr"), pool, test, [5],
                     seeds=(0, 1), n_boot=20)
    b = budget_sweep(LinearProbe(encoder, epochs=2), pool, test, [5], seeds=(0, 1), n_boot=20)
    ens = average_sweeps([a, b], weights=[0.25, 0.75], name="mix", n_boot=20)
    np.testing.assert_allclose(ens.probs, 0.25 * a.probs + 0.75 * b.probs)
    assert ens.name == "mix" and ens.config["weights"] == [0.25, 0.75] and len(ens.config["members"]) == 2
    other = budget_sweep(LinearProbe(encoder, epochs=2), pool, test, [5], seeds=(0, 2), n_boot=20)
    with pytest.raises(ValueError, match="differ in budgets, seeds or test labels"):
        average_sweeps([a, other])
    with pytest.raises(ValueError, match="summing to 1"):
        average_sweeps([a, b], weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="at least two"):
        average_sweeps([a])


def test_collapsed_flags_near_constant_predictors():
    assert collapsed(np.eye(3)[[1] * 95 + [0] * 5])
    assert not collapsed(np.eye(3)[[0, 1, 2] * 10])
    assert not collapsed(np.eye(2)[[0] * 80 + [1] * 20])
    truth = np.array([0] * 92 + [1] * 8)  # a test set that is mostly one class
    assert not collapsed(np.eye(2)[[0] * 93 + [1] * 7], truth)  # a good model predicts mostly that class too
    assert collapsed(np.eye(2)[[0] * 100], np.array([0] * 50 + [1] * 50))
    assert collapsed(np.eye(2)[[0] * 100], truth[:0].tolist() or None)


def test_a_model_with_the_wrong_input_channels_fails_early_with_a_clear_message(data):
    pool, _, test = data
    with pytest.raises(ValueError, match=r"3 input channels.*1 channel"):
        budget_sweep(supervised(lambda: small_cnn(3, 3, width=4), epochs=1, min_steps=1), pool, test, [2],
                     seeds=(0,), n_boot=5)


def test_a_refit_that_predicts_differently_from_the_cache_warns(data, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    pool, _, test = data
    learner = supervised(lambda: small_cnn(1, 3, width=4), epochs=1, min_steps=2, batch_size=8)
    budget_sweep(learner, pool, test, [2], seeds=(0,), n_boot=5, cache=True)
    again = budget_sweep(learner, pool, test, [2], seeds=(0,), n_boot=5, cache=True, keep_models=True)
    again.refits[(2, 0)].__defaults__[3][:] = 0.5  # as if another machine had written the cache
    with pytest.warns(UserWarning, match="predicts differently from the cached run"):
        again.model(2, 0)
