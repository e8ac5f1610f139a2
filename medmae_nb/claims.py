"""Verdicts computed from results: ties, rankings, and each paper's claim checked against our numbers.

The book never states a difference its intervals do not show. Three rules, used by every chapter:

* **collapse**: a run that predicts (nearly) one class is no result. Its seed is left out of the mean (the table
  shows how many), and a row where more than half the runs collapsed is shown but never ranked (:func:`rankable`).
* **ties**: two results whose 95 % intervals overlap are "not distinguishable here" (:func:`compare_rows`); the
  leaders at a budget are the best rankable row and every row whose interval reaches it (:func:`leaders`).
* **claims**: a :class:`Claim` holds the paper's statement, our setting, our figures with their intervals, and a
  verdict that a rule computes from those figures — ``holds``, ``does not hold here`` or ``not testable here``, with
  the reason. :func:`check_verdicts` recomputes every verdict of a table from the numbers in it (the book's tests
  run it on every chapter's table).

Example:
    >>> a = {"method": "A", "value": 0.80, "low": 0.75, "high": 0.85, "seeds": 3, "collapsed": 0}
    >>> b = {"method": "B", "value": 0.70, "low": 0.65, "high": 0.74, "seeds": 3, "collapsed": 0}
    >>> compare_rows(a, b), compare_rows(a, {**b, "high": 0.76})
    ('higher', 'not distinguishable here')
    >>> claim_greater("p", "A beats B", "phantom", a, b).verdict
    'holds'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TIE", "VERDICTS", "Claim", "check_verdicts", "claim_above", "claim_at_least", "claim_greater",
           "claim_not_worse", "claim_within", "claims_table", "compare_rows", "find_row", "leaders",
           "parse_claims_table", "rankable",
           "untestable"]

VERDICTS = ("holds", "does not hold here", "not testable here")
TIE = "not distinguishable here"


def _num(row: Mapping[str, Any] | None, key: str) -> float:
    try:
        v = float(row[key]) if row is not None else math.nan
    except (KeyError, TypeError, ValueError):
        return math.nan
    return v


def rankable(row: Mapping[str, Any] | None) -> bool:
    """Whether a result may be ranked: it has a value, and at most half of its runs collapsed."""
    if row is None or not math.isfinite(_num(row, "value")):
        return False
    seeds, bad = _num(row, "seeds"), _num(row, "collapsed")
    return not (math.isfinite(seeds) and math.isfinite(bad) and 2 * bad > seeds)


def compare_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """``"higher"`` / ``"lower"`` when ``a``'s 95 % interval lies wholly above / below ``b``'s, else
    ``"not distinguishable here"``; ``"not testable here"`` when either is not :func:`rankable`."""
    if not (rankable(a) and rankable(b)):
        return "not testable here"
    if _num(a, "low") > _num(b, "high"):
        return "higher"
    if _num(a, "high") < _num(b, "low"):
        return "lower"
    return TIE


def leaders(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The best rankable row (highest mean) and every rankable row not distinguishable from it, best first."""
    ranked = sorted((r for r in rows if rankable(r)), key=lambda r: -_num(r, "value"))
    if not ranked:
        return []
    top = ranked[0]
    return [top, *(r for r in ranked[1:] if compare_rows(r, top) == TIE)]


# ---------------------------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One paper's claim against our numbers.

    Attributes:
        chapter: where the book tests it (``"01"`` … ``"06"``).
        paper: the source, short (``"Zhou 2023"``).
        claim: what the paper says, in a sentence.
        setting: our data, image size and compute, in words.
        rule: how the verdict is computed (``greater``, ``at_least``, ``within``, ``not_worse``, ``untestable``).
        ours: our figure(s), ``{label: {"value", "low", "high", "seeds", "collapsed"}}``.
        target: the figure compared against, for ``at_least`` / ``within`` (e.g. a published AUC).
        tolerance: the margin of ``within`` / ``at_least``.
        verdict: one of :data:`VERDICTS`.
        reason: why, in numbers.
    """

    chapter: str
    paper: str
    claim: str
    setting: str
    rule: str
    ours: dict[str, dict[str, float]] = field(default_factory=dict)
    target: float | None = None
    tolerance: float = 0.0
    verdict: str = "not testable here"
    reason: str = ""

    def figure(self) -> str:
        """Our figure(s) as text: ``A 0.812 [0.771, 0.850]; B …``."""
        def one(r: Mapping[str, float]) -> str:
            if not math.isfinite(_num(r, "value")):
                return "no result"
            bad = f", {int(r['collapsed'])}/{int(r['seeds'])} collapsed" if _num(r, "collapsed") > 0 else ""
            return f"{_num(r, 'value'):.3f} [{_num(r, 'low'):.3f}, {_num(r, 'high'):.3f}]{bad}"

        return "; ".join(f"{k} {one(r)}" for k, r in self.ours.items())

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "figure": self.figure()}


def _keep(row: Mapping[str, Any] | None) -> dict[str, float]:
    """The figures a verdict is computed from, rounded to the 3 decimals the table prints: a reader who checks a
    verdict against the printed figures gets the same answer."""
    return {k: round(_num(row, k), 3) if math.isfinite(_num(row, k)) else _num(row, k)
            for k in ("value", "low", "high", "seeds", "collapsed")}


def _untestable(why: str) -> tuple[str, str]:
    return "not testable here", why


def _verdict(rule: str, ours: Mapping[str, Mapping[str, float]], target: float | None,
             tolerance: float) -> tuple[str, str]:
    """The verdict of ``rule`` on ``ours`` (and ``target``): the one place verdicts are computed."""
    rows = list(ours.values())
    names = list(ours)
    if rule == "untestable":
        return _untestable("not run in our setting")
    missing = [n for n, r in ours.items() if not rankable(r)]
    if missing:
        return _untestable(f"{', '.join(missing)}: no rankable result (missing, or most runs collapsed)")
    if rule in ("greater", "not_worse"):
        a, b = rows
        c = compare_rows(a, b)
        gap = f"{names[0]} {_num(a, 'value'):.3f} vs {names[1]} {_num(b, 'value'):.3f}"
        if rule == "greater":
            if c == "higher":
                return "holds", f"{gap}: intervals apart"
            if c == "lower":
                return "does not hold here", f"{gap}: {names[1]} is higher, intervals apart"
            return "does not hold here", f"{gap}: intervals overlap, {TIE}"
        if c == "lower":
            return "does not hold here", f"{gap}: {names[0]} is lower, intervals apart"
        return "holds", f"{gap}: {'higher' if c == 'higher' else TIE}"
    if rule in ("at_least", "within"):
        if target is None:
            return _untestable("no published figure to compare with")
        a = rows[0]
        v = _num(a, "value")
        if rule == "at_least":
            ok = _num(a, "high") >= target - tolerance
            return ("holds" if ok else "does not hold here",
                    f"{names[0]} {v:.3f} [{_num(a, 'low'):.3f}, {_num(a, 'high'):.3f}] "
                    f"{'reaches' if ok else 'stays below'} {target:.3f}" + (f" − {tolerance:g}" if tolerance else ""))
        ok = abs(v - target) <= tolerance
        return ("holds" if ok else "does not hold here",
                f"{names[0]} {v:.3f} is {abs(v - target):.3f} from {target:.3f} (tolerance {tolerance:g})")
    if rule == "above":
        if target is None:
            return _untestable("no target to compare with")
        a = rows[0]
        lo, hi = _num(a, "low"), _num(a, "high")
        span = f"{names[0]} {_num(a, 'value'):.3f} [{lo:.3f}, {hi:.3f}]"
        if lo > target:
            return "holds", f"{span}: the interval lies above {target:g}"
        if hi < target:
            return "does not hold here", f"{span}: the interval lies below {target:g}"
        return "does not hold here", f"{span} covers {target:g}: {TIE}"
    raise ValueError(f"unknown rule {rule!r}; rules: greater, not_worse, at_least, within, above, untestable")


def _claim(rule: str, chapter: str, paper: str, claim: str, setting: str, ours: dict[str, dict[str, float]],
           target: float | None = None, tolerance: float = 0.0, why: str | None = None) -> Claim:
    verdict, reason = (_untestable(why) if why else _verdict(rule, ours, target, tolerance))
    return Claim(chapter, paper, claim, setting, rule if not why else "untestable", ours, target, tolerance,
                 verdict, reason)


def claim_greater(paper: str, claim: str, setting: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None,
                  names: tuple[str, str] = ("ours", "baseline"), chapter: str = "") -> Claim:
    """"A is better than B": holds when A's interval lies above B's; an overlap does not hold here (not
    distinguishable), nor does B above A."""
    la = (a or {}).get("method", names[0]) if names == ("ours", "baseline") else names[0]
    lb = (b or {}).get("method", names[1]) if names == ("ours", "baseline") else names[1]
    if la == lb:
        la, lb = f"{la} (a)", f"{lb} (b)"
    return _claim("greater", chapter, paper, claim, setting, {la: _keep(a), lb: _keep(b)})


def claim_not_worse(paper: str, claim: str, setting: str, a: Mapping[str, Any] | None,
                    b: Mapping[str, Any] | None, names: tuple[str, str], chapter: str = "") -> Claim:
    """"A is at least as good as B": holds unless A's interval lies wholly below B's."""
    return _claim("not_worse", chapter, paper, claim, setting, {names[0]: _keep(a), names[1]: _keep(b)})


def claim_at_least(paper: str, claim: str, setting: str, a: Mapping[str, Any] | None, target: float,
                   name: str, tolerance: float = 0.0, chapter: str = "") -> Claim:
    """"A reaches ``target``": holds when A's interval reaches ``target - tolerance``."""
    return _claim("at_least", chapter, paper, claim, setting, {name: _keep(a)}, target, tolerance)


def claim_within(paper: str, claim: str, setting: str, a: Mapping[str, Any] | None, target: float,
                 name: str, tolerance: float, chapter: str = "") -> Claim:
    """"We reproduce ``target``": holds when A's mean is within ``tolerance`` of it."""
    return _claim("within", chapter, paper, claim, setting, {name: _keep(a)}, target, tolerance)


def claim_above(paper: str, claim: str, setting: str, a: Mapping[str, Any] | None, target: float, name: str,
                chapter: str = "") -> Claim:
    """"The statistic exceeds ``target``", for a paired statistic with its interval (a difference of two methods
    over the same runs, a slope, ``A − 0.95 B``; :func:`medmae_nb.evaluate.blocks_statistic_ci`): holds when the
    whole interval lies above ``target``; an interval covering it is not distinguishable, which does not hold."""
    return _claim("above", chapter, paper, claim, setting, {name: _keep(a)}, target, 0.0)


def untestable(paper: str, claim: str, setting: str, why: str, chapter: str = "") -> Claim:
    """A claim our setting cannot test, and why (compute, data, a missing figure)."""
    return _claim("untestable", chapter, paper, claim, setting, {}, why=why)



_RULE_TEXT = {"greater": "A > B", "not_worse": "A ≥ B", "at_least": "A ≥ target − tol",
              "within": "abs(A − target) ≤ tol", "above": "interval of A > target", "untestable": "—"}


def claims_table(claims: Sequence[Claim]) -> str:
    """The claim checks as a Markdown table (the chapters' last cell shows it). The ``test`` column names the rule
    (``A > B``: A's interval above B's), with the target and tolerance where there are some, so that
    :func:`parse_claims_table` can read every verdict back and check it against the figures beside it."""
    lines = ["| paper | claim | our setting | our figure | test | verdict | why |",
             "|---|---|---|---|---|---|---|"]
    for c in claims:
        rule = _RULE_TEXT[c.rule]
        if c.target is not None:
            rule += f" (target {c.target:g}, tol {c.tolerance:g})"
        lines.append(f"| {c.paper} | {c.claim} | {c.setting} | {c.figure() or '—'} | {rule} | **{c.verdict}** | "
                     f"{c.reason} |")
    return "\n".join(lines)


_FIGURE = re.compile(r"^(?P<name>.+?) (?:(?P<v>-?\d+\.\d+) \[(?P<lo>-?\d+\.\d+), (?P<hi>-?\d+\.\d+)\]"
                     r"(?:, (?P<bad>\d+)/(?P<n>\d+) collapsed)?|no result)$")


def parse_claims_table(markdown: str) -> list[dict[str, Any]]:
    """The claim records of a table made by :func:`claims_table` (as a chapter's output shows it), with the figures
    as printed (3 decimals) — for :func:`check_verdicts` on a stored notebook."""
    rules = {v: k for k, v in _RULE_TEXT.items()}
    out = []
    for line in markdown.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cols) != 7 or cols[0] == "paper" or set(cols[0]) <= {"-"}:
            continue
        paper, claim, setting, figure, test, verdict, reason = cols
        m = re.match(r"^(.*?)(?: \(target (\S+), tol (\S+)\))?$", test)
        rule = rules.get(m.group(1))
        if rule is None:
            raise ValueError(f"unknown test {test!r} in a claims table")
        ours: dict[str, dict[str, float]] = {}
        if figure != "—":
            for part in figure.split("; "):
                f = _FIGURE.match(part)
                if f is None:
                    raise ValueError(f"cannot read the figure {part!r}")
                nan = math.nan
                ours[f["name"]] = {"value": float(f["v"]) if f["v"] else nan,
                                   "low": float(f["lo"]) if f["lo"] else nan,
                                   "high": float(f["hi"]) if f["hi"] else nan,
                                   "seeds": float(f["n"]) if f["n"] else nan,
                                   "collapsed": float(f["bad"]) if f["bad"] else 0.0}
        out.append({"paper": paper, "claim": claim, "setting": setting, "rule": rule, "ours": ours,
                    "target": float(m.group(2)) if m.group(2) else None,
                    "tolerance": float(m.group(3)) if m.group(3) else 0.0,
                    "verdict": verdict.strip("*"), "reason": reason})
    return out


def check_verdicts(claims: Sequence[Claim | Mapping[str, Any]]) -> list[str]:
    """Recomputes each verdict from the figures stored with it; returns the claims whose stored verdict differs
    (empty when every verdict follows from its numbers). Accepts :class:`Claim` objects or their records."""
    wrong = []
    for c in claims:
        rec = c.record() if isinstance(c, Claim) else dict(c)
        if rec["verdict"] not in VERDICTS:
            wrong.append(f"{rec['claim']}: unknown verdict {rec['verdict']!r}")
            continue
        if rec["rule"] == "untestable":
            if rec["verdict"] != "not testable here":
                wrong.append(f"{rec['claim']}: untestable, yet {rec['verdict']!r}")
            continue
        verdict, _ = _verdict(rec["rule"], rec["ours"], rec.get("target"), float(rec.get("tolerance") or 0.0))
        if verdict != rec["verdict"]:
            wrong.append(f"{rec['claim']}: stored {rec['verdict']!r}, the numbers give {verdict!r}")
    return wrong


def find_row(rows: Sequence[Mapping[str, Any]], **where: Any) -> Mapping[str, Any] | None:
    """The one row matching every ``key=value`` (floats compared with a tolerance), or None."""
    def match(r: Mapping[str, Any]) -> bool:
        for k, v in where.items():
            x = r.get(k)
            if isinstance(v, float) or isinstance(x, float):
                try:
                    if not math.isclose(float(x), float(v), rel_tol=1e-9, abs_tol=1e-12):
                        return False
                except (TypeError, ValueError):
                    return False
            elif x != v:
                return False
        return True

    hits = [r for r in rows if match(r)]
    if len(hits) > 1:
        raise ValueError(f"{len(hits)} rows match {where}; add a key (metric, protocol, budget …)")
    return hits[0] if hits else None

