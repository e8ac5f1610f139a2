"""Masked ConvNeXt: hidden sites stay zero, no information leaks from hidden pixels, weights move into timm."""

from __future__ import annotations

import pytest
import timm
import torch

from medmae_nb.masking import MaskingError, mask_to_pixels, patchify
from medmae_nb.models.base import Batch
from medmae_nb.models.masked_convnext import (
    MaskedConvNeXt,
    dense_masking,
    masked_convnext_atto,
    visibility_at,
)


@pytest.fixture(scope="module")
def model() -> MaskedConvNeXt:
    torch.manual_seed(0)
    return masked_convnext_atto(img_size=64).eval()


def _mask(model: MaskedConvNeXt, n: int, seed: int) -> torch.Tensor:
    return model.make_mask(torch.zeros(n, 1, model.img_size, model.img_size),
                           generator=torch.Generator().manual_seed(seed)).mask


def _refill_hidden(x: torch.Tensor, mask: torch.Tensor, patch: int, seed: int) -> torch.Tensor:
    pix = mask_to_pixels(mask, patch, x.shape[-1])[:, None]
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 5 - 2
    return x * (1 - pix) + noise * pix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_information_leaks_from_hidden_pixels_into_any_stage(model, seed):
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(seed))
    mask = _mask(model, 3, seed)
    a = model.stage_features(x, mask)
    b = model.stage_features(_refill_hidden(x, mask, 16, seed + 100), mask)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)  # bit-identical: hidden content never reaches a visible site
    # ... and the prediction of every cell, hidden ones included, depends on visible pixels only
    torch.testing.assert_close(model.decode(a, mask), model.decode(b, mask), rtol=0, atol=0)


def test_hidden_sites_are_exactly_zero_after_every_masked_layer(model):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    mask = _mask(model, 2, 3)
    visible = model.visible_map(mask)
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = []
    with dense_masking(model.encoder, visible):
        # registered after the masking hooks, so they see what the next layer sees
        for name, module in model.encoder.named_modules():
            if name.endswith("conv_dw") or name.count(".") == 3 and ".blocks." in name:  # dw convs and blocks
                hooks.append(module.register_forward_hook(lambda m, i, o, name=name: seen.append((name, o))))
        try:
            model.encoder.stages(model.encoder.stem(x))
        finally:
            for h in hooks:
                h.remove()
    assert len(seen) == 2 * sum(len(s.blocks) for s in model.encoder.stages)
    for name, out in seen:
        hidden = visibility_at(visible, out.shape[-2:]) == 0
        assert out.masked_select(hidden.expand_as(out)).abs().max() == 0, name
        assert out.masked_select(~hidden.expand_as(out)).abs().sum() > 0, name


def test_a_coarse_site_is_visible_when_any_cell_under_it_is():
    vis = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]).reshape(1, 1, 4, 4)
    assert visibility_at(vis, (2, 2)).flatten().tolist() == [1, 0, 0, 1]
    assert visibility_at(vis, (8, 8)).sum() == 8  # two cells, 2x2 sites each
    with pytest.raises(MaskingError):
        visibility_at(vis, (3, 3))


def test_hooks_exist_only_inside_the_block_and_go_after_an_error(model):
    x = torch.rand(1, 1, 64, 64)
    plain = model.encoder.forward_features(x)
    with pytest.raises(RuntimeError, match="boom"):
        with dense_masking(model.encoder, torch.zeros(1, 1, 4, 4)):
            raise RuntimeError("boom")
    assert torch.equal(model.encoder.forward_features(x), plain)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.encoder.modules())


def test_weights_load_into_a_plain_timm_convnext_with_identical_features(model):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    timm_model = timm.create_model("convnext_atto", in_chans=1, num_classes=0)
    timm_model.load_state_dict(model.encoder.state_dict(), strict=True)
    exported = model.to_timm(num_classes=3).eval()
    assert exported.num_classes == 3 and "masked-convnext" in exported.init_source
    with torch.no_grad():
        want = model.stage_features(x)[-1]
        torch.testing.assert_close(timm_model.eval().forward_features(x), want, rtol=0, atol=0)
        torch.testing.assert_close(exported.forward_features(x), want, rtol=0, atol=0)


def test_loss_scores_hidden_cells_with_normalised_pixels(model):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    out = model(x, generator=torch.Generator().manual_seed(6))
    assert out.pred.shape == (2, 16, 256) and out.mask.shape == (2, 16)
    target = patchify(x, 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_cell = (out.pred - target).pow(2).mean(-1)
    want = (per_cell * out.mask).sum() / out.mask.sum()
    torch.testing.assert_close(out.loss, want)


def test_masks_come_from_the_batch_seeds_per_sample():
    torch.manual_seed(1)
    m = masked_convnext_atto(img_size=64, masking="entropy").eval()
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(7))
    seeds = torch.tensor([11, 12, 13, 14])
    a = m(Batch([x], seeds)).mask
    b = m(Batch([x[1:3]], seeds[1:3])).mask
    assert torch.equal(a[1:3], b) and not torch.equal(a[0], a[1])


def test_entropy_mode_hides_busy_cells_more_often():
    torch.manual_seed(2)
    m = masked_convnext_atto(img_size=64, masking="entropy", tau=0.5)
    x = torch.full((200, 1, 64, 64), 0.5)
    x[..., :32] = torch.rand(200, 1, 64, 32, generator=torch.Generator().manual_seed(8))
    mask = m.make_mask(x, generator=torch.Generator().manual_seed(9)).mask
    busy = torch.tensor([c % 4 < 2 for c in range(16)])
    assert mask[:, busy].mean() > 0.8 > 0.4 > mask[:, ~busy].mean()


def test_32px_cells_use_the_last_stage_as_fcmae():
    torch.manual_seed(3)
    m = MaskedConvNeXt("convnext_atto", img_size=128, mask_patch=32).eval()
    assert m.decoder_stages == [3] and m.grid == (4, 4)
    x = torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(10))
    mask = _mask(m, 2, 11)
    a = m.stage_features(x, mask)
    b = m.stage_features(_refill_hidden(x, mask, 32, 12), mask)
    assert all(torch.equal(fa, fb) for fa, fb in zip(a, b))
    assert m(x).pred.shape == (2, 16, 32 * 32)


def test_one_training_step_lowers_nothing_to_nan_and_reaches_every_trained_part():
    torch.manual_seed(4)
    m = masked_convnext_atto(img_size=32)
    out = m(torch.rand(4, 1, 32, 32))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for name in ("encoder.stem.0.weight", "proj.0.weight", "mask_token", "decoder.conv_dw.weight", "pred.weight"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(img_size=48), "multiple of convnext_atto's total stride 32"),
        (dict(mask_patch=12), "mask_patch must be one of the stage strides"),
        (dict(masking="block"), "masking must be one of"),
        (dict(direction="up"), "direction must be"),
        (dict(tau=0), "tau must be > 0"),
    ],
)
def test_bad_configurations_say_what_to_change(kwargs, match):
    with pytest.raises((ValueError, MaskingError), match=match):
        MaskedConvNeXt("convnext_atto", **({"img_size": 64} | kwargs))


def test_wrong_input_size_is_refused(model):
    with pytest.raises(MaskingError, match="built for 64x64 images"):
        model(torch.rand(1, 1, 96, 96))


def test_config_names_every_hyper_parameter_and_the_init(model):
    cfg = model.config
    assert cfg["encoder"] == "convnext_atto" and cfg["mask_ratio"] == 0.6 and cfg["encoder_weights"] == "random"
    assert {"tau", "direction", "entropy_bins", "masking", "decoder_dim", "norm_pix_loss"} <= set(cfg)


@pytest.mark.parametrize("masking", ["random", "entropy"])
def test_every_trainable_parameter_gets_a_gradient(masking):
    """DDP (find_unused_parameters=False) stops at the second step on a trainable parameter outside the loss."""
    torch.manual_seed(0)
    m = masked_convnext_atto(img_size=64, masking=masking)
    m(Batch([torch.rand(2, 1, 64, 64)], torch.arange(2))).loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert not m.encoder.head.norm.weight.requires_grad  # the frozen classifier-head norm ...
    assert m.to_timm(num_classes=3).head.norm.weight.requires_grad  # ... trains again when fine-tuned
