"""Tests for medmae_nb.classical: DINO's weighted k-NN, Nielsen et al.'s pipelines, the shared feature memo, budgets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import PowerTransformer
from torch import nn

from medmae_nb.budgets import FeatureMemo, budget_sweep
from medmae_nb.classical import (
    NIELSEN_BUDGETS,
    CappedKNeighborsClassifier,
    MemoPowerTransformer,
    SeededPipeline,
    WeightedKNN,
    budgets_for,
    classical_learners,
    knn_pipeline,
    logreg_pipeline,
    svm_pipeline,
)
from medmae_nb.data import DataError, ImageDataset, label_budget, make_phantom_splits
from medmae_nb.inference import extract_features, feature_fn
from medmae_nb.models.cnn import small_cnn

PIPELINES = {"svm": svm_pipeline, "logreg": logreg_pipeline, "knn": lambda: knn_pipeline(3)}


@pytest.fixture(scope="module")
def data():
    ds = make_phantom_splits(90, 0, 45, image_size=32, seed=1)
    return ds.get_split("train"), ds.get_split("test")


class CountingEncoder(nn.Module):
    """An encoder that records the size of every batch it encodes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        return feature_fn(self.inner)(x)


def naive_weighted_knn(train: np.ndarray, y: np.ndarray, test: np.ndarray, k: int, t: float) -> np.ndarray:
    """DINO's vote, one test sample at a time, as the definition reads."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    classes = np.unique(y)
    out = []
    for q in test:
        sims = train @ (q / np.linalg.norm(q))
        top = np.argsort(-sims, kind="stable")[: min(k, len(train))]
        votes = np.array([np.exp(sims[top][y[top] == c] / t).sum() for c in classes])
        out.append(votes / votes.sum())
    return np.array(out)


# ------------------------------------------------------------------------------------------------- weighted k-NN
TOY_X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
TOY_Y = np.array([0, 1, 0, 1])


def test_weighted_knn_matches_hand_computed_probabilities():
    # the query (3, 0) has cosine similarities 1, 0, 1/sqrt(2), -1 to the four training points
    s = np.sqrt(0.5)
    knn = WeightedKNN(k=3, temperature=1.0).fit(TOY_X, TOY_Y)
    p = knn.predict_proba([[3.0, 0.0]])
    # top 3: the points of similarity 1 (class 0), 1/sqrt(2) (class 0) and 0 (class 1)
    p0 = (np.e + np.exp(s)) / (np.e + np.exp(s) + 1.0)
    np.testing.assert_allclose(p, [[p0, 1 - p0]], rtol=1e-12)
    assert knn.predict([[3.0, 0.0]]).tolist() == [0] and knn.n_neighbors_ == 3
    # the query (0, 2): similarities 0, 1, 1/sqrt(2), 0; with k = 2 the two nearest are 1 (class 1) and 0.707 (class 0)
    p = WeightedKNN(k=2, temperature=0.5).fit(TOY_X, TOY_Y).predict_proba([[0.0, 2.0]])
    p1 = np.exp(1 / 0.5) / (np.exp(1 / 0.5) + np.exp(s / 0.5))
    np.testing.assert_allclose(p, [[1 - p1, p1]], rtol=1e-12)


def test_weighted_knn_caps_k_at_the_training_set():
    knn = WeightedKNN(k=20, temperature=1.0).fit(TOY_X, TOY_Y)
    assert knn.n_neighbors_ == 4 and knn.k == 20  # the parameter is kept, the cap is recorded
    s = np.sqrt(0.5)
    votes0, votes1 = np.e + np.exp(s), np.exp(0.0) + np.exp(-1.0)  # all four vote for the query (1, 0)
    np.testing.assert_allclose(knn.predict_proba([[1.0, 0.0]]), [[votes0 / (votes0 + votes1),
                                                                   votes1 / (votes0 + votes1)]], rtol=1e-12)


@pytest.mark.parametrize("n_test", [1, 5, 8, 45])
@pytest.mark.parametrize("chunk_size", [1, 8, 1000])
def test_weighted_knn_in_chunks_equals_the_unchunked_vote(n_test, chunk_size):
    rng = np.random.default_rng(n_test)
    train, y = rng.normal(size=(30, 6)), rng.integers(0, 3, 30)
    test = rng.normal(size=(n_test, 6))
    p = WeightedKNN(k=7, temperature=0.07, chunk_size=chunk_size).fit(train, y).predict_proba(test)
    np.testing.assert_allclose(p, naive_weighted_knn(train, y, test, 7, 0.07), rtol=1e-9, atol=1e-12)
    assert p.shape == (n_test, 3) and np.allclose(p.sum(1), 1)


def test_weighted_knn_keeps_labels_and_refuses_bad_input():
    knn = WeightedKNN(k=2).fit(TOY_X, np.array([7, 2, 7, 2]))
    assert knn.classes_.tolist() == [2, 7] and knn.predict([[1.0, 0.1]]).tolist() == [7]
    assert knn.predict_proba(np.zeros((0, 2))).shape == (0, 2)
    with pytest.raises(NotFittedError):
        WeightedKNN().predict_proba(TOY_X)
    with pytest.raises(ValueError, match="same encoder"):
        knn.predict_proba(np.ones((2, 3)))
    with pytest.raises(ValueError, match="k must be a whole number"):
        WeightedKNN(k=0).fit(TOY_X, TOY_Y)
    with pytest.raises(ValueError, match="temperature"):
        WeightedKNN(temperature=0).fit(TOY_X, TOY_Y)
    with pytest.raises(ValueError, match="one label per feature row"):
        WeightedKNN().fit(TOY_X, TOY_Y[:3])
    with pytest.raises(ValueError, match="2-D array"):
        WeightedKNN().fit(np.ones(4), TOY_Y)


def test_a_zero_feature_vector_gets_a_defined_vote():
    p = WeightedKNN(k=4, temperature=0.07).fit(TOY_X, TOY_Y).predict_proba(np.zeros((1, 2)))
    np.testing.assert_allclose(p, [[0.5, 0.5]])  # similarity 0 to all: equal votes


# ----------------------------------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("per_class", [1, 2, 30])
def test_pipelines_give_probabilities_in_label_order(name, per_class):
    # 64 features: with 1 or 2 labels per class there are fewer samples than features (and PCA components)
    rng = np.random.default_rng(per_class)
    y = np.repeat([2, 0, 1], per_class)  # labels not sorted in the training set
    X = rng.normal(size=(len(y), 64)) + y[:, None]
    X[:, 0] = 0.0  # a constant feature (a dead ReLU unit)
    pipe = PIPELINES[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence, deprecation or numerical warning escapes
        pipe.set_params(random_state=0).fit(X, y)
        p = pipe.predict_proba(rng.normal(size=(10, 64)) + 1)
    assert pipe.classes_.tolist() == [0, 1, 2]
    assert p.shape == (10, 3) and np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    assert pipe.named_steps["pca"].n_components_ == min(len(y), 64)


def test_pipelines_follow_nielsen_et_al():
    svc = svm_pipeline().named_steps["svc"]
    assert (svc.C, svc.kernel, svc.gamma, svc.class_weight, svc.probability) == (1.0, "rbf", "scale", "balanced", True)
    lr = logreg_pipeline().named_steps["logreg"]
    assert (lr.C, lr.class_weight, lr.max_iter) == (2.5, "balanced", 10000)
    for make in PIPELINES.values():
        pipe = make()
        power, pca = pipe.named_steps["power"], pipe.named_steps["pca"]
        assert isinstance(power, PowerTransformer) and isinstance(pca, PCA)
        assert (power.method, power.standardize, pca.n_components, pca.whiten) == ("yeo-johnson", True, None, False)
    assert knn_pipeline(4).named_steps["knn"].weights == "distance"


def test_the_pipeline_seed_reaches_the_svm_and_makes_it_reproducible():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 8)), np.arange(30) % 3
    assert "random_state" in svm_pipeline().get_params()  # what FrozenFeatures sets
    a = svm_pipeline().set_params(random_state=4).fit(X, y)
    assert a.named_steps["svc"].random_state == 4 and a.named_steps["pca"].random_state == 4
    b = svm_pipeline().set_params(random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    unseeded = SeededPipeline([("svc", svm_pipeline().named_steps["svc"])]).fit(X, y)
    assert unseeded.named_steps["svc"].random_state is None


def test_the_power_transform_is_fitted_once_per_training_set_and_gives_a_fresh_fit_s_values(monkeypatch):
    calls = []
    optimise = PowerTransformer._yeo_johnson_optimize
    monkeypatch.setattr(PowerTransformer, "_yeo_johnson_optimize", lambda self, x: calls.append(1) or optimise(self, x))
    rng = np.random.default_rng(11)
    X, y, T = rng.exponential(size=(24, 6)), np.arange(24) % 3, rng.exponential(size=(5, 6))
    fitted = [make().fit(X, y) for make in PIPELINES.values()]
    assert len(calls) == 6  # one fit of the six features for all three pipelines
    plain = PowerTransformer().fit(X)
    for pipe in fitted:
        np.testing.assert_array_equal(pipe.named_steps["power"].transform(T), plain.transform(T))
        np.testing.assert_array_equal(pipe.named_steps["power"].lambdas_, plain.lambdas_)
    MemoPowerTransformer(standardize=False).fit(X)  # other parameters: fitted again
    MemoPowerTransformer().fit(X + 1)  # other data: fitted again
    assert len(calls) == 6 + 6 + 12  # the plain PowerTransformer fitted too
    monkeypatch.setattr(MemoPowerTransformer, "max_fits", 2)
    for shift in range(4):
        MemoPowerTransformer().fit(X + 10 + shift)
    assert len(MemoPowerTransformer._fits) == 2  # bounded: the oldest fits are dropped


def test_a_scikit_learn_without_svm_probabilities_gets_a_clear_error(monkeypatch):
    class NoProbabilitySVC:
        def get_params(self):
            return {"C": 1.0}

    monkeypatch.setattr("medmae_nb.classical.SVC", NoProbabilitySVC)
    with pytest.raises(RuntimeError, match="scikit-learn<1.11"):
        svm_pipeline()


@pytest.mark.parametrize("n_train, expected_k", [(3, 3), (14, 14), (15, 15), (40, 15)])
def test_knn_uses_five_neighbours_per_class_capped_at_the_training_set(n_train, expected_k):
    rng = np.random.default_rng(n_train)
    X, y = rng.normal(size=(n_train, 5)), np.arange(n_train) % 3
    pipe = knn_pipeline(3).fit(X, y)
    knn = pipe.named_steps["knn"]
    assert knn.n_neighbors == 15 and knn.n_neighbors_ == expected_k and knn.knn_.n_neighbors == expected_k
    assert np.allclose(pipe.predict_proba(X).sum(1), 1)
    with pytest.raises(ValueError, match="n_classes must be a whole number"):
        knn_pipeline(0)
    with pytest.raises(ValueError, match="0 samples"):
        CappedKNeighborsClassifier().fit(np.zeros((0, 2)), [])


# ----------------------------------------------------------------------------------------------------- budgets
def test_budgets_for_drops_the_budgets_the_pool_cannot_give():
    labels = np.repeat([0, 1, 2], [300, 120, 40])
    kept = budgets_for(labels)
    assert kept == [1, 5, 10, 25, 50, 100, 250] and NIELSEN_BUDGETS[-1] == 1000
    n_train = [len(label_budget(labels, b, warn=False)) for b in kept]
    assert all(a < b for a, b in zip(n_train, n_train[1:]))  # every kept budget adds labels
    assert budgets_for(np.repeat([0, 1], 1100)) == list(NIELSEN_BUDGETS)
    assert budgets_for(labels, [300, 5, 301]) == [300, 5]  # the given order is kept; the largest class fits
    pool = ImageDataset(np.zeros((6, 1, 2, 2), np.float32), np.array([0, 0, 0, 0, 1, 1]), ("a", "b"))
    assert budgets_for(pool) == [1]
    with pytest.raises(DataError, match="largest class has 4 labels"):
        budgets_for(pool, [5, 10])
    with pytest.raises(DataError, match="whole numbers >= 1"):
        budgets_for(pool, [0, 1])
    with pytest.raises(DataError, match="no labels"):
        budgets_for(np.array([], dtype=int))


# ------------------------------------------------------------------------------------------- learners in a sweep
def test_feature_memo_encodes_each_image_once_and_matches_extract_features(data):
    pool, _ = data
    torch.manual_seed(0)
    enc = CountingEncoder(small_cnn(1, 0, width=4))
    memo = FeatureMemo()
    a = memo(enc, pool.subset([4, 1, 2]), None)
    b = memo(enc, pool.subset([2, 3, 1, 3]), None)  # one new image (3), repeated
    assert sum(enc.batches) == 4 and memo.images_encoded == 4
    full = extract_features(enc, pool)
    np.testing.assert_allclose(a, full[[4, 1, 2]], atol=1e-5)
    np.testing.assert_allclose(b, full[[2, 3, 1, 3]], atol=1e-5)
    with torch.no_grad():
        next(enc.parameters()).mul_(2)
    enc.batches.clear()
    memo(enc, pool.subset([4, 1]), None)  # changed weights: encoded again
    assert enc.batches == [2]
    flipped = pool.subset([4, 1])
    flipped.transform = lambda x: x.flip(-1)
    memo(enc, flipped, None)  # another transform: encoded again
    assert enc.batches == [2, 2]


def test_feature_memo_keeps_datasets_without_an_image_array_whole():
    torch.manual_seed(0)
    enc = CountingEncoder(small_cnn(1, 0, width=4))
    ds = torch.utils.data.TensorDataset(torch.rand(5, 1, 16, 16), torch.zeros(5))
    memo = FeatureMemo()
    first, second = memo(enc, ds, None), memo(enc, ds, None)
    assert first.shape[0] == 5 and second is first and sum(enc.batches) == 5 and memo.images_encoded == 5


def test_classical_learners_sweep_with_one_shared_memo(data):
    pool, test = data
    torch.manual_seed(0)
    enc = CountingEncoder(small_cnn(1, 0, width=4)).eval()
    learners = classical_learners(enc, n_classes=3)
    assert list(learners) == ["SVM", "logistic regression", "kNN (5×classes)", "weighted kNN (DINO)"]
    assert len({id(learner.memo) for learner in learners.values()}) == 1
    metrics = ("bal_acc", "acc", "auc", "f1")
    sweeps = {name: budget_sweep(learner, pool, test, [1, 5], seeds=(0, 1, 2), metrics=metrics, n_boot=50)
              for name, learner in learners.items()}
    # every image (the labelled ones of all budgets and seeds, and the test set) went through the encoder once
    used = set().union(*(label_budget(pool.labels, b, seed=s, warn=False) for b in (1, 5) for s in (0, 1, 2)))
    assert sum(enc.batches) == len(used) + len(test)
    for name, sweep in sweeps.items():
        assert sweep.name == name and sweep.n_train == [3, 15]
        assert np.isfinite(sweep.probs).all() and np.allclose(sweep.probs.sum(-1), 1)
        for m in metrics:
            assert np.isfinite(sweep.per_seed[m]).all(), (name, m)
            assert all(np.isfinite([ci.value, ci.low, ci.high]).all() for ci in sweep.metrics[m])
    for s in (0, 1, 2):  # nested label sets
        assert set(label_budget(pool.labels, 1, seed=s)) < set(label_budget(pool.labels, 5, seed=s))
    # a second sweep encodes nothing, and a seed gives the same result again
    enc.batches.clear()
    again = budget_sweep(learners["SVM"], pool, test, [1, 5], seeds=(0, 1, 2), metrics=metrics, n_boot=50)
    assert enc.batches == []
    np.testing.assert_array_equal(again.probs, sweeps["SVM"].probs)
    with pytest.raises(ValueError, match="n_classes must be a whole number"):
        classical_learners(enc, n_classes=0)


def test_power_transform_clips_to_the_training_range_only_where_it_would_overflow():
    from medmae_nb.classical import MemoPowerTransformer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 2))
    t = MemoPowerTransformer().fit(X)
    inside = rng.normal(size=(5, 2)) * 0.5
    assert np.array_equal(t.transform(inside), PowerTransformer().fit(X).transform(inside))  # untouched
    t.lambdas_ = np.array([300.0, t.lambdas_[1]])  # a lambda fitted on a few samples: x**300 overflows far out
    far = np.array([[1e4, 0.0], [0.1, 0.2]])
    out = t.transform(far)
    assert np.isfinite(out).all()
    assert np.array_equal(out, t.transform(np.clip(far, X.min(0), X.max(0))))


# ------------------------------------------------------------------------------- degenerate features of real data
def _degenerate_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Training features with the columns real encoders give: a dead unit, a constant, a spread of 1e-9 around 1
    (Yeo-Johnson's lambda runs off to about 26 on it), two ordinary columns and the first of them again."""
    ordinary = rng.normal(size=(n, 2))
    return np.column_stack([np.zeros(n), np.full(n, 3.0), 1.0 + 1e-9 * rng.normal(size=n), ordinary, ordinary[:, 0]])


def test_power_transform_of_constant_and_near_constant_features_stays_finite_and_bounded():
    rng = np.random.default_rng(3)
    X = _degenerate_features(rng, 12)
    far = np.column_stack([rng.normal(size=(6, 3)) * 5, rng.normal(size=(6, 2))])
    far = np.column_stack([far, far[:, 3]])  # the duplicated column again
    t = MemoPowerTransformer().fit(X)
    out = t.transform(far)
    assert np.isfinite(out).all() and np.abs(out).max() < 100  # the near-constant column gave ~1e12
    assert t.constant_features_.tolist() == [True, True, False, False, False, False]
    np.testing.assert_array_equal(out[:, :2], 0.0)  # constant on the labelled set: carries nothing, adds nothing
    np.testing.assert_array_equal(t.lambdas_[:2], 1.0)  # the identity, whatever the scikit-learn version
    np.testing.assert_array_equal(t.transform(X)[:, :2], 0.0)
    np.testing.assert_array_equal(out[:, 3], out[:, 5])  # a duplicated column is transformed alike
    # the near-constant column: each far value is transformed as the nearest training value
    np.testing.assert_array_equal(out[:, 2], t.transform(np.clip(far, X.min(0), X.max(0)))[:, 2])
    # the ordinary columns are what scikit-learn gives them: clipping touches no other element
    np.testing.assert_allclose(out[:, 3:5], PowerTransformer().fit(X[:, 3:5]).transform(far[:, 3:5]), rtol=1e-12)
    # without standardisation a constant passes through unchanged (lambda = 1: x + 1 - 1, up to rounding)
    raw = MemoPowerTransformer(standardize=False).fit(X)
    np.testing.assert_allclose(raw.transform(far)[:, :2], far[:, :2], rtol=1e-12, atol=1e-12)
    assert np.isfinite(raw.transform(far)).all()


def test_power_transform_treats_float32_rounding_noise_as_a_constant():
    # an encoder's float32 features of one unit can differ in the last bits between batches: no information
    rng = np.random.default_rng(4)
    noisy = np.float32(3.7) + np.float32(3e-7) * rng.normal(size=10).astype(np.float32)
    X = np.column_stack([noisy, rng.normal(size=10)]).astype(np.float32)
    assert np.ptp(X[:, 0]) > 0
    t = MemoPowerTransformer().fit(X)
    assert t.constant_features_.tolist() == [True, False]
    out = t.transform(np.array([[5.0, 0.1], [-1.0, 0.2]], np.float32))
    np.testing.assert_array_equal(out[:, 0], 0.0)
    assert np.isfinite(out).all() and np.abs(out).max() < 10


def test_power_transform_clips_only_the_elements_that_overflow():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 2))
    t = MemoPowerTransformer().fit(X)
    t.lambdas_ = np.array([300.0, t.lambdas_[1]])
    far = np.array([[1e4, 1.5], [0.1, -3.0]])  # the second column is outside the training range, but transforms fine
    out = t.transform(far)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 1], PowerTransformer().fit(X).transform(far)[:, 1])  # not clipped
    np.testing.assert_array_equal(out[0, 0], t.transform(np.clip(far, X.min(0), X.max(0)))[0, 0])


@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("value", [0.0, 3.0])
def test_pipelines_on_all_constant_features_give_finite_normalised_probabilities_and_say_they_collapsed(name, value):
    # a collapsed encoder (SparK features all zero or all identical): nothing to learn, no crash, no NaN
    y = np.arange(12) % 3
    X, T = np.full((12, 6), value), np.random.default_rng(0).normal(size=(5, 6))
    pipe = PIPELINES[name]().set_params(random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # PCA of all-zero features divided 0 by 0
        pipe.fit(X, y)
        with pytest.warns(UserWarning, match=r"predicted only class 0 for all 5 test samples"):
            p = pipe.predict_proba(T)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1) and np.allclose(p, 1 / 3)
    assert np.isfinite(pipe.named_steps["power"].transform(T)).all()


@pytest.mark.parametrize("value", [0.0, 3.0])
def test_weighted_knn_on_all_constant_features_votes_uniformly(value):
    y = np.array([0, 0, 1, 2, 2, 2])
    queries = np.vstack([np.zeros(5), np.full(5, value), np.arange(5.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        p = WeightedKNN(k=6, temperature=0.07).fit(np.full((6, 5), value), y).predict_proba(queries)
        q = WeightedKNN(k=4, temperature=0.07).fit(np.full((6, 5), value), y).predict_proba(queries)
    np.testing.assert_allclose(p, [[2 / 6, 1 / 6, 3 / 6]] * 3)  # equal similarities: one vote per neighbour
    assert np.isfinite(q).all() and np.allclose(q.sum(1), 1) and np.allclose(4 * q, np.round(4 * q))


def test_knn_on_all_zero_features_votes_uniformly_among_the_neighbours():
    y = np.array([0, 0, 0, 1, 2])
    knn = CappedKNeighborsClassifier(5).fit(np.zeros((5, 4)), y)
    for query in (np.zeros((1, 4)), np.ones((1, 4))):  # every neighbour at distance 0, or all at the same distance
        np.testing.assert_allclose(knn.predict_proba(query), [[0.6, 0.2, 0.2]])
        assert knn.predict(query).tolist() == [0]


@pytest.mark.parametrize("distance", [np.inf, np.nan])
def test_knn_weights_that_are_all_zero_or_not_finite_fall_back_to_uniform_votes(distance):
    # 1 / inf = 0 for every neighbour made scikit-learn refuse the row; 1 / nan gave NaN probabilities
    X, y = np.arange(8.0).reshape(4, 2), np.array([0, 0, 1, 2])
    knn = CappedKNeighborsClassifier(4, metric=lambda a, b: distance).fit(X, y)
    p = knn.predict_proba(X[:2])
    np.testing.assert_allclose(p, [[0.5, 0.25, 0.25]] * 2)
    assert knn.predict(X[:2]).tolist() == [0, 0]


def test_duplicate_training_rows_and_features_give_no_nan():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(6, 4))
    X = np.vstack([base, base[:3]])  # three training rows twice: distance 0 between them
    X = np.column_stack([X, X[:, :2]])  # and two columns twice
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    knn = CappedKNeighborsClassifier(6).fit(X, y)
    p = knn.predict_proba(X)  # each training row is its own (duplicated) neighbour at distance 0
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    np.testing.assert_array_equal(knn.predict(X), y)
    w = WeightedKNN(k=6).fit(X, y).predict_proba(X)
    assert np.isfinite(w).all() and np.allclose(w.sum(1), 1)
    for name, make in PIPELINES.items():
        q = make().set_params(random_state=0).fit(X, y).predict_proba(X)
        assert np.isfinite(q).all() and np.allclose(q.sum(1), 1), name


def test_weighted_knn_with_non_finite_features_falls_back_to_finite_votes():
    X, y = np.array([[1.0, 0.0], [0.0, 1.0], [np.inf, 1.0], [np.nan, 0.0]]), np.array([0, 1, 1, 0])
    knn = WeightedKNN(k=4, temperature=0.07).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        p = knn.predict_proba(np.array([[1.0, 0.1], [np.nan, 1.0]]))
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    assert p[0, 0] > 0.99  # the finite neighbours still vote by similarity; the others vote nothing
    np.testing.assert_allclose(p[1], [0.5, 0.5])  # no finite similarity at all: uniform over the 4 neighbours


# -------------------------------------------------------------------------------------------- collapsed classifiers
def _unbalanced(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)  # 20 + 2 labels of noise: Platt scaling puts every sample in class 0
    return rng.normal(size=(22, 16)), np.repeat([0, 1], [20, 2]), rng.normal(size=(30, 16))


def test_a_classifier_that_collapses_to_one_class_says_which_at_what_size_and_for_how_many():
    X, y, T = _unbalanced()
    pipe = svm_pipeline().set_params(random_state=0).fit(X, y)
    with pytest.warns(UserWarning, match=r"SVC \(step 'svc'\) fitted on 22 labelled samples \(class 0: 20, class 1: "
                                         r"2\) predicted only class 0 for all 30 test samples") as record:
        p = pipe.predict_proba(T)
    assert (p.argmax(1) == 0).all() and "more labels" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per fit
        pipe.predict_proba(T)
    pipe.fit(X, y)
    with pytest.warns(UserWarning, match="predicted only class 0 for all 30 test samples"):
        pipe.predict_proba(T)  # a new fit warns again


def test_a_classifier_that_separates_its_labels_does_not_warn_on_a_one_class_test_batch():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 20)
    X = rng.normal(size=(60, 8)) + 3 * y[:, None]
    T = rng.normal(size=(15, 8)) + 3  # all of class 1: a one-class prediction is right
    for name, make in PIPELINES.items():
        pipe = make().set_params(random_state=0).fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert (pipe.predict_proba(T).argmax(1) == 1).all(), name
            assert (pipe.predict(T) == 1).all() and pipe.predict(T[:1]).tolist() == [1]


def test_the_collapse_warning_reaches_a_sweep_through_frozen_features(data):
    pool, test = data
    torch.manual_seed(0)

    class Dead(nn.Module):  # a collapsed encoder: the same features for every image
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 8)

    learner = classical_learners(Dead(), n_classes=3)["SVM"]
    with pytest.warns(UserWarning, match=rf"SVC \(step 'svc'\) fitted on 15 labelled samples .* predicted only "
                                         rf"class 0 for all {len(test)} test samples"):
        sweep = budget_sweep(learner, pool, test, [5], seeds=(0,), metrics=("bal_acc",), n_boot=10)
    assert sweep.collapsed.all() and np.isfinite(sweep.probs).all()


# -------------------------------------------------------------------------------------------------- budgets (cap)
def test_budgets_for_warns_about_a_class_smaller_than_a_budget_and_names_it():
    pool = ImageDataset(np.zeros((38, 1, 2, 2), np.float32), np.repeat([0, 1], [30, 8]), ("benign", "malignant"))
    match = r"class 'malignant' has 8 images.*10, 25 labels per class.*capped at 8"
    with pytest.warns(UserWarning, match=match) as rec:
        kept = budgets_for(pool, [1, 5, 10, 25, 50])
    assert kept == [1, 5, 10, 25] and len(rec) == 1  # the return value is what it was: 50 exceeds every class
    assert "'benign'" not in str(rec[0].message)
    assert np.bincount(pool.labels[label_budget(pool.labels, 25, warn=False)]).tolist() == [25, 8]  # the cap
    with pytest.warns(UserWarning, match=r"class 2 has 3 images.*5 labels per class"):  # labels only: the index
        assert budgets_for(np.repeat([0, 1, 2], [9, 7, 3]), [1, 5]) == [1, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert budgets_for(pool, [1, 5, 8]) == [1, 5, 8]  # every class can give every budget: no warning
        assert budgets_for(pool, [1, 5, 10, 25], warn=False) == [1, 5, 10, 25]


def test_budgets_for_warns_about_a_class_absent_from_the_pool():
    pool = ImageDataset(np.zeros((6, 1, 2, 2), np.float32), np.array([0, 0, 0, 1, 1, 1]), ("a", "b", "c"))
    with pytest.warns(UserWarning, match=r"class 'c' has 0 images"):
        assert budgets_for(pool, [1, 2]) == [1, 2]


# ------------------------------------------------------------------------------- a class absent from the labels
class TwoPixels(nn.Module):
    """Features ``(a, b, 1 - a, 1 - b)`` of the top-left pixel pair: their direction (cosine) and position (Euclidean)
    both tell the classes apart, so every learner separates them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pair = x[:, 0, 0, :2]
        return torch.cat([pair, 1 - pair], dim=1)


def brightness_set(labels: list[int], seed: int = 0) -> ImageDataset:
    """Three classes of 4-px images, class ``k`` about ``(k + 0.5) / 3`` bright, with a little noise."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    images = (y[:, None, None, None] + 0.5) / 3 + rng.normal(0, 0.02, (len(y), 1, 4, 4))
    return ImageDataset(images.clip(0, 1).astype(np.float32), y, ("normal", "benign", "malignant"))


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_frozen_feature_probabilities_keep_the_dataset_s_class_columns_when_a_class_has_no_labels(missing):
    """Column k is class k of the dataset (its class_names), not the k-th class present in a small labelled set: the
    absent class gets probability 0 and the present ones keep their own columns."""
    present = [c for c in range(3) if c != missing]
    train = brightness_set(present * 5)
    test = brightness_set([0, 1, 2] * 2, seed=1)
    for name, learner in classical_learners(TwoPixels(), n_classes=3).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor does a missing class make any learner warn (or collapse)
            p = learner.fit(train, seed=0).predict(test)
        assert p.shape == (len(test), 3), name
        np.testing.assert_allclose(p.sum(1), 1, err_msg=name)
        assert np.all(p[:, missing] == 0), (name, p)
        for c in present:  # an image of a present class is given to that class's own column
            rows = test.labels == c
            assert (p[rows].argmax(1) == c).all(), (name, c, p[rows])


# ----------------------------------------------------------------------------------- k-NN: the distance weights
def inverse_distance_vote(train: np.ndarray, y: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Nielsen et al.'s vote as it reads: the k nearest (Euclidean) training points each vote 1 / distance."""
    out = []
    for q in np.atleast_2d(query):
        dist = np.linalg.norm(train - q, axis=1)
        top = np.argsort(dist, kind="stable")[:k]
        votes = np.array([(1 / dist[top][y[top] == c]).sum() for c in np.unique(y)])
        out.append(votes / votes.sum())
    return np.array(out)


def test_knn_votes_by_inverse_distance_where_a_plain_majority_would_answer_otherwise():
    # the query 0.5 has one class-0 neighbour at 0.5 and two class-1 neighbours at 2.5 and 2.7: a majority of the
    # three says class 1, the 1 / distance votes (2 against 0.4 + 0.37) say class 0
    X, y = np.array([[0.0], [3.0], [3.2]]), np.array([0, 1, 1])
    knn = CappedKNeighborsClassifier(3).fit(X, y)
    assert knn.weights == "distance"  # the default, as Nielsen et al.
    p = knn.predict_proba([[0.5]])
    np.testing.assert_allclose(p, [[2 / (2 + 1 / 2.5 + 1 / 2.7), 1 - 2 / (2 + 1 / 2.5 + 1 / 2.7)]], rtol=1e-12)
    np.testing.assert_allclose(p, inverse_distance_vote(X, y, np.array([0.5]), 3), rtol=1e-12)
    assert knn.predict([[0.5]]).tolist() == [0]
    uniform = CappedKNeighborsClassifier(3, weights="uniform").fit(X, y)  # the documented alternative
    np.testing.assert_allclose(uniform.predict_proba([[0.5]]), [[1 / 3, 2 / 3]])
    assert uniform.predict([[0.5]]).tolist() == [1]


def test_the_knn_pipeline_votes_by_inverse_distance_after_its_pre_processing():
    # 2 classes -> k = 10, capped at the 6 training samples: every sample votes, so a uniform vote would give class
    # 0 (4 of 6) to every query; by 1 / distance a query beside the class-1 samples goes to class 1
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.3, (4, 3)), rng.normal(3, 0.3, (2, 3))])
    y = np.array([0, 0, 0, 0, 1, 1])
    queries = np.vstack([X[4:] + 0.05, X[:2] + 0.05])
    pipe = knn_pipeline(2).set_params(random_state=0).fit(X, y)
    assert pipe.named_steps["knn"].n_neighbors_ == 6
    Z, Zq = pipe[:-1].transform(X), pipe[:-1].transform(queries)  # the power transform and PCA, as fitted
    expected = inverse_distance_vote(Z, y, Zq, 6)
    np.testing.assert_allclose(pipe.predict_proba(queries), expected, rtol=1e-9)
    assert pipe.predict(queries).tolist() == [1, 1, 0, 0]
    assert expected[:2, 1].min() > 0.5  # the test's own check: the weights, not a majority, decide here
