"""Classical classifiers on frozen features: the learners of the DINO chapter's label-budget sweep.

A self-supervised encoder is frozen, every image becomes a feature vector once, and a cheap classifier is fitted on
the features of the few labelled images. Nielsen et al. showed that this is enough to reach the state of the art with
about 100 labels per class; this module holds their three scikit-learn pipelines and DINO's own k-NN monitor:

* :func:`svm_pipeline`, :func:`logreg_pipeline`, :func:`knn_pipeline` — Nielsen et al.'s pipelines, each
  ``PowerTransformer (Yeo-Johnson, standardised) → PCA (all components, no whitening) → classifier``: an RBF SVM with
  Platt-scaled probabilities, a balanced logistic regression, and a distance-weighted k-NN with ``k = 5 × classes``
  (:class:`CappedKNeighborsClassifier` caps ``k`` at the number of training samples, which the 1-label-per-class
  budget needs).
* :class:`WeightedKNN` — DINO's weighted cosine k-NN (``k = 20``, ``T = 0.07``) on L2-normalised features, with no
  pre-processing; not Nielsen et al.'s k-NN (Euclidean, ``1 / distance`` votes, after the pre-processing), hence
  its own name.
* :func:`classical_learners` — the four as :class:`~medmae_nb.budgets.FrozenFeatures` learners for
  :func:`~medmae_nb.budgets.budget_sweep`, sharing one :class:`~medmae_nb.budgets.FeatureMemo`, so every image is
  encoded once for all four learners, all budgets and all seeds.
* :data:`NIELSEN_BUDGETS` and :func:`budgets_for` — the paper's 1…1000 labels per class, cut to what a pool can give.

Two things keep a sweep within the book's CPU budget: :class:`~medmae_nb.budgets.FeatureMemo` (no image is encoded
twice) and :class:`MemoPowerTransformer` (the three pipelines fit the Yeo-Johnson transform of a labelled set once
between them; that fit, not the SVM, is most of a sweep's time on 512-d features up to about 100 labels per class).

Features come from :func:`medmae_nb.inference.extract_features` (timm pre-logits, else pooled features); call it
directly to look at them.

References:
    M. Nielsen, L. Wenderoth, T. Sentker, R. Werner, "Self-Supervision for Medical Image Classification:
    State-of-the-Art Performance with ~100 Labeled Training Samples per Class", Bioengineering 10(8):895, 2023,
    doi:10.3390/bioengineering10080895.

    M. Caron, H. Touvron, I. Misra, H. Jégou, J. Mairal, P. Bojanowski, A. Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers" (DINO), ICCV 2021.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PowerTransformer
from sklearn.svm import SVC
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .budgets import FeatureMemo, FrozenFeatures
from .data.base import DataError

__all__ = [
    "NIELSEN_BUDGETS",
    "CappedKNeighborsClassifier",
    "MemoPowerTransformer",
    "SeededPipeline",
    "WeightedKNN",
    "budgets_for",
    "classical_learners",
    "knn_pipeline",
    "logreg_pipeline",
    "svm_pipeline",
]

NIELSEN_BUDGETS: tuple[int, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
"""Labels per class of Nielsen et al.'s sweep."""

# SVC(probability=True) is deprecated from scikit-learn 1.9 (removal planned for 1.11); it is what Nielsen et al. ran,
# and its libsvm Platt scaling also works with one sample per class, where CalibratedClassifierCV cannot split folds.
_SVC_PROBABILITY_DEPRECATION = "The `probability` parameter was deprecated"


# --------------------------------------------------------------------------------------------------- estimators
class SeededPipeline(Pipeline):
    """A scikit-learn ``Pipeline`` with a ``random_state`` of its own, handed to every step that has one at fit.

    :class:`~medmae_nb.budgets.FrozenFeatures` seeds a classifier through ``set_params(random_state=seed)``, which a
    plain ``Pipeline`` does not take (its steps' seeds are ``svc__random_state`` and so on); this subclass takes it,
    so each seed of a sweep also seeds the SVM's Platt-scaling folds.

    It also says when the fitted classifier has collapsed: the first time after a fit that ``predict_proba`` (argmax)
    or ``predict`` gives one class for all of at least two samples, and the classifier gives that one class for all
    of its own labelled samples too (of two classes or more), a ``UserWarning`` names the classifier, the labelled
    set's size and classes, and the class. A collapsed model (e.g. the SVM's Platt scaling on an unbalanced budget,
    or features that are all alike) scores like a constant; the sweep flags such runs
    (:func:`~medmae_nb.budgets.collapsed`), and the warning says so when and where it happens. A classifier that
    still tells its labelled samples apart does not warn: one class for a batch of one class is right.

    Args:
        steps: ``(name, estimator)`` pairs, as for ``Pipeline``.
        random_state: None keeps the steps' own seeds; an int overrides them at fit.
        memory: as for ``Pipeline``.
        verbose: as for ``Pipeline``.

    Example:
        >>> pipe = SeededPipeline([("pca", PCA()), ("lr", LogisticRegression())], random_state=3)
        >>> X, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 2
        >>> pipe.fit(X, y).named_steps["pca"].random_state
        3
    """

    def __init__(self, steps: list[tuple[str, Any]], *, random_state: int | None = None, memory: Any = None,
                 verbose: bool = False) -> None:
        self.random_state = random_state
        super().__init__(steps, memory=memory, verbose=verbose)

    def fit(self, X: Any, y: Any = None, **params: Any) -> SeededPipeline:
        """Seeds the steps with ``random_state`` (when set) and fits the pipeline."""
        if self.random_state is not None:
            for _, step in self.steps:
                if hasattr(step, "get_params") and "random_state" in step.get_params(deep=False):
                    step.set_params(random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SVC_PROBABILITY_DEPRECATION, category=FutureWarning)
            # PCA of features that are all constant divides a total variance of 0 by itself for its (unused)
            # explained_variance_ratio_; the components and the transform are fine (all zero)
            warnings.filterwarnings("ignore", message="invalid value encountered in divide", category=RuntimeWarning,
                                    module=r"sklearn\.decomposition")
            super().fit(X, y, **params)
        # what the collapse check needs: the labelled samples (a reference, not a copy) and their classes
        self._fit_X, self._fit_y = X, np.asarray(y).reshape(-1)
        self._collapsed_on_labels: dict[str, bool] = {}  # per prediction method, filled when a check asks
        self._collapse_warned = False
        return self

    @available_if(lambda self: hasattr(self._final_estimator, "predict_proba"))
    def predict_proba(self, X: Any, **params: Any) -> np.ndarray:
        """Class probabilities, as ``Pipeline.predict_proba``; warns (once per fit) when the classifier collapsed."""
        p = super().predict_proba(X, **params)
        self._warn_if_collapsed(np.asarray(p).argmax(axis=1), "predict_proba",
                                lambda Z: np.asarray(super(SeededPipeline, self).predict_proba(Z)).argmax(axis=1))
        return p

    @available_if(lambda self: hasattr(self._final_estimator, "predict"))
    def predict(self, X: Any, **params: Any) -> np.ndarray:
        """Class labels, as ``Pipeline.predict``; warns (once per fit) when the classifier collapsed."""
        pred = super().predict(X, **params)
        classes = getattr(self, "classes_", None)
        if classes is not None:  # labels to class indices (classes_ is sorted)
            self._warn_if_collapsed(np.searchsorted(classes, pred), "predict",
                                    lambda Z: np.searchsorted(classes, super(SeededPipeline, self).predict(Z)))
        return pred

    def _warn_if_collapsed(self, predicted: np.ndarray, method: str,
                           predict_index: Callable[[Any], np.ndarray]) -> None:
        """Warns when ``predicted`` (class indices) is one class and ``method`` also gives the labelled samples one
        class; the labelled samples are predicted only then, once per fit and method."""
        classes = getattr(self, "classes_", None)
        if (getattr(self, "_collapse_warned", True) or classes is None or len(classes) < 2 or len(predicted) < 2
                or not (predicted == predicted[0]).all()):
            return  # warned already (or fitted elsewhere), one class to learn, one sample, or several classes
        if method not in self._collapsed_on_labels:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the labelled samples' own predictions are no news
                own = predict_index(self._fit_X)
            self._collapsed_on_labels[method] = bool((own == own[0]).all())
        if not self._collapsed_on_labels[method]:
            return  # it tells its labelled samples apart: a batch of one class may well be one class
        self._collapse_warned = True
        labels, counts = np.unique(self._fit_y, return_counts=True)
        name, step = type(self._final_estimator).__name__, self.steps[-1][0]
        shown = ", ".join(f"class {_label(c)}: {int(n)}" for c, n in zip(labels, counts))
        warnings.warn(f"{name} (step {step!r}) fitted on {len(self._fit_y)} labelled samples ({shown}) predicted "
                      f"only class {_label(classes[predicted[0]])} for all {len(predicted)} test samples, and one "
                      "class for all its labelled samples too: it has collapsed, and scores like a constant "
                      "(balanced accuracy 1/classes). Usual causes: an unbalanced labelled set (a budget above the "
                      "smallest class), features that are all alike (a collapsed encoder), or the SVM's Platt "
                      "scaling on few samples (compare SVC.predict). Give the small classes more labels, keep the "
                      "budget within the smallest class (budgets_for warns about it), or check the features' spread",
                      UserWarning, stacklevel=3)


def _label(c: Any) -> str:
    """A class label as a message shows it: ``0`` for a (NumPy) integer, ``'benign'`` for a string."""
    return repr(c.item() if isinstance(c, np.generic) else c)


class MemoPowerTransformer(PowerTransformer):
    """scikit-learn's ``PowerTransformer``, which reuses its fit when it meets training features it has seen, and
    keeps degenerate features finite.

    Fitting Yeo-Johnson optimises one ``λ`` per feature with a scalar search, about 2–4 ms per feature whatever the
    number of samples: two thirds of a sweep of the three pipelines on 512-d features, since each pipeline fits the
    same transform on the same labelled set. The fit is deterministic, so this subclass keeps the fitted state of the
    last ``max_fits`` training sets (keyed by their values and the parameters) in the process and copies it instead of
    fitting again; results are those of a fresh fit, bit for bit.

    Real encoders give features no ``λ`` suits, and this class handles them:

    * A feature constant on the training set (a dead unit, or one whose values differ only by rounding at the
      precision they came in: a few units in the last place of float32) gets ``λ = 1``, the identity (as recent
      scikit-learn versions give exact constants); standardised, its output is 0 for every input, since the
      classifier fitted on it learnt nothing from it, and a test value it never saw must not move distances or
      kernels; not standardised, it passes through unchanged. Such features are marked in ``constant_features_``.
    * A ``λ`` fitted on a handful of samples, or on a feature of a tiny spread (1e-9 around 1 gives ``λ ≈ 26``), can
      overflow (``inf``) or give values of 1e12 and more for a feature value outside the training range. Where that
      happens, and only there (element by element), the value is clipped to the training range (``fit_min_``,
      ``fit_max_``) before the transform, so a sweep's smallest budgets give a score instead of a crash or a feature
      that swamps all others. "Huge" is more than ``max_extrapolation`` times the largest magnitude the feature's
      output reached on the training set (at least 1). Values that transform to finite values within that bound
      are unchanged.

    Duplicated features are transformed alike; PCA after a transform of constant features gets zeros, which it
    handles (see :class:`SeededPipeline`).

    Args:
        method: ``"yeo-johnson"`` or ``"box-cox"``, as for ``PowerTransformer``.
        standardize: scale to zero mean and unit variance after the transform.
        copy: as for ``PowerTransformer``.

    Attributes:
        fit_min_, fit_max_: the training range per feature.
        constant_features_: bool per feature, True where the training values are constant.
        fit_bound_: per feature, the output magnitude beyond which values are clipped first.

    Example:
        >>> X = np.random.default_rng(0).exponential(size=(20, 3))
        >>> a, b = MemoPowerTransformer().fit(X), MemoPowerTransformer().fit(X)  # the second one is copied
        >>> bool(np.array_equal(a.lambdas_, b.lambdas_)), bool(np.array_equal(a.transform(X), PowerTransformer()
        ...     .fit_transform(X)))
        (True, True)
        >>> float(MemoPowerTransformer().fit(np.c_[X, np.zeros(20)]).transform([[1.0, 2.0, 3.0, 5.0]])[0, 3])
        0.0
    """

    max_fits: ClassVar[int] = 256
    max_extrapolation: ClassVar[float] = 1e3
    _fits: ClassVar[OrderedDict[tuple[bytes, str], dict[str, Any]]] = OrderedDict()

    def fit(self, X: Any, y: Any = None) -> MemoPowerTransformer:
        """Fits the transform, or copies the fit of the same data and parameters."""
        key = self._memo_key(X)
        fits = MemoPowerTransformer._fits
        if key in fits:
            self.__dict__.update(copy.deepcopy(fits[key]))
            fits.move_to_end(key)
            return self
        super().fit(X, y)
        given = np.asarray(X)
        values = given.astype(np.float64)
        self.fit_min_, self.fit_max_ = values.min(axis=0), values.max(axis=0)
        self.constant_features_ = _constant_columns(values, given.dtype)
        const = self.constant_features_
        if const.any() and self.method == "yeo-johnson":
            self.lambdas_[const] = 1.0  # the identity, as recent scikit-learn versions give exact constants
            scaler = getattr(self, "_scaler", None)
            if scaler is not None:  # fitted on the former lambda's output: describe the identity's instead
                scaler.mean_[const], scaler.var_[const], scaler.scale_[const] = values.mean(axis=0)[const], 0.0, 1.0
        # the transform is increasing in each feature, so the training extremes give the largest output magnitudes
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
            ends = self._zero_constants(np.asarray(super().transform(np.vstack([self.fit_min_, self.fit_max_])),
                                                   dtype=np.float64))
        self.fit_bound_ = self.max_extrapolation * np.maximum(np.abs(ends).max(axis=0), 1.0)
        fits[key] = copy.deepcopy(self.__dict__)
        while len(fits) > self.max_fits:
            fits.popitem(last=False)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The fitted transform; an element that overflows or swamps (beyond ``fit_bound_``) is transformed after
        clipping to the training range, and standardised constant features are 0."""
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._transform_keeping_overflow(X)
            if out is not None:
                out = self._zero_constants(out)
                bad = ~np.isfinite(out) | (np.abs(out) > self.fit_bound_)
                if not bad.any():
                    return out
            clipped = self._zero_constants(super().transform(np.clip(np.asarray(X, dtype=np.float64), self.fit_min_,
                                                                      self.fit_max_)))
            if out is None:  # infinite input: all of it clipped
                return clipped
            out[bad] = clipped[bad]
            return out

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fits (or reuses a fit), then transforms ``X``: the same values as ``PowerTransformer.fit_transform``."""
        return self.fit(X, y).transform(X)

    def _transform_keeping_overflow(self, X: Any) -> np.ndarray | None:
        """``PowerTransformer.transform``, but where the standard scaler refuses the infinities of an overflow, the
        same arithmetic without that refusal; None for an input that is itself infinite."""
        try:
            return super().transform(X)
        except ValueError as err:  # the scaler refuses the infinite values of an overflow (or X is infinite)
            if "infinity" not in str(err):
                raise
        if not self.standardize:
            return None
        unscaled = copy.copy(self)
        unscaled.standardize = False
        try:
            out = PowerTransformer.transform(unscaled, X)
        except ValueError as err:
            if "infinity" not in str(err):
                raise
            return None
        return (out - self._scaler.mean_) / self._scaler.scale_  # StandardScaler.transform's own arithmetic

    def _zero_constants(self, out: np.ndarray) -> np.ndarray:
        if self.standardize and self.constant_features_.any():
            out[:, self.constant_features_] = 0.0
        return out

    def _memo_key(self, X: Any) -> tuple[bytes, str]:
        columns = getattr(X, "columns", None)
        values = np.ascontiguousarray(np.asarray(X))
        h = hashlib.blake2b(f"{values.shape}{values.dtype}{None if columns is None else list(columns)}".encode(),
                            digest_size=16)
        h.update(values.tobytes())
        return h.digest(), repr(sorted(self.get_params().items()))


def _constant_columns(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """True for each column whose values are all equal, or differ only by rounding at ``dtype``'s precision: a
    standard deviation within 4 units in the last place of the column's largest magnitude (float32 features of
    one unit can differ that much between batches of other images)."""
    eps = np.finfo(dtype).eps if np.issubdtype(dtype, np.floating) else 0.0
    return (np.ptp(values, axis=0) == 0) | (values.std(axis=0) <= 4 * eps * np.abs(values).max(axis=0))


class CappedKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """A k-nearest-neighbour classifier whose ``k`` is capped at the number of training samples when it is fitted.

    Nielsen et al. use ``k = 5 × classes``; with one label per class there are fewer training samples than that, and
    scikit-learn's ``KNeighborsClassifier`` refuses ``k > n_train``. The cap keeps the asked-for ``k`` as the
    parameter (so ``get_params``/``clone`` are unchanged) and records the ``k`` used in ``n_neighbors_``.

    The ``1 / distance`` votes are scikit-learn's, neighbours at distance 0 included (they alone vote, one vote
    each), with one safeguard: a row whose votes are all 0 (every distance infinite; scikit-learn refuses it) or not
    finite (NaN distances gave NaN probabilities) votes uniformly among its ``k`` neighbours instead, and a NaN vote
    alone counts 0. Every row of ``predict_proba`` is then a distribution.

    Args:
        n_neighbors: the asked-for ``k``.
        weights: ``"distance"`` (Nielsen et al.: each neighbour votes ``1 / distance``) or ``"uniform"``.
        metric: distance, as for ``KNeighborsClassifier``.

    Attributes:
        n_neighbors_: the ``k`` used, ``min(n_neighbors, n_train)``.
        classes_: the class labels, sorted.
        knn_: the fitted ``KNeighborsClassifier``.

    Example:
        >>> knn = CappedKNeighborsClassifier(15).fit([[0.0], [1.0], [5.0]], [0, 0, 1])
        >>> knn.n_neighbors_, knn.predict([[0.2]]).tolist()
        (3, [0])
    """

    def __init__(self, n_neighbors: int = 5, weights: str = "distance", metric: str = "minkowski") -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric

    def fit(self, X: Any, y: Any) -> CappedKNeighborsClassifier:
        """Fits a ``KNeighborsClassifier`` with ``k = min(n_neighbors, len(X))``."""
        _check_positive_int(self.n_neighbors, "n_neighbors")
        X = np.asarray(X)
        if len(X) == 0:
            raise ValueError("cannot fit a k-NN classifier on 0 samples; give at least one labelled sample")
        self.n_neighbors_ = min(int(self.n_neighbors), len(X))
        weights = _inverse_distance if self.weights == "distance" else self.weights
        self.knn_ = KNeighborsClassifier(n_neighbors=self.n_neighbors_, weights=weights, metric=self.metric)
        self.knn_.fit(X, y)
        self.classes_ = self.knn_.classes_
        self.n_features_in_ = self.knn_.n_features_in_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, len(classes_))``: the neighbours' (weighted) votes, normalised."""
        check_is_fitted(self, "knn_")
        return self.knn_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """The class with the most (weighted) votes."""
        check_is_fitted(self, "knn_")
        return self.knn_.predict(X)


class WeightedKNN(ClassifierMixin, BaseEstimator):
    """DINO's weighted k-NN on cosine similarity, the kNN score DINO reports (not Nielsen et al.'s k-NN).

    Features are L2-normalised; each test feature takes the ``k`` training features most similar to it (cosine
    similarity ``s``), each of which votes ``exp(s / T)`` for its class; the probabilities are the normalised votes.
    Zero vectors have similarity 0 to everything (all-zero or identical features: equal votes); a similarity that is
    not finite (from a NaN or infinite feature) votes 0, and a row with no finite similarity votes uniformly among
    its ``k`` neighbours, so every row is a distribution.
    ``k`` is capped at the number of training samples. The test set is scored in chunks of ``chunk_size`` rows, so
    memory stays at about ``2 × chunk_size × n_train × 8`` bytes whatever the test-set size, and any size works
    (DINO's own loop splits the test set into 100 chunks of ``n_test // 100`` and fails below 100 test images).

    Args:
        k: neighbours per test sample (DINO: 20 "is usually working the best"; it also reports 10, 100, 200).
        temperature: ``T`` of the votes ``exp(s / T)``; smaller values give the nearest neighbour more say.
        chunk_size: test samples per block of the similarity matrix.

    Attributes:
        classes_: the class labels, sorted.
        n_neighbors_: the ``k`` used, ``min(k, n_train)``.

    Example:
        >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
        >>> knn = WeightedKNN(k=3, temperature=1.0).fit(X, [0, 1, 0, 1])
        >>> p = knn.predict_proba([[2.0, 0.0]])  # similarities 1, 0, 0.707, -1: the top 3 vote
        >>> bool(np.isclose(p[0, 0], (np.e + np.exp(0.5 ** 0.5)) / (np.e + np.exp(0.5 ** 0.5) + 1)))
        True

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (``eval_knn.py``);
        Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, chunk_size: int = 256) -> None:
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size

    def fit(self, X: Any, y: Any) -> WeightedKNN:
        """Stores the L2-normalised training features and their labels."""
        _check_positive_int(self.k, "k")
        _check_positive_int(self.chunk_size, "chunk_size")
        if not (isinstance(self.temperature, numbers.Real) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number (DINO uses 0.07), got {self.temperature!r}")
        X = _features(X, "X")
        y = np.asarray(y).reshape(-1)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels; give one label per feature row")
        if len(X) == 0:
            raise ValueError("cannot fit a k-NN classifier on 0 samples; give at least one labelled sample")
        self.classes_, self._y_index = np.unique(y, return_inverse=True)
        self._train = _l2_normalise(X)
        self.n_features_in_ = X.shape[1]
        self.n_neighbors_ = min(int(self.k), len(X))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, len(classes_))``: the normalised ``exp(similarity / T)`` votes of the top k."""
        check_is_fitted(self, "_train")
        X = _features(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the classifier was fitted on {self.n_features_in_}; "
                             "extract test features with the same encoder as the training features")
        queries = _l2_normalise(X)
        out = np.empty((len(queries), len(self.classes_)))
        step = int(self.chunk_size)
        for start in range(0, len(queries), step):  # the last chunk may be shorter; an empty X gives no chunk
            out[start:start + step] = self._votes(queries[start:start + step])
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The class with the largest vote."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _votes(self, queries: np.ndarray) -> np.ndarray:
        sims = queries @ self._train.T  # (m, n_train) cosine similarities
        k, n = self.n_neighbors_, sims.shape[1]
        if k < n:
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(sims, idx, axis=1)
        else:
            idx, top = np.broadcast_to(np.arange(n), sims.shape), sims
        # exp(s/T) up to a factor per row, which the normalisation cancels: the top neighbour votes 1, none overflow.
        # A similarity that is not finite (a feature that was not) votes 0; a row with none finite votes uniformly.
        finite = np.isfinite(top)
        with np.errstate(invalid="ignore", over="ignore"):
            w = np.exp((top - np.where(finite, top, -np.inf).max(axis=1, keepdims=True)) / self.temperature)
        w[~finite] = 0.0
        w[~(w.sum(axis=1) > 0)] = 1.0
        labels = self._y_index[idx]
        votes = np.stack([(w * (labels == c)).sum(axis=1) for c in range(len(self.classes_))], axis=1)
        return votes / votes.sum(axis=1, keepdims=True)


def _inverse_distance(dist: np.ndarray) -> np.ndarray:
    """Nielsen et al.'s ``1 / distance`` votes, as scikit-learn's ``weights="distance"`` computes them, made safe.

    Where a row has neighbours at distance 0, they vote 1 and the others 0 (scikit-learn's rule). A vote that is not
    a number counts 0; a row left with no positive, finite total (every distance infinite or NaN) votes 1 for each
    neighbour, and a row whose total overflows is scaled by its largest vote. Rows of ordinary distances get exactly
    scikit-learn's votes.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        w = 1.0 / dist
        exact = np.isinf(w)
        at_zero = exact.any(axis=1)
        w[at_zero] = exact[at_zero]
        w[np.isnan(w)] = 0.0
        total = w.sum(axis=1)
        big = np.isinf(total)
        w[big] /= w[big].max(axis=1, keepdims=True)
        w[~(w.sum(axis=1) > 0)] = 1.0
    return w


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _features(X: Any, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {X.shape}; "
                         "extract features with medmae_nb.inference.extract_features")
    return X


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # a row with inf or NaN becomes NaN: its votes count 0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # a zero vector stays zero


# ---------------------------------------------------------------------------------------------------- pipelines
def _nielsen_pipeline(name: str, classifier: Any) -> SeededPipeline:
    # PCA with all components and no whitening only centres and rotates the standardised features when
    # n_train >= n_features (distances and L2 norms unchanged); with fewer samples it projects onto their span.
    return SeededPipeline([
        ("power", MemoPowerTransformer(method="yeo-johnson", standardize=True)),
        ("pca", PCA(n_components=None, whiten=False)),
        (name, classifier),
    ])


def svm_pipeline() -> SeededPipeline:
    """Nielsen et al.'s SVM: Yeo-Johnson → PCA → RBF ``SVC(C=1, gamma="scale", class_weight="balanced")``.

    Probabilities come from libsvm's Platt scaling (``probability=True``: an internal 5-fold cross-validation, seeded
    by the pipeline's ``random_state``), which is slower than the SVM itself and whose argmax can differ from
    ``SVC.predict``; the sweep scores the probabilities, as Nielsen et al. did (argmax of ``predict_proba``). With a
    few labels per class and weakly separable features the internal cross-validation can fit an inverted sigmoid:
    on 512-d random features with a weak class signal, 10 labels per class, the probabilities' balanced accuracy was
    0.17–0.18 where ``SVC.predict`` reached 0.50–0.54 (three seeds); compare the two before reading a low score as a
    property of the features.

    Returns:
        An unfitted :class:`SeededPipeline` with steps ``power``, ``pca``, ``svc``.

    Raises:
        RuntimeError: a scikit-learn without ``SVC(probability=True)`` (removal planned for 1.11).

    Example:
        >>> X, y = np.random.default_rng(0).normal(size=(12, 5)), np.arange(12) % 3
        >>> p = svm_pipeline().fit(X, y).predict_proba(X[:2])
        >>> p.shape, bool(np.allclose(p.sum(1), 1))
        ((2, 3), True)
    """
    if "probability" not in SVC().get_params():
        import sklearn

        raise RuntimeError(f"scikit-learn {sklearn.__version__} has no SVC(probability=True), which Nielsen et al.'s "
                           "SVM uses; install scikit-learn<1.11 (pip install 'scikit-learn>=1.3,<1.11')")
    svc = SVC(C=1.0, kernel="rbf", gamma="scale", class_weight="balanced", probability=True)
    return _nielsen_pipeline("svc", svc)


def logreg_pipeline() -> SeededPipeline:
    """Nielsen et al.'s logistic regression: Yeo-Johnson → PCA → ``LogisticRegression(C=2.5, balanced)``.

    Returns:
        An unfitted :class:`SeededPipeline` with steps ``power``, ``pca``, ``logreg`` (L2 penalty, lbfgs,
        ``max_iter=10000``).

    Example:
        >>> X, y = np.random.default_rng(0).normal(size=(12, 5)), np.arange(12) % 3
        >>> logreg_pipeline().fit(X, y).classes_.tolist()
        [0, 1, 2]
    """
    return _nielsen_pipeline("logreg", LogisticRegression(C=2.5, class_weight="balanced", max_iter=10000))


def knn_pipeline(n_classes: int, per_class: int = 5) -> SeededPipeline:
    """Nielsen et al.'s k-NN: Yeo-Johnson → PCA → distance-weighted k-NN with ``k = per_class × n_classes``.

    ``k`` is capped at the number of training samples when fitted (:class:`CappedKNeighborsClassifier`), so the
    1-label-per-class budget uses all its samples.

    Args:
        n_classes: classes of the task (not only those present in a small training set).
        per_class: neighbours per class (Nielsen et al.: 5).

    Returns:
        An unfitted :class:`SeededPipeline` with steps ``power``, ``pca``, ``knn``.

    Example:
        >>> X, y = np.random.default_rng(0).normal(size=(12, 5)), np.arange(12) % 3
        >>> knn_pipeline(3).fit(X, y).named_steps["knn"].n_neighbors_  # 5 × 3 = 15, capped at 12
        12
    """
    _check_positive_int(n_classes, "n_classes")
    _check_positive_int(per_class, "per_class")
    return _nielsen_pipeline("knn", CappedKNeighborsClassifier(n_neighbors=per_class * n_classes, weights="distance"))


# ------------------------------------------------------------------------------------------------------ learners


def classical_learners(encoder: Any, n_classes: int, device: Any = None) -> dict[str, FrozenFeatures]:
    """Nielsen et al.'s three classifiers and DINO's weighted k-NN as learners on one frozen encoder.

    All four share one :class:`~medmae_nb.budgets.FeatureMemo`, so each image is encoded once for all of them,
    whatever the budgets and seeds of the sweeps they run in.

    Args:
        encoder: the frozen encoder (a timm model with ``num_classes=0``, or any module; see
            :func:`medmae_nb.inference.feature_fn`).
        n_classes: classes of the task (sets Nielsen's ``k = 5 × n_classes``).
        device: where features are computed (None: where the encoder is).

    Returns:
        ``{"SVM", "logistic regression", "kNN (5×classes)", "weighted kNN (DINO)": FrozenFeatures}``, in that order.

    Example:
        >>> from medmae_nb.models import small_cnn
        >>> list(classical_learners(small_cnn(1, 0, width=4), n_classes=3))
        ['SVM', 'logistic regression', 'kNN (5×classes)', 'weighted kNN (DINO)']
        >>> sweeps = {name: budget_sweep(learner, pool, test, budgets_for(pool))
        ...           for name, learner in classical_learners(encoder, 3).items()}  # doctest: +SKIP
    """
    _check_positive_int(n_classes, "n_classes")
    memo = FeatureMemo()
    makers = {
        "SVM": svm_pipeline,
        "logistic regression": logreg_pipeline,
        "kNN (5×classes)": functools.partial(knn_pipeline, int(n_classes)),
        "weighted kNN (DINO)": WeightedKNN,
    }
    return {name: FrozenFeatures(encoder, make, device=device, name=name, memo=memo) for name, make in makers.items()}


# ------------------------------------------------------------------------------------------------------- budgets
def budgets_for(pool: Any, budgets: Sequence[int] = NIELSEN_BUDGETS, *, warn: bool = True) -> list[int]:
    """The budgets (labels per class) a labelled pool can give: those no larger than its largest class.

    The rule is Nielsen et al.'s and :func:`~medmae_nb.data.label_budget`'s: a class smaller than the budget gives
    all it has. So every kept budget adds labels at least to the largest class (the labelled sets grow strictly and
    stay nested), while a budget above the largest class would only repeat the whole pool, and
    :func:`~medmae_nb.data.label_budget` refuses it. Budgets above the *smallest* class are kept: their labelled
    sets are no longer balanced (the sweep's ``n_train`` shows it; balanced accuracy and the balanced class weights
    of the SVM and the logistic regression allow for it), as in the paper's top budgets. Since that is easy to miss
    (an unbalanced set is where the SVM can collapse to one class), a ``UserWarning`` names each class smaller than
    a kept budget, its size, those budgets, and the cap (the class's size) that :func:`~medmae_nb.data.label_budget`
    applies; a class of the pool's ``class_names`` with no image in the pool is named too.

    Args:
        pool: the labelled pool (an :class:`~medmae_nb.data.ImageDataset`, whose ``class_names`` the warning uses)
            or its labels (the warning names classes by label).
        budgets: candidate labels per class, whole numbers >= 1.
        warn: warn about classes smaller than a kept budget; False where unbalanced top budgets are intended.

    Returns:
        The kept budgets, in the given order.

    Raises:
        DataError: an empty pool, a budget that is not a whole number >= 1, or no budget that fits (the message
            names the largest class).

    Example:
        >>> budgets_for(np.repeat([0, 1, 2], [300, 120, 40]), warn=False)  # largest class 300: 500, 1000 dropped
        [1, 5, 10, 25, 50, 100, 250]
    """
    labels = np.asarray(getattr(pool, "labels", pool)).reshape(-1)
    if labels.size == 0:
        raise DataError("the pool has no labels; a label budget needs a labelled pool")
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
            raise DataError(f"budgets must be whole numbers >= 1 (labels per class), got {b!r}")
    classes, counts = np.unique(labels, return_counts=True)
    largest = int(counts.max())
    kept = [int(b) for b in budgets if b <= largest]
    if not kept:
        raise DataError(f"no budget in {list(budgets)} fits the pool: its largest class has {largest} labels; "
                        f"choose budgets <= {largest}")
    if warn:
        _warn_short_classes(pool, labels, classes, counts, kept)
    return kept


def _warn_short_classes(pool: Any, labels: np.ndarray, classes: np.ndarray, counts: np.ndarray,
                        kept: list[int]) -> None:
    """The warning of :func:`budgets_for`: each class smaller than a kept budget, by name, with its size."""
    names = getattr(pool, "class_names", None)
    if names is not None and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0:
        counts = np.bincount(labels, minlength=len(names))  # a class of class_names absent from the pool counts 0
        shown = [repr(names[c]) if c < len(names) else str(c) for c in range(len(counts))]
    else:
        shown = [_label(c) for c in classes]
    short = [f"class {name} has {int(n)} images, fewer than {', '.join(str(b) for b in kept if b > n)} labels per "
             f"class (capped at {int(n)})" for name, n in zip(shown, counts) if 0 < n < max(kept)]
    absent = [f"class {name} has 0 images in the pool, so it gets no labels at any budget"
              for name, n in zip(shown, counts) if n == 0]
    if not short and not absent:
        return
    advice = []
    if short:
        advice.append("At such a budget the class gives all its images (label_budget caps it), so the labelled set "
                      "is unbalanced: n_train shows it, and a classifier may collapse to the large classes. Keep "
                      f"budgets <= {int(counts[counts > 0].min())} for balanced sets")
    if absent:
        advice.append("Add images of the absent class to the pool, or leave it out of the task")
    warnings.warn(f"budgets above a class's size: {'; '.join(short + absent)}. {'. '.join(advice)}; or pass "
                  "budgets_for(..., warn=False) where unbalanced top budgets are intended (as in Nielsen et al.'s)",
                  UserWarning, stacklevel=3)
