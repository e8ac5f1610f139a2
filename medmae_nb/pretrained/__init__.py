"""Pre-trained weights: recipes (as data), the one store that writes and reads weights and cards, training a
recipe, and learning curves.

* :mod:`.recipes` — :class:`Recipe` (a registered method + settings + a pool + a schedule), :data:`RECIPES`,
  :func:`get_recipe`, :func:`register_recipe`; pools are :class:`PhantomData` or :class:`SpecData` (any dataset
  spec).
* :mod:`.store` — the only module that writes or reads checkpoint files (float16 / int8 packing, cards, hashes).
* :mod:`.run` — :func:`train_recipe` (resumable), :func:`load_pretrained`, :func:`pretrained`.
* :mod:`.curves` — downstream accuracy against pre-training length.

Layers: ``pretrained`` uses ``train`` and ``models``; nothing below it imports it. The command line is
``python -m medmae_nb train RECIPE [--data SPEC] [--channels C] [--epochs N] [--out DIR]``.
"""

import sys as _sys
import types as _types
from typing import Any as _Any

from .recipes import (
    RECIPES,
    SCALES,
    STUDIES,
    PhantomData,
    Recipe,
    SpecData,
    get_recipe,
    list_recipes,
    register_recipe,
)
from .run import (
    check_pool_against,
    default_run_dir,
    load_pretrained,
    load_seed,
    pretrained,
    seed_name,
    train_recipe,
)
from .store import CHECKPOINTS, card_path, read_card, weights_path

__all__ = ["CHECKPOINTS", "RECIPES", "SCALES", "STUDIES", "PhantomData", "Recipe", "SpecData", "card_path",
           "default_run_dir", "check_pool_against", "get_recipe", "list_recipes", "load_pretrained", "load_seed",
           "pretrained",
           "read_card", "register_recipe", "seed_name", "train_recipe", "weights_path"]


class _CallablePackage(_types.ModuleType):
    """``medmae_nb.pretrained`` is this package and, called, :func:`~medmae_nb.pretrained.run.pretrained`: the book's
    ``mn.pretrained("mae-micro-p8")`` keeps working although the package took the function's name."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> _Any:
        return pretrained(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
