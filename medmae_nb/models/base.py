"""What a self-supervised method is to the training loop: called on a :class:`Batch` of views, returns its loss.

Every method of the book (MAE, MIRAM, masked ConvNeXt, SparK, a contrastive method, DINO) is an
:class:`SSLMethod`: an ``nn.Module`` whose ``forward`` takes a :class:`Batch` and returns a :class:`MethodOutput`
(a scalar ``loss`` and a dict of scalar ``logs``), and whose ``config`` dict holds every hyper-parameter of the
method — the mask ratio included — so there is one source of truth for the cache key and the checkpoint card.
Methods with moving parts between optimiser steps (an EMA teacher, momentum or temperature schedules, a frozen last
layer) override the three step hooks; the loop in :mod:`medmae_nb.train.pretrain` calls them, and nothing else
about a method is special-cased there.

Randomness: a method draws its random numbers (masks, crops it makes itself) from :meth:`Batch.rand`, which gives
each *sample* its own stream, seeded from ``(run seed, epoch, dataset index)``. A sample's mask therefore does not
depend on which other samples share its batch, on the number of DataLoader workers or on the number of processes,
which is what lets a 2-process DDP run equal a 1-process run with the same global batch, and a resumed run equal an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["Batch", "MethodOutput", "Reconstruction", "SSLMethod", "as_batch", "hash_uniform", "sample_seed"]

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-mixed 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _i64(c: int) -> int:
    """An unsigned 64-bit constant as the signed int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic on signed integers)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def hash_uniform(seeds: Tensor, shape: tuple[int, ...], stream: int = 0,
                 device: torch.device | str | None = None) -> Tensor:
    """Counter-based uniform noise: ``out[i, j] = u(seeds[i], stream, j)`` in ``[0, 1)``, float32.

    Each value is splitmix64 of the sample's seed, the stream and the position, computed with int64 tensor arithmetic
    (which wraps modulo 2**64 like unsigned arithmetic), so it runs vectorised on any device and gives the same bits
    on the CPU and on a GPU — no generator per sample, no transfer from the host.

    Example:
        >>> u = hash_uniform(torch.tensor([1, 2]), (4,))
        >>> u.shape, bool((u >= 0).all() and (u < 1).all()), torch.equal(u[1], hash_uniform(torch.tensor([2]), (4,))[0])
        (torch.Size([2, 4]), True, True)

    References:
        Steele, Lea & Flood, "Fast Splittable Pseudorandom Number Generators", OOPSLA 2014 (splitmix64); Salmon et
        al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC 2011 (counter-based generators).
    """
    n = 1
    for d in shape:
        n *= int(d)
    device = torch.device(device) if device is not None else seeds.device
    s = seeds.to(device=device, dtype=torch.int64)[:, None]
    j = torch.arange(n, device=device, dtype=torch.int64)[None, :]
    x = s * _i64(0xD1B54A32D192ED03) + (j + _i64((int(stream) * 0x9E3779B97F4A7C15) & _MASK64))
    x = x + _i64(0x9E3779B97F4A7C15)
    x = (x ^ _shr(x, 30)) * _i64(0xBF58476D1CE4E5B9)
    x = (x ^ _shr(x, 27)) * _i64(0x94D049BB133111EB)
    x = x ^ _shr(x, 31)
    # the top 24 bits give every float32 in [0, 1) on a grid of 2**-24, never 1.0
    u = _shr(x, 40).to(torch.float32) * (1.0 / (1 << 24))
    return u.reshape(len(seeds), *shape)


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. ``run seed, epoch, index``); different tuples give unrelated seeds.

    Example:
        >>> sample_seed(0, 1, 2) == sample_seed(0, 1, 2) != sample_seed(0, 2, 1)
        True
    """
    h = 0
    for p in parts:
        h = _mix(h ^ (int(p) & _MASK64))
    return h >> 1  # torch.Generator.manual_seed takes values below 2**63 without wrapping


@dataclass
class Batch:
    """A batch of views of ``N`` images and one seed per image.

    Attributes:
        views: one ``(N, C, H, W)`` tensor per view (a single-view method uses ``views[0]``); multi-crop methods get
            global views first, then local ones.
        seeds: int64 ``(N,)``, one seed per sample (see :func:`sample_seed`); drives :meth:`rand`.
        labels: optional ``(N,)`` labels; self-supervised methods must not use them.

    Example:
        >>> b = Batch([torch.zeros(2, 1, 8, 8)], torch.tensor([1, 2]))
        >>> b.rand(4).shape, torch.equal(b.rand(4), b.rand(4)), torch.equal(b.rand(4)[0], b.rand(4, stream=1)[0])
        (torch.Size([2, 4]), True, False)
    """

    views: list[Tensor]
    seeds: Tensor
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("a Batch needs at least one view")
        n = self.views[0].shape[0]
        if any(v.shape[0] != n for v in self.views) or len(self.seeds) != n:
            shapes = [tuple(v.shape) for v in self.views]
            raise ValueError(f"views and seeds must share the batch size; got views {shapes} and "
                             f"{len(self.seeds)} seeds")

    @property
    def images(self) -> Tensor:
        """The first view, ``(N, C, H, W)``."""
        return self.views[0]

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def device(self) -> torch.device:
        return self.views[0].device

    def rand(self, *shape: int, stream: int = 0) -> Tensor:
        """Uniform ``[0, 1)`` noise ``(N, *shape)`` on the batch's device; row ``i`` depends only on ``seeds[i]`` and
        ``stream``.

        Use a different ``stream`` for each independent use within one step (e.g. the mask and a second mask), and
        call it once per stream and step: a repeated call returns the same numbers.
        """
        return hash_uniform(self.seeds, shape, stream, self.device)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with its views (and labels) on ``device``; seeds stay on the CPU."""
        labels = None if self.labels is None else self.labels.to(device, non_blocking=non_blocking)
        return Batch([v.to(device, non_blocking=non_blocking) for v in self.views], self.seeds, labels)


def as_batch(x: Batch | Tensor | Sequence[Tensor], generator: torch.Generator | None = None) -> Batch:
    """Wraps images (or a list of views) into a :class:`Batch`, drawing per-sample seeds from ``generator`` (or
    torch's global generator), so calling a method on a plain tensor under ``torch.manual_seed`` is reproducible.
    """
    if isinstance(x, Batch):
        return x
    views = [x] if torch.is_tensor(x) else list(x)
    seeds = torch.randint(0, 2**62, (views[0].shape[0],), generator=generator)
    return Batch(views, seeds)


class Reconstruction(NamedTuple):
    """What every masked-modelling method's ``reconstruct`` returns: images for a figure, ``(N, C, H, W)`` except
    ``mask`` ``(N, 1, H, W)``. Fields read by name (``rec.pred``) or, as a mapping, by key (``rec["pred"]``).

    Example:
        >>> z = torch.zeros(1, 1, 4, 4)
        >>> rec = Reconstruction(masked=z, pasted=z, pred=z + 1, mask=z)
        >>> float(rec["pred"].mean()), rec.keys()
        (1.0, ('masked', 'pasted', 'pred', 'mask'))
    """

    masked: Tensor  #: the input with hidden patches set to 0
    pasted: Tensor  #: visible patches from the input, hidden ones from the prediction
    pred: Tensor  #: the full prediction, every patch
    mask: Tensor  #: ``(N, 1, H, W)`` pixel mask, 1 = hidden

    def __getitem__(self, key: Any) -> Any:
        return getattr(self, key) if isinstance(key, str) else tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._fields

    def __contains__(self, key: object) -> bool:
        return key in self._fields if isinstance(key, str) else tuple.__contains__(self, key)


class MethodOutput:
    """What a method returns for one batch: the scalar ``loss`` to minimise, scalar ``logs`` and any extras.

    Extras (predictions, masks, embeddings) are attributes, so ``out.pred`` works for methods that have one.

    Example:
        >>> out = MethodOutput(torch.tensor(1.0), logs={"acc": 0.5}, pred=torch.zeros(2))
        >>> float(out.loss), out.logs, out.pred.shape
        (1.0, {'acc': 0.5}, torch.Size([2]))
    """

    def __init__(self, loss: Tensor, logs: dict[str, Tensor | float] | None = None, **extras: Any) -> None:
        self.loss = loss
        self.logs = dict(logs or {})
        self._extras = extras
        for k, v in extras.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        extras = ", ".join(self._extras)
        return (f"{type(self).__name__}(loss={float(self.loss.detach()):.4g}, logs={list(self.logs)}, "
                f"extras=[{extras}])")


class SSLMethod(nn.Module):
    """Base class of the book's self-supervised methods (see the module docstring for the contract).

    Subclasses set ``self.config`` (a JSON-friendly dict of every hyper-parameter) and implement ``forward``; the
    hooks below default to doing nothing.

    References:
        Susmelj et al., "Lightly", 2020 (methods as small composable modules) — the design this follows.
    """

    config: dict[str, Any]
    registry_name: str = ""  # set by models.registry.register_method

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def build(cls, img_size: int = 64, in_chans: int = 1, **kwargs: Any) -> SSLMethod:
        """A freshly initialised method for ``img_size`` images of ``in_chans`` channels: what a recipe calls (through
        the registry). The default passes both to the constructor; a method whose constructor takes other
        arguments (no image size, an architecture name) overrides it."""
        return cls(img_size=img_size, in_chans=in_chans, **kwargs)

    @classmethod
    def default_views(cls, image_size: int) -> Callable[[Tensor], Any] | None:
        """The per-image view maker the method trains on by default (see :func:`medmae_nb.train.pretrain`): a
        horizontal flip for the masked-modelling methods; two crops (contrastive) or multi-crop (DINO) where the
        method overrides it."""
        from ..data.transforms import hflip

        return hflip

    # ------------------------------------------------------------------------------------------ downstream
    @property
    def encoder(self) -> nn.Module:
        """The network whose features downstream tasks use: the method's ``encoder`` submodule (MoCo's query
        encoder, DINO's student, SparK's and the masked ConvNeXt's CNN). A method that holds its encoder as several
        parts (MAE's patch embedding, blocks and norm) overrides this."""
        module = self._modules.get("encoder")
        if module is None:
            raise NotImplementedError(f"{type(self).__name__} has no 'encoder' submodule; define an encoder property")
        return module

    def to_timm(self, num_classes: int = 0, **overrides: Any) -> nn.Module:
        """The pre-trained encoder as a standalone timm model (a classifier head of ``num_classes`` outputs; 0 for
        features only), with the method's weights copied in: what fine-tuning and frozen-feature protocols use."""
        raise NotImplementedError(f"{type(self).__name__} does not implement to_timm(); every registered method "
                                  "must return its encoder as a timm model")

    def restore_from_part(self, part: str) -> None:
        """Rebuilds what a checkpoint that holds only ``part`` (e.g. ``"encoder"``) left at its initialisation (a
        key encoder copied from the query encoder, a student from its teacher). The default has nothing to rebuild:
        the other parts stay freshly initialised, which is right for a decoder that is only needed to pre-train."""

    def reconstruct(self, imgs: Tensor, **kwargs: Any) -> Reconstruction:
        """A masked-modelling method's reconstruction of ``imgs`` (see :class:`Reconstruction`); other methods have
        none."""
        raise NotImplementedError(f"{type(self).__name__} reconstructs nothing: it is not a masked-modelling method")

    # ------------------------------------------------------------------------------------------ step hooks
    def begin_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called before each step's forward; sets schedule-driven values (temperatures, momenta) for this step and
        returns them for the log."""
        return {}

    def before_update(self, step: int, total_steps: int) -> None:
        """Called after backward (and gradient clipping), before the optimiser update (e.g. drop the gradients of a
        layer frozen for the first epochs)."""

    def after_update(self, step: int, total_steps: int) -> None:
        """Called after the optimiser update (e.g. the EMA update of a teacher network)."""

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (timm's convention), beyond biases and norms."""
        return set()
