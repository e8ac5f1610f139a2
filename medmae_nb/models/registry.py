"""The method registry: every self-supervised method of the book, by name, in timm's style.

A method class registers itself with :func:`register_method` where it is defined; every listing of methods — the
recipes, ``bench``, ``compare``, the command line's choices, the chapters' tables — reads this registry instead of
naming methods by hand. Adding a method therefore touches one file in ``models/`` (its class, decorated) plus a
recipe in :mod:`medmae_nb.pretrained.recipes` (or a recipe registered at run time).

Methods defined outside the package register the same way. To make such a method visible to a process the package
starts itself (a chapter's kernel under papermill, ``torchrun`` workers), name its module — a dotted module name or a
``.py`` file — in ``$MEDMAE_PLUGINS`` (comma-separated): the registry imports them the first time it is read.

Example:
    >>> from medmae_nb.models.registry import get_method, list_methods
    >>> [m for m in list_methods() if m in ("dino", "mae", "masked-convnext", "miram", "moco", "spark")]
    ['dino', 'mae', 'masked-convnext', 'miram', 'moco', 'spark']
    >>> get_method("spark").family
    'masked image modelling'
    >>> m = get_method("mae").build(img_size=32, in_chans=1, arch="micro", patch_size=8)
    >>> method_name(m), m.config["patch_size"]
    ('mae', 8)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["FAMILIES", "MethodEntry", "create_method", "get_method", "list_methods", "method_name",
           "register_method", "unregister_method"]

FAMILIES = ("masked image modelling", "contrastive", "self-distillation", "other")
_REGISTRY: dict[str, MethodEntry] = {}
_PLUGINS_LOADED: set[str] = set()
# the package's own method modules: importing them registers the book's methods
_BUILTIN = ("mae", "miram", "masked_convnext", "spark", "contrastive", "dino")


@dataclass(frozen=True)
class MethodEntry:
    """One registered method.

    Attributes:
        name: the registry name (``"mae"``), used by recipes, tables and the command line.
        cls: the :class:`~medmae_nb.models.base.SSLMethod` subclass.
        family: one of :data:`FAMILIES`.
        description: one line for listings.
        stores: the parts a checkpoint of this method may hold (``"all"`` or a submodule's name): what can be kept
            when the rest (a decoder, a key encoder) is not needed downstream.
        builder: ``builder(img_size=…, in_chans=…, **kwargs) -> method``; by default the class's ``build``.
        paper: the reference, in words.
    """

    name: str
    cls: type
    family: str
    description: str = ""
    stores: tuple[str, ...] = ("all",)
    builder: Callable[..., nn.Module] | None = field(default=None, compare=False)
    paper: str = ""

    def build(self, img_size: int = 64, in_chans: int = 1, **kwargs: Any) -> nn.Module:
        """A freshly initialised method for ``img_size`` images of ``in_chans`` channels."""
        make = self.builder or self.cls.build
        return make(img_size=img_size, in_chans=in_chans, **kwargs)

    def default_views(self, image_size: int) -> Callable | None:
        """The per-image view maker this method trains on by default (see :meth:`SSLMethod.default_views`)."""
        return self.cls.default_views(image_size)


def register_method(name: str, *, family: str, description: str = "", stores: tuple[str, ...] = ("all",),
                    builder: Callable[..., nn.Module] | None = None, paper: str = "",
                    replace: bool = False) -> Callable[[type], type]:
    """Class decorator: registers an :class:`~medmae_nb.models.base.SSLMethod` subclass under ``name``.

    Raises:
        ValueError: ``name`` is taken by another class (pass ``replace=True`` to take it over, e.g. when a notebook
            cell defining a method is run twice), or ``family`` is not one of :data:`FAMILIES`.
        TypeError: the class is not an SSLMethod.
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; use one of {FAMILIES}")

    def decorate(cls: type) -> type:
        from .base import SSLMethod

        if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
            raise TypeError(f"register_method({name!r}) decorates SSLMethod subclasses, not {cls!r}")
        old = _REGISTRY.get(name)
        same = old is not None and (old.cls.__module__, old.cls.__qualname__) == (cls.__module__, cls.__qualname__)
        if old is not None and not (replace or same):
            raise ValueError(f"a method named {name!r} is registered already ({old.cls.__module__}."
                             f"{old.cls.__qualname__}); choose another name, or pass replace=True")
        for part in stores:
            if not isinstance(part, str) or not part:
                raise ValueError(f"stores must name parts ('all' or a submodule), got {stores!r}")
        _REGISTRY[name] = MethodEntry(name, cls, family, description or (cls.__doc__ or "").strip().split("\n")[0],
                                      tuple(stores), builder, paper)
        cls.registry_name = name
        return cls

    return decorate


def unregister_method(name: str) -> None:
    """Removes a method from the registry (a test's toy method, after the test)."""
    _REGISTRY.pop(name, None)


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"{__package__}.{module}")


def _load_plugins() -> None:
    """Imports the modules named in ``$MEDMAE_PLUGINS`` (dotted names or ``.py`` files), once each."""
    for item in filter(None, (s.strip() for s in os.environ.get("MEDMAE_PLUGINS", "").split(","))):
        if item in _PLUGINS_LOADED:
            continue
        _PLUGINS_LOADED.add(item)
        path = Path(item).expanduser()
        if item.endswith(".py"):
            if not path.is_file():
                raise ImportError(f"$MEDMAE_PLUGINS names {item}, which is not a file; fix or unset MEDMAE_PLUGINS")
            module_name = f"medmae_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(item)


def _entries() -> dict[str, MethodEntry]:
    _load_builtin()
    _load_plugins()
    return _REGISTRY


def list_methods(family: str | None = None) -> list[str]:
    """The registered method names (sorted), optionally of one family."""
    return sorted(n for n, e in _entries().items() if family is None or e.family == family)


def get_method(name: str) -> MethodEntry:
    """The registry entry called ``name``.

    Raises:
        KeyError: no such method; the message lists the registered ones.
    """
    _load_builtin()
    if name not in _REGISTRY:  # plugins only when needed: a plugin may itself import the recipes that ask here
        _load_plugins()
    entries = _REGISTRY
    if name not in entries:
        raise KeyError(f"no method named {name!r}; the registered methods are: {', '.join(sorted(entries))} "
                       "(a method of your own registers with medmae_nb.models.register_method)")
    return entries[name]


def create_method(name: str, img_size: int = 64, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """A new method by registry name: ``create_method("mae", img_size=64, arch="micro", patch_size=8)``."""
    return get_method(name).build(img_size=img_size, in_chans=in_chans, **kwargs)


def method_name(method: nn.Module | type) -> str:
    """The registry name of a method instance or class.

    Raises:
        KeyError: the class was never registered.
    """
    cls = method if isinstance(method, type) else type(method)
    for klass in cls.__mro__:
        for name, entry in _entries().items():
            if entry.cls is klass:
                return name
    raise KeyError(f"{cls.__qualname__} is not a registered method; decorate it with "
                   "@medmae_nb.models.register_method(name, family=...)")
