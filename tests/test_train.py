"""Tests for medmae_nb.train: schedule, optimizer groups, pre-training with resume and cache, fine-tuning, probing."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
import timm
import torch
from torch import nn

from medmae_nb.data.base import ImageDataset
from medmae_nb.models.cnn import small_cnn
from medmae_nb.train import (
    CheckpointError,
    History,
    _describe,
    build_optimizer,
    cosine_schedule,
    extract_features,
    finetune,
    fit_supervised,
    linear_probe,
    param_groups,
    pretrain,
    set_lr,
)

CPU = torch.device("cpu")




class ToyOutput(NamedTuple):
    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor


class ToyMAE(nn.Module):
    """A stand-in masked autoencoder: per-patch MLP, random masking from ``generator``, MSE on masked patches."""

    def __init__(self, img_size: int = 16, patch: int = 4, dim: int = 16, drop: float = 0.1) -> None:
        super().__init__()
        self.patch, self.num_patches = patch, (img_size // patch) ** 2
        self.config = {"img_size": img_size, "patch": patch, "dim": dim, "drop": drop}
        self.embed = nn.Linear(patch * patch, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(drop)  # exercises torch's global generator
        self.decoder = nn.Linear(dim, patch * patch)

    def forward(self, imgs, mask_ratio=0.75, generator=None):
        n, p = imgs.shape[0], self.patch
        x = imgs.unfold(2, p, p).unfold(3, p, p).reshape(n, -1, p * p)
        noise = torch.rand(n, self.num_patches, generator=generator, device=imgs.device)
        keep = int(self.num_patches * (1 - mask_ratio))
        mask = torch.ones_like(noise)
        mask.scatter_(1, noise.argsort(1)[:, :keep], 0.0)
        tokens = self.embed(x)
        tokens = torch.where(mask[..., None].bool(), self.mask_token.expand_as(tokens), tokens) + self.pos_embed
        pred = self.decoder(self.drop(torch.relu(self.norm(tokens))))
        loss = (((pred - x) ** 2).mean(-1) * mask).sum() / mask.sum()
        return ToyOutput(loss, pred, mask)


class NoGeneratorMAE(ToyMAE):
    def forward(self, imgs, mask_ratio=0.75):
        return super().forward(imgs, mask_ratio=mask_ratio)


def toy_dataset(n: int = 48, size: int = 16, seed: int = 0, name: str = "toy") -> ImageDataset:
    """Two classes: dark images with a bright top half (0) and bright images with a dark top half (1)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0.0, 0.3, (n, 1, size, size)).astype(np.float32)
    images[labels == 1] += 0.6
    images[labels == 0, :, : size // 2] += 0.6
    images[labels == 1, :, : size // 2] -= 0.5
    return ImageDataset(images.clip(0, 1), labels, ("a", "b"), name=name)


def jitter(x: torch.Tensor) -> torch.Tensor:
    return x + 0.01 * torch.randn_like(x)


def make_mae(seed: int = 0, cls=ToyMAE) -> ToyMAE:
    torch.manual_seed(seed)
    return cls()


PRE = dict(batch_size=16, lr=1e-2, warmup_epochs=1, device=CPU, progress=False)


# ----------------------------------------------------------------------------------------------------- schedule
def test_cosine_schedule_warmup_and_end():
    lrs = [cosine_schedule(s, 100, 10, 1.0, min_lr=0.1) for s in range(101)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert np.allclose(np.diff(lrs[:11]), 0.1)  # linear warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lrs[100] == pytest.approx(0.1) and cosine_schedule(150, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert cosine_schedule(0, 10, 0, 2.0) == 2.0


def test_set_lr_honours_lr_scale():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [a], "lr_scale": 0.5}, {"params": [b]}], lr=1.0)
    set_lr(opt, 0.2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.2])


def test_param_groups_exempt_1d_and_tokens():
    model = ToyMAE()
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {"embed.weight", "decoder.weight"}
    assert {"pos_embed", "mask_token", "norm.weight", "embed.bias"} <= {names[id(p)] for p in no_decay["params"]}
    assert all(p.ndim > 1 for p in decay["params"])


def test_layer_decay_scales_decrease_toward_input():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, in_chans=1,
                            embed_dim=32, depth=2, num_heads=2, num_classes=2)
    opt = build_optimizer(vit, lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scale = {}
    for g in opt.param_groups:
        for p in g["params"]:
            scale[id(p)] = g["lr_scale"]
    by_name = {n: scale[id(p)] for n, p in vit.named_parameters()}
    assert by_name["head.weight"] == 1.0
    assert by_name["patch_embed.proj.weight"] == pytest.approx(0.75**3)  # num_layers = depth + 1
    assert by_name["patch_embed.proj.weight"] < by_name["blocks.0.attn.qkv.weight"] < by_name[
        "blocks.1.attn.qkv.weight"] < by_name["head.weight"]
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if any(p.ndim <= 1 for p in g["params"]))
    plain = build_optimizer(small_cnn(1, 2, width=4), lr=1e-3, layer_decay=0.75)  # no group_matcher: plain AdamW
    assert all("lr_scale" not in g for g in plain.param_groups)


# ----------------------------------------------------------------------------------------------------- pretrain
def test_pretrain_learns_and_records_schedule():
    ds = toy_dataset()
    model, history = pretrain(make_mae(), ds, epochs=6, **{**PRE, "lr": 3e-2})
    assert len(history) == 6 and history.column("epoch") == list(range(1, 7))
    losses = history.column("loss")
    assert losses[-1] < 0.6 * losses[0] and all(a > b for a, b in zip(losses, losses[1:]))
    steps = history.steps
    assert len(steps) == 6 * 3 and history.last["step"] == 18
    assert [s["lr"] for s in steps[:3]] == pytest.approx([0.0, 1e-2, 2e-2])  # 1 warm-up epoch = 3 steps
    assert steps[3]["lr"] == pytest.approx(3e-2)
    assert steps[-1]["lr"] == pytest.approx(cosine_schedule(17, 18, 3, 3e-2))
    assert not model.training and set(history.to_dict()) == {"epoch", "step", "lr", "loss"}


def test_pretrain_is_deterministic_and_accepts_forward_without_generator():
    a, _ = pretrain(make_mae(), toy_dataset(), epochs=2, **PRE)
    b, _ = pretrain(make_mae(), toy_dataset(), epochs=2, **PRE)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c, hist = pretrain(make_mae(cls=NoGeneratorMAE), toy_dataset(), epochs=1, **PRE)
    assert len(hist) == 1 and math.isfinite(hist.last["loss"])


class Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted_run(tmp_path, capsys):
    ds = toy_dataset()
    args = dict(epochs=4, augment=jitter, **PRE)
    full, full_hist = pretrain(make_mae(), ds, **args)

    def stop_after_2(epoch, history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(make_mae(), ds, checkpoint_dir=tmp_path, callback=stop_after_2, **args)
    assert (tmp_path / "last.pt").exists()

    started = []
    resumed, hist = pretrain(make_mae(seed=1), ds, checkpoint_dir=tmp_path,
                             callback=lambda e, h: started.append(e), **args)
    assert "resuming from epoch 2 of 4 (step 6)" in capsys.readouterr().out
    assert started == [3, 4] and hist.resumed_from == 2
    assert hist.column("epoch") == [1, 2, 3, 4] and hist.column("loss") == full_hist.column("loss")
    assert [s["step"] for s in hist.steps] == list(range(1, 13))
    for (name, x), y in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(x, y), name

    # A finished checkpoint is loaded, not trained again.
    again, hist2 = pretrain(make_mae(seed=2), ds, checkpoint_dir=tmp_path, callback=lambda e, h: started.append(e),
                            **args)
    assert started == [3, 4] and torch.equal(again.decoder.weight, full.decoder.weight)


def test_checkpoint_from_other_config_is_refused(tmp_path):
    ds = toy_dataset()
    pretrain(make_mae(), ds, epochs=1, checkpoint_dir=tmp_path, **PRE)
    with pytest.raises(CheckpointError, match=r"mask_ratio: 0\.75 \(stored\) vs 0\.5 \(now\).*new checkpoint_dir"):
        pretrain(make_mae(), ds, epochs=1, checkpoint_dir=tmp_path, mask_ratio=0.5, **PRE)
    with pytest.raises(CheckpointError, match="data.sha256"):
        pretrain(make_mae(), toy_dataset(seed=1), epochs=1, checkpoint_dir=tmp_path, **PRE)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        pretrain(make_mae(), ds, epochs=1, checkpoint_dir=tmp_path, **PRE)


def test_cache_loads_same_config_and_trains_new_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    ds = toy_dataset()
    first, hist1 = pretrain(make_mae(), ds, epochs=2, cache=True, **PRE)
    assert "saved to cache (key pretrain-" in capsys.readouterr().out and not hist1.loaded_from_cache
    files = list((tmp_path / "checkpoints").glob("pretrain-*.pt"))
    assert len(files) == 1 and not (tmp_path / "runs" / files[0].stem).exists()  # temporary run folder removed

    calls = []
    second, hist2 = pretrain(make_mae(seed=5), ds, epochs=2, cache=True, callback=lambda e, h: calls.append(e), **PRE)
    assert f"loaded pre-trained weights from the cache (key {files[0].stem})" in capsys.readouterr().out
    assert hist2.loaded_from_cache and calls == [] and hist2.column("loss") == hist1.column("loss")
    assert torch.equal(first.decoder.weight, second.decoder.weight)

    _, hist3 = pretrain(make_mae(), ds, epochs=2, cache=True, mask_ratio=0.5, **PRE)
    assert not hist3.loaded_from_cache and len(list((tmp_path / "checkpoints").glob("*.pt"))) == 2

    # A file whose stored config disagrees with its key is never passed off as a match.
    state = torch.load(files[0], weights_only=True)
    state["config"]["seed"] = 99
    torch.save(state, files[0])
    with pytest.raises(CheckpointError, match="seed"):
        pretrain(make_mae(), ds, epochs=2, cache=True, **PRE)


# ------------------------------------------------------------------------------------------ finetune and probe
def test_finetune_small_cnn_learns_and_keeps_best():
    torch.manual_seed(0)
    train, val = toy_dataset(48, seed=0), toy_dataset(24, seed=1)
    model = small_cnn(1, 2, width=8)
    snapshots = {}

    def spoil_last_epoch(epoch, history):  # records each epoch's weights, then wrecks the final ones
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        if epoch == 4:
            with torch.no_grad():
                model.head.weight.mul_(-1)

    model, history = finetune(model, train, val, epochs=4, batch_size=16, lr=3e-3, layer_decay=None,
                              class_weight=True, device=CPU, progress=False, callback=spoil_last_epoch)
    bal = history.column("val_bal_acc")
    assert bal[-1] == 1.0 and history.column("loss")[-1] < 0.6 * history.column("loss")[0]
    assert history.best_epoch == int(np.argmax(bal)) + 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[history.best_epoch][k]), k
    with torch.no_grad():
        pred = model(torch.from_numpy(val.images)).argmax(1).numpy()
    assert (pred == val.labels).mean() == pytest.approx(max(bal))  # the returned weights are the best epoch's
    assert {"val_loss", "val_acc", "val_bal_acc", "lr", "step"} <= set(history.to_dict())


def test_finetune_tiny_vit_with_layer_decay_runs_deterministically():
    def run():
        torch.manual_seed(0)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, in_chans=1,
                                embed_dim=32, depth=2, num_heads=2, num_classes=2)
        return finetune(vit, toy_dataset(), epochs=2, batch_size=16, lr=1e-3, device=CPU, progress=True,
                        label_smoothing=0.1)

    (a, ha), (b, hb) = run(), run()
    assert len(ha) == 2 and ha.best_epoch is None and ha.column("loss") == hb.column("loss")
    assert torch.equal(a.head.weight, b.head.weight)


def test_linear_probe_freezes_encoder_and_learns():
    torch.manual_seed(0)
    encoder = small_cnn(1, 0, width=8)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train, val = toy_dataset(48, seed=0), toy_dataset(24, seed=1)
    probe, history = linear_probe(encoder, train, val, epochs=15, batch_size=16, lr=1e-2, device=CPU,
                                  progress=False)
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BatchNorm running stats alike
    assert max(history.column("val_bal_acc")) == 1.0
    with torch.no_grad():
        logits = probe(torch.from_numpy(val.images))
    assert logits.shape == (24, 2) and (logits.argmax(1).numpy() == val.labels).mean() == 1.0
    probe.train()
    assert not encoder.training and probe.head.training


def test_extract_features_shapes_and_callable():
    ds = toy_dataset(10)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, in_chans=1,
                            embed_dim=32, depth=1, num_heads=2, num_classes=0)
    assert extract_features(vit, ds, batch_size=4, device=CPU).shape == (10, 32)
    feats = extract_features(lambda x: x.flatten(1)[:, :5], ds, device=CPU)
    assert feats.dtype == np.float32 and np.array_equal(feats, ds.images.reshape(10, -1)[:, :5])


def test_describe_is_stable_and_tells_functions_apart():
    def make(k):
        return lambda x: x + k

    assert _describe(make(1)) == _describe(make(1)) != _describe(make(2))
    assert _describe(jitter) != _describe(lambda x: x + 0.01 * torch.randn_like(x))
    assert "0x" not in str(_describe(torch.nn.Identity())) and _describe(None) is None


def test_history_helpers():
    h = History()
    h.append(epoch=1, loss=1.0)
    h.append(epoch=2, loss=0.5, val_acc=0.8)
    assert h.to_dict() == {"epoch": [1, 2], "loss": [1.0, 0.5], "val_acc": [None, 0.8]}
    assert len(h) == 2 and h[1]["loss"] == 0.5 and "2 epochs" in repr(h)
    assert History.from_state(h.state_dict()).records == h.records


def test_divergence_stops_the_run_with_a_clear_error():
    model = small_cnn(1, 3, width=4)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit_supervised(model, toy_dataset(n=16, size=16), epochs=1, batch_size=8, lr=float("inf"), progress=False)
