"""Development experiment for chapter 04: does a longer fine-tune change SparK against MoCo v2?

Chapter 04's `cpu` profile fine-tunes for one pass over the labels (at least 20 steps), which may favour the
contrastive encoder: masked-modelling features are known to need more fine-tuning. This loads the two committed
checkpoints and fine-tunes each, on the phantom at 1 % and 10 % of the chapter's pool, with the chapter's schedule
and with 10 passes (at least 100 steps), seeds 0-2, printing balanced accuracies and appending one JSON line to
``ch04_longer_finetune.jsonl`` beside this file. Not part of the book.

    python tools/experiments/ch04_longer_finetune.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medmae_nb.budgets import FineTune, budget_sweep
from medmae_nb.data import make_phantom_splits
from medmae_nb.recipes import pretrained


def main() -> None:
    torch.set_num_threads(1)
    data = make_phantom_splits(3300, 0, 600, 64, seed=0, cache=True)
    pool, test = data.get_split("train"), data.get_split("test")
    methods = {name: pretrained(recipe, device="cpu", verbose=False)[0]
               for name, recipe in (("SparK", "spark-resnet18-micro"), ("MoCo v2", "moco-resnet18-micro"))}
    results = {}
    for schedule, (epochs, min_steps) in {"chapter (1 pass, >= 20 steps)": (1, 20),
                                          "10 passes, >= 100 steps": (10, 100)}.items():
        for name, method in methods.items():
            learner = FineTune(method.to_timm(num_classes=3), epochs=epochs, min_steps=min_steps, lr=1e-3,
                               layer_decay=None, label_smoothing=0.1, device="cpu", name=name)
            sweep = budget_sweep(learner, pool, test, [0.01, 0.1], seeds=(0, 1, 2), unit="fraction", n_boot=200)
            per_seed = sweep.per_seed["bal_acc"]
            results[f"{schedule} | {name}"] = {f"{100 * f:g} %": [round(float(v), 3) for v in per_seed[i]]
                                               for i, f in enumerate(sweep.budgets)}
            print(schedule, name, results[f"{schedule} | {name}"], flush=True)
    with open(Path(__file__).with_name("ch04_longer_finetune.jsonl"), "a") as f:
        f.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
