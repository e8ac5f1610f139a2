"""Checkpoints that know which config they belong to: a run never resumes from, and the cache never returns, weights
made for another config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..cache import save_torch

__all__ = ["FORMAT", "CheckpointError", "config_diff", "load_checked", "save_checkpoint"]

FORMAT = 2  # bumped when the layout of a checkpoint changes; older files are refused with a clear message


class CheckpointError(ValueError):
    """A checkpoint or cache entry that belongs to a different config, or that is not ours, or is damaged."""


def config_diff(stored: dict, now: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested configs, ``"key: stored vs now"``.

    Example:
        >>> config_diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}})
        ['b.c: 2 (stored) vs 3 (now)']
    """
    out = []
    for k in sorted(set(stored) | set(now)):
        a, b = stored.get(k, "<missing>"), now.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} (stored) vs {b!r} (now)")
    return out


def save_checkpoint(path: str | Path, config: dict, **state: Any) -> Path:
    """Atomically writes ``state`` with the format tag and ``config`` (temp file, then rename)."""
    return save_torch(path, {"format": FORMAT, "config": config, **state})


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


def load_checked(path: str | Path, config: dict | None, what: str, fix: str) -> dict:
    """Loads a checkpoint; raises :class:`CheckpointError` unless it was written by this package for ``config``.

    Args:
        path: the file.
        config: the config it must have been written for; None accepts any config.
        what: what the file is, for messages ("checkpoint", "cache entry").
        fix: what the user can do about a refusal, appended to the message.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or from an incompatible version
        raise CheckpointError(f"cannot read {what} {path}: it is truncated or damaged (an interrupted copy, a full "
                              f"disk) or not a torch checkpoint at all ({type(err).__name__}: {_first_line(err)}). "
                              f"{fix}") from err
    if not isinstance(state, dict) or "format" not in state or "config" not in state:
        held = (f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise CheckpointError(f"{what} {path} is not a checkpoint of medmae_nb.train: it holds {held}, not the "
                              f"format tag and config every checkpoint of this package carries (a bare state dict, "
                              f"or another program's file?). {fix}")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{what} {path} was written by another version of medmae_nb.train (format "
                              f"{state['format']!r}; this version reads format {FORMAT}). {fix}")
    if config is not None and state["config"] != config:
        diffs = "; ".join(config_diff(state["config"], config)) or "(same values, different layout)"
        raise CheckpointError(f"{what} {path} belongs to a different config — {diffs}. {fix}")
    return state
