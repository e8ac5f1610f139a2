"""Tests for medmae_nb.inference: predictions and features in order and in eval mode, modes restored, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from medmae_nb.data.base import ImageDataset
from medmae_nb.inference import check_model_input, eval_mode, extract_features, feature_fn, predict_proba

VIT_KW = dict(patch_size=8, in_chans=1, num_classes=3, embed_dim=32, depth=1, num_heads=2)


def _vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{"img_size": 32, **VIT_KW, **kw})


def _dataset(n: int = 10, c: int = 1, size: int = 4, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.rand(n, c, size, size, generator=g), torch.arange(n) % 3)


class _Wrapped(nn.Module):
    """An encoder held inside another module, as a linear probe holds it; the encoder stays in eval mode."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_head(self.encoder.forward_features(x), pre_logits=True))


# -------------------------------------------------------------------------------------------------------- eval_mode


def test_eval_mode_restores_every_submodule_flag():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)), nn.Dropout()).train()
    net[1][1].eval()  # a frozen part kept in eval mode inside a model in training mode
    before = [m.training for m in net.modules()]
    with eval_mode(net) as same:
        assert same is net
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before  # model.train(True) would have switched net[1][1] back on
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before  # restored on errors too
    net.eval()
    with eval_mode(net):
        pass
    assert not any(m.training for m in net.modules())


def test_eval_mode_passes_functions_through():
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x

    with eval_mode(fn) as same:
        assert same is fn


# ---------------------------------------------------------------------------------------------------- predict_proba


def test_predict_proba_in_eval_mode_keeps_order_and_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    ds = _dataset()
    y, p = predict_proba(model, ds, batch_size=4)
    assert model.training  # restored
    np.testing.assert_array_equal(y, np.arange(10) % 3)
    assert p.shape == (10, 3) and y.dtype == np.int64 and p.dtype == np.float32
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(ds.tensors[0]), 1).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)  # eval mode: dropout off, rows in dataset order
    y2, p2 = predict_proba(model, torch.utils.data.DataLoader(ds, batch_size=3), device="cpu")
    np.testing.assert_allclose(p2, p, rtol=1e-5, atol=1e-6)


def test_predict_proba_keeps_a_frozen_part_in_eval_mode():
    model = _Wrapped(_vit(num_classes=0, img_size=4, patch_size=2)).train()
    model.encoder.eval()
    predict_proba(model, _dataset(6), batch_size=4)
    assert model.training and model.head[0].training and not model.encoder.training


def test_predict_proba_reads_mappings_and_image_datasets():
    images = np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32)
    ds = ImageDataset(images, np.array([0, 1, 2, 0, 1, 2]), ("a", "b", "c"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    y, p = predict_proba(model, ds, batch_size=4)
    np.testing.assert_array_equal(y, ds.labels)

    class Dicts(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int) -> dict:
            x, label = ds[i]
            return {"image": x, "label": label}

    y2, p2 = predict_proba(model, Dicts(), batch_size=4)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_allclose(p2, p)


def test_predict_proba_errors():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(ValueError, match="empty"):
        predict_proba(model, _dataset(0))
    with pytest.raises(ValueError, match="needs labels"):
        predict_proba(model, torch.utils.data.TensorDataset(torch.rand(4, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"logits \(B, K\); got \(4, 1, 4, 4\)"):
        predict_proba(nn.Identity(), _dataset(4))
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        predict_proba(model, _dataset(4), batch_size=0)


# ------------------------------------------------------------------------------------------------------ input check


def test_wrong_channels_fail_early_with_a_fix():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    for run in (predict_proba, extract_features):
        with pytest.raises(ValueError, match=r"expects 3 input channels.*images have 1 channel;.*to_rgb\(\)") as err:
            run(model, _dataset(4, c=1, size=8))
        assert "in_chans=1" in str(err.value)
    with pytest.raises(ValueError, match=r"expects 1 input channels .*patch_embed\.proj.* have 3 channels.*in_chans=3"):
        check_model_input(_vit(), torch.zeros(2, 3, 32, 32))
    check_model_input(model, torch.zeros(3, 8, 8))  # one image (C, H, W) is fine too


def test_the_input_convolution_is_found_where_timm_records_it():
    class DecoderFirst(nn.Module):  # a pixel decoder registered before the encoder, as a method object may do
        def __init__(self) -> None:
            super().__init__()
            self.decoder = nn.Conv2d(64, 3, 1)
            self.encoder = timm.create_model("resnet10t", pretrained=False, in_chans=1, num_classes=0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)

    model = DecoderFirst()
    check_model_input(model, torch.zeros(2, 1, 32, 32))  # the decoder's 64 input channels are not the model's
    with pytest.raises(ValueError, match=r"expects 1 input channels \(its layer `encoder\.conv1\.0`"):
        check_model_input(model, torch.zeros(2, 3, 32, 32))


def test_wrong_image_size_of_a_fixed_size_vit():
    vit = _vit(img_size=32)
    with pytest.raises(ValueError, match=r"takes 32x32 images .* images are 64x64;.*img_size=64") as err:
        predict_proba(vit, _dataset(2, size=64))
    assert "dynamic_img_size=True" in str(err.value)
    with pytest.raises(ValueError, match=r"img_size=\(48, 64\)"):
        check_model_input(vit, torch.zeros(1, 1, 48, 64))
    check_model_input(vit, torch.zeros(2, 1, 32, 32))
    # a wrapped encoder is found as well
    with pytest.raises(ValueError, match=r"encoder\.patch_embed\.img_size"):
        check_model_input(_Wrapped(_vit(num_classes=0)), torch.zeros(2, 1, 16, 16))


def test_dynamic_vit_takes_any_multiple_of_its_patch():
    vit = _vit(img_size=32, dynamic_img_size=True)
    check_model_input(vit, torch.zeros(1, 1, 48, 64))
    y, p = predict_proba(vit, _dataset(2, size=48))
    assert p.shape == (2, 3)
    with pytest.raises(ValueError, match=r"36x36, not a multiple of the model's patch size 8x8"):
        check_model_input(vit, torch.zeros(1, 1, 36, 36))
    check_model_input(_vit(img_size=32, dynamic_img_size=True, dynamic_img_pad=True), torch.zeros(1, 1, 36, 36))


def test_models_without_convolutions_are_not_checked():
    check_model_input(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.zeros(2, 5, 7, 7))
    check_model_input(lambda x: x, torch.zeros(2, 5, 7, 7))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or one image"):
        check_model_input(nn.Conv2d(1, 2, 3), torch.zeros(16))


# --------------------------------------------------------------------------------------------------------- features


def test_feature_fn_of_a_timm_model_is_its_pre_logits():
    vit = _vit(global_pool="token").eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        expected = vit.forward_head(vit.forward_features(x), pre_logits=True)
        torch.testing.assert_close(feature_fn(vit)(x), expected)
        assert feature_fn(vit)(x).shape == (3, 32)


def test_feature_fn_pools_maps_and_tokens():
    x = torch.rand(2, 1, 6, 6)
    conv = nn.Conv2d(1, 5, 3)
    torch.testing.assert_close(feature_fn(conv)(x), conv(x).mean((2, 3)))

    class Tokens(nn.Module):
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2).transpose(1, 2).repeat(1, 1, 4)  # (B, 36 tokens, 4)

    torch.testing.assert_close(feature_fn(Tokens())(x), x.flatten(2).transpose(1, 2).repeat(1, 1, 4).mean(1))
    assert feature_fn(lambda t: t.flatten(1))(x).shape == (2, 36)
    with pytest.raises(ValueError, match=r"features of shape \(2,\)"):
        feature_fn(lambda t: t.sum((1, 2, 3)))(x)


def test_extract_features_order_dtype_and_mode():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout2d(0.5)).train()
    ds = _dataset(10, size=6)
    feats = extract_features(encoder, ds, batch_size=4)
    assert feats.shape == (10, 4) and feats.dtype == np.float32
    assert encoder.training  # restored
    with torch.no_grad():
        expected = encoder.eval()(ds.tensors[0]).mean((2, 3)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)  # eval mode, dataset order
    images_only = torch.utils.data.TensorDataset(ds.tensors[0])
    np.testing.assert_allclose(extract_features(encoder, images_only, batch_size=3), feats, rtol=1e-5, atol=1e-6)
    assert extract_features(lambda x: x.flatten(1)[:, :5], ds, device="cpu").shape == (10, 5)
    with pytest.raises(ValueError, match="empty"):
        extract_features(encoder, _dataset(0, size=6))
