"""One pre-training loop for every self-supervised method: resume, cache, mixed precision, DDP, compile, clipping.

The loop knows nothing about any method. It gives a :class:`~medmae_nb.models.base.SSLMethod` a
:class:`~medmae_nb.models.base.Batch` of views per step, minimises the returned ``loss`` with AdamW on MAE's
warm-up + cosine schedule, and calls the method's three step hooks (schedules, gradient surgery, EMA teachers).

Reproducibility. Every random number of a step comes from seeds derived from ``(seed, epoch, …)``: the shuffling
order (``DistributedSampler``, seeded with ``seed + epoch``), each sample's views and masks (its own stream from
``(seed, epoch, dataset index)``, see :class:`SeededViews`) and torch's global generator (dropout, drop-path), re-seeded
at the start of each epoch. An epoch's result therefore depends only on the weights and optimiser state it starts
from — exactly what a checkpoint holds — so a resumed run equals an uninterrupted one bit for bit on the CPU; and
because a sample's randomness does not depend on its batch neighbours, a run on N processes with global batch B
takes the same steps as a 1-process run with batch B (up to the order of floating-point sums in the all-reduce).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from ..cache import _canonical, cache_dir, config_key, dataset_fingerprint, describe, entry, module_fingerprint
from ..models.base import Batch, sample_seed
from ..profiles import get_device
from . import distributed
from .checkpoint import CheckpointError, load_checked, save_checkpoint
from .history import History
from .optim import build_optimizer, cosine_schedule, set_lr

__all__ = ["PRECISIONS", "SeededViews", "method_config", "pretrain", "pretrain_config"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_RESUME_KEYS = ("model", "optimizer", "scaler", "history", "epoch", "step")  # what last.pt holds to resume a run


class SeededViews(Dataset):
    """Item ``i`` of ``dataset`` as ``(views, seed)``, its views made under a seed of its own.

    The seed is ``sample_seed(run_seed, epoch, i)``: the views of a sample (and the masks a method draws from
    :meth:`Batch.rand <medmae_nb.models.base.Batch.rand>`) do not depend on the batch it lands in, the process that
    loads it or the number of DataLoader workers. The dataset's own ``transform`` runs under the same seed. Labels are
    dropped: pre-training does not see them.

    Args:
        dataset: ``(image, label)`` pairs.
        views: ``image -> tensor`` (one view) or ``image -> list of tensors`` (several views); None = the image.
        seed: the run's seed.
    """

    def __init__(self, dataset: Dataset, views: Callable[[torch.Tensor], Any] | None, seed: int) -> None:
        self.dataset, self.views, self.seed, self.epoch = dataset, views, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int]:
        s = sample_seed(self.seed, self.epoch, i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            item = self.dataset[i]
            x = item[0] if isinstance(item, (tuple, list)) else item  # (image, label) pairs or bare images
            out = x if self.views is None else self.views(x)
        return (list(out) if isinstance(out, (list, tuple)) else [out]), s


def method_config(method: nn.Module) -> dict[str, Any]:
    """``{"class": ..., **method.config}``; raises a clear ``TypeError`` for a module without a ``config`` dict."""
    config = getattr(method, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(method).__name__} has no `config` dict: a method must hold its hyper-parameters in "
                        "`self.config` (they name its cache entry and checkpoint card); see "
                        "medmae_nb.models.base.SSLMethod")
    return {"class": type(method).__name__, **config}


def pretrain_config(method: nn.Module, dataset: Dataset, *, epochs: int, batch_size: int, lr: float, min_lr: float,
                    weight_decay: float, betas: tuple[float, float], warmup_epochs: float, clip_grad: float | None,
                    seed: int, views: Any) -> dict[str, Any]:
    """Everything a pre-training result depends on, as the canonical dict its cache key and card are made from.

    The method's starting weights are part of it (continuing from a pre-trained checkpoint is another run than
    starting from scratch). Execution details that do not change what is learned beyond floating-point noise
    (device, number of processes, precision, ``torch.compile``, workers) are left out; the checkpoint card records
    them.
    """
    return _canonical({
        "task": "pretrain", "method": method_config(method), "init": module_fingerprint(method),
        "data": dataset_fingerprint(dataset), "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "min_lr": min_lr, "weight_decay": weight_decay, "betas": list(betas),
        "warmup_epochs": warmup_epochs, "clip_grad": clip_grad, "seed": seed, "views": describe(views),
    })


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None  # float32 on the CPU and MPS: exact and reproducible
        # native bf16 only (Ampere and newer); older GPUs (a Colab T4) get fp16 with loss scaling, not emulated bf16
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _seed_globals(s: int) -> None:
    import random

    import numpy as np

    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # also seeds every CUDA device


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Runs a block with Python's, NumPy's and torch's (CPU and CUDA) global generators restored afterwards.

    Training re-seeds them every epoch; without this, what a notebook draws after a run would depend on whether the
    run trained or was read from the cache.
    """
    import random

    import numpy as np

    py, nps = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(nps)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _loss_of(out: Any) -> torch.Tensor:
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, dict):
        loss = out.get("loss")
    if not torch.is_tensor(loss) or loss.ndim != 0:
        raise TypeError(f"a method's forward must return an object with a scalar tensor `.loss` (e.g. "
                        f"medmae_nb.models.base.MethodOutput); got {type(out).__name__}")
    return loss


def _logs_of(out: Any) -> dict[str, Any]:
    logs = getattr(out, "logs", None)
    return dict(logs) if isinstance(logs, dict) else {}


def pretrain(method: nn.Module, dataset: Dataset, *, epochs: int, batch_size: int = 64, lr: float | None = None,
             blr: float = 1.5e-4, min_lr: float = 0.0, weight_decay: float = 0.05,
             betas: tuple[float, float] = (0.9, 0.95), warmup_epochs: float | None = None,
             clip_grad: float | None = None, seed: int = 0, views: Callable[[torch.Tensor], Any] | None = None,
             device: torch.device | str | None = None, precision: str = "auto", compile: bool = False,
             num_workers: int = 0, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
             cache: bool = False, progress: bool = True, num_threads: int | None = None, log_every: int | None = None,
             callback: Callable[[int, History], None] | None = None, **removed: Any) -> tuple[nn.Module, History]:
    """Self-supervised pre-training of any :class:`~medmae_nb.models.base.SSLMethod`.

    Run it as it is on one process, or under ``torchrun --nproc_per_node=N`` for data-parallel training (DDP; gloo on
    the CPU, NCCL on GPUs): ``batch_size`` is then the global batch, split evenly over the processes, rank 0 writes
    checkpoints and logs, and every process returns the same weights. Each process draws dropout and drop-path from
    its own stream, so a method with those layers takes statistically equivalent, not identical, steps on N
    processes and on one. Python's, NumPy's and torch's global generators are restored when the run ends.

    Args:
        method: the method; its ``config`` dict holds all its hyper-parameters (mask ratio included).
        dataset: a map-style dataset of ``(image, label)`` pairs; labels are ignored.
        epochs: passes over ``dataset`` (the last incomplete global batch of each pass is dropped).
        batch_size: global images per step.
        lr: peak learning rate; default ``blr × batch_size / 256`` (MAE's scaling rule).
        blr: base learning rate for the default ``lr``.
        min_lr: learning rate at the end of the cosine.
        weight_decay: AdamW weight decay (none on biases, norms and what ``method.no_weight_decay()`` lists).
        betas: AdamW betas (MAE: (0.9, 0.95)).
        warmup_epochs: linear warm-up length (fractions allowed); default a tenth of the run (MAE: 40 of 400).
        clip_grad: clip the global gradient norm to this value (None: no clipping); the norm is logged as
            ``grad_norm``.
        seed: seeds every random stream (see the module docstring).
        views: per-image view maker, ``image -> tensor | list of tensors`` (e.g. ``hflip``, or
            :func:`medmae_nb.data.views.multi_crop` for multi-view methods); runs under each sample's own seed.
        device: default ``profiles.get_device()`` (each process's own GPU under torchrun).
        precision: ``"auto"`` (bf16 autocast on GPUs that support it, else fp16 with loss scaling; float32 on the
            CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        compile: wrap the method in ``torch.compile`` (opt-in: compiling takes a while; pays off on long runs).
        num_workers: DataLoader worker processes (views are the same for any number).
        checkpoint_dir: folder for ``last.pt``, written every ``checkpoint_every`` epochs (atomically: a run killed
            at any moment, even while writing it, leaves the previous one intact); a run finds it there and resumes,
            and removes the temporary file a killed write left. With ``cache=True`` and no folder given, a folder in
            the cache is used and removed at the end.
        checkpoint_every: epochs between checkpoints.
        cache: load the finished weights from the medmae_nb cache if a run with this exact config is there, else train
            and store them.
        progress: show a tqdm bar (rank 0 only).
        num_threads: torch CPU threads during the run (restored afterwards).
        log_every: record the per-step loss every this many steps (default 1 on the CPU, 10 on GPUs, where reading
            the loss waits for the device).
        callback: ``callback(epoch, history)`` after each epoch and its checkpoint (rank 0 only).

    Returns:
        ``(method, history)``, the method in eval mode on ``device``.

    Raises:
        CheckpointError: ``last.pt`` in ``checkpoint_dir`` or the cache entry belongs to a different config, is
            truncated or damaged, or is not a checkpoint of this package (the message names the file and what to do).
        OSError: the disk filled up while writing a checkpoint (the previous ``last.pt`` is left as it was).
        TypeError: the method has no ``config`` dict, or its forward does not return a scalar ``.loss``.
        ValueError: bad sizes, e.g. a global batch that the number of processes does not divide.
        FloatingPointError: the loss stopped being finite (lower the learning rate, or clip gradients).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (the optimiser recipe: AdamW
        β=(0.9, 0.95), wd 0.05, blr 1.5e-4, per-step warm-up + cosine).

    Example:
        >>> mae, history = pretrain(mae_vit_micro(), pool, epochs=20, cache=True)  # doctest: +SKIP
        >>> history.column("loss")  # doctest: +SKIP
    """
    if "mask_ratio" in removed:
        raise TypeError("pretrain() takes no mask_ratio: it is the method's own hyper-parameter, set where the "
                        "method is built (e.g. mae_vit_micro(mask_ratio=0.75)), so that there is one source of truth")
    if removed:
        raise TypeError(f"pretrain() got unexpected keyword arguments {sorted(removed)}")
    if not isinstance(method, nn.Module):
        raise TypeError(f"method must be an nn.Module (an SSLMethod), got {type(method).__name__}")
    if epochs < 1 or checkpoint_every < 1:
        raise ValueError("epochs and checkpoint_every must be at least 1")
    info, device = distributed.setup(torch.device(device) if device is not None else None)
    device = torch.device(device) if device is not None else get_device()
    if batch_size < 1 or batch_size % info.world_size:
        example = max(1, batch_size // info.world_size) * info.world_size
        raise ValueError(f"batch_size={batch_size} is the global batch; it must be a positive multiple of the number "
                         f"of processes ({info.world_size}) — e.g. {example}")
    local_batch = batch_size // info.world_size
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than one global batch of {batch_size}; lower "
                         "batch_size")
    lr = blr * batch_size / 256 if lr is None else float(lr)
    warmup_epochs = 0.1 * epochs if warmup_epochs is None else float(warmup_epochs)
    config = pretrain_config(method, dataset, epochs=epochs, batch_size=batch_size, lr=lr, min_lr=min_lr,
                             weight_decay=weight_decay, betas=betas, warmup_epochs=warmup_epochs,
                             clip_grad=clip_grad, seed=seed, views=views)
    key = config_key(config, "pretrain")
    amp_dtype = _resolve_precision(precision, device)
    log_every = log_every or (1 if device.type == "cpu" else 10)
    method.to(device)

    cached = entry(key, ".pt", "checkpoints") if cache else None
    if cached is not None and cached.exists():
        state = load_checked(cached, config, "cache entry", f"Delete {cached} to train anew.")
        method.load_state_dict(state["model"])
        history = History.from_state(state["history"])
        history.loaded_from_cache = True
        if info.main:
            print(f"loaded pre-trained weights from the cache (key {key})")
        return method.eval(), history

    temp_dir = checkpoint_dir is None and cache
    if temp_dir:
        checkpoint_dir = cache_dir() / "runs" / key
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None

    optimizer = build_optimizer(method, lr, weight_decay, betas=betas)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    total = epochs * steps_per_epoch
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    history, start_epoch, step, seconds_before = History(), 0, 0, 0.0
    if ckpt is not None and ckpt.exists():
        fix = (f"Use a new checkpoint_dir, or delete {ckpt} to start over (a longer run is a new run: the "
               "learning-rate schedule depends on its length).")
        state = load_checked(ckpt, config, "checkpoint", fix)
        lacking = [k for k in _RESUME_KEYS if k not in state]
        if lacking:  # e.g. a finished cache entry, which keeps the weights only, copied in as last.pt
            raise CheckpointError(f"checkpoint {ckpt} was written for this config but cannot resume a run: it lacks "
                                  f"{lacking} (a finished cache entry holds the weights only). {fix}")
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when the run was saved without fp16 loss scaling
            scaler.load_state_dict(state["scaler"])
        history = History.from_state(state["history"])
        start_epoch, step = state["epoch"], state["step"]
        seconds_before = history.info.get("seconds", 0.0)
        history.resumed_from = start_epoch
        if info.main:
            print(f"resuming from epoch {start_epoch} of {epochs} (step {step}), checkpoint {ckpt}")

    if ckpt is not None and info.main:
        # a process killed while writing a checkpoint leaves its temporary file (atomic_write's); last.pt is intact
        for stale in ckpt.parent.glob(f".{ckpt.name}.*.tmp"):
            stale.unlink(missing_ok=True)

    model: nn.Module = method
    if info.distributed:
        # one device per process: device_ids=None keeps DDP from moving the Batch, which the loop has placed already
        model = nn.parallel.DistributedDataParallel(method, device_ids=None)
    if compile:
        model = torch.compile(model)
    data = SeededViews(dataset, views, seed)
    sampler = DistributedSampler(data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    loader = DataLoader(data, batch_size=local_batch, sampler=sampler, drop_last=True, num_workers=num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    params = [p for p in method.parameters() if p.requires_grad]
    history.info.update(device=device.type, processes=info.world_size, precision=str(amp_dtype or "float32")
                        .replace("torch.", ""), compile=bool(compile), torch=torch.__version__.split("+")[0])
    t0 = time.perf_counter()
    lr_now = cosine_schedule(step, total, warmup, lr, min_lr)
    keys: list[str] | None = None
    with isolated_rng(), _threads(num_threads), tqdm(total=total, initial=step, desc="pretrain",
                                                     disable=not (progress and info.main)) as bar:
        for epoch in range(start_epoch, epochs):
            t_epoch = time.perf_counter()
            sampler.set_epoch(epoch)
            data.set_epoch(epoch)
            _seed_globals(sample_seed(seed, epoch, info.rank, 1))
            method.train()
            sums: dict[str, torch.Tensor] = {}
            for views_list, seeds in loader:
                lr_now = cosine_schedule(step, total, warmup, lr, min_lr)
                set_lr(optimizer, lr_now)
                logs = {k: float(v) for k, v in method.begin_step(step, total).items()}
                batch = Batch([v.to(device, non_blocking=True) for v in views_list], seeds)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    out = model(batch)
                loss = _loss_of(out)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if clip_grad is not None:
                    scaler.unscale_(optimizer)
                    logs["grad_norm"] = nn.utils.clip_grad_norm_(params, clip_grad)
                method.before_update(step, total)
                scaler.step(optimizer)
                scaler.update()
                method.after_update(step, total)
                step += 1
                step_logs = {"loss": loss, **_logs_of(out), **logs}
                if keys is None:
                    keys = sorted(step_logs)
                elif sorted(step_logs) != keys:  # every process must reduce the same list, every epoch alike
                    raise ValueError(f"a method must log the same keys on every step: step {step} logged "
                                     f"{sorted(step_logs)}, earlier steps {keys}")
                for k, v in step_logs.items():
                    v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                    sums[k] = sums.get(k, 0) + v.to(device)
                if step % log_every == 0 or step == total:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise FloatingPointError(f"loss is {value} at step {step}; lower the learning rate or set "
                                                 "clip_grad")
                    history.steps.append({"step": step, "lr": lr_now, "loss": value})
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}", refresh=False)
                bar.update()
            means = distributed.all_reduce_sum(torch.stack([sums[k] for k in keys]), info) / (
                steps_per_epoch * info.world_size)
            record = {k: float(v) for k, v in zip(keys, means.tolist())}
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"loss is {record['loss']} in epoch {epoch + 1}; lower the learning rate or "
                                         "set clip_grad")
            seconds = time.perf_counter() - t_epoch
            history.append(epoch=epoch + 1, step=step, lr=lr_now, **record, seconds=seconds,
                           img_per_s=steps_per_epoch * batch_size / seconds)
            history.info["seconds"] = seconds_before + time.perf_counter() - t0
            if ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                if info.main:
                    save_checkpoint(ckpt, config, key=key, epoch=epoch + 1, step=step, model=method.state_dict(),
                                    optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                    history=history.state_dict())
                distributed.barrier(info)
            if callback is not None and info.main:
                callback(epoch + 1, history)

    if cached is not None:
        if info.main:
            save_checkpoint(cached, config, key=key, epoch=epochs, step=step, model=method.state_dict(),
                            history=history.state_dict())
            print(f"trained {epochs - start_epoch} epochs in {time.perf_counter() - t0:.0f} s; saved to cache "
                  f"(key {key})")
            if temp_dir:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
                with contextlib.suppress(OSError):  # leave no empty runs/ folder behind
                    Path(checkpoint_dir).parent.rmdir()
        distributed.barrier(info)
    return method.eval(), history


__all__ += ["CheckpointError"]
