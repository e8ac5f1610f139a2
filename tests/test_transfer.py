"""ImageNet or an honestly named substitute: never a random init passed off as pre-trained."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from medmae_nb import transfer
from medmae_nb.data import medmnist
from medmae_nb.models import backbones
from medmae_nb.models.backbones import WeightsUnavailable
from medmae_nb.train.checkpoint import CheckpointError
from medmae_nb.transfer import SUBSTITUTES, imagenet_or_substitute, load_substitute, train_substitute

NAME = "convnext-atto-pneumoniamnist"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "_hub_cached_file", lambda cfg: None)


def test_the_committed_substitute_matches_its_card_and_is_not_random():
    card = json.loads(transfer.card_file(NAME).read_text())
    assert card["config"] == SUBSTITUTES[NAME].config()
    assert card["test"]["bal_acc"] > 0.7  # it learned its own task (PneumoniaMNIST's official test split)
    model = load_substitute(NAME, num_classes=3)
    assert model.init_source.startswith(f"substitute:{NAME} (supervised on pneumoniamnist)")
    assert model.num_classes == 3
    torch.manual_seed(0)
    fresh = timm.create_model("convnext_atto", in_chans=1, num_classes=0)
    w = model.stages[2].blocks[0].conv_dw.weight
    assert not torch.equal(w, fresh.stages[2].blocks[0].conv_dw.weight)


def test_offline_without_weights_takes_the_substitute_and_says_so(offline, capsys):
    model = imagenet_or_substitute("convnext_atto", num_classes=2, substitute=NAME)
    out = capsys.readouterr().out
    assert "ImageNet weights for convnext_atto are unavailable here" in out and "not ImageNet." in out
    assert model.init_source.startswith("substitute:")


def test_without_fetching_the_hub_is_never_tried_and_the_substitute_says_why(monkeypatch, capsys):
    import medmae_nb.transfer as transfer

    real = transfer.create_encoder

    def no_network(*args, **kwargs):
        if kwargs.get("pretrained") is True:
            raise AssertionError("the hub was tried although fetch=False")
        return real(*args, **kwargs)

    monkeypatch.setattr(transfer, "create_encoder", no_network)
    model = imagenet_or_substitute("convnext_atto", num_classes=2, substitute=NAME, fetch=False)
    out = capsys.readouterr().out
    assert model.init_source.startswith("substitute:") and "not fetched" in out and "download_weights" in out
    assert "ConnectionError" not in out
    with pytest.raises(WeightsUnavailable, match="fetching is off"):
        imagenet_or_substitute("convnext_atto", num_classes=2, fetch=False)


def test_offline_without_a_substitute_raises(offline):
    with pytest.raises(WeightsUnavailable, match="could not be reached"):
        imagenet_or_substitute("convnext_atto", num_classes=2)


def test_a_given_imagenet_file_is_used_and_labelled(tmp_path, capsys):
    torch.manual_seed(1)
    source = timm.create_model("convnext_atto", in_chans=3, num_classes=1000)
    path = tmp_path / "convnext_atto_in1k.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = imagenet_or_substitute("convnext_atto", in_chans=1, num_classes=2, weights=path, substitute=NAME)
    assert model.init_source.startswith("file:convnext_atto_in1k.safetensors")
    assert "ImageNet initialisation from file:" in capsys.readouterr().out
    torch.testing.assert_close(model.stem[0].weight, source.stem[0].weight.sum(1, keepdim=True))


def test_a_damaged_or_missing_substitute_is_refused(tmp_path, monkeypatch):
    shutil.copy(transfer.weights_file(NAME), tmp_path)
    shutil.copy(transfer.card_file(NAME), tmp_path)
    with open(transfer.weights_file(NAME, tmp_path), "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(CheckpointError, match="sha256"):
        load_substitute(NAME, folder=tmp_path)
    monkeypatch.setitem(SUBSTITUTES, NAME, dataclasses.replace(SUBSTITUTES[NAME], epochs=99))
    with pytest.raises(CheckpointError, match="retrain"):
        load_substitute(NAME)
    with pytest.raises(FileNotFoundError, match="python -m medmae_nb.transfer"):
        load_substitute(NAME, folder=tmp_path / "none")
    with pytest.raises(KeyError, match="no substitute initialisation named"):
        load_substitute("imagenet")


def test_train_substitute_end_to_end_on_a_small_file(tmp_path, monkeypatch):
    monkeypatch.setattr(medmnist, "MD5", {})  # a stand-in file, not the official release
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        x[y == 1, 8:20, 8:20] = 250  # class 1 has a bright square
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None].astype(np.uint8)
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    spec = dataclasses.replace(SUBSTITUTES[NAME], image_size=32, epochs=2, batch_size=8)
    monkeypatch.setitem(SUBSTITUTES, NAME, spec)
    card = train_substitute(NAME, root=tmp_path, out=tmp_path / "out")
    assert card["config"] == spec.config() and card["test"]["n"] == 8 and len(card["val_bal_acc_by_epoch"]) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{NAME}.json", f"{NAME}.safetensors"]
    model = load_substitute(NAME, folder=tmp_path / "out", num_classes=2)
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 2)


def test_a_missing_imagenet_file_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found.*download_weights\('convnext_atto'"):
        imagenet_or_substitute("convnext_atto", weights=tmp_path / "in1k.safetensors", substitute=NAME)
