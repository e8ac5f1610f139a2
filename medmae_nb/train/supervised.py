"""Supervised loops: fine-tuning a (pre-trained) classifier, training one from scratch, and linear probing.

They share MAE's recipe: AdamW from timm's factory (layer-wise lr decay for fine-tuning), a per-step warm-up and
half-cycle cosine, one tqdm bar per run and a :class:`~medmae_nb.train.history.History`. Each epoch re-seeds its
shuffling order and torch's global generator (augmentation, dropout) from ``(seed, epoch)``, so runs repeat exactly
on the CPU. With a validation set the weights of the epoch with the best balanced accuracy are kept.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from tqdm.auto import tqdm

from ..inference import check_model_input, feature_fn
from ..models.base import sample_seed
from ..profiles import get_device
from .history import History
from .optim import build_optimizer, cosine_schedule, set_lr
from .pretrain import _resolve_precision, _seed_globals, _threads, isolated_rng

__all__ = ["PRECISE_BN_IMAGES", "LinearProbe", "finetune", "fit_supervised", "linear_probe"]

PRECISE_BN_IMAGES = 1024  # training images used to re-estimate BatchNorm statistics before evaluation


def _loader(dataset, batch_size: int, shuffle_seed: int | None,
            pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A single-process loader; shuffles with its own generator; drops a last batch of one (BatchNorm needs two);
    ``pin_memory`` (for a CUDA device) lets the copy to the GPU overlap the previous step."""
    gen = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    drop_last = shuffle_seed is not None and len(dataset) > batch_size and len(dataset) % batch_size == 1
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=gen is not None, generator=gen,
                                       num_workers=0, drop_last=drop_last, pin_memory=pin_memory)


def _steps_per_epoch(n: int, batch_size: int) -> int:
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    return n // batch_size if n > batch_size and n % batch_size == 1 else math.ceil(n / batch_size)


def _augment(imgs: torch.Tensor, augment: Callable | None) -> torch.Tensor:
    # Per image, so random transforms (crops, flips) draw fresh parameters for every sample.
    return imgs if augment is None else torch.stack([augment(x) for x in imgs])


def _labels(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    return np.asarray(labels) if labels is not None else np.array([int(dataset[i][1]) for i in range(len(dataset))])


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition)."""
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes])) if len(classes) else float("nan")


@torch.no_grad()
def _evaluate(forward: Callable, batches: Iterator, criterion: nn.Module, device: torch.device,
              amp_dtype: torch.dtype | None = None) -> dict:
    loss_sum, preds, ys = 0.0, [], []
    for x, y in batches:
        x, y = x.to(device), torch.as_tensor(y).to(device)
        with _autocast(device, amp_dtype):
            logits = forward(x).float()
        loss_sum += criterion(logits, y).item() * len(y)
        preds.append(logits.argmax(1).cpu().numpy())
        ys.append(y.cpu().numpy())
    y_pred, y_true = np.concatenate(preds), np.concatenate(ys)
    return {"val_loss": loss_sum / len(y_true), "val_acc": float((y_pred == y_true).mean()),
            "val_bal_acc": _balanced_accuracy(y_true, y_pred)}


def _class_weights(dataset, num_classes: int | None) -> torch.Tensor:
    counts = np.bincount(_labels(dataset), minlength=num_classes or 0).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision at ``amp_dtype`` (bf16 or fp16), or a no-op context for float32."""
    return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer, forward: Callable, train_batches: Callable,
         val_batches: Callable | None, *, epochs: int, steps_per_epoch: int, lr: float, min_lr: float,
         warmup_epochs: float, criterion: nn.Module, seed: int, device: torch.device, progress: bool, desc: str,
         callback: Callable | None, recalibrate: Callable[[], None] | None = None,
         amp_dtype: torch.dtype | None = None) -> History:
    """The shared supervised loop: per-step schedule, val metrics per epoch, best-by-val-balanced-accuracy weights.

    ``amp_dtype`` runs the forward pass under autocast; fp16 scales the loss (``GradScaler``), which skips a step
    whose gradients overflowed. With None (float32) the scaler is disabled and passes every call straight through,
    so a float32 run is exactly the plain loop."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    total = epochs * steps_per_epoch
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    history, step, best, best_state = History(), 0, -math.inf, None
    lr_now = lr
    with isolated_rng(), tqdm(total=total, desc=desc, disable=not progress) as bar:
        for epoch in range(epochs):
            _seed_globals(sample_seed(seed, epoch, 1))
            model.train()
            loss_sum, correct, n_seen = 0.0, 0, 0
            for x, y in train_batches(sample_seed(seed, epoch, 0)):
                lr_now = cosine_schedule(step, total, warmup, lr, min_lr)
                set_lr(optimizer, lr_now)
                x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
                with _autocast(device, amp_dtype):
                    logits = forward(x).float()
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss is {value} at step {step}; lower the learning rate")
                loss_sum += value * len(y)
                correct += int((logits.argmax(1) == y).sum())
                n_seen, step = n_seen + len(y), step + 1
                history.steps.append({"step": step, "lr": lr_now, "loss": value})
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}", refresh=False)
            record = {"epoch": epoch + 1, "step": step, "lr": lr_now, "loss": loss_sum / n_seen,
                      "acc": correct / n_seen}
            if recalibrate is not None and (val_batches is not None or epoch + 1 == epochs):
                recalibrate()
            if val_batches is not None:
                model.eval()
                record.update(_evaluate(forward, val_batches(), criterion, device, amp_dtype))
                if record["val_bal_acc"] > best:  # strict: ties keep the earlier epoch
                    best, best_state = record["val_bal_acc"], copy.deepcopy(model.state_dict())
                    history.best_epoch = epoch + 1
                bar.set_postfix(epoch=epoch + 1, loss=f"{record['loss']:.4f}", val_bal_acc=f"{best:.3f}")
            history.append(**record)
            if callback is not None:
                callback(epoch + 1, history)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def finetune(model: nn.Module, train_ds, val_ds=None, *, epochs: int, batch_size: int = 32, lr: float | None = None,
             blr: float = 5e-4, min_lr: float = 1e-6, layer_decay: float | None = 0.75, weight_decay: float = 0.05,
             warmup_epochs: float = 1, label_smoothing: float = 0.0, seed: int = 0,
             device: torch.device | str | None = None, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
             progress: bool = True, class_weight: bool = False, num_threads: int | None = None,
             callback: Callable[[int, History], None] | None = None,
             precision: str = "auto") -> tuple[nn.Module, History]:
    """Trains every weight of a classifier (a pre-trained ViT from ``to_timm`` or any module returning logits).

    With a val set, each epoch records ``val_loss``, ``val_acc`` and ``val_bal_acc`` and the weights of the epoch with
    the best balanced accuracy are kept (``history.best_epoch``); without one, the last weights are returned.
    Models with BatchNorm get their running statistics re-estimated (``torch.optim.swa_utils.update_bn``) on up to
    ``PRECISE_BN_IMAGES`` un-augmented training images before each evaluation and at the end ("precise BN"):
    few-label runs take too few steps for the running averages to forget their initial values, and eval-mode
    predictions would otherwise collapse to one class.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, K)`` logits.
        train_ds: ``(image, label)`` pairs.
        val_ds: optional ``(image, label)`` pairs for model selection.
        epochs: passes over ``train_ds``.
        batch_size: images per step.
        lr: peak learning rate; default ``blr × batch_size / 256``.
        blr: base learning rate for the default ``lr`` (MAE fine-tuning: 5e-4).
        min_lr: learning rate at the end of the cosine.
        layer_decay: layer-wise lr decay for timm models (anything with ``group_matcher``); None or 1 turns it off.
            Ignored for other modules.
        weight_decay: AdamW weight decay (none on biases, norms and tokens).
        warmup_epochs: linear warm-up length.
        label_smoothing: cross-entropy label smoothing.
        seed: seeds every random stream.
        device: default ``profiles.get_device()``.
        augment: applied to each training image tensor ``(C, H, W)``.
        progress: show a tqdm bar.
        class_weight: weight the loss by inverse class frequency (for imbalanced label sets).
        num_threads: torch CPU threads during the run.
        callback: called as ``callback(epoch, history)`` after each epoch.
        precision: ``"auto"`` (bf16 autocast on GPUs with native bf16, fp16 with loss scaling on older ones such as
            a T4; float32 on the CPU and MPS, so CPU runs are exact and repeatable), ``"fp32"``, ``"bf16"`` (works on
            the CPU too) or ``"fp16"`` (CUDA only).

    Returns:
        ``(model, history)``, the model in eval mode on ``device``.

    Raises:
        ValueError: the model's input channels or image size do not match the data (checked before training), or
            an unknown ``precision`` (or ``"fp16"`` off CUDA).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (fine-tuning recipe); Wu & Johnson,
        "Rethinking 'Batch' in BatchNorm", 2021 (precise BN).

    Example:
        >>> vit = mae.to_timm(num_classes=3, global_pool="token")  # doctest: +SKIP
        >>> vit, history = finetune(vit, train_ds, val_ds, epochs=15)  # doctest: +SKIP
    """
    device = torch.device(device) if device is not None else get_device()
    amp_dtype = _resolve_precision(precision, device)
    pin = device.type == "cuda"
    lr = blr * batch_size / 256 if lr is None else lr
    model.to(device)
    check_model_input(model, torch.as_tensor(train_ds[0][0])[None].to(device))
    optimizer = build_optimizer(model, lr, weight_decay, layer_decay)
    num_classes = getattr(train_ds, "num_classes", None)
    weight = _class_weights(train_ds, num_classes).to(device) if class_weight else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def train_batches(s: int):
        for x, y in _loader(train_ds, batch_size, s, pin):
            yield _augment(x, augment), y

    def val_batches():
        return iter(_loader(val_ds, max(batch_size, 256), None, pin))

    def recalibrate():  # on un-augmented training images, at most PRECISE_BN_IMAGES of them
        n = min(len(train_ds), PRECISE_BN_IMAGES)
        subset = torch.utils.data.Subset(train_ds, range(n)) if n < len(train_ds) else train_ds
        update_bn(_loader(subset, max(batch_size, 2), None), model, device)
        model.eval()

    with _threads(num_threads):
        history = _fit(model, optimizer, model, train_batches, val_batches if val_ds is not None else None,
                       epochs=epochs, steps_per_epoch=_steps_per_epoch(len(train_ds), batch_size), lr=lr,
                       min_lr=min_lr, warmup_epochs=warmup_epochs, criterion=criterion, seed=seed, device=device,
                       progress=progress, desc="finetune", callback=callback,
                       recalibrate=recalibrate if _has_bn(model) else None, amp_dtype=amp_dtype)
    return model.eval(), history


def fit_supervised(model: nn.Module, train_ds, val_ds=None, *, epochs: int, lr: float = 1e-3,
                   **kwargs: Any) -> tuple[nn.Module, History]:
    """Trains a classifier from scratch: :func:`finetune` without layer-wise decay and with ``lr=1e-3``.

    Example:
        >>> cnn, history = fit_supervised(small_cnn(1, 3), train_ds, val_ds, epochs=15)  # doctest: +SKIP
    """
    kwargs.setdefault("layer_decay", None)
    kwargs.setdefault("min_lr", 0.0)
    return finetune(model, train_ds, val_ds, epochs=epochs, lr=lr, **kwargs)


class LinearProbe(nn.Module):
    """A frozen encoder followed by ``BatchNorm1d(affine=False)`` and a linear classifier; maps images to logits.

    The encoder is held by reference, always runs in eval mode without gradients, and is never updated.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (``main_linprobe.py`` head).
    """

    def __init__(self, encoder: nn.Module | Callable, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.features = feature_fn(encoder)
        self.head = nn.Sequential(nn.BatchNorm1d(num_features, affine=False, eps=1e-6),
                                  nn.Linear(num_features, num_classes))
        self.head[0].momentum = None  # features are fixed, so the plain average over batches is the exact statistic
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    def train(self, mode: bool = True) -> LinearProbe:
        self.training = mode
        self.head.train(mode)
        if isinstance(self.encoder, nn.Module):
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.features(x)
        return self.head(feats)


@torch.no_grad()
def _features(encoder: nn.Module | Callable, dataset, device: torch.device) -> torch.Tensor:
    from ..inference import extract_features

    return torch.from_numpy(extract_features(encoder, dataset, device=device)).to(device)


def linear_probe(encoder: nn.Module | Callable, train_ds, val_ds=None, *, epochs: int, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 0.0, warmup_epochs: float = 0, seed: int = 0,
                 device: torch.device | str | None = None, progress: bool = True,
                 num_threads: int | None = None) -> tuple[LinearProbe, History]:
    """Trains a linear classifier on frozen features, computed once (no augmentation).

    Features come from ``encoder.forward_head(encoder.forward_features(x), pre_logits=True)`` for timm models (so the
    model's own pooling, CLS token or average, is used), else from pooled ``forward_features`` or ``encoder(x)``.
    The head is trained with AdamW on the cached features; with a val set the best-by-balanced-accuracy head is kept.

    Returns:
        ``(probe, history)``: a :class:`LinearProbe` mapping images to logits, in eval mode on ``device``.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (linear-probe protocol).

    Example:
        >>> probe, history = linear_probe(mae.to_timm(num_classes=0), train_ds, val_ds, epochs=50)  # doctest: +SKIP
    """
    device = torch.device(device) if device is not None else get_device()
    if isinstance(encoder, nn.Module):
        encoder.to(device)
    with _threads(num_threads):
        train_x = _features(encoder, train_ds, device)
        train_y = torch.as_tensor(_labels(train_ds), device=device)
        num_classes = getattr(train_ds, "num_classes", None) or int(train_y.max()) + 1
        probe = LinearProbe(encoder, train_x.shape[1], num_classes).to(device)
        val = None
        if val_ds is not None:
            val = (_features(encoder, val_ds, device), torch.as_tensor(_labels(val_ds), device=device))
        n = len(train_x)

        def train_batches(s: int):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(s)).to(device)
            drop = n > batch_size and n % batch_size == 1
            for i in range(0, n - (1 if drop else 0), batch_size):
                idx = order[i:i + batch_size]
                yield train_x[idx], train_y[idx]

        optimizer = build_optimizer(probe.head, lr, weight_decay, betas=(0.9, 0.999))
        # Features are fixed, so only the head trains and only its weights are snapshotted.
        history = _fit(probe.head, optimizer, probe.head, train_batches,
                       (lambda: iter([val])) if val is not None else None, epochs=epochs,
                       steps_per_epoch=_steps_per_epoch(n, batch_size), lr=lr, min_lr=0.0,
                       warmup_epochs=warmup_epochs, criterion=nn.CrossEntropyLoss(), seed=seed, device=device,
                       progress=progress, desc="linear probe", callback=None)
    return probe.eval(), history
