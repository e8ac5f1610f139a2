"""What limits MAE learning on the phantom? One variant per invocation; prints and appends JSON lines.

A development experiment behind book/checkpoints.md ("What limited learning"), kept so it can be re-run. The results
in ``what_limits_learning.jsonl`` (summarised in ``book/tables/what-limits.csv``) were produced, one seed per cell,
with the package at commit 6d3bbf8 plus the phantom's ``speckle`` parameter, 1 thread, e.g.::

    python tools/experiments/what_limits_learning.py --name A-s1.0-pool3300 --speckle 1.0
    python tools/experiments/what_limits_learning.py --name B-s0.3-pool3300 --speckle 0.3
    python tools/experiments/what_limits_learning.py --name C-s0.3-pool30000 --speckle 0.3 --pool 30000 \
        --snap 0.143 0.43 1.0
    python tools/experiments/what_limits_learning.py --name cnn-s0.3 --speckle 0.3 --cnn 1

This copy is ported to the current API (masks now come from per-sample seeds, so re-runs give other numbers of the
same kind). About 15 minutes per MAE variant on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from medmae_nb.data import hflip, label_budget, make_phantom_splits, train_transform
from medmae_nb.inference import extract_features, predict_proba
from medmae_nb.models.cnn import small_cnn
from medmae_nb.models.mae import mae_vit_micro, mae_vit_tiny
from medmae_nb.train import finetune, fit_supervised, pretrain


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--speckle", type=float, default=1.0)
    ap.add_argument("--pool", type=int, default=3300)
    ap.add_argument("--samples", type=int, default=200_000, help="images seen in pre-training")
    ap.add_argument("--model", default="micro", choices=["micro", "tiny"])
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--normpix", type=int, default=1)
    ap.add_argument("--snap", type=float, nargs="+", default=[0.125, 0.33, 1.0], help="snapshots, fractions of the run")
    ap.add_argument("--cnn", type=int, default=0, help="1: only the SmallCNN baseline at 100 labels/class")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--out", default="what_limits_learning.jsonl")
    a = ap.parse_args()

    def log(**kw) -> None:
        line = json.dumps({"name": a.name, **kw})
        print(line, flush=True)
        with open(a.out, "a") as f:
            f.write(line + "\n")

    data = make_phantom_splits(a.pool, 300, 600, image_size=64, seed=0, speckle=a.speckle, cache=True)
    pool, test = data.get_split("train"), data.get_split("test")
    lab = pool.subset(np.arange(min(3300, len(pool))))  # the same labelled images whatever the pool size
    idx100 = label_budget(lab.labels, 100, seed=0)

    def probe(vit) -> dict[str, float]:
        ftr, fte = extract_features(vit, lab), extract_features(vit, test)
        res = {}
        for nm, idx in (("lr100", idx100), ("lrall", np.arange(len(lab)))):
            sc = StandardScaler().fit(ftr[idx])
            clf = LogisticRegression(C=0.1, max_iter=3000).fit(sc.transform(ftr[idx]), lab.labels[idx])
            res[nm] = round(balanced_accuracy_score(test.labels, clf.predict(sc.transform(fte))), 4)
        return res

    def ft(make, recipe: str) -> float:
        torch.manual_seed(0)
        m, sub = make(), lab.subset(idx100)
        if recipe == "first edition":  # CLS token, lr 3e-4, layer decay 0.75, flips
            m, _ = finetune(m, sub, epochs=22, batch_size=32, lr=3e-4, layer_decay=0.75, weight_decay=0.05,
                            warmup_epochs=1, seed=0, augment=hflip, progress=False)
        else:  # average pooling, lr 1e-3, layer decay 0.65, light crops, label smoothing (drop-path in make)
            m, _ = finetune(m, sub, epochs=60, batch_size=32, lr=1e-3, layer_decay=0.65, weight_decay=0.05,
                            warmup_epochs=5, label_smoothing=0.1, seed=0, augment=train_transform(64, "light"),
                            progress=False)
        y, p = predict_proba(m, test)
        return round(balanced_accuracy_score(y, p.argmax(1)), 4)

    if a.cnn:
        t0, vals = time.time(), []
        for s in (0, 1):
            torch.manual_seed(s)
            m, _ = fit_supervised(small_cnn(1, 3), lab.subset(idx100), epochs=22, batch_size=32, seed=s,
                                  augment=hflip, progress=False, warmup_epochs=1)
            y, p = predict_proba(m, test)
            vals.append(balanced_accuracy_score(y, p.argmax(1)))
        log(kind="cnn100", bal=round(float(np.mean(vals)), 4), per=[round(v, 4) for v in vals],
            s=round(time.time() - t0))
        sys.exit()

    factory = {"micro": mae_vit_micro, "tiny": mae_vit_tiny}[a.model]
    epochs = max(1, round(a.samples / len(pool)))
    snaps = sorted({max(1, round(f * epochs)) for f in a.snap})
    torch.manual_seed(0)
    model = factory(img_size=64, patch_size=a.patch, in_chans=1, norm_pix_loss=bool(a.normpix))
    t0, state = time.time(), {}

    def keep(ep, hist) -> None:
        if ep in snaps:
            state[ep] = ({k: v.clone() for k, v in model.state_dict().items()}, hist.last["loss"], time.time() - t0)

    model, _ = pretrain(model, pool, epochs=epochs, batch_size=64, lr=a.lr, seed=0, views=hflip, progress=False,
                        callback=keep)
    for ep in snaps:
        sd, loss, secs = state[ep]
        model.load_state_dict(sd)
        log(kind="snap", epoch=ep, epochs=epochs, samples=ep * len(pool), loss=round(loss, 4), secs=round(secs),
            probe_avg=probe(model.to_timm(num_classes=0, global_pool="avg")),
            probe_tok=probe(model.to_timm(num_classes=0, global_pool="token")))
    t1 = time.time()
    first = ft(lambda: model.to_timm(num_classes=3, global_pool="token"), "first edition")
    new = ft(lambda: model.to_timm(num_classes=3, global_pool="avg", drop_path_rate=0.1), "new")
    log(kind="ft100", R1_token=[first, [first]], R2_avg=[new, [new]], secs=round(time.time() - t1))


if __name__ == "__main__":
    main()
