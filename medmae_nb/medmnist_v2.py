"""Reproduces MedMNIST v2's supervised ResNet-18 (28) baseline: the book's anchor to a published number.

Every comparison in the book is between methods trained here, on our own code. This module checks that code against
the outside world once: it trains the MedMNIST v2 paper's own supervised baseline (Yang et al. 2023, Table 2,
"ResNet-18 (28)", all training labels) with the paper's protocol and compares the test AUC / ACC with the published
figures (:data:`PUBLISHED`). A result within about 0.02 AUC says the data loading, the metrics and the training loop
agree with the benchmark's; a larger gap has to be explained before our own numbers are read against the literature.

The protocol, as in the authors' ``MedMNIST/experiments`` code (``MedMNIST2D/train_and_eval_pytorch.py`` and
``models.py``), written anew here:

* **network** — ResNet-18 whose stem keeps the 28-px detail: a 3x3 convolution with stride 1 (not the 7x7 stride-2
  convolution) and no max-pool, so the four stages see 28, 14, 7 and 4 px; ``in_channels`` the dataset's own
  channels; PyTorch's default initialisation (the authors' network, adapted from ``kuangliu/pytorch-cifar``, does
  not re-initialise). :func:`resnet18_28` builds it.
* **training** — cross-entropy, Adam (lr 0.001, PyTorch's default betas, no weight decay), batch 128 with the
  training split reshuffled every epoch (the last, smaller batch kept), 100 epochs, the learning rate times 0.1 at
  50 % and 75 % of the epochs (:func:`lr_at`), no augmentation, inputs ``(x - 0.5) / 0.5`` on images in ``[0, 1]``.
* **selection and test** — after every epoch the validation AUC is measured; the weights of the first epoch with
  the highest validation AUC are kept (a copy) and scored on the official test split.
* **metrics** — AUC is the ROC AUC of the positive-class probability for binary tasks (the macro one-vs-rest mean
  otherwise), ACC the share of argmax predictions that are right (for binary tasks the same as the authors'
  ``p1 > 0.5``): :func:`medmae_nb.evaluate.roc_auc` and :func:`medmae_nb.evaluate.accuracy`.

One detail of the authors' code changes what their figures mean: in the first public version of the script the
"best" model was kept as ``best_model = model``, a second name for the network that goes on training, so the model
saved and tested was the one after the *last* epoch; a later commit copies it (``deepcopy``). Which version produced
Table 2 is not stated, so :func:`reproduce` reports both: the best-validation model (``test_auc``, ``test_acc``: the
protocol as described) and the last-epoch model (``final_test_auc``, ``final_test_acc``).

Two things are left out because they do not change the result: the authors also score the training and test
splits after every epoch, for their logs only (here the test split is scored once per model, at the end), and
their TensorBoard logging.

Command line (``--help`` answers without importing torch)::

    python -m medmae_nb.medmnist_v2 breastmnist --seeds 0 1 2 --threads 1 \
        --out medmae_nb/results/medmnist-v2-breastmnist.json

References:
    J. Yang, R. Shi, D. Wei, Z. Liu, L. Zhao, B. Ke, H. Pfister, B. Ni, "MedMNIST v2 - A large-scale lightweight
    benchmark for 2D and 3D biomedical image classification", Scientific Data 10:41 (2023), Table 2.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import accuracy, roc_auc

# MedMNIST v2, Table 2, ResNet-18 (28): test AUC and ACC, trained on all training labels.
PUBLISHED: dict[str, dict[str, float]] = {
    "breastmnist": {"auc": 0.901, "acc": 0.863},
    "pneumoniamnist": {"auc": 0.944, "acc": 0.854},
}

# The published protocol; reproduce() writes it into every result so that a result file says what was run.
LR = 1e-3
GAMMA = 0.1
MILESTONES = (0.5, 0.75)  # shares of the epochs at which the learning rate is multiplied by GAMMA
MEAN, STD = 0.5, 0.5
TOLERANCE_AUC = 0.02  # a mean test AUC this close to the published one counts as reproduced


def lr_at(epoch: int, epochs: int, lr: float = LR) -> float:
    """The learning rate of 0-based ``epoch`` out of ``epochs``: ``lr``, times 0.1 from 50 % and again from 75 %.

    With 100 epochs: 0.001 for epochs 0-49, 0.0001 for 50-74, 0.00001 for 75-99, as the authors' ``MultiStepLR``
    with milestones ``[0.5 * epochs, 0.75 * epochs]``. A milestone that is not a whole number takes effect at the
    next whole epoch (the authors' scheduler would skip it, e.g. 7.5 for 10 epochs; this only matters for short test
    runs).

    Example:
        >>> [lr_at(e, 100) for e in (0, 49, 50, 74, 75, 99)]  # doctest: +NORMALIZE_WHITESPACE
        [0.001, 0.001, 0.0001, 0.0001, 1e-05, 1e-05]
    """
    drops = sum(epoch >= math.ceil(share * epochs) for share in MILESTONES)
    return float(f"{lr * GAMMA**drops:.12g}")  # 0.001 * 0.1**2 is 1.0000000000000003e-05 otherwise


@functools.cache
def _blocks() -> type:
    """The ResNet basic block, defined on first use so that importing this module does not import torch."""
    from torch import nn

    class BasicBlock(nn.Module):
        """Two 3x3 conv-BN layers plus the identity, or a strided 1x1 conv-BN shortcut where the shape changes."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            changes = stride != 1 or cin != cout
            self.shortcut = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if changes
                else nn.Identity()
            )

        def forward(self, x):  # noqa: ANN001, ANN201 - torch types are imported lazily
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.shortcut(x))

    return BasicBlock


def resnet18_28(in_channels: int = 1, num_classes: int = 2):  # noqa: ANN201 - returns a torch.nn.Sequential
    """ResNet-18 for 28-px inputs, as in MedMNIST v2: 3x3 stride-1 stem, no max-pool.

    The ImageNet stem (7x7 stride 2, then a stride-2 max-pool) would shrink a 28-px image to 7 px before the first
    residual stage; this one keeps all 28 px, so the stages work at 28, 14, 7 and 4 px. Layers, widths (64-512) and
    the 1x1 projection shortcuts are the standard ResNet-18's; initialisation is PyTorch's default.

    Args:
        in_channels: image channels (1 for the gray MedMNIST datasets, 3 for the RGB ones).
        num_classes: outputs of the final linear layer.

    Returns:
        An ``nn.Sequential`` named ``stem``, ``layer1``-``layer4``, ``pool``, ``fc``, mapping ``(N, in_channels, 28,
        28)`` to logits ``(N, num_classes)`` (any input size works: the pooling is adaptive).
    """
    from torch import nn

    block = _blocks()
    stages, cin = {}, 64
    for i, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        stages[f"layer{i}"] = nn.Sequential(block(cin, cout, stride), block(cout, cout, 1))
        cin = cout
    stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(OrderedDict(stem=stem, **stages, pool=pool, fc=nn.Linear(512, num_classes)))


def _predict(model, x, batch_size: int) -> tuple[np.ndarray, float]:  # noqa: ANN001
    """Softmax probabilities ``(N, K)`` of ``x`` in eval mode, and the summed cross-entropy logits (for the loss)."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return torch.softmax(logits, 1).cpu().numpy().astype(np.float64), logits


def score(model, x, y: np.ndarray, batch_size: int = 128) -> dict[str, float]:  # noqa: ANN001
    """AUC, ACC and mean cross-entropy of ``model`` on normalised images ``x`` (a tensor on the model's device)."""
    import torch
    import torch.nn.functional as F

    probs, logits = _predict(model, x, batch_size)
    loss = F.cross_entropy(logits, torch.as_tensor(y, device=logits.device)).item()
    return {"auc": roc_auc(y, probs), "acc": accuracy(y, probs), "loss": float(loss)}


def train_and_select(
    train: tuple[Any, np.ndarray],
    val: tuple[Any, np.ndarray],
    num_classes: int,
    seed: int = 0,
    epochs: int = 100,
    batch_size: int = 128,
    device: Any = "cpu",
    verbose: bool = True,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Trains one ResNet-18 (28) with the published protocol and keeps the weights of the best validation epoch.

    Args:
        train: ``(images, labels)``: float32 images ``(N, C, H, W)`` already normalised (array or tensor), int
            labels ``(N,)``.
        val: the validation split, the same way.
        num_classes: outputs of the network.
        seed: seeds the initialisation and the order of the batches.
        epochs: training epochs; the learning-rate drops scale with it (:func:`lr_at`).
        batch_size: training batch size (also used for evaluation).
        device: where to train.
        verbose: print one line per epoch.
        checkpoint: a file that holds the run's state after every epoch (network, optimiser, batch-order generator,
            history, best copy so far), written atomically. If it exists, training continues from it, so a run that
            was stopped resumes where it stopped and ends with exactly the weights of an uninterrupted run; a
            finished run's file returns at once. None: no file.

    Returns:
        ``(record, best_model, final_model)``: ``record`` holds ``best_epoch`` (1-based: the first epoch with the
        highest validation AUC; the last epoch if no epoch had a defined AUC), ``best_val_auc``, the seconds per
        epoch and a ``history`` list (per epoch: ``epoch``, ``lr``, ``train_loss``, ``val_auc``, ``val_acc``,
        ``val_loss``); ``best_model`` is a copy of the network at ``best_epoch``, ``final_model`` the network after
        the last epoch.

    Raises:
        ValueError: ``checkpoint`` belongs to another run (seed, epochs, batch size, classes or training-set size
            differ); the message says to delete the file or pass another path.
    """
    import torch
    import torch.nn.functional as F

    from .cache import atomic_write
    from .profiles import seed_everything

    gen = seed_everything(seed)
    device = torch.device(device)
    x_tr = torch.as_tensor(train[0], dtype=torch.float32, device=device)
    y_tr = torch.as_tensor(np.asarray(train[1]), dtype=torch.long, device=device)
    x_va = torch.as_tensor(val[0], dtype=torch.float32, device=device)
    y_va = np.asarray(val[1])
    # channels-last memory layout: the same arithmetic, about 12 % faster on a CPU with one thread
    model = resnet18_28(x_tr.shape[1], num_classes).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    history: list[dict[str, float]] = []
    best_auc, best_epoch, best_model = -math.inf, 0, None
    first, before = 0, 0.0  # epochs already done and their seconds (from the checkpoint)
    identity = {"seed": int(seed), "epochs": int(epochs), "batch_size": int(batch_size),
                "num_classes": int(num_classes), "n_train": int(len(x_tr))}
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state.get("identity") != identity:
            raise ValueError(f"checkpoint {checkpoint} belongs to another run ({state.get('identity')}), not to "
                             f"{identity}: delete it or pass another checkpoint path")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        history, first, before = list(state["history"]), int(state["epoch"]), float(state["seconds"])
        best_auc, best_epoch = float(state["best_auc"]), int(state["best_epoch"])
        if state["best_model"] is not None:
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(state["best_model"])
        if verbose:
            print(f"  seed {seed}: resumed from {checkpoint} after epoch {first}/{epochs}", flush=True)
    start = time.perf_counter() - before
    for epoch in range(first, epochs):
        lr = lr_at(epoch, epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(len(x_tr), generator=gen).to(device)
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2 and i > 0:  # BatchNorm cannot train on a batch of one; PyTorch's loader would fail here
                continue
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val_metrics = score(model, x_va, y_va, batch_size)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": float(np.mean(losses)),
               **{f"val_{k}": v for k, v in val_metrics.items()}}
        history.append(row)
        improved = val_metrics["auc"] > best_auc  # strict: the first epoch reaching the best AUC is kept (NaN never)
        if improved:
            best_auc, best_epoch, best_model = val_metrics["auc"], epoch + 1, copy.deepcopy(model)
        if verbose:
            print(f"  seed {seed} epoch {epoch + 1:3d}/{epochs} lr {lr:.0e} loss {row['train_loss']:.4f} "
                  f"val auc {val_metrics['auc']:.4f} acc {val_metrics['acc']:.4f}{' *' if improved else ''} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        if checkpoint is not None:
            state = {"identity": identity, "epoch": epoch + 1, "seconds": time.perf_counter() - start,
                     "model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                     "history": history, "best_auc": best_auc, "best_epoch": best_epoch,
                     "best_model": None if best_model is None else best_model.state_dict()}
            atomic_write(checkpoint, lambda tmp, state=state: torch.save(state, tmp))
    seconds = time.perf_counter() - start
    if best_model is None:  # no epoch had a defined validation AUC (a split with one class): keep the last one
        best_epoch, best_model = epochs, copy.deepcopy(model)
    record = {"seed": seed, "best_epoch": best_epoch, "best_val_auc": best_auc if best_auc > -math.inf else None,
              "train_seconds": seconds, "seconds_per_epoch": seconds / max(epochs, 1), "history": history}
    if first:
        record["resumed_after_epoch"] = first  # this call continued a checkpoint; seconds include earlier calls
    return record, best_model, model


def _check_name(name: str) -> str:
    from .data.medmnist import CLASS_NAMES

    key = name.lower()
    if key not in CLASS_NAMES:
        known = ", ".join(sorted(CLASS_NAMES))
        raise ValueError(f"unknown MedMNIST dataset {name!r}; this reproduction runs the single-label 2D datasets: "
                         f"{known} (published ResNet-18 (28) figures are stored for {', '.join(PUBLISHED)})")
    return key


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def reproduce(
    name: str,
    root: str | os.PathLike | None = None,
    epochs: int = 100,
    seeds: tuple[int, ...] | list[int] = (0,),
    batch_size: int = 128,
    device: Any = None,
    threads: int | None = None,
    verbose: bool = True,
    resume_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Trains MedMNIST v2's ResNet-18 (28) baseline on dataset ``name`` for each seed and scores it on the test split.

    Args:
        name: a single-label 2D MedMNIST dataset, e.g. ``"breastmnist"`` (case-insensitive); published figures are
            attached for those in :data:`PUBLISHED`.
        root: data folder (see :func:`medmae_nb.data.load_medmnist`); None means ``$MEDMAE_DATA``.
        epochs: training epochs (the paper: 100).
        seeds: one training run per seed.
        batch_size: the paper's 128.
        device: where to train; None picks CUDA, MPS or the CPU.
        threads: ``torch.set_num_threads`` for the run (None leaves torch's default); results are the same, only
            the time changes.
        verbose: print one line per epoch and a summary per seed.
        resume_dir: a folder for one checkpoint per seed (``<dataset>-seed<k>.pt``, see :func:`train_and_select`):
            a run that was stopped continues from its last finished epoch when called again with the same folder,
            and finished seeds are not trained again. None: no checkpoints.

    Returns:
        A JSON-ready dict: ``dataset``, ``protocol`` (the settings used), ``published`` (``{"auc", "acc"}`` or
        None), ``runs`` (per seed: ``seed``, ``best_epoch``, ``best_val_auc``, ``test_auc``, ``test_acc`` of the
        best-validation model, ``final_test_auc``, ``final_test_acc`` of the last-epoch model, times, per-epoch
        ``history``), ``summary`` (mean and sample std over seeds of those four test figures), ``delta_auc`` (mean
        test AUC minus published), ``reproduced`` (``|delta_auc| <= 0.02``), ``seconds_per_epoch`` and
        ``wall_seconds``.

    Raises:
        ValueError: an unknown dataset name, no seeds, or ``epochs`` < 1.
        medmae_nb.data.DataError: the data file is missing or not the official one.
    """
    key = _check_name(name)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    import torch

    from .data.medmnist import load_medmnist
    from .profiles import get_device

    if threads is not None:
        torch.set_num_threads(int(threads))
    device = torch.device(device) if device is not None else get_device()
    start = time.perf_counter()
    ds = load_medmnist(key, root=root, image_size=28)  # the 28-px file at its own size and channels

    def split(s: str) -> tuple[np.ndarray, np.ndarray]:
        part = ds.get_split(s)
        return (part.images - MEAN) / STD, np.asarray(part.labels, dtype=np.int64)

    train, val, (x_te, y_te) = split("train"), split("val"), split("test")
    x_te_t = torch.as_tensor(x_te, dtype=torch.float32, device=device)
    if verbose:
        print(f"{key}: train {len(train[1])}, val {len(val[1])}, test {len(y_te)} images "
              f"{tuple(train[0].shape[1:])}, {ds.num_classes} classes; {epochs} epochs, seeds {list(seeds)}, "
              f"device {device}, {torch.get_num_threads()} thread(s)", flush=True)

    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        ckpt = Path(resume_dir) / f"{key}-seed{int(seed)}.pt" if resume_dir is not None else None
        record, best, final = train_and_select(train, val, ds.num_classes, int(seed), epochs, batch_size, device,
                                               verbose, checkpoint=ckpt)
        best_test = score(best, x_te_t, y_te, batch_size)
        final_test = score(final, x_te_t, y_te, batch_size)
        history = record.pop("history")
        record.update(test_auc=best_test["auc"], test_acc=best_test["acc"], final_test_auc=final_test["auc"],
                      final_test_acc=final_test["acc"], wall_seconds=time.perf_counter() - t0, history=history)
        runs.append(record)
        if verbose:
            val_auc = "undefined" if record["best_val_auc"] is None else f"{record['best_val_auc']:.4f}"
            print(f"{key} seed {seed}: best val epoch {record['best_epoch']} (val AUC {val_auc}):"
                  f" test AUC {best_test['auc']:.4f} ACC {best_test['acc']:.4f}; last epoch: test AUC "
                  f"{final_test['auc']:.4f} ACC {final_test['acc']:.4f}; {record['wall_seconds']:.0f} s", flush=True)

    summary = {k: _mean_std([r[k] for r in runs]) for k in ("test_auc", "test_acc", "final_test_auc", "final_test_acc")}
    published = PUBLISHED.get(key)
    delta = summary["test_auc"]["mean"] - published["auc"] if published else None
    result = {
        "dataset": key,
        "paper": "Yang et al., MedMNIST v2, Scientific Data 10:41 (2023), Table 2, ResNet-18 (28)",
        "published": published,
        "protocol": {
            "network": "ResNet-18, stem 3x3 conv stride 1 + BN + ReLU, no max-pool (28/14/7/4 px stages), "
                       "PyTorch default init",
            "in_channels": int(train[0].shape[1]), "num_classes": int(ds.num_classes), "image_size": 28,
            "loss": "cross-entropy", "optimizer": "Adam", "lr": LR, "weight_decay": 0.0,
            "lr_schedule": f"x{GAMMA} at epochs {[math.ceil(s * epochs) for s in MILESTONES]} (0-based)",
            "epochs": epochs, "batch_size": batch_size, "normalisation": f"(x - {MEAN}) / {STD}, x in [0, 1]",
            "augmentation": None, "selection": "first epoch with the highest validation AUC (weights copied)",
            "split": "official MedMNIST train/val/test",
            "n_train": int(len(train[1])), "n_val": int(len(val[1])), "n_test": int(len(y_te)),
        },
        "seeds": [int(s) for s in seeds],
        "summary": summary,
        "delta_auc": delta,
        "tolerance_auc": TOLERANCE_AUC,
        "reproduced": bool(abs(delta) <= TOLERANCE_AUC) if delta is not None else None,
        "final_delta_auc": summary["final_test_auc"]["mean"] - published["auc"] if published else None,
        "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - start,
        "runs": runs,
    }
    if verbose:
        pub = f" (published {published['auc']:.3f} / {published['acc']:.3f})" if published else ""
        print(f"{key}: mean test AUC {summary['test_auc']['mean']:.4f} ± {summary['test_auc']['std']:.4f}, ACC "
              f"{summary['test_acc']['mean']:.4f} ± {summary['test_acc']['std']:.4f}{pub}", flush=True)
    return result


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"git_commit": sha, "git_uncommitted_changes": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_uncommitted_changes": None}


def _machine() -> dict[str, Any]:
    return {"node": platform.node(), "platform": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON atomically: a temporary file in the same folder, then ``os.replace``."""
    from .cache import atomic_write

    text = json.dumps(obj, indent=1, allow_nan=True) + "\n"
    umask = os.umask(0)
    os.umask(umask)

    def write(tmp: Path) -> None:
        tmp.write_text(text)
        os.chmod(tmp, 0o666 & ~umask)  # the temporary file is private (0600); the result is an ordinary file

    return atomic_write(path, write)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m medmae_nb.medmnist_v2",
        description="Reproduce MedMNIST v2's supervised ResNet-18 (28) baseline (Yang et al. 2023, Table 2): "
                    "100 epochs of Adam, best validation AUC, official test split.",
    )
    p.add_argument("name", help=f"MedMNIST dataset, e.g. breastmnist (published figures: {', '.join(PUBLISHED)})")
    p.add_argument("--root", default=None, help="data folder (default: $MEDMAE_DATA)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100, the paper's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128, the paper's)")
    p.add_argument("--device", default=None, help="torch device (default: CUDA, MPS, else CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--out", default=None, help="result JSON to write (atomically); default: print only")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="keep a checkpoint per seed in DIR after every epoch and continue from it when run again "
                        "(a stopped run resumes; finished seeds are not retrained)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: runs :func:`reproduce` and writes its result, with provenance, to ``--out``.

    The JSON adds ``provenance``: the command, the git commit when the run started (and whether tracked files had
    uncommitted changes; ``git_commit_at_end`` too when the checkout moved during the run), the machine, torch's
    thread count and version, start time and wall seconds.

    Returns:
        0 on success, 2 for an unknown dataset name or bad arguments (with the message on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        _check_name(args.name)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    commit = _git_commit()  # the code that starts the run: a long run may outlive the commit it started from
    t0 = time.perf_counter()
    result = reproduce(args.name, root=args.root, epochs=args.epochs, seeds=args.seeds, batch_size=args.batch_size,
                       device=args.device, threads=args.threads, verbose=not args.quiet, resume_dir=args.resume)
    import torch

    result["provenance"] = {
        "command": "python -m medmae_nb.medmnist_v2 " + shlex.join(argv),
        **commit,
        "machine": _machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "started": started,
        "wall_seconds": time.perf_counter() - t0,
    }
    at_end = _git_commit()["git_commit"]
    if at_end != commit["git_commit"]:
        result["provenance"]["git_commit_at_end"] = at_end
    if args.out:
        path = write_json(args.out, result)
        print(f"wrote {path}")
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
