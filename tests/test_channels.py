"""adapt_input_channels: a gray encoder on gray images stored as RGB gives what it gave on the gray images, and back."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from torch import nn

from medmae_nb.models.backbones import create_encoder
from medmae_nb.models.channels import adapt_input_channels, find_input_conv
from medmae_nb.models.cnn import SmallCNN
from medmae_nb.models.mae import mae_vit_micro

SIZE = 32


def _model(name: str, in_chans: int) -> nn.Module:
    """Small instances of every kind of first layer the book uses: ViT patch embedding, ResNet/ConvNeXt stems and
    SmallCNN's stem, all random (the property holds for any weights)."""
    torch.manual_seed(0)
    build = {
        "vit_micro": lambda: create_encoder("vit_micro", in_chans=in_chans, img_size=SIZE),
        "resnet18_micro": lambda: create_encoder("resnet18_micro", in_chans=in_chans),
        "convnext_atto": lambda: create_encoder("convnext_atto", in_chans=in_chans),
        "small_cnn": lambda: SmallCNN(in_chans=in_chans, num_classes=3, width=8),
    }
    return build[name]()


@pytest.fixture(scope="module")
def gray_images() -> torch.Tensor:
    return torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["vit_micro", "resnet18_micro", "convnext_atto", "small_cnn"])
def test_gray_model_on_rgb_gray_images_gives_the_gray_output(
    name: str, gray_images: torch.Tensor, capsys: pytest.CaptureFixture
) -> None:
    model = _model(name, 1).eval()
    with torch.no_grad():
        before = model(gray_images)
    layer, _ = find_input_conv(model)
    assert adapt_input_channels(model, 3) is model
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"adapted {layer} of ") and "from 1 to 3 input channels" in line and "1/3" in line
    _, conv = find_input_conv(model)
    assert conv.in_channels == 3 and conv.weight.shape[1] == 3
    with torch.no_grad():
        after = model(gray_images.repeat(1, 3, 1, 1))  # R = G = B
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vit_micro", "resnet18_micro", "convnext_atto", "small_cnn"])
def test_rgb_model_adapted_to_gray_gives_its_output_on_gray_rgb_images(name: str, gray_images: torch.Tensor) -> None:
    model = _model(name, 3).eval()
    with torch.no_grad():
        before = model(gray_images.repeat(1, 3, 1, 1))
    adapt_input_channels(model, 1, verbose=False)
    assert find_input_conv(model)[1].in_channels == 1
    with torch.no_grad():
        after = model(gray_images)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_attributes_follow_the_adapted_layer() -> None:
    vit = create_encoder("vit_micro", in_chans=1, img_size=SIZE)
    adapt_input_channels(vit, 3, verbose=False)
    assert vit.in_chans == 3 and vit.pretrained_cfg["input_size"][0] == 3 and vit.default_cfg["input_size"][0] == 3
    cnn = SmallCNN(in_chans=1, width=8)
    adapt_input_channels(cnn, 3, verbose=False)
    assert cnn.config["in_chans"] == 3
    # SmallCNN keeps its weights channels-last for speed; the new weight follows
    assert cnn.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    # a timm model's pretrained_cfg is not shared with other models of the same architecture
    other = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=0)
    adapt_input_channels(timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=0), 1, False)
    assert other.pretrained_cfg["input_size"][0] == 3


def test_one_to_three_and_back_restores_the_weight() -> None:
    model = SmallCNN(in_chans=1, width=8)
    weight = model.stem[0].weight.detach().clone()
    adapt_input_channels(model, 1, verbose=False)  # a no-op
    assert torch.equal(model.stem[0].weight, weight)
    adapt_input_channels(adapt_input_channels(model, 3, verbose=False), 1, verbose=False)
    torch.testing.assert_close(model.stem[0].weight.detach(), weight)
    assert model.stem[0].weight.requires_grad


def test_exported_mae_encoder_adapts_but_the_method_is_refused(gray_images: torch.Tensor) -> None:
    mae = mae_vit_micro(img_size=SIZE, patch_size=8, in_chans=1).eval()
    with pytest.raises(ValueError, match=r"MaskedAutoencoderViT is a whole self-supervised method.*to_timm\(\), 3"):
        adapt_input_channels(mae, 3)
    vit = mae.to_timm().eval()
    with torch.no_grad():
        before = vit.forward_features(gray_images)
    adapt_input_channels(vit, 3, verbose=False)
    with torch.no_grad():
        after = vit.forward_features(gray_images.repeat(1, 3, 1, 1))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_nothing_to_adapt_and_bad_requests(capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    model = SmallCNN(in_chans=3, width=8)
    with caplog.at_level(logging.INFO, logger="medmae_nb.models.channels"):
        adapt_input_channels(model, 3)
    assert "already takes 3 input channels; nothing adapted" in capsys.readouterr().out
    assert "nothing adapted" in caplog.text
    adapt_input_channels(model, 1, verbose=False)
    assert capsys.readouterr().out == ""
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"in_chans must be a positive int"):
            adapt_input_channels(model, bad)
    with pytest.raises(ValueError, match=r"has no nn\.Conv2d"):
        adapt_input_channels(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 3)
    with pytest.raises(ValueError, match=r"grouped convolution"):
        adapt_input_channels(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2)), 3)
