"""Verdicts computed from numbers: collapse, ties, leaders, and claim checks whose verdicts follow from their table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmae_nb.budgets import _score
from medmae_nb.claims import (
    TIE,
    check_verdicts,
    claim_above,
    claim_at_least,
    claim_greater,
    claim_not_worse,
    claim_within,
    claims_table,
    compare_rows,
    find_row,
    leaders,
    rankable,
    untestable,
)


def row(name, value, half=0.02, seeds=3, collapsed=0):
    return {"method": name, "value": value, "low": value - half, "high": value + half, "seeds": seeds,
            "collapsed": collapsed}


def test_ties_and_order():
    a, b, c = row("a", 0.80), row("b", 0.70), row("c", 0.79)
    assert compare_rows(a, b) == "higher" and compare_rows(b, a) == "lower"
    assert compare_rows(a, c) == TIE == compare_rows(c, a)
    assert [r["method"] for r in leaders([b, c, a])] == ["a", "c"]  # c is not distinguishable from the best


def test_collapsed_runs_are_never_ranked():
    good, unstable = row("good", 0.6), row("unstable", 0.9, collapsed=2)
    assert rankable(good) and not rankable(unstable) and not rankable(row("nan", math.nan))
    assert rankable(row("one bad", 0.9, collapsed=1))  # 1 of 3: ranked on the other two
    assert [r["method"] for r in leaders([good, unstable])] == ["good"]
    assert compare_rows(unstable, good) == "not testable here"


def test_a_collapsed_seed_is_left_out_of_the_mean():
    y = np.array([0, 1, 2] * 10)
    good = np.eye(3)[y] * 0.8 + 0.2 / 3
    dead = np.tile([0.9, 0.05, 0.05], (30, 1))
    probs = np.stack([np.stack([good, good, dead]), np.stack([dead, dead, dead])])
    per_seed, out, flags = _score(probs, y, ["bal_acc"], n_boot=20, alpha=0.05, drop_collapsed=True)
    assert flags.tolist() == [[False, False, True], [True, True, True]]
    assert out["bal_acc"][0].value == pytest.approx(1.0)  # the mean of the two good runs, not 0.78
    assert math.isnan(out["bal_acc"][1].value)  # every run collapsed: no result
    assert per_seed["bal_acc"][0].tolist() == pytest.approx([1.0, 1.0, 1 / 3])  # each run still shown


def test_claim_rules():
    a, b = row("A", 0.80), row("B", 0.70)
    assert claim_greater("p", "A > B", "s", a, b).verdict == "holds"
    assert claim_greater("p", "B > A", "s", b, a).verdict == "does not hold here"
    tie = claim_greater("p", "A > B", "s", a, row("B", 0.79))
    assert tie.verdict == "does not hold here" and TIE in tie.reason
    assert claim_not_worse("p", "B ≥ A", "s", row("B", 0.79), a, ("B", "A")).verdict == "holds"
    assert claim_not_worse("p", "B ≥ A", "s", b, a, ("B", "A")).verdict == "does not hold here"
    assert claim_within("MedMNIST", "AUC 0.901", "s", row("R", 0.89), 0.901, "ResNet-18", 0.02).verdict == "holds"
    assert claim_within("MedMNIST", "AUC 0.901", "s", row("R", 0.85), 0.901, "ResNet-18", 0.02).verdict \
        == "does not hold here"
    assert claim_at_least("p", "≥ 0.9", "s", row("R", 0.85, 0.06), 0.9, "R").verdict == "holds"
    missing = claim_greater("p", "A > B", "s", a, None)
    assert missing.verdict == "not testable here" and "no rankable result" in missing.reason
    assert untestable("p", "at 224 px", "s", "we train at 64 px").verdict == "not testable here"
    assert "| **holds** |" in claims_table([claim_greater("p", "A > B", "s", a, b)])


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.2), st.floats(0, 1), st.floats(0, 0.2)), max_size=20))
def test_every_generated_verdict_follows_from_its_numbers(pairs):
    claims = [claim_greater("p", f"claim {i}", "s", row("A", va, ha), row("B", vb, hb))
              for i, (va, ha, vb, hb) in enumerate(pairs)]
    assert check_verdicts(claims) == []
    assert check_verdicts([c.record() for c in claims]) == []


def test_a_hand_edited_verdict_is_caught():
    rec = claim_greater("p", "A > B", "s", row("A", 0.71), row("B", 0.70)).record()
    assert check_verdicts([rec]) == []
    assert check_verdicts([{**rec, "verdict": "holds"}]) == ["A > B: stored 'holds', the numbers give "
                                                              "'does not hold here'"]


def test_a_paired_statistic_holds_only_when_its_interval_clears_the_target():
    def stat(v, lo, hi):
        return {"value": v, "low": lo, "high": hi, "seeds": 9, "collapsed": 0}

    up = claim_above("p", "A beats B", "s", stat(0.04, 0.01, 0.07), 0.0, "A − B (paired)")
    assert up.verdict == "holds" and "above 0" in up.reason
    cover = claim_above("p", "A beats B", "s", stat(0.02, -0.01, 0.05), 0.0, "A − B (paired)")
    assert cover.verdict == "does not hold here" and TIE in cover.reason
    down = claim_above("p", "A beats B", "s", stat(-0.05, -0.08, -0.02), 0.0, "A − B (paired)")
    assert down.verdict == "does not hold here" and "below 0" in down.reason
    edge = claim_above("p", "A beats B", "s", stat(0.03, 0.0, 0.06), 0.0, "A − B (paired)")
    assert edge.verdict == "does not hold here"  # an interval that touches the target does not clear it
    from medmae_nb.claims import parse_claims_table

    back = parse_claims_table(claims_table([up, cover, down, edge]))
    assert [b["rule"] for b in back] == ["above"] * 4 and back[2]["ours"]["A − B (paired)"]["low"] == -0.08
    assert check_verdicts(back) == []
    back[1]["verdict"] = "holds"
    assert check_verdicts(back) == ["A beats B: stored 'holds', the numbers give 'does not hold here'"]


def test_find_row():
    rows = [{"method": "a", "budget": 10.0, "metric": "auc"}, {"method": "a", "budget": 100.0, "metric": "auc"}]
    assert find_row(rows, method="a", budget=10)["budget"] == 10.0 and find_row(rows, method="b") is None
    with pytest.raises(ValueError, match="2 rows match"):
        find_row(rows, method="a")


def test_a_table_reads_back_and_its_verdicts_recompute():
    from medmae_nb.claims import parse_claims_table

    claims = [claim_greater("p", "A > B", "s", row("A, fine-tune", 0.80), row("B (x)", 0.70)),
              claim_greater("p", "B > A", "s", row("B", 0.71), row("A", 0.70, collapsed=1)),
              claim_within("MedMNIST", "AUC", "s", row("R", 0.89), 0.901, "ResNet-18", 0.02),
              claim_greater("p", "missing", "s", row("A", 0.8), None, ("A", "B")),
              untestable("p", "224 px", "s", "64 px here")]
    back = parse_claims_table(claims_table(claims))
    assert [b["verdict"] for b in back] == [c.verdict for c in claims]
    assert back[0]["ours"]["A, fine-tune"]["value"] == 0.8 and back[1]["ours"]["A"]["collapsed"] == 1
    assert check_verdicts(back) == []
    back[0]["verdict"] = "does not hold here"
    assert len(check_verdicts(back)) == 1


def test_every_claims_table_stored_in_a_chapter_has_verdicts_that_follow_from_its_numbers():
    """The chapters' claim-check tables as the book shows them: each verdict recomputed from the figures printed
    beside it."""
    import json

    from medmae_nb.claims import parse_claims_table
    from tools.book import ROOT, toc_notebooks

    found = 0
    for path in toc_notebooks():
        for cell in json.loads((ROOT / path).read_text())["cells"]:
            for out in cell.get("outputs", []):
                text = out.get("data", {}).get("text/markdown", "")
                text = "".join(text) if isinstance(text, list) else text
                if "| paper | claim |" in text:
                    records = parse_claims_table(text)
                    assert records and check_verdicts(records) == [], (path, check_verdicts(records))
                    found += len(records)
    assert found, "no chapter shows a claims table"
