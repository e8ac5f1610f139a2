"""Development experiment for chapter 05, second round: which small-data DINO settings escape the uniform collapse
that ``ch05_dino_probe.py`` found with the defaults (2048 prototypes, no BN in the head, lr 5e-4)?

Pre-trains ``dino_vit_micro`` on a smaller phantom pool for a few epochs with the settings given as flags, prints the
collapse monitors per epoch, and scores the teacher's frozen features (weighted kNN, logistic regression; balanced
accuracy, chapters' labelled pool of 3,300 against the 600-scene test split). Appends one JSON line to
``ch05_dino_probe2.jsonl`` beside this file. Not part of the book: it informs the chapter-05 recipe.

    python tools/experiments/ch05_dino_probe2.py --pool 4000 --epochs 5 --out-dim 1024 --bn-head --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from medmae_nb.data import make_phantom, make_phantom_splits
from medmae_nb.data.views import multi_crop
from medmae_nb.models import dino_vit_micro
from medmae_nb.train import pretrain

sys.path.insert(0, str(Path(__file__).parent))
from ch05_dino_probe import scores  # noqa: E402  (the first probe's scorer, beside this file)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--pool", type=int, default=4000)
    p.add_argument("--n-local", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out-dim", type=int, default=1024)
    p.add_argument("--bn-head", action="store_true")
    p.add_argument("--freeze", type=float, default=0.0, help="epochs of frozen last layer")
    p.add_argument("--teacher-temp", type=float, default=0.04)
    p.add_argument("--warmup-teacher-temp", type=float, default=None)
    p.add_argument("--warmup-tt-epochs", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.99)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=0.04)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--global-scale", type=float, nargs=2, default=(0.4, 1.0))
    p.add_argument("--local-scale", type=float, nargs=2, default=(0.05, 0.4))
    p.add_argument("--tag", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pool = make_phantom(a.pool, 64, seed=0, cache=True, speckle=0.3)
    data = make_phantom_splits(3300, 0, 600, 64, seed=0, cache=True)
    train, test = data.get_split("train"), data.get_split("test")
    torch.manual_seed(0)
    kw = dict(epochs=a.epochs, out_dim=a.out_dim, use_bn_in_head=a.bn_head, freeze_last_layer=a.freeze,
              teacher_temp=a.teacher_temp, momentum=a.momentum, drop_path_rate=a.drop_path,
              warmup_teacher_temp=a.warmup_teacher_temp if a.warmup_teacher_temp is not None else a.teacher_temp,
              warmup_teacher_temp_epochs=a.warmup_tt_epochs)
    method = dino_vit_micro(**kw)

    def cb(epoch, history):
        r = history.last
        print(f"epoch {epoch}: loss {r['loss']:.3f} H_t {r['teacher_entropy']:.3f} kl {r['kl']:.4f} "
              f"{r['img_per_s']:.0f} img/s", flush=True)

    start = time.perf_counter()
    views = multi_crop(64, 32, n_local=a.n_local, global_scale=tuple(a.global_scale),
                       local_scale=tuple(a.local_scale))
    method, history = pretrain(method, pool, epochs=a.epochs, batch_size=64, lr=a.lr, clip_grad=3.0,
                               weight_decay=a.wd, views=views, progress=False, num_threads=a.threads, callback=cb)
    minutes = (time.perf_counter() - start) / 60
    logs = {k: [round(float(v), 4) for v in history.column(k)] for k in ("loss", "teacher_entropy", "kl")}
    after = scores(method.to_timm(), train, test)
    print(f"{a.tag} {minutes:.1f} min; teacher {after}", flush=True)
    line = {**vars(a), "minutes": round(minutes, 1), "by_epoch": logs, "bal_acc_teacher": after,
            "log_K": round(math.log(a.out_dim), 3)}
    with open(Path(__file__).with_name("ch05_dino_probe2.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
