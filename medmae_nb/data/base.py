"""The one dataset type every loader returns: the phantom, MedMNIST and class folders alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Raised for bad data or a bad request, with a message that says what was wrong and how to fix it."""


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Images, labels and optional lesion masks held in memory, usable by a ``DataLoader`` and by notebooks.

    Args:
        images: float32 array ``(N, C, H, W)`` with values in ``[0, 1]``.
        labels: int64 array ``(N,)`` of class indices into ``class_names``.
        class_names: one name per class.
        masks: optional bool array ``(N, H, W)``; True marks lesion pixels (all False where there is none).
        split: optional array ``(N,)`` of ``"train"``/``"val"``/``"test"``.
        meta: per-sample attributes, each an array of length N (e.g. lesion size, file name).
        name: a short name for printing.
        transform: optional callable applied to the image tensor in ``__getitem__``.

    Example:
        >>> ds = ImageDataset(np.zeros((2, 1, 8, 8), np.float32), np.array([0, 1]), ("a", "b"))
        >>> len(ds), ds[1][1]
        (2, 1)
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    masks: np.ndarray | None = None
    split: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "dataset"
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels).astype(np.int64).reshape(-1)
        self.class_names = tuple(self.class_names)
        if self.images.ndim != 4:
            raise DataError(f"images must have shape (N, C, H, W), got {self.images.shape}")
        n = len(self.images)
        if len(self.labels) != n:
            raise DataError(f"{n} images but {len(self.labels)} labels")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"labels must lie in 0..{len(self.class_names) - 1} for classes {self.class_names}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.shape != (n, *self.images.shape[2:]):
                raise DataError(f"masks must have shape {(n, *self.images.shape[2:])}, got {self.masks.shape}")
        if self.split is not None:
            self.split = np.asarray(self.split).astype(str)
            if len(self.split) != n:
                raise DataError(f"split has {len(self.split)} entries for {n} images")
        for key, value in self.meta.items():
            if len(value) != n:
                raise DataError(f"meta[{key!r}] has {len(value)} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i]))
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray | list[int], name: str | None = None) -> ImageDataset:
        """Returns a new dataset holding the samples at ``index`` (integer indices or a boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            class_names=self.class_names,
            masks=None if self.masks is None else self.masks[index],
            split=None if self.split is None else self.split[index],
            meta={k: np.asarray(v)[index] for k, v in self.meta.items()},
            name=name or self.name,
            transform=self.transform,
        )

    def get_split(self, split: str) -> ImageDataset:
        """Returns the samples of one split (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
        if self.split is None:
            raise DataError(f"{self.name} has no split; make one with medmae_nb.data.splits.assign_splits")
        return self.subset(self.split == split, name=f"{self.name}/{split}")

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {c: int(k) for c, k in zip(self.class_names, counts)}

    def to_rgb(self) -> ImageDataset:
        """Returns a copy with 3 channels (gray replicated), for backbones that expect RGB."""
        if self.channels == 3:
            return self
        out = self.subset(np.arange(len(self)))
        out.images = np.repeat(self.images, 3, axis=1)
        return out

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        split = "" if self.split is None else ", splits " + "/".join(str(int((self.split == s).sum())) for s in SPLITS)
        masks = "" if self.masks is None else ", with masks"
        return f"ImageDataset({self.name!r}: {n} images {c}x{h}x{w}, classes {self.class_counts()}{split}{masks})"
