"""medmae_nb: self-supervised pre-training for medical image classification with few labels.

The package behind the book. The names most chapters use are available from the top level (imported on first use,
so ``import medmae_nb`` stays quick: it imports neither torch nor numpy, which keeps ``medmae --help``
fast); the API page of the book lists them by role:

* data — :func:`make_phantom`, :func:`make_phantom_splits`, :func:`load_busi`, :func:`load_image_folder`,
  :func:`load_split_folders`, :func:`load_medmnist`, :func:`concat_datasets`, :func:`label_budget`,
  :func:`two_views`, :func:`multi_crop`, :class:`ImageDataset`;
* methods and models — :func:`mae_vit_micro`, :func:`mae_vit_tiny`, :func:`mae_vit_small`, :class:`SSLMethod`,
  :func:`create_encoder`, :func:`small_cnn`;
* training — :func:`pretrain` (one loop for every method, ``medmae_nb.train.pretrain``; the command line for the
  book's recipes is ``python -m medmae_nb train``), :func:`finetune`, :func:`fit_supervised`,
  :func:`linear_probe`;
* methods by name — :func:`register_method`, :func:`list_methods`, :func:`create_method` (the registry);
* book-scale checkpoints — :func:`pretrained`, :func:`load_pretrained`, :data:`RECIPES`, :func:`train_recipe`;
* results — :func:`budget_sweep` with the learners :class:`FineTune`, :func:`supervised`, :class:`LinearProbe`,
  :class:`FrozenFeatures`, :class:`Ensemble`; :func:`predict_proba`, :func:`extract_features`; metrics in
  :mod:`medmae_nb.evaluate`; explanation maps and scores in :mod:`medmae_nb.explain`; classical classifiers on
  frozen features (:func:`classical_learners`, :func:`budgets_for`) in :mod:`medmae_nb.classical`;
* set-up — :func:`get_profile`, :func:`get_device`, :func:`seed_everything`, :func:`print_config`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "profiles": ["get_device", "get_profile", "print_config", "resolve", "seed_everything"],
    "data": ["make_phantom", "make_phantom_splits", "load_busi", "load_image_folder", "load_split_folders",
             "load_medmnist", "concat_datasets", "label_budget", "assign_splits", "two_views", "multi_crop",
             "ImageDataset", "DataError"],
    "models": ["mae_vit_micro", "mae_vit_tiny", "mae_vit_small", "MaskedAutoencoderViT", "SSLMethod", "Batch",
               "MethodOutput", "small_cnn", "create_encoder"],
    "train": ["pretrain", "finetune", "fit_supervised", "linear_probe", "History", "CheckpointError"],
    "pretrained": ["load_pretrained", "RECIPES", "get_recipe", "train_recipe"],  # medmae_nb.pretrained is callable
    "models.registry": ["register_method", "list_methods", "get_method", "create_method"],
    "budgets": ["budget_sweep", "FineTune", "supervised", "LinearProbe", "FrozenFeatures", "Ensemble"],
    "inference": ["predict_proba", "extract_features"],
    "classical": ["classical_learners", "budgets_for"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}
_SUBMODULES = ("data", "models", "train", "budgets", "pretrained", "compare", "inference", "evaluate", "explain",
               "masking", "losses", "viz", "cache", "profiles", "classical")

__all__ = ["__version__", *sorted(_WHERE), *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
