"""One evaluation protocol for every learner: the same optimiser steps, augmentations and selection rule at a budget.

A comparison between a fine-tuned self-supervised encoder, the same backbone trained from scratch and a small
supervised CNN is fair only when each gets the same training: otherwise a gain can be a longer schedule, not better
weights. :class:`EvalProtocol` is that training, written once:

* **steps**: ``steps(n) = epochs(n) × ⌈n / batch⌉`` with ``epochs(n) = max(epochs, ⌈min_steps / ⌈n / batch⌉⌉)``, the
  same for every learner at a budget of ``n`` labelled images. ``min_steps`` is the floor that lets the supervised
  CNN converge at the smallest budget (:func:`calibrate_min_steps` measures it on a validation split, never on test);
  ``epochs`` is the floor at large budgets, at least 2 (no one-pass fine-tunes in any profile).
* **augment**: one named augmentation for every learner (``flip``: random left-right flips; ``none``).
* **selection**: ``fixed steps`` (the last weights; no split is looked at).

Every results row records ``steps``, ``augment`` and ``selection`` (:meth:`EvalProtocol.row`), so a table shows that
the learners it compares were trained alike.

Example:
    >>> p = EvalProtocol(min_steps=200, epochs=10)
    >>> p.steps(30), p.steps(300), p.steps(3000)   # 10/class, 100/class, 1000/class of three classes
    (200, 200, 940)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AUGMENTS", "SELECTIONS", "EvalProtocol", "calibrate_min_steps", "protocol_for"]

AUGMENTS = ("flip", "none")
SELECTIONS = ("fixed steps",)


@dataclass(frozen=True)
class EvalProtocol:
    """The training every learner of a comparison gets at a budget.

    Attributes:
        min_steps: optimiser steps at least, at every budget (the supervised CNN's convergence at the smallest one).
        epochs: passes over the labelled set at least (≥ 2), which sets the steps at large budgets.
        batch_size: images per step (capped at the labelled set's size).
        augment: ``"flip"`` (random left-right flips) or ``"none"``.
        selection: ``"fixed steps"``: the weights after the last step.
        lr: peak learning rate of every learner (AdamW, cosine, warm-up a tenth of the run).
        label_smoothing: cross-entropy label smoothing of every learner.
    """

    min_steps: int = 200
    epochs: int = 10
    batch_size: int = 32
    augment: str = "flip"
    selection: str = "fixed steps"
    lr: float = 1e-3
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 2:
            raise ValueError(f"epochs must be an integer ≥ 2 (no one-pass fine-tunes), got {self.epochs!r}")
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ValueError(f"min_steps must be a positive integer, got {self.min_steps!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"unknown augment {self.augment!r}; choose from {AUGMENTS}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; choose from {SELECTIONS}")

    # ------------------------------------------------------------------------------------------------ the rule
    def epochs_for(self, n_train: int) -> int:
        """Passes over ``n_train`` labelled images."""
        per_epoch = self._per_epoch(n_train)
        return max(self.epochs, math.ceil(self.min_steps / per_epoch))

    def steps(self, n_train: int) -> int:
        """Optimiser steps of every learner on ``n_train`` labelled images."""
        return self.epochs_for(n_train) * self._per_epoch(n_train)

    def _per_epoch(self, n_train: int) -> int:
        if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1:
            raise ValueError(f"n_train must be a positive number of labelled images, got {n_train!r}")
        return math.ceil(int(n_train) / min(self.batch_size, int(n_train)))

    def augment_fn(self) -> Callable | None:
        from .data.transforms import hflip

        return {"flip": hflip, "none": None}[self.augment]

    # ------------------------------------------------------------------------------------------------ learners
    def fine_tune(self, model: Any, *, name: str, layer_decay: float | None = None, device: Any = None,
                  **kwargs: Any) -> Any:
        """A :class:`~medmae_nb.budgets.FineTune` of a network (or a factory of fresh ones) under this protocol.
        ``layer_decay`` (ViTs) is the one setting that may differ between learners; steps, augmentation, selection,
        learning rate and label smoothing may not."""
        from .budgets import FineTune

        fixed = {"epochs": self.epochs, "min_steps": self.min_steps, "batch_size": self.batch_size, "lr": self.lr,
                 "label_smoothing": self.label_smoothing, "augment": self.augment_fn()}
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise ValueError(f"{clash} are set by the protocol, the same for every learner; change the EvalProtocol")
        return FineTune(model, layer_decay=layer_decay, device=device, name=name, **fixed, **kwargs)

    def scratch(self, factory: Callable[[], Any], *, name: str, device: Any = None) -> Any:
        """A network trained from scratch (a fresh random one per seed) under this protocol: cosine to 0, no layer
        decay — the supervised yardstick."""
        return self.fine_tune(factory, name=name, layer_decay=None, device=device, min_lr=0.0)

    # ------------------------------------------------------------------------------------------------- records
    def describe(self) -> dict[str, Any]:
        """The protocol as a dict (for a row's config and a table's card)."""
        return asdict(self)

    def steps_text(self, sweep: Any) -> str:
        """One line a chapter prints under its runs: the optimiser steps every learner got at each budget of a
        :class:`~medmae_nb.budgets.BudgetSweep`, e.g.
        ``optimiser steps of every learner: 10/class (30 images) 200, 100/class (266 images) 200``."""
        def budget(b: float) -> str:
            return f"{b * 100:g} %" if sweep.unit == "fraction" else f"{b:g}/class"

        return "optimiser steps of every learner: " + ", ".join(
            f"{budget(b)} ({int(n)} images) {self.steps(int(n))}" for b, n in zip(sweep.budgets, sweep.n_train))

    def row(self, n_train: int) -> dict[str, Any]:
        """What every results row records: ``{"steps", "augment", "selection"}`` at ``n_train`` images."""
        return {"steps": self.steps(n_train), "augment": self.augment, "selection": self.selection}


def protocol_for(profile: dict[str, Any]) -> EvalProtocol:
    """The protocol of a profile (``eval_min_steps``, ``eval_epochs``, ``eval_batch_size``, ``eval_augment``)."""
    return EvalProtocol(min_steps=int(profile["eval_min_steps"]), epochs=int(profile["eval_epochs"]),
                        batch_size=int(profile.get("eval_batch_size", 32)),
                        augment=str(profile.get("eval_augment", "flip")))


def calibrate_min_steps(pool: Any, val: Any, budget: int, *, steps: Sequence[int] = (50, 100, 200, 400, 800),
                        seeds: Sequence[int] = (0, 1, 2), tolerance: float = 0.01, width: int = 32,
                        device: Any = None) -> tuple[int, list[dict[str, Any]]]:
    """The smallest step count at which the supervised SmallCNN has converged at ``budget`` labels per class: its
    mean balanced accuracy on ``val`` (a validation split, never test) is within ``tolerance`` of the best over
    ``steps``.

    Returns:
        ``(min_steps, rows)``, a row per step count: ``{"steps", "bal_acc", "per_seed"}``.
    """
    import numpy as np

    from .budgets import budget_sweep
    from .models import small_cnn

    k, c = pool.num_classes, pool.channels
    rows = []
    for s in steps:
        proto = EvalProtocol(min_steps=int(s), epochs=2)
        learner = proto.scratch(lambda: small_cnn(c, k, width=width), name=f"SmallCNN, {s} steps", device=device)
        sweep = budget_sweep(learner, pool, val, [budget], seeds=seeds, metrics=("bal_acc",), n_boot=10, cache=True)
        per_seed = sweep.per_seed["bal_acc"][0]
        rows.append({"steps": proto.steps(sweep.n_train[0]), "bal_acc": float(np.mean(per_seed)),
                     "per_seed": [round(float(v), 4) for v in per_seed]})
    best = max(r["bal_acc"] for r in rows)
    chosen = next(r["steps"] for r in rows if r["bal_acc"] >= best - tolerance)
    return chosen, rows


CALIBRATION_SETS = ("phantom", "busi", "medmnist:breastmnist")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m medmae_nb.protocol [--out FILE] [--threads N]``: measures the SmallCNN's convergence at 10 labels
    per class on the validation splits of the phantom (600 images), BUSI (the split shared with BreastMNIST, 79) and
    BreastMNIST (78), and writes each set's step curve and the ``min_steps`` it gives; the profiles' ``eval_min_steps``
    is the largest."""
    import argparse
    import json
    import os
    import platform
    import tempfile
    import time
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m medmae_nb.protocol", description=main.__doc__)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "protocol-calibration.json"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--root", default=None, help="real data (default $MEDMAE_DATA)")
    args = p.parse_args(argv)
    import torch

    from .data import make_phantom_splits
    from .data.leaks import shared_busi_split
    from .data.spec import load_spec
    from .pretrained.store import code_commit

    if args.threads:
        torch.set_num_threads(args.threads)
    loaders = {"phantom": lambda: make_phantom_splits(3300, 600, 600, 64, seed=0, cache=True),
               "busi": lambda: shared_busi_split(args.root, image_size=64, channels=1),
               "medmnist:breastmnist": lambda: load_spec("medmnist:breastmnist", image_size=64, channels=1,
                                                         root=args.root)}
    out: dict[str, Any] = {"command": "python -m medmae_nb.protocol", "code_commit": code_commit(),
                           "budget_per_class": 10, "seeds": [0, 1, 2], "tolerance": 0.01,
                           "machine": platform.machine(), "cpus": os.cpu_count(), "sets": {}}
    for name, load in loaders.items():
        start = time.perf_counter()
        ds = load()
        chosen, rows = calibrate_min_steps(ds.get_split("train"), ds.get_split("val"), 10)
        out["sets"][name] = {"min_steps": chosen, "curve": rows, "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: SmallCNN converged by {chosen} steps; " + ", ".join(
            f"{r['steps']}: {r['bal_acc']:.3f}" for r in rows), flush=True)
    out["min_steps"] = max(v["min_steps"] for v in out["sets"].values())
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"min_steps {out['min_steps']} -> {path}")
    return out


if __name__ == "__main__":
    main()
