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
        raise CheckpointError(f"cannot read {what} {path}: {err}. {fix}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{what} {path} was not written by this version of medmae_nb.train (format {FORMAT}). "
                              f"{fix}")
    if config is not None and state["config"] != config:
        diffs = "; ".join(config_diff(state["config"], config)) or "(same values, different layout)"
        raise CheckpointError(f"{what} {path} belongs to a different config — {diffs}. {fix}")
    return state
