"""Run profiles (``smoke`` / ``cpu`` / ``gpu``), the device helper, seeding and ``print_config``.

A profile is a plain dict of sizes and loop lengths that chapters read instead of hard-coding numbers:

* ``smoke`` — seconds per notebook, for tests and quick checks;
* ``cpu`` — a few minutes per notebook on 2 cores; what the book shows;
* ``gpu`` — real scale on one GPU (Colab, workstation), chosen by name only (:func:`resolve`).

Every key of every profile is read by a chapter or by the package (a test fails on a key nothing reads).
"""

from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np
import torch

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "img_size": 32,
        "n_pool": 96,
        "n_per_class_test": 20,
        "calib_budgets": [5, 20],
        "calib_repeats": 1,
        "calib_epochs": 2,
        "calib_min_steps": 10,
        "bootstrap": 50,
        "eval_min_steps": 4,  # the shared protocol (medmae_nb.protocol): steps at least, every learner
        "eval_epochs": 2,  # passes over the labelled set at least (≥ 2)
        "ft_seeds": (0,),
        "ch01_budgets": [2, 5],
        "bench_steps": 1,
        "recipe_scale": "smoke",
        "imagenet_fetch": False,  # chapter 03: fetch timm's ImageNet weights (checksummed) or use the substitute
        "recipe_epochs": None,
        "ch04_fractions": [0.5, 1.0],
        "ch05_budgets": [1, 5],
        "ch05_control_budgets": [1, 5],
        "ch05_n_explain": 8,
        "ch06_budgets": [2, 5],
        "ch06_ft_budgets": [2, 5],
        "ch06_fractions": [0.5, 1.0],
    },
    "cpu": {
        "img_size": 64,
        "n_pool": 3300,
        "n_per_class_test": 200,
        "calib_budgets": [5, 20, 100, 1000],
        "calib_repeats": 2,
        "calib_epochs": 12,
        "calib_min_steps": 150,
        "bootstrap": 500,
        "eval_min_steps": 200,  # the shared protocol (medmae_nb.protocol): steps at least, every learner
        "eval_epochs": 3,  # passes over the labelled set at least (≥ 2)
        "ft_seeds": (0, 1, 2),
        "ch01_budgets": [10, 100],
        "bench_steps": 3,
        "recipe_scale": "book",
        "imagenet_fetch": False,
        "recipe_epochs": None,
        "ch04_fractions": [0.01, 0.05, 0.1, 0.25, 1.0],
        "ch05_budgets": [1, 5, 10, 25, 50, 100, 250, 500, 1000],
        "ch05_control_budgets": [1, 10, 100],
        "ch05_n_explain": 48,
        "ch06_budgets": [10, 100],  # every learner fine-tunes at every budget (a CPU table: ~1 h per dataset)
        "ch06_ft_budgets": [10, 100],
        "ch06_fractions": [0.1, 1.0],
    },
    "gpu": {
        "img_size": 128,
        "n_pool": 20000,
        "n_per_class_test": 1000,
        "calib_budgets": [5, 10, 20, 50, 100, 300, 1000],
        "calib_repeats": 5,
        "calib_epochs": 30,
        "calib_min_steps": 300,
        "bootstrap": 2000,
        "eval_min_steps": 300,  # the shared protocol (medmae_nb.protocol): steps at least, every learner
        "eval_epochs": 30,  # passes over the labelled set at least (≥ 2)
        "ft_seeds": (0, 1, 2, 3, 4),
        "ch01_budgets": [10, 25, 100, 1000],
        "bench_steps": 10,
        "recipe_scale": "book",
        "imagenet_fetch": True,
        "recipe_epochs": 200,
        "ch04_fractions": [0.01, 0.05, 0.1, 0.25, 1.0],
        "ch05_budgets": [1, 5, 10, 25, 50, 100, 250, 500, 1000],
        "ch05_control_budgets": [1, 5, 10, 25, 50, 100, 250, 500, 1000],
        "ch05_n_explain": 200,
        "ch06_budgets": [1, 5, 10, 25, 50, 100, 250, 500, 1000],
        "ch06_ft_budgets": [1, 5, 10, 25, 50, 100, 250, 500, 1000],
        "ch06_fractions": [0.01, 0.05, 0.1, 0.25, 0.5, 1.0],
    },
}


class ProfileError(ValueError):
    """An unknown profile name."""


def resolve(profile: str | None = None) -> str:
    """The profile to use: ``profile`` if given, else ``$MEDMAE_PROFILE``, else ``cpu`` — on a GPU too.

    ``gpu`` is real scale (long schedules, not yet timed on a GPU), so it is never chosen for you: a GPU runtime with no
    setting runs the book's ``cpu`` scale on the GPU, in minutes; ask for ``gpu`` by name.
    """
    name = profile or os.environ.get("MEDMAE_PROFILE") or "cpu"
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}; use one of {sorted(PROFILES)} (or set MEDMAE_PROFILE)")
    return name


def get_profile(profile: str | None = None) -> dict[str, Any]:
    """The settings of the resolved profile (a copy, safe to change), with its ``name``."""
    name = resolve(profile)
    return {"name": name, **PROFILES[name]}


def get_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seeds Python, NumPy and torch (CPU and CUDA); returns a torch generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def data_root() -> str | None:
    """The real-data folder from ``$MEDMAE_DATA``, or None when unset."""
    return os.environ.get("MEDMAE_DATA") or None


def _short(path: str | None, env: str) -> str:
    """A path as printed in notebooks: never an absolute machine path, which would leak into stored outputs."""
    if path is None:
        return "(not set)"
    name = os.path.basename(os.path.normpath(path)) or path
    return f"${env} (.../{name})" if os.environ.get(env) == path else f".../{name}"


def print_config(profile: str | None = None) -> dict[str, str]:
    """Prints (and returns) versions, device, profile, data root and cache folder, for the top of a chapter."""
    import timm

    from . import __version__
    from .cache import cache_dir

    info = {
        "medmae_nb": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__.split("+")[0],
        "timm": timm.__version__,
        "device": str(get_device()),
        "threads": str(torch.get_num_threads()),
        "profile": resolve(profile),
        "data root": _short(data_root(), "MEDMAE_DATA"),
        "cache": _short(str(cache_dir()), "MEDMAE_CACHE"),
    }
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    return info
