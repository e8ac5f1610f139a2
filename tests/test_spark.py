"""SparK: hidden sites stay zero, no leak from hidden pixels, sparse BatchNorm = BatchNorm1d on visible vectors."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from medmae_nb.masking import MaskingError, mask_to_pixels, patchify
from medmae_nb.models.base import Batch
from medmae_nb.models.masked_convnext import visibility_at
from medmae_nb.models.spark import (
    SparK,
    encoder_stages,
    spark_convnext_atto,
    spark_resnet18,
    sparse_batch_norm,
    sparse_masking,
)

FACTORIES = {"resnet18": spark_resnet18, "convnext_atto": spark_convnext_atto}


@pytest.fixture(scope="module", params=list(FACTORIES))
def model(request) -> SparK:
    torch.manual_seed(0)
    return FACTORIES[request.param](img_size=64).eval()


def _mask(model: SparK, n: int, seed: int) -> torch.Tensor:
    return model.make_mask(torch.zeros(n, 1, model.img_size, model.img_size),
                           generator=torch.Generator().manual_seed(seed)).mask


def _refill_hidden(x: torch.Tensor, mask: torch.Tensor, cell: int, seed: int) -> torch.Tensor:
    pix = mask_to_pixels(mask, cell, x.shape[-1])[:, None]
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 5 - 2
    return x * (1 - pix) + noise * pix


def _run(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    stem, stages = encoder_stages(encoder)
    for m in [*stem, *stages]:
        x = m(x)
    return x


def test_hidden_sites_are_exactly_zero_after_every_converted_layer(model):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    mask = _mask(model, 2, 3)
    visible = model.visible_map(mask)
    seen: list[tuple[str, bool, torch.Tensor]] = []
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.LayerNorm, nn.Linear)
    hooks = []
    with sparse_masking(model.encoder, visible):
        # registered after the masking hooks, so they see what the next layer sees
        for name, m in model.encoder.named_modules():
            if isinstance(m, kinds) and not name.startswith(("head", "fc")):  # the head is not run
                last = isinstance(m, (nn.LayerNorm, nn.Linear)) and not isinstance(m, LayerNorm2d)
                hooks.append(m.register_forward_hook(lambda m, i, o, n=name, c=last: seen.append((n, c, o))))
        try:
            _run(model.encoder, x * visibility_at(visible, (64, 64)))
        finally:
            for h in hooks:
                h.remove()
    assert len(seen) == len(hooks) >= 20  # every converted layer ran
    for name, last, out in seen:
        out = out.permute(0, 3, 1, 2) if last else out
        hidden = (visibility_at(visible, out.shape[-2:]) == 0).expand_as(out)
        assert out.masked_select(hidden).abs().max() == 0, name
        assert out.masked_select(~hidden).abs().sum() > 0, name


@pytest.mark.parametrize(("name", "mask_stride"), [("resnet18", 16), ("resnet18", 32), ("convnext_atto", 16)])
def test_no_information_leaks_from_hidden_pixels_even_in_training_mode(name, mask_stride):
    torch.manual_seed(1)
    m = SparK(name, img_size=64, mask_stride=mask_stride).train()  # BatchNorm on batch statistics
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    mask = _mask(m, 3, 4)
    a = m.stage_features(x, mask)
    b = m.stage_features(_refill_hidden(x, mask, mask_stride, 5), mask)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)  # bit-identical: hidden content never reaches a visible site or a statistic
    # ... and the predicted image, hidden cells included, depends on visible pixels only
    assert torch.equal(m.decode(a, mask), m.decode(b, mask))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_sparse_batch_norm_equals_batchnorm1d_on_the_visible_vectors(momentum):
    g = torch.Generator().manual_seed(6)
    bn = nn.BatchNorm2d(5, momentum=momentum).train()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(5, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(5, generator=g))
        bn.running_mean.copy_(torch.randn(5, generator=g))
    ref = nn.BatchNorm1d(5, momentum=momentum).train()
    ref.load_state_dict(bn.state_dict())
    visible = (torch.rand(3, 1, 4, 4, generator=g) > 0.5).float()
    x = torch.randn(3, 5, 4, 4, generator=g) * 3 + 1
    keep = visible[:, 0].bool()
    for _ in range(2):  # the second step tests the cumulative average of momentum=None
        y = sparse_batch_norm(bn, x, visible)
        want = ref(x.permute(0, 2, 3, 1)[keep])
        torch.testing.assert_close(y.permute(0, 2, 3, 1)[keep], want, rtol=0, atol=0)
        assert y.permute(0, 2, 3, 1)[~keep].abs().max() == 0
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, key), getattr(ref, key), rtol=0, atol=0)
    bn.eval(), ref.eval()
    torch.testing.assert_close(sparse_batch_norm(bn, x, visible).permute(0, 2, 3, 1)[keep],
                               ref(x.permute(0, 2, 3, 1)[keep]), rtol=0, atol=0)


def test_encoder_batchnorms_count_only_visible_sites():
    torch.manual_seed(7)
    m = spark_resnet18(img_size=64).train()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(8))
    mask = _mask(m, 2, 9)
    stem_in = x * visibility_at(m.visible_map(mask), (64, 64))
    ref = copy.deepcopy(m.encoder.bn1)
    with torch.no_grad():
        conv = m.encoder.conv1(stem_in) * visibility_at(m.visible_map(mask), (32, 32))
        keep = visibility_at(m.visible_map(mask), (32, 32))[:, 0].bool()
        bn1d = nn.BatchNorm1d(64).train()
        bn1d.load_state_dict(ref.state_dict())
        bn1d(conv.permute(0, 2, 3, 1)[keep])
        m.stage_features(x, mask)
    torch.testing.assert_close(m.encoder.bn1.running_mean, bn1d.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(m.encoder.bn1.running_var, bn1d.running_var, rtol=0, atol=0)


def test_prediction_has_the_input_size_and_the_loss_scores_hidden_cells_only(model):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(10))
    out = model(x, generator=torch.Generator().manual_seed(11))
    assert out.image.shape == x.shape and out.pred.shape == (2, 16, 256) and out.mask.shape == (2, 16)
    target = patchify(x, 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_cell = (out.pred - target).pow(2).mean(-1)
    torch.testing.assert_close(out.loss, (per_cell * out.mask).sum() / out.mask.sum())
    # only hidden cells contribute: the loss's gradient is zero on every visible pixel, not on the hidden ones
    (grad,) = torch.autograd.grad(out.loss, out.image)
    hidden = mask_to_pixels(out.mask, 16, 64)[:, None].bool()
    assert grad[~hidden].abs().max() == 0 and grad[hidden].abs().sum() > 0


def test_32px_cells_on_64px_images_give_a_2x2_grid():
    torch.manual_seed(12)
    m = spark_resnet18(img_size=64, mask_stride=32)
    out = m(torch.rand(2, 1, 64, 64))
    assert m.grid == (2, 2) and out.pred.shape == (2, 4, 32 * 32) and out.mask.sum(1).tolist() == [3.0, 3.0]


def test_weights_load_into_a_plain_timm_model_with_identical_features(model):
    name = model.config["encoder"]
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(13))
    timm_model = timm.create_model(name, in_chans=1, num_classes=0)
    timm_model.load_state_dict(model.encoder.state_dict(), strict=True)
    exported = model.to_timm(num_classes=3).eval()
    assert exported.num_classes == 3 and exported.init_source == f"spark({name})"
    with torch.no_grad():
        want = model.stage_features(x)[-1]
        torch.testing.assert_close(timm_model.eval().forward_features(x), want, rtol=0, atol=0)
        torch.testing.assert_close(exported.forward_features(x), want, rtol=0, atol=0)


def test_masks_come_from_the_batch_seeds_per_sample(model):
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(14))
    seeds = torch.tensor([11, 12, 13, 14])
    a = model(Batch([x], seeds)).mask
    b = model(Batch([x[1:3]], seeds[1:3])).mask
    assert torch.equal(a[1:3], b) and not torch.equal(a[0], a[1])


def test_hooks_exist_only_inside_the_block_and_go_after_an_error(model):
    enc = model.encoder
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        plain = enc.forward_features(x)
        with pytest.raises(RuntimeError, match="boom"):
            with sparse_masking(enc, torch.zeros(1, 1, 4, 4)):
                assert any(m._forward_hooks for m in enc.modules())
                raise RuntimeError("boom")
        assert torch.equal(enc.forward_features(x), plain)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in vars(m) for m in enc.modules())


def test_a_layer_without_a_sparse_version_is_refused_and_nothing_is_left_behind():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4))
    with pytest.raises(MaskingError, match="GroupNorm, which has no sparse version"):
        with sparse_masking(net, torch.ones(1, 1, 2, 2)):
            pass
    assert all(not m._forward_hooks and "forward" not in vars(m) for m in net.modules())


def test_one_training_step_is_finite_and_reaches_every_trained_part():
    torch.manual_seed(15)
    m = spark_convnext_atto(img_size=64, mask_stride=32)  # 3 of 4 cells hidden: every mask token is used
    out = m(torch.rand(4, 1, 64, 64))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    params = dict(m.named_parameters())
    for name in ("encoder.stem.0.weight", "encoder.stages.3.blocks.1.mlp.fc2.weight", "proj.0.1.weight",
                 "proj.3.1.weight", "mask_tokens.0", "mask_tokens.3", "blocks.0.0.weight", "blocks.4.4.weight",
                 "head.weight"):
        assert params[name].grad.abs().sum() > 0, name
    assert m.no_weight_decay() == {f"mask_tokens.{i}" for i in range(4)}


def test_without_densify_there_are_no_mask_tokens():
    torch.manual_seed(16)
    m = spark_resnet18(img_size=32, densify=False)
    assert len(m.mask_tokens) == 0 and m.config["densify"] is False
    assert torch.isfinite(m(torch.rand(2, 1, 32, 32)).loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(img_size=48), "multiple of resnet18's total stride 32"),
        (dict(mask_stride=8), "mask_stride must be one of"),
        (dict(mask_ratio=1.0), "mask_ratio must lie strictly between 0 and 1"),
        (dict(encoder="efficientnet_b0"), "supports timm ResNet and ConvNeXt encoders, not EfficientNet"),
    ],
)
def test_bad_configurations_say_what_to_change(kwargs, match):
    with pytest.raises(MaskingError, match=match):
        SparK(**({"encoder": "resnet18", "img_size": 64} | kwargs))


def test_wrong_input_size_is_refused(model):
    with pytest.raises(MaskingError, match="built for 64x64 images"):
        model(torch.rand(1, 1, 96, 96))


def test_config_names_every_hyper_parameter_and_the_init(model):
    cfg = model.config
    assert cfg["mask_ratio"] == 0.6 and cfg["mask_stride"] == 16 and cfg["encoder_weights"] == "random"
    assert {"decoder_width", "norm_pix_loss", "densify", "drop_path_rate", "in_chans", "img_size"} <= set(cfg)
