"""The command line: ``medmae SUBCOMMAND …`` (also ``python -m medmae_nb SUBCOMMAND …``).

Subcommands call down into the package; nothing heavy (torch, timm, scikit-learn) is imported until a subcommand runs,
so ``--help`` answers at once.

Examples::

    medmae methods                                   # the registered self-supervised methods
    medmae train list                                # the recipes, and which have a committed checkpoint
    medmae train mae-micro-p8                        # train one (resumes an interrupted run), write .pt + card
    medmae train mae-micro-p8 --data medmnist:pneumoniamnist --epochs 20 --out runs/
                                                     # the same method and settings on another pool
    medmae train dino-vit-micro --data folder:my_scans/ --channels 3
    medmae compare --data medmnist:breastmnist --profile smoke
                                                     # every method side by side (chapter 06's protocol)
    medmae bench mae --patch-sizes 16 8              # speed benchmarks
    torchrun --nproc_per_node=4 -m medmae_nb train mae-micro-p8

The older spellings ``python -m medmae_nb.train RECIPE`` and ``python -m medmae_nb.bench …`` still work.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]

_BENCH_HELP = ("speed benchmarks: data, mae, miram, convnext, spark, dino, ddp, texture (and methods, the same as "
               "`medmae compare`); `medmae bench NAME --help` for each")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pre-train a recipe (any registered method) on any dataset spec",
                       description="Pre-train a named recipe and write NAME.pt and its card (resumes an interrupted "
                                   "run). 'list' lists the recipes, 'seeds' prints the provenance of the other "
                                   "pre-training seeds' checkpoints in --out (JSON), 'all' trains every one, "
                                   "'curve RECIPE' measures downstream accuracy of its snapshots.")
    p.add_argument("what", nargs="+", help="'list', 'seeds', 'all', 'curve RECIPE…', or one or more recipe names")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="pre-train on this pool instead of the recipe's: phantom, busi, medmnist:NAME, folder:PATH "
                        "(class folders, split folders — only train/ is read — or unlabelled images)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="image channels of the pool and model (default: the recipe's; 1 converts RGB to gray)")
    p.add_argument("--image-size", type=int, default=None, help="side of the images (default: the recipe's)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the pool (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's; lower it for "
                                                                 "a pool of fewer images)")
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: the recipe's)")
    p.add_argument("--name", default=None, help="name of the checkpoint written (default: RECIPE, or "
                                                "RECIPE-on-DATA with --data)")
    p.add_argument("--root", default=None, help="data root for busi / medmnist specs (default: $MEDMAE_DATA)")
    p.add_argument("--scale", choices=("book", "smoke"), default="book",
                   help="book (default) or smoke (seconds, for tests)")
    p.add_argument("--out", default=None, help="folder for NAME.pt and NAME.json (default: the package's)")
    p.add_argument("--run-dir", default=None, help="folder for last.pt and snapshots (default: in the cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--compile", action="store_true", help="torch.compile the method")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="curve: seeds per point")
    p.add_argument("--figure", default=None, help="curve: also draw every named recipe's curve into this PNG")
    p.add_argument("--no-progress", action="store_true")


def add_compare_args(p: argparse.ArgumentParser) -> None:
    """The options of ``medmae compare`` (and ``python -m medmae_nb.bench methods``), without importing the
    comparison itself: method and protocol names are checked when it runs."""
    p.add_argument("--data", "--dataset", dest="data", default="phantom", metavar="SPEC",
                   help="phantom (default), busi (split shared with BreastMNIST), medmnist:NAME (official splits), "
                        "folder:PATH (class folders, split 70/30; or split folders PATH/{train,val,test}/CLASS, kept "
                        "as split); the old names pneumoniamnist / breastmnist / folder (with --root) still work")
    p.add_argument("--profile", default=None, help="smoke, cpu or gpu (default: $MEDMAE_PROFILE, else cpu, "
                                                   "on a GPU too)")
    p.add_argument("--out", default=None, help="results CSV, created or resumed (default: results/NAME-FINGERPRINT-"
                                               "PROFILE.csv, one file per dataset content and profile)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="default all (see medmae_nb.compare.METHODS)")
    p.add_argument("--protocols", nargs="+", default=None, metavar="PROTOCOL",
                   help="default all: fine-tune, logistic regression, SVM, kNN")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's")
    p.add_argument("--root", default=None, help="real datasets folder (default $MEDMAE_DATA)")
    p.add_argument("--pretrain", action="store_true", help="pre-train every method here instead of loading "
                   "the committed checkpoints (cached)")
    p.add_argument("--metric", default="bal_acc", choices=("bal_acc", "acc", "auc"), help="leaderboard metric")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--pretrain-seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="also evaluate the self-supervised checkpoints pre-trained with these seeds (RECIPE-sSEED in "
                        "--seed-weights; the recipe's own seed is the committed checkpoint) and add pooled rows whose "
                        "intervals hold every pre-training and fine-tune seed")
    p.add_argument("--fractions", type=float, nargs="+", default=None, metavar="F",
                   help="label budgets as shares of the labelled pool, e.g. 0.01 0.05 0.1 0.25 1 (chapter 04's "
                        "sweep), instead of the profile's budgets")
    p.add_argument("--per-class", type=int, nargs="+", default=None, metavar="N",
                   help="label budgets as labels per class, e.g. 1 2 5 10 20 50 100 200 500 1000 (chapter 05's "
                        "sweep; budgets above the largest class are dropped), instead of the profile's budgets")
    p.add_argument("--seed-weights", default=None, metavar="DIR",
                   help="folder of the other seeds' checkpoints (default $MEDMAE_SEED_WEIGHTS)")
    p.add_argument("--allow-leak", action="store_true",
                   help="run a checkpoint whose pre-training (or the transfer model's training) images overlap the "
                        "test set, with a loud warning, instead of refusing it")


def _list_recipes() -> None:
    from .pretrained import RECIPES, card_path

    for name, recipe in RECIPES.items():
        card = card_path(name)
        state = "no checkpoint yet"
        if card.exists():
            c = json.loads(card.read_text())
            state = f"checkpoint of {c['created']}, {c['wall_time_s'] / 60:.0f} min on {c['run'].get('device')}"
        print(f"{name:<32} {recipe.description}\n{'':<32} {recipe.method_name}, {recipe.epochs} epochs over "
              f"{recipe.data.spec}; {state}")


def _train(args: argparse.Namespace) -> int:
    what = args.what
    if what == ["list"]:
        _list_recipes()
        return 0
    if what == ["seeds"]:  # the provenance of the other pre-training seeds' checkpoints in --out, as JSON
        import json

        from .pretrained.run import seed_provenance

        print(json.dumps(seed_provenance(args.out), indent=1))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .pretrained import RECIPES, get_recipe, train_recipe

    if what[0] == "curve":
        from pathlib import Path

        from .pretrained.curves import curve_figure, learning_curve
        from .pretrained.store import CHECKPOINTS

        names = [n for n, r in RECIPES.items() if r.snapshots] if what[1:] == ["all"] else what[1:]
        for name in names:
            print(learning_curve(name, scale=args.scale, out=args.out, run_dir=args.run_dir, seeds=args.seeds))
        if args.figure:
            folder = Path(args.out) if args.out else CHECKPOINTS
            fig = curve_figure([folder / f"{name}.curve.csv" for name in names])
            fig.savefig(args.figure, dpi=150, bbox_inches="tight")
            print(f"wrote {args.figure}")
        return 0
    names = list(RECIPES) if what == ["all"] else what
    recipes = []
    for name in names:
        try:
            recipe = get_recipe(name, args.scale)
        except KeyError as err:
            print(err.args[0], file=sys.stderr)
            return 2
        changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed), ("batch_size", args.batch_size))
                   if v is not None}
        if args.data is not None or args.channels is not None or args.image_size is not None:
            spec = args.data or recipe.data.spec
            kind, _, rest = spec.partition(":")
            label = kind + ("-" + rest.rstrip("/").split("/")[-1].replace("@", "-") if rest else "")
            changes["name"] = args.name or (name if args.data is None else f"{name}-on-{label}")
            recipe = recipe.on(spec, channels=args.channels, image_size=args.image_size, root=args.root, **changes)
        elif changes or args.name:
            from dataclasses import replace

            recipe = replace(recipe, **changes, **({"name": args.name} if args.name else {}))
        if args.out is None and recipe.name not in RECIPES and args.scale == "book":
            print(f"{recipe.name}: not a committed recipe, so it is not written into the package; pass --out DIR",
                  file=sys.stderr)
            return 2
        recipes.append(recipe)
    for recipe in recipes:
        card = train_recipe(recipe, scale="book", out=args.out, run_dir=args.run_dir,
                            progress=not args.no_progress, num_threads=args.threads, num_workers=args.workers,
                            compile=args.compile)
        if card:
            print(f"{recipe.name}: {card['wall_time_s'] / 60:.1f} min on {card['run']['device']} "
                  f"x{card['run']['processes']}, final loss {card['final']['loss']:.4f}, wrote {card['file']} "
                  f"({card['bytes'] / 2**20:.1f} MiB) and its card")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from .models.registry import get_method, list_methods

    for name in list_methods():
        e = get_method(name)
        print(f"{name:<16} {e.family:<24} {e.description}" + (f" ({e.paper})" if e.paper else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs the subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="medmae", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[5:]))
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _train_parser(sub)
    sub.add_parser("methods", help="list the registered self-supervised methods")
    # bench and compare keep their own parsers (in bench.py / compare.py); their options pass through
    sub.add_parser("bench", help=_BENCH_HELP, add_help=False)
    sub.add_parser("compare", help="every method x protocol x label budget x seed on one dataset spec "
                                   "(chapter 06): a resumable results CSV", add_help=False)
    if argv and argv[0] in ("bench", "compare"):
        rest = argv[1:]
        if argv[0] == "bench" and (not rest or rest[0] in ("-h", "--help")):
            print(f"usage: medmae bench NAME [options]\n\n{_BENCH_HELP}")
            return 0 if rest else 2
        if argv[0] == "compare" and rest and rest[0] in ("-h", "--help"):
            p = argparse.ArgumentParser(prog="medmae compare", description="Every method x protocol x label budget "
                                        "x seed on one dataset spec (chapter 06's protocol): a resumable results CSV "
                                        "and the leaderboard.")
            add_compare_args(p)
            p.print_help()
            return 0
        from . import bench

        bench.main(rest if argv[0] == "bench" else ["methods", *rest], prog="medmae " + argv[0])
        return 0
    args = parser.parse_args(argv)
    return {"train": _train, "methods": _methods}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
