"""Tests for medmae_nb.models.miram: per-scale shapes, the repeated token grid, what the encoder sees in each target
mode, the weighted loss against MAE's, windowed attention, timm export, gradients, seeds and bad configs."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from medmae_nb.losses import masked_mse
from medmae_nb.masking import MaskingError, gather_tokens, patchify, random_masking
from medmae_nb.models import (
    Batch,
    MaskedAutoencoderViT,
    MIRAMViT,
    ScaleDecoder,
    child_indices,
    mae_vit_micro,
    mae_vit_small,
    mae_vit_tiny,
    miram_vit_micro,
    miram_vit_small,
    miram_vit_tiny,
    upsample_tokens,
)

SMALL = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def small_miram(img_size=32, patch_size=8, in_chans=1, **kw) -> MIRAMViT:
    torch.manual_seed(0)
    return MIRAMViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, **{**SMALL, **kw})


def mask_for(model: MIRAMViT, n: int, seed: int = 0):
    return random_masking(n, model.num_patches, model.mask_ratio, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("target", ["upsampled", "native"])
@pytest.mark.parametrize("scales", [(1, 2), (1, 4), (1, 2, 4)])
def test_shapes_per_scale(scales, target):
    down = max(scales) if target == "native" else 1  # native: the encoder sees the input pooled by max(scales)
    img = (32 * down, 64 * down)  # a non-square grid catches swapped axes
    model = small_miram(img, scales=scales, target=target)
    h, w = model.grid_size
    assert (h, w) == (4, 8) and model.input_size == img  # the encoder's grid at its own resolution
    x = torch.rand(2, 1, *img)
    out = model(x)
    hidden = model.num_patches - model.random_mask(1).len_keep
    assert sorted(out.preds) == list(scales) and sorted(out.logs) == [f"loss_x{s}" for s in scales]
    for s in scales:
        assert out.preds[s].shape == (2, hidden * s * s, 64)  # hidden tokens only: s*s children per hidden token
        assert out.masks[s].shape == (2, h * w * s * s) and torch.all(out.masks[s].sum(1) == hidden * s * s)
        assert out.logs[f"loss_x{s}"].ndim == 0 and not out.logs[f"loss_x{s}"].requires_grad
    assert out.pred is out.preds[1] and out.mask is out.masks[1] and out.loss.requires_grad
    full = model(x, full=True)
    for s in scales:
        assert full.preds[s].shape == (2, h * w * s * s, 64)


# ------------------------------------------------------------------------------------------- token grids
def test_upsample_tokens_repeats_each_token_in_2d():
    x = torch.randn(2, 2 * 3, 5)  # a 2x3 grid: a 1-D repeat along the sequence, or swapped h/w, would differ
    up = upsample_tokens(x, (2, 3), 2)
    grid = x.transpose(1, 2).reshape(2, 5, 2, 3)
    reference = F.interpolate(grid, scale_factor=2, mode="nearest").flatten(2).transpose(1, 2)
    assert torch.equal(up, reference)
    assert torch.equal(upsample_tokens(torch.tensor([[0.0, 1, 0, 0, 0, 0]]), (2, 3), 2).view(4, 6),
                       torch.tensor([[0.0, 0, 1, 1, 0, 0]] * 2 + [[0.0] * 6] * 2))


@pytest.mark.parametrize("scale", [2, 4])
def test_child_indices_pick_the_copies_of_each_parent(scale):
    x = torch.randn(2, 6, 3)
    idx = torch.tensor([[5, 0, 3], [1, 4, 2]])
    children = child_indices(idx, (2, 3), scale)
    picked = gather_tokens(upsample_tokens(x, (2, 3), scale), children).view(2, 3, scale * scale, 3)
    assert torch.equal(picked, gather_tokens(x, idx)[:, :, None].expand_as(picked))
    # and the children of all parents are every token of the fine grid, once
    every = child_indices(torch.arange(6)[None], (2, 3), scale)
    assert torch.equal(every.sort(1).values, torch.arange(6 * scale * scale)[None])


def test_scale_decoder_gets_the_repeated_x1_grid_of_the_shared_embedding():
    model = small_miram(scales=(1, 2, 4)).eval()
    x = torch.rand(2, 1, 32, 32)
    info = mask_for(model, 2)
    seen = {}
    for s in (2, 4):
        dec = model.scale_decoders[f"x{s}"]
        dec.blocks.register_forward_pre_hook(lambda mod, args, s=s: seen.__setitem__(s, args[0]))
    model(x, mask_info=info)
    filled = model.decoder.fill(model.decoder.embed(model.forward_encoder(x, info)), info.restore)
    for s in (2, 4):
        tokens = seen[s] - model.scale_decoders[f"x{s}"].pos_embed  # its own sin-cos table for the fine grid
        assert torch.allclose(tokens[:, 1:], upsample_tokens(filled[:, 1:], model.grid_size, s), atol=1e-6)
        assert torch.allclose(tokens[:, :1], filled[:, :1], atol=1e-6)
    assert not hasattr(model.scale_decoders["x2"], "embed")  # one decoder embedding for every scale (methods.md 2.2)


# --------------------------------------------------------------------------------------- targets
def test_upsampled_target_is_the_input_repeated_and_the_encoder_sees_the_input():
    model = small_miram(scales=(1, 2, 4))
    x = torch.rand(2, 1, 32, 32)
    targets = model.scale_targets(x)
    assert targets[1] is x
    for s in (2, 4):
        assert torch.equal(targets[s], F.interpolate(x, scale_factor=s, mode="nearest"))  # the authors' target


def test_native_encoder_never_sees_the_detail_only_the_x2_target_holds(monkeypatch):
    model = small_miram(64, scales=(1, 2), target="native").eval()
    assert model.img_size == (32, 32) and model.input_size == (64, 64)
    base = torch.randint(0, 256, (2, 1, 64, 64)).float() / 256
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 2 - 1).float() / 8
    x, x_detail = base, base + checker  # zero mean in every 2x2 block: lost by the 2x downsampling (and exact in fp32)
    seen = []
    original = model.forward_encoder
    monkeypatch.setattr(model, "forward_encoder", lambda imgs, info=None: seen.append(imgs) or original(imgs, info))
    info = mask_for(model, 2)
    a, b = model(x, mask_info=info), model(x_detail, mask_info=info)
    assert torch.equal(seen[0], F.avg_pool2d(x, 2)) and torch.equal(seen[0], seen[1])  # not x[..., ::2, ::2]
    assert torch.equal(a.logs["loss_x1"], b.logs["loss_x1"])
    assert not torch.allclose(a.logs["loss_x2"], b.logs["loss_x2"])  # the x2 target is the full-resolution input
    full = model(x_detail, mask_info=info, full=True)
    assert torch.allclose(full.logs["loss_x2"], masked_mse(full.preds[2], patchify(x_detail, 8), full.masks[2]))


def test_native_with_three_scales_pools_each_target_from_the_input():
    model = small_miram(64, patch_size=4, scales=(1, 2, 4), target="native")
    x = torch.rand(1, 1, 64, 64)
    targets = model.scale_targets(x)
    assert model.img_size == (16, 16) and targets[4] is x
    assert torch.allclose(targets[2], F.avg_pool2d(x, 2)) and torch.allclose(targets[1], F.avg_pool2d(x, 4))


# ------------------------------------------------------------------------------------------- the loss
def test_loss_is_the_weighted_sum_of_the_per_scale_losses():
    x = torch.rand(3, 1, 32, 32)
    ref = small_miram(scales=(1, 2, 4), norm_pix_loss=True)
    info = mask_for(ref, 3)
    outs = {}
    for weights in [(1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 2.0), (0.5, 0.25, 3.0)]:
        model = MIRAMViT(**{**ref.config, "loss_weights": weights})
        model.load_state_dict(ref.state_dict())
        outs[weights] = model(x, mask_info=info)
    logs = outs[(1.0, 1.0, 1.0)].logs
    for weights, out in outs.items():
        assert all(torch.equal(out.logs[k], logs[k]) for k in logs)  # a weight changes the sum, not the terms
        expected = sum(w * logs[f"loss_x{s}"] for w, s in zip(weights, (1, 2, 4)))
        assert torch.allclose(out.loss, expected, atol=1e-6), weights
    assert len({round(float(v), 4) for v in logs.values()}) == 3  # three different terms, so the checks above bite


@pytest.mark.parametrize("target", ["upsampled", "native"])
def test_x1_loss_is_maes_loss_with_the_same_mask_and_weights(target):
    model = small_miram(64, scales=(1, 2), target=target, norm_pix_loss=True)
    mae = MaskedAutoencoderViT(**{**SMALL, "img_size": model.img_size, "patch_size": 8, "norm_pix_loss": True})
    missing, unexpected = mae.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("scale_decoders.") for k in unexpected)
    x = torch.rand(2, 1, 64, 64)
    info = mask_for(model, 2)
    out = model(x, mask_info=info)
    mae_out = mae(model.scale_targets(x)[1], mask_info=info)
    assert torch.allclose(out.logs["loss_x1"], mae_out.loss, atol=1e-6)
    assert torch.allclose(out.pred, mae_out.pred, atol=1e-6)


def test_hidden_only_path_equals_scoring_every_token_with_the_upsampled_mask():
    model = small_miram(scales=(1, 2, 4), norm_pix_loss=True, scale_attention="local", local_window=2)
    x = torch.rand(2, 1, 32, 32)
    info = mask_for(model, 2, seed=3)
    fast, full = model(x, mask_info=info), model(x, mask_info=info, full=True)
    targets = model.scale_targets(x)
    for s in (1, 2, 4):
        mask_s = model.scale_mask(info.mask, s)
        assert torch.allclose(fast.logs[f"loss_x{s}"], full.logs[f"loss_x{s}"], atol=1e-6)
        assert torch.allclose(full.logs[f"loss_x{s}"],
                              masked_mse(full.preds[s], patchify(targets[s], 8), mask_s, norm_pix=True), atol=1e-6)
        idx = info.hidden_idx if s == 1 else child_indices(info.hidden_idx, model.grid_size, s)
        assert torch.allclose(fast.preds[s], gather_tokens(full.preds[s], idx), atol=1e-5)
    # only hidden children count: changing a visible patch's pixels leaves every scale's loss unchanged
    visible = torch.nonzero(info.mask[0] == 0)[0, 0].item()
    r, c = divmod(visible, model.grid_size[1])
    changed = x.clone()
    changed[0, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = torch.rand(1, 8, 8)
    # the encoder sees that patch, so compare with the encoder's latent fixed: score the new targets on old predictions
    for s in (1, 2, 4):
        new = masked_mse(full.preds[s], patchify(model.scale_targets(changed)[s], 8), model.scale_mask(info.mask, s),
                         norm_pix=True)
        assert torch.allclose(new, full.logs[f"loss_x{s}"], atol=1e-6)


# ------------------------------------------------------------------------------------------- attention
def test_local_attention_equals_the_blocks_run_on_each_window():
    torch.manual_seed(0)
    dec = ScaleDecoder((4, 6), 2, dim=16, depth=2, num_heads=2, out_dim=8, attention="local", local_window=2).eval()
    filled = torch.randn(2, 1 + 24, 16)
    grid = torch.cat([filled[:, :1], upsample_tokens(filled[:, 1:], (4, 6), 2)], 1) + dec.pos_embed
    tokens = grid[:, 1:].reshape(2, 8, 12, 16)
    reference = torch.empty_like(tokens)
    for i in range(0, 8, 4):  # a window is 2x2 x1 tokens = 4x4 x2 tokens, with its own copy of CLS
        for j in range(0, 12, 4):
            window = torch.cat([grid[:, :1], tokens[:, i:i + 4, j:j + 4].reshape(2, 16, 16)], 1)
            reference[:, i:i + 4, j:j + 4] = dec.blocks(window)[:, 1:].reshape(2, 4, 4, 16)
    expected = dec.pred(dec.norm(reference.reshape(2, 96, 16)))
    assert torch.allclose(dec(filled), expected, atol=1e-5)
    # a window as large as the grid is full attention
    whole = ScaleDecoder((4, 6), 2, dim=16, depth=2, num_heads=2, out_dim=8, attention="local", local_window=8)
    full = ScaleDecoder((4, 6), 2, dim=16, depth=2, num_heads=2, out_dim=8, attention="full")
    full.load_state_dict(whole.state_dict())
    assert torch.allclose(whole(filled), full(filled), atol=1e-5)


@pytest.mark.parametrize("attention", ["local", "full"])
def test_local_attention_keeps_a_change_inside_its_window(attention):
    model = small_miram(scales=(1, 2), scale_attention=attention, local_window=2).eval()
    dec = model.scale_decoders["x2"]
    filled = torch.randn(1, 1 + 16, 16)
    changed = filled.clone()
    changed[:, 1] += torch.randn(16)  # x1 token (0, 0), in the window of rows 0-1, cols 0-1 of the 4x4 x1 grid
    diff = (dec(filled) - dec(changed)).abs().sum(-1).view(8, 8) > 1e-4  # (a constant shift LayerNorm would erase)
    assert diff[:4, :4].all()
    assert diff[4:].any() == (attention == "full") and diff[:, 4:].any() == (attention == "full")


# ------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("attention", ["full", "local"])
def test_backward_gives_every_trainable_parameter_a_gradient(attention):
    model = small_miram(scales=(1, 2, 4), norm_pix_loss=True, scale_attention=attention, local_window=2)
    model(torch.rand(2, 1, 32, 32)).loss.backward()
    names = dict(model.named_parameters())
    assert not any("pos_embed" in n for n in names)  # fixed tables are buffers
    assert {"scale_decoders.x2.pos_embed", "scale_decoders.x4.pos_embed"} <= set(model.state_dict())
    for name, p in names.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert "scale_decoders.x4.pred.weight" in names and "scale_decoders.x2.blocks.0.attn.qkv.weight" in names


def test_same_seeds_same_loss_and_masks_per_sample():
    model = small_miram(scales=(1, 2))
    x = torch.rand(4, 1, 32, 32)
    a = model(Batch([x], torch.tensor([11, 12, 13, 14])))
    b = model(Batch([x], torch.tensor([11, 12, 13, 14])))
    assert torch.equal(a.loss, b.loss) and all(torch.equal(a.logs[k], b.logs[k]) for k in a.logs)
    half = model(Batch([x[2:]], torch.tensor([13, 14])))
    assert torch.equal(a.masks[2][2:], half.masks[2])  # a sample's mask depends on its own seed only
    other = model(Batch([x], torch.tensor([21, 22, 23, 24])))
    assert not torch.equal(a.mask, other.mask) and not torch.equal(a.loss, other.loss)


def test_config_rebuilds_the_same_model_even_through_json():
    model = small_miram(scales=(1, 2, 4), loss_weights=(1, 0.5, 0.25), target="upsampled", scale_attention="local",
                        local_window=2, scale_decoder_depth=1, mask_ratio=0.6)
    for config in (model.config, json.loads(json.dumps(model.config))):  # a checkpoint card holds lists
        clone = MIRAMViT(**config)
        clone.load_state_dict(model.state_dict(), strict=True)
        assert clone.config == model.config
    assert model.config["loss_weights"] == (1.0, 0.5, 0.25) and model.config["scale_decoder_depth"] == 1
    assert small_miram().config["scale_decoder_depth"] == SMALL["decoder_depth"]  # None resolves before it is stored


@pytest.mark.parametrize("miram,mae", [(miram_vit_micro, mae_vit_micro), (miram_vit_tiny, mae_vit_tiny),
                                       (miram_vit_small, mae_vit_small)])
def test_factories_share_the_mae_sizes(miram, mae):
    model = miram(img_size=32, patch_size=8, target="native", scales=(1, 2))
    base = mae(img_size=16, patch_size=8).config
    assert {k: model.config[k] for k in base if k != "img_size"} == {k: v for k, v in base.items() if k != "img_size"}
    assert model.config["img_size"] == 32 and model.img_size == (16, 16)


# --------------------------------------------------------------------------------------- timm and figures
@pytest.mark.parametrize("target", ["upsampled", "native"])
def test_to_timm_gives_the_encoders_features(target):
    model = small_miram(64, scales=(1, 2), target=target, in_chans=3).eval()
    x = model.scale_targets(torch.rand(2, 3, 64, 64))[1]  # what the encoder sees: 32 px in native mode
    vit = model.to_timm().eval()
    with torch.no_grad():
        assert torch.allclose(model.forward_features_all(x), vit.forward_features(x), atol=1e-5)
    assert vit.patch_embed.img_size == model.img_size


@pytest.mark.parametrize("target", ["upsampled", "native"])
def test_reconstruct_scales_pastes_predictions_into_each_scales_image(target):
    model = small_miram(64, scales=(1, 2), target=target, norm_pix_loss=True)
    x = torch.rand(2, 1, 64, 64)
    recs = model.reconstruct_scales(x, generator=torch.Generator().manual_seed(0))
    targets = model.scale_targets(x)
    for s, rec in recs.items():
        assert rec.pred.shape == targets[s].shape and rec.mask.shape == (2, 1, *targets[s].shape[-2:])
        vis = rec.mask.expand_as(rec.pred) == 0
        assert torch.equal(rec.pasted[vis], targets[s][vis]) and torch.equal(rec.pasted[~vis], rec.pred[~vis])
        assert 0.7 < rec.mask.mean() < 0.8
    assert torch.equal(F.interpolate(recs[1].mask, scale_factor=2), recs[2].mask)  # the same hidden area at x2
    assert torch.equal(model.reconstruct(x, generator=torch.Generator().manual_seed(0)).pred, recs[1].pred)
    with pytest.raises(ValueError, match="denormalize"):
        model.reconstruct_scales(x, denormalize="gt")


# ------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("kw,error,match", [
    (dict(scales=(1, 3)), ValueError, r"scale 3 is not supported.*x2 or x4"),
    (dict(scales=(1, 8)), ValueError, "scale 8 is not supported"),
    (dict(scales=(2,)), ValueError, "must start with 1"),
    (dict(scales=(1,)), ValueError, "MaskedAutoencoderViT"),
    (dict(scales=(1, 4, 2)), ValueError, "increasing"),
    (dict(scales=(1, 2, 2)), ValueError, "once each"),
    (dict(loss_weights=(1.0,)), ValueError, r"loss_weights has 1 values but scales \(1, 2\) has 2"),
    (dict(loss_weights=(1.0, -0.5)), ValueError, ">= 0"),
    (dict(loss_weights=(0, 0)), ValueError, "not all 0"),
    (dict(loss_weights=(1.0, float("nan"))), ValueError, "finite"),
    (dict(loss_weights="ab"), ValueError, "sequence of numbers"),
    (dict(target="nearest"), ValueError, r"target must be one of \('upsampled', 'native'\)"),
    (dict(scale_attention="linear"), ValueError, "scale_attention must be"),
    (dict(scale_attention="local", local_window=3), ValueError, "does not tile the 4x4"),
    (dict(local_window=0), ValueError, "local_window must be a positive int"),
    (dict(scale_decoder_depth=0), ValueError, "scale_decoder_depth"),
    (dict(target="native", img_size=16, scales=(1, 4)), MaskingError,
     r"native mode the encoder sees img_size / 4, 4x4 px, smaller than patch_size 8.*multiples of 32"),
    (dict(target="native", img_size=48, scales=(1, 2, 4)), MaskingError,
     r"12x12 px, not a multiple of patch_size 8.*multiples of 32"),
    (dict(img_size=4), MaskingError, "the encoder sees img_size, 4x4 px, smaller than patch_size 8"),
])
def test_bad_configs_raise_clear_errors(kw, error, match):
    with pytest.raises(error, match=match):
        MIRAMViT(**{"img_size": 32, "patch_size": 8, **SMALL, **kw})


def test_images_of_the_wrong_size_raise_a_clear_error():
    model = small_miram(64, scales=(1, 2), target="native")
    with pytest.raises(MaskingError, match=r"takes images \(N, 1, 64, 64\), got \(2, 1, 32, 32\)"):
        model(torch.rand(2, 1, 32, 32))
