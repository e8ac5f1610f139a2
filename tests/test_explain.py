"""Tests for medmae_nb.explain: attention maps vs timm's un-fused attention, rollout, captum maps, lesion scores."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import timm.layers.config as timm_config
import torch
from torch import nn

from medmae_nb import explain as ex

VIT_KW = dict(img_size=32, patch_size=8, in_chans=1, num_classes=3, embed_dim=32, num_heads=2, global_pool="token")


def _tiny_vit(depth: int = 2, seed: int = 0, **kw) -> nn.Module:
    """A tiny random ViT whose attention is far from uniform (timm's init gives near-uniform attention)."""
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=depth, **{**VIT_KW, **kw})
    with torch.no_grad():
        for blk in vit.blocks:
            blk.attn.qkv.weight.normal_(0, 0.4)
    return vit.eval()


@pytest.fixture
def unfused():
    """timm's fused-attention flag off while a model is built (read in Attention.__init__), restored after."""
    old = timm_config._USE_FUSED_ATTN
    timm.layers.set_fused_attn(False)
    yield
    timm_config._USE_FUSED_ATTN = old


def _softmax_matrices(vit: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The attention matrices of an un-fused timm ViT, read from each block's attn_drop output."""
    out: list[torch.Tensor] = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: out.append(o.detach())) for b in vit.blocks]
    try:
        with torch.no_grad():
            vit(images)
    finally:
        for h in handles:
            h.remove()
    assert len(out) == len(vit.blocks), "the reference model must run the un-fused attention path"
    return out


def _unfused_copy(vit: nn.Module, depth: int, **kw) -> nn.Module:
    twin = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=depth, **{**VIT_KW, **kw})
    twin.load_state_dict(vit.state_dict())
    assert not twin.blocks[-1].attn.fused_attn
    return twin.eval()


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
        for m in model.modules()
    )


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------------------- attention


def test_attention_maps_shape_sum_and_sign(images):
    vit = _tiny_vit()
    maps = ex.attention_maps(vit, images)
    assert maps.shape == (3, 2, 4, 4)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(3, 2))
    raw = ex.attention_maps(vit, images, normalize=False)
    assert (raw.sum((-2, -1)) < 1).all()  # the rest of the CLS attention goes to the CLS token itself


@pytest.mark.parametrize("kw", [{}, {"qk_norm": True, "reg_tokens": 2, "qkv_bias": True}])
def test_attention_maps_equal_unfused_softmax(images, unfused, kw):
    fused_attn = timm_config._USE_FUSED_ATTN
    timm_config._USE_FUSED_ATTN = 1
    try:
        vit = _tiny_vit(**kw)
    finally:
        timm_config._USE_FUSED_ATTN = fused_attn
    assert vit.blocks[-1].attn.fused_attn  # the model under test uses SDPA: no attention matrix exists
    twin = _unfused_copy(vit, depth=2, **kw)
    prefix = vit.num_prefix_tokens
    assert prefix == 1 + kw.get("reg_tokens", 0)

    attn = _softmax_matrices(twin, images)[-1]  # (N, heads, T, T)
    raw = attn[:, :, 0, prefix:].reshape(3, 2, 4, 4)
    torch.testing.assert_close(ex.attention_maps(vit, images, normalize=False), raw)
    torch.testing.assert_close(ex.attention_maps(vit, images), raw / raw.sum((-2, -1), keepdim=True))
    torch.testing.assert_close(ex.attention_maps(twin, images), ex.attention_maps(vit, images))
    # the maps are far from uniform, so the comparison is not vacuous
    assert ex.attention_maps(vit, images).amax() > 2 / 16


def test_rollout_shape_and_normalisation(images):
    vit = _tiny_vit()
    for kw in ({}, {"discard_ratio": 0.5}, {"head_fusion": "max"}, {"head_fusion": "min", "discard_ratio": 0.9}):
        r = ex.attention_rollout(vit, images, **kw)
        assert r.shape == (3, 4, 4)
        assert (r >= 0).all()
        torch.testing.assert_close(r.sum((-2, -1)), torch.ones(3))
    with pytest.raises(ValueError, match="head_fusion"):
        ex.attention_rollout(vit, images, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        ex.attention_rollout(vit, images, discard_ratio=1.0)


def test_rollout_depth_one_is_the_head_mean_cls_row(images, unfused):
    vit = _tiny_vit(depth=1)
    (attn,) = _softmax_matrices(vit, images)
    a = 0.5 * attn.mean(1) + 0.5 * torch.eye(17)  # the residual identity touches only the CLS->CLS entry of row 0
    row = a[:, 0, 1:]
    torch.testing.assert_close(ex.attention_rollout(vit, images), (row / row.sum(-1, keepdim=True)).reshape(3, 4, 4))


def test_rollout_depth_two_is_the_matrix_product(images, unfused):
    vit = _tiny_vit(depth=2)
    a1, a2 = (0.5 * a.mean(1) + 0.5 * torch.eye(17) for a in _softmax_matrices(vit, images))
    row = (a2 @ a1)[:, 0, 1:]
    torch.testing.assert_close(ex.attention_rollout(vit, images), (row / row.sum(-1, keepdim=True)).reshape(3, 4, 4))


def _reference_rollout_row(attn: torch.Tensor, fusion: str, discard_ratio: float, prefix: int = 1) -> torch.Tensor:
    """Depth-1 rollout written out: fuse heads, zero the weakest patch entries of each row, add I, renormalise."""
    a = {"mean": attn.mean(1), "max": attn.amax(1), "min": attn.amin(1)}[fusion].clone()
    t = a.shape[-1]
    n_drop = int(discard_ratio * (t - prefix))
    if n_drop:
        patch = a[..., prefix:]
        kth = patch.sort(-1).values[..., n_drop - 1 : n_drop]  # the n_drop-th smallest value of each row
        a[..., prefix:] = torch.where(patch <= kth, torch.zeros_like(patch), patch)
    a = a + torch.eye(t)
    a = a / a.sum(-1, keepdim=True)
    row = a[:, 0, prefix:]
    return row / row.sum(-1, keepdim=True)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.3, 0.75])  # 0.3 drops 4 of 16 patch keys, 5 if prefixes counted
@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_rollout_fusion_and_discard_match_the_definition(images, unfused, fusion, discard_ratio, reg_tokens):
    vit = _tiny_vit(depth=1, reg_tokens=reg_tokens)
    (attn,) = _softmax_matrices(vit, images)
    expected = _reference_rollout_row(attn, fusion, discard_ratio, prefix=1 + reg_tokens).reshape(3, 4, 4)
    torch.testing.assert_close(ex.attention_rollout(vit, images, discard_ratio, fusion), expected)


def test_rollout_discards_the_weakest_attention(images, unfused):
    vit = _tiny_vit(depth=1)
    (attn,) = _softmax_matrices(vit, images)
    cls_row = attn.mean(1)[:, 0, 1:]  # (N, 16) head-mean CLS attention over patches
    r = ex.attention_rollout(vit, images, discard_ratio=0.25).flatten(1)  # drops 4 of 16 per row
    weakest = cls_row.argsort(-1)[:, :4]
    strongest = cls_row.argsort(-1)[:, 4:]
    assert (r.gather(1, weakest) == 0).all()
    assert (r.gather(1, strongest) > 0).all()
    # the kept entries keep their order: the strongest patch is still the peak of the map
    assert (r.argmax(-1) == cls_row.argmax(-1)).all()


def test_attention_needs_a_class_token(images):
    vit = _tiny_vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        ex.attention_maps(vit, images)
    with pytest.raises(ValueError, match="class token"):
        ex.attention_rollout(vit, images)
    with pytest.raises(ValueError, match="blocks"):
        ex.attention_maps(nn.Linear(2, 2), images)


# ---------------------------------------------------------------------------------------------------- attributions


def test_integrated_gradients_shape_and_linear_model_exactness(images):
    vit = _tiny_vit()
    ig = ex.integrated_gradients(vit, images, target=1, steps=8)
    assert ig.shape == (3, 32, 32)
    assert torch.isfinite(ig).all() and (ig >= 0).all()
    # for a linear model IG is exactly (x - baseline) * w, whatever the number of steps
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    x = torch.rand(2, 2, 8, 8)
    w = lin[1].weight[1].detach().reshape(2, 8, 8)
    ig_black = ex.integrated_gradients(lin, x, target=1, steps=4, baseline="black")
    torch.testing.assert_close(ig_black, (x * w).abs().sum(1))
    base = ex.blurred_baseline(x)  # the default baseline
    torch.testing.assert_close(ex.integrated_gradients(lin, x, target=1, steps=4), ((x - base) * w).abs().sum(1))
    base = torch.full_like(x, 0.5)
    expected = ((x - base) * w).abs().sum(1)
    torch.testing.assert_close(ex.integrated_gradients(lin, x, target=1, steps=4, baseline=base), expected)


def _manual_grad_cam(vit, images, target: int) -> torch.Tensor:
    """Grad-CAM written out on the last block's input: ReLU(sum_d mean_tokens(grad) * token), patch tokens only."""
    feats = {}
    handle = vit.blocks[-1].norm1.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    try:
        logits = vit(images)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[:, target].sum(), feats["x"])
    prefix = vit.num_prefix_tokens
    tokens, grad = feats["x"][:, prefix:], grad[:, prefix:]  # (N, 16, D) patch tokens
    manual = torch.relu((grad.mean(1, keepdim=True) * tokens).sum(-1)).reshape(len(images), 1, 4, 4)
    return torch.nn.functional.interpolate(manual, size=(32, 32), mode="nearest")[:, 0].detach()


def test_grad_cam_vit_matches_manual_computation(images):
    vit = _tiny_vit()
    cam = ex.grad_cam(vit, images, target=2)
    assert cam.shape == (3, 32, 32)
    assert torch.isfinite(cam).all() and (cam >= 0).all()
    torch.testing.assert_close(cam, _manual_grad_cam(vit, images, 2))
    assert cam.amax() > 0


def test_grad_cam_vit_with_register_tokens_uses_only_patch_tokens(images):
    vit = _tiny_vit(reg_tokens=2)
    assert vit.num_prefix_tokens == 3
    torch.testing.assert_close(ex.grad_cam(vit, images, target=1), _manual_grad_cam(vit, images, 1))


def test_no_target_explains_the_predicted_class(images):
    vit = _tiny_vit()
    with torch.no_grad():
        pred = vit(images).argmax(1)
    torch.testing.assert_close(ex.grad_cam(vit, images), ex.grad_cam(vit, images, target=pred))
    torch.testing.assert_close(
        ex.integrated_gradients(vit, images, steps=4), ex.integrated_gradients(vit, images, target=pred, steps=4)
    )


def test_maps_are_computed_in_eval_mode_and_modes_restored(images):
    vit = _tiny_vit(drop_rate=0.5, proj_drop_rate=0.5, attn_drop_rate=0.5)
    expected = {
        "attention": ex.attention_maps(vit, images),
        "rollout": ex.attention_rollout(vit, images),
        "ig": ex.integrated_gradients(vit, images, target=0, steps=4),
        "cam": ex.grad_cam(vit, images, target=0),
    }
    vit.train()
    vit.blocks[0].eval()  # a part kept in eval mode must stay so
    torch.manual_seed(1)
    got = {
        "attention": ex.attention_maps(vit, images),
        "rollout": ex.attention_rollout(vit, images),
        "ig": ex.integrated_gradients(vit, images, target=0, steps=4),
        "cam": ex.grad_cam(vit, images, target=0),
    }
    for name in expected:  # dropout would make train-mode maps differ
        torch.testing.assert_close(got[name], expected[name], msg=name)
    assert vit.training and vit.blocks[1].training and not any(m.training for m in vit.blocks[0].modules())


def test_grad_cam_cnn_and_predicted_target(images):
    torch.manual_seed(0)
    cnn = timm.create_model("resnet10t", pretrained=False, in_chans=1, num_classes=3).eval()
    cam = ex.grad_cam(cnn, images)  # default: last Conv2d, predicted class
    assert cam.shape == (3, 32, 32)
    assert torch.isfinite(cam).all() and (cam >= 0).all()
    smooth = ex.grad_cam(cnn, images, target=torch.tensor([0, 1, 2]), interpolate_mode="bilinear")
    assert smooth.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="Conv2d"):
        ex.grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2)), images)


def test_frozen_model_still_explained(images):
    vit = _tiny_vit()
    for p in vit.parameters():
        p.requires_grad_(False)
    cam = ex.grad_cam(vit, images, target=0)
    assert cam.amax() > 0
    assert ex.integrated_gradients(vit, images, target=0, steps=4).amax() > 0


def test_model_left_unchanged(images):
    vit = _tiny_vit()
    vit.train()  # no dropout in the tiny model, so train-mode outputs are deterministic
    before_state = {k: v.clone() for k, v in vit.state_dict().items()}
    with torch.no_grad():
        before = vit(images)
    ex.attention_maps(vit, images)
    ex.attention_rollout(vit, images, discard_ratio=0.3)
    ex.integrated_gradients(vit, images, target=0, steps=4)
    ex.grad_cam(vit, images, target=0)
    assert vit.training
    assert _no_hooks(vit)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), before, rtol=0, atol=0)
    assert all(torch.equal(v, before_state[k]) for k, v in vit.state_dict().items())


# ----------------------------------------------------------------------------------------------------- lesion scores


def _lesion(n: int = 2, size: int = 16) -> np.ndarray:
    les = np.zeros((n, size, size), bool)
    les[:, 4:8, 4:8] = True  # 16 of 256 pixels
    return les


def test_upsample_map():
    m = torch.arange(4.0).reshape(1, 2, 2)
    up = ex.upsample_map(m, 4)
    assert up.shape == (1, 4, 4)
    torch.testing.assert_close(up[0], torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))
    assert isinstance(ex.upsample_map(m.numpy(), (4, 6)), np.ndarray)
    assert ex.upsample_map(torch.rand(2, 3, 2, 2), 8).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="maps must be"):
        ex.upsample_map(torch.rand(4, 4), 8)


def test_scores_on_hand_made_maps():
    les = _lesion()
    inside = np.zeros((2, 16, 16))
    inside[:, 5, 6] = 1.0
    outside = np.zeros((2, 16, 16))
    outside[:, 12, 1] = 1.0
    uniform = np.ones((2, 16, 16))
    np.testing.assert_array_equal(ex.pointing_game(inside, les), [1.0, 1.0])
    np.testing.assert_array_equal(ex.pointing_game(outside, les), [0.0, 0.0])
    np.testing.assert_allclose(ex.mass_in_lesion(inside, les), 1.0)
    np.testing.assert_allclose(ex.mass_ratio(inside, les), 16.0)  # all mass on 1/16 of the image
    assert (ex.mass_ratio(inside + 0.1 * uniform, les) > 1).all()
    np.testing.assert_allclose(ex.mass_in_lesion(outside, les), 0.0)
    np.testing.assert_array_equal(ex.mass_ratio(uniform, les), [1.0, 1.0])  # uniform = chance, exactly
    np.testing.assert_allclose(ex.pointing_game(uniform, les), 16 / 256)  # ties: share of peak pixels inside
    # torch inputs and token-resolution maps (upsampled to the mask size) are accepted
    token = torch.zeros(2, 4, 4)
    token[:, 1, 1] = 1.0  # the cell covering pixels 4:8, 4:8
    np.testing.assert_array_equal(ex.pointing_game(token, torch.from_numpy(les)), [1.0, 1.0])
    np.testing.assert_allclose(ex.mass_ratio(token, les), 16.0)


def test_mass_ignores_negative_values():
    les = _lesion()
    m = np.where(les, 1.0, -1.0)  # negative everywhere outside: no mass outside, not negative mass
    np.testing.assert_allclose(ex.mass_in_lesion(m, les), 1.0)
    np.testing.assert_allclose(ex.mass_ratio(m, les), 16.0)


def test_token_maps_score_as_their_upsampled_version():
    rng = np.random.default_rng(3)
    les = _lesion(3)
    les[2, 10:15, 2:7] = True
    token = rng.random((3, 4, 4))
    pixel = ex.upsample_map(token, 16)
    for fn in (ex.pointing_game, ex.mass_in_lesion, ex.mass_ratio):
        np.testing.assert_allclose(fn(token, les), fn(pixel, les))
        as_torch = fn(torch.from_numpy(token).float(), torch.from_numpy(les))
        np.testing.assert_allclose(as_torch, fn(pixel, les), rtol=1e-6)
    assert ex.score_maps(token, les, n_boot=30) == ex.score_maps(pixel, les, n_boot=30)


def test_scores_without_lesion_are_nan():
    les = _lesion(3)
    les[1] = False
    maps = np.random.default_rng(0).random((3, 16, 16))
    for fn in (ex.pointing_game, ex.mass_in_lesion, ex.mass_ratio):
        out = fn(maps, les)
        assert out.shape == (3,) and np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()
    # an all-zero map points nowhere: scored as uniform (the lesion's area share), not dropped as NaN
    zero = ex.mass_in_lesion(np.zeros((3, 16, 16)), les)
    np.testing.assert_allclose(zero[[0, 2]], les[[0, 2]].mean(axis=(1, 2)))
    assert np.isnan(zero[1])


def test_score_input_errors():
    with pytest.raises(ValueError, match="lesion masks"):
        ex.mass_in_lesion(np.ones((2, 16, 16)), _lesion(3))
    with pytest.raises(ValueError, match="does not divide"):
        ex.mass_in_lesion(np.ones((2, 5, 5)), _lesion(2))
    with pytest.raises(ValueError, match="NaN"):
        ex.pointing_game(np.full((2, 16, 16), np.nan), _lesion(2))


def test_score_maps_summary():
    les = _lesion(4)
    les[3] = False
    res = ex.score_maps(les.astype(float), les, n_boot=50)
    assert set(res) == {"pointing_game", "mass_in_lesion", "mass_ratio", "constant_maps"}
    assert res["constant_maps"].value == 0
    assert res["pointing_game"] == (1.0, 1.0, 1.0)
    assert res["mass_ratio"].value == pytest.approx(16.0)
    rng = np.random.default_rng(0)
    noisy = ex.score_maps(rng.random((4, 16, 16)), les, n_boot=200)["mass_ratio"]
    assert noisy.low <= noisy.value <= noisy.high


def test_random_baseline_is_chance():
    les = np.zeros((4, 32, 32), bool)
    les[:, 8:24, 4:20] = True  # area share 0.25, aligned with 8-pixel cells except along x
    base = ex.random_map_baseline(les, n_draws=200, patch_size=8, seed=0)
    assert base["mass_in_lesion"] == pytest.approx(0.25, abs=0.02)
    assert base["mass_ratio"] == pytest.approx(1.0, abs=0.08)
    assert base["pointing_game"] == pytest.approx(0.25, abs=0.05)
    assert ex.random_map_baseline(les, n_draws=5, seed=3) == ex.random_map_baseline(les, n_draws=5, seed=3)
    assert np.isnan(ex.random_map_baseline(np.zeros((2, 8, 8), bool), n_draws=2)["mass_ratio"])
    for kw, name in (({"n_draws": 0}, "n_draws"), ({"patch_size": 0}, "patch_size"), ({"patch_size": 2.5}, "patch")):
        with pytest.raises(ValueError, match=f"{name}.* must be a whole number >= 1"):
            ex.random_map_baseline(les, **kw)
    with pytest.raises(ValueError, match=r"lesion must be \(N, H, W\)"):
        ex.random_map_baseline(les[0])


# ------------------------------------------------------------------------------------------------ controls


def test_constant_maps_are_counted_at_chance_level_never_dropped():
    les = _lesion(4)
    maps = les.astype(float)
    maps[1] = 0.0  # an all-zero Grad-CAM map
    maps[2] = 0.7  # a constant map
    res = ex.score_maps(maps, les, n_boot=50)
    assert res["constant_maps"].value == pytest.approx(0.5)
    area = les.mean(axis=(1, 2))
    ratio = ex.mass_ratio(maps, les)
    np.testing.assert_allclose(ratio[[1, 2]], 1.0)  # uniform: no better than chance
    assert np.isfinite(ratio).all() and ratio[0] == pytest.approx(1 / area[0])
    np.testing.assert_allclose(ex.pointing_game(maps, les)[[1, 2]], area[[1, 2]])
    assert res["mass_ratio"].value == pytest.approx(ratio.mean())  # all four images in the mean


def test_blurred_baseline_keeps_brightness_and_removes_structure():
    x = torch.full((2, 1, 32, 32), 0.6)
    x[0, :, 12:16, 12:16] = 0.0  # a small dark lesion
    b = ex.blurred_baseline(x)
    assert b.shape == x.shape
    torch.testing.assert_close(ex.blurred_baseline(torch.full((1, 3, 16, 16), 0.3)), torch.full((1, 3, 16, 16), 0.3))
    assert float(b[0, 0, 13, 13]) > 0.4  # the lesion is blurred away ...
    assert abs(float(b.mean()) - float(x.mean())) < 0.01  # ... the mean brightness stays
    # so IG's (x - baseline) is large on the dark lesion, where a black baseline gives exactly zero
    assert float((x - b)[0, 0, 13, 13].abs()) > 0.4 and float(x[0, 0, 13, 13]) == 0.0
    with pytest.raises(ValueError, match="sigma"):
        ex.blurred_baseline(x, sigma=0)
    with pytest.raises(ValueError, match="baseline"):
        ex.integrated_gradients(nn.Sequential(nn.Flatten(), nn.Linear(1024, 2)), x, baseline="white")


def test_intensity_map_points_at_the_dark_lesion():
    les = _lesion(3)
    x = torch.full((3, 1, 16, 16), 0.8) + 0.05 * torch.rand(3, 1, 16, 16)
    x[:, 0][torch.from_numpy(les)] = 0.1
    m = ex.intensity_map(x)
    assert m.shape == (3, 16, 16) and (m >= 0).all()
    assert ex.pointing_game(m, les).min() == 1.0
    bright = ex.intensity_map(x, dark=False)
    assert ex.pointing_game(bright, les).max() == 0.0
    blocky = ex.intensity_map(x, patch_size=4)
    assert torch.equal(blocky[:, :4, :4], blocky[:, :1, :1].expand(3, 4, 4))
    with pytest.raises(ValueError, match="divide"):
        ex.intensity_map(x, patch_size=5)


def test_randomize_weights_redraws_everything_and_leaves_the_model_alone():
    vit = _tiny_vit()
    before = {n: p.detach().clone() for n, p in vit.named_parameters()}
    state = torch.random.get_rng_state()
    r = ex.randomize_weights(vit, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is untouched
    for n, p in vit.named_parameters():
        assert torch.equal(p, before[n]), n
    changed = [n for n, p in r.named_parameters() if not torch.equal(p, before[n])]
    # LayerNorm resets to ones/zeros, which may equal a fresh model's; every weight matrix and the tokens change
    must = [n for n, p in vit.named_parameters() if p.ndim >= 2 or n in ("cls_token", "pos_embed")]
    assert set(must) <= set(changed)
    again = ex.randomize_weights(vit, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(r.parameters(), again.parameters()))
    top = ex.randomize_weights(vit, seed=3, include=lambda n: n.startswith("head"))
    assert not torch.equal(top.head.weight, vit.head.weight)
    assert torch.equal(top.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)


def test_map_similarity_is_a_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.random((4, 8, 8))
    np.testing.assert_allclose(ex.map_similarity(a, np.exp(3 * a)), 1.0)  # monotone: same ranks
    np.testing.assert_allclose(ex.map_similarity(a, -a), -1.0)
    assert abs(ex.map_similarity(a, rng.random((4, 8, 8))).mean()) < 0.2
    ties = np.array([[[0.0, 0.0], [1.0, 2.0]]])
    np.testing.assert_allclose(ex.map_similarity(ties, np.array([[[0.0, 1.0], [2.0, 3.0]]])), 0.9486833, rtol=1e-6)
    assert np.isnan(ex.map_similarity(np.zeros((1, 2, 2)), ties)).all()
    with pytest.raises(ValueError, match="one shape"):
        ex.map_similarity(a, a[:, :4])


def test_rollout_mean_query_is_the_product_of_residual_attention():
    vit = _tiny_vit()
    x = torch.rand(2, vit.patch_embed.proj.in_channels, 32, 32)
    attns = ex.attention_matrices(vit, x)
    assert len(attns) == len(vit.blocks)
    t = attns[0].shape[-1]
    r = torch.eye(t).expand(2, t, t)
    for a in attns:  # the equation, written out: (A + I), rows renormalised, multiplied first to last
        a = a.mean(1) + torch.eye(t)
        r = (a / a.sum(-1, keepdim=True)) @ r
    prefix = vit.num_prefix_tokens
    want = r[:, prefix:, prefix:].mean(1)
    want = (want / want.sum(-1, keepdim=True)).reshape(2, 4, 4)
    torch.testing.assert_close(ex.attention_rollout(vit, x, query="mean"), want)
    want_cls = r[:, 0, prefix:] / r[:, 0, prefix:].sum(-1, keepdim=True)
    torch.testing.assert_close(ex.attention_rollout(vit, x), want_cls.reshape(2, 4, 4))
    with pytest.raises(ValueError, match="query"):
        ex.attention_rollout(vit, x, query="max")
