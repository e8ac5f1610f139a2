"""Each chapter's paper claims, checked on the fair comparison tables: the last section of chapters 01–05.

A chapter teaches its method on runs small enough for its minutes. Whether the paper's claim holds is decided
elsewhere: on the committed comparison tables (``medmae compare``, :mod:`medmae_nb.compare`), where every learner —
the fine-tuned self-supervised encoder, its backbone trained from scratch, the supervised SmallCNN — got the same
steps, augmentations and selection rule at every budget (:class:`medmae_nb.protocol.EvalProtocol`), several seeds,
and collapsed runs are marked. :func:`chapter_claims` builds a chapter's claim checks from those rows, each verdict
computed by :mod:`medmae_nb.claims` from the figures it prints; :func:`fair_rows` picks the rows a chapter shows.

Tables read (:func:`fair_tables`): the phantom (its main table plus ``phantom-cpu-variants.csv``: the MAE with 16-px
patches and the ConvNeXt with random masking, the two ablations no default row holds), BreastMNIST and BUSI (the
split shared with BreastMNIST; self-supervised checkpoints pre-trained on BUSI's training images). A claim whose
rows are not in a table yet is "not testable here", with the reason.

Example:
    >>> rows = [dict(method=m, kind=k, protocol="fine-tune", budget=10.0, unit="per class", metric="bal_acc",
    ...              value=v, low=v - .02, high=v + .02, seeds=3, collapsed=0, n_train=30, steps=200,
    ...              pretrain_seed="0") for m, k, v in [("SparK", "ssl", .8), ("MoCo v2", "ssl", .7),
    ...                                              ("scratch ResNet-18 micro", "scratch", .6),
    ...                                              ("SmallCNN (supervised)", "supervised", .75)]]
    >>> [c.verdict for c in chapter_claims("04", {"phantom": rows})][:2]
    ['holds', 'holds']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .claims import Claim, claim_greater, claim_not_worse, rankable, untestable
from .compare import RESULTS, SMALL_CNN, headline_rows, read_results, row_label, summary_table

__all__ = ["CHAPTERS", "FAIR_TABLES", "VARIANTS", "chapter_claims", "fair_rows", "fair_summary", "fair_tables"]

FAIR_TABLES = ("phantom", "breastmnist", "busi")
#: chapter 02's control: the plain MAE pre-trained on MIRAM's 128-px scenes for the same epochs
MAE_SAME_SCENES = "MAE p16 (same scenes)"
#: the ablation checkpoints of the phantom's variants table, by the name a chapter gives them
VARIANTS = {"mae-micro-p16": "MAE p16", "mconvnext-atto-random": "random-masked ConvNeXt",
            "mae-micro-p16-hires": MAE_SAME_SCENES, "miram-micro-p16-upsampled": "MIRAM upsampled"}
ENSEMBLE = "ensemble: entropy ConvNeXt + transfer"
TRANSFER = "transfer ConvNeXt"

#: per chapter: its method(s) and the yardsticks shown beside them (rows of the fair tables)
CHAPTERS: dict[str, tuple[str, ...]] = {
    "01": ("MAE p8", "MAE p16", "scratch ViT-micro p8", SMALL_CNN),
    "02": ("MIRAM", "MIRAM upsampled", MAE_SAME_SCENES, "scratch ViT-micro p16", SMALL_CNN),
    "03": ("entropy-masked ConvNeXt", "random-masked ConvNeXt", TRANSFER, ENSEMBLE, "scratch ConvNeXt-Atto",
           SMALL_CNN),
    "04": ("SparK", "MoCo v2", "scratch ResNet-18 micro", SMALL_CNN),
    "05": ("DINO", "scratch ViT-micro p8", SMALL_CNN),
}


def fair_tables(profile: str = "cpu", datasets: Sequence[str] = FAIR_TABLES,
                folder: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The committed comparison tables that exist, ``{dataset: rows}``; the phantom's variants table is merged into
    the phantom's rows with its methods renamed (:data:`VARIANTS`)."""
    folder = Path(folder) if folder is not None else RESULTS
    out: dict[str, list[dict[str, Any]]] = {}
    for name in datasets:
        rows = read_results(folder / f"{name}-{profile}.csv")
        extra = read_results(folder / f"{name}-{profile}-variants.csv")
        rows += [{**r, "method": VARIANTS.get(r["method"], r["method"])} for r in extra]
        if rows:
            out[name] = rows
    return out


def fair_rows(chapter: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The headline rows (pooled pre-training seeds where there are some) of a chapter's learners."""
    keep = set(CHAPTERS[chapter])
    return [dict(r) for r in headline_rows(rows) if r["method"] in keep]


def fair_summary(chapter: str, tables: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "bal_acc") -> str:
    """A chapter's learners on every table, as text (:func:`medmae_nb.compare.summary_table`), each table headed by
    the learners it does not hold yet."""
    parts = []
    for name, rows in tables.items():
        mine = fair_rows(chapter, rows)
        missing = [m for m in CHAPTERS[chapter] if m not in {r["method"] for r in mine}]
        head = f"{name}: balanced accuracy" if metric == "bal_acc" else f"{name}: {metric}"
        if missing:
            head += f" (not in the table yet: {', '.join(missing)})"
        parts.append(head + "\n" + (summary_table(mine, metric) if mine else "(none of this chapter's rows)"))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------------- helpers
class _Table:
    """One table's rows of one metric, and the cells a claim reads."""

    def __init__(self, name: str, rows: Sequence[Mapping[str, Any]], metric: str):
        self.name = name
        self.rows = [dict(r) for r in headline_rows(rows) if r["metric"] == metric]
        self.budgets = sorted({r["budget"] for r in self.rows})

    def cell(self, method: str, budget: float, protocols: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The best rankable row of ``method`` at ``budget`` among ``protocols`` (all when None)."""
        pick = [r for r in self.rows if r["method"] == method and r["budget"] == budget and rankable(r)
                and (protocols is None or r["protocol"] in protocols)]
        return max(pick, key=lambda r: r["value"], default=None)

    def has(self, method: str) -> bool:
        return any(r["method"] == method for r in self.rows)

    def setting(self, budget: float) -> str:
        r = next((r for r in self.rows if r["budget"] == budget and r["protocol"] == "fine-tune"), None)
        r = r or next(r for r in self.rows if r["budget"] == budget)
        size = f"{budget * 100:g} % of the labels" if r["unit"] == "fraction" else f"{budget:g} labels/class"
        pool = "phantom" if self.name == "phantom" else "BUSI training images"
        seeds = {str(x.get("pretrain_seed", "")) for x in self.rows if x["kind"] == "ssl"}
        pooled = [s for s in seeds if "+" in s]
        pre = ("one pre-training run" if not pooled
               else f"pre-training seeds {max(pooled, key=len)}" if len(pooled) == len(seeds)
               else f"pre-training seeds {max(pooled, key=len)} where a row says so, else one run")
        return (f"{self.name}, 64 px, {size} ({r['n_train']} images), {r['steps']} steps for every fine-tuned "
                f"learner, {r['seeds']} runs; pre-trained on the {pool}, {pre}")


def _label(r: Mapping[str, Any] | None, fallback: str) -> str:
    return row_label(dict(r)) if r is not None else fallback


def _greater(t: _Table, paper: str, claim: str, a: str, b: str, budget: float, chapter: str,
             protocols: Sequence[str] | None = ("fine-tune",), b_protocols: Sequence[str] | None | str = "same",
             missing: str | None = None) -> Claim:
    """``a`` beats ``b`` on table ``t`` at ``budget``, each at its best protocol among those given (``b``'s: the same
    as ``a``'s unless ``b_protocols`` says otherwise; None: any)."""
    if missing is not None and not (t.has(a) and t.has(b)):
        return untestable(paper, claim, t.setting(budget), missing, chapter=chapter)
    ra = t.cell(a, budget, protocols)
    rb = t.cell(b, budget, protocols if b_protocols == "same" else b_protocols)
    return claim_greater(paper, claim, t.setting(budget), ra, rb, (_label(ra, a), _label(rb, b)), chapter=chapter)


def _ends(t: _Table) -> list[tuple[float, str]]:
    lo, hi = t.budgets[0], t.budgets[-1]
    return [(lo, "with few labels"), (hi, "with the most labels here")] if hi != lo else [(lo, "")]


# ------------------------------------------------------------------------------------------------------- chapters
def _ch01(t: _Table) -> list[Claim]:
    paper = "Fan et al. 2024 (MAE, small patches)"
    out = [_greater(t, paper, f"MAE pre-training with small patches beats the same ViT trained from scratch {when}",
                    "MAE p8", "scratch ViT-micro p8", b, "01") for b, when in _ends(t)]
    no_p16 = ("no MAE with 16-px patches pre-trained on these images (the patch-size sweep on real images is "
              "issue 24's)")
    for b, when in _ends(t):
        out.append(_greater(t, paper, f"small patches beat large ones {when}: MAE p8 > MAE p16", "MAE p8",
                            "MAE p16", b, "01", missing=no_p16))
    for b, when in _ends(t):
        out.append(_greater(t, "premise of the book", f"the MAE beats a supervised CNN trained on the same labels "
                                                       f"{when}", "MAE p8", SMALL_CNN, b, "01", protocols=None))
    return out


def _ch02(t: _Table) -> list[Claim]:
    paper = "Vo et al. 2025 (MIRAM)"
    lo = t.budgets[0]
    no_p16 = "no MAE with 16-px patches pre-trained on these images (issue 24 pre-trains it on real images)"
    out = [_greater(t, paper, f"reconstructing at a higher resolution beats plain MAE at the same patch size "
                              f"{when}: MIRAM > MAE p16 on the same scenes", "MIRAM", MAE_SAME_SCENES, b, "02",
                    missing=no_p16)
           for b, when in _ends(t)]
    out += [_greater(t, paper, f"multi-scale masked pre-training beats the same ViT trained from scratch {when}",
                     "MIRAM", "scratch ViT-micro p16", b, "02") for b, when in _ends(t)]
    out.append(_greater(t, "premise of the book", "MIRAM beats a supervised CNN trained on the same labels with "
                                                  "few labels", "MIRAM", SMALL_CNN, lo, "02", protocols=None))
    return out


def _ch03(t: _Table) -> list[Claim]:
    paper = "Florindo & Moura 2026 (entropy-guided MAE + ImageNet ConvNeXt)"
    lo = t.budgets[0]
    out = [_greater(t, paper, "entropy-guided masking beats random masking", "entropy-masked ConvNeXt",
                    "random-masked ConvNeXt", lo, "03",
                    missing="no randomly masked ConvNeXt pre-trained on these images (issue 24)"),
           *[_greater(t, paper, f"masked pre-training beats the same ConvNeXt trained from scratch {when}",
                      "entropy-masked ConvNeXt", "scratch ConvNeXt-Atto", b, "03") for b, when in _ends(t)]]
    for b, when in _ends(t):
        ens = t.cell(ENSEMBLE, b, ("fine-tune",))
        members = [c for c in (t.cell(m, b, ("fine-tune",)) for m in ("entropy-masked ConvNeXt", TRANSFER))
                   if c is not None]
        top = max(members, key=lambda r: r["value"], default=None)
        claim = (f"averaging the probabilities of the two fine-tuned ConvNeXts beats the better of them {when} "
                 "(our twin: supervised on PneumoniaMNIST, not ImageNet)")
        out.append(claim_greater(paper, claim, t.setting(b), ens, top, (ENSEMBLE, _label(top, "best member")),
                                 chapter="03"))
    out.append(_greater(t, "premise of the book", "the ensemble beats a supervised CNN trained on the same labels "
                                                  "with few labels", ENSEMBLE, SMALL_CNN, lo, "03"))
    return out


def _ch04(t: _Table) -> list[Claim]:
    out = []
    for b, when in _ends(t):
        out.append(_greater(t, "Tian et al. 2023 (SparK) / Wolf et al. 2023", f"masked modelling (SparK) beats "
                            f"contrastive pre-training (MoCo v2) on the same CNN {when}", "SparK", "MoCo v2", b,
                            "04", protocols=None))
    lo = t.budgets[0]
    out += [_greater(t, "Tian et al. 2023 (SparK)", f"SparK pre-training beats the same ResNet trained from scratch "
                     f"{when}", "SparK", "scratch ResNet-18 micro", b, "04") for b, when in _ends(t)]
    out.append(_greater(t, "premise of the book", "SparK beats a supervised CNN trained on the same labels with "
                        "few labels", "SparK", SMALL_CNN, lo, "04", protocols=None))
    return out


def _ch05(t: _Table) -> list[Claim]:
    paper = "Nielsen et al. 2023 (DINO + classical classifiers)"
    hi, lo = t.budgets[-1], t.budgets[0]
    classical = ("SVM", "logistic regression", "kNN")
    out = [_greater(t, paper, "a classical classifier on frozen DINO features beats an end-to-end supervised "
                              "network trained on the same labels", "DINO", SMALL_CNN, b, "05",
                    protocols=classical, b_protocols=None) for b in (lo, hi)]
    svm = t.cell("DINO", hi, ("SVM",))
    other = t.cell("DINO", hi, ("logistic regression", "kNN"))
    out.append(claim_not_worse(paper, "the SVM is at least as good as logistic regression and kNN on DINO features",
                               t.setting(hi), svm, other, (_label(svm, "DINO, SVM"), _label(other, "DINO, LR/kNN")),
                               chapter="05"))
    out += [_greater(t, paper, f"DINO features beat the same ViT's random features (frozen, classical classifier) "
                     f"{when}", "DINO", "scratch ViT-micro p8", b, "05", protocols=classical)
            for b, when in _ends(t)]
    return out


_BUILDERS = {"01": _ch01, "02": _ch02, "03": _ch03, "04": _ch04, "05": _ch05}


def chapter_claims(chapter: str, tables: Mapping[str, Sequence[Mapping[str, Any]]],
                   metric: str = "bal_acc") -> list[Claim]:
    """The claim checks of ``chapter`` (``"01"`` … ``"05"``) on every table given (``{dataset: rows}``), in table
    order; each verdict is computed from the figures it prints.

    Raises:
        KeyError: a chapter without claim checks here (chapter 06 has its own:
            :func:`medmae_nb.compare.benchmark_claims`).
    """
    if chapter not in _BUILDERS:
        raise KeyError(f"no claim checks for chapter {chapter!r}; chapters: {', '.join(_BUILDERS)} (06: "
                       "compare.benchmark_claims)")
    out: list[Claim] = []
    for name, rows in tables.items():
        t = _Table(name, rows, metric)
        if t.budgets:
            out += _BUILDERS[chapter](t)
    return out
