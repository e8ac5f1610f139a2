"""Each chapter's paper claims on the fair tables: rows picked right, verdicts from the numbers, and the tables the
chapters store equal to what the committed results give."""

from __future__ import annotations

import csv
import json

import pytest

from medmae_nb.claims import check_verdicts, claims_table, parse_claims_table
from medmae_nb.compare import FIELDS, SMALL_CNN
from medmae_nb.paper_claims import CHAPTERS, chapter_claims, fair_rows, fair_summary, fair_tables


def cell(method, kind, value, budget=10.0, protocol="fine-tune", half=0.02, collapsed=0, seeds=3, ps="0"):
    return {"dataset": "phantom", "method": method, "kind": kind, "pretrain_seed": ps, "protocol": protocol,
            "unit": "per class", "budget": budget, "n_train": int(3 * budget), "steps": 200, "augment": "flip",
            "selection": "fixed steps", "metric": "bal_acc", "value": value, "low": value - half,
            "high": value + half, "seeds": seeds, "per_seed": "", "collapsed": collapsed, "seconds": 1.0,
            "profile": "cpu", "key": f"{method}|{protocol}|{budget}|{ps}", "config": "{}"}


def table(values, budgets=(10.0, 100.0)):
    """Rows of ``{(method, kind, protocol): value}`` at every budget (the larger budget adds 0.1)."""
    return [cell(m, k, v + 0.1 * i, b, p) for i, b in enumerate(budgets) for (m, k, p), v in values.items()]


def by_claim(claims, text):
    return [c for c in claims if text in c.claim]


def test_chapter_04_verdicts_follow_the_rows():
    rows = table({("SparK", "ssl", "fine-tune"): 0.80, ("MoCo v2", "ssl", "fine-tune"): 0.70,
                  ("MoCo v2", "ssl", "SVM"): 0.79, ("scratch ResNet-18 micro", "scratch", "fine-tune"): 0.50,
                  (SMALL_CNN, "supervised", "fine-tune"): 0.785})
    claims = chapter_claims("04", {"phantom": rows})
    assert check_verdicts(claims) == []
    vs_moco = by_claim(claims, "contrastive")
    # each at its best protocol: MoCo's SVM (0.79) is within SparK's interval -> a tie, not a win
    assert [c.verdict for c in vs_moco] == ["does not hold here"] * 2
    assert "MoCo v2, SVM" in vs_moco[0].figure() and "not distinguishable" in vs_moco[0].reason
    assert [c.verdict for c in by_claim(claims, "from scratch")] == ["holds", "holds"]
    assert by_claim(claims, "supervised CNN")[0].verdict == "does not hold here"
    assert "200 steps for every fine-tuned learner" in claims[0].setting
    assert "one pre-training run" in claims[0].setting


def test_missing_and_collapsed_rows_make_a_claim_untestable_with_its_reason():
    rows = table({("MAE p8", "ssl", "fine-tune"): 0.8, (SMALL_CNN, "supervised", "fine-tune"): 0.6})
    rows += [cell("scratch ViT-micro p8", "scratch", 0.4, b, collapsed=2) for b in (10.0, 100.0)]
    claims = chapter_claims("01", {"breastmnist": rows})
    scratch = by_claim(claims, "from scratch")
    assert [c.verdict for c in scratch] == ["not testable here"] * 2 and "most runs collapsed" in scratch[0].reason
    patches = by_claim(claims, "MAE p8 > MAE p16")
    assert [c.verdict for c in patches] == ["not testable here"] * 2
    assert all("16-px" in c.reason for c in patches)
    assert [c.verdict for c in by_claim(claims, "supervised CNN")] == ["holds", "holds"]
    assert check_verdicts(parse_claims_table(claims_table(claims))) == []


def test_ensemble_is_set_against_the_better_member():
    rows = table({("entropy-masked ConvNeXt", "ssl", "fine-tune"): 0.70, ("transfer ConvNeXt", "transfer",
                  "fine-tune"): 0.78, ("ensemble: entropy ConvNeXt + transfer", "ensemble", "fine-tune"): 0.85,
                  ("scratch ConvNeXt-Atto", "scratch", "fine-tune"): 0.6,
                  (SMALL_CNN, "supervised", "fine-tune"): 0.9})
    claims = chapter_claims("03", {"phantom": rows})
    ens = by_claim(claims, "averaging")
    assert [c.verdict for c in ens] == ["holds", "holds"]
    assert "transfer ConvNeXt" in ens[0].figure()  # the better member, not the entropy one
    assert by_claim(claims, "random masking")[0].verdict == "not testable here"
    assert by_claim(claims, "supervised CNN")[0].verdict == "does not hold here"


def test_chapter_05_uses_frozen_protocols_for_dino_and_any_for_the_cnn():
    rows = table({("DINO", "ssl", "fine-tune"): 0.95, ("DINO", "ssl", "SVM"): 0.70, ("DINO", "ssl", "kNN"): 0.60,
                  ("DINO", "ssl", "logistic regression"): 0.66, (SMALL_CNN, "supervised", "fine-tune"): 0.62,
                  ("scratch ViT-micro p8", "scratch", "SVM"): 0.40})
    claims = chapter_claims("05", {"phantom": rows})
    vs_cnn = by_claim(claims, "end-to-end")
    assert all("DINO, SVM" in c.figure() for c in vs_cnn)  # not DINO's fine-tune
    assert [c.verdict for c in vs_cnn] == ["holds", "holds"]
    assert by_claim(claims, "at least as good as logistic regression")[0].verdict == "holds"
    assert [c.verdict for c in by_claim(claims, "random features")] == ["holds", "holds"]


def test_every_chapter_has_claims_and_chapter_06_is_elsewhere():
    rows = table({(m, "ssl", "fine-tune"): 0.5 for ch in CHAPTERS.values() for m in ch})
    for ch in CHAPTERS:
        claims = chapter_claims(ch, {"phantom": rows, "busi": rows})
        assert claims and all(c.chapter == ch for c in claims) and check_verdicts(claims) == []
        assert {c.setting.split(",")[0] for c in claims} == {"phantom", "busi"}
    with pytest.raises(KeyError, match="06"):
        chapter_claims("06", {"phantom": rows})


def test_fair_tables_merge_the_variants_and_fair_summary_names_what_is_missing(tmp_path):
    def write(path, rows):
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)

    write(tmp_path / "phantom-cpu.csv", table({("MAE p8", "ssl", "fine-tune"): 0.8}))
    write(tmp_path / "phantom-cpu-variants.csv", table({("mae-micro-p16", "ssl", "fine-tune"): 0.6}))
    tables = fair_tables(folder=tmp_path)
    assert list(tables) == ["phantom"]  # no BreastMNIST / BUSI table there
    assert {r["method"] for r in tables["phantom"]} == {"MAE p8", "MAE p16"}
    text = fair_summary("01", tables)
    assert "not in the table yet: scratch ViT-micro p8, SmallCNN (supervised)" in text
    assert "MAE p16, fine-tune" in text and "steps" in text
    assert {r["method"] for r in fair_rows("01", tables["phantom"])} == {"MAE p8", "MAE p16"}


def test_the_chapters_show_the_claims_the_committed_tables_give():
    """Chapters 01-05 end with two claims tables, the fair comparison's and the paper's own setting's; each is the
    one the committed results give now (a table re-made without re-executing its chapters fails here). Chapter 01's
    own-setting table also holds claims made from the data (lesion sizes, maps): the rows the tables alone give must
    be among its rows."""
    from medmae_nb.studies import own_setting_claims
    from tools.book import ROOT

    tables = fair_tables()
    for ch in CHAPTERS:
        path = next((ROOT / "nbs").glob(f"{ch}-*.ipynb"))
        shown = [
            "".join(out["data"]["text/markdown"]) for c in json.loads(path.read_text())["cells"]
            for out in c.get("outputs", []) if "| paper | claim |" in "".join(out.get("data", {})
                                                                              .get("text/markdown", ""))]
        assert len(shown) == 2, f"{path.name}: {len(shown)} claims tables"
        assert shown[0] == claims_table(chapter_claims(ch, tables)), f"{path.name}: re-execute it"
        own = claims_table(own_setting_claims(ch)).splitlines()[2:]
        missing = [row[:120] for row in own if row not in shown[1].splitlines()]
        assert not missing, f"{path.name}: its own-setting table is stale (re-execute it): {missing[:2]}"


def test_the_setting_says_which_rows_pool_pretraining_seeds():
    base = {("SparK", "ssl", "fine-tune"): 0.80, ("MoCo v2", "ssl", "fine-tune"): 0.70,
            ("scratch ResNet-18 micro", "scratch", "fine-tune"): 0.50, (SMALL_CNN, "supervised", "fine-tune"): 0.6}
    rows = table(base)
    spark_pooled = [{**r, "pretrain_seed": "0+1+2", "key": r["key"] + "+"} for r in rows if r["method"] == "SparK"]
    mixed = chapter_claims("04", {"busi": rows + spark_pooled})[0].setting
    assert "pre-training seeds 0+1+2 where a row says so, else one run" in mixed
    moco_pooled = [{**r, "pretrain_seed": "0+1+2", "key": r["key"] + "+"} for r in rows if r["method"] == "MoCo v2"]
    every = chapter_claims("04", {"busi": rows + spark_pooled + moco_pooled})[0].setting
    assert "pre-training seeds 0+1+2" in every and "else one run" not in every


def test_chapter_06_gathers_every_papers_own_setting_claims():
    """Chapter 06 shows chapters 01-05's own-setting claims in one table: the one the committed tables give now."""
    from medmae_nb.studies import own_setting_claims
    from tools.book import ROOT

    cells = json.loads((ROOT / "nbs" / "06-benchmark.ipynb").read_text())["cells"]
    code = next(c for c in cells if "own_setting_claims(ch)" in "".join(c["source"]))
    shown = "".join("".join(out["data"]["text/markdown"]) for out in code["outputs"]
                    if "text/markdown" in out.get("data", {}))
    own = own_setting_claims("01") + own_setting_claims("02") + own_setting_claims("03") \
        + own_setting_claims("04") + own_setting_claims("05")
    assert shown == claims_table(own), "06-benchmark.ipynb: its own-setting table is stale (re-execute it)"
    assert {c.chapter for c in own} == {"01", "02", "03", "04", "05"}
