"""Downstream accuracy against pre-training length: linear probes and a fine-tune of a recipe's encoder snapshots.

``python -m medmae_nb train curve RECIPE`` writes ``NAME.curve.csv`` beside the checkpoint; :func:`curve_figure`
draws it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..cache import atomic_write
from .recipes import RECIPES, get_recipe
from .run import default_run_dir
from .store import CHECKPOINTS

__all__ = ["curve_figure", "learning_curve", "read_curve"]


def learning_curve(name: str, scale: str = "book", out: str | Path | None = None, run_dir: str | Path | None = None,
                   seeds: tuple[int, ...] | list[int] = (0, 1, 2), probe_budgets: tuple[int, ...] = (25, 100, 1000),
                   finetune_budget: int = 100, n_test_per_class: int = 200, n_boot: int = 1000) -> str:
    """Downstream accuracy of a recipe's encoder snapshots (and of its random initialisation, epoch 0): a linear
    probe (logistic regression on frozen features) at several label budgets and a fine-tune at one, each over
    ``seeds``, on the phantom test split. Writes ``NAME.curve.csv`` beside the checkpoint and returns a text table.

    The labelled pool is the chapters' (``make_phantom_splits(3300, …)``'s training split, the first 3,300 images of
    the pre-training pool); the test split comes from its own random stream, so no test image was pre-trained on.
    """
    import csv

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..budgets import FineTune, FrozenFeatures, budget_sweep, supervised
    from ..data.synthetic import make_phantom_splits
    from ..data.transforms import train_transform
    from ..models.cnn import small_cnn

    recipe = get_recipe(name, scale)
    if not recipe.snapshots:
        raise ValueError(f"recipe {name} keeps no encoder snapshots, so it has no learning curve; the recipes with "
                         f"one: {', '.join(n for n, r in RECIPES.items() if r.snapshots)}")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(name, scale)
    d = recipe.data
    n_pool = min(3300, d.n)
    data = make_phantom_splits(n_pool, 0, 3 * n_test_per_class, d.image_size, seed=d.seed, difficulty=d.difficulty,
                               cache=True, speckle=d.speckle)
    pool, test = data.get_split("train"), data.get_split("test")
    snaps = {0: None} | {int(p.stem[5:]): p for p in sorted((run_dir / "snapshots").glob("epoch*.pt"))}
    rows = []
    for epoch, path in snaps.items():
        method = recipe.method()
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            method.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        probe = FrozenFeatures(method.to_timm(num_classes=0, global_pool="avg").eval(),
                               lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)),
                               name="linear probe")
        ft = FineTune(method.to_timm(num_classes=pool.num_classes, global_pool="avg", drop_path_rate=0.1),
                      epochs=30, min_steps=200, lr=1e-3, layer_decay=0.65, label_smoothing=0.1, warmup_epochs=3,
                      augment=train_transform(d.image_size, "light"), name="fine-tune")
        budgets = [b for b in probe_budgets if b <= n_pool // pool.num_classes] or [n_pool // pool.num_classes]
        for learner, bs in ((probe, budgets), (ft, [finetune_budget])):
            sweep = budget_sweep(learner, pool, test, bs, seeds=seeds, n_boot=n_boot, cache=True)
            for i, b in enumerate(bs):
                m = sweep.metrics["bal_acc"][i]
                rows.append({"recipe": name, "scale": scale, "epoch": epoch, "learner": learner.name,
                             "labels_per_class": b, "bal_acc": round(m.value, 4), "low": round(m.low, 4),
                             "high": round(m.high, 4), "seeds": len(seeds),
                             "collapsed": int(sweep.collapsed[i].sum())})
    # the supervised yardstick of chapter 00 on the same labels: where a pre-trained ViT has to get to
    cnn = supervised(lambda: small_cnn(pool.channels, pool.num_classes), epochs=12, min_steps=150, batch_size=64,
                     name="SmallCNN from scratch")
    cnn_budgets = sorted({*budgets, finetune_budget})
    sweep = budget_sweep(cnn, pool, test, cnn_budgets, seeds=seeds, n_boot=n_boot, cache=True)  # shared by recipes
    for i, b in enumerate(cnn_budgets):
        m = sweep.metrics["bal_acc"][i]
        rows.append({"recipe": name, "scale": scale, "epoch": "", "learner": cnn.name, "labels_per_class": b,
                     "bal_acc": round(m.value, 4), "low": round(m.low, 4), "high": round(m.high, 4),
                     "seeds": len(seeds), "collapsed": int(sweep.collapsed[i].sum())})
    path = Path(out or CHECKPOINTS) / f"{name}.curve.csv"

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
    head = f"{'epoch':>5}  {'learner':<22} {'labels/class':>12}  {'bal_acc [95% CI]':<22} {'collapsed':>9}"
    lines = [head] + [f"{r['epoch']:>5}  {r['learner']:<22} {r['labels_per_class']:>12}  "
                      f"{r['bal_acc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]   {r['collapsed']:>5}/{r['seeds']}"
                      for r in rows]
    return "\n".join(lines)


def read_curve(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``NAME.curve.csv`` written by :func:`learning_curve`, numbers as numbers."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["epoch"] = int(r["epoch"]) if r["epoch"] else None
        for k in ("labels_per_class", "seeds", "collapsed"):
            r[k] = int(r[k])
        for k in ("bal_acc", "low", "high"):
            r[k] = float(r[k])
    return rows


def curve_figure(paths: list[str | Path]):
    """Balanced accuracy against pre-training length, one panel per recipe: linear probes and a fine-tune of each
    snapshot (epoch 0 = random initialisation) with 95 % intervals over seeds and test images, and the SmallCNN from
    scratch on the same labels as dashed lines."""
    import matplotlib.pyplot as plt

    from ..viz import PALETTE

    fig, axes = plt.subplots(1, len(paths), figsize=(5.2 * len(paths), 3.8), squeeze=False, sharey=True)
    for ax, path in zip(axes[0], paths):
        rows = read_curve(path)
        series = sorted({(r["learner"], r["labels_per_class"]) for r in rows if r["epoch"] is not None})
        colours = {}
        for learner, b in series:
            pts = sorted((r["epoch"], r) for r in rows if r["learner"] == learner and r["labels_per_class"] == b
                         and r["epoch"] is not None)
            x = [max(e, 0.5) for e, _ in pts]  # epoch 0 drawn at 0.5 on the log axis
            colours[b] = colours.get(b, PALETTE[len(colours) % len(PALETTE)])
            style = "-" if learner == "fine-tune" else "--" if learner == "linear probe" else ":"
            line, = ax.plot(x, [r["bal_acc"] for _, r in pts], style, marker="o", ms=3, color=colours[b],
                            label=f"{learner}, {b}/class")
            ax.fill_between(x, [r["low"] for _, r in pts], [r["high"] for _, r in pts], color=line.get_color(),
                            alpha=0.12, lw=0)
        for r in rows:
            if r["epoch"] is None and r["labels_per_class"] in colours:
                ax.axhline(r["bal_acc"], color=colours[r["labels_per_class"]], ls=":", lw=1.2,
                           label=f"{r['learner']}, {r['labels_per_class']}/class")
        ax.axhline(1 / 3, color="gray", lw=0.8)
        ax.set_xscale("log")
        ticks = sorted({max(r["epoch"], 0.5) for r in rows if r["epoch"] is not None})
        ax.set_xticks(ticks, ["0" if t == 0.5 else str(int(t)) for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="pre-training epochs (0 = random initialisation)", title=rows[0]["recipe"], ylim=(0.3, 1.0))
    axes[0, 0].set_ylabel("balanced accuracy, phantom test set")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
