"""Tests for medmae_nb.train.supervised: fine-tuning keeps the best epoch, runs repeat, probes stay frozen."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from toys import toy_dataset

from medmae_nb.models.cnn import small_cnn
from medmae_nb.train import finetune, fit_supervised, linear_probe

CPU = torch.device("cpu")


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


def test_divergence_stops_the_run_with_a_clear_error():
    model = small_cnn(1, 3, width=4)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit_supervised(model, toy_dataset(n=16, size=16), epochs=1, batch_size=8, lr=float("inf"), progress=False)


def test_wrong_input_channels_fail_before_training_with_a_clear_message():
    model = small_cnn(3, 2, width=4)
    with pytest.raises(ValueError, match="3"):
        finetune(model, toy_dataset(n=16), epochs=1, batch_size=8, device=CPU, progress=False)


def test_precise_bn_sets_running_statistics_to_the_training_images_statistics():
    # Two steps move the running mean only ~19% of the way from 0 to the data mean (momentum 0.1); precise BN
    # recomputes it as the plain mean over the (un-augmented) training images with the final weights.
    torch.manual_seed(0)
    ds = toy_dataset(n=16)
    model, _ = fit_supervised(small_cnn(1, 2, width=4), ds, epochs=1, batch_size=8, lr=1e-3, device=CPU,
                              progress=False, augment=None)
    conv, bn = model.stem[0], model.stem[1]
    with torch.no_grad():
        pre_bn = conv(torch.from_numpy(ds.images))
    assert torch.allclose(bn.running_mean, pre_bn.mean((0, 2, 3)), atol=1e-5)
    assert not model.training


# ----------------------------------------------------------------------------------- mixed precision (issue 26)
def _run_small_cnn(precision: str, hook=None):
    torch.manual_seed(0)
    model = small_cnn(1, 2, width=8)
    if hook is not None:
        model.head.register_forward_hook(hook)
    return finetune(model, toy_dataset(48, seed=0), toy_dataset(24, seed=1), epochs=2, batch_size=16, lr=3e-3,
                    layer_decay=None, device=CPU, progress=False, precision=precision)


def test_auto_precision_on_the_cpu_is_exactly_float32():
    """"auto" is float32 off CUDA and the disabled GradScaler passes every call through: bit-identical runs."""
    (a, ha), (b, hb) = _run_small_cnn("auto"), _run_small_cnn("fp32")
    assert ha.column("loss") == hb.column("loss")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_bf16_autocast_finetunes_on_the_cpu_in_bf16():
    dtypes = []
    model, history = _run_small_cnn("bf16", hook=lambda m, i, o: dtypes.append(o.dtype))
    steps = len(history.steps)  # every training step and evaluation ran the head in bf16 (precise-BN passes in fp32)
    assert dtypes.count(torch.bfloat16) >= steps + 2 and steps == 6
    assert all(np.isfinite(history.column("loss"))) and history.column("loss")[-1] < history.column("loss")[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32


@pytest.mark.parametrize("precision, message", [("fp16", "needs a CUDA device"), ("half", "must be one of")])
def test_bad_precision_is_refused_before_training(precision: str, message: str):
    with pytest.raises(ValueError, match=message):
        _run_small_cnn(precision)
