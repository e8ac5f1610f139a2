"""Training loops: self-supervised pre-training, fine-tuning and linear probing.

All three loops share one recipe (MAE's): AdamW, a per-step schedule with linear warm-up and half-cycle cosine decay,
no weight decay on biases, norms and tokens, one ``tqdm`` bar per run and a :class:`History` a notebook can plot.

Reproducibility: every random stream of an epoch (the shuffling order, the masking noise and torch's global generator,
which drives dropout and augmentation) is re-seeded at the start of the epoch from ``(seed, epoch)``. An epoch's result
therefore depends only on the weights and optimizer state it starts from, which is exactly what a checkpoint holds —
so a resumed run equals an uninterrupted one bit for bit on the CPU, without saving generator states.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .cache import _canonical, cache_dir, config_key, entry, save_torch
from .profiles import get_device

__all__ = [
    "CheckpointError", "History", "cosine_schedule", "set_lr", "param_groups", "build_optimizer",
    "pretrain", "finetune", "fit_supervised", "linear_probe", "LinearProbe", "extract_features",
    "dataset_fingerprint",
]

_FORMAT = 1
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "dist_token", "reg_token")
PRECISE_BN_IMAGES = 1024  # training images used to re-estimate BatchNorm statistics before evaluation


class CheckpointError(ValueError):
    """A checkpoint or cache entry that belongs to a different config (or is not ours)."""


# ----------------------------------------------------------------------------------------------------- history
class History:
    """Per-epoch records of a run (``epoch``, ``step``, ``lr``, ``loss`` and any val metrics) plus per-step values.

    Attributes:
        records: one dict per epoch.
        steps: one dict per optimizer step (``step``, ``lr``, ``loss``), for learning-rate and loss curves.
        loaded_from_cache: True when the run was not trained but loaded from the cache.
        resumed_from: the epoch of the checkpoint this run resumed from, or None.
        best_epoch: the epoch whose weights were kept (fine-tuning / probing with a val set), or None.

    Example:
        >>> h = History()
        >>> h.append(epoch=1, loss=0.5)
        >>> h.column("loss")
        [0.5]
    """

    def __init__(self, records: Sequence[dict] = (), steps: Sequence[dict] = ()) -> None:
        self.records: list[dict] = [dict(r) for r in records]
        self.steps: list[dict] = [dict(s) for s in steps]
        self.loaded_from_cache = False
        self.resumed_from: int | None = None
        self.best_epoch: int | None = None

    def append(self, **values: Any) -> None:
        self.records.append(values)

    def column(self, name: str) -> list:
        """The values of ``name`` over epochs (None where an epoch lacks it)."""
        return [r.get(name) for r in self.records]

    def to_dict(self) -> dict[str, list]:
        """Columns as a dict of lists (``pandas.DataFrame(history.to_dict())`` gives a table)."""
        names: list[str] = []
        for r in self.records:
            names += [k for k in r if k not in names]
        return {k: self.column(k) for k in names}

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}

    def state_dict(self) -> dict:
        return {"records": self.records, "steps": self.steps, "best_epoch": self.best_epoch}

    @classmethod
    def from_state(cls, state: dict) -> History:
        out = cls(state["records"], state.get("steps", ()))
        out.best_epoch = state.get("best_epoch")
        return out

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.last.items())
        return f"History({len(self)} epochs; last: {last})"


# ------------------------------------------------------------------------------------------ schedule, optimizer
def cosine_schedule(step: float, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """The learning rate at ``step``: linear warm-up from 0, then half-cycle cosine decay to ``min_lr``.

    As in MAE's ``util/lr_sched.py``, the warm-up starts at 0 and the cosine reaches ``min_lr`` at ``total_steps``;
    steps beyond it stay at ``min_lr``.

    Example:
        >>> cosine_schedule(5, 100, 10, 1.0), cosine_schedule(100, 100, 10, 1.0, min_lr=0.1)
        (0.5, 0.1)
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Sets every group's lr to ``lr`` times its ``lr_scale`` (timm's layer-decay key; 1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def param_groups(model: nn.Module, weight_decay: float, no_decay_names: Sequence[str] = NO_DECAY_NAMES) -> list[dict]:
    """Two AdamW groups: weight decay for matrices and kernels, none for biases, norms, tokens and position embeddings.

    Parameters listed by a timm-style ``model.no_weight_decay()`` are exempt too; frozen parameters are left out.
    """
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.endswith(".bias") or name in extra or any(k in name for k in no_decay_names)
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float | None = None,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """AdamW with :func:`param_groups`; with ``layer_decay`` on a timm model (one with ``group_matcher``), timm's
    layer-wise lr decay groups instead (each carries an ``lr_scale`` that :func:`set_lr` applies).

    References:
        Clark et al., "ELECTRA", ICLR 2020 (layer-wise lr decay); He et al., "Masked Autoencoders Are Scalable Vision
        Learners", CVPR 2022 (its use for fine-tuning ViTs).
    """
    if layer_decay is not None and layer_decay != 1.0 and hasattr(model, "group_matcher"):
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay, layer_decay=layer_decay,
                                   betas=betas)
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


# ----------------------------------------------------------------------------------------------------- helpers
def _epoch_seeds(seed: int, epoch: int) -> tuple[int, int, int]:
    """Independent seeds for the shuffling, masking and global streams of one epoch."""
    a, b, c = np.random.SeedSequence([seed, epoch]).generate_state(3)
    return int(a), int(b), int(c)


def _seed_globals(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # also seeds every CUDA device


def _loader(dataset, batch_size: int, shuffle_seed: int | None) -> torch.utils.data.DataLoader:
    """A single-process loader; shuffles with its own generator; drops a last batch of one (BatchNorm needs two)."""
    gen = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    drop_last = shuffle_seed is not None and len(dataset) > batch_size and len(dataset) % batch_size == 1
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=gen is not None, generator=gen,
                                       num_workers=0, drop_last=drop_last)


def _steps_per_epoch(dataset, batch_size: int) -> int:
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    return n // batch_size if n > batch_size and n % batch_size == 1 else math.ceil(n / batch_size)


def _augment(imgs: torch.Tensor, augment: Callable | None) -> torch.Tensor:
    # Per image, so random transforms (crops, flips) draw fresh parameters for every sample.
    return imgs if augment is None else torch.stack([augment(x) for x in imgs])


@contextlib.contextmanager
def _threads(num_threads: int | None):
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _describe(obj: Any) -> Any:
    """A description of a callable that is stable across sessions (no memory addresses).

    Functions are named and fingerprinted by their bytecode, constants, defaults and closure values, so editing a
    lambda in a notebook changes the description (and hence the cache key) while re-running it does not.
    """
    if obj is None:
        return None
    if inspect.isfunction(obj):
        code = obj.__code__
        parts = [code.co_code.hex(), repr(code.co_consts), repr(obj.__defaults__),
                 repr([c.cell_contents for c in obj.__closure__ or ()])]
        digest = hashlib.sha256(re.sub(r" at 0x[0-9a-fA-F]+", "", "|".join(parts)).encode()).hexdigest()[:12]
        return f"{obj.__module__}.{obj.__qualname__}#{digest}"
    if inspect.isbuiltin(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def dataset_fingerprint(dataset) -> dict:
    """Name, size, shape and a SHA-256 of the images (a strided sample above 64 M values) of a dataset.

    Labels are left out on purpose: they do not change self-supervised pre-training.
    """
    images = getattr(dataset, "images", None)
    h = hashlib.sha256()
    if isinstance(images, np.ndarray):
        flat = images.reshape(-1)
        if flat.size > 2**26:
            flat = flat[:: flat.size // 2**26 + 1]
        h.update(np.ascontiguousarray(flat).tobytes())
        shape = list(images.shape)
    else:  # any map-style dataset: hash its first items
        items = [dataset[i][0] for i in range(min(len(dataset), 64))]
        for x in items:
            h.update(torch.as_tensor(x).numpy().tobytes())
        shape = [len(dataset), *torch.as_tensor(items[0]).shape] if items else [0]
    return {"name": getattr(dataset, "name", type(dataset).__name__), "n": len(dataset), "shape": shape,
            "sha256": h.hexdigest()[:16], "transform": _describe(getattr(dataset, "transform", None))}


def _model_config(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        return {"class": type(model).__name__, **config}
    # No declared config: describe the architecture by its parameter names and shapes.
    shapes = json.dumps([(n, list(p.shape)) for n, p in model.state_dict().items()])
    return {"class": type(model).__name__, "params_sha256": hashlib.sha256(shapes.encode()).hexdigest()[:16]}


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} (stored) vs {vb!r} (now)")
    return out


def _load_checked(path: Path, config: dict, what: str, fix: str) -> dict:
    """Loads a checkpoint and raises :class:`CheckpointError` unless it was written for exactly ``config``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or from an incompatible version
        raise CheckpointError(f"cannot read {what} {path}: {err}. {fix}") from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT or "config" not in state:
        raise CheckpointError(f"{what} {path} was not written by medmae_nb.train (format {_FORMAT}). {fix}")
    if state["config"] != config:
        diffs = "; ".join(_diff(state["config"], config)) or "(same values, different layout)"
        raise CheckpointError(f"{what} {path} belongs to a different config — {diffs}. {fix}")
    return state


def _call_mae(model: nn.Module, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator | None,
              takes_generator: bool) -> torch.Tensor:
    out = model(imgs, mask_ratio=mask_ratio, generator=generator) if takes_generator else model(
        imgs, mask_ratio=mask_ratio)
    loss = out.loss if hasattr(out, "loss") else out["loss"] if isinstance(out, dict) else out
    if not torch.is_tensor(loss) or loss.ndim != 0:
        raise TypeError("the model's forward must return an object with a scalar `.loss` (e.g. MAEOutput)")
    return loss


def _optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int) -> float:
    """One backward pass and update; returns the loss value, stopping the run as soon as it is not finite."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} at step {step}; lower the learning rate")
    return value


def _accepts(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


# ---------------------------------------------------------------------------------------------------- pretrain
def pretrain(model: nn.Module, dataset, *, epochs: int, batch_size: int = 64, lr: float | None = None,
             blr: float = 1.5e-4, min_lr: float = 0.0, weight_decay: float = 0.05, warmup_epochs: float | None = None,
             mask_ratio: float = 0.75, seed: int = 0, device: torch.device | str | None = None,
             augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
             checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1, cache: bool = False,
             progress: bool = True, num_threads: int | None = None,
             callback: Callable[[int, History], None] | None = None) -> tuple[nn.Module, History]:
    """Self-supervised pre-training of a masked-image model, with checkpoints, resume and a cache.

    ``model(imgs, mask_ratio=..., generator=...)`` must return an object with a scalar ``.loss`` (such as
    ``MAEOutput``); a forward without ``generator`` works too (masking then draws from the per-epoch global stream).
    Labels are ignored.

    Args:
        model: the masked-image model; its ``config`` dict (if any) goes into the config key.
        dataset: a map-style dataset of ``(image, label)`` pairs, e.g. an ``ImageDataset``.
        epochs: passes over ``dataset``.
        batch_size: images per step.
        lr: peak learning rate; default ``blr × batch_size / 256`` (MAE's scaling rule).
        blr: base learning rate for the default ``lr``.
        min_lr: learning rate at the end of the cosine.
        weight_decay: AdamW weight decay (none on biases, norms, tokens, position embeddings).
        warmup_epochs: linear warm-up length (fractions allowed); default a tenth of the run (MAE: 40 of 400).
        mask_ratio: fraction of patches masked.
        seed: seeds every random stream (see the module docstring).
        device: default ``profiles.get_device()``.
        augment: applied to each image tensor ``(C, H, W)`` of a batch, e.g. a torchvision v2 transform.
        checkpoint_dir: folder for ``last.pt``, written every ``checkpoint_every`` epochs; a run finds it there and
            resumes. With ``cache=True`` and no folder given, a folder in the cache is used and removed at the end.
        checkpoint_every: epochs between checkpoints.
        cache: load the finished model from the medmae_nb cache if a run with this exact config is there, else train
            and store it.
        progress: show a tqdm bar.
        num_threads: torch CPU threads during the run (restored afterwards).
        callback: called as ``callback(epoch, history)`` after each epoch (and its checkpoint).

    Returns:
        ``(model, history)``, the model in eval mode on ``device``.

    Raises:
        CheckpointError: ``last.pt`` in ``checkpoint_dir`` or the cache entry belongs to a different config.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (the recipe: AdamW β=(0.9, 0.95),
        wd 0.05, blr 1.5e-4, per-step warm-up + cosine).

    Example:
        >>> model, history = pretrain(mae, train_ds, epochs=20, cache=True)  # doctest: +SKIP
        >>> history.column("loss")  # doctest: +SKIP
    """
    if epochs < 1 or checkpoint_every < 1:
        raise ValueError("epochs and checkpoint_every must be at least 1")
    device = torch.device(device) if device is not None else get_device()
    lr = blr * batch_size / 256 if lr is None else lr
    warmup_epochs = 0.1 * epochs if warmup_epochs is None else warmup_epochs
    config = _canonical({
        "task": "pretrain", "model": _model_config(model), "data": dataset_fingerprint(dataset), "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "min_lr": min_lr, "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs, "mask_ratio": mask_ratio, "seed": seed, "augment": _describe(augment),
    })
    key = config_key(config, "pretrain")
    model.to(device)

    cached = entry(key, ".pt", "checkpoints") if cache else None
    if cached is not None and cached.exists():
        state = _load_checked(cached, config, "cache entry", f"Delete {cached} to train anew.")
        model.load_state_dict(state["model"])
        history = History.from_state(state["history"])
        history.loaded_from_cache = True
        print(f"loaded pre-trained weights from the cache (key {key})")
        return model.eval(), history

    temp_dir = checkpoint_dir is None and cache
    if temp_dir:
        checkpoint_dir = cache_dir() / "runs" / key
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None

    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95))
    steps_per_epoch = _steps_per_epoch(dataset, batch_size)
    total = epochs * steps_per_epoch
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    history, start_epoch, step = History(), 0, 0
    if ckpt is not None and ckpt.exists():
        state = _load_checked(ckpt, config, "checkpoint", f"Use a new checkpoint_dir, or delete {ckpt} to start over.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_state(state["history"])
        start_epoch, step = state["epoch"], state["step"]
        history.resumed_from = start_epoch
        print(f"resuming from epoch {start_epoch} of {epochs} (step {step}), checkpoint {ckpt}")

    takes_generator = _accepts(model.forward, "generator")
    t0 = time.perf_counter()
    with _threads(num_threads), tqdm(total=total, initial=step, desc="pretrain", disable=not progress) as bar:
        for epoch in range(start_epoch, epochs):
            s_shuffle, s_mask, s_global = _epoch_seeds(seed, epoch)
            _seed_globals(s_global)
            mask_gen = torch.Generator(device=device).manual_seed(s_mask)
            model.train()
            loss_sum, n_seen = 0.0, 0
            for imgs, _ in _loader(dataset, batch_size, s_shuffle):
                lr_now = cosine_schedule(step, total, warmup, lr, min_lr)
                set_lr(optimizer, lr_now)
                imgs = _augment(imgs, augment).to(device, non_blocking=True)
                loss = _call_mae(model, imgs, mask_ratio, mask_gen, takes_generator)
                value = _optimizer_step(optimizer, loss, step)
                loss_sum, n_seen, step = loss_sum + value * len(imgs), n_seen + len(imgs), step + 1
                history.steps.append({"step": step, "lr": lr_now, "loss": value})
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}", refresh=False)
            history.append(epoch=epoch + 1, step=step, lr=lr_now, loss=loss_sum / n_seen)
            if ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                save_torch(ckpt, {"format": _FORMAT, "key": key, "config": config, "epoch": epoch + 1, "step": step,
                                  "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "history": history.state_dict()})
            if callback is not None:
                callback(epoch + 1, history)

    if cached is not None:
        save_torch(cached, {"format": _FORMAT, "key": key, "config": config, "epoch": epochs, "step": step,
                            "model": model.state_dict(), "history": history.state_dict()})
        print(f"trained {epochs - start_epoch} epochs in {time.perf_counter() - t0:.0f} s; saved to cache (key {key})")
        if temp_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return model.eval(), history


# ---------------------------------------------------------------------------------------- supervised training
def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition)."""
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes])) if len(classes) else float("nan")


@torch.no_grad()
def _evaluate(forward: Callable, batches: Iterator, criterion: nn.Module, device: torch.device) -> dict:
    loss_sum, preds, ys = 0.0, [], []
    for x, y in batches:
        x, y = x.to(device), torch.as_tensor(y).to(device)
        logits = forward(x)
        loss_sum += criterion(logits, y).item() * len(y)
        preds.append(logits.argmax(1).cpu().numpy())
        ys.append(y.cpu().numpy())
    y_pred, y_true = np.concatenate(preds), np.concatenate(ys)
    return {"val_loss": loss_sum / len(y_true), "val_acc": float((y_pred == y_true).mean()),
            "val_bal_acc": _balanced_accuracy(y_true, y_pred)}


def _labels(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    return np.asarray(labels) if labels is not None else np.array([int(dataset[i][1]) for i in range(len(dataset))])


def _class_weights(dataset, num_classes: int | None) -> torch.Tensor:
    counts = np.bincount(_labels(dataset), minlength=num_classes or 0).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def _recalibrate_bn(model: nn.Module, batches: Iterator, device: torch.device) -> None:
    """Re-estimates BatchNorm running statistics as plain averages over ``batches`` with the current weights.

    With few labels a run has only tens of steps, too few for the default momentum (0.1) to forget the initial
    statistics, and eval-mode predictions collapse to one class; "precise BN" (Wu & Johnson, "Rethinking 'Batch' in
    BatchNorm", 2021) fixes that.
    """
    layers = _bn_layers(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for x in batches:
        model(x.to(device, non_blocking=True))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.eval()


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer, forward: Callable, train_batches: Callable,
         val_batches: Callable | None, *, epochs: int, steps_per_epoch: int, lr: float, min_lr: float,
         warmup_epochs: float, criterion: nn.Module, seed: int, device: torch.device, progress: bool, desc: str,
         callback: Callable | None, recalibrate: Callable[[], None] | None = None) -> History:
    """The shared supervised loop: per-step schedule, val metrics per epoch, best-by-val-balanced-accuracy weights."""
    total = epochs * steps_per_epoch
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    history, step, best, best_state = History(), 0, -math.inf, None
    with tqdm(total=total, desc=desc, disable=not progress) as bar:
        for epoch in range(epochs):
            s_shuffle, _, s_global = _epoch_seeds(seed, epoch)
            _seed_globals(s_global)
            model.train()
            loss_sum, correct, n_seen = 0.0, 0, 0
            for x, y in train_batches(s_shuffle):
                lr_now = cosine_schedule(step, total, warmup, lr, min_lr)
                set_lr(optimizer, lr_now)
                x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
                logits = forward(x)
                loss = criterion(logits, y)
                value = _optimizer_step(optimizer, loss, step)
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
                record.update(_evaluate(forward, val_batches(), criterion, device))
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
             callback: Callable[[int, History], None] | None = None) -> tuple[nn.Module, History]:
    """Trains every weight of a classifier (a pre-trained ViT from ``to_timm`` or any module returning logits).

    With a val set, each epoch records ``val_loss``, ``val_acc`` and ``val_bal_acc`` and the weights of the epoch with
    the best balanced accuracy are kept (``history.best_epoch``); without one, the last weights are returned.
    Models with BatchNorm get their running statistics re-estimated on up to ``PRECISE_BN_IMAGES`` un-augmented
    training images before each evaluation and at the end ("precise BN"): few-label runs take too few steps for the
    running averages to forget their initial values, and eval-mode predictions would otherwise collapse to one class.

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

    Returns:
        ``(model, history)``, the model in eval mode on ``device``.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (fine-tuning recipe).

    Example:
        >>> vit = mae.to_timm(num_classes=3, global_pool="token")  # doctest: +SKIP
        >>> vit, history = finetune(vit, train_ds, val_ds, epochs=15)  # doctest: +SKIP
    """
    device = torch.device(device) if device is not None else get_device()
    lr = blr * batch_size / 256 if lr is None else lr
    model.to(device)
    optimizer = build_optimizer(model, lr, weight_decay, layer_decay)
    num_classes = getattr(train_ds, "num_classes", None)
    weight = _class_weights(train_ds, num_classes).to(device) if class_weight else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def train_batches(s: int):
        for x, y in _loader(train_ds, batch_size, s):
            yield _augment(x, augment), y

    def val_batches():
        return iter(_loader(val_ds, max(batch_size, 256), None))

    def recalibrate():  # on un-augmented training images, at most PRECISE_BN_IMAGES of them
        n = min(len(train_ds), PRECISE_BN_IMAGES)
        subset = torch.utils.data.Subset(train_ds, range(n)) if n < len(train_ds) else train_ds
        _recalibrate_bn(model, (x for x, _ in _loader(subset, max(batch_size, 2), None)), device)

    with _threads(num_threads):
        history = _fit(model, optimizer, model, train_batches, val_batches if val_ds is not None else None,
                       epochs=epochs, steps_per_epoch=_steps_per_epoch(train_ds, batch_size), lr=lr, min_lr=min_lr,
                       warmup_epochs=warmup_epochs, criterion=criterion, seed=seed, device=device,
                       progress=progress, desc="finetune", callback=callback,
                       recalibrate=recalibrate if _bn_layers(model) else None)
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


# ----------------------------------------------------------------------------------------------- linear probe
def _feature_fn(encoder: nn.Module | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> (N, D)`` features: timm's pre-logits, else pooled ``forward_features``, else ``encoder(x)`` pooled."""
    if hasattr(encoder, "forward_features") and hasattr(encoder, "forward_head"):
        return lambda x: encoder.forward_head(encoder.forward_features(x), pre_logits=True)
    base = encoder.forward_features if hasattr(encoder, "forward_features") else encoder

    def features(x: torch.Tensor) -> torch.Tensor:
        f = base(x)
        if f.ndim == 4:  # (N, D, h, w) feature map
            return f.mean(dim=(2, 3))
        return f.mean(dim=1) if f.ndim == 3 else f  # (N, tokens, D)

    return features


class LinearProbe(nn.Module):
    """A frozen encoder followed by ``BatchNorm1d(affine=False)`` and a linear classifier; maps images to logits.

    The encoder is held by reference, always runs in eval mode without gradients, and is never updated.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (``main_linprobe.py`` head).
    """

    def __init__(self, encoder: nn.Module | Callable, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.features = _feature_fn(encoder)
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
def _features(encoder: nn.Module | Callable, dataset, batch_size: int, device: torch.device) -> torch.Tensor:
    fn = _feature_fn(encoder)
    was_training = getattr(encoder, "training", False)
    if isinstance(encoder, nn.Module):
        encoder.eval()
    try:
        out = [fn(x.to(device)).float() for x, _ in _loader(dataset, batch_size, None)]
    finally:
        if isinstance(encoder, nn.Module):
            encoder.train(was_training)
    return torch.cat(out)


def extract_features(encoder: nn.Module | Callable, dataset, batch_size: int = 256,
                     device: torch.device | str | None = None) -> np.ndarray:
    """Frozen features ``(N, D)`` of every image in ``dataset`` (eval mode, no augmentation), as float32 NumPy.

    Example:
        >>> feats = extract_features(vit, test_ds)  # doctest: +SKIP
    """
    device = torch.device(device) if device is not None else get_device()
    if isinstance(encoder, nn.Module):
        encoder.to(device)
    return _features(encoder, dataset, batch_size, device).cpu().numpy()


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
        train_x = _features(encoder, train_ds, 256, device)
        train_y = torch.as_tensor(_labels(train_ds), device=device)
        num_classes = getattr(train_ds, "num_classes", None) or int(train_y.max()) + 1
        probe = LinearProbe(encoder, train_x.shape[1], num_classes).to(device)
        val = None
        if val_ds is not None:
            val = (_features(encoder, val_ds, 256, device), torch.as_tensor(_labels(val_ds), device=device))
        n = len(train_x)

        def train_batches(s: int):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(s)).to(device)
            drop = n > batch_size and n % batch_size == 1
            for i in range(0, n - (1 if drop else 0), batch_size):
                idx = order[i:i + batch_size]
                yield train_x[idx], train_y[idx]

        optimizer = torch.optim.AdamW(param_groups(probe.head, weight_decay), lr=lr)
        # Features are fixed, so only the head trains and only its weights are snapshotted.
        history = _fit(probe.head, optimizer, probe.head, train_batches,
                       (lambda: iter([val])) if val is not None else None, epochs=epochs,
                       steps_per_epoch=_steps_per_epoch(train_x, batch_size), lr=lr, min_lr=0.0,
                       warmup_epochs=warmup_epochs, criterion=nn.CrossEntropyLoss(), seed=seed, device=device,
                       progress=progress, desc="linear probe", callback=None)
    return probe.eval(), history
