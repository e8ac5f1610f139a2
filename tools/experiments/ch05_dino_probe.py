"""Development experiment for chapter 05: does DINO on ViT-micro learn anything on the phantom in a short CPU run?

Pre-trains ``dino_vit_micro`` (2 global 64-px crops + ``--n-local`` local 32-px crops) on the 64-px phantom pool for a
few epochs, then scores the teacher's frozen features with DINO's weighted kNN (k = 20, T = 0.07) and logistic
regression on the chapters' labelled pool (3,300) against the phantom test split (600), beside the same encoder at
its random initialisation. Prints the loss and collapse monitors per epoch and the balanced accuracies, and appends
one JSON line to ``ch05_dino_probe.jsonl`` beside this file. Not part of the book: it informs the chapter-05 recipe.

    python tools/experiments/ch05_dino_probe.py --epochs 2 --n-local 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medmae_nb.classical import WeightedKNN
from medmae_nb.data import make_phantom, make_phantom_splits
from medmae_nb.data.views import multi_crop
from medmae_nb.evaluate import METRICS
from medmae_nb.inference import extract_features
from medmae_nb.models import dino_vit_micro
from medmae_nb.train import pretrain


def scores(encoder: torch.nn.Module, train, test) -> dict[str, float]:
    f_train, f_test = extract_features(encoder, train), extract_features(encoder, test)
    out = {}
    for name, clf in (("weighted kNN", WeightedKNN()), ("logistic regression", LogisticRegression(max_iter=3000))):
        clf.fit(f_train, train.labels)
        out[name] = round(float(METRICS["bal_acc"](test.labels, clf.predict_proba(f_test))), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--n-local", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool = make_phantom(args.pool, 64, seed=0, cache=True, speckle=0.3)
    data = make_phantom_splits(3300, 0, 600, 64, seed=0, cache=True)
    train, test = data.get_split("train"), data.get_split("test")
    torch.manual_seed(0)
    method = dino_vit_micro(epochs=args.epochs)
    before = scores(method.to_timm(), train, test)
    print(f"random init: {before}", flush=True)
    start = time.perf_counter()
    method, history = pretrain(method, pool, epochs=args.epochs, batch_size=64, lr=args.lr, clip_grad=3.0,
                               views=multi_crop(64, 32, n_local=args.n_local), progress=False,
                               num_threads=args.threads)
    minutes = (time.perf_counter() - start) / 60
    logs = {k: [round(float(v), 4) for v in history.column(k)] for k in ("loss", "teacher_entropy", "kl")}
    print(f"{minutes:.1f} min; by epoch {logs}", flush=True)
    after = scores(method.to_timm(), train, test)
    print(f"after {args.epochs} epochs: {after}", flush=True)
    line = {"epochs": args.epochs, "pool": args.pool, "n_local": args.n_local, "lr": args.lr,
            "threads": args.threads, "minutes": round(minutes, 1), "by_epoch": logs,
            "bal_acc_random_init": before, "bal_acc_teacher": after, "log_K": round(float(np.log(2048)), 3)}
    with open(Path(__file__).with_name("ch05_dino_probe.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
