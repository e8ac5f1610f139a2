"""Images in class folders (BUSI, ISIC- or Kvasir-style), with optional lesion masks beside them.

The layout is ``root/CLASS/IMAGE.ext``, one subfolder per class. A file named ``IMAGE_mask.png`` (or
``IMAGE_mask_1.png``, ``IMAGE_mask_2.png`` … where an image has several lesions, as in BUSI) is the lesion mask of
``IMAGE``, not an image; several masks of one image are OR-ed. Every image is converted to gray or RGB, scaled to
``[0, 1]`` (16-bit images by 65535, not clipped) and resized to a square, so any mix of modes and sizes loads into
one array.

Datasets shipped with their splits, ``root/SPLIT/CLASS/IMAGE.ext`` (ISIC, the Kaggle chest X-ray set), load with
:func:`load_split_folders` into one dataset with ``split`` filled; :func:`load_image_folder` refuses class folders
named like splits, so such a layout is never read as classes called "train" and "test".

Images without labels (directly in the folder, or nested without a class structure) load with
:func:`load_unlabelled_folder`, for pre-training only; :func:`detect_folder_layout` tells the three layouts apart and
:func:`folder_channels` reads, from the file headers alone, whether a folder holds colour images.

References:
    Al-Dhabyani et al., "Dataset of breast ultrasound images", Data in Brief 28:104863 (2020).
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .base import SPLITS, DataError, ImageDataset, require_folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
BUSI_CLASSES = ("normal", "benign", "malignant")  # the phantom's order, so label 0 is "normal" everywhere
BUSI_FOLDERS = ("busi_256_gt", "busi_256", "busi", "Dataset_BUSI_with_GT")  # a copy with lesion masks first
BUSI_SOURCE = (
    "BUSI (Al-Dhabyani et al. 2020) from https://scholar.cu.edu.eg/?q=afahmy/pages/dataset, unzipped so "
    "that benign/, malignant/ and normal/ are subfolders"
)

# Folder names (compared in lower case) that mean a data split rather than a class, and the split each one is.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

# The class name of a dataset loaded by load_unlabelled_folder (while ImageDataset cannot hold "no label"), and the
# meta key that marks its samples as unlabelled.
UNLABELLED = "unlabelled"
# The layouts detect_folder_layout tells apart.
LAYOUTS = ("split", "class", "unlabelled")

_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$", re.IGNORECASE)
_HIGH_DEPTH = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# Recent loads, keyed by root, every file's (path, mtime, size) and the options: re-running a notebook cell then
# costs a directory scan instead of decoding hundreds of images. Entries above _CACHE_MAX_BYTES are not kept.
_CACHE: dict[tuple, ImageDataset] = {}
_CACHE_ENTRIES = 4
_CACHE_MAX_BYTES = 256 << 20
# One image to read: its label, path, mask files and split (None outside split folders).
_Entry = tuple[int, Path, list[Path], "str | None"]
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
# PIL modes without colour; every other mode (RGB, RGBA, CMYK, YCbCr …) is colour, "P"/"PA" as their palette says.
_GRAY_MODES = ("1", "L", "LA", "La", *_HIGH_DEPTH)


def load_image_folder(
    root: str | Path,
    image_size: int = 64,
    channels: int | None = None,
    classes: list[str] | None = None,
    masks: bool = True,
    name: str | None = None,
    allow_split_names: bool = False,
) -> ImageDataset:
    """Loads ``root/CLASS/*.{png,jpg,jpeg,bmp,tif,tiff}`` into one in-memory dataset.

    Args:
        root: folder with one subfolder per class.
        image_size: side of the square the images are resized to (bilinear, antialiased; aspect not kept).
        channels: 1 (gray), 3 (RGB), or None (default) for the files' native count: 3 when any image loaded is
            stored in colour (BUSI's PNGs are), else 1 — the default of every loader and of ``load_spec``.
        classes: the class folders to load, in label order; default all subfolders, sorted by name.
        masks: load ``*_mask.png`` / ``*_mask_N.png`` files as lesion masks when there are any.
        name: name of the dataset; default the folder's name.
        allow_split_names: load class folders named like splits (``train``, ``val``, ``test`` …) as classes. By
            default such a folder is an error, since ``root/SPLIT/CLASS`` (as ISIC ships) would otherwise load as
            classes called "train" and "test"; use :func:`load_split_folders` for that layout.

    Returns:
        A dataset with ``meta["file"]`` the path of each image relative to ``root``, in a deterministic order
        (class, then natural file-name order), no ``split`` (see :func:`medmae_nb.data.splits.assign_splits`), and
        ``masks`` when ``masks`` is True and at least one mask file exists (all False for images without one).

    Raises:
        DataError: root missing or a file, no class folders, class folders named like splits, an unknown or empty
            class, or an unreadable image (named).

    Example:
        >>> ds = load_image_folder("../shared/data/busi_256", classes=["normal", "benign"])  # doctest: +SKIP
    """
    image_size, channels = _check_options(image_size, channels)
    root = require_folder(
        root,
        "image folder",
        "pass the folder that holds one subfolder per class (or set MEDMAE_DATA and use a loader such as load_busi)",
    )
    found = _subfolders(root)
    if not found:
        raise DataError(f"{root} has no class subfolders; expected {root}/CLASS/IMAGE.png, e.g. benign/, malignant/")
    classes = list(found if classes is None else classes)
    unknown = [c for c in classes if c not in found]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise DataError(
            f"unknown or repeated class(es) {unknown or classes} requested; class folders in {root}: {found}"
        )
    split_like = [c for c in classes if c.strip().lower() in SPLIT_FOLDERS]
    if split_like and not allow_split_names:
        raise DataError(
            f"class folder(s) {split_like} in {root} are named like data splits, so {root} is probably laid out as "
            f"SPLIT/CLASS/IMAGE (as ISIC ships). Load every split with load_split_folders({str(root)!r}), or one "
            f"split with load_image_folder({str(root / split_like[0])!r}); pass allow_split_names=True if these "
            f"folders really are classes"
        )

    entries: list[_Entry] = []
    for label, cls in enumerate(classes):
        images, mask_files = _scan(root / cls)
        if not images:
            raise DataError(f"class folder {root / cls} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        entries += [(label, path, mask_files.get(path.stem, []) if masks else [], None) for path in images]
    return _load(root, entries, tuple(classes), image_size, channels, name or root.name)


def load_split_folders(
    root: str | Path,
    image_size: int = 64,
    channels: int | None = None,
    classes: list[str] | None = None,
    masks: bool = True,
    name: str | None = None,
) -> ImageDataset:
    """Loads ``root/SPLIT/CLASS/*.png`` (ISIC-, Kaggle chest X-ray-style) into one dataset with its ``split`` filled.

    Split folders may be called ``train``/``training``, ``val``/``valid``/``validation`` and ``test``/``testing``,
    in any case (``Train/``, ``VALID/``); not every split needs to be there (a missing one simply has no samples).
    Other folders beside the split folders are ignored with a warning, hidden ones and ``__MACOSX`` silently.

    Every split uses the same label order: ``classes``, or the class folders of all splits together, sorted. A class
    may be missing from a split (a tiny validation set often lacks a rare class): that is loaded, with a
    ``UserWarning`` naming the split and class, because the metrics of that split then cannot cover it. Class folders
    whose names differ only in case or surrounding spaces between splits (``Benign`` in train, ``benign`` in test) are
    an error, since they would become two classes.

    Args:
        root: folder holding the split folders.
        image_size: side of the square the images are resized to (bilinear, antialiased; aspect not kept).
        channels: 1 (gray), 3 (RGB), or None (default) for the files' native count: 3 when any image loaded is
            stored in colour (BUSI's PNGs are), else 1 — the default of every loader and of ``load_spec``.
        classes: the classes to load, in label order; default every class folder found in any split, sorted.
        masks: load ``*_mask.png`` / ``*_mask_N.png`` files as lesion masks when there are any.
        name: name of the dataset; default the folder's name.

    Returns:
        A dataset whose ``split`` is ``"train"``, ``"val"`` or ``"test"`` (whatever the folders were called),
        ordered by split, then class, then natural file-name order; ``meta["file"]`` the path relative to ``root``
        (e.g. ``"Train/benign/x.png"``).

    Raises:
        DataError: root missing or a file, no split folders, two folders for one split, a split folder without class
            folders, class names differing only in case, an unknown class or one with no images in any split, or an
            unreadable image (named).

    Example:
        >>> ds = load_split_folders("ISIC2018", image_size=64, channels=3)  # doctest: +SKIP
        >>> ds.get_split("test").class_counts()  # doctest: +SKIP
    """
    image_size, channels = _check_options(image_size, channels)
    root = require_folder(
        root, "split folder", "pass the folder that holds train/, val/ and test/, each with one subfolder per class"
    )
    split_dirs: dict[str, Path] = {}
    ignored = []
    for folder in _subfolders(root):
        split = SPLIT_FOLDERS.get(folder.strip().lower())
        if split is None:
            ignored.append(folder)
        elif split in split_dirs:
            raise DataError(
                f"{root}: both {split_dirs[split].name}/ and {folder}/ name the {split!r} split; merge them or "
                f"rename one"
            )
        else:
            split_dirs[split] = root / folder
    if not split_dirs:
        nested = [f for f in ignored if any(g.strip().lower() in SPLIT_FOLDERS for g in _subfolders(root / f))]
        hint = (
            f"; the split folders seem to lie one level down, in {root / nested[0]}"
            if nested
            else "; for the layout CLASS/IMAGE (no splits) use load_image_folder"
        )
        raise DataError(
            f"{root} has no split folders (looked for {', '.join(sorted(SPLIT_FOLDERS))}, in any case); it holds "
            f"{ignored or 'no folders'}{hint}"
        )
    if ignored:
        warnings.warn(
            f"{root}: folder(s) {ignored} are not split folders ({', '.join(sorted(SPLIT_FOLDERS))}) and were ignored",
            UserWarning,
            stacklevel=2,
        )

    ordered = [(s, split_dirs[s]) for s in SPLITS if s in split_dirs]
    per_split: dict[str, list[str]] = {}
    for split, folder in ordered:
        per_split[split] = _subfolders(folder)
        if not per_split[split]:
            loose = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())
            what = "holds images but no class folders" if loose else "holds no class folders"
            raise DataError(f"split folder {folder} {what}; expected {folder}/CLASS/IMAGE.png, e.g. benign/")
    spellings: dict[str, set[str]] = {}
    for names in per_split.values():
        for cls in names:
            spellings.setdefault(cls.strip().casefold(), set()).add(cls)
    clashes = [sorted(v) for v in spellings.values() if len(v) > 1]
    if clashes:
        where = {c: [s for s, names in per_split.items() if c in names] for group in clashes for c in group}
        raise DataError(
            f"class folders {', '.join(f'{c!r} (in {where[c]})' for c in clashes[0])} differ only in case or spaces "
            f"and would load as different classes; rename them so that every split spells each class the same way"
        )
    found = sorted({c for names in per_split.values() for c in names})
    classes = list(found if classes is None else classes)
    unknown = [c for c in classes if c not in found]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise DataError(
            f"unknown or repeated class(es) {unknown or classes} requested; class folders in the splits of {root}: "
            f"{found}"
        )

    entries: list[_Entry] = []
    missing: dict[str, list[str]] = {}
    for split, folder in ordered:
        for label, cls in enumerate(classes):
            images, mask_files = _scan(folder / cls) if cls in per_split[split] else ([], {})
            if not images:
                missing.setdefault(split, []).append(cls)
            entries += [(label, path, mask_files.get(path.stem, []) if masks else [], split) for path in images]
    empty = [c for c in classes if all(c in missing.get(s, []) for s, _ in ordered)]
    if empty:
        raise DataError(
            f"class(es) {empty} have no images in any split of {root} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    if missing:
        warnings.warn(
            f"{root}: "
            + "; ".join(f"split {s!r} has no images of class(es) {cs}" for s, cs in missing.items())
            + f". Labels keep the order {tuple(classes)} in every split, but metrics on such a split cannot cover "
            f"the missing classes",
            UserWarning,
            stacklevel=2,
        )
    return _load(root, entries, tuple(classes), image_size, channels, name or root.name)


def _load(
    root: Path, entries: list[_Entry], classes: tuple[str, ...], image_size: int, channels: int | None, name: str
) -> ImageDataset:
    """Reads every entry (through the cache of recent loads) into one dataset; ``channels=None``: 3 when any entry's
    file is stored in colour, else 1."""
    if channels is None:
        channels = 3 if any(_is_colour_file(p) for _, p, _, _ in entries) else 1
    files = [p for _, p, ms, _ in entries for p in (p, *ms)]
    key = (
        str(root.resolve()),
        tuple((label, split, str(p), len(ms)) for label, p, ms, split in entries),
        tuple((str(p), *_stamp(p)) for p in files),
        image_size,
        channels,
        classes,
    )
    if key in _CACHE:
        cached = _CACHE[key]
        return cached.subset(np.arange(len(cached)), name=name)

    def read(entry: _Entry) -> tuple[np.ndarray, np.ndarray | None]:
        _, path, mask_paths, _ = entry
        return _read_image(path, image_size, channels), _read_mask(mask_paths, image_size) if mask_paths else None

    # PIL releases the GIL while decoding, so threads give a real speed-up on multi-core machines.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = list(pool.map(read, entries))
    has_masks = any(m is not None for _, m in loaded)
    empty = np.zeros((image_size, image_size), bool)
    with_split = any(split is not None for *_, split in entries)
    ds = ImageDataset(
        images=np.stack([x for x, _ in loaded]),
        labels=np.array([label for label, *_ in entries], np.int64),
        class_names=classes,
        masks=np.stack([empty if m is None else m for _, m in loaded]) if has_masks else None,
        split=np.array([split for *_, split in entries], dtype="<U5") if with_split else None,
        meta={"file": np.array([p.relative_to(root).as_posix() for _, p, _, _ in entries])},
        name=name,
    )
    if ds.images.nbytes <= _CACHE_MAX_BYTES:
        while len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = ds.subset(np.arange(len(ds)))  # a private copy: callers may edit their arrays in place
    return ds


def _check_options(image_size: int, channels: int | None) -> tuple[int, int | None]:
    if isinstance(channels, bool) or channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (gray), 3 (RGB) or None (the files' native count), got {channels!r}")
    try:
        ok = not isinstance(image_size, bool) and int(image_size) == image_size and image_size >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DataError(f"image_size must be a positive integer (the side of the square images), got {image_size!r}")
    return int(image_size), None if channels is None else int(channels)


def _subfolders(folder: Path) -> list[str]:
    # Hidden folders and the __MACOSX folder that macOS zips carry are never data.
    return sorted(
        d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX"
    )


def find_busi(root: str | Path | None = None) -> Path:
    """The BUSI folder (the one holding ``normal/``, ``benign/`` and ``malignant/``) under ``root``.

    Args:
        root: the BUSI folder, or a data root holding it as ``busi_256_gt/``, ``busi_256/``, ``busi/`` or
            ``Dataset_BUSI_with_GT/`` (tried in that order, so a copy with lesion masks is preferred); None means
            ``$MEDMAE_DATA``.

    Raises:
        DataError: root None without ``MEDMAE_DATA``, root a file, or no candidate holding the three class folders.
    """
    if root is None:
        env = os.environ.get("MEDMAE_DATA")
        if not env:
            raise DataError(
                f"no BUSI folder: root is None and MEDMAE_DATA is not set; set MEDMAE_DATA to your data "
                f"folder or pass root=... . Get {BUSI_SOURCE}"
            )
        root = env
    base = Path(root).expanduser()
    if base.is_file():
        require_folder(base, "BUSI folder", "pass the BUSI folder or the data root that holds it")
    candidates = [base] + [base / folder for folder in BUSI_FOLDERS]
    for path in candidates:
        if all((path / cls).is_dir() for cls in BUSI_CLASSES):
            return path
    raise DataError(
        f"BUSI not found: none of {', '.join(map(str, candidates))} holds the folders {BUSI_CLASSES}. "
        f"Get {BUSI_SOURCE}, and set MEDMAE_DATA or pass root"
    )


def load_busi(root: str | Path | None = None, image_size: int = 64, channels: int | None = None) -> ImageDataset:
    """Loads BUSI (breast ultrasound: normal, benign, malignant) with its lesion masks when present.

    Args:
        root: the BUSI folder, or a data root holding it as ``busi_256/``, ``busi/`` or ``Dataset_BUSI_with_GT/``;
            None means ``$MEDMAE_DATA``. See :func:`find_busi`.
        image_size: side of the square the images are resized to.
        channels: 1 (gray), 3 (RGB), or None (default) for the files' native count: 3 when any image loaded is
            stored in colour (BUSI's PNGs are), else 1 — the default of every loader and of ``load_spec``.

    Returns:
        780 images in the original release, labels 0 normal, 1 benign, 2 malignant (the phantom's order), no split.

    References:
        Al-Dhabyani et al., "Dataset of breast ultrasound images", Data in Brief 28:104863 (2020).

    Example:
        >>> load_busi("../shared/data").class_counts()  # doctest: +SKIP
        {'normal': 133, 'benign': 437, 'malignant': 210}
    """
    return load_image_folder(find_busi(root), image_size, channels, classes=list(BUSI_CLASSES), name="busi")


def detect_folder_layout(root: str | Path) -> str:
    """Which of the three folder layouts ``root`` has, from its folder names and where its images lie.

    * ``"split"``: a subfolder is named like a split (``train``, ``val``, ``test`` … in any case, see
      ``SPLIT_FOLDERS``): ``root/SPLIT/CLASS/IMAGE``, for :func:`load_split_folders`;
    * ``"class"``: two or more subfolders, each holding images directly: ``root/CLASS/IMAGE``, for
      :func:`load_image_folder`;
    * ``"unlabelled"``: anything else: images directly in ``root``, a single subfolder (one class gives nothing to
      classify), or images nested without that structure (``root/patient/study/IMAGE``), for
      :func:`load_unlabelled_folder`.

    Folders of one subfolder per patient, each with images directly, look exactly like class folders and are read as
    such; load them with :func:`load_unlabelled_folder` to ignore the folders. Where only some subfolders hold images
    directly, or images lie loose beside subfolders, the layout is ``"unlabelled"`` and a ``UserWarning`` says why,
    since class folders were probably meant.

    Raises:
        DataError: root missing or a file.

    Example:
        >>> detect_folder_layout("../shared/data/busi_256")  # doctest: +SKIP
        'class'
    """
    root = require_folder(
        root, "image folder", "pass the folder that holds the images (in class folders, split folders, or loose)"
    )
    subs = _subfolders(root)
    if any(sub.strip().lower() in SPLIT_FOLDERS for sub in subs):
        return "split"
    loose = _list_images(root)
    with_images = [sub for sub in subs if _list_images(root / sub)]
    if loose and with_images:
        warnings.warn(
            f"{root} holds {len(loose)} image(s) directly (e.g. {loose[0].name}) beside subfolders with images "
            f"{with_images[:3]}, so the subfolders are not read as classes: every image below {root} loads "
            f"unlabelled, for pre-training. To load classes, move the loose images into class folders",
            UserWarning,
            stacklevel=2,
        )
    elif len(subs) >= 2 and len(with_images) == len(subs):
        return "class"
    elif with_images and len(subs) >= 2:
        without = [sub for sub in subs if sub not in with_images]
        warnings.warn(
            f"{root}: subfolder(s) {without[:3]} hold no images directly while {with_images[:3]} do, so the "
            f"subfolders are not read as classes: every image below {root} loads unlabelled, for pre-training. To "
            f"load classes, put each class's images directly in its folder ({root}/CLASS/IMAGE.png) and move other "
            f"folders out",
            UserWarning,
            stacklevel=2,
        )
    return "unlabelled"


def load_unlabelled_folder(
    root: str | Path,
    image_size: int = 64,
    channels: int | None = None,
    masks: bool = True,
    name: str | None = None,
) -> ImageDataset:
    """Loads every image below ``root``, at any depth, as one dataset without labels, for self-supervised pre-training.

    Subfolders are walked in name order (hidden ones and ``__MACOSX`` skipped; ``*_mask.png`` files are masks, as in
    the other loaders). The folder names carry no meaning here: to use them as classes, see :func:`load_image_folder`.

    An :class:`ImageDataset` cannot yet hold "no label" (its labels must index ``class_names``), so the result has the
    one class ``UNLABELLED`` with every label 0, and ``meta["unlabelled"]`` True for every sample: the marker that
    :func:`medmae_nb.data.spec.is_unlabelled` reads. Once ``ImageDataset`` accepts labels of -1 with no class names,
    the result has those instead (and the same marker). Either way the labels must not be used for training or
    evaluation; ``class_counts()`` is meaningless.

    Args:
        root: the folder.
        image_size: side of the square the images are resized to (bilinear, antialiased; aspect not kept).
        channels: 1 (gray), 3 (RGB), or None (default) for the files' native count: 3 when any image loaded is
            stored in colour (BUSI's PNGs are), else 1 — the default of every loader and of ``load_spec``.
        masks: load ``*_mask.png`` / ``*_mask_N.png`` files as lesion masks when there are any.
        name: name of the dataset; default the folder's name.

    Returns:
        A dataset with no ``split`` and ``meta["file"]`` each image's path relative to ``root``.

    Raises:
        DataError: root missing or a file, no images below it, or an unreadable image (named).

    Example:
        >>> ds = load_unlabelled_folder("scans/", image_size=64)  # doctest: +SKIP
        >>> ds.meta["unlabelled"].all()  # doctest: +SKIP
        True
    """
    image_size, channels = _check_options(image_size, channels)
    root = require_folder(root, "image folder", "pass the folder that holds the images, directly or in subfolders")
    entries: list[_Entry] = []
    for folder in _tree(root):
        images, mask_files = _scan(folder)
        entries += [(0, path, mask_files.get(path.stem, []) if masks else [], None) for path in images]
    if not entries:
        raise DataError(
            f"{root} holds no images, directly or in subfolders (looked for {', '.join(IMAGE_EXTENSIONS)}); pass the "
            f"folder that holds them"
        )
    ds = _load(root, entries, (UNLABELLED,), image_size, channels, name or root.name)
    ds.meta[UNLABELLED] = np.ones(len(ds), bool)
    if _accepts_no_labels():
        ds = ImageDataset(ds.images, np.full(len(ds), -1), (), ds.masks, None, ds.meta, ds.name)
    return ds


def folder_channels(root: str | Path, layout: str | None = None) -> int:
    """The native channel count of the images a folder holds, read from the file headers (no pixels decoded, except
    for palette images, whose palette says whether they hold colour).

    Returns 3 when any image file the layout loads is stored in colour (RGB, RGBA, CMYK, YCbCr …, or a palette with
    colours), else 1 (gray, 16-bit, float). A file stored as RGB counts as colour even when its three channels are
    equal (BUSI's PNGs are like that); :func:`medmae_nb.data.spec.is_grayscale` checks the loaded pixels instead.

    Args:
        root: the folder.
        layout: ``"split"``, ``"class"`` or ``"unlabelled"``; default :func:`detect_folder_layout`'s answer.

    Raises:
        DataError: root missing or a file, or an unknown layout.
    """
    root = require_folder(root, "image folder", "pass the folder that holds the images")
    layout = layout or detect_folder_layout(root)
    if layout == "split":
        folders = [root / s / c for s in _subfolders(root) if s.strip().lower() in SPLIT_FOLDERS
                   for c in _subfolders(root / s)]
    elif layout == "class":
        folders = [root / c for c in _subfolders(root)]
    elif layout == "unlabelled":
        folders = _tree(root)
    else:
        raise DataError(f"unknown folder layout {layout!r}; use one of {LAYOUTS}")
    return 3 if any(_is_colour_file(path) for folder in folders for path in _list_images(folder)) else 1


def _accepts_no_labels() -> bool:
    """Whether ImageDataset accepts labels of -1 with no class names (a later base.py may; this one does not)."""
    try:
        ImageDataset(np.zeros((1, 1, 1, 1), np.float32), np.array([-1]), ())
    except DataError:
        return False
    return True


def _list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, masks and hidden files left out; silent, unlike ``_scan``."""
    return [
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith(".")
        and not _MASK.match(p.stem)
    ]


def _tree(root: Path) -> list[Path]:
    """``root`` and every folder below it (hidden ones and ``__MACOSX`` left out), depth first in name order; a
    symbolic link back to a folder already listed is not followed again."""
    out, seen, stack = [], set(), [root]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        out.append(folder)
        stack += [folder / sub for sub in reversed(_subfolders(folder))]
    return out


def _is_colour_file(path: Path) -> bool:
    """Whether an image file is stored in colour, from its header; an unreadable file counts as gray (the loader
    names it when it fails to read it)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA"):
                palette = np.asarray(im.getpalette() or [], np.int64)
                rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)
                return bool((rgb != rgb[:, :1]).any())
            return im.mode not in _GRAY_MODES
    except _DECODE_ERRORS:
        return False


def _natural(path: Path) -> list:
    # "benign (2)" before "benign (10)", as a person would list them.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _scan(folder: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        ),
        key=_natural,
    )
    images, mask_files = [], {}
    for path in files:
        match = _MASK.match(path.stem)
        if match:
            mask_files.setdefault(match["stem"], []).append(path)
        else:
            images.append(path)
    orphans = sorted(set(mask_files) - {p.stem for p in images})
    if orphans:
        warnings.warn(
            f"{folder}: {len(orphans)} mask file(s) without an image, ignored (e.g. {orphans[0]}_mask)",
            UserWarning,
            stacklevel=3,
        )
    return images, mask_files


def _open(path: Path, draft: tuple[str, tuple[int, int]] | None = None) -> Image.Image:
    """Opens and decodes an image; on any decoding error the file is closed and a ``DataError`` names it."""
    try:
        im = Image.open(path)
    except _DECODE_ERRORS as err:  # Image.open closes the file itself when it cannot identify it
        raise DataError(
            f"cannot read image {path}: {err}. It is no image PIL can read (empty, damaged, or another kind of file "
            f"under an image extension); replace or delete the file"
        ) from None
    try:
        if draft is not None:
            # JPEG only: decode at a reduced scale (still >= size) instead of full size, several times faster.
            im.draft(*draft)
        im.load()
    except _DECODE_ERRORS as err:
        # A truncated JPEG fails here, after opening: without close() its file handle would leak.
        im.close()
        raise DataError(
            f"cannot read image {path}: {err}. The file is truncated or corrupt (an interrupted copy or download?); "
            f"replace or delete it"
        ) from None
    return im


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as float32 ``(channels, size, size)`` in ``[0, 1]``."""
    with _open(path, ("RGB" if channels == 3 else "L", (size, size))) as im:
        if im.mode in _HIGH_DEPTH:
            # Scale by the format's range, not the image's max, so intensities stay comparable between images.
            a = np.asarray(im, dtype=np.float32)
            a = np.clip(a if im.mode == "F" else a / 65535.0, 0.0, 1.0)
            if a.shape != (size, size):
                a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR), np.float32)
            x = np.clip(a, 0.0, 1.0)[None]
            return np.repeat(x, 3, axis=0) if channels == 3 else x
        # convert() handles palette, alpha (dropped), CMYK, 1-bit and YCbCr alike.
        rgb = im.convert("RGB" if channels == 3 else "L")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    a = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _read_mask(paths: list[Path], size: int) -> np.ndarray:
    """The union of one image's mask files as bool ``(size, size)``: any non-zero pixel is lesion."""
    union = None
    for path in paths:
        with _open(path) as im:
            m = np.asarray(im) if im.mode in _HIGH_DEPTH else np.asarray(im.convert("L"))
        m = m.reshape(m.shape[0], m.shape[1], -1).max(axis=-1) > 0
        if union is not None and m.shape != union.shape:
            m = np.asarray(Image.fromarray(m).resize(union.shape[::-1], Image.Resampling.NEAREST))
        union = m if union is None else union | m
    # Antialiased resize then a 50 % threshold keeps a lesion's shape better than nearest neighbour when shrinking.
    small = Image.fromarray(union.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(small) >= 128
