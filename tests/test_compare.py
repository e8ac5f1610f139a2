"""``bench methods`` / :mod:`medmae_nb.benchmark`: a resumable, tidy results table over methods and protocols."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medmae_nb import bench
from medmae_nb import compare as benchmark
from medmae_nb.compare import FIELDS, METHODS, read_results, run_methods, summary_table
from medmae_nb.data import DataError
from medmae_nb.evaluate import METRICS
from medmae_nb.pretrained import card_path
from medmae_nb.profiles import get_profile

RESULTS_DIR = Path(benchmark.__file__).parent / "results"

# the smoke profile, smaller still: 2 seeds, budgets 2 and 5 per class, two-step fine-tunes
TINY = {**get_profile("smoke"), "ft_seeds": (0, 1), "bootstrap": 20}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _run(out, methods=("scratch ResNet-18 micro",), protocols=("fine-tune", "logistic regression"), **kw):
    return run_methods("phantom", TINY, out, methods=list(methods), protocols=list(protocols), device="cpu",
                       verbose=False, **kw)


def test_fractions_replace_the_profiles_budgets_with_shares_of_the_pool(cache):
    """Chapter 04's sweep: budgets as shares of the labelled pool, every learner the same steps at each; a share
    outside (0, 1] is refused with the fix."""
    from medmae_nb.protocol import protocol_for

    res = _run(cache / "f.csv", methods=("scratch ResNet-18 micro", "SmallCNN (supervised)"),
               protocols=("fine-tune",), fractions=[1.0, 0.5])
    rows = [r for r in read_results(cache / "f.csv") if r["metric"] == "bal_acc"]
    assert {r["unit"] for r in rows} == {"fraction"} and sorted({r["budget"] for r in rows}) == [0.5, 1.0]
    proto = protocol_for(TINY)
    for b in (0.5, 1.0):
        at = [r for r in rows if r["budget"] == b]
        assert len(at) == 2 and len({r["steps"] for r in at}) == 1  # the same steps for both learners
        assert at[0]["steps"] == proto.steps(int(at[0]["n_train"]))
    n = {r["budget"]: int(r["n_train"]) for r in rows}
    assert n[0.5] < n[1.0]
    assert res.rows
    with pytest.raises(ValueError, match=r"fractions must lie in \(0, 1\].*0.01 0.1 1"):
        _run(None, fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match="fractions or per_class budgets, not both"):
        _run(None, fractions=[0.5], per_class=[2])


def test_per_class_budgets_replace_the_profiles_and_drop_those_above_the_largest_class(cache):
    """Chapter 05's sweep: labels per class, every protocol at each; a budget above the pool's largest class would
    only repeat the whole pool, so it is dropped."""
    _run(cache / "p.csv", protocols=("logistic regression",), per_class=[3, 1, 10_000])
    rows = [r for r in read_results(cache / "p.csv") if r["metric"] == "bal_acc"]
    assert {r["unit"] for r in rows} == {"per_class"} and sorted(r["budget"] for r in rows) == [1, 3]
    assert sorted(int(r["n_train"]) for r in rows) == [3, 9]  # the smoke phantom's 3 classes


def test_rows_are_tidy_and_each_carries_its_config(cache):
    res = _run(cache / "r.csv")
    rows = read_results(cache / "r.csv")
    assert rows == res.rows and len(rows) == 1 * 2 * 2 * 3  # methods × protocols × budgets × metrics
    assert {(r["protocol"], r["budget"], r["metric"]) for r in rows} == {
        (p, b, m) for p in ("fine-tune", "logistic regression") for b in (2, 5) for m in ("bal_acc", "acc", "auc")}
    for r in rows:
        per_seed = [float(v) for v in r["per_seed"].split(";")]
        assert len(per_seed) == r["seeds"] == 2
        if not r["collapsed"]:  # a collapsed seed is left out of the mean (tests/test_claims.py)
            assert r["value"] == pytest.approx(np.mean(per_seed), abs=1e-4)  # the mean over seeds, not one seed
            assert r["low"] <= r["value"] <= r["high"]
        config = json.loads(r["config"])
        assert config["seeds"] == [0, 1] and config["protocol"] == r["protocol"] and config["kind"] == "scratch"
        assert config["data"]["pool"]["n"] == TINY["n_pool"]
    with (cache / "r.csv").open() as f:
        assert tuple(next(csv.reader(f))) == FIELDS
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_a_second_run_skips_finished_rows_and_a_lost_row_is_recomputed(cache, monkeypatch):
    out = cache / "r.csv"
    first = _run(out)
    calls = []
    real = benchmark.budget_sweep
    monkeypatch.setattr(benchmark, "budget_sweep", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    again = _run(out)
    assert calls == [] and again.skipped == 4 and again.rows == first.rows
    # drop the fine-tune rows of budget 5: only they are run again, and (cached per run) give the same numbers
    kept = [r for r in first.rows if not (r["protocol"] == "fine-tune" and r["budget"] == 5)]
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
    third = _run(out)
    assert calls == [[5]] and third.skipped == 3
    def same(rows):  # all but the wall time, near 0 for a run read from the cache
        return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows),
                      key=lambda r: (r["protocol"], r["budget"], r["metric"]))

    assert same(third.rows) == same(first.rows)


def test_all_sweeps_returns_the_sweeps_of_rows_read_back(cache):
    out = cache / "r.csv"
    first = _run(out, protocols=("kNN",))
    assert _run(out, protocols=("kNN",)).sweeps == {}
    again = _run(out, protocols=("kNN",), all_sweeps=True)
    assert again.skipped == 2 and again.rows == first.rows  # no new row ...
    s0, s1 = first.sweeps[("scratch ResNet-18 micro", "kNN")], again.sweeps[("scratch ResNet-18 micro", "kNN")]
    assert np.array_equal(s0.probs, s1.probs)  # ... but the same runs, read from the cache


def test_another_config_is_another_row(cache):
    out = cache / "r.csv"
    _run(out, protocols=("logistic regression",))
    res = _run(out, protocols=("logistic regression",), seeds=(0, 1, 2))  # three seeds: new rows beside the old
    assert res.skipped == 0 and len(read_results(out)) == len(res.rows) == 2 * 2 * 3  # old and new rows
    assert {r["seeds"] for r in read_results(out)} == {2, 3}


def test_the_ensemble_row_averages_its_members_probabilities(cache):
    members = benchmark.ENSEMBLES["ensemble: entropy ConvNeXt + transfer"]
    res = _run(cache / "r.csv", methods=members, protocols=("fine-tune",))
    a, b = (res.sweeps[(m, "fine-tune")] for m in members)
    ens = [r for r in res.rows if r["method"] == "ensemble: entropy ConvNeXt + transfer" and r["metric"] == "auc"]
    assert [r["budget"] for r in ens] == [2, 5]
    for i, r in enumerate(ens):
        want = [METRICS["auc"](a.y_test, (pa + pb) / 2) for pa, pb in zip(a.probs[i], b.probs[i])]
        assert [float(v) for v in r["per_seed"].split(";")] == pytest.approx(want, abs=1e-4)
    assert not any(r["method"] == "ensemble: all self-supervised" for r in res.rows)  # members missing: no row


def test_bad_input_says_what_is_wrong(cache):
    with pytest.raises(ValueError, match="unknown method 'SimCLR'.*or any recipe: .*mae-micro-p8"):
        _run(cache / "r.csv", methods=("SimCLR",))
    with pytest.raises(ValueError, match="unknown protocol.*'ridge'"):
        _run(cache / "r.csv", protocols=("ridge",))
    with pytest.raises(DataError, match="unknown dataset spec 'cifar'.*medmnist:NAME"):
        run_methods("cifar", TINY, None, device="cpu")
    foreign = cache / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="foreign.csv is not a benchmark results table"):
        _run(foreign)
    assert foreign.read_text() == "a,b\n1,2\n"  # left as it was


def test_transfer_weights_are_left_out_on_their_own_training_data():
    assert "transfer ConvNeXt" not in benchmark.default_methods("pneumoniamnist")  # trained with its labels
    assert benchmark.default_methods("busi") == list(METHODS)


def test_costs_come_from_the_committed_cards():
    rows = {r["method"]: r for r in benchmark.method_costs()}
    assert set(rows) == set(METHODS)
    dino = json.loads(card_path("dino-vit-micro").read_text())
    assert rows["DINO"]["pretrain_min"] == pytest.approx(dino["wall_time_s"] / 60)
    assert rows["DINO"]["s_per_step"] == pytest.approx(dino["wall_time_s"] / rows["DINO"]["steps"])
    assert rows["scratch ResNet-18 micro"]["pretrain_min"] == 0 and rows["scratch ResNet-18 micro"]["params_M"] > 0.5
    assert all(r["params_M"] > 0 for r in rows.values())


def test_every_learner_at_a_budget_gets_the_same_steps_and_the_yardsticks_are_in_the_table(cache):
    """The SmallCNN and a scratch backbone beside a method, one protocol: equal steps, augmentation and selection in
    every fine-tune row at each budget; the SmallCNN has no frozen-feature rows (it is only trained)."""
    methods = ["scratch ResNet-18 micro", benchmark.SMALL_CNN]
    res = _run(cache / "r.csv", methods=methods, protocols=("fine-tune", "kNN"))
    ft = [r for r in res.rows if r["protocol"] == "fine-tune" and r["metric"] == "bal_acc"]
    assert {r["method"] for r in ft} == set(methods) and {r["kind"] for r in ft} == {"scratch", "supervised"}
    proto = benchmark.eval_protocol("phantom", TINY)
    for b in (2, 5):
        cells = [r for r in ft if r["budget"] == b]
        assert len(cells) == 2 and {(r["steps"], r["augment"], r["selection"]) for r in cells} == {
            (proto.steps(cells[0]["n_train"]), "flip", "fixed steps")}
    assert not [r for r in res.rows if r["method"] == benchmark.SMALL_CNN and r["protocol"] != "fine-tune"]
    assert {r["steps"] for r in res.rows if r["protocol"] == "kNN"} == {0}
    assert all(json.loads(r["config"])["eval_protocol"] == proto.describe() for r in res.rows)


def test_the_default_list_holds_every_backbone_from_scratch_and_the_small_cnn():
    specs = list(METHODS.values())
    ssl_backbones = {m.backbone for m in specs if m.kind == "ssl"}
    assert {m.backbone for m in specs if m.kind == "scratch"} == ssl_backbones  # one scratch row per backbone
    assert [m.name for m in specs if m.kind == "supervised"] == [benchmark.SMALL_CNN]


def test_best_per_method_skips_collapsed_results():
    row = {"method": "A", "protocol": "SVM", "unit": "per_class", "budget": 10, "metric": "bal_acc", "value": 0.5,
           "low": 0.4, "high": 0.6, "seeds": 3, "collapsed": 0, "pretrain_seed": "0"}
    rows = [row, {**row, "protocol": "kNN", "value": 0.9, "collapsed": 2}, {**row, "method": "B", "collapsed": 3,
                                                                              "value": float("nan")}]
    best = benchmark.best_per_method(rows, 10)
    assert list(best) == ["A"] and best["A"]["protocol"] == "SVM"  # most runs collapsed: never ranked
    one_bad = [row, {**row, "protocol": "kNN", "value": 0.9, "collapsed": 1}]
    assert benchmark.best_per_method(one_bad, 10)["A"]["protocol"] == "kNN"  # ranked on its two good runs
    pooled = [row, {**row, "pretrain_seed": "0+1+2", "value": 0.55, "seeds": 9}]
    assert benchmark.best_per_method(pooled, 10)["A"]["value"] == 0.55  # the pooled row stands for the method


def test_summary_table_has_one_line_per_method_and_protocol():
    rows = [{"method": "A", "protocol": "SVM", "unit": "per_class", "budget": b, "metric": "bal_acc", "value": v,
             "low": v - 0.1, "high": v + 0.1, "collapsed": 0} for b, v in ((10, 0.5), (100, 0.7))]
    text = summary_table(rows + [{**rows[0], "metric": "auc"}])
    lines = text.splitlines()
    assert len(lines) == 2 and "10/class" in lines[0] and "100/class" in lines[0]
    assert "0.500 [0.400, 0.600]" in lines[1] and "0.700 [0.600, 0.800]" in lines[1]
    flagged = summary_table([{**rows[0], "collapsed": 1}, rows[1]]).splitlines()
    assert "*0.500 [0.400, 0.600]" in flagged[1] and "0.700" in flagged[1] and "collapsed" in flagged[-1]


def test_cli_writes_the_table_and_prints_the_leaderboard(cache, capsys, monkeypatch):
    monkeypatch.setattr(benchmark, "get_profile", lambda name=None: TINY)
    out = cache / "cli.csv"
    bench.main(["methods", "--dataset", "phantom", "--profile", "smoke", "--out", str(out), "--methods",
                "scratch ResNet-18 micro", "--protocols", "kNN", "--threads", "1"])
    text = capsys.readouterr().out
    assert "scratch ResNet-18 micro, kNN" in text and "2/class" in text and len(read_results(out)) == 2 * 3
    with pytest.raises(SystemExit):
        bench.main(["methods", "--dataset", "cifar"])
    assert "unknown dataset spec 'cifar'" in capsys.readouterr().err


def test_fine_tuning_may_run_on_fewer_budgets_and_the_ensembles_follow_it(cache):
    members = benchmark.ENSEMBLES["ensemble: entropy ConvNeXt + transfer"]
    res = run_methods("phantom", {**TINY, "ch06_ft_budgets": [5]}, None, methods=list(members),
                      protocols=["fine-tune", "kNN"], device="cpu", verbose=False)
    ft = {r["budget"] for r in res.rows if r["protocol"] == "fine-tune"}
    knn = {r["budget"] for r in res.rows if r["protocol"] == "kNN"}
    assert ft == {5} and knn == {2, 5}
    assert {r["method"] for r in res.rows if r["protocol"] == "fine-tune"} == {*members, *[
        e for e in benchmark.ENSEMBLES if e.startswith("ensemble: entropy")]}


# ------------------------------------------------------------------------------------------- any dataset spec
def _write_folder(root, n=24, size=24, rgb=False, split=False, seed=0):
    """A tiny class-folder (or split-folder) dataset of random PNGs: two classes, different brightness."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % 2
        pixels = rng.integers(0, 120, (size, size, 3 if rgb else 1)) + 100 * label
        if rgb:
            pixels[..., 0] = pixels[..., 0] // 2  # not gray
        folder = root / (("train" if (i // 2) % 4 < 3 else "test") if split else "") / ("a", "b")[label]
        folder.mkdir(parents=True, exist_ok=True)
        img = pixels.astype(np.uint8) if rgb else pixels[..., 0].astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{seed}_{i}.png")
    return root


def test_split_folders_are_used_as_split_and_class_folders_are_split(tmp_path):
    cfg = {**TINY, "name": "cpu"}  # no smoke cap: the pool is the whole training split
    pool, test = benchmark.load_benchmark_data(f"folder:{_write_folder(tmp_path / 's', split=True)}", cfg,
                                               image_size=24)
    assert (len(pool), len(test)) == (18, 6)  # the folders' own train/ and test/, never re-split
    pool, test = benchmark.load_benchmark_data(f"folder:{_write_folder(tmp_path / 'c')}", cfg, image_size=24)
    assert len(pool) + len(test) == 24 and len(test) in (7, 8)  # split 70 / 30 here, stratified


def _image_keys(ds) -> set[bytes]:
    return {np.ascontiguousarray(img).tobytes() for img in ds.images}


@pytest.mark.parametrize("kind", ["phantom", "class folders", "split folders"])
def test_the_smoke_benchmark_s_test_set_shares_no_image_with_its_pool(kind, tmp_path, cache):
    """The smoke profile caps the pool and the test set by stratified samples; both must still come from their own
    splits, so no test image is one the learners trained on (compared by content, not by index)."""
    profile = get_profile("smoke")
    if kind == "phantom":
        dataset, sizes = "phantom", (profile["n_pool"], 3 * profile["n_per_class_test"])
    else:
        profile = {**profile, "n_pool": 10, "n_per_class_test": 2}  # still "smoke": below the folders' split sizes
        root = _write_folder(tmp_path / "f", n=40, size=16, split=kind == "split folders")
        dataset, sizes = f"folder:{root}", (10, 6)
    pool, test = benchmark.load_benchmark_data(dataset, profile, image_size=profile["img_size"])
    assert (len(pool), len(test)) == sizes  # the caps were applied
    assert len(_image_keys(pool)) == len(pool) and len(_image_keys(test)) == len(test)  # no image twice
    assert not _image_keys(pool) & _image_keys(test)
    assert set(np.unique(test.labels)) == set(np.unique(pool.labels))  # stratified: every class in both


def test_two_folder_datasets_write_two_results_files(tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    one, two = _write_folder(tmp_path / "one", seed=1), _write_folder(tmp_path / "two", seed=2)
    paths = []
    for root in (one, two):
        res = run_methods(f"folder:{root}", {**TINY, "img_size": 24}, "auto", methods=["scratch ResNet-18 micro"],
                          protocols=["kNN"], device="cpu", verbose=False)
        paths.append(res.path)
    assert paths[0] != paths[1] and all(p.exists() for p in paths)
    assert {p.parent for p in paths} == {Path("results")}
    assert read_results(paths[0])[0]["dataset"] == f"folder:{one}"
    # the same data again resumes its own file
    again = run_methods(f"folder:{one}", {**TINY, "img_size": 24}, "auto", methods=["scratch ResNet-18 micro"],
                        protocols=["kNN"], device="cpu", verbose=False)
    assert again.path == paths[0] and again.skipped > 0


def test_an_rgb_set_runs_through_a_one_channel_checkpoint_with_its_first_layer_adapted(tmp_path, capsys, cache):
    root = _write_folder(tmp_path / "rgb", rgb=True)
    res = run_methods(f"folder:{root}", {**TINY, "img_size": 24}, None, methods=["MoCo v2"], protocols=["kNN"],
                      device="cpu", verbose=False)
    assert {r["protocol"] for r in res.rows} == {"kNN"}
    out = capsys.readouterr().out
    assert "from 1 to 3 input channels" in out  # the run says what it changed


def test_a_checkpoint_pre_trained_on_test_images_is_refused_by_content(tmp_path, monkeypatch, cache):
    """A real-data recipe whose pool is a folder; the comparison's test set holds the same images at another size
    and in RGB: refused, or run with a loud warning when allowed."""
    import dataclasses

    from PIL import Image

    from medmae_nb.data import DataLeakError, make_phantom
    from medmae_nb.pretrained import RECIPES, SpecData, get_recipe

    root = tmp_path / "scans"  # pictures with structure (noise does not survive a resize as the same image)
    ds = make_phantom(24, 32, seed=3)
    for i in range(len(ds)):
        (root / ds.class_names[ds.labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray((ds.images[i, 0] * 255).astype(np.uint8)).save(root / ds.class_names[ds.labels[i]] / f"{i}.png")
    leaky = dataclasses.replace(get_recipe("moco-resnet18-micro", "smoke"), name="moco-on-scans",
                                data=SpecData(f"folder:{root}", split=None, image_size=32))
    leaky = dataclasses.replace(leaky, smoke={"data": leaky.data, "epochs": 1, "batch_size": 8})
    monkeypatch.setitem(RECIPES, "moco-on-scans", leaky)
    rgb = tmp_path / "rgb"  # the same pictures, 24 px, RGB: what a leak looks like after another pre-processing
    for p in root.glob("*/*.png"):
        (rgb / p.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(p).convert("RGB").resize((24, 24)).save(rgb / p.parent.name / p.name)
    with pytest.raises(DataLeakError, match="test images"):
        run_methods(f"folder:{rgb}", {**TINY, "img_size": 24}, None, methods=["moco-on-scans"], protocols=["kNN"],
                    device="cpu", verbose=False)
    with pytest.warns(UserWarning, match="ALLOWED data leak"):
        run_methods(f"folder:{rgb}", {**TINY, "img_size": 24}, None, methods=["moco-on-scans"], protocols=["kNN"],
                    device="cpu", verbose=False, allow_leak=True)


def test_the_transfer_model_is_kept_off_test_sets_holding_its_training_images_by_content(tmp_path):
    """The transfer ConvNeXt was trained on PneumoniaMNIST's train and val images: a test set holding some of them —
    under another name, at another size — is found by content; the official test split is not."""
    import os

    from medmae_nb.data import load_medmnist

    root = os.environ.get("MEDMAE_DATA")
    try:
        pneu = load_medmnist("pneumoniamnist", root, image_size=32, channels=1)
    except Exception as err:  # noqa: BLE001 - any reason the file is not here
        pytest.skip(f"needs PneumoniaMNIST under $MEDMAE_DATA ({err})")
    renamed = pneu.subset(np.flatnonzero(pneu.split == "train")[:40], name="my_xrays")
    assert benchmark.transfer_overlaps(renamed) is True
    official_test = pneu.subset(np.flatnonzero(pneu.split == "test")[:40])
    assert benchmark.transfer_overlaps(official_test) is False


def _table(values: dict[tuple[str, str, str, float], tuple[float, float]]) -> list[dict]:
    """Synthetic rows: {(method, kind, protocol, budget): (value, half-width)}."""
    rows = []
    for (method, kind, protocol, budget), (v, h) in values.items():
        rows.append({"dataset": "d", "method": method, "kind": kind, "pretrain_seed": "0" if kind == "ssl" else "",
                     "protocol": protocol, "unit": "per_class", "budget": budget, "n_train": int(3 * budget),
                     "steps": 200, "augment": "flip", "selection": "fixed steps", "metric": "bal_acc", "value": v,
                     "low": v - h, "high": v + h, "seeds": 3, "per_seed": "", "collapsed": 0, "seconds": 1.0,
                     "profile": "cpu", "key": f"{method}{protocol}{budget}", "config": "{}"})
    return rows


def test_standings_and_claims_are_computed_from_the_table():
    from medmae_nb.claims import check_verdicts

    rows = _table({("MoCo v2", "ssl", "fine-tune", 10): (0.60, 0.02), ("MoCo v2", "ssl", "kNN", 10): (0.55, 0.02),
                   ("SparK", "ssl", "fine-tune", 10): (0.59, 0.02),
                   ("scratch ResNet-18 micro", "scratch", "fine-tune", 10): (0.40, 0.02),
                   (benchmark.SMALL_CNN, "supervised", "fine-tune", 10): (0.70, 0.02),
                   ("MoCo v2", "ssl", "fine-tune", 100): (0.80, 0.02),
                   ("SparK", "ssl", "fine-tune", 100): (0.70, 0.02),
                   ("scratch ResNet-18 micro", "scratch", "fine-tune", 100): (0.79, 0.02),
                   (benchmark.SMALL_CNN, "supervised", "fine-tune", 100): (0.81, 0.02)})
    s = benchmark.standings(rows, 10)
    assert s["leaders"][0]["method"] == benchmark.SMALL_CNN and len(s["leaders"]) == 1
    assert s["ssl"]["method"] == "MoCo v2" and s["ssl_vs_cnn"] == "lower" and s["ssl_vs_scratch"] == "higher"
    s100 = benchmark.standings(rows, 100)
    assert [r["method"] for r in s100["leaders"]] == [benchmark.SMALL_CNN, "MoCo v2", "scratch ResNet-18 micro"]
    assert s100["ssl_vs_cnn"] == "not distinguishable here"
    claims = benchmark.benchmark_claims(rows, "breastmnist")
    by = {c.claim: c for c in claims}
    assert by["self-supervised pre-training beats a supervised CNN with few labels"].verdict == "does not hold here"
    assert by["MoCo v2 beats its backbone trained from scratch"].verdict == "does not hold here"  # mid = 100: tie
    assert by["MoCo v2 leads the self-supervised methods"].verdict == "holds"  # 0.80 vs SparK 0.70 at 100
    assert check_verdicts(claims) == []
    assert "not distinguishable here" in benchmark.standings_text(rows)


def test_a_test_image_that_nearly_duplicates_a_pool_image_is_left_out(capsys):
    from medmae_nb.data import make_phantom

    pool, other = make_phantom(12, image_size=32, seed=1), make_phantom(6, image_size=32, seed=2)
    test = other.subset(np.arange(6))
    test.images[2] = pool.images[5]  # one copy of a training image in the test set
    kept = benchmark.drop_near_duplicates(pool, test)
    assert len(kept) == 5 and "left out 1 of 6 test image(s)" in capsys.readouterr().out
    assert benchmark.drop_near_duplicates(pool, kept) is kept  # nothing to leave out: unchanged


def test_a_table_made_by_several_calls_keeps_every_command_on_its_card(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(",".join(FIELDS) + "\n")
    benchmark.write_card(table, "busi", TINY, 12.0, extra=" --methods A")
    first = json.loads(benchmark.card_file(table).read_text())
    assert [c["command"] for c in first["calls"]] == [first["command"]] and first["calls"][0]["wall_time_s"] == 12.0
    benchmark.write_card(table, "busi", TINY, 30.0, extra=" --methods B")
    card = json.loads(benchmark.card_file(table).read_text())
    assert card["command"].endswith("--methods B") and card["wall_time_s_last_call"] == 30.0
    assert [c["command"][-11:] for c in card["calls"]] == ["--methods A", "--methods B"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json"]  # no temporary file left


def test_a_committed_table_is_reproduced_by_its_recorded_command(tmp_path, monkeypatch):
    """results/phantom-smoke.csv re-made from the command its card records (smoke profile, seconds): the same rows,
    keys and configs, and the same numbers (one thread, so the runs repeat)."""
    import shlex

    from medmae_nb import cli

    table = benchmark.RESULTS / "phantom-smoke.csv"
    card = json.loads(benchmark.card_file(table).read_text())
    argv = shlex.split(card["command"])
    assert argv[:4] == ["python", "-m", "medmae_nb", "compare"]
    out = tmp_path / "again.csv"
    argv = [out.name if a == table.name else a for a in argv[4:]] + ["--threads", "1"]
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    import torch

    threads = torch.get_num_threads()
    try:
        cli.main(["compare", *argv])
    finally:
        torch.set_num_threads(threads)  # the command set 1 for the whole process
    old, new = read_results(table), read_results(out)
    assert [(r["method"], r["protocol"], r["budget"], r["metric"], r["key"], r["steps"]) for r in old] == \
        [(r["method"], r["protocol"], r["budget"], r["metric"], r["key"], r["steps"]) for r in new]
    for a, b in zip(old, new):  # equal on the machine that made it; another CPU may flip a prediction or two
        assert b["value"] == pytest.approx(a["value"], abs=0.05), (a["method"], a["protocol"], a["budget"])



def test_the_phantom_data_identity_survives_last_bit_noise_and_files_hash_exactly():
    """The phantom is drawn with floating-point maths whose last bits differ between CPU families: its identity in a
    row's config (and so the row key a resumed table matches) must not; images read from files keep an exact hash."""
    from medmae_nb.compare import data_identity
    from medmae_nb.data import ImageDataset, make_phantom_splits

    ds = make_phantom_splits(30, 0, 12, 32, seed=3).get_split("train")
    cn = ds.class_names
    noisy = ImageDataset(np.nextafter(ds.images, np.float32(2)), ds.labels, cn, name=ds.name)
    assert not np.array_equal(noisy.images, ds.images)
    assert data_identity(noisy)["sha256"] == data_identity(ds)["sha256"]
    assert data_identity(ds)["sha256"].startswith("stable:")
    other = ImageDataset(ds.images, np.roll(ds.labels, 1), cn, name=ds.name)
    assert data_identity(other)["sha256"] != data_identity(ds)["sha256"]
    files = ImageDataset(ds.images, ds.labels, cn, name="busi-64")
    assert data_identity(files)["sha256"] != data_identity(ImageDataset(noisy.images, ds.labels, cn, name="busi-64"))[
        "sha256"]


@pytest.mark.parametrize("path", sorted(RESULTS_DIR.glob("*-cpu*.csv")), ids=lambda p: p.name)
def test_every_committed_table_gives_every_learner_the_same_steps_and_holds_the_yardsticks(path):
    """The committed tables as chapter 06 and chapters 01–05 read them: at each budget every fine-tuned learner had
    the same optimiser steps (frozen protocols: 0), and a table with the default list holds the SmallCNN and a
    scratch backbone at every budget."""
    from medmae_nb.compare import FROZEN_ROW, SMALL_CNN, read_results

    rows = [r for r in read_results(path) if r["metric"] == "bal_acc"]
    assert rows
    # a study table (one method's settings, chapter 05's frozen sweep) compares settings of one method; the
    # yardsticks it is read beside are in the main table of the same data
    study = any(k in path.name for k in ("variants", "study", "dino"))
    for b in {r["budget"] for r in rows}:
        tuned = {r["steps"] for r in rows if r["budget"] == b and r["protocol"] == "fine-tune"}
        frozen = {r["steps"] for r in rows if r["budget"] == b and r["protocol"] != "fine-tune"}
        if tuned or not study:
            assert len(tuned) == 1 and min(tuned) >= 2, (b, tuned)
        assert frozen <= {FROZEN_ROW["steps"]}, (b, frozen)
    if study:
        return
    for b in {r["budget"] for r in rows}:
        kinds = {r["method"] for r in rows if r["budget"] == b}
        assert SMALL_CNN in kinds and any(m.startswith("scratch ") for m in kinds), (path.name, b)


def test_table_sweeps_read_the_pooled_pre_training_seeds_or_the_committed_checkpoints_runs_alone():
    """The committed BUSI table pools three pre-training seeds of MAE p8: by default its runs are all nine, numbered
    100 x pre-training seed + fine-tune seed, with the pooled row's figures; pooled=False gives the seed-0 runs and
    that row's figures (what an ensemble with a learner without pre-training seeds pairs with)."""
    import os

    from medmae_nb.compare import headline_rows

    try:
        pool, test = benchmark.load_benchmark_data("busi", get_profile("cpu"), os.environ.get("MEDMAE_DATA"))
    except DataError as err:
        pytest.skip(f"needs BUSI under $MEDMAE_DATA ({err})")
    rows = [r for r in read_results(benchmark.RESULTS / "busi-cpu.csv")
            if r["method"] == "MAE p8" and r["protocol"] == "fine-tune" and r["metric"] == "bal_acc"]
    if not any("+" in r["pretrain_seed"] for r in rows):
        pytest.skip("the committed BUSI table has no pooled pre-training seeds")
    both = {}
    for pooled in (True, False):
        both[pooled] = benchmark.table_sweeps("busi", ["MAE p8"], pool=pool, test=test, pooled=pooled)["MAE p8"]
    pooled_rows = {r["budget"]: r for r in headline_rows(rows)}
    seed0 = {r["budget"]: r for r in rows if r["pretrain_seed"] == "0"}
    assert both[True].seeds == [0, 1, 2, 100, 101, 102, 200, 201, 202] and both[False].seeds == [0, 1, 2]
    for sweep, by_budget in ((both[True], pooled_rows), (both[False], seed0)):
        assert [c.value for c in sweep.metrics["bal_acc"]] == [by_budget[b]["value"] for b in sweep.budgets]
        assert sweep.probs.shape[:2] == (len(sweep.budgets), len(sweep.seeds))
    np.testing.assert_array_equal(both[True].probs[:, :3], both[False].probs)  # seed 0's runs come first
    # pooled=False holds for every method asked for, not only the first
    two = benchmark.table_sweeps("busi", ["MAE p8", "MoCo v2"], pool=pool, test=test, pooled=False)
    assert two["MAE p8"].seeds == two["MoCo v2"].seeds == [0, 1, 2]


def test_a_chapter_reads_its_learners_under_its_own_names_and_prints_the_steps(cache, capsys):
    from medmae_nb.budgets import run_sweeps
    from medmae_nb.protocol import protocol_for

    out = cache / "c.csv"
    _run(out, methods=("SmallCNN (supervised)",), protocols=("fine-tune",))
    pool, test = benchmark.load_benchmark_data("phantom", TINY, image_size=TINY["img_size"])
    got = benchmark.chapter_sweeps("phantom", {"CNN": "SmallCNN (supervised)", "CNN again": "SmallCNN (supervised)"},
                                   results=out, pool=pool, test=test, device="cpu")
    assert list(got) == ["CNN", "CNN again"] and got["CNN"].name == "CNN"
    np.testing.assert_array_equal(got["CNN"].probs, got["CNN again"].probs)
    assert "phantom: 2 learners read from c.csv" in capsys.readouterr().out
    proto = protocol_for(TINY)
    line = proto.steps_text(got["CNN"])
    assert line.startswith("optimiser steps of every learner: 2/class (6 images) ")
    assert line.endswith(str(proto.steps(got["CNN"].n_train[-1])))
    half = dataclasses.replace(got["CNN"], budgets=[0.5], n_train=[40], unit="fraction")
    assert proto.steps_text(half) == f"optimiser steps of every learner: 50 % (40 images) {proto.steps(40)}"
    # training them here instead: the same learner under two names, the same runs (cached), one line each
    size = test.channels * test.image_size**2
    learner = proto.scratch(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size, 3)), name="lin",
                            device="cpu")
    ran = run_sweeps({"linear": learner}, pool, test, [2], seeds=[0], n_boot=10)
    assert ran["linear"].budgets == [2] and "linear  1 budget(s) x 1 seeds:" in capsys.readouterr().out


def test_table_sweeps_rebuild_the_runs_of_a_table_without_training(cache):
    out = cache / "r.csv"
    made = _run(out, methods=("SmallCNN (supervised)",), protocols=("fine-tune",))
    ran = made.sweeps[("SmallCNN (supervised)", "fine-tune")]
    pool, test = benchmark.load_benchmark_data("phantom", TINY, image_size=TINY["img_size"])
    got = benchmark.table_sweeps("phantom", ["SmallCNN (supervised)"], results=out, profile=TINY, pool=pool,
                                 test=test, device="cpu")["SmallCNN (supervised)"]
    assert got.budgets == ran.budgets and got.seeds == [0, 1] and got.n_train == ran.n_train
    np.testing.assert_allclose(got.probs, ran.probs, atol=1e-3)  # stored as float16
    rows = {r["budget"]: r for r in read_results(out) if r["metric"] == "bal_acc"}
    assert [c.value for c in got.metrics["bal_acc"]] == [rows[b]["value"] for b in got.budgets]  # as the table says
    assert got.collapsed.sum() == sum(r["collapsed"] for r in rows.values())
    # a run is trained again, under the table's protocol, only when its model is asked for; it predicts the stored run
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = got.model(got.budgets[0], 0)
    assert isinstance(model, torch.nn.Module)
    with pytest.raises(DataError, match="is not in .*medmae compare --data phantom --methods 'MAE p8'"):
        benchmark.table_sweeps("phantom", ["MAE p8"], results=out, profile=TINY, pool=pool, test=test)
    with pytest.raises(DataError, match="scored another test set|drew from another pool"):
        benchmark.table_sweeps("phantom", ["SmallCNN (supervised)"], results=out, profile=TINY, pool=pool,
                               test=test.subset(range(len(test) - 1)))
    big_pool, big_test = benchmark.load_benchmark_data("phantom", TINY, image_size=64)  # the same labels, 64 px
    with pytest.raises(DataError, match="drew from another pool"):
        benchmark.table_sweeps("phantom", ["SmallCNN (supervised)"], results=out, profile=TINY, pool=big_pool,
                               test=big_test)
