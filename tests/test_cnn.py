"""Tests for medmae_nb.models.cnn: output shapes, features and the timm ResNet factory."""

from __future__ import annotations

import pytest
import torch

from medmae_nb.models.cnn import SmallCNN, resnet18_small, small_cnn


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("chans", [1, 3])
def test_small_cnn_shapes(size, chans):
    model = small_cnn(in_chans=chans, num_classes=3, width=8).eval()
    x = torch.rand(2, chans, size, size)
    assert model(x).shape == (2, 3)
    assert model.forward_features(x).shape == (2, 64, size // 16, size // 16)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 64)


def test_small_cnn_headless_and_config():
    model = SmallCNN(in_chans=1, num_classes=0, width=4)
    assert model(torch.rand(3, 1, 16, 16)).shape == (3, 32)
    assert model.config["width"] == 4 and model.num_features == 32


def test_small_cnn_trains_in_train_mode():
    model = small_cnn(1, 2, width=4)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 32, 32)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("chans", [1, 3])
def test_resnet18_small(chans):
    model = resnet18_small(in_chans=chans, num_classes=4).eval()
    assert model(torch.rand(2, chans, 32, 32)).shape == (2, 4)
    assert model.config == {"arch": "resnet18", "in_chans": chans, "num_classes": 4}
