"""The one dataset type every loader returns: the phantom, MedMNIST and class folders alike."""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "val", "test")
_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
_PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npz", ".npy", ".dcm")


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
        known = self.labels[self.labels != -1]  # -1 = no label (unlabelled images, for pre-training only)
        if len(known) and (known.min() < 0 or known.max() >= len(self.class_names)):
            raise DataError(f"labels must lie in 0..{len(self.class_names) - 1} for classes {self.class_names}, or "
                            "be -1 (no label)")
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
        counts = np.bincount(self.labels[self.labels >= 0], minlength=self.num_classes)
        return {c: int(k) for c, k in zip(self.class_names, counts)}

    def to_rgb(self) -> ImageDataset:
        """Returns a copy with 3 channels (gray replicated), for backbones that expect RGB."""
        if self.channels == 3:
            return self
        out = self.subset(np.arange(len(self)))
        out.images = np.repeat(self.images, 3, axis=1)
        return out

    def downsample(self, factor: int, name: str | None = None) -> ImageDataset:
        """Returns a copy ``factor`` times smaller on each side: each image averaged over ``factor x factor`` blocks
        (what a coarser acquisition of the same scene would record), each mask pixel a lesion where at least half of
        its block is. Labels, split and meta are kept (meta in pixels, e.g. ``lesion_radius_px``, is *not* rescaled).

        Raises:
            DataError: ``factor`` not a positive int, or a side not divisible by it.

        Example:
            >>> ds = ImageDataset(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), np.array([0]), ("a",))
            >>> ds.downsample(2).images[0, 0].tolist()
            [[2.5, 4.5], [10.5, 12.5]]
        """
        h, w = self.images.shape[2:]
        if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
            raise DataError(f"factor must be a positive int, got {factor!r}")
        if h % factor or w % factor:
            raise DataError(f"{h}x{w} images do not divide into {factor}x{factor} blocks; choose a factor that "
                            "divides both sides")
        factor = int(factor)
        out = self.subset(np.arange(len(self)), name=name or f"{self.name}-down{factor}")
        n, c = self.images.shape[:2]
        out.images = self.images.reshape(n, c, h // factor, factor, w // factor, factor).mean((3, 5),
                                                                                            dtype=np.float32)
        if self.masks is not None:
            share = self.masks.reshape(n, h // factor, factor, w // factor, factor).mean((2, 4))
            out.masks = share >= 0.5
        return out

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        split = "" if self.split is None else ", splits " + "/".join(str(int((self.split == s).sum())) for s in SPLITS)
        masks = "" if self.masks is None else ", with masks"
        return f"ImageDataset({self.name!r}: {n} images {c}x{h}x{w}, classes {self.class_counts()}{split}{masks})"


def concat_datasets(*datasets: ImageDataset | Sequence[ImageDataset], name: str | None = None) -> ImageDataset:
    """Joins datasets sample after sample into one, e.g. two sources of the same classes or separately loaded folders.

    The rules, chosen so that a concatenation never silently changes what a label or a mask means:

    - ``class_names`` must be identical, in the same order (label 1 must mean the same class everywhere);
    - images must have the same ``(C, H, W)``: load every part with the same ``image_size`` and ``channels``;
    - masks: where only some parts have masks, the others get all-False masks and ``meta["has_mask"]`` says which
      samples had a mask, so that scoring against lesion masks can skip the rest;
    - split: every part has one or none does (mixing could put a sample of an unsplit part in no split, or let
      a re-split move official test images into training);
    - meta: keys present in every part are concatenated; other keys are dropped with a ``UserWarning`` naming them;
      ``meta["source"]`` names the part each sample came from (kept from the parts that already have it);
    - transform: kept when every part has the same transform object (or none), else an error.

    Args:
        *datasets: the parts, in order; a single list or tuple of datasets is accepted too.
        name: name of the result; default the parts' names joined by ``+``.

    Returns:
        A new dataset; the parts are not changed.

    Raises:
        DataError: no parts, a part that is not an ``ImageDataset``, or parts that differ in classes, image shape,
            having a split, or transform.

    Example:
        >>> a = ImageDataset(np.zeros((2, 1, 8, 8), np.float32), np.array([0, 1]), ("a", "b"), name="x")
        >>> b = ImageDataset(np.ones((3, 1, 8, 8), np.float32), np.array([1, 1, 0]), ("a", "b"), name="y")
        >>> both = concat_datasets(a, b)
        >>> len(both), both.name, both.meta["source"].tolist()
        (5, 'x+y', ['x', 'x', 'y', 'y', 'y'])
    """
    if len(datasets) == 1 and isinstance(datasets[0], (list, tuple)):
        datasets = tuple(datasets[0])
    if not datasets:
        raise DataError("concat_datasets needs at least one dataset, e.g. concat_datasets(train_part, extra_part)")
    for i, ds in enumerate(datasets):
        if not isinstance(ds, ImageDataset):
            raise DataError(f"concat_datasets: argument {i} is a {type(ds).__name__}, not an ImageDataset")
    first = datasets[0]
    for ds in datasets[1:]:
        _check_same_classes(first, ds)
        if ds.images.shape[1:] != first.images.shape[1:]:
            c, _, w = first.images.shape[1:]
            raise DataError(
                f"image shapes differ: {first.name!r} has {'x'.join(map(str, first.images.shape[1:]))}, "
                f"{ds.name!r} has {'x'.join(map(str, ds.images.shape[1:]))} (channels x height x width); load both "
                f"with the same image_size and channels, e.g. image_size={w}, channels={c}"
                + (" (or convert the gray one with .to_rgb())" if {c, ds.channels} == {1, 3} else "")
            )
    with_split = [ds.split is not None for ds in datasets]
    if any(with_split) and not all(with_split):
        missing = [ds.name for ds, has in zip(datasets, with_split) if not has]
        raise DataError(
            f"{missing} have no split but the other datasets do; give them one first "
            f"(medmae_nb.data.assign_splits(ds)), or set .split = None on every part and split the result"
        )
    transforms = {id(ds.transform) for ds in datasets}
    if len(transforms) > 1:
        raise DataError(
            "the datasets have different transforms; set .transform = None on the parts and set the transform "
            "you want on the concatenated dataset"
        )

    meta, dropped = {}, set()
    common = set.intersection(*(set(ds.meta) for ds in datasets)) - {"source", "has_mask"}
    for ds in datasets:
        dropped |= set(ds.meta) - common - {"source", "has_mask"}
    for key in sorted(common):
        meta[key] = np.concatenate([np.asarray(ds.meta[key]) for ds in datasets])
    if dropped:
        warnings.warn(
            f"concat_datasets: meta key(s) {sorted(dropped)} are missing from some datasets and were dropped; "
            f"add them to every part first to keep them",
            UserWarning,
            stacklevel=2,
        )
    meta["source"] = np.concatenate(
        [
            np.asarray(ds.meta["source"]).astype(str) if "source" in ds.meta else np.full(len(ds), ds.name)
            for ds in datasets
        ]
    )
    has_masks = [ds.masks is not None for ds in datasets]
    masks = None
    if any(has_masks):
        masks = np.concatenate(
            [ds.masks if ds.masks is not None else np.zeros((len(ds), *ds.images.shape[2:]), bool) for ds in datasets]
        )
        if not all(has_masks) or any("has_mask" in ds.meta for ds in datasets):
            meta["has_mask"] = np.concatenate(
                [
                    np.asarray(ds.meta["has_mask"], bool) if "has_mask" in ds.meta else np.full(len(ds), m)
                    for ds, m in zip(datasets, has_masks)
                ]
            )
    return ImageDataset(
        images=np.concatenate([ds.images for ds in datasets]).astype(np.float32, copy=False),
        labels=np.concatenate([ds.labels for ds in datasets]),
        class_names=first.class_names,
        masks=masks,
        split=np.concatenate([ds.split for ds in datasets]) if all(with_split) else None,
        meta=meta,
        name=name or "+".join(ds.name for ds in datasets),
        transform=first.transform,
    )


def _check_same_classes(a: ImageDataset, b: ImageDataset) -> None:
    if a.class_names == b.class_names:
        return
    if sorted(a.class_names) == sorted(b.class_names):
        raise DataError(
            f"{a.name!r} and {b.name!r} hold the same classes in a different order ({a.class_names} vs "
            f"{b.class_names}), so a label index would mean different classes; load {b.name!r} with "
            f"classes={list(a.class_names)} so that the orders agree"
        )
    only_a = sorted(set(a.class_names) - set(b.class_names))
    only_b = sorted(set(b.class_names) - set(a.class_names))
    raise DataError(
        f"class names differ: {a.name!r} has {a.class_names}, {b.name!r} has {b.class_names} (only in {a.name!r}: "
        f"{only_a}, only in {b.name!r}: {only_b}); concatenate datasets of the same classes: load folders with "
        f"classes=[...], or keep the shared classes with .subset() and relabel them"
    )


def require_folder(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Returns ``path`` as a ``Path`` if it is a folder, else raises a ``DataError`` saying what it is instead.

    Args:
        path: the path a user passed.
        what: what the folder is for, e.g. ``"image folder"``; starts the message.
        fix: what to pass instead, e.g. ``"pass the folder that holds one subfolder per class"``.

    Raises:
        DataError: no path was given (None), the path is a file (with a hint for archives and single images) or it
            does not exist.
    """
    if path is None:  # e.g. a chapter's DATA_ROOT left at None with DATASET = "folder"
        raise DataError(f"no {what} given (None); {fix} (in a chapter: set DATA_ROOT, or the MEDMAE_DATA variable)")
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        suffix = "".join(path.suffixes[-2:]).lower()
        if suffix.endswith(_ARCHIVES):
            hint = "; it looks like an archive: unpack it and pass the unpacked folder"
        elif path.suffix.lower() in _PICTURES:
            hint = f"; it looks like a single data file, so its folder {path.parent} may be what you meant"
        else:
            hint = ""
        raise DataError(f"{what} {path} is a file, not a folder{hint}; {fix}")
    raise DataError(f"{what} {path} does not exist; {fix}")
