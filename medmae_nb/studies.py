"""Each paper's claim in its own setting: paired statistics on real ultrasound, computed from committed tables.

The fair tables (:mod:`medmae_nb.paper_claims`) compare every learner at a budget by their intervals. A paper's own
claim is usually narrower — one setting against another of the same method (mask ratio 0.75 against 0.5, a
multi-scale target against a single-scale one), or a rate of change (accuracy lost as the labels shrink). Those are
decided here by **paired** statistics: the runs of the two settings share their labelled subsets (fine-tune seed)
and their pre-training seed index, so each replicate of the two-level bootstrap
(:func:`medmae_nb.evaluate.blocks_statistic_ci`) draws the same runs and the same test images for both, and what
they have in common cancels. Every statistic pools ≥ 3 pre-training seeds × the fine-tune seeds (9 runs), read from
the per-seed rows and the probabilities files of the committed tables — no training:

* ``{dataset}-cpu.csv`` — chapter 06's table: the default setting of each method (``MAE p8`` …);
* ``{dataset}-cpu-study.csv`` — the study recipes (:data:`medmae_nb.pretrained.recipes.STUDIES`): one thing
  changed each (mask ratio, patch size, MIRAM's target, random masking);
* ``{dataset}-cpu-fractions.csv`` — chapter 04's label fractions; ``{dataset}-cpu-dino.csv`` — chapter 05's
  labels-per-class sweep and DINO fine-tuned with every label.

:func:`own_setting_claims` turns them into a chapter's claim checks (rule ``above``: the paired statistic's interval
lies above its target), each verdict computed from the figure it prints; a statistic whose runs are not committed yet
is "not testable here", saying which table lacks them.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 1] * 30)
    >>> good = np.eye(2)[y][None].repeat(3, 0) * 0.8 + 0.1
    >>> worse = good.copy(); worse[:, :10] = worse[:, :10, ::-1]
    >>> ci = paired_statistic(np.stack([worse, good]), y, [-1, 1], n_boot=200)
    >>> round(ci.value, 3), ci.low > 0
    (0.167, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .claims import Claim, claim_above, claim_greater, untestable
from .compare import RESULTS, SMALL_CNN, headline_rows, read_probs, read_results
from .evaluate import METRICS, MetricCI, average_precision, blocks_statistic_ci, log_slope_weights, roc_auc

__all__ = ["PRETRAIN_SEEDS", "STUDY_METHODS", "Runs", "error_correlation", "fraction_figure", "majority_rate",
           "malignant_vs_benign", "map_claims", "own_setting_claims", "paired_by_group", "paired_statistic",
           "seed_runs", "settings_figure", "share_figure", "share_of_full", "size_tertiles", "study_table"]

#: the pre-training seeds every own-setting statistic pools
PRETRAIN_SEEDS = (0, 1, 2)
#: how the chapters name the study recipes and the default rows they are compared with
STUDY_METHODS = {
    "mae-micro-p8-m50-busi": "MAE p8, mask 0.5",
    "mae-micro-p8-m90-busi": "MAE p8, mask 0.9",
    "mae-micro-p16-busi": "MAE p16",
    "mae-micro-p8-hires-busi": "MAE p8 (same 128-px images)",
    "miram-micro-p8-native-busi": "MIRAM p8 (native x2 target)",
    "miram-micro-p8-upsampled-busi": "MIRAM p8 (upsampled x2 target)",
    "mconvnext-atto-random-busi": "random-masked ConvNeXt",
}
_KINDS = {"main": "{d}-{p}.csv", "study": "{d}-{p}-study.csv", "fractions": "{d}-{p}-fractions.csv",
          "dino": "{d}-{p}-dino.csv"}


def study_table(dataset: str, kind: str, profile: str = "cpu", folder: str | Path | None = None) -> Path:
    """The committed table of ``kind`` (``main``, ``study``, ``fractions``, ``dino``) for ``dataset``."""
    if kind not in _KINDS:
        raise KeyError(f"no table kind {kind!r}; kinds: {', '.join(_KINDS)}")
    return Path(folder if folder is not None else RESULTS) / _KINDS[kind].format(d=dataset, p=profile)


@dataclass
class Runs:
    """The test probabilities of one learner at one budget, pooled over pre-training seeds.

    Attributes:
        probs: ``(R, N, K)``: pre-training seed-major (seed 0's fine-tune runs, then seed 1's …), so run ``r`` of two
            learners read with the same seeds is a pair.
        y: ``(N,)`` test labels.
        rows: the per-seed ``bal_acc`` rows the runs come from (their ``steps``, ``n_train``, ``checkpoint`` …).
    """

    probs: np.ndarray
    y: np.ndarray
    rows: list[dict[str, Any]]

    @property
    def n_train(self) -> int:
        return int(self.rows[0]["n_train"])


def seed_runs(table: str | Path, method: str, protocol: str, budget: float,
              seeds: Sequence[int] | None = PRETRAIN_SEEDS) -> Runs | None:
    """The runs of ``method`` / ``protocol`` at ``budget`` in ``table``, one block per pre-training seed (in
    ``seeds`` order); ``seeds=None`` reads the learner's only row (a yardstick or the transfer model, which have no
    pre-training seed). None when a seed's row or its probabilities are not in the table."""
    rows = [r for r in read_results(table) if r["method"] == method and r["protocol"] == protocol
            and r["metric"] == "bal_acc" and np.isclose(float(r["budget"]), float(budget))]
    if not rows:
        return None
    probs, y = read_probs(table)
    if seeds is None:
        picked = [r for r in rows if "+" not in str(r["pretrain_seed"])][:1]
    else:
        by_seed = {str(r["pretrain_seed"]): r for r in rows}
        picked = [by_seed.get(str(s)) for s in seeds]
    if not picked or any(r is None or r["key"] not in probs for r in picked):
        return None
    stack = np.concatenate([probs[r["key"]] for r in picked], axis=0)
    return Runs(stack / stack.sum(-1, keepdims=True), np.asarray(y), picked)  # float16 storage: renormalise


def paired_statistic(blocks: np.ndarray, y: np.ndarray, statistic: Callable[[np.ndarray], float] | Sequence[float],
                     metric: str | Callable[[np.ndarray, np.ndarray], float] = "bal_acc", n_boot: int = 1000,
                     seed: int = 0) -> MetricCI:
    """:func:`~medmae_nb.evaluate.blocks_statistic_ci` with a metric named as in the tables (``bal_acc`` …)."""
    fn = METRICS[metric] if isinstance(metric, str) else metric
    return blocks_statistic_ci(fn, y, blocks, statistic, n_boot=n_boot, seed=seed)


def drop_collapsed_pairs(blocks: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """``(blocks, dropped)``: the runs ``r`` where no block's run collapsed to (nearly) one class
    (:func:`medmae_nb.budgets.collapsed`), so a collapsed run is left out together with its partners — the pairs stay
    pairs — and ``dropped`` counts the runs left out."""
    from .budgets import collapsed

    keep = [r for r in range(blocks.shape[1]) if not any(collapsed(blocks[f, r], y) for f in range(len(blocks)))]
    return blocks[:, keep], blocks.shape[1] - len(keep)


def _paired_figure(blocks: np.ndarray, y: np.ndarray, statistic: Any, metric: Any, n_boot: int,
                   transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
                   ) -> dict[str, float]:
    """The figure a claim prints: the paired statistic over the runs none of whose members collapsed (judged on the
    whole test set), the runs left out counted as collapsed; no value when most runs collapsed."""
    n = blocks.shape[1]
    kept, dropped = drop_collapsed_pairs(blocks, y)
    if 2 * dropped > n or kept.shape[1] == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "seeds": n, "collapsed": dropped}
    if transform is not None:
        kept, y = transform(kept, y)
    ci = paired_statistic(kept, y, statistic, metric, n_boot)
    return {"value": ci.value, "low": ci.low, "high": ci.high, "seeds": n, "collapsed": dropped}


def malignant_vs_benign(probs: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The malignant-vs-benign task inside a labelled set: ``(probs (…, M, 2), y (M,))`` over the test images that
    are benign or malignant (BUSI's normal images left out; BreastMNIST's second class is "normal, benign"), column 1
    the malignant probability renormalised over the two classes — the scores a malignancy AUC or AP is computed
    from."""
    names = [c.lower() for c in class_names]
    benign = [i for i, c in enumerate(names) if "benign" in c and "malignant" not in c]
    if "malignant" not in names or len(benign) != 1:
        raise ValueError(f"malignant vs benign needs a 'malignant' class and one benign class; the classes are "
                         f"{list(class_names)}")
    m, b = names.index("malignant"), benign[0]
    keep = np.flatnonzero((y == m) | (y == b))
    p = probs[..., keep, :]
    s = p[..., m] / np.maximum(p[..., m] + p[..., b], 1e-12)
    return np.stack([1 - s, s], axis=-1), (y[keep] == m).astype(np.int64)


def majority_rate(y: np.ndarray) -> float:
    """The accuracy of always predicting the most frequent test class: the floor an accuracy figure must clear."""
    return float(np.bincount(np.asarray(y)).max() / len(y))


def error_correlation(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """Mean over paired runs of the correlation between two models' per-image errors (1 wrong, 0 right): near 1 the
    members fail on the same images and averaging them cannot help; near 0 or below, an ensemble can."""
    vals = []
    for pa, pb in zip(a, b):
        ea, eb = (pa.argmax(-1) != y).astype(float), (pb.argmax(-1) != y).astype(float)
        if ea.std() > 0 and eb.std() > 0:
            vals.append(float(np.corrcoef(ea, eb)[0, 1]))
    return float(np.mean(vals)) if vals else float("nan")


def size_tertiles(masks: np.ndarray) -> np.ndarray:
    """Each image's lesion-size tertile by lesion area (0 the smallest third, 1, 2 the largest), -1 for an image
    without a lesion (BUSI's normal images)."""
    area = np.asarray(masks).reshape(len(masks), -1).sum(1)
    out = np.full(len(area), -1)
    has = area > 0
    if has.any():
        out[has] = np.digitize(area[has], np.quantile(area[has], [1 / 3, 2 / 3]))
    return out


def paired_by_group(a: Runs, b: Runs, groups: np.ndarray, metric: str = "acc",
                    n_boot: int = 1000) -> dict[int, MetricCI]:
    """``metric(A) − metric(B)`` on each group of test images (e.g. :func:`size_tertiles`; -1 left out), paired."""
    out = {}
    for g in sorted(set(np.asarray(groups).tolist()) - {-1}):
        sel = np.flatnonzero(groups == g)
        out[g] = paired_statistic(np.stack([b.probs[:, sel], a.probs[:, sel]]), a.y[sel], [-1, 1], metric, n_boot)
    return out


def map_claims(scores: Mapping[str, Mapping[str, MetricCI]], random_baseline: Mapping[str, float], model: str,
               setting: str, control: str = "control: darkness map", paper: str = "Fan et al. 2024 (MAE, small "
               "patches)", chapter: str = "01", similarity: Mapping[str, float] | None = None) -> list[Claim]:
    """Whether each explanation map of ``model`` beats its controls, from chapter 01's map scores (``{"MODEL:
    METHOD": {"pointing": MetricCI, "mass ratio": MetricCI}, control: {…}}``): its pointing game and its mass ratio
    (the map's mass inside the lesion over the lesion's share of the image) above the darkness map's (intervals
    apart), and its mass ratio above a random map's. ``similarity`` (``{"MODEL: METHOD": rank correlation with the
    same model's weights re-drawn}``, the model-randomisation control) is stated in each claim's setting."""
    def row(ci: MetricCI) -> dict[str, float]:
        return {"value": ci.value, "low": ci.low, "high": ci.high, "seeds": 1, "collapsed": 0}

    out = []
    dark = scores[control]
    for key, sc in scores.items():
        if not key.startswith(f"{model}: "):
            continue
        method = key.split(": ", 1)[1]
        where = setting
        if similarity is not None and key in similarity:
            where += f"; rank correlation with the map of re-drawn weights {similarity[key]:.2f}"
        for score, what in (("pointing", "points at the lesion more often"),
                            ("mass ratio", "puts more of its mass inside the lesion")):
            out.append(claim_greater(paper, f"the {method} map {what} than the darkness control", where,
                                     row(sc[score]), row(dark[score]), (f"{method}, {score}", f"darkness, {score}"),
                                     chapter=chapter))
        out.append(claim_above(paper, f"the {method} map puts more of its mass inside the lesion than a random map",
                               where, row(sc["mass ratio"]), round(float(random_baseline["mass_ratio"]), 3),
                               f"{method}, mass ratio", chapter=chapter))
    return out


# ------------------------------------------------------------------------------------------------------ figures
def _pooled(rows: Sequence[Mapping[str, Any]], method: str, protocol: str) -> list[Mapping[str, Any]]:
    """A learner's headline rows (:func:`medmae_nb.compare.headline_rows`: pooled over pre-training seeds where
    they are), by budget."""
    return sorted((r for r in headline_rows([dict(r) for r in rows])
                   if r["method"] == method and r["protocol"] == protocol), key=lambda r: r["budget"])


def fraction_figure(dataset: str, methods: Sequence[str] = ("SparK", "MoCo v2"),
                    yardsticks: Sequence[str] = ("scratch ResNet-18 micro", "SmallCNN (supervised)"),
                    folder: str | Path | None = None, metric: str = "bal_acc") -> Any:
    """Chapter 04's test in pictures: each method's fine-tuned accuracy against the share of labels, one thin line
    per pre-training seed and the pooled mean with its interval; the yardsticks dashed."""
    from . import viz

    table = study_table(dataset, "fractions", folder=folder)
    rows = [r for r in read_results(table) if r["metric"] == metric and r["protocol"] == "fine-tune"]
    fig, ax = viz.plt.subplots(figsize=(6.4, 4.0))
    for k, m in enumerate(methods):
        color = viz.PALETTE[k]
        for s in PRETRAIN_SEEDS:
            pts = sorted((r["budget"], r["value"]) for r in rows if r["method"] == m and r["pretrain_seed"] == str(s))
            if pts:
                ax.plot([100 * b for b, _ in pts], [v for _, v in pts], color=color, alpha=0.35, lw=1, marker=".")
        top = _pooled(rows, m, "fine-tune")
        if top:
            runs = "+".join(map(str, PRETRAIN_SEEDS)) if "+" in str(top[0]["pretrain_seed"]) else "0"
            viz.curve_ci(ax, [100 * r["budget"] for r in top], [r["value"] for r in top], [r["low"] for r in top],
                         [r["high"] for r in top], label=f"{m} (pre-training seeds {runs})", color=color)
    for k, m in enumerate(yardsticks):
        top = _pooled(rows, m, "fine-tune")
        if top:
            ax.plot([100 * r["budget"] for r in top], [r["value"] for r in top], ls="--", marker="o", ms=3,
                    color=viz.PALETTE[len(methods) + k], label=m)
    ax.set(xlabel="% of the labelled pool", ylabel="balanced accuracy (test)" if metric == "bal_acc" else metric,
           title=f"{dataset}: fine-tuned as the labels shrink (thin: each pre-training seed)")
    viz.log_axis(ax)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def settings_figure(dataset: str, settings: Mapping[str, tuple[str, str]], protocol: str = "fine-tune",
                    metric: str = "bal_acc", folder: str | Path | None = None, title: str = "") -> Any:
    """One setting beside another, one panel per budget: each setting's result pooled over its pre-training seeds
    with its interval, and each pre-training seed's mean as a dot. ``settings`` maps a label to ``(table kind,
    method)``, e.g. ``{"mask 0.5": ("study", "mae-micro-p8-m50-busi"), "mask 0.75": ("main", "MAE p8")}``; a setting
    not in its table yet is named in the panel."""
    from . import viz

    rows = {}
    for label, (kind, method) in settings.items():
        rows[label] = [r for r in read_results(study_table(dataset, kind, folder=folder))
                       if r["method"] == method and r["protocol"] == protocol and r["metric"] == metric]
    budgets = sorted({(r["unit"], r["budget"]) for rr in rows.values() for r in rr}, key=lambda u: u[1])
    fig, axes = viz.plt.subplots(1, max(len(budgets), 1), figsize=(3.2 * max(len(budgets), 1) + 0.8, 3.6),
                                 squeeze=False)
    for ax, (unit, b) in zip(axes[0], budgets or [("per_class", 0.0)]):
        missing = []
        for k, (label, rr) in enumerate(rows.items()):
            at = [r for r in rr if r["budget"] == b]
            pooled = [r for r in at if "+" in str(r["pretrain_seed"])]
            if not pooled:
                missing.append(label)
                continue
            r = pooled[0]
            ax.errorbar([k], [r["value"]], yerr=[[r["value"] - r["low"]], [r["high"] - r["value"]]], fmt="o",
                        color=viz.PALETTE[k % len(viz.PALETTE)], capsize=4)
            seeds = [x["value"] for x in at if "+" not in str(x["pretrain_seed"])]
            ax.plot([k + 0.15] * len(seeds), seeds, ".", color=viz.PALETTE[k % len(viz.PALETTE)], alpha=0.6)
        ax.set_xticks(range(len(rows)), list(rows), rotation=20, ha="right", fontsize=7)
        ax.set_title(_budget_text(unit, b) + (f"\nnot run yet: {', '.join(missing)}" if missing else ""), fontsize=8)
    axes[0][0].set_ylabel("balanced accuracy (test)" if metric == "bal_acc" else metric)
    fig.suptitle(title or f"{dataset}: pooled over pre-training seeds (dots: each seed's mean)", fontsize=9)
    return fig


def share_figure(dataset: str, folder: str | Path | None = None, share: float = 0.95,
                 metric: str = "bal_acc") -> Any:
    """Chapter 05's test in pictures: kNN, logistic regression and SVM on frozen DINO features against labels per
    class (pre-training seeds pooled), DINO fine-tuned on every label as a band, and ``share`` of it dashed; the
    SmallCNN and the ViT from scratch, trained with the same steps, from the main table of the same data."""
    from . import viz

    table = study_table(dataset, "dino", folder=folder)
    rows = [r for r in read_results(table) if r["metric"] == metric and r["method"] == "DINO"]
    fig, ax = viz.plt.subplots(figsize=(6.4, 4.0))
    for k, proto in enumerate(("kNN", "logistic regression", "SVM")):
        top = [r for r in _pooled(rows, "DINO", proto) if r["unit"] == "per_class"]
        if top:
            viz.curve_ci(ax, [r["budget"] for r in top], [r["value"] for r in top], [r["low"] for r in top],
                         [r["high"] for r in top], label=f"DINO + {proto}", color=viz.PALETTE[k])
    main = [r for r in read_results(study_table(dataset, "main", folder=folder)) if r["metric"] == metric]
    for k, m in enumerate((SMALL_CNN, "scratch ViT-micro p8")):  # the yardsticks, same steps, from the main table
        top = _pooled(main, m, "fine-tune")
        color = viz.PALETTE[3 + k]
        per_class = [r for r in top if r["unit"] == "per_class"]
        if per_class:
            ax.plot([r["budget"] for r in per_class], [r["value"] for r in per_class], ls="--", marker="o", ms=4,
                    color=color, label=f"{m}, fine-tuned")
        for r in top:
            if r["unit"] == "fraction" and r["budget"] == 1.0:
                ax.axhline(r["value"], color=color, ls="-.", label=f"{m}, all {r['n_train']} labels")
    full = [r for r in _pooled(rows, "DINO", "fine-tune") if r["unit"] == "fraction" and r["budget"] == 1.0]
    if full:
        f = full[0]
        ax.axhspan(f["low"], f["high"], color="gray", alpha=0.2)
        ax.axhline(f["value"], color="gray", label=f"DINO fine-tuned, all {f['n_train']} labels")
        ax.axhline(share * f["value"], color="gray", ls="--", label=f"{share:.0%} of it")
    ax.axvline(100, color="black", lw=0.6, ls=":")
    ax.set(xlabel="labelled images per class", ylabel="balanced accuracy (test)" if metric == "bal_acc" else metric,
           title=f"{dataset}: frozen DINO features (pre-training seeds pooled)")
    viz.log_axis(ax)
    ax.legend(fontsize=7, loc="lower right")
    return fig


# ------------------------------------------------------------------------------------------------------- claims
def _setting(dataset: str, what: str, runs: Runs, size: str | None = None) -> str:
    steps = runs.rows[0].get("steps")
    size = size or f"{runs.n_train} images" + (f", {steps} steps" if steps else "")
    return (f"{dataset}, 64 px, {what} ({size}); pre-trained on BUSI's training images, "
            f"seeds {'+'.join(map(str, PRETRAIN_SEEDS))} × {len(runs.probs) // len(PRETRAIN_SEEDS)} fine-tune "
            f"seeds = {len(runs.probs)} paired runs")


def _budget_text(unit: str, budget: float) -> str:
    return f"{budget * 100:g} % of the labels" if unit == "fraction" else f"{budget:g} labels/class"


def _budgets(table: Path, method: str, protocol: str) -> list[tuple[str, float]]:
    rows = [r for r in read_results(table) if r["method"] == method and r["protocol"] == protocol
            and r["metric"] == "bal_acc"]
    return sorted({(r["unit"], float(r["budget"])) for r in rows}, key=lambda u: u[1])


def _difference(paper: str, claim: str, dataset: str, a: Runs | None, b: Runs | None, name: str, what: str,
                missing: str, chapter: str, metric: str = "bal_acc", n_boot: int = 1000,
                transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None) -> Claim:
    """"A beats B": the paired difference ``metric(A) − metric(B)`` lies above 0."""
    if a is None or b is None or a.probs.shape != b.probs.shape:
        return untestable(paper, claim, f"{dataset}, {what}", missing, chapter=chapter)
    fig = _paired_figure(np.stack([b.probs, a.probs]), a.y, [-1, 1], metric, n_boot, transform)
    return claim_above(paper, claim, _setting(dataset, what, a), fig, 0.0, name, chapter=chapter)


def _ch01(dataset: str, folder: Path | None, n_boot: int, masks: np.ndarray | None = None,
          class_names: Sequence[str] = ()) -> list[Claim]:
    paper = "Fan et al. 2024 (MAE, small patches)"
    main, study = study_table(dataset, "main", folder=folder), study_table(dataset, "study", folder=folder)
    out = []
    budgets = _budgets(main, "MAE p8", "fine-tune")
    if masks is not None and budgets:  # the abstract's reason for small patches: small lesions
        unit, b = budgets[-1]
        base, p16 = seed_runs(main, "MAE p8", "fine-tune", b), seed_runs(study, "mae-micro-p16-busi", "fine-tune", b)
        claim = "small patches help most on the smallest lesions: 8-px beats 16-px patches on the smallest third"
        what = f"fine-tuned, {_budget_text(unit, b)}, the test lesions in the smallest third by area"
        if base is None or p16 is None:
            out.append(untestable(paper, claim, f"{dataset}, {what}", f"mae-micro-p16-busi is not in {study.name} "
                                                                     "yet (3 pre-training seeds)", chapter="01"))
        else:
            groups = size_tertiles(masks)
            if len(groups) != len(base.y):
                raise ValueError(f"{len(groups)} masks for {len(base.y)} test images of {dataset}")
            small = np.flatnonzero(groups == 0)
            fig = _paired_figure(np.stack([p16.probs, base.probs]), base.y, [-1, 1], "acc", n_boot,
                                 transform=lambda bl, y: (bl[:, :, small], y[small]))
            out.append(claim_above(paper, claim, _setting(dataset, what, base), fig, 0.0,
                                   "MAE p8 − MAE p16, accuracy on the smallest lesions (paired)", chapter="01"))
    for unit, b in budgets:
        base = seed_runs(main, "MAE p8", "fine-tune", b)
        what = f"fine-tuned, {_budget_text(unit, b)}"
        for recipe, claim in (("mae-micro-p16-busi", "small patches beat large ones (8-px > 16-px patches, mask "
                                                      "0.75)"),
                              ("mae-micro-p8-m50-busi", "the usual mask ratio 0.75 beats a lower one (0.5)"),
                              ("mae-micro-p8-m90-busi", "the usual mask ratio 0.75 beats a higher one (0.9)")):
            other = seed_runs(study, recipe, "fine-tune", b)
            out.append(_difference(paper, claim, dataset, base, other,
                                   f"MAE p8, mask 0.75 − {STUDY_METHODS[recipe]}, balanced accuracy (paired)", what,
                                   f"{recipe} is not in {study.name} yet (3 pre-training seeds)", "01",
                                   n_boot=n_boot))
    if len(class_names) > 2:  # BUSI: also the paper's binary task, malignant against benign test images
        for unit, b in budgets:
            out.append(_difference(
                paper, "small patches beat large ones at telling malignant from benign lesions (malignancy AUC)",
                dataset, seed_runs(main, "MAE p8", "fine-tune", b),
                seed_runs(study, "mae-micro-p16-busi", "fine-tune", b), "MAE p8 − MAE p16, malignancy AUC (paired)",
                f"fine-tuned, {_budget_text(unit, b)}, malignant vs benign test images",
                f"mae-micro-p16-busi is not in {study.name} yet (3 pre-training seeds)", "01", metric=roc_auc,
                n_boot=n_boot, transform=lambda bl, y: malignant_vs_benign(bl, y, class_names)))
    return out


def _ch02(dataset: str, folder: Path | None, n_boot: int, class_names: Sequence[str]) -> list[Claim]:
    paper = "Vo et al. 2025 (MIRAM)"
    study = study_table(dataset, "study", folder=folder)
    out = []
    base_name = "mae-micro-p8-hires-busi"

    def task(blocks: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return malignant_vs_benign(blocks, y, class_names)

    budgets = (_budgets(study, base_name, "fine-tune")
               or _budgets(study_table(dataset, "main", folder=folder), "MAE p8", "fine-tune"))  # not run yet
    for unit, b in budgets:
        base = seed_runs(study, base_name, "fine-tune", b)
        what = f"fine-tuned, {_budget_text(unit, b)}, malignant vs benign test images"
        for recipe in ("miram-micro-p8-native-busi", "miram-micro-p8-upsampled-busi"):
            other = seed_runs(study, recipe, "fine-tune", b)
            for metric, label in (("auc", "AUC"), ("ap", "AP")):
                fn = roc_auc if metric == "auc" else average_precision
                out.append(_difference(
                    paper, f"multi-scale reconstruction raises malignancy {label} over single-scale MAE at the same "
                           f"8-px patches ({STUDY_METHODS[recipe].split('(')[1][:-1]})", dataset, other, base,
                    f"{STUDY_METHODS[recipe]} − MAE p8, malignancy {label} (paired)", what,
                    f"{recipe} or {base_name} is not in {study.name} yet (3 pre-training seeds)", "02",
                    metric=fn, n_boot=n_boot, transform=task))
    return out


def _ch03(dataset: str, folder: Path | None, n_boot: int) -> list[Claim]:
    paper = "Florindo & Moura 2026 (entropy-guided MAE + ImageNet ConvNeXt)"
    main, study = study_table(dataset, "main", folder=folder), study_table(dataset, "study", folder=folder)
    out = []
    for unit, b in _budgets(main, "entropy-masked ConvNeXt", "fine-tune"):
        ent = seed_runs(main, "entropy-masked ConvNeXt", "fine-tune", b)
        rnd = seed_runs(study, "mconvnext-atto-random-busi", "fine-tune", b)
        out.append(_difference(paper, "entropy-guided masking beats random masking (same ConvNeXt, same pool)",
                               dataset, ent, rnd, "entropy − random masking, balanced accuracy (paired)",
                               f"fine-tuned, {_budget_text(unit, b)}",
                               f"mconvnext-atto-random-busi is not in {study.name} yet (3 pre-training seeds)", "03",
                               n_boot=n_boot))
        twin = seed_runs(main, "transfer ConvNeXt", "fine-tune", b, seeds=None)
        claim = ("averaging the probabilities of the entropy-masked ConvNeXt and the transfer twin beats the better "
                 "of the two (our twin: supervised on PneumoniaMNIST, not ImageNet)")
        what = f"fine-tuned, {_budget_text(unit, b)}"
        if ent is None or twin is None:
            out.append(untestable(paper, claim, f"{dataset}, {what}", f"{main.name} lacks the members' runs",
                                  chapter="03"))
            continue
        tw = np.tile(twin.probs, (len(ent.probs) // len(twin.probs), 1, 1))  # label draw r of every seed: twin run r
        ens = (ent.probs + tw) / 2
        fig = _paired_figure(np.stack([ens, ent.probs, tw]), ent.y, lambda m: m[0] - max(m[1], m[2]), "bal_acc",
                             n_boot)
        corr = error_correlation(ent.probs, tw, ent.y)
        out.append(claim_above(paper, claim, _setting(dataset, what, ent) + f"; the members' error correlation "
                                                                            f"{corr:.2f}",
                               fig, 0.0, "ensemble − its better member, balanced accuracy (paired)", chapter="03"))
    return out


def _ch04(dataset: str, folder: Path | None, n_boot: int) -> list[Claim]:
    paper = "Wolf et al. 2023 (SparK vs contrastive on CT)"
    table = study_table(dataset, "fractions", folder=folder)
    claim = ("as the labelled set shrinks, SparK loses less accuracy than contrastive pre-training (MoCo v2): "
             "MoCo's slope against log10(labels) exceeds SparK's")
    fr = [b for u, b in _budgets(table, "SparK", "fine-tune") if u == "fraction"]
    spark = [seed_runs(table, "SparK", "fine-tune", f) for f in fr]
    moco = [seed_runs(table, "MoCo v2", "fine-tune", f) for f in fr]
    what = f"fine-tuned at {', '.join(f'{f * 100:g} %' for f in fr)} of the labels"
    if len(fr) < 2 or any(r is None for r in spark + moco):
        return [untestable(paper, claim, f"{dataset}, {what or 'label fractions'}",
                           f"{table.name} lacks SparK or MoCo v2 runs of 3 pre-training seeds at every fraction",
                           chapter="04")]
    w = log_slope_weights(fr)
    blocks = np.stack([r.probs for r in spark] + [r.probs for r in moco])
    fig = _paired_figure(blocks, spark[0].y, np.concatenate([-w, w]), "bal_acc", n_boot)
    steps = sorted({int(r.rows[0]["steps"]) for r in spark + moco})
    setting = _setting(dataset, what, spark[-1], f"{spark[0].n_train} to {spark[-1].n_train} images, "
                                                 f"{steps[0]}–{steps[-1]} steps")
    return [claim_above(paper, claim, setting, fig, 0.0,
                        "slope MoCo v2 − slope SparK, balanced accuracy per tenfold labels (paired)", chapter="04")]


def _ch05(dataset: str, folder: Path | None, n_boot: int, share: float = 0.95) -> list[Claim]:
    paper = "Nielsen et al. 2023 (DINO + classical classifiers)"
    table = study_table(dataset, "dino", folder=folder)
    claim = (f"with 100 labels per class, an SVM on frozen DINO features reaches ≥ {share:.0%} of DINO fine-tuned "
             "with every label")
    svm = seed_runs(table, "DINO", "SVM", 100.0)
    full = next((seed_runs(table, "DINO", "fine-tune", b) for u, b in _budgets(table, "DINO", "fine-tune")
                 if u == "fraction" and b == 1.0), None)
    what = "SVM at 100 labels/class against fine-tuning on every label"
    if svm is None or full is None:
        return [untestable(paper, claim, f"{dataset}, {what}",
                           f"{table.name} lacks the SVM at 100/class or the all-label fine-tune (3 pre-training "
                           "seeds)", chapter="05")]
    fig = _paired_figure(np.stack([svm.probs, full.probs]), svm.y, [1.0, -share], "bal_acc", n_boot)
    setting = _setting(dataset, what, svm) + f"; all labels: {full.n_train} images"
    return [claim_above(paper, claim, setting, fig, 0.0,
                        f"SVM@100/class − {share:g} × fine-tune@all, balanced accuracy (paired)", chapter="05")]


def share_of_full(dataset: str, protocol: str = "SVM", budget: float = 100.0, folder: str | Path | None = None,
                  n_boot: int = 1000) -> MetricCI | None:
    """Chapter 05's ratio itself: balanced accuracy of DINO + ``protocol`` at ``budget`` labels per class over DINO
    fine-tuned on every label, paired over the runs none of which collapsed (None when a side is missing or most
    runs collapsed)."""
    table = study_table(dataset, "dino", folder=folder)
    part = seed_runs(table, "DINO", protocol, budget)
    full = seed_runs(table, "DINO", "fine-tune", 1.0)
    if part is None or full is None:
        return None
    fig = _paired_figure(np.stack([part.probs, full.probs]), part.y, lambda m: m[0] / m[1], "bal_acc", n_boot)
    return None if not np.isfinite(fig["value"]) else MetricCI(fig["value"], fig["low"], fig["high"])


OWN_SETTING = {"01": ("busi", "breastmnist"), "02": ("busi", "breastmnist"), "03": ("busi",),
               "04": ("busi", "pneumoniamnist"), "05": ("busi", "breastmnist", "pneumoniamnist")}
_CLASSES = {"busi": ("normal", "benign", "malignant"), "breastmnist": ("malignant", "normal, benign")}


def own_setting_claims(chapter: str, datasets: Sequence[str] | None = None, folder: str | Path | None = None,
                       n_boot: int = 1000, class_names: Mapping[str, Sequence[str]] | None = None,
                       masks: Mapping[str, np.ndarray] | None = None) -> list[Claim]:
    """The claim checks of ``chapter`` (``"01"`` … ``"05"``) in the paper's own setting, on real images, each from
    a paired statistic pooled over 3 pre-training seeds (:data:`OWN_SETTING` lists the datasets).

    ``class_names`` gives a dataset's class order where chapter 02's malignant-vs-benign task needs it (default:
    BUSI's and BreastMNIST's as the package loads them). ``masks`` gives a dataset's test lesion masks, in test
    order, for chapter 01's claim by lesion size (without them that claim is left out).

    Raises:
        KeyError: a chapter without own-setting claims.
    """
    if chapter not in OWN_SETTING:
        raise KeyError(f"no own-setting claims for chapter {chapter!r}; chapters: {', '.join(OWN_SETTING)}")
    folder = Path(folder) if folder is not None else None
    names = {**_CLASSES, **(class_names or {})}
    out: list[Claim] = []
    for d in datasets or OWN_SETTING[chapter]:
        if chapter == "01":
            out += _ch01(d, folder, n_boot, (masks or {}).get(d), names[d])
        elif chapter == "02":
            out += _ch02(d, folder, n_boot, names[d])
        elif chapter == "03":
            out += _ch03(d, folder, n_boot)
        elif chapter == "04":
            out += _ch04(d, folder, n_boot)
        else:
            out += _ch05(d, folder, n_boot)
    return out
