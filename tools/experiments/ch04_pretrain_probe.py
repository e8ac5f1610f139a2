"""Development experiment for chapter 04: do SparK and MoCo v2 on a ResNet-18 learn anything in a short CPU run?

Pre-trains one method on the 64-px phantom pool for a few epochs (1 thread, so two can run side by side), then
fine-tunes the encoder and a scratch ResNet-18 on 100 labels per class (seeds 0 and 1) and prints the pre-training
loss per epoch and the balanced accuracies, appending one JSON line to ``ch04_pretrain_probe.jsonl`` beside this
file. Not part of the book: it informs the chapter-04 recipes.

    python tools/experiments/ch04_pretrain_probe.py spark --epochs 4
    python tools/experiments/ch04_pretrain_probe.py moco --epochs 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from medmae_nb.budgets import FineTune, budget_sweep
from medmae_nb.data import make_phantom, make_phantom_splits, train_transform, two_views
from medmae_nb.data.transforms import hflip
from medmae_nb.models import create_encoder, moco_v2_resnet18, spark_resnet18
from medmae_nb.train import pretrain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("method", choices=["spark", "moco"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pool = make_phantom(args.pool, 64, seed=0, cache=True, speckle=0.3)
    torch.manual_seed(0)
    if args.method == "spark":
        method, views = spark_resnet18(img_size=64), hflip
    else:
        method, views = moco_v2_resnet18(queue_size=4096, momentum=0.99), two_views(64)
    start = time.perf_counter()
    method, history = pretrain(method, pool, epochs=args.epochs, batch_size=64, lr=args.lr, views=views,
                               progress=False, num_threads=1)
    seconds = time.perf_counter() - start
    losses = [round(v, 4) for v in history.column("loss")]
    print(f"{args.method}: {seconds / 60:.1f} min, loss by epoch {losses}", flush=True)
    data = make_phantom_splits(3300, 0, 600, 64, seed=0, cache=True)
    train, test = data.get_split("train"), data.get_split("test")
    aug = train_transform(64, "light")
    results = {}
    for name, model in (("pre-trained", method.to_timm(num_classes=3)),
                        ("scratch", lambda: create_encoder("resnet18", 1, num_classes=3))):
        learner = FineTune(model, epochs=6, min_steps=40, lr=1e-3, layer_decay=None, label_smoothing=0.1,
                           warmup_epochs=1, augment=aug, name=name)
        sweep = budget_sweep(learner, train, test, [100], seeds=(0, 1), n_boot=100)
        results[name] = [round(float(v), 3) for v in sweep.per_seed["bal_acc"][0]]
        print(f"  {name}: balanced accuracy at 100/class, seeds 0 and 1: {results[name]}", flush=True)
    line = {"method": args.method, "epochs": args.epochs, "pool": args.pool, "lr": args.lr,
            "minutes": round(seconds / 60, 1), "loss_by_epoch": losses, "bal_acc_100": results,
            "logs_last": {k: round(float(v), 4) for k, v in history.last.items() if isinstance(v, (int, float))}}
    with open(Path(__file__).with_name("ch04_pretrain_probe.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
