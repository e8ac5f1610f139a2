import numpy as np
import pytest

from medmae_nb.baselines import budget_curve
from medmae_nb.data import label_budget, make_phantom_splits
from medmae_nb.models.cnn import small_cnn


@pytest.fixture(scope="module")
def data():
    ds = make_phantom_splits(90, 0, 45, image_size=32, seed=1)
    return ds.get_split("train"), ds.get_split("test")


def test_budget_curve_shapes_and_intervals(data):
    train, test = data
    calls = []

    def fit(model, subset, **kw):
        calls.append((len(subset), kw["epochs"], kw["batch_size"], kw["lr"]))
        return model.eval(), None

    curve = budget_curve(train, test, [2, 5], repeats=2, epochs=1, min_steps=4, batch_size=4, fit=fit,
                         fit_kwargs={"lr": 0.5}, n_boot=30, keep_models=True,
                         make_model=lambda: small_cnn(1, 3, width=4))
    assert curve.budgets == [2, 5] and curve.n_train == [6, 15]
    assert curve.probs.shape == (2, 2, len(test), 3) and np.array_equal(curve.y_test, test.labels)
    assert set(curve.models) == {2, 5}
    # Every run is long enough: at least min_steps steps, i.e. epochs * ceil(n / batch) >= 4.
    assert [c[:3] for c in calls] == [(6, 2, 4), (6, 2, 4), (15, 1, 4), (15, 1, 4)] and calls[0][3] == 0.5
    for m in ("bal_acc", "acc", "auc"):
        for i, ci in enumerate(curve.metrics[m]):
            assert ci.low <= ci.value <= ci.high
            assert ci.value == pytest.approx(curve.per_repeat[m][i].mean())
    assert "labels/class" in curve.table()


def test_budget_curve_trains_real_models_and_repeats_are_seeded(data):
    train, test = data
    a = budget_curve(train, test, [5], repeats=1, epochs=1, min_steps=2, n_boot=10,
                     make_model=lambda: small_cnn(1, 3, width=4))
    b = budget_curve(train, test, [5], repeats=1, epochs=1, min_steps=2, n_boot=10,
                     make_model=lambda: small_cnn(1, 3, width=4))
    np.testing.assert_array_equal(a.probs, b.probs)


def test_budget_uses_nested_label_draws(data):
    train, _ = data
    small, big = set(label_budget(train.labels, 2, seed=3)), set(label_budget(train.labels, 5, seed=3))
    assert small < big
