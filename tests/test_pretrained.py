"""Tests for medmae_nb.pretrained (recipes, store, run) and the committed book-scale checkpoints."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medmae_nb.cache import dataset_fingerprint, image_probe, probes_match
from medmae_nb.data import multi_crop
from medmae_nb.models.contrastive import MoCo
from medmae_nb.models.dino import dino_vit_micro
from medmae_nb.pretrained import (
    CHECKPOINTS,
    RECIPES,
    card_path,
    get_recipe,
    load_pretrained,
    pretrained,
    recipes,
    run,
    store,
    train_recipe,
    weights_path,
)
from medmae_nb.train import CheckpointError

# the real-data recipes (-busi) join as their book-scale runs finish (hours of CPU, run in the background)
COMMITTED = sorted(n for n in RECIPES if card_path(n).exists())
PHANTOM = sorted(r.name for r in recipes._BOOK)  # the package's phantom recipes (not a test's toy)


def test_every_phantom_recipe_has_a_committed_checkpoint():
    assert set(PHANTOM) <= set(COMMITTED), sorted(set(PHANTOM) - set(COMMITTED))


@pytest.mark.parametrize("name", COMMITTED)
def test_every_recipe_has_a_committed_checkpoint_whose_card_matches_the_code(name, request, monkeypatch):
    if isinstance(get_recipe(name).data, recipes.SpecData):  # its config holds the pool's content digest
        monkeypatch.setenv("MEDMAE_DATA", str(request.getfixturevalue("shared_data")))  # skips without real data
    card = json.loads(card_path(name).read_text())
    assert card["recipe"] == name and card["scale"] == "book"
    assert card["config"] == get_recipe(name).config()  # the recipe in the code made these weights
    assert card["sha256"] == store.sha256(weights_path(name))
    assert card["final"]["loss"] == pytest.approx(card["loss_by_epoch"][-1], abs=1e-4)
    assert len(card["loss_by_epoch"]) == card["config"]["epochs"] and card["wall_time_s"] > 0
    method, loaded = load_pretrained(name, device="cpu")
    assert loaded == card and not method.training
    assert all(p.dtype == torch.float32 for p in method.parameters())
    # a chapter asking for the same recipe (even spelling out its values) loads, not trains
    same, info = pretrained(name, epochs=get_recipe(name).epochs, device="cpu", verbose=False)
    assert info == card


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_checkpoint_was_trained_on_the_images_its_recipe_makes_today(name):
    """Regenerates each book-scale pool (20,000 phantom images, minutes): run after the unit tests by `make test`.

    The sha256 of the pixels is equal on the machine that trained; another processor family draws the phantom with
    last-bit differences, so there the card's probe (block means and moments, :func:`image_probe`) must match within
    float noise — a changed generator changes it far more.
    """
    card = json.loads(card_path(name).read_text())
    if isinstance(get_recipe(name).data, recipes.SpecData) and not os.environ.get("MEDMAE_DATA"):
        pytest.skip("a real-data recipe: set MEDMAE_DATA to the data folder to re-check its pool")
    pool = get_recipe(name).data.load()
    if card["data"]["sha256"] == dataset_fingerprint(pool)["sha256"]:
        return
    assert "data_probe" in card, f"{name}: the pool's sha256 differs from the card's and the card has no data_probe"
    assert probes_match(card["data_probe"], image_probe(pool.images)), (
        f"{name}: the recipe's pool is no longer the images the checkpoint was trained on (beyond float noise); "
        f"retrain with `python -m medmae_nb.train {name}`")


def test_committed_checkpoints_are_small():
    total = sum(p.stat().st_size for p in CHECKPOINTS.rglob("*") if p.suffix in (".pt", ".safetensors", ".npz"))
    assert total <= 64 * 2**20, f"{total / 2**20:.1f} MiB of checkpoints; the budget is 64 MiB"


def test_other_seeds_checkpoints_stay_out_of_the_wheel_and_within_their_budget():
    """checkpoints/seeds (the real-data recipes with pre-training seeds 1 and 2) is committed for the pooled tables,
    not shipped: the package-data patterns do not reach it, and two more seeds of six recipes stay under 40 MiB."""
    import tomllib

    from medmae_nb.pretrained.store import CHECKPOINTS

    patterns = tomllib.loads((CHECKPOINTS.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["medmae_nb"]
    seeds = sorted((CHECKPOINTS / "seeds").glob("*"))
    shipped = {p for pat in patterns for p in CHECKPOINTS.parent.glob(pat)}  # setuptools' globs: no "/" in a "*"
    assert shipped and not shipped & set(seeds)
    total = sum(p.stat().st_size for p in seeds)
    assert total <= 40 * 2**20, f"{total / 2**20:.1f} MiB of seed checkpoints; the budget is 40 MiB"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One recipe trained end to end at smoke scale into a temporary folder (with its own cache)."""
    out = tmp_path_factory.mktemp("ckpt")
    before = os.environ.get("MEDMAE_CACHE")
    os.environ["MEDMAE_CACHE"] = str(out / "cache")
    try:
        name = "mae-micro-p16"
        card = train_recipe(name, scale="smoke", out=out, run_dir=out / "run", progress=False)
    finally:
        if before is None:
            os.environ.pop("MEDMAE_CACHE")
        else:
            os.environ["MEDMAE_CACHE"] = before
    return name, out, card


def test_a_recipe_trains_end_to_end_and_writes_a_card(smoke):
    name, out, card = smoke
    recipe = get_recipe(name, "smoke")
    assert (out / f"{name}.pt").exists() and (out / f"{name}.json").exists()
    assert card["config"] == recipe.config() and card["scale"] == "smoke"
    assert len(card["loss_by_epoch"]) == recipe.epochs and card["run"]["device"] in ("cpu", "cuda", "mps")
    assert card["data"]["n"] == recipe.data.n and card["code_commit"]
    assert list((out / "run" / "snapshots").glob("epoch*.pt"))  # snapshots for the learning curve
    state = torch.load(out / f"{name}.pt", weights_only=True)
    params = {n for n, _ in get_recipe(name, "smoke").method().named_parameters()}
    assert all(v.dtype == torch.float16 for k, v in state.items() if k in params)
    method, loaded = load_pretrained(name, folder=out, scale="smoke", device="cpu")
    fresh = recipe.method()
    assert not all(torch.equal(a, b) for a, b in zip(method.state_dict().values(), fresh.state_dict().values()))
    # parameters are stored in float16, fixed tables (sin-cos positions) exactly
    assert state["pos_embed"].dtype == torch.float32 and torch.equal(method.pos_embed, fresh.pos_embed)


def test_a_damaged_or_foreign_checkpoint_is_refused(smoke, tmp_path, monkeypatch):
    name, out, _ = smoke
    for f in (f"{name}.pt", f"{name}.json"):
        (tmp_path / f).write_bytes((out / f).read_bytes())
    with open(tmp_path / f"{name}.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="sha256"):
        load_pretrained(name, folder=tmp_path, scale="smoke")
    # a recipe changed in the code no longer matches the committed card
    changed = dataclasses.replace(RECIPES[name], lr=RECIPES[name].lr * 2)
    monkeypatch.setitem(RECIPES, name, changed)
    with pytest.raises(CheckpointError, match=r"different recipe.*lr"):
        load_pretrained(name, folder=out, scale="smoke")
    with pytest.raises(FileNotFoundError, match="python -m medmae_nb train"):
        load_pretrained(name, folder=tmp_path / "empty", scale="smoke")


def test_unknown_recipe_names_list_the_recipes():
    with pytest.raises(KeyError, match="no recipe named 'mae-huge'.*mae-micro-p8"):
        get_recipe("mae-huge")
    with pytest.raises(ValueError, match="unknown scale"):
        get_recipe("mae-micro-p16", "tiny")
    proc = subprocess.run([sys.executable, "-m", "medmae_nb.train", "mae-huge"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no recipe named 'mae-huge'" in proc.stderr


def test_pretrained_trains_when_parameters_differ(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    name = "mae-micro-p16"
    smoke = get_recipe(name, "smoke")
    method, info = pretrained(name, scale="smoke", epochs=2, data=smoke.data, verbose=False)
    assert info["trained"] and info["config"]["epochs"] == 2 and len(info["history"]) == 2
    again, info2 = pretrained(name, scale="smoke", epochs=2, data=smoke.data, verbose=False)
    assert info2["history"].loaded_from_cache  # trained once, then read from the cache
    with pytest.raises(CheckpointError, match="no committed checkpoint"):
        pretrained(name, scale="smoke", train=False, epochs=3)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_at_smoke_scale(name, tmp_path, monkeypatch):
    """Each recipe's method, data and schedule fit together (a recipe whose pool does not fit its model's input —
    MIRAM's native mode takes twice the encoder's size — fails here, not an hour into a book-scale run)."""
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    card = train_recipe(name, scale="smoke", out=tmp_path, run_dir=tmp_path / "run", progress=False)
    recipe = get_recipe(name, "smoke")
    assert card["config"] == recipe.config() and len(card["loss_by_epoch"]) == recipe.epochs
    method, _ = load_pretrained(name, folder=tmp_path, scale="smoke", device="cpu")
    views = recipe.view_maker()
    made = [views(img) if views else img for img in torch.from_numpy(recipe.data.load().images[:2])]
    several = isinstance(made[0], (list, tuple))  # MoCo's recipe makes two views of each image
    out = method([torch.stack(v) for v in zip(*made)] if several else torch.stack(made))
    assert torch.isfinite(out.loss)  # the pool's images are what the method takes
    logs = card["logs_by_epoch"]  # the method's own logs (MIRAM's per-scale losses) are on the card, per epoch
    assert set(out.logs) <= set(logs) and all(len(v) == recipe.epochs for v in logs.values())


def test_a_downsampled_pool_is_the_large_drawing_averaged():
    small = recipes.PhantomData(8, 32, downsample=2)
    big = dataclasses.replace(small, image_size=64, downsample=1)
    a, b = small.load(), big.load()
    assert a.images.shape == (8, 1, 32, 32) and np.array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.images, b.images.reshape(8, 1, 32, 2, 32, 2).mean((3, 5)), rtol=1e-6)
    assert small.config()["downsample"] == 2 and "downsample" not in big.config()  # old cards keep their keys


def test_an_encoder_only_recipe_stores_the_encoder_and_rebuilds_the_rest(tmp_path, monkeypatch):
    """Chapter 04's recipes commit the encoder alone (decoder, key encoder and queue would not fit the budget)."""
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    name = "moco-resnet18-micro"
    assert get_recipe(name).stored == "encoder"
    card = train_recipe(name, scale="smoke", out=tmp_path, run_dir=tmp_path / "run", progress=False)
    assert "'encoder' only" in card["stored_as"]
    state = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    assert state and all(k.startswith("encoder.") for k in state)
    method, _ = load_pretrained(name, folder=tmp_path, scale="smoke", device="cpu")
    for k, v in method.encoder.state_dict().items():
        torch.testing.assert_close(v, state[f"encoder.{k}"].to(v.dtype))
    for a, b in zip(method.key_encoder.state_dict().values(), method.encoder.state_dict().values()):
        assert torch.equal(a, b)  # the key encoder starts as a copy of the loaded encoder
    # a file that holds more (or other) than the recipe stores is refused, not half-loaded
    torch.save({**state, "projector.0.weight": torch.zeros(1)}, tmp_path / f"{name}.pt")
    card["sha256"] = store.sha256(tmp_path / f"{name}.pt")
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="does not hold what recipe"):
        load_pretrained(name, folder=tmp_path, scale="smoke")
    with pytest.raises(ValueError, match="no submodule"):
        store.pack(method, "decoder_of_nothing")


# ------------------------------------------------------------------------------------------------ storage formats
class _Small(torch.nn.Module):
    """Weight matrices (one with an all-zero row), a conv kernel, vectors, and float and integer buffers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 5)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.LayerNorm(5)
        self.gain = torch.nn.Parameter(torch.randn(1, 6) * 1e3)  # one row spanning a wide range
        with torch.no_grad():
            self.fc.weight[2] = 0.0
            self.fc.weight[0] *= 1e-3  # rows of very different ranges each get their own scale
            self.norm.weight.uniform_(0.5, 1.5)
        self.register_buffer("table", torch.randn(3, 4))
        self.register_buffer("count", torch.tensor(7))


def _old_half(method, stored="all"):
    """`_half` as it was before the int8 option: the reference for the float16 path's bytes."""
    params = {name for name, _ in method.named_parameters()}
    keep = store.stored_keys(method, stored)
    return {k: v.detach().cpu().half() if k in params and v.is_floating_point() else v.detach().cpu()
            for k, v in method.state_dict().items() if k in keep}


def _saved_bytes(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_int8_packing_rounds_each_row_by_at_most_half_a_step_and_unpacks_to_float32():
    m = _Small()
    original = {k: v.clone() for k, v in m.state_dict().items()}
    state = store.pack(m, "all", "int8")
    matrices = {"fc.weight", "conv.weight", "gain"}
    assert set(state) == set(original) | {k + ".__int8_scale__" for k in matrices}
    unpacked = store.unpack(state)
    assert set(unpacked) == set(original)  # the scales are gone after unpacking
    for k in matrices:
        q, scale = state[k], state[k + ".__int8_scale__"]
        assert q.dtype == torch.int8 and q.shape == original[k].shape and int(q.abs().max()) <= 127
        assert scale.dtype == torch.float16 and scale.shape == original[k].shape[:1]
        rows = original[k].flatten(1)
        amax = rows.abs().amax(dim=1)
        nonzero = amax > 0
        # the scale is max|row| / 127, rounded up to float16 (so nothing is clipped; below 2**-14 float16 steps are
        # 2**-24 apart, which the 1e-3 row of fc tests)
        exact = amax[nonzero] / 127
        assert torch.all(scale.float()[nonzero] >= exact)
        assert torch.all(scale.float()[nonzero] - exact <= torch.clamp(exact * 2**-10, min=2**-24))
        err = (unpacked[k].flatten(1) - rows).abs()
        assert unpacked[k].dtype == torch.float32
        assert torch.all(err <= scale.float()[:, None] / 2 * (1 + 1e-5) + 1e-12), k
        assert torch.all(err.amax(dim=1)[nonzero] <= amax[nonzero] / 254 * (1 + 2**-10) + 2**-25), k
        assert torch.all(unpacked[k].flatten(1)[~nonzero] == 0)
    assert torch.all(unpacked["fc.weight"][2] == 0) and torch.all(state["fc.weight"][2] == 0)
    assert float(state["fc.weight.__int8_scale__"][0]) < 1e-2 * float(state["fc.weight.__int8_scale__"][1])
    for k in ("fc.bias", "conv.bias", "norm.weight", "norm.bias"):  # parameters of one dimension: float16
        assert state[k].dtype == torch.float16 and torch.equal(state[k], original[k].half()), k
        assert unpacked[k].dtype == torch.float32 and torch.equal(unpacked[k], original[k].half().float()), k
    for k in ("table", "count"):  # buffers as they are
        assert state[k].dtype == original[k].dtype and torch.equal(state[k], original[k]), k
        assert unpacked[k].dtype == original[k].dtype and torch.equal(unpacked[k], original[k]), k
    m.load_state_dict(unpacked)  # what load_pretrained does with it
    # the float16 path writes exactly the bytes it wrote before the int8 option
    half = store.pack(m, "all", "float16")
    assert _saved_bytes(half) == _saved_bytes(_old_half(m)) == _saved_bytes(store.pack(m))
    assert _saved_bytes(store.pack(m, "fc")) == _saved_bytes(_old_half(m, "fc"))
    assert all(v.dtype == torch.float32 for k, v in store.unpack(half).items() if k != "count")


def test_a_bad_weights_format_is_refused_naming_the_formats():
    with pytest.raises(ValueError, match=r"weights='int4'.*float16.*int8"):
        store.pack(_Small(), "all", "int4")
    with pytest.raises(ValueError, match=r"weights='bfloat16'.*float16.*int8"):
        dataclasses.replace(RECIPES["mae-micro-p16"], weights="bfloat16")
    recipe = RECIPES["mae-micro-p16"]
    assert recipe.weights == "float16" and "weights" not in recipe.config()  # a storage choice, not the config
    assert dataclasses.replace(recipe, weights="int8").config() == recipe.config()


_TINY_DINO = dict(encoder="vit_micro", patch_size=8, drop_path_rate=0.1, out_dim=64, hidden_dim=32, bottleneck_dim=16,
                  epochs=1, momentum=0.0)


def _tiny_dino(image_size: int):
    return dino_vit_micro(img_size=image_size, out_dim=64, hidden_dim=32, bottleneck_dim=16, epochs=1, momentum=0.0)


def test_an_int8_teacher_encoder_checkpoint_loads_into_both_encoders(tmp_path, monkeypatch):
    """Chapter 05's DINO commits its teacher encoder in int8: the loaded teacher is the trained one within half an
    int8 step per row, the student starts as an exact copy of it, and the file is about half the float16 one."""
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    name = "dino-int8-test"
    pool = recipes.PhantomData(32, 32)
    recipe = recipes.Recipe(name, "a tiny DINO for the int8 test", "dino", _TINY_DINO, pool, epochs=1, batch_size=16,
                            lr=1e-2, views=multi_crop(32, 16, n_local=2), stored="teacher_encoder", weights="int8",
                            smoke={"data": pool, "epochs": 1, "batch_size": 16, "snapshots": ()})
    monkeypatch.setitem(RECIPES, name, recipe)
    trained = {}

    def spy(*args, **kw):
        method, history = real_pretrain(*args, **kw)
        trained["method"] = method
        return method, history

    real_pretrain = run.pretrain
    monkeypatch.setattr(run, "pretrain", spy)
    card = train_recipe(name, scale="smoke", out=tmp_path, run_dir=tmp_path / "run", progress=False)
    assert "int8-per-row" in card["stored_as"] and "'teacher_encoder' only" in card["stored_as"]
    teacher = {k: v.detach().clone() for k, v in trained["method"].teacher_encoder.state_dict().items()}
    state = torch.load(weights_path(name, tmp_path), weights_only=True)
    assert state and all(k.startswith("teacher_encoder.") for k in state)
    assert any(v.dtype == torch.int8 for v in state.values())

    method, loaded_card = load_pretrained(name, folder=tmp_path, scale="smoke", device="cpu")
    assert loaded_card == card and not method.training
    assert all(p.dtype == torch.float32 for p in method.parameters())
    fresh = recipe.at("smoke").method()
    moved = 0.0
    for k, v in method.teacher_encoder.state_dict().items():
        orig = teacher[k]
        scale = state.get(f"teacher_encoder.{k}.__int8_scale__")
        if scale is None:
            torch.testing.assert_close(v, orig.half().float() if orig.is_floating_point() else orig, rtol=0, atol=0)
            continue
        rows = orig.flatten(1)
        err = (v.flatten(1) - rows).abs()
        bound = rows.abs().amax(dim=1, keepdim=True) / 254 * (1 + 2**-10) + 2**-25
        assert torch.all(err <= bound), k  # the trained weights, not a fresh initialisation
        assert torch.all(err <= scale.float()[:, None] / 2 * (1 + 1e-5) + 1e-12), k
        moved = max(moved, float((orig - fresh.teacher_encoder.state_dict()[k]).abs().max() / bound.max()))
    assert moved > 4  # training moved the teacher by several int8 steps, so a fresh one would fail the bounds
    for (k, s), t in zip(method.encoder.state_dict().items(), method.teacher_encoder.state_dict().values()):
        assert torch.equal(s, t), k  # the student starts as an exact copy of the loaded teacher
    for a, b, c in zip(method.head.state_dict().values(), method.teacher_head.state_dict().values(),
                       fresh.head.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)  # both heads as initialised, and equal
    as_float16 = len(_saved_bytes(store.pack(trained["method"], "teacher_encoder", "float16")))
    assert weights_path(name, tmp_path).stat().st_size < 0.6 * as_float16
    # a file whose scales do not fit, or with a scale and no tensor, is refused, not half-loaded
    key = next(k for k, v in state.items() if v.dtype == torch.int8)
    for bad, match in (({**state, key + ".__int8_scale__": state[key + ".__int8_scale__"].repeat(2)}, "int8 scales"),
                       ({**{k: v for k, v in state.items() if k != key}, key + ".__int8_scale__":
                         state[key + ".__int8_scale__"]}, "does not hold what recipe")):
        torch.save(bad, weights_path(name, tmp_path))
        card_path(name, tmp_path).write_text(json.dumps({**card, "sha256": store.sha256(weights_path(name,
                                                                                                        tmp_path))}))
        with pytest.raises(CheckpointError, match=match):
            load_pretrained(name, folder=tmp_path, scale="smoke", device="cpu")


def test_restore_from_part_refuses_a_part_it_cannot_rebuild_from():
    moco = MoCo("resnet18_micro", proj_dim=8, queue_size=8)
    with pytest.raises(ValueError, match="'encoder' only"):
        moco.restore_from_part("projector")
    moco.restore_from_part("encoder")
    with pytest.raises(ValueError, match="'teacher_encoder' or 'encoder'"):
        _tiny_dino(32).restore_from_part("head")


def test_another_pretraining_seed_is_named_and_found_or_refused_with_the_command(tmp_path, monkeypatch):
    from medmae_nb.pretrained import load_seed, seed_name

    assert seed_name("mae-micro-p8", 0) == "mae-micro-p8" and seed_name("mae-micro-p8", 2) == "mae-micro-p8-s2"
    monkeypatch.delenv("MEDMAE_SEED_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match=r"medmae train mae-micro-p8 --seed 2 --name mae-micro-p8-s2"):
        load_seed("mae-micro-p8", 2)
    with pytest.raises(FileNotFoundError, match="no checkpoint mae-micro-p8-s2"):
        load_seed("mae-micro-p8", 2, tmp_path)
    method, card = load_seed("mae-micro-p8", 0, device="cpu")  # its own seed: the committed checkpoint
    assert card["recipe"] == "mae-micro-p8"


def test_a_study_recipe_keeps_every_seed_its_own_too_in_the_seed_folder(tmp_path, monkeypatch):
    """A study recipe (no committed checkpoint) names seed 0 NAME-s0 too; load_seed and the comparison's checkpoint
    id find it in the seed-weights folder, with the command to make it when it is missing."""
    from medmae_nb.compare import MethodSpec, _checkpoint_id, _own_seed
    from medmae_nb.pretrained import STUDIES, load_seed, seed_name

    assert STUDIES and not any(card_path(n).exists() for n in STUDIES)  # their weights are not committed
    assert seed_name("mae-micro-p8-m90-busi", 0) == "mae-micro-p8-m90-busi-s0"
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    tiny = dataclasses.replace(get_recipe("mae-micro-p8-m90-busi", "smoke"), name="toy-study", smoke={})
    monkeypatch.setitem(RECIPES, "toy-study", tiny)
    with pytest.raises(FileNotFoundError, match="medmae train toy-study --seed 0 --name toy-study-s0"):
        load_seed("toy-study", 0, tmp_path)
    train_recipe(dataclasses.replace(tiny, name="toy-study-s0"), out=tmp_path, run_dir=tmp_path / "run",
                 progress=False)
    method, card = load_seed("toy-study", 0, tmp_path, device="cpu")
    assert card["config"]["recipe"] == "toy-study-s0" and method.mask_ratio == 0.9
    spec = MethodSpec("toy-study", "ssl", "toy-study", "ViT", "01", pretrain_seed=0)
    assert _checkpoint_id(spec, "auto", seed_weights=tmp_path) == card["sha256"][:16]
    # the default run (no seed asked) reads the same seed-0 file, so it and the pooled seed-0 run are one row
    own = dataclasses.replace(spec, pretrain_seed=None)
    assert _own_seed(own, tmp_path) == spec
    assert _own_seed(own, tmp_path / "empty") == own  # no file there: pretrained() trains it, and says so
    assert _checkpoint_id(own, "auto", seed_weights=tmp_path / "empty") == "pre-trained here (book scale, seed 0)"
    # and run_methods' default run (no --pretrain-seeds) reads that file instead of pre-training a copy of its own
    import medmae_nb.pretrained as store
    from medmae_nb.compare import read_results, run_methods
    from medmae_nb.profiles import get_profile

    def no_copy(*args, **kwargs):
        raise AssertionError("the default run pre-trained its own copy of the study recipe's seed 0")

    monkeypatch.setattr(store, "pretrained", no_copy)
    cfg = {**get_profile("smoke"), "recipe_scale": "book", "ft_seeds": (0,), "bootstrap": 10}
    out = tmp_path / "t.csv"
    run_methods("phantom", cfg, out, methods=["toy-study"], protocols=["logistic regression"], device="cpu",
                verbose=False, seed_weights=tmp_path)
    rows = read_results(out)
    assert rows and {json.loads(r["config"])["checkpoint"] for r in rows} == {card["sha256"][:16]}
    assert {r["pretrain_seed"] for r in rows} == {"0"}


def test_seed_checkpoints_are_found_in_the_repository_unless_a_folder_is_given(tmp_path, monkeypatch):
    from medmae_nb.pretrained.run import seed_weights_dir
    from medmae_nb.pretrained.store import CHECKPOINTS

    monkeypatch.delenv("MEDMAE_SEED_WEIGHTS", raising=False)
    repo = CHECKPOINTS / "seeds"
    assert seed_weights_dir() == (repo if repo.is_dir() else None)
    assert seed_weights_dir(tmp_path) == tmp_path
    monkeypatch.setenv("MEDMAE_SEED_WEIGHTS", str(tmp_path / "env"))
    assert seed_weights_dir() == tmp_path / "env" and seed_weights_dir(tmp_path) == tmp_path


def test_every_committed_seed_checkpoint_is_its_recipe_with_another_seed():
    """The other pre-training seeds committed in checkpoints/seeds: each NAME-sSEED loads through load_seed, its
    card is the recipe's config with only the seed (and name) changed."""
    import json

    from medmae_nb.pretrained import get_recipe
    from medmae_nb.pretrained.store import CHECKPOINTS

    cards = sorted((CHECKPOINTS / "seeds").glob("*-s[0-9]*.json"))
    for path in cards:
        name, _, seed = path.stem.rpartition("-s")
        card = json.loads(path.read_text())
        own = json.loads((CHECKPOINTS / f"{name}.json").read_text())
        assert card["recipe"] == path.stem and int(seed) != get_recipe(name).seed
        assert card["pretrain_config"]["seed"] == card["config"]["seed"] == int(seed)

        def same(a, b, drop):  # equal but for the seed (and what follows from it: the name, the initial weights)
            assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}

        same(card["pretrain_config"], own["pretrain_config"], {"seed", "init"})
        same(card["config"], own["config"], {"seed", "recipe"})
        assert card["sha256"] == store.sha256(path.with_suffix(".pt"))


def test_the_committed_seed_checkpoints_load(request, monkeypatch):
    from medmae_nb.pretrained import load_seed
    from medmae_nb.pretrained.store import CHECKPOINTS

    monkeypatch.delenv("MEDMAE_SEED_WEIGHTS", raising=False)
    cards = sorted((CHECKPOINTS / "seeds").glob("*-s[0-9]*.json"))
    if cards:  # the real-data recipes' configs hold their pool's content digest
        monkeypatch.setenv("MEDMAE_DATA", str(request.getfixturevalue("shared_data")))
    for path in cards:
        name, _, seed = path.stem.rpartition("-s")
        method, card = load_seed(name, int(seed), device="cpu")
        assert card["recipe"] == path.stem and not method.training


def test_seed_provenance_reads_each_seed_card(tmp_path):
    from medmae_nb.pretrained.run import seed_provenance

    card = {"recipe": "spark-resnet18-micro-busi-s2", "sha256": "ab" * 32, "final": {"loss": 0.123456},
            "wall_time_s": 480.04, "created": "2026-12-07 08:00 UTC", "code_commit": "abc", "run": {"torch": "2.14.1"}}
    (tmp_path / "spark-resnet18-micro-busi-s2.json").write_text(json.dumps(card))
    (tmp_path / "not-a-recipe-s1.json").write_text(json.dumps({**card, "recipe": "not-a-recipe-s1"}))
    (rec,) = seed_provenance(tmp_path)
    assert rec["recipe"] == "spark-resnet18-micro-busi" and rec["seed"] == 2 and rec["final_loss"] == 0.1235
    assert rec["command"] == ("medmae train spark-resnet18-micro-busi --seed 2 --name spark-resnet18-micro-busi-s2 "
                              "--out DIR")


def test_every_other_seed_checkpoint_a_committed_table_evaluated_has_its_provenance():
    """The seed weights are not committed; their cards' essentials are (results/pretrain-seeds.json), and every
    per-seed row of a committed table names a checkpoint recorded there."""
    from medmae_nb.compare import RESULTS, read_results

    used = {}
    for table in RESULTS.glob("*-cpu*.csv"):
        for r in read_results(table):
            if r["kind"] == "ssl" and r["pretrain_seed"] not in ("", "0") and "+" not in r["pretrain_seed"]:
                used[json.loads(r["config"])["checkpoint"]] = f"{r['method']} seed {r['pretrain_seed']}"
    if not used:
        pytest.skip("no committed table evaluates another pre-training seed yet")
    known = {rec["sha256"][:16]: rec for rec in json.loads((RESULTS / "pretrain-seeds.json").read_text())}
    missing = {sha: what for sha, what in used.items() if sha not in known}
    assert not missing, f"seed checkpoints without provenance in results/pretrain-seeds.json: {missing}"


# ------------------------------------------------------------------- pretrained(): committed weights or a new run
class _Trainer:
    """Stands in for ``pretrain`` in :func:`pretrained` (a book-scale run is an hour): records each call and returns
    the fresh method it was given, untrained; the recipe's pool is stood in for by 4 blank images."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, method, pool, **kw):
        from medmae_nb.train.history import History

        self.calls.append({"method": method, "pool": pool, **kw})
        history = History()
        history.append(epoch=1, loss=0.5)
        return method, history


@pytest.fixture()
def trainer(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    fake = _Trainer()
    monkeypatch.setattr(run, "pretrain", fake)

    def blank(self):
        from medmae_nb.data import ImageDataset

        size = self.image_size
        return ImageDataset(np.zeros((4, self.channels, size, size), np.float32), np.zeros(4), ("x",))

    monkeypatch.setattr(recipes.PhantomData, "load", blank)
    return fake


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


_P16 = "mae-micro-p16"
_DIFFERENT = {  # each override alone makes the recipe differ from the committed card
    "epochs": lambda r: {"epochs": r.epochs + 1},
    "lr": lambda r: {"lr": r.lr * 2},
    "seed": lambda r: {"seed": r.seed + 1},
    "batch_size": lambda r: {"batch_size": r.batch_size // 2},
    "mask_ratio": lambda r: {"kwargs": {**r.kwargs, "mask_ratio": 0.6}},
    "pool": lambda r: {"data": dataclasses.replace(r.data, seed=r.data.seed + 1)},
    "views": lambda r: {"views": None},
}


@pytest.mark.parametrize("what", sorted(_DIFFERENT))
def test_pretrained_never_returns_the_committed_checkpoint_for_other_parameters(what, trainer, capsys):
    """``train="auto"`` trains when the overrides make the recipe differ from the card (the docstring's rule), and
    ``train=False`` refuses: the committed weights are never passed off as another recipe's."""
    recipe = get_recipe(_P16)
    card = json.loads(card_path(_P16).read_text())
    overrides = _DIFFERENT[what](recipe)
    method, info = pretrained(_P16, device="cpu", **overrides)
    assert len(trainer.calls) == 1 and method is trainer.calls[0]["method"]
    changed = dataclasses.replace(recipe, **overrides)
    assert info["trained"] is True and info["config"] == changed.config() != card["config"]
    assert trainer.calls[0]["epochs"] == changed.epochs and trainer.calls[0]["lr"] == changed.lr
    assert trainer.calls[0]["seed"] == changed.seed and trainer.calls[0]["batch_size"] == changed.batch_size
    committed, _ = load_pretrained(_P16, device="cpu")
    assert not _same_weights(method, committed)
    assert "its parameters differ from the committed card" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=rf"no committed checkpoint matches recipe {_P16} with overrides"):
        pretrained(_P16, train=False, device="cpu", verbose=False, **overrides)
    assert len(trainer.calls) == 1


def test_pretrained_returns_the_committed_weights_when_the_overrides_match_the_card(trainer):
    recipe = get_recipe(_P16)
    committed, card = load_pretrained(_P16, device="cpu")
    for train in ("auto", False):  # spelling out the recipe's own values is no change
        method, info = pretrained(_P16, train=train, device="cpu", verbose=False, epochs=recipe.epochs,
                                  lr=recipe.lr, kwargs=dict(recipe.kwargs))
        assert info == card and _same_weights(method, committed) and not method.training
    method, info = pretrained(_P16, device="cpu", verbose=False)  # no overrides at all
    assert info == card and _same_weights(method, committed)
    assert trainer.calls == []
    # train=True always trains, even with the committed recipe (cached by config)
    method, info = pretrained(_P16, train=True, device="cpu", verbose=False)
    assert len(trainer.calls) == 1 and info["trained"] and info["config"] == card["config"]
    assert not _same_weights(method, committed)


def test_pretrained_at_smoke_scale_never_returns_the_book_scale_checkpoint(trainer):
    method, info = pretrained(_P16, scale="smoke", device="cpu", verbose=False)
    assert len(trainer.calls) == 1 and info["trained"] and info["config"] == get_recipe(_P16, "smoke").config()
    assert len(trainer.calls[0]["pool"]) == 4 and trainer.calls[0]["epochs"] == get_recipe(_P16, "smoke").epochs
    with pytest.raises(CheckpointError, match="no committed checkpoint matches"):
        pretrained(_P16, scale="smoke", train=False, device="cpu", verbose=False)
