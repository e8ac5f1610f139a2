"""Images in class folders (BUSI, ISIC- or Kvasir-style), with optional lesion masks beside them.

The layout is ``root/CLASS/IMAGE.ext``, one subfolder per class. A file named ``IMAGE_mask.png`` (or
``IMAGE_mask_1.png``, ``IMAGE_mask_2.png`` … where an image has several lesions, as in BUSI) is the lesion mask of
``IMAGE``, not an image; several masks of one image are OR-ed. Every image is converted to gray or RGB, scaled to
``[0, 1]`` (16-bit images by 65535, not clipped) and resized to a square, so any mix of modes and sizes loads into
one array.

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

from .base import DataError, ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
BUSI_CLASSES = ("normal", "benign", "malignant")  # the phantom's order, so label 0 is "normal" everywhere
BUSI_FOLDERS = ("busi_256", "busi", "Dataset_BUSI_with_GT")
BUSI_SOURCE = (
    "BUSI (Al-Dhabyani et al. 2020) from https://scholar.cu.edu.eg/?q=afahmy/pages/dataset, unzipped so "
    "that benign/, malignant/ and normal/ are subfolders"
)

_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$", re.IGNORECASE)
_HIGH_DEPTH = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# Recent loads, keyed by root, every file's (path, mtime, size) and the options: re-running a notebook cell then
# costs a directory scan instead of decoding hundreds of images. Entries above _CACHE_MAX_BYTES are not kept.
_CACHE: dict[tuple, ImageDataset] = {}
_CACHE_ENTRIES = 4
_CACHE_MAX_BYTES = 256 << 20


def load_image_folder(
    root: str | Path,
    image_size: int = 64,
    channels: int = 1,
    classes: list[str] | None = None,
    masks: bool = True,
    name: str | None = None,
) -> ImageDataset:
    """Loads ``root/CLASS/*.{png,jpg,jpeg,bmp,tif,tiff}`` into one in-memory dataset.

    Args:
        root: folder with one subfolder per class.
        image_size: side of the square the images are resized to (bilinear, antialiased; aspect not kept).
        channels: 1 for gray, 3 for RGB.
        classes: the class folders to load, in label order; default all subfolders, sorted by name.
        masks: load ``*_mask.png`` / ``*_mask_N.png`` files as lesion masks when there are any.
        name: name of the dataset; default the folder's name.

    Returns:
        A dataset with ``meta["file"]`` the path of each image relative to ``root``, in a deterministic order
        (class, then natural file-name order), no ``split`` (see :func:`medmae_nb.data.splits.assign_splits`), and
        ``masks`` when ``masks`` is True and at least one mask file exists (all False for images without one).

    Raises:
        DataError: root missing, no class folders, an unknown or empty class, or an unreadable image.

    Example:
        >>> ds = load_image_folder("../shared/data/busi_256", classes=["normal", "benign"])  # doctest: +SKIP
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if int(image_size) != image_size or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    image_size = int(image_size)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; pass the folder that holds one subfolder per class "
            f"(or set MEDMAE_DATA and use a loader such as load_busi)"
        )
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{root} has no class subfolders; expected {root}/CLASS/IMAGE.png, e.g. benign/, malignant/")
    classes = list(found if classes is None else classes)
    unknown = [c for c in classes if c not in found]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise DataError(
            f"unknown or repeated class(es) {unknown or classes} requested; class folders in {root}: {found}"
        )

    entries: list[tuple[int, Path, list[Path]]] = []
    for label, cls in enumerate(classes):
        images, mask_files = _scan(root / cls)
        if not images:
            raise DataError(f"class folder {root / cls} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        entries += [(label, path, mask_files.get(path.stem, []) if masks else []) for path in images]

    files = [p for _, p, ms in entries for p in (p, *ms)]
    key = (str(root.resolve()), tuple((str(p), *_stamp(p)) for p in files), image_size, channels, masks, tuple(classes))
    if key in _CACHE:
        cached = _CACHE[key]
        return cached.subset(np.arange(len(cached)), name=name or root.name)

    def read(entry: tuple[int, Path, list[Path]]) -> tuple[np.ndarray, np.ndarray | None]:
        _, path, mask_paths = entry
        return _read_image(path, image_size, channels), _read_mask(mask_paths, image_size) if mask_paths else None

    # PIL releases the GIL while decoding, so threads give a real speed-up on multi-core machines.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = list(pool.map(read, entries))
    has_masks = any(m is not None for _, m in loaded)
    empty = np.zeros((image_size, image_size), bool)
    ds = ImageDataset(
        images=np.stack([x for x, _ in loaded]),
        labels=np.array([label for label, _, _ in entries], np.int64),
        class_names=tuple(classes),
        masks=np.stack([empty if m is None else m for _, m in loaded]) if has_masks else None,
        meta={"file": np.array([p.relative_to(root).as_posix() for _, p, _ in entries])},
        name=name or root.name,
    )
    if ds.images.nbytes <= _CACHE_MAX_BYTES:
        while len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = ds.subset(np.arange(len(ds)))  # a private copy: callers may edit their arrays in place
    return ds


def load_busi(root: str | Path | None = None, image_size: int = 64, channels: int = 1) -> ImageDataset:
    """Loads BUSI (breast ultrasound: normal, benign, malignant) with its lesion masks when present.

    Args:
        root: the BUSI folder, or a data root holding it as ``busi_256/``, ``busi/`` or ``Dataset_BUSI_with_GT/``;
            None means ``$MEDMAE_DATA``.
        image_size: side of the square the images are resized to.
        channels: 1 for gray, 3 for RGB.

    Returns:
        780 images in the original release, labels 0 normal, 1 benign, 2 malignant (the phantom's order), no split.

    References:
        Al-Dhabyani et al., "Dataset of breast ultrasound images", Data in Brief 28:104863 (2020).

    Example:
        >>> load_busi("../shared/data").class_counts()  # doctest: +SKIP
        {'normal': 133, 'benign': 437, 'malignant': 210}
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
    candidates = [base] + [base / folder for folder in BUSI_FOLDERS]
    for path in candidates:
        if all((path / cls).is_dir() for cls in BUSI_CLASSES):
            return load_image_folder(path, image_size, channels, classes=list(BUSI_CLASSES), name="busi")
    raise DataError(
        f"BUSI not found: none of {', '.join(map(str, candidates))} holds the folders {BUSI_CLASSES}. "
        f"Get {BUSI_SOURCE}, and set MEDMAE_DATA or pass root"
    )


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


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as float32 ``(channels, size, size)`` in ``[0, 1]``."""
    try:
        im = Image.open(path)
        # JPEG only: decode at a reduced scale (still >= size) instead of full size, several times faster.
        im.draft("RGB" if channels == 3 else "L", (size, size))
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    with im:
        if im.mode in _HIGH_DEPTH:
            # Scale by the format's range, not the image's max, so intensities stay comparable between images.
            a = np.asarray(im, dtype=np.float32)
            a = np.clip(a if im.mode == "F" else a / 65535.0, 0.0, 1.0)
            if a.shape != (size, size):
                a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR), np.float32)
            x = np.clip(a, 0.0, 1.0)[None]
            return np.repeat(x, 3, axis=0) if channels == 3 else x
        # convert() handles palette, alpha (dropped), CMYK, 1-bit and YCbCr alike.
        im = im.convert("RGB" if channels == 3 else "L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        a = np.asarray(im, dtype=np.float32) / np.float32(255.0)
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
