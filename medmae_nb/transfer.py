"""ImageNet initialisation where it can be had, and an honestly named substitute where it cannot.

Chapter 03 fine-tunes an ImageNet-initialised ConvNeXt beside a masked-pre-trained one. ImageNet weights come from
the hub (Colab, a workstation) or a local file (:func:`medmae_nb.models.backbones.download_weights` once, on a
machine with internet). Where neither exists — this book's build machine, an offline cluster — the chapter must not
pass a random initialisation off as ImageNet. :func:`imagenet_or_substitute` then returns a *substitute*: the same
architecture trained with labels on another public dataset (PneumoniaMNIST chest X-rays), committed beside the
book's checkpoints with a card (data, metrics, code commit), and named as such in ``model.init_source``.

A substitute is a weaker stand-in than ImageNet (4,708 small grey images against 1.28 million colour photographs);
it answers "does a supervised initialisation from *another* labelled dataset help?", not "does ImageNet help?".

References:
    Raghu et al., "Transfusion: Understanding Transfer Learning for Medical Imaging", NeurIPS 2019.
    Yang et al., "MedMNIST v2", Scientific Data 10:41, 2023 (PneumoniaMNIST).
"""

from __future__ import annotations

import datetime
import json
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .cache import atomic_write, dataset_fingerprint, save_json
from .data.medmnist import load_medmnist
from .data.transforms import hflip
from .evaluate import accuracy, balanced_accuracy
from .inference import predict_proba
from .models.backbones import WeightsUnavailable, create_encoder, file_sha256
from .train.checkpoint import CheckpointError
from .train.supervised import finetune

__all__ = ["SUBSTITUTES", "SupervisedInit", "imagenet_or_substitute", "load_substitute", "train_substitute"]

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class SupervisedInit:
    """A supervised initialisation on another labelled dataset: what it is and how it is trained.

    Attributes:
        name: file stem of the weights and card.
        description: one line for cards and chapters.
        encoder: timm / book encoder name.
        dataset: the MedMNIST dataset it is trained on (official train split; val selects the epoch).
        image_size: side of the images it is trained on.
        epochs: passes over the train split.
        batch_size: images per step.
        lr: peak learning rate (AdamW, cosine).
        seed: the run's seed.
    """

    name: str
    description: str
    encoder: str
    dataset: str
    image_size: int
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def config(self) -> dict[str, Any]:
        return asdict(self)


SUBSTITUTES: dict[str, SupervisedInit] = {
    s.name: s
    for s in [
        SupervisedInit("convnext-atto-pneumoniamnist", "ConvNeXt-Atto trained with labels on PneumoniaMNIST (4,708 "
                       "chest X-rays, 28 px enlarged to 64, normal vs pneumonia) — a substitute for ImageNet weights",
                       encoder="convnext_atto", dataset="pneumoniamnist", image_size=64, epochs=8),
    ]
}


def _spec(name: str) -> SupervisedInit:
    if name not in SUBSTITUTES:
        raise KeyError(f"no substitute initialisation named {name!r}; known: {', '.join(SUBSTITUTES)}")
    return SUBSTITUTES[name]


def weights_file(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder or CHECKPOINTS) / f"{name}.safetensors"


def card_file(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder or CHECKPOINTS) / f"{name}.json"


def train_substitute(name: str, root: str | Path | None = None, out: str | Path | None = None,
                     num_threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Trains a substitute initialisation and writes its weights (timm names, float16, no classifier) and card.

    Needs the dataset on disk (``root`` or ``$MEDMAE_DATA``; ``load_medmnist(..., download=True)`` fetches it on a
    machine with internet). About 5 minutes on 2 CPU cores.

    Returns:
        The card.
    """
    from .pretrained.store import code_commit as _commit  # import late to keep this module light

    spec = _spec(name)
    commit = _commit()
    ds = load_medmnist(spec.dataset, root, image_size=spec.image_size, channels=1)
    train, val, test = (ds.get_split(s) for s in ("train", "val", "test"))
    torch.manual_seed(spec.seed)
    model = create_encoder(spec.encoder, in_chans=1, num_classes=ds.num_classes)
    start = time.perf_counter()
    model, history = finetune(model, train, val, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                              layer_decay=None, augment=hflip, seed=spec.seed, progress=progress,
                              num_threads=num_threads)
    seconds = time.perf_counter() - start
    probs = predict_proba(model, test)[1]
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()
             if not k.startswith("head.fc.") and v.is_floating_point()}
    path = weights_file(name, out)

    def write(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file(state, str(tmp))

    atomic_write(path, write)
    card = {
        "name": name, "description": spec.description, "config": spec.config(),
        "data": {"train": dataset_fingerprint(train), "classes": list(ds.class_names)},
        "test": {"accuracy": round(float(accuracy(test.labels, probs)), 4),
                 "bal_acc": round(float(balanced_accuracy(test.labels, probs)), 4), "n": len(test)},
        "val_bal_acc_by_epoch": [round(float(v), 4) for v in history.column("val_bal_acc")],
        "best_epoch": getattr(history, "best_epoch", None),
        "wall_time_s": round(seconds, 1),
        "device": str(next(model.parameters()).device), "threads": torch.get_num_threads(),
        "code_commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
        "stored_as": "float16 timm state_dict without the classifier",
        "versions": {"medmae_nb": __version__, "torch": torch.__version__.split("+")[0]},
    }
    save_json(card_file(name, out), card)
    return card


def load_substitute(name: str, in_chans: int = 1, num_classes: int = 0, folder: str | Path | None = None,
                    **kwargs: Any) -> nn.Module:
    """The committed substitute ``name`` as a timm model (new classifier of ``num_classes``), checked against its card.

    Raises:
        FileNotFoundError: weights or card missing (``python -m medmae_nb.transfer NAME`` makes them).
        CheckpointError: the file's sha256 or the recipe differs from the card.
    """
    spec = _spec(name)
    path, card_path = weights_file(name, folder), card_file(name, folder)
    for p in (path, card_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; make it with `python -m medmae_nb.transfer {name}` "
                                    f"(needs {spec.dataset} under $MEDMAE_DATA)")
    card = json.loads(card_path.read_text())
    digest = file_sha256(path)
    if card.get("sha256") != digest:
        raise CheckpointError(f"{path} has sha256 {digest[:12]}…, its card says {str(card.get('sha256'))[:12]}…; "
                              f"retrain with `python -m medmae_nb.transfer {name}`")
    if card.get("config") != spec.config():
        raise CheckpointError(f"the card of {name} describes {card.get('config')}, the code {spec.config()}; "
                              f"retrain with `python -m medmae_nb.transfer {name}`")
    model = create_encoder(spec.encoder, in_chans=in_chans, num_classes=num_classes, pretrained=path, **kwargs)
    model.init_source = f"substitute:{name} (supervised on {spec.dataset}) sha256:{digest[:12]}"
    return model


def imagenet_or_substitute(encoder: str, in_chans: int = 1, num_classes: int = 0, weights: str | Path | None = None,
                           substitute: str | None = None, verbose: bool = True, fetch: bool = True,
                           **kwargs: Any) -> nn.Module:
    """ImageNet weights from ``weights`` (a file) or the hub; if neither can be had, the named ``substitute``.

    ``model.init_source`` says which one it is (``file:…``, ``hub:…``, ``hub-cache:…`` or ``substitute:…``), and with
    ``verbose`` the reason for a substitute is printed. Without a substitute the :class:`WeightsUnavailable` error
    propagates: there is no silent random initialisation. With ``fetch=False`` the hub is never tried: no file, no
    ImageNet weights (fetch them first with :func:`medmae_nb.models.download_weights`, checksummed, and pass the file).
    """
    if weights is not None:
        model = create_encoder(encoder, in_chans=in_chans, num_classes=num_classes, pretrained=weights, **kwargs)
    elif not fetch:
        reason = (f"no weights file was given and fetching is off. On a machine with internet, "
                  f"medmae_nb.models.download_weights({encoder!r}, 'weights/') fetches them once, checksummed; "
                  f"pass that file")
        if substitute is None:
            raise WeightsUnavailable(f"ImageNet weights for {encoder}: {reason}")
        model = load_substitute(substitute, in_chans=in_chans, num_classes=num_classes, **kwargs)
        if verbose:
            print(textwrap.fill(f"ImageNet weights for {encoder}: not fetched — {reason}.", 100))
            print(f"Using the substitute {substitute} instead ({model.init_source}) — not ImageNet.")
        return model
    else:
        try:
            model = create_encoder(encoder, in_chans=in_chans, num_classes=num_classes, pretrained=True, **kwargs)
        except WeightsUnavailable as err:
            if substitute is None:
                raise
            model = load_substitute(substitute, in_chans=in_chans, num_classes=num_classes, **kwargs)
            if verbose:
                reason = textwrap.fill(str(err).splitlines()[0], 100, subsequent_indent="  ")
                print(f"ImageNet weights for {encoder} are unavailable here:\n  {reason}\nUsing the substitute "
                      f"{substitute} instead ({model.init_source}) — not ImageNet.")
            return model
    if verbose:
        print(f"{encoder}: ImageNet initialisation from {model.init_source}")
    return model


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medmae_nb.transfer", description="Train a substitute "
                                     "initialisation (needs its dataset under --root or $MEDMAE_DATA).")
    parser.add_argument("name", choices=sorted(SUBSTITUTES))
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    card = train_substitute(args.name, args.root, args.out, num_threads=args.threads, progress=True)
    print(f"{args.name}: test accuracy {card['test']['accuracy']:.3f}, balanced {card['test']['bal_acc']:.3f}, "
          f"{card['wall_time_s']:.0f} s; wrote {card['file']} ({card['bytes'] / 2**20:.1f} MiB) and its card")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

