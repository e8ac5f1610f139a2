"""Train a recipe (with resume) and load what it made: :func:`train_recipe`, :func:`load_pretrained`,
:func:`pretrained`.

The data flow is one way: this module uses :mod:`medmae_nb.train` (the loop) and :mod:`.store` (files); neither
imports it.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..cache import cache_dir, config_key, dataset_fingerprint, image_probe
from ..profiles import get_device
from ..train.checkpoint import CheckpointError, config_diff
from ..train.history import History
from ..train.pretrain import pretrain, pretrain_config
from .recipes import RECIPES, Recipe, SpecData, get_recipe
from .store import CHECKPOINTS, card_path, code_commit, pack, read_card, read_state, stored_keys, write_checkpoint

__all__ = ["check_pool_against", "default_run_dir", "load_pretrained", "load_seed", "pretrained", "seed_name",
           "seed_provenance", "train_recipe"]

_BETAS = (0.9, 0.95)  # AdamW betas of every recipe (train.pretrain's default)


def _resolve(recipe: str | Recipe, scale: str) -> Recipe:
    return get_recipe(recipe, scale) if isinstance(recipe, str) else recipe.at(scale)


def default_run_dir(name: str | Recipe, scale: str = "book") -> Path:
    """Where a recipe's resumable run and snapshots live: keyed by the recipe's config, so a changed recipe never
    resumes from, or mixes snapshots with, an older one."""
    recipe = _resolve(name, scale)
    return cache_dir() / "runs" / f"{recipe.name}-{scale}-{config_key(recipe.config())[:8]}"


def train_recipe(name: str | Recipe, scale: str = "book", out: str | Path | None = None,
                 run_dir: str | Path | None = None, progress: bool = True, num_threads: int | None = None,
                 num_workers: int = 0, compile: bool = False) -> dict[str, Any]:
    """Trains a recipe (resuming from ``run_dir`` when a run was interrupted) and writes ``NAME.pt`` and its card.

    Works unchanged under ``torchrun`` (rank 0 writes). The weights are stored as the recipe says (float16, or int8
    weight matrices), the card as JSON beside them (with the pool's content fingerprint, never a path).

    Args:
        name: the recipe, by name or as a :class:`Recipe` (e.g. ``get_recipe("mae-micro-p8").on("medmnist:…")``).
        scale: ``"book"`` or ``"smoke"``.
        out: folder for the checkpoint and card (default: the package's ``checkpoints/``).
        run_dir: folder for ``last.pt`` (resume) and encoder snapshots (default: the cache's ``runs/NAME-SCALE``).
        progress: show a progress bar.
        num_threads: torch CPU threads.
        num_workers: DataLoader workers.
        compile: ``torch.compile`` the method.

    Returns:
        The card.
    """
    recipe = _resolve(name, scale)
    commit = code_commit()  # the code that trains, not whatever is checked out when the run ends
    out = Path(out) if out is not None else CHECKPOINTS
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe, scale)
    pool = recipe.data.load()
    method = recipe.method()
    views = recipe.view_maker()

    def snapshot(epoch: int, history: History) -> None:
        if epoch in recipe.snapshots:
            from ..cache import save_torch

            save_torch(run_dir / "snapshots" / f"epoch{epoch:04d}.pt", pack(method))

    method, history = pretrain(method, pool, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                               min_lr=recipe.min_lr, weight_decay=recipe.weight_decay, betas=_BETAS,
                               warmup_epochs=recipe.warmup_epochs, clip_grad=recipe.clip_grad, seed=recipe.seed,
                               views=views, checkpoint_dir=run_dir, progress=progress,
                               num_threads=num_threads, num_workers=num_workers, compile=compile, callback=snapshot)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
        return {}
    last = history.last
    card = {
        "recipe": recipe.name,
        "scale": scale,
        "description": recipe.description,
        "method": recipe.method_name,
        "config": recipe.config(),
        "pretrain_config": pretrain_config(method, pool, epochs=recipe.epochs, batch_size=recipe.batch_size,
                                           lr=recipe.lr, min_lr=recipe.min_lr, weight_decay=recipe.weight_decay,
                                           betas=_BETAS, warmup_epochs=recipe.warmup_epochs,
                                           clip_grad=recipe.clip_grad, seed=recipe.seed, views=views),
        "data": dataset_fingerprint(pool),
        "data_probe": image_probe(pool.images),  # survives the float noise a sha256 of the pixels does not
        "channels": int(pool.channels),
        "code_commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run": {**history.info, "epochs": len(history), "resumed": history.resumed_from is not None},
        "wall_time_s": round(history.info.get("seconds", 0.0), 1),
        "final": {k: v for k, v in last.items() if k not in ("epoch", "step", "lr", "seconds", "img_per_s")},
        "loss_by_epoch": [round(v, 5) for v in history.column("loss")],
        # the method's own logs per epoch (e.g. MIRAM's loss at each scale), for the chapters' curves
        "logs_by_epoch": {k: [round(float(v), 5) for v in history.column(k)] for k in last
                          if k not in ("epoch", "step", "lr", "seconds", "img_per_s", "loss")},
        "versions": {"medmae_nb": __version__, "torch": torch.__version__.split("+")[0]},
    }
    return write_checkpoint(method, card, recipe.name, out, recipe.stored, recipe.weights)


def check_pool_against(name: str, test: Any, *, allow: bool = False, card: dict[str, Any] | None = None,
                       scale: str = "book") -> Any:
    """Refuses a checkpoint whose pre-training images overlap ``test`` by content (the same image at another size,
    crop or channel count: :func:`medmae_nb.data.leaks.check_no_leak`), or warns loudly with ``allow``.

    A phantom pool never overlaps real data nor the phantom's test stream (drawn from other seeds), so only a
    real-data pool (:class:`SpecData`) is checked: it is loaded again from its spec and must be the content on the
    card (its digest), so the check runs on exactly the images the weights saw.

    Raises:
        DataLeakError: an overlap, unless ``allow``.
        DataError: the pool cannot be loaded here (set ``$MEDMAE_DATA``), or it is not the card's content.
    """
    recipe = get_recipe(name, scale)
    if not isinstance(recipe.data, SpecData):
        return None
    from ..data.base import DataError
    from ..data.leaks import check_no_leak

    try:
        pool = recipe.data.load()
    except (DataError, OSError) as err:
        raise DataError(f"cannot check {name} for a leak into the test set: its pre-training pool "
                        f"({recipe.data.spec}, split {recipe.data.split!r}) is not available here ({err}); set "
                        "MEDMAE_DATA to the data folder") from None
    want = (card or {}).get("config", {}).get("data", {}).get("content")
    have = recipe.data.config()["content"]
    if want is not None and want != have:
        raise DataError(f"the pool of {name} loaded here (content {have}) is not the one its card records ({want}): "
                        "another copy or version of the data; the leak check cannot vouch for it")
    return check_no_leak(pool, test, allow=allow, what=f"pre-training pool of {name}")


def load_pretrained(name: str | Recipe, folder: str | Path | None = None, scale: str = "book",
                    device: torch.device | str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The committed pre-trained method ``name`` (float32, eval mode) and its card, after checking both.

    A checkpoint that holds one submodule (``Recipe.stored``) loads into a fresh method, whose
    ``restore_from_part(stored)`` then rebuilds the rest from it (MoCo's key encoder, DINO's other encoder). Float16
    and int8 files (``Recipe.weights``) both load.

    Raises:
        KeyError: no such recipe.
        FileNotFoundError: the checkpoint or card is missing (``python -m medmae_nb train NAME`` makes them).
        CheckpointError: the file's sha256 differs from the card's (a truncated or replaced file), the card is no
            JSON, the card was made by a recipe that differs from the one in the code (the message lists the
            differences), or the file is not a checkpoint of this recipe (no torch file, other keys or shapes). The
            message names the file and says what to do.

    Example:
        >>> mae, card = load_pretrained("mae-micro-p8")  # doctest: +SKIP
        >>> card["final"]["loss"]  # doctest: +SKIP
    """
    recipe = _resolve(name, scale)
    name = recipe.name
    retrain = f"retrain with `python -m medmae_nb train {name}` (or restore the committed file with git)"
    card = read_card(name, folder)
    expected = recipe.config()
    if card.get("config") != expected:
        diffs = "; ".join(config_diff(card.get("config", {}), expected)) or "(layout differs)"
        raise CheckpointError(f"the card of {name} was made by a different recipe than the one in the code — {diffs}. "
                              f"Retrain with `python -m medmae_nb train {name}`, or check out the code of commit "
                              f"{card.get('code_commit')}")
    state = read_state(name, card, folder)
    method = recipe.method()
    expected_keys = stored_keys(method, recipe.stored)
    weights = Path(folder or CHECKPOINTS) / f"{name}.pt"
    if set(state) != expected_keys:
        missing, extra = sorted(expected_keys - set(state))[:5], sorted(set(state) - expected_keys)[:5]
        raise CheckpointError(f"{weights} does not hold what recipe {name} stores ({recipe.stored!r}): missing "
                              f"{missing}, unexpected {extra}; {retrain}")
    try:
        method.load_state_dict(state, strict=recipe.stored == "all")
    except RuntimeError as e:  # same names, other shapes: another recipe's weights
        lines = str(e).strip().splitlines()[:3] or ["no message"]
        raise CheckpointError(f"{weights} does not fit recipe {name} (the weights of another recipe?): "
                              f"{' '.join(line.strip() for line in lines)}; {retrain}") from None
    if recipe.stored != "all":
        # rebuild what the file left at its initialisation from the part it holds (MoCo's key encoder, DINO's
        # student or teacher encoder)
        method.restore_from_part(recipe.stored)
    return method.to(device if device is not None else get_device()).eval(), card


def seed_name(name: str, seed: int) -> str:
    """The checkpoint name of recipe ``name`` pre-trained with ``seed``: the recipe's own name for its own seed when
    that checkpoint is committed, else ``NAME-sSEED`` (what ``medmae train NAME --seed SEED --name NAME-sSEED``
    writes) — so a study recipe whose weights are not committed (``recipes.STUDIES``) keeps every seed, its own
    too, in the seed-weights folder."""
    return name if int(seed) == get_recipe(name).seed and card_path(name).exists() else f"{name}-s{int(seed)}"


def seed_weights_dir(folder: str | Path | None = None) -> Path | None:
    """Where the other pre-training seeds' checkpoints are: ``folder``, else ``$MEDMAE_SEED_WEIGHTS``, else the
    repository's ``medmae_nb/checkpoints/seeds`` (committed beside the seed-0 checkpoints, left out of the wheel)
    when it exists; None when there is none."""
    if folder is not None:
        return Path(folder)
    if os.environ.get("MEDMAE_SEED_WEIGHTS"):
        return Path(os.environ["MEDMAE_SEED_WEIGHTS"])
    repo = CHECKPOINTS / "seeds"
    return repo if repo.is_dir() else None


def load_seed(name: str, seed: int, folder: str | Path | None = None,
              device: torch.device | str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Recipe ``name`` pre-trained with another seed — the same recipe otherwise — from ``folder`` (default
    :func:`seed_weights_dir`); its own seed is the committed checkpoint where there is one (see :func:`seed_name`).
    The card must match the recipe with that seed, as :func:`load_pretrained` checks.

    Raises:
        FileNotFoundError: no such checkpoint; the message gives the command that makes it.
    """
    from dataclasses import replace

    recipe = get_recipe(name)
    if seed_name(name, seed) == name:
        return load_pretrained(name, device=device)
    folder = seed_weights_dir(folder)
    other = replace(recipe, name=seed_name(name, seed), seed=int(seed))
    if folder is None or not card_path(other.name, folder).exists():
        raise FileNotFoundError(
            f"no checkpoint {other.name} (recipe {name}, pre-training seed {seed}) in "
            f"{folder or '$MEDMAE_SEED_WEIGHTS (unset) or medmae_nb/checkpoints/seeds'}; make it with `medmae train "
            f"{name} --seed {seed} --name {other.name} --out DIR` and pass that folder (or set MEDMAE_SEED_WEIGHTS)")
    return load_pretrained(other, folder, device=device)


def pretrained(name: str, scale: str = "book", train: bool | str = "auto", device: torch.device | str | None = None,
               verbose: bool = True, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """What a chapter calls: the committed checkpoint when it matches, else the recipe trained here.

    Args:
        name: the recipe.
        scale: its scale.
        train: ``"auto"`` loads the committed checkpoint when the recipe, with ``overrides`` applied, equals the one
            on its card, and trains otherwise; ``True`` always trains (cached by config, so a second call loads);
            ``False`` never trains (an error when no committed checkpoint matches).
        device: where the method is trained and returned (default: ``profiles.get_device()``).
        verbose: print what was loaded or trained.
        **overrides: recipe fields to change (``epochs=…``, ``data=PhantomData(…)``, ``kwargs={…}``).

    Returns:
        ``(method, info)``: the card when loaded, else ``{"trained": True, "history": History, "config": …}``.

    Example:
        >>> mae, card = pretrained("mae-micro-p8")  # doctest: +SKIP
    """
    from dataclasses import replace

    recipe = get_recipe(name, scale)
    changed = replace(recipe, **overrides) if overrides else recipe
    device = torch.device(device) if device is not None else get_device()
    card_file = card_path(name)
    card = json.loads(card_file.read_text()) if card_file.exists() and scale == "book" else None
    if train in ("auto", False) and card is not None and card.get("config") == changed.config():
        method, card = load_pretrained(name, device=device)
        if verbose:
            print(f"loaded the committed checkpoint {name} (trained {card['created']}, {card['wall_time_s']:.0f} s "
                  f"on {card['run'].get('device')}, final loss {card['final'].get('loss', float('nan')):.4f})")
        return method, card
    if train is False:
        raise CheckpointError(f"no committed checkpoint matches recipe {name} with overrides {sorted(overrides)}")
    if verbose:
        why = "its parameters differ from the committed card" if card is not None else "there is no committed card"
        steps = changed.epochs * (changed.data.n // changed.batch_size)
        print(f"training recipe {name} here ({why}): {changed.epochs} epochs, {steps} steps on {device}; on 2 CPU "
              "cores a book-scale recipe takes up to an hour, on a GPU minutes (the cache keeps the result)")
    pool = changed.data.load()
    method, history = pretrain(changed.method(), pool, epochs=changed.epochs, batch_size=changed.batch_size,
                               lr=changed.lr, min_lr=changed.min_lr, weight_decay=changed.weight_decay,
                               warmup_epochs=changed.warmup_epochs, clip_grad=changed.clip_grad, seed=changed.seed,
                               views=changed.view_maker(), cache=True, progress=verbose, device=device)
    if verbose and not history.loaded_from_cache:
        print(f"trained: final loss {history.last['loss']:.4f}")
    return method, {"trained": True, "history": history, "config": changed.config()}


SEED_FIELDS = ("name", "recipe", "seed", "sha256", "final_loss", "wall_time_s", "created", "code_commit", "torch",
               "command")


def seed_provenance(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """One record per other-seed checkpoint in ``folder`` (default :func:`seed_weights_dir`), read from its card:
    name, recipe and seed, the weights' sha256 (what a results row's ``checkpoint`` names), final loss, wall time,
    when and from which code commit it was made, and the command that makes it again. Committed beside the tables
    that evaluated those checkpoints (``medmae_nb/results/pretrain-seeds.json``), since the weights themselves are
    not."""
    folder = seed_weights_dir(folder)
    records = []
    for card in sorted(folder.glob("*-s[0-9]*.json")) if folder is not None else []:
        c = json.loads(card.read_text())
        name = c["recipe"]
        base, _, seed = name.rpartition("-s")
        if base not in RECIPES or not seed.isdigit():
            continue
        records.append({"name": name, "recipe": base, "seed": int(seed), "sha256": c["sha256"],
                        "final_loss": round(float(c["final"]["loss"]), 4), "wall_time_s": round(c["wall_time_s"], 1),
                        "created": c["created"], "code_commit": c["code_commit"],
                        "torch": c.get("run", {}).get("torch", ""),
                        "command": f"medmae train {base} --seed {seed} --name {name} --out DIR"})
    return records
