"""A small on-disk cache for generated data sets and checkpoints.

Entries live under ``cache_dir()`` (env ``MEDMAE_CACHE``, default ``~/.cache/medmae_nb``) and are named by a key
made from the full config, so a cached entry can never pass for a different config. Every write goes to a
temporary file in the same folder and is then renamed into place, so an interrupted write leaves no entry at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir() -> Path:
    """The cache folder: ``$MEDMAE_CACHE`` if set, else ``~/.cache/medmae_nb`` (created on first use)."""
    root = os.environ.get("MEDMAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medmae_nb")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float):
        return float(repr(obj))
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


def config_key(config: dict[str, Any], prefix: str = "") -> str:
    """A stable key for ``config``: ``prefix-`` plus 16 hex digits of the SHA-256 of its canonical JSON.

    Example:
        >>> config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1})
        True
    """
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{prefix}-{digest}" if prefix else digest


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp_path)`` then renames the temporary file to ``path``; on any error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Atomically writes arrays to an uncompressed ``.npz`` file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically writes ``obj`` with ``torch.save``."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically writes ``obj`` as indented JSON."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(_canonical(obj), indent=2)))


def entry(key: str, suffix: str = ".npz", subdir: str = "") -> Path:
    """The cache path of an entry named ``key`` (the file may not exist yet)."""
    folder = cache_dir() / subdir if subdir else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"
