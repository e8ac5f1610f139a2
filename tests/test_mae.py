"""Tests for medmae_nb.models.mae and the pieces it is made of (decoder, loss): shapes, no leak from masked pixels,
the masked encoder and decoder paths against plain references, norm-pix loss identities, timm export."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from medmae_nb.losses import masked_mse, norm_pix_target
from medmae_nb.masking import MaskingError, gather_tokens, informed_masking, patchify, random_masking, unpatchify
from medmae_nb.models import (
    Batch,
    MaskedAutoencoderViT,
    mae_vit_micro,
    mae_vit_small,
    mae_vit_tiny,
    sincos_pos_embed,
)


def mae_loss(pred, target, mask, norm_pix_loss=False):
    return masked_mse(pred, target, mask, norm_pix_loss)

SMALL = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def small_mae(img_size=32, patch_size=8, in_chans=1, **kw) -> MaskedAutoencoderViT:
    torch.manual_seed(0)
    return MaskedAutoencoderViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, **{**SMALL, **kw})


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("chans", [1, 3])
@pytest.mark.parametrize("p", [4, 8, 16])
def test_shapes_and_exact_mask_count(p, chans):
    model = small_mae(32, p, chans)
    x = torch.rand(2, chans, 32, 32)
    length = (32 // p) ** 2
    out = model(x, generator=torch.Generator().manual_seed(0))
    len_keep = max(1, int(length * 0.25))
    assert out.pred.shape == (2, length - len_keep, p * p * chans)  # the head runs on hidden tokens only
    assert model(x, full=True).pred.shape == (2, length, p * p * chans)
    assert out.mask.shape == (2, length) and torch.all(out.mask.sum(1) == length - len_keep)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    info = model.random_mask(2, 0.75)
    assert model.forward_encoder(x, info).shape == (2, 1 + len_keep, 32)
    assert model.forward_features_all(x).shape == (2, 1 + length, 32)


def test_backward_reaches_encoder_and_decoder_but_not_pos_embed():
    model = small_mae(norm_pix_loss=True)
    model(torch.rand(2, 1, 32, 32)).loss.backward()
    names = {n for n, _ in model.named_parameters()}
    assert "pos_embed" not in names and "decoder.pos_embed" not in names
    assert not model.pos_embed.requires_grad and not model.decoder.pos_embed.requires_grad
    assert "pos_embed" in model.state_dict() and "decoder.pos_embed" in model.state_dict()  # saved with checkpoints
    trained = ("patch_embed.proj.weight", "cls_token", "blocks.0.attn.qkv.weight", "decoder.mask_token",
               "decoder.pred.weight")
    for name in trained:
        assert model.get_parameter(name).grad is not None, name


def test_init_follows_mae():
    model = small_mae()
    assert torch.all(model.decoder.embed.bias == 0) and torch.all(model.patch_embed.proj.bias == 0)
    assert 0 < model.decoder.mask_token.std() < 0.05 and 0 < model.cls_token.std() < 0.05  # normal(std=0.02)
    assert torch.all(model.blocks[0].norm1.weight == 1) and torch.all(model.norm.bias == 0)
    w = model.blocks[0].mlp.fc1.weight
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))  # xavier-uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_config_rebuilds_the_same_model():
    model = small_mae(norm_pix_loss=True, mask_ratio=0.6)
    clone = MaskedAutoencoderViT(**model.config)
    clone.load_state_dict(model.state_dict(), strict=True)
    assert model.config["mask_ratio"] == 0.6 and model.config["norm_pix_loss"] is True


def test_generator_reproduces_the_loss_and_informed_masks_plug_in():
    model = small_mae()
    x = torch.rand(3, 1, 32, 32)
    a = model(x, generator=torch.Generator().manual_seed(5))
    b = model(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.mask, b.mask)
    info = informed_masking(torch.randn(3, model.num_patches), 0.5, tau=0.1)
    assert torch.equal(model(x, mask_info=info).mask, info.mask)


def test_masks_come_from_the_per_sample_seeds_of_a_batch():
    # a sample's mask depends on its own seed only, not on its batch neighbours (what makes DDP equal 1 process)
    model = small_mae()
    x = torch.rand(4, 1, 32, 32)
    whole = model(Batch([x], torch.tensor([11, 12, 13, 14])))
    half = model(Batch([x[2:]], torch.tensor([13, 14])))
    assert torch.equal(whole.mask[2:], half.mask)
    assert not torch.equal(whole.mask[0], whole.mask[1])
    assert torch.equal(model(Batch([x], torch.tensor([11, 12, 13, 14]))).loss, whole.loss)


def test_mask_ratio_is_the_models_own():
    model = small_mae(mask_ratio=0.5)
    assert model(torch.rand(2, 1, 32, 32)).mask.sum(1).tolist() == [8.0, 8.0]
    with pytest.raises(AttributeError):
        model.mask_ratio = 0.9  # read from config: the cache key can never disagree with what the model does
    with pytest.raises(TypeError):
        model(torch.rand(2, 1, 32, 32), mask_ratio=0.75)  # training has one source of truth: the config


# ---------------------------------------------------------------------------------------------- no leak
def test_masked_pixels_do_not_reach_the_encoder():
    model = small_mae(patch_size=4).eval()
    x = torch.rand(2, 1, 32, 32)
    info = random_masking(2, model.num_patches, 0.75, generator=torch.Generator().manual_seed(0))
    hidden = info.mask.bool()[..., None]
    tokens = patchify(x, 4)
    x_changed = unpatchify(torch.where(hidden, torch.randn_like(tokens) * 10, tokens), 4, 1, 32)
    assert not torch.equal(x, x_changed)
    assert torch.equal(model.forward_encoder(x, info), model.forward_encoder(x_changed, info))
    # whereas a visible patch does change the latent
    x_vis = unpatchify(torch.where(hidden, tokens, tokens + 1), 4, 1, 32)
    assert not torch.allclose(model.forward_encoder(x, info), model.forward_encoder(x_vis, info))


@pytest.mark.parametrize("chans", [1, 3])
def test_masked_encoder_equals_the_full_path_restricted_to_visible_tokens(chans):
    # the reference: embed every patch, add its position, keep the visible ones, prepend CLS — what MAE does
    model = small_mae(32, 8, chans).eval()
    x = torch.rand(2, chans, 32, 32)
    info = random_masking(2, model.num_patches, 0.75, generator=torch.Generator().manual_seed(1))
    tokens = gather_tokens(model.patch_embed(x) + model.pos_embed[:, 1:], info.keep_idx)
    cls = (model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1)
    reference = model.norm(model.blocks(torch.cat([cls, tokens], 1)))
    assert torch.allclose(model.forward_encoder(x, info), reference, atol=1e-5)


def test_decoder_puts_visible_tokens_back_in_their_places():
    model = small_mae()
    info = random_masking(2, model.num_patches, 0.75, generator=torch.Generator().manual_seed(2))
    latent = torch.randn(2, 1 + info.len_keep, 32)
    embedded = model.decoder.embed(latent)
    filled = model.decoder.fill(embedded, info.restore)
    reference = model.decoder.mask_token.expand(2, model.num_patches, -1).clone()
    for n in range(2):  # visible token k goes to image position keep_idx[n, k]; the rest hold the mask token
        reference[n, info.keep_idx[n]] = embedded[n, 1:]
    assert torch.equal(filled[:, 0], embedded[:, 0])  # CLS first
    assert torch.equal(filled[:, 1:], reference)
    # predicting only hidden tokens gives the same numbers as predicting all and picking the hidden ones
    full = model.forward_decoder(latent, info.restore)
    assert torch.allclose(model.forward_decoder(latent, info.restore, info.hidden_idx),
                          gather_tokens(full, info.hidden_idx), atol=1e-6)
    assert torch.equal(torch.sort(info.hidden_idx, 1).values, torch.nonzero(info.mask)[:, 1].view(2, -1))


def test_training_loss_equals_the_loss_over_all_patches_masked():
    model = small_mae(norm_pix_loss=True)
    x = torch.rand(3, 1, 32, 32)
    info = random_masking(3, model.num_patches, 0.75, generator=torch.Generator().manual_seed(3))
    fast, full = model(x, mask_info=info), model(x, mask_info=info, full=True)
    assert torch.allclose(fast.loss, masked_mse(full.pred, patchify(x, 8), info.mask, norm_pix=True), atol=1e-6)
    assert torch.allclose(fast.loss, full.loss, atol=1e-6)


# ---------------------------------------------------------------------------------------------- the loss
def test_norm_pix_loss_zero_at_standardised_target():
    target = torch.randn(2, 6, 48) * 3 + 1
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    pred = (target - mean) / (var + 1e-6).sqrt()
    mask = torch.ones(2, 6)
    assert mae_loss(pred, target, mask, norm_pix_loss=True) < 1e-10
    assert mae_loss(pred, target, mask, norm_pix_loss=False) > 0.1


def test_norm_pix_loss_invariant_to_shift_and_scale_of_a_target_patch():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 64), torch.randn(2, 6, 64)
    mask = (torch.arange(6) % 2).float().expand(2, -1)
    changed = target.clone()
    changed[0, 1] = changed[0, 1] * 3.0 + 5.0
    changed[1, 3] = changed[1, 3] * 0.5 - 2.0
    base = mae_loss(pred, target, mask, norm_pix_loss=True)
    assert torch.allclose(base, mae_loss(pred, changed, mask, norm_pix_loss=True), atol=1e-5)
    assert not torch.allclose(base, mae_loss(pred, changed, mask, norm_pix_loss=False), atol=1e-2)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_only_masked_patches_contribute(norm_pix):
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 16, 16)
    pred = torch.randn(2, 4, 8 * 8 * 3)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    base = mae_loss(pred, patchify(imgs, 8), mask, norm_pix)
    visible = imgs.clone()
    visible[:, :, 0:8, 8:16] = torch.rand(2, 3, 8, 8) * 5  # patch 1: visible in both samples
    assert torch.equal(base, mae_loss(pred, patchify(visible, 8), mask, norm_pix))
    hidden = imgs.clone()
    hidden[0, :, 0:8, 0:8] += torch.rand(3, 8, 8)  # patch 0 of sample 0: hidden
    assert not torch.equal(base, mae_loss(pred, patchify(hidden, 8), mask, norm_pix))
    # and the mean is over hidden patches only
    manual = ((pred - patchify(imgs, 8)) ** 2).mean(-1)[mask.bool()].mean()
    if not norm_pix:
        assert torch.allclose(base, manual)


# ---------------------------------------------------------------------------------------- reconstruction
def test_reconstruct_pastes_prediction_into_hidden_patches():
    model = small_mae(norm_pix_loss=True)
    x = torch.rand(2, 1, 32, 32)
    rec = model.reconstruct(x, 0.75, generator=torch.Generator().manual_seed(0))
    vis = rec.mask == 0
    assert rec.mask.shape == (2, 1, 32, 32) and rec.pred.shape == x.shape
    assert torch.equal(rec.pasted[vis], x[vis]) and torch.all(rec.masked[~vis] == 0)
    assert torch.equal(rec.pasted[~vis], rec.pred[~vis])
    stats = model.reconstruct(x, 0.75, generator=torch.Generator().manual_seed(0), denormalize="target_stats")
    assert not torch.allclose(stats.pred, rec.pred)
    with pytest.raises(ValueError, match="denormalize must be"):
        model.reconstruct(x, denormalize="gt")


def test_target_stats_denormalisation_recovers_the_image_from_a_perfect_prediction(monkeypatch):
    # a model that predicts the standardised target exactly must give back the image: pred * std + mean
    model = small_mae(norm_pix_loss=True)
    x = torch.rand(2, 1, 32, 32) * 0.5 + 0.2
    perfect = norm_pix_target(patchify(x, 8))
    monkeypatch.setattr(model, "forward_decoder", lambda latent, restore=None, predict_idx=None: perfect)
    rec = model.reconstruct(x, 0.75, generator=torch.Generator().manual_seed(0), denormalize="target_stats")
    assert torch.allclose(rec.pred, x, atol=1e-4)
    raw = model.reconstruct(x, 0.75, generator=torch.Generator().manual_seed(0), denormalize="none")
    assert torch.allclose(raw.pred, unpatchify(perfect, 8, 1, 32))


# ------------------------------------------------------------------------------------------- export to timm
@pytest.mark.parametrize("chans,p", [(1, 8), (3, 4)])
def test_to_timm_gives_identical_features(chans, p):
    model = small_mae(32, p, chans).eval()
    x = torch.rand(2, chans, 32, 32)
    vit = model.to_timm().eval()
    with torch.no_grad():
        assert torch.allclose(model.forward_features_all(x), vit.forward_features(x), atol=1e-5)
    assert vit.pos_embed.shape == (1, 1 + model.num_patches, 32)


def test_timm_model_with_same_args_loads_encoder_strictly():
    model = small_mae(in_chans=3)
    vit = VisionTransformer(**model.timm_kwargs(num_classes=0))
    vit.load_state_dict(model.encoder_state_dict(), strict=True)
    head = model.to_timm(num_classes=3, drop_path_rate=0.1)
    assert head(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    avg = model.to_timm(num_classes=2, global_pool="avg")
    assert avg(torch.rand(2, 3, 32, 32)).shape == (2, 2)


# ---------------------------------------------------------------------------------------------- sin-cos
def test_sincos_pos_embed_properties():
    dim, gh, gw = 16, 3, 5
    emb = sincos_pos_embed(dim, gh, gw)
    assert emb.shape == (1 + gh * gw, dim) and emb.dtype == torch.float32
    assert torch.all(emb[0] == 0)
    grid = emb[1:].reshape(gh, gw, dim)
    assert torch.equal(grid[:, :, : dim // 2], grid[:1, :, : dim // 2].expand(gh, -1, -1))  # x half: column only
    assert torch.equal(grid[:, :, dim // 2 :], grid[:, :1, dim // 2 :].expand(-1, gw, -1))  # y half: row only
    # channel 0 is sin(col * 1), channel dim/4 is cos(col * 1); row 2 shows up in the second half
    assert grid[0, 3, 0] == pytest.approx(math.sin(3)) and grid[0, 3, dim // 4] == pytest.approx(math.cos(3))
    assert grid[2, 0, dim // 2] == pytest.approx(math.sin(2))
    assert sincos_pos_embed(dim, gh, gw, cls_token=False).shape == (gh * gw, dim)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(6, 2, 2)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(MaskingError, match="not divisible by patch size 8"):
        MaskedAutoencoderViT(img_size=30, patch_size=8, **SMALL)
    model = small_mae()
    with pytest.raises(MaskingError, match=r"takes images \(N, 1, 32, 32\)"):
        model(torch.rand(2, 3, 32, 32))
    for ratio in (0.0, 1.0, -0.5, 1.2):
        with pytest.raises(MaskingError, match="strictly between 0 and 1"):
            small_mae(mask_ratio=ratio)
    with pytest.raises(MaskingError, match="mask_info is for"):
        model(torch.rand(2, 1, 32, 32), mask_info=random_masking(2, 4, 0.5))


def test_factories():
    micro = mae_vit_micro()
    tiny = mae_vit_tiny(img_size=32, patch_size=4, in_chans=3, decoder_depth=1)
    small = mae_vit_small(img_size=32, patch_size=16)
    assert (micro.config["embed_dim"], micro.config["depth"], micro.num_patches) == (128, 6, 64)
    assert (tiny.config["embed_dim"], tiny.config["depth"], tiny.config["decoder_depth"]) == (192, 12, 1)
    assert tiny.decoder.pred.out_features == 4 * 4 * 3
    assert (small.config["embed_dim"], small.config["num_heads"], small.config["decoder_embed_dim"]) == (384, 6, 256)


@pytest.mark.parametrize("chans", [1, 3])
def test_visible_patch_embedding_equals_the_conv(chans):
    # the masked path embeds gathered pixels with a Linear; it must equal PatchEmbed's conv on those patches
    model = small_mae(32, 8, chans)
    x = torch.rand(2, chans, 32, 32)
    info = random_masking(2, model.num_patches, 0.5, generator=torch.Generator().manual_seed(0))
    conv = model.patch_embed(x).gather(1, info.keep_idx[..., None].expand(-1, -1, 32))
    linear = model.embed_patches(patchify(x, 8).gather(1, info.keep_idx[..., None].expand(-1, -1, 64 * chans)))
    assert torch.allclose(conv, linear, atol=1e-6)
