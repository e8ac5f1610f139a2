"""Book-scale pre-training from the command line: ``python -m medmae_nb.train RECIPE``.

Examples::

    python -m medmae_nb.train list                    # the recipes, and which have a committed checkpoint
    python -m medmae_nb.train mae-micro-p8            # train one (resumes an interrupted run), write .pt + card
    python -m medmae_nb.train all                     # every recipe (what `make checkpoints` runs)
    python -m medmae_nb.train curve all --figure book/figures/pretraining-curves.png
                                                      # downstream accuracy of the snapshots -> .curve.csv
    torchrun --nproc_per_node=4 -m medmae_nb.train mae-micro-p8   # the same on 4 GPUs (or CPU processes)

See :mod:`medmae_nb.recipes` for what a recipe is and where checkpoints and cards go.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..recipes import RECIPES, SCALES, card_path, get_recipe, train_recipe


def _list() -> None:
    for name, recipe in RECIPES.items():
        card = card_path(name)
        state = "no checkpoint yet"
        if card.exists():
            c = json.loads(card.read_text())
            state = f"checkpoint of {c['created']}, {c['wall_time_s'] / 60:.0f} min on {c['run'].get('device')}"
        print(f"{name:<16} {recipe.description}\n{'':<16} {recipe.epochs} epochs over {recipe.data.n} images; {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medmae_nb.train", description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="+", help="'list', 'all', 'curve RECIPE', or one or more recipe names")
    parser.add_argument("--scale", choices=SCALES, default="book", help="book (default) or smoke (seconds, for tests)")
    parser.add_argument("--out", default=None, help="folder for NAME.pt and NAME.json (default: the package's)")
    parser.add_argument("--run-dir", default=None, help="folder for last.pt and snapshots (default: in the cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--compile", action="store_true", help="torch.compile the method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="curve: seeds per point")
    parser.add_argument("--figure", default=None, help="curve: also draw every named recipe's curve into this PNG")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    what = args.what
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if what == ["list"]:
        _list()
        return 0
    if what[0] == "curve":
        from ..recipes import CHECKPOINTS, curve_figure, learning_curve

        names = [n for n, r in RECIPES.items() if r.snapshots] if what[1:] == ["all"] else what[1:]
        for name in names:
            print(learning_curve(name, scale=args.scale, out=args.out, run_dir=args.run_dir, seeds=args.seeds))
        if args.figure:
            from pathlib import Path

            folder = Path(args.out) if args.out else CHECKPOINTS
            fig = curve_figure([folder / f"{name}.curve.csv" for name in names])
            fig.savefig(args.figure, dpi=150, bbox_inches="tight")
            print(f"wrote {args.figure}")
        return 0
    names = list(RECIPES) if what == ["all"] else what
    for name in names:
        try:
            get_recipe(name, args.scale)
        except KeyError as err:
            print(err.args[0], file=sys.stderr)
            return 2
    for name in names:
        card = train_recipe(name, scale=args.scale, out=args.out, run_dir=args.run_dir,
                            progress=not args.no_progress, num_threads=args.threads, num_workers=args.workers,
                            compile=args.compile)
        if card:
            print(f"{name}: {card['wall_time_s'] / 60:.1f} min on {card['run']['device']} "
                  f"x{card['run']['processes']}, final loss {card['final']['loss']:.4f}, wrote {card['file']} "
                  f"({card['bytes'] / 2**20:.1f} MiB) and its card")
    return 0


if __name__ == "__main__":
    sys.exit(main())
