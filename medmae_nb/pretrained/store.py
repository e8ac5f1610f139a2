"""The one place that writes and reads pre-trained weights and their cards.

A checkpoint is two files in a folder (the package's ``checkpoints/`` for the committed ones): ``NAME.pt``, a state
dict with parameters in float16 or int8 (one float16 scale per output row), and ``NAME.json``, its *card* — the
recipe's config, the data fingerprint, the code commit, device, wall time and losses, and the file's SHA-256.
:func:`write_checkpoint` writes both atomically; :func:`read_checkpoint` reads them back and checks that they belong
together. This module knows nothing about training (:mod:`medmae_nb.pretrained.run` calls it; it never calls run).

The committed checkpoints live inside the package (not at the repository root) so that ``pip install`` from the
repository — what the Colab cell does — carries them too.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cache import save_json, save_torch
from ..train.checkpoint import CheckpointError

__all__ = ["CHECKPOINTS", "WEIGHT_FORMATS", "card_path", "code_commit", "pack", "read_card", "read_state",
           "sha256", "stored_keys", "unpack", "weights_path", "write_checkpoint"]

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
WEIGHT_FORMATS = ("float16", "int8")  # how a checkpoint stores its parameters (Recipe.weights)
_INT8_SCALE = ".__int8_scale__"  # suffix of the key under which an int8 tensor's per-row scales are stored


def weights_path(name: str, folder: str | Path | None = None) -> Path:
    """``FOLDER/NAME.pt`` (default folder: the package's committed checkpoints)."""
    return Path(folder or CHECKPOINTS) / f"{name}.pt"


def card_path(name: str, folder: str | Path | None = None) -> Path:
    """``FOLDER/NAME.json``, the card of ``NAME.pt``."""
    return Path(folder or CHECKPOINTS) / f"{name}.json"


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        return h.hexdigest()


def code_commit() -> str:
    """The git commit of the code that runs (with a flag when the package has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "medmae_nb"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def pack(method: nn.Module, stored: str = "all", weights: str = "float16") -> dict[str, torch.Tensor]:
    """The state dict a checkpoint file holds: ``stored``'s entries (``"all"``: every one), parameters in the
    ``weights`` format (see :class:`~medmae_nb.pretrained.recipes.Recipe`), buffers as they are.

    With ``"int8"`` every floating-point parameter of two or more dimensions (a weight matrix, a conv kernel) is
    stored as int8 under its own name and its float16 per-row scales under ``NAME.__int8_scale__``; the other
    parameters (biases, norms, layer scales: few values, some far from zero-centred) stay float16. A row is the
    first dimension, an output unit, whose weights share a range. :func:`unpack` inverts it.

    Raises:
        ValueError: an unknown ``weights`` or ``stored``, or a weight too large for a float16 scale.
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights={weights!r}; use one of {WEIGHT_FORMATS}")
    params = {name for name, _ in method.named_parameters()}
    keep = stored_keys(method, stored)
    state: dict[str, torch.Tensor] = {}
    for k, v in method.state_dict().items():
        if k not in keep:
            continue
        v = v.detach().cpu()
        if k in params and v.is_floating_point():
            if weights == "int8" and v.ndim >= 2:
                state[k], state[k + _INT8_SCALE] = _int8_rows(k, v)
            else:
                state[k] = v.half()
        else:
            state[k] = v
    return state


def _int8_rows(name: str, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of ``w`` (row = first dimension): ``q = round(w / s)`` with ``s = max|row| / 127``
    rounded *up* to float16, so that no value is clipped and each is off by at most ``s / 2``; an all-zero row gets
    ``s = 1`` (its zeros round-trip either way)."""
    rows = w.float().flatten(1)
    exact = rows.abs().amax(dim=1) / 127
    scale = exact.half()
    scale = torch.where(scale.float() < exact, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    if not torch.isfinite(scale).all():
        raise ValueError(f"{name} holds values beyond what int8 with a float16 scale per row stores (|w| up to "
                         f"{127 * 65504:.3g}, finite); store it with weights='float16'")
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(rows / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def unpack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict as float32 tensors ``load_state_dict`` takes: int8 entries with their
    ``NAME.__int8_scale__`` dequantised (``q * scale`` per row) and their scale entries dropped, float16 (and other
    floating-point) entries in float32, the rest as they are. A scale without its tensor is kept, so that the key
    check of :func:`load_pretrained` reports it.

    Raises:
        ValueError: the file holds no state dict, or an int8 entry does not fit its scales.
    """
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
    odd = sorted(str(k) for k, v in state.items() if not torch.is_tensor(v))
    if odd:
        raise ValueError(f"it holds a dict whose entries {odd[:5]} are not tensors, not a state dict")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith(_INT8_SCALE) and k[:-len(_INT8_SCALE)] in state:
            continue
        scale = state.get(k + _INT8_SCALE)
        if scale is None:
            out[k] = v.float() if v.is_floating_point() else v
            continue
        if v.dtype != torch.int8 or v.ndim < 1 or scale.shape != v.shape[:1] or not scale.is_floating_point():
            raise ValueError(f"entry {k!r} ({v.dtype}, shape {tuple(v.shape)}) does not fit its int8 scales "
                             f"({scale.dtype}, shape {tuple(scale.shape)})")
        out[k] = v.float() * scale.float().reshape(-1, *[1] * (v.ndim - 1))
    return out


def stored_keys(method: nn.Module, stored: str) -> set[str]:
    keys = set(method.state_dict())
    if stored == "all":
        return keys
    part = getattr(method, stored, None)
    if not isinstance(part, nn.Module):
        raise ValueError(f"stored={stored!r}: {type(method).__name__} has no submodule of that name; use 'all' or "
                         f"one of {[n for n, _ in method.named_children()]}")
    return {k for k in keys if k.startswith(stored + ".")}




def write_checkpoint(method: nn.Module, card: dict[str, Any], name: str, folder: str | Path | None = None,
                     stored: str = "all", weights: str = "float16") -> dict[str, Any]:
    """Writes ``NAME.pt`` (``stored``'s entries in the ``weights`` format, see :func:`pack`) and its card, each
    atomically (a crash leaves the old pair or none, never half a file); returns the card with the file's name,
    SHA-256, size and storage format added."""
    path = weights_path(name, folder)
    save_torch(path, pack(method, stored, weights))
    fmt = ("float16" if weights == "float16" else
           "int8-per-row (weight matrices and kernels int8 with a float16 scale per output row, other parameters "
           "float16)")
    card = {**card, "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
            "stored_as": (f"{fmt} state_dict of the whole method (encoder and decoder)" if stored == "all" else
                          f"{fmt} state_dict of the method's {stored!r} only (the rest is re-initialised on load)")}
    save_json(card_path(name, folder), card)
    return card


def read_card(name: str, folder: str | Path | None = None, retrain: str = "") -> dict[str, Any]:
    """The card of checkpoint ``name``, checked to be a JSON object.

    Raises:
        FileNotFoundError: no card or no weights file.
        CheckpointError: the card is not valid JSON, or not an object.
    """
    weights, card_file = weights_path(name, folder), card_path(name, folder)
    retrain = retrain or f"retrain with `python -m medmae_nb train {name}` (or restore the committed file with git)"
    for path in (weights, card_file):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; train it with `python -m medmae_nb train {name}` "
                                    "(about an hour on 2 CPU cores, minutes on a GPU)")
    try:
        card = json.loads(card_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"the card {card_file} is not valid JSON ({err}): it is truncated or damaged; "
                              f"{retrain}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the card {card_file} holds a JSON {type(card).__name__}, not a checkpoint card; "
                              f"{retrain}")
    return card


def read_state(name: str, card: dict[str, Any], folder: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The float32 state dict of checkpoint ``name`` after checking its SHA-256 against ``card``.

    Raises:
        CheckpointError: the hash differs (a damaged or replaced file), or the file is no checkpoint state dict.
    """
    weights = weights_path(name, folder)
    retrain = f"retrain with `python -m medmae_nb train {name}` (or restore the committed file with git)"
    digest = sha256(weights)
    if card.get("sha256") != digest:
        raise CheckpointError(f"{weights} has sha256 {digest[:12]}…, its card says {str(card.get('sha256'))[:12]}…: "
                              f"the file is damaged or not the one the card describes; retrain with "
                              f"`python -m medmae_nb train {name}`")
    try:
        return unpack(torch.load(weights, map_location="cpu", weights_only=True))
    except ValueError as e:
        raise CheckpointError(f"{weights} is not a checkpoint of recipe {name}: {e}; retrain with "
                              f"`python -m medmae_nb train {name}`") from None
    except Exception as e:  # not a torch file, or a truncated one whose card was rewritten to match it
        first = (str(e).strip().splitlines() or ["no message"])[0]
        raise CheckpointError(f"cannot read {weights} as a checkpoint of recipe {name}: it is truncated, damaged or "
                              f"not a torch file ({type(e).__name__}: {first}); {retrain}") from None
