"""Own-setting claims (:mod:`medmae_nb.studies`): paired statistics read from results tables, on small synthetic
tables written here, so each verdict's direction is known in advance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medmae_nb.claims import check_verdicts, claims_table, parse_claims_table
from medmae_nb.compare import FIELDS, _save_probs, _write_atomic
from medmae_nb.studies import (
    error_correlation,
    majority_rate,
    malignant_vs_benign,
    own_setting_claims,
    seed_runs,
    study_table,
)

N, K = 90, 3
Y = np.arange(N) % K


def runs(acc: float, seed: int, r: int = 3, y: np.ndarray = Y, k: int = K) -> np.ndarray:
    """``(r, N, k)`` probabilities of r runs that each get a share ``acc`` of the images right."""
    rng = np.random.default_rng(seed)
    out = np.full((r, len(y), k), 0.1 / (k - 1))
    for i in range(r):
        right = rng.random(len(y)) < acc
        pred = np.where(right, y, (y + 1 + rng.integers(0, k - 1, len(y))) % k)
        out[i, np.arange(len(y)), pred] = 0.9
    return out


def write(path: Path, entries: list[tuple], y: np.ndarray = Y) -> Path:
    """A results table of ``(method, protocol, unit, budget, pretrain_seed, probs)`` entries (bal_acc rows)."""
    rows, probs = [], {}
    for i, (method, protocol, unit, budget, seed, p) in enumerate(entries):
        key = f"{path.stem}-{i}"
        row = dict.fromkeys(FIELDS, "")
        row.update(dataset="busi", method=method, kind="ssl", pretrain_seed=str(seed), protocol=protocol, unit=unit,
                   budget=float(budget), n_train=30, steps=200, augment="flip", selection="fixed steps",
                   metric="bal_acc", value=0.5, low=0.4, high=0.6, seeds=len(p), collapsed=0, seconds=1.0,
                   profile="cpu", key=key, config='{"checkpoint": "x"}', per_seed=";".join(["0.5"] * len(p)))
        rows.append({k: row[k] for k in FIELDS})
        probs[key] = p
    _write_atomic(path, rows)
    _save_probs(path, probs, y)
    return path


def per_seed(method: str, protocol: str, unit: str, budget: float, acc: float, base: int) -> list[tuple]:
    return [(method, protocol, unit, budget, s, runs(acc, base + s)) for s in (0, 1, 2)]


def test_runs_are_read_seed_major_and_missing_seeds_give_none(tmp_path):
    entries = per_seed("A", "fine-tune", "per_class", 10, 0.8, 0)
    t = write(tmp_path / "t.csv", entries)
    got = seed_runs(t, "A", "fine-tune", 10)
    assert got.probs.shape == (9, N, K) and got.n_train == 30
    np.testing.assert_allclose(got.probs[3:6], entries[1][5] / entries[1][5].sum(-1, keepdims=True), atol=1e-3)
    assert seed_runs(t, "A", "fine-tune", 100) is None and seed_runs(t, "B", "fine-tune", 10) is None
    write(tmp_path / "u.csv", entries[:2])
    assert seed_runs(tmp_path / "u.csv", "A", "fine-tune", 10) is None  # seed 2 missing
    assert seed_runs(tmp_path / "u.csv", "A", "fine-tune", 10, seeds=(0, 1)).probs.shape == (6, N, K)


def test_chapter_01_mask_ratio_and_patch_size_verdicts_follow_from_paired_differences(tmp_path):
    write(tmp_path / "busi-cpu.csv", per_seed("MAE p8", "fine-tune", "per_class", 10, 0.85, 0))
    write(tmp_path / "busi-cpu-study.csv", per_seed("mae-micro-p8-m50-busi", "fine-tune", "per_class", 10, 0.5, 10)
          + per_seed("mae-micro-p8-m90-busi", "fine-tune", "per_class", 10, 0.85, 20))
    claims = own_setting_claims("01", ["busi"], folder=tmp_path, n_boot=200)
    assert len(claims) == 4
    p16, m50, m90, auc = claims
    assert "malignant" in auc.claim and auc.verdict == "not testable here"  # BUSI's binary task: p16 not run
    assert "16-px" in p16.claim and p16.verdict == "not testable here" and "busi-cpu-study.csv" in p16.reason
    assert "0.5" in m50.claim and m50.verdict == "holds" and m50.ours[next(iter(m50.ours))]["low"] > 0
    assert "0.9" in m90.claim and m90.verdict == "does not hold here"  # equal accuracy: the interval covers 0
    assert "9 paired runs" in m50.setting
    assert check_verdicts(claims) == [] and check_verdicts(parse_claims_table(claims_table(claims))) == []
    assert len(own_setting_claims("01", ["breastmnist"], folder=tmp_path, n_boot=50)) == 0  # no table: no budgets


def test_chapter_01_malignancy_auc_compares_the_patch_sizes_on_benign_and_malignant_images_only(tmp_path):
    good, bad = runs(0.95, 0), runs(0.95, 1)
    mal = Y == 2
    bad[:, mal] = bad[:, mal][..., [0, 2, 1]]  # p16 calls every malignant lesion benign (normal images untouched)
    write(tmp_path / "busi-cpu.csv", [("MAE p8", "fine-tune", "per_class", 10, s, good) for s in (0, 1, 2)])
    write(tmp_path / "busi-cpu-study.csv", [("mae-micro-p16-busi", "fine-tune", "per_class", 10, s, bad)
                                            for s in (0, 1, 2)])
    auc = own_setting_claims("01", ["busi"], folder=tmp_path, n_boot=100)[-1]
    fig = next(iter(auc.ours.values()))
    assert "malignancy AUC" in auc.claim and auc.verdict == "holds" and fig["value"] > 0.3
    assert "malignant vs benign" in auc.setting and check_verdicts([auc]) == []


def test_chapter_04_slope_holds_when_moco_loses_more_as_labels_shrink(tmp_path):
    fr = (0.01, 0.1, 1.0)
    flat = [e for i, f in enumerate(fr) for e in per_seed("SparK", "fine-tune", "fraction", f, 0.8, 10 * i)]
    steep = [e for i, f in enumerate(fr) for e in per_seed("MoCo v2", "fine-tune", "fraction", f,
                                                              (0.4, 0.6, 0.8)[i], 100 + 10 * i)]
    write(tmp_path / "busi-cpu-fractions.csv", flat + steep)
    (claim,) = own_setting_claims("04", ["busi"], folder=tmp_path, n_boot=200)
    assert claim.verdict == "holds"
    fig = next(iter(claim.ours.values()))
    assert fig["value"] == pytest.approx(0.2, abs=0.06)  # MoCo gains ~0.2 per tenfold labels, SparK ~0
    write(tmp_path / "busi-cpu-fractions.csv",
          [(("MoCo v2" if m == "SparK" else "SparK"), *rest) for m, *rest in flat + steep])
    (swapped,) = own_setting_claims("04", ["busi"], folder=tmp_path, n_boot=200)
    assert swapped.verdict == "does not hold here" and "below 0" in swapped.reason
    (missing,) = own_setting_claims("04", ["pneumoniamnist"], folder=tmp_path, n_boot=200)
    assert missing.verdict == "not testable here" and "pneumoniamnist-cpu-fractions.csv" in missing.reason


def test_chapter_05_share_of_the_all_label_fine_tune(tmp_path):
    full = per_seed("DINO", "fine-tune", "fraction", 1.0, 0.75, 0)
    write(tmp_path / "busi-cpu-dino.csv", per_seed("DINO", "SVM", "per_class", 100, 0.95, 10) + full)
    (near,) = own_setting_claims("05", ["busi"], folder=tmp_path, n_boot=200)
    assert near.verdict == "holds"  # 0.95 − 0.95 × 0.75 > 0, clearly
    write(tmp_path / "busi-cpu-dino.csv", per_seed("DINO", "SVM", "per_class", 100, 0.55, 10) + full)
    (far,) = own_setting_claims("05", ["busi"], folder=tmp_path, n_boot=200)
    assert far.verdict == "does not hold here" and check_verdicts([far]) == []
    from medmae_nb.studies import share_of_full

    ratio = share_of_full("busi", folder=tmp_path, n_boot=200)
    assert 0.6 < ratio.value < 0.85 and ratio.low < ratio.value < ratio.high  # about 0.55 / 0.75 in accuracy
    assert share_of_full("breastmnist", folder=tmp_path) is None


def test_chapter_02_malignancy_auc_of_miram_against_the_same_images_mae(tmp_path):
    entries = (per_seed("mae-micro-p8-hires-busi", "fine-tune", "per_class", 10, 0.45, 0)
               + per_seed("miram-micro-p8-native-busi", "fine-tune", "per_class", 10, 0.95, 10)
               + per_seed("miram-micro-p8-upsampled-busi", "fine-tune", "per_class", 10, 0.45, 20))
    write(tmp_path / "busi-cpu-study.csv", entries)
    claims = own_setting_claims("02", ["busi"], folder=tmp_path, n_boot=200)
    assert [c.verdict for c in claims[:2]] == ["holds", "holds"]  # native target: AUC and AP
    assert all("malignant vs benign" in c.setting for c in claims) and check_verdicts(claims) == []


def test_chapter_03_entropy_against_random_masking(tmp_path):
    write(tmp_path / "busi-cpu.csv", per_seed("entropy-masked ConvNeXt", "fine-tune", "per_class", 10, 0.6, 0))
    write(tmp_path / "busi-cpu-study.csv", per_seed("mconvnext-atto-random-busi", "fine-tune", "per_class", 10,
                                                    0.6, 10))
    c, ens = own_setting_claims("03", ["busi"], folder=tmp_path, n_boot=200)
    assert c.verdict == "does not hold here" and "not distinguishable" in c.reason
    assert ens.verdict == "not testable here" and "members' runs" in ens.reason  # no twin in the table
    twin = ("transfer ConvNeXt", "fine-tune", "per_class", 10, "", runs(0.6, 99))
    write(tmp_path / "busi-cpu.csv", per_seed("entropy-masked ConvNeXt", "fine-tune", "per_class", 10, 0.6, 0)
          + [twin])
    _, ens = own_setting_claims("03", ["busi"], folder=tmp_path, n_boot=200)
    assert ens.verdict in ("holds", "does not hold here") and "error correlation" in ens.setting
    assert check_verdicts([ens]) == []


def test_task_helpers():
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.6, 0.3]])
    two, y = malignant_vs_benign(p, np.array([2, 0, 1]), ("normal", "benign", "malignant"))
    assert y.tolist() == [1, 0] and two[:, 1] == pytest.approx([0.5 / 0.8, 0.3 / 0.9])
    _, y2 = malignant_vs_benign(p[:, :2], np.array([0, 1, 1]), ("malignant", "normal, benign"))
    assert y2.tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="'malignant' class"):
        malignant_vs_benign(p, np.array([0, 1, 2]), ("a", "b", "c"))
    assert majority_rate(np.array([0, 0, 1, 2])) == 0.5
    a = runs(0.6, 1)
    assert error_correlation(a, a, Y) == pytest.approx(1.0)
    assert abs(error_correlation(a, runs(0.6, 2), Y)) < 0.3
    with pytest.raises(KeyError, match="kinds: main, study"):
        study_table("busi", "other")
    with pytest.raises(KeyError, match="chapters: 01"):
        own_setting_claims("06")


def test_the_figures_draw_each_pre_training_seed_and_the_pooled_rows(tmp_path):
    from medmae_nb.compare import pool_pretrain_seeds, read_results
    from medmae_nb.profiles import get_profile
    from medmae_nb.studies import fraction_figure, share_figure

    fr = (0.1, 1.0)
    entries = [e for i, f in enumerate(fr) for m in ("SparK", "MoCo v2")
               for e in per_seed(m, "fine-tune", "fraction", f, 0.6 + 0.2 * i, 10 * i)]
    table = write(tmp_path / "busi-cpu-fractions.csv", entries)
    pool_pretrain_seeds("busi", {**get_profile("smoke"), "bootstrap": 20}, table, [0, 1, 2], evaluate=False,
                        verbose=False)
    assert any(r["pretrain_seed"] == "0+1+2" for r in read_results(table))
    fig = fraction_figure("busi", folder=tmp_path)
    ax = fig.axes[0]
    assert len(ax.lines) >= 2 * 3 and "SparK (pre-training seeds 0+1+2)" in ax.get_legend_handles_labels()[1]
    dino = per_seed("DINO", "SVM", "per_class", 10, 0.6, 0) + per_seed("DINO", "SVM", "per_class", 100, 0.7, 5) \
        + per_seed("DINO", "fine-tune", "fraction", 1.0, 0.8, 9)
    table = write(tmp_path / "busi-cpu-dino.csv", dino)
    pool_pretrain_seeds("busi", {**get_profile("smoke"), "bootstrap": 20}, table, [0, 1, 2], evaluate=False,
                        verbose=False)
    write(tmp_path / "busi-cpu.csv", [("SmallCNN (supervised)", "fine-tune", "per_class", 100, "", runs(0.7, 3))])
    labels = share_figure("busi", folder=tmp_path).axes[0].get_legend_handles_labels()[1]
    assert "DINO + SVM" in labels and "95% of it" in labels and any("fine-tuned, all" in x for x in labels)
    assert "SmallCNN (supervised), fine-tuned" in labels  # the yardstick beside the claim


def test_lesion_size_tertiles_and_the_small_lesion_claim(tmp_path):
    from medmae_nb.studies import paired_by_group, size_tertiles

    masks = np.zeros((N, 4, 4), bool)
    for i in range(N):
        masks[i].flat[: i % 10] = True  # areas 0..9; area 0: no lesion
    t = size_tertiles(masks)
    assert set(t[np.arange(N) % 10 == 0]) == {-1} and set(t) == {-1, 0, 1, 2}
    assert t[1] == 0 and t[9] == 2  # the smallest area in the first third, the largest in the last
    small = t == 0
    good = runs(0.9, 0)
    worse = good.copy()
    worse[:, small] = worse[:, small][..., ::-1]  # wrong on the small lesions only
    write(tmp_path / "busi-cpu.csv", [("MAE p8", "fine-tune", "per_class", 100, s, good) for s in (0, 1, 2)])
    write(tmp_path / "busi-cpu-study.csv", [("mae-micro-p16-busi", "fine-tune", "per_class", 100, s, worse)
                                            for s in (0, 1, 2)])
    a = seed_runs(tmp_path / "busi-cpu.csv", "MAE p8", "fine-tune", 100)
    b = seed_runs(tmp_path / "busi-cpu-study.csv", "mae-micro-p16-busi", "fine-tune", 100)
    by = paired_by_group(a, b, t, n_boot=100)
    assert by[0].low > 0 and by[2].value == pytest.approx(0.0)
    claims = own_setting_claims("01", ["busi"], folder=tmp_path, n_boot=100, masks={"busi": masks})
    assert "smallest third" in claims[0].claim and claims[0].verdict == "holds"
    with pytest.raises(ValueError, match="masks for"):
        own_setting_claims("01", ["busi"], folder=tmp_path, n_boot=50, masks={"busi": masks[:5]})


def test_a_map_beats_its_controls_only_with_both_scores_clear():
    from medmae_nb.evaluate import MetricCI
    from medmae_nb.studies import map_claims

    scores = {"MAE p8: rollout": {"pointing": MetricCI(0.8, 0.7, 0.9), "mass ratio": MetricCI(2.0, 1.5, 2.5)},
              "MAE p8: Grad-CAM": {"pointing": MetricCI(0.3, 0.2, 0.4), "mass ratio": MetricCI(1.0, 0.8, 1.2)},
              "scratch p8: rollout": {"pointing": MetricCI(0.9, 0.8, 1.0), "mass ratio": MetricCI(3.0, 2.0, 4.0)},
              "control: darkness map": {"pointing": MetricCI(0.4, 0.3, 0.5), "mass ratio": MetricCI(1.1, 1, 1.2)}}
    claims = map_claims(scores, {"pointing_game": 0.1, "mass_ratio": 1.0}, "MAE p8", "BUSI, 100/class",
                        similarity={"MAE p8: rollout": 0.25})
    assert [c.verdict for c in claims] == ["holds", "holds", "holds"] + ["does not hold here"] * 3
    assert "re-drawn weights 0.25" in claims[0].setting and "re-drawn" not in claims[3].setting
    assert check_verdicts(parse_claims_table(claims_table(claims))) == []


def test_the_settings_figure_names_what_has_not_run(tmp_path):
    from medmae_nb.compare import pool_pretrain_seeds
    from medmae_nb.profiles import get_profile
    from medmae_nb.studies import settings_figure

    t = write(tmp_path / "busi-cpu.csv", per_seed("MAE p8", "fine-tune", "per_class", 10, 0.7, 0))
    pool_pretrain_seeds("busi", {**get_profile("smoke"), "bootstrap": 20}, t, [0, 1, 2], evaluate=False,
                        verbose=False)
    fig = settings_figure("busi", {"mask 0.75": ("main", "MAE p8"), "mask 0.9": ("study", "mae-micro-p8-m90-busi")},
                          folder=tmp_path)
    ax = fig.axes[0]
    assert "not run yet: mask 0.9" in ax.get_title() and len(ax.lines) >= 1


def test_a_collapsed_run_leaves_the_statistic_with_its_partners():
    from medmae_nb.studies import drop_collapsed_pairs

    a, b = runs(0.8, 0), runs(0.8, 1)
    b[1] = 0.0
    b[1, :, 0] = 1.0  # run 1 of B predicts class 0 everywhere
    kept, dropped = drop_collapsed_pairs(np.stack([a, b]), Y)
    assert dropped == 1 and kept.shape[:2] == (2, 2)
    np.testing.assert_array_equal(kept[0], a[[0, 2]])  # A's run 1 leaves with its partner


def test_a_paired_claim_counts_collapsed_runs_and_refuses_when_most_collapsed(tmp_path):
    bad = runs(0.8, 5)
    bad[:2] = 0.0
    bad[:2, :, 0] = 1.0  # two of three runs of every seed collapsed: 6 of 9
    write(tmp_path / "busi-cpu.csv", per_seed("MAE p8", "fine-tune", "per_class", 10, 0.85, 0))
    write(tmp_path / "busi-cpu-study.csv", [("mae-micro-p8-m90-busi", "fine-tune", "per_class", 10, s, bad)
                                            for s in (0, 1, 2)])
    m90 = own_setting_claims("01", ["busi"], folder=tmp_path, n_boot=100)[2]
    fig = next(iter(m90.ours.values()))
    assert fig["collapsed"] == 6 and fig["seeds"] == 9 and m90.verdict == "not testable here"
    assert check_verdicts(parse_claims_table(claims_table([m90]))) == []
