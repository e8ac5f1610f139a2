"""The method registry: every listing reads it, and a method defined outside the package runs through ``train``,
``compare`` (``bench methods``) and a chapter's smoke profile without editing the package.

This file is also the plugin module of that last test: the chapter's kernel imports it through ``$MEDMAE_PLUGINS``,
so the toy method and its recipe below register there too.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from medmae_nb.models.base import MethodOutput, SSLMethod
from medmae_nb.models.registry import create_method, get_method, list_methods, method_name, register_method
from medmae_nb.pretrained import PhantomData, Recipe, register_recipe
from medmae_nb.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent
TOY = "toy-ae"
TOY_RECIPE = "toy-ae-phantom"


@register_method(TOY, family="masked image modelling", description="a toy convolutional autoencoder (tests)",
                 replace=True)
class ToyAutoencoder(SSLMethod):
    """Reconstructs the image through a 4x-downsampled bottleneck: the smallest thing that is a method."""

    def __init__(self, img_size: int = 32, in_chans: int = 1, width: int = 8) -> None:
        super().__init__()
        self.config = {"img_size": img_size, "in_chans": in_chans, "width": width}
        self.in_chans = in_chans
        self.encoder = nn.Sequential(nn.Conv2d(in_chans, width, 3, 2, 1), nn.GELU(), nn.Conv2d(width, width, 3, 2, 1))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(width, in_chans, 3, 1, 1))

    def forward(self, batch):
        x = batch.views[0] if hasattr(batch, "views") else batch
        loss = nn.functional.mse_loss(self.decoder(self.encoder(x)), x)
        return MethodOutput(loss, logs={"mse": float(loss.detach())})

    def to_timm(self, num_classes: int = 0, **overrides):
        return _ToyClassifier(self.encoder, num_classes)


class _ToyClassifier(nn.Module):
    """The toy encoder with global pooling and a head, shaped like a timm model for the book's learners."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        import copy

        self.encoder = copy.deepcopy(encoder)
        self.num_features = self.encoder[-1].out_channels
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        return self.encoder(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


register_recipe(Recipe(TOY_RECIPE, "the toy autoencoder on a small phantom (tests)", TOY, {"width": 8},
                       PhantomData(64, 32), epochs=1, batch_size=16,
                       smoke={"data": PhantomData(64, 32), "epochs": 1, "batch_size": 16}), replace_existing=True)


def test_the_book_methods_are_registered_with_their_families():
    assert {"mae", "miram", "masked-convnext", "spark", "moco", "dino"} <= set(list_methods())
    assert list_methods("contrastive") == ["moco"] and list_methods("self-distillation") == ["dino"]
    mae = create_method("mae", img_size=32, arch="micro", patch_size=8)
    assert method_name(mae) == "mae" and mae.config["patch_size"] == 8
    assert method_name(create_method("miram", img_size=32, arch="micro", patch_size=8)) == "miram"  # not "mae"
    with pytest.raises(KeyError, match="no method named 'simclr'.*mae"):
        get_method("simclr")


def test_a_name_is_taken_once_and_only_methods_register():
    with pytest.raises(ValueError, match="registered already"):
        register_method("mae", family="masked image modelling")(ToyAutoencoder)
    with pytest.raises(TypeError, match="SSLMethod subclasses"):
        register_method("not-a-method", family="other")(nn.Linear)
    with pytest.raises(ValueError, match="family"):
        register_method("x", family="magic")


def test_every_registered_method_fulfils_the_contract():
    """build, default views, to_timm and the parts it may store: what recipes, the store and compare rely on."""
    for name in list_methods():
        entry = get_method(name)
        kwargs = {"mae": {"arch": "micro", "patch_size": 16}, "miram": {"arch": "micro", "patch_size": 16},
                  "spark": {"encoder": "resnet18_micro"}, "moco": {"encoder": "resnet18_micro", "queue_size": 16},
                  "masked-convnext": {"encoder": "convnext_atto"},
                  "dino": {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8}}.get(name, {})
        method = entry.build(img_size=32, in_chans=1, **kwargs)
        assert isinstance(method, SSLMethod) and isinstance(method.config, dict)
        features = method.to_timm(num_classes=0).eval()(torch.zeros(2, 1, 32, 32))
        assert features.shape[0] == 2 and features.ndim == 2, name
        assert isinstance(method.encoder, nn.Module), name
        for part in entry.stores:
            assert part == "all" or isinstance(getattr(method, part), nn.Module), (name, part)
        assert entry.default_views(32) is None or callable(entry.default_views(32))


def test_recipes_name_registered_methods_only():
    with pytest.raises(KeyError, match="no method named 'nope'"):
        Recipe("r", "", "nope", {}, PhantomData(8, 32), epochs=1)
    with pytest.raises(ValueError, match="stores one of"):
        Recipe("r", "", "mae", {"arch": "micro"}, PhantomData(8, 32), epochs=1, stored="decoder")


def test_pretrained_never_imports_upward():
    """Data flows data -> models -> train -> pretrained -> compare / cli: no module below pretrained imports it
    (the ``python -m medmae_nb.train`` entry point hands over to the CLI and is not imported by the package)."""
    below = [p for d in ("data", "models", "train") for p in (ROOT / "medmae_nb" / d).glob("*.py")
             if p.name != "__main__.py"]
    for path in below:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert "pretrained" not in node.module and "compare" not in node.module, (path, node.module)
    assert not (ROOT / "medmae_nb" / "recipes.py").exists()


def test_a_method_defined_outside_the_package_trains_and_is_compared(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    from medmae_nb.compare import run_methods
    from medmae_nb.pretrained import load_pretrained, train_recipe

    card = train_recipe(TOY_RECIPE, scale="smoke", out=tmp_path, run_dir=tmp_path / "run", progress=False)
    assert card["method"] == TOY and card["config"]["method"]["class"] == "ToyAutoencoder"
    method, _ = load_pretrained(TOY_RECIPE, folder=tmp_path, scale="smoke", device="cpu")
    assert isinstance(method, ToyAutoencoder)
    tiny = {"name": "smoke", "n_pool": 60, "n_per_class_test": 10, "ch06_budgets": [2, 5], "eval_epochs": 2,
            "eval_min_steps": 2, "ft_seeds": [0, 1], "bootstrap": 50, "img_size": 32, "recipe_scale": "smoke"}
    res = run_methods("phantom", tiny, tmp_path / "r.csv", methods=[TOY_RECIPE], protocols=["fine-tune", "kNN"],
                      device="cpu", verbose=False)
    assert {(r["method"], r["protocol"]) for r in res.rows} == {(TOY_RECIPE, "fine-tune"), (TOY_RECIPE, "kNN")}
    import dataclasses

    from medmae_nb.compare import default_methods, method_spec
    from medmae_nb.pretrained import RECIPES

    # a recipe that says how the comparison lists it joins the default list, with no edit to compare.py
    assert "toy AE" not in default_methods("phantom")
    listed = dataclasses.replace(RECIPES[TOY_RECIPE], compared={"label": "toy AE", "backbone": "2 convolutions",
                                                                "chapter": "-", "layer_decay": None})
    monkeypatch.setitem(RECIPES, TOY_RECIPE, listed)
    assert "toy AE" in default_methods("phantom") and method_spec("toy AE").recipe == TOY_RECIPE


@pytest.mark.notebooks
def test_a_method_defined_outside_the_package_runs_through_chapter_06(tmp_path):
    """Chapter 06 in the smoke profile with METHODS = the toy recipe and scratch ResNet-18 micro, in its own kernel: the
    kernel imports this file through $MEDMAE_PLUGINS."""
    env = {**os.environ, "MEDMAE_PLUGINS": str(Path(__file__).resolve()), "MEDMAE_CACHE": str(tmp_path / "cache"),
           "MEDMAE_PROFILE": "smoke"}
    out = tmp_path / "06.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "06-benchmark.ipynb"), str(out), "-p", "PROFILE",
           "smoke", "-p", "REAL_TABLES", "False", "-y", f"METHODS: ['{TOY_RECIPE}', 'scratch ResNet-18 micro']",
           "--cwd", str(ROOT / "nbs"), "-k", "python3"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TOY_RECIPE in out.read_text()


def test_pretraining_seeds_are_evaluated_and_pooled(tmp_path, monkeypatch):
    """The toy recipe pre-trained with seeds 0 and 1 (smoke scale, here): a row per seed, and a pooled row whose runs
    are both seeds' runs, whose interval holds them all."""
    from medmae_nb.compare import pool_pretrain_seeds, read_results

    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    tiny = {**get_profile("smoke"), "ft_seeds": (0, 1), "bootstrap": 20}
    res = pool_pretrain_seeds("phantom", tiny, tmp_path / "r.csv", [0, 1], methods=[TOY_RECIPE],
                              protocols=["kNN"], device="cpu", verbose=False)
    rows = [r for r in read_results(tmp_path / "r.csv") if r["metric"] == "bal_acc"]
    assert rows == [r for r in res.rows if r["metric"] == "bal_acc"]
    by = {(r["pretrain_seed"], r["budget"]): r for r in rows}
    assert {s for s, _ in by} == {"0", "1", "0+1"}
    for b in (2, 5):
        pooled = by[("0+1", b)]
        assert pooled["seeds"] == 4 and pooled["per_seed"] == by[("0", b)]["per_seed"] + ";" + by[("1", b)]["per_seed"]
        assert json.loads(pooled["config"])["checkpoint"] == ["pre-trained here (smoke scale, seed 0)",
                                                              "pre-trained here (smoke scale, seed 1)"]
    again = pool_pretrain_seeds("phantom", tiny, tmp_path / "r.csv", [0, 1], methods=[TOY_RECIPE],
                                protocols=["kNN"], device="cpu", verbose=False)
    assert len(again.rows) == len(res.rows)  # resumed: nothing written twice
    # the pooled rows are made again from the committed files alone (no weights, no cache)
    kept = [r for r in read_results(tmp_path / "r.csv") if "+" not in r["pretrain_seed"]]
    from medmae_nb.compare import _write_atomic

    _write_atomic(tmp_path / "r.csv", kept)
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "empty-cache"))
    remade = pool_pretrain_seeds("phantom", tiny, tmp_path / "r.csv", [0, 1], methods=[TOY_RECIPE],
                                 protocols=["kNN"], verbose=False, evaluate=False)
    assert [r["value"] for r in remade.rows if r["pretrain_seed"] == "0+1"] == pytest.approx(
        [r["value"] for r in res.rows if r["pretrain_seed"] == "0+1"], abs=2e-3)  # float16 probabilities


def test_pretraining_seeds_pool_over_label_fractions_too(tmp_path, monkeypatch):
    """Chapter 04's fraction sweep with several pre-training seeds: a pooled row per fraction."""
    from medmae_nb.compare import main_methods, read_results

    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    tiny = {**get_profile("smoke"), "ft_seeds": (0,), "bootstrap": 20}
    main_methods("phantom", tiny, tmp_path / "f.csv", [TOY_RECIPE], ["kNN"], pretrain_seeds=[0, 1],
                 fractions=[0.5, 1.0])
    rows = [r for r in read_results(tmp_path / "f.csv") if r["metric"] == "bal_acc"]
    assert {(r["unit"], r["budget"], r["pretrain_seed"]) for r in rows} == {
        ("fraction", f, s) for f in (0.5, 1.0) for s in ("0", "1", "0+1")}
    assert all(r["seeds"] == 2 for r in rows if r["pretrain_seed"] == "0+1")
