"""Tests for medmae_nb.train.optim: the schedule, timm's parameter groups and layer decay, fused AdamW."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn
from toys import ToyMAE

from medmae_nb.models import mae_vit_micro
from medmae_nb.models.cnn import small_cnn
from medmae_nb.train import History, build_optimizer, cosine_schedule, set_lr


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


def test_optimizer_exempts_1d_params_and_what_no_weight_decay_lists():
    model = ToyMAE()
    model.embed.bias.requires_grad_(False)  # frozen parameters are left out
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert groups[0.05] == {"embed.weight", "decoder.weight"}
    assert groups[0.0] == {"pos_embed", "mask_token", "norm.weight", "norm.bias", "decoder.bias"}
    assert all(g["betas"] == (0.9, 0.999) for g in opt.param_groups)


def test_mae_tokens_get_no_weight_decay():
    mae = mae_vit_micro(img_size=32, patch_size=8, depth=1)
    opt = build_optimizer(mae, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    names = {id(p): n for n, p in mae.named_parameters()}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {"cls_token", "decoder.mask_token"} <= no_decay and "blocks.0.attn.qkv.weight" in decay
    assert all(p.ndim > 1 for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"])


def test_fused_adamw_is_used_where_available_and_matches_the_loop():
    torch.manual_seed(0)
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused, plain = build_optimizer(a, lr=1e-2), build_optimizer(b, lr=1e-2, fused=False)
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


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


def test_history_helpers():
    h = History()
    h.append(epoch=1, loss=1.0)
    h.append(epoch=2, loss=0.5, val_acc=0.8)
    assert h.to_dict() == {"epoch": [1, 2], "loss": [1.0, 0.5], "val_acc": [None, 0.8]}
    assert len(h) == 2 and h[1]["loss"] == 0.5 and "2 epochs" in repr(h)
    assert History.from_state(h.state_dict()).records == h.records
