"""One dataset spec for every entry point: a short string names the data, :func:`load_spec` loads it.

Notebooks, command lines and configuration files all name their data the same way, and every loader is called with
the same defaults (``image_size=64``, the data's own channel count), so a chapter run on ``"phantom"`` can be re-run
on ``"medmnist:breastmnist"`` or ``"folder:/data/my_scans"`` by changing one string.

The forms (keywords are case-insensitive; ``str(parse_spec(text))`` gives the canonical form back):

===========================  ===========================================================================================
``phantom``                  the embedded breast-ultrasound phantom, with a train/val/test split
``medmnist:NAME``            a 2D MedMNIST v2 dataset (``pathmnist``, ``breastmnist`` …), official split kept
``medmnist:NAME@SIZE``       the same, read from the 28/64/128/224-px release file (MedMNIST+)
``folder:PATH``              a folder, its layout detected: ``PATH/{train,val,test}/CLASS/*`` (split kept, never
                             re-split), ``PATH/CLASS/*`` (no split: the caller splits), or unlabelled images
                             (directly in ``PATH`` or nested without classes; for pre-training only)
``unlabelled:PATH``          every image below ``PATH``, folder names ignored (e.g. one folder per patient)
``busi``                     BUSI under ``root`` or ``$MEDMAE_DATA`` (``busi_256_gt/`` preferred, for its masks),
                             classes in the phantom's order (normal, benign, malignant)
``PATH``                     an existing folder: the same as ``folder:PATH``
===========================  ===========================================================================================

Channels: ``channels=None`` keeps the data's native count: 1 for the phantom, the gray MedMNIST sets and folders of
gray files; 3 for pathmnist, dermamnist, bloodmnist, retinamnist and folders holding any colour file. Gray is made
only when ``channels=1`` is asked (ITU-R 601 luma), RGB from gray only when ``channels=3`` is asked (replicated).
Native means how the files are stored: BUSI's PNGs are RGB files whose three channels are equal in 764 of the 780
images (the other 16 carry coloured annotations or a tint), so BUSI is native 3; :func:`is_grayscale` and
:func:`colour_images` check the loaded pixels, so a caller can decide whether ``channels=1`` loses anything.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from .base import DataError, ImageDataset, require_folder
from .folders import (
    UNLABELLED,
    detect_folder_layout,
    find_busi,
    folder_channels,
    load_busi,
    load_image_folder,
    load_split_folders,
    load_unlabelled_folder,
)
from .medmnist import DATASETS_2D, N_CHANNELS, SIZES, VOLUMES, load_medmnist
from .synthetic import make_phantom_splits

KINDS = ("phantom", "medmnist", "folder", "unlabelled", "busi")
#: What ``make_phantom_splits`` gets for ``"phantom"`` unless ``load_spec`` is given other values (the chapters' sizes).
PHANTOM_DEFAULTS: dict[str, int] = {"n_train": 3000, "n_val": 300, "n_test": 600, "seed": 0}
#: The accepted forms, one per line, for error messages and command-line help.
SPEC_FORMS = (
    "phantom\n"
    f"medmnist:NAME or medmnist:NAME@SIZE (NAME one of {', '.join(DATASETS_2D)}; SIZE one of "
    f"{', '.join(map(str, SIZES))})\n"
    "folder:PATH (class folders PATH/CLASS/*, split folders PATH/{train,val,test}/CLASS/*, or unlabelled images)\n"
    "unlabelled:PATH (every image below PATH, labels ignored)\n"
    "busi (BUSI under root or $MEDMAE_DATA)\n"
    "an existing folder PATH (the same as folder:PATH)"
)
_FORMS_INLINE = "; ".join(SPEC_FORMS.splitlines())
_PATH_KINDS = ("folder", "unlabelled")


@dataclass(frozen=True)
class DataSpec:
    """A parsed dataset spec: which data, not how large or how many channels (those are :func:`load_spec`'s).

    Args:
        kind: one of ``KINDS``: ``"phantom"``, ``"medmnist"``, ``"folder"``, ``"unlabelled"`` or ``"busi"``.
        name: the MedMNIST dataset (``"breastmnist"``), for ``kind="medmnist"`` only; lower-cased.
        size: the MedMNIST release file to read (28, 64, 128 or 224), or None to let the loader choose; for
            ``kind="medmnist"`` only.
        path: the folder, as written (``~`` and relative paths are resolved on loading); for ``"folder"`` and
            ``"unlabelled"`` only.

    Raises:
        DataError: an unknown kind, a field the kind does not take or lacks, an unknown MedMNIST name or size.

    Example:
        >>> str(DataSpec("medmnist", name="BreastMNIST", size=64))
        'medmnist:breastmnist@64'
        >>> parse_spec(str(DataSpec("folder", path="data/scans/"))) == DataSpec("folder", path="data/scans")
        True
    """

    kind: str
    name: str | None = None
    size: int | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        kind = str(self.kind).lower()
        if kind not in KINDS:
            raise DataError(f"unknown dataset kind {self.kind!r}; use one of {KINDS}. Spec strings: {_FORMS_INLINE}")
        object.__setattr__(self, "kind", kind)
        if kind == "medmnist":
            object.__setattr__(self, "name", _check_medmnist_name(self.name))
            if self.size is not None:
                if isinstance(self.size, bool) or self.size not in SIZES:
                    raise DataError(
                        f"MedMNIST SIZE must be one of {SIZES} (the release files), got {self.size!r}; for images of "
                        f"another size pass image_size=... to load_spec"
                    )
                object.__setattr__(self, "size", int(self.size))
        elif self.name is not None or self.size is not None:
            raise DataError(f"{kind!r} takes no name or size (those are for medmnist:NAME@SIZE)")
        if kind in _PATH_KINDS:
            if self.path is None or not str(os.fspath(self.path)).strip():
                raise DataError(f"{kind}:PATH needs a folder path, e.g. {kind}:/data/my_scans")
            # PurePath drops a trailing slash and a leading ./, so "x/" and "x" are the same spec.
            object.__setattr__(self, "path", str(PurePath(str(os.fspath(self.path)).strip())))
        elif self.path is not None:
            raise DataError(f"{kind!r} takes no path (paths are for folder:PATH and unlabelled:PATH)")

    def __str__(self) -> str:
        if self.kind == "medmnist":
            return f"medmnist:{self.name}" + ("" if self.size is None else f"@{self.size}")
        if self.kind in _PATH_KINDS:
            return f"{self.kind}:{self.path}"
        return self.kind


def parse_spec(text: str | os.PathLike | DataSpec) -> DataSpec:
    """Parses a dataset spec string (see the module docstring for the forms) into a :class:`DataSpec`.

    Parsing checks the form and the MedMNIST name and size, not that the data exist (except for a bare path, which is
    recognised as one by existing): a spec can name data that live on another machine. A keyword wins over a folder
    of the same name in the working directory: write ``folder:phantom`` or ``./phantom`` for that folder.

    Args:
        text: the spec; a :class:`DataSpec` is returned as is, an ``os.PathLike`` is read as ``folder:PATH``.

    Raises:
        DataError: an empty, unknown or ill-formed spec, with the accepted forms.

    Example:
        >>> parse_spec("MedMNIST:PathMNIST@128")
        DataSpec(kind='medmnist', name='pathmnist', size=128, path=None)
        >>> str(parse_spec("phantom"))
        'phantom'
    """
    if isinstance(text, DataSpec):
        return text
    if isinstance(text, os.PathLike):
        return DataSpec("folder", path=os.fspath(text))
    if not isinstance(text, str):
        raise DataError(f"a dataset spec is a string such as 'phantom' or 'medmnist:breastmnist', got {text!r}")
    raw = text.strip()
    if not raw:
        raise DataError(f"empty dataset spec; use one of: {_FORMS_INLINE}")
    head, sep, rest = raw.partition(":")
    key = head.strip().lower()
    if key == "medmnist" and sep:
        name, at, size = rest.strip().partition("@")
        if at and not re.fullmatch(r"\s*\d+\s*", size):
            raise DataError(f"{raw!r}: SIZE after @ must be one of {SIZES}, got {size!r}; e.g. medmnist:{name}@64")
        return DataSpec("medmnist", name=name.strip(), size=int(size) if at else None)
    if key in _PATH_KINDS and sep:
        return DataSpec(key, path=rest)
    if not sep and key in ("phantom", "busi"):
        return DataSpec(key)
    if not sep and key in ("medmnist", *_PATH_KINDS):
        example = "medmnist:breastmnist" if key == "medmnist" else f"{key}:/data/my_scans"
        raise DataError(f"{raw!r} needs {'a NAME' if key == 'medmnist' else 'a PATH'} after a colon, e.g. {example}")
    if sep and key in ("phantom", "busi"):
        raise DataError(
            f"{raw!r}: {key} takes nothing after a colon; pass image_size=... and channels=... to load_spec (and "
            f"root=... for busi)"
        )
    if Path(raw).expanduser().exists():  # a bare path; also one with a colon, such as C:\data
        if not Path(raw).expanduser().is_dir():
            raise DataError(
                f"{raw!r} is a file, not a folder; a folder spec names the folder that holds the images (for a "
                f"MedMNIST .npz use medmnist:NAME with root= the folder holding it)"
            )
        return DataSpec("folder", path=raw)
    hint = ""
    if not sep and (key in DATASETS_2D or key in VOLUMES):
        hint = f" Did you mean medmnist:{key}?"
    elif not sep and ("/" in raw or "\\" in raw or raw.startswith((".", "~"))):
        hint = f" It looks like a path, but {Path(raw).expanduser()} does not exist."
    raise DataError(f"unknown dataset spec {raw!r}.{hint} Accepted forms: {_FORMS_INLINE}")


def load_spec(
    spec: str | os.PathLike | DataSpec,
    *,
    image_size: int = 64,
    channels: int | None = None,
    root: str | os.PathLike | None = None,
    **phantom_kwargs: object,
) -> ImageDataset:
    """Loads the data a spec names, with one set of defaults for every kind.

    * ``phantom``: ``make_phantom_splits(**PHANTOM_DEFAULTS)`` (3000/300/600 images, seed 0), overridden by
      ``phantom_kwargs`` (``n_train``, ``n_val``, ``n_test``, ``seed``, ``difficulty``, ``binary``, ``cache``,
      ``speckle``); gray, with masks and a split.
    * ``medmnist:NAME[@SIZE]``: :func:`~medmae_nb.data.medmnist.load_medmnist` from ``root`` or ``$MEDMAE_DATA``
      (the file directly there or in ``medmnist/``); the official train/val/test in ``split``. Without ``@SIZE`` the
      smallest release file on disk at least ``image_size`` large is read (else the largest), then resized: the
      28-px files are enlarged to 64 px by default, so pass ``image_size=28`` to keep them as they are. ChestMNIST is
      multi-label and refused with a ``DataError`` saying so.
    * ``folder:PATH``: split folders (:func:`~medmae_nb.data.folders.load_split_folders`, ``split`` from the folder
      names, never re-split), class folders (:func:`~medmae_nb.data.folders.load_image_folder`, no split) or
      unlabelled images (:func:`~medmae_nb.data.folders.load_unlabelled_folder`, marked so that :func:`is_unlabelled`
      is True), as :func:`~medmae_nb.data.folders.detect_folder_layout` decides. A relative PATH is looked for in the
      working directory, then in ``root`` (or ``$MEDMAE_DATA`` when root is None).
    * ``unlabelled:PATH``: every image below PATH, as an unlabelled folder.
    * ``busi``: :func:`~medmae_nb.data.folders.load_busi` under ``root`` or ``$MEDMAE_DATA``; no split.

    Args:
        spec: a spec string, a :class:`DataSpec`, or a folder path.
        image_size: side of the square images returned.
        channels: 1 (gray), 3 (RGB), or None for the data's native count (see the module docstring;
            :func:`native_channels` says which it is without loading).
        root: data root for ``medmnist`` and ``busi``, and for relative folder paths.
        **phantom_kwargs: passed to ``make_phantom_splits``; an error for any other kind.

    Returns:
        float32 images ``(N, channels, image_size, image_size)`` in ``[0, 1]``.

    Raises:
        DataError: a bad spec, ``image_size`` or ``channels``, phantom options for another kind, data not found, or
            any error of the loader (each says what was wrong and how to fix it).

    Example:
        >>> ds = load_spec("phantom", image_size=32, n_train=6, n_val=2, n_test=2)
        >>> ds.images.shape, ds.split.tolist().count("test")
        ((10, 1, 32, 32), 2)
    """
    spec = parse_spec(spec)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive integer (the side of the square images), got {image_size!r}")
    image_size = int(image_size)
    if isinstance(channels, bool) or channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (gray), 3 (RGB) or None (the data's native count), got {channels!r}")
    if phantom_kwargs and spec.kind != "phantom":
        raise DataError(
            f"{sorted(phantom_kwargs)} are options of the phantom; {str(spec)!r} takes only image_size, channels and "
            f"root"
        )
    if spec.kind == "phantom":
        accepted = set(inspect.signature(make_phantom_splits).parameters) - {"image_size"}
        unknown = sorted(set(phantom_kwargs) - accepted)
        if unknown:
            raise DataError(f"unknown phantom option(s) {unknown}; make_phantom_splits takes {sorted(accepted)}")
        ds = make_phantom_splits(image_size=image_size, **{**PHANTOM_DEFAULTS, **phantom_kwargs})
        return ds.to_rgb() if channels == 3 else ds
    if spec.kind == "medmnist":
        return load_medmnist(
            spec.name, root=None if root is None else Path(root), image_size=image_size, channels=channels,
            file_size=spec.size,
        )
    if spec.kind == "busi":
        folder = find_busi(root)
        return load_busi(folder, image_size, channels)
    folder = _resolve_folder(spec.path, root)
    layout = "unlabelled" if spec.kind == "unlabelled" else detect_folder_layout(folder)
    loader = {"split": load_split_folders, "class": load_image_folder, "unlabelled": load_unlabelled_folder}[layout]
    return loader(folder, image_size, channels)


def native_channels(spec: str | os.PathLike | DataSpec, root: str | os.PathLike | None = None) -> int:
    """The channel count ``load_spec(spec, channels=None)`` gives, without loading the images (folder files are
    only opened for their headers): to build a model with the right ``in_chans`` first.

    Example:
        >>> native_channels("medmnist:dermamnist"), native_channels("phantom")
        (3, 1)
    """
    spec = parse_spec(spec)
    if spec.kind == "phantom":
        return 1
    if spec.kind == "medmnist":
        return N_CHANNELS[spec.name]
    if spec.kind == "busi":
        return folder_channels(find_busi(root), "class")
    folder = _resolve_folder(spec.path, root)
    return folder_channels(folder, "unlabelled" if spec.kind == "unlabelled" else None)


def is_grayscale(ds: ImageDataset, atol: float = 0.0) -> bool:
    """Whether every image's channels are equal (within ``atol``): True for 1-channel data, and for RGB data that
    holds gray images, which could then be loaded with ``channels=1`` without losing anything.

    Compares channel 0 with the others in chunks, stopping at the first difference, so it is cheap on colour data
    and needs no copy of the whole array. BUSI's PNGs are RGB files, nearly all with equal channels, but 16 of the
    780 carry coloured annotations or a tint, so BUSI is not gray by this test; :func:`colour_images` lists such
    images.

    Example:
        >>> gray = ImageDataset(np.full((2, 3, 4, 4), 0.5, np.float32), np.array([0, 0]), ("a",))
        >>> red = ImageDataset(np.zeros((1, 3, 4, 4), np.float32), np.array([0]), ("a",))
        >>> red.images[:, 0] = 1.0
        >>> is_grayscale(gray), is_grayscale(red)
        (True, False)
    """
    images = ds.images
    if images.shape[1] == 1:
        return True
    chunk = max(1, (8 << 20) // max(1, images[0].nbytes))
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if atol > 0:
            if not np.allclose(part[:, 1:], part[:, :1], rtol=0.0, atol=atol):
                return False
        elif not (part[:, 1:] == part[:, :1]).all():
            return False
    return True


def colour_images(ds: ImageDataset, atol: float = 0.0) -> np.ndarray:
    """Indices of the images whose channels differ (beyond ``atol``): the ones that are not gray in RGB data.

    Data that is gray apart from a few images (BUSI: 16 of its 780 RGB PNGs carry coloured annotations or a tint)
    shows here which images a ``channels=1`` load would change.

    Example:
        >>> rgb = ImageDataset(np.zeros((3, 3, 4, 4), np.float32), np.array([0, 0, 0]), ("a",))
        >>> rgb.images[1, 2] = 1.0  # image 1 is blue
        >>> colour_images(rgb).tolist()
        [1]
    """
    images = ds.images
    if images.shape[1] == 1:
        return np.zeros(0, np.int64)
    chunk = max(1, (8 << 20) // max(1, images[0].nbytes))
    found = []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        differs = np.abs(part[:, 1:] - part[:, :1]).reshape(len(part), -1).max(axis=1) > atol
        found.append(start + np.flatnonzero(differs))
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


def is_unlabelled(ds: ImageDataset) -> bool:
    """Whether a dataset has no usable labels: loaded from a folder of unlabelled images (``meta["unlabelled"]``
    all True), or with no class names / every label -1 (once ``ImageDataset`` accepts that). Such data is for
    pre-training only: probes, fine-tuning and metrics need labelled data.

    Example:
        >>> is_unlabelled(load_spec("phantom", image_size=32, n_train=3, n_val=0, n_test=0))
        False
    """
    if UNLABELLED in ds.meta:
        return bool(np.all(ds.meta[UNLABELLED]))
    return ds.num_classes == 0 or (len(ds.labels) > 0 and bool((ds.labels < 0).all()))


def _check_medmnist_name(name: str | None) -> str:
    key = "" if name is None else str(name).strip().lower()
    if not key:
        raise DataError(f"medmnist:NAME needs a dataset name, one of {', '.join(DATASETS_2D)}")
    if key in VOLUMES:
        raise DataError(f"{key} is a 3D MedMNIST dataset; only the 2D ones load: {', '.join(DATASETS_2D)}")
    if key in DATASETS_2D:
        return key
    file_style = re.fullmatch(r"(\w+?)_(\d+)", key)
    if file_style and file_style[1] in DATASETS_2D:
        hint = f" For the {file_style[2]}-px release file write medmnist:{file_style[1]}@{file_style[2]}."
    else:
        close = difflib.get_close_matches(key, DATASETS_2D, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
    raise DataError(f"unknown MedMNIST dataset {name!r}.{hint} The 2D datasets: {', '.join(DATASETS_2D)}")


def _resolve_folder(path: str, root: str | os.PathLike | None) -> Path:
    """A spec's folder: absolute (after ``~``), or relative to the working directory, else to root / $MEDMAE_DATA."""
    given = Path(path).expanduser()
    candidates = [given]
    if not given.is_absolute():
        base = root if root is not None else os.environ.get("MEDMAE_DATA")
        if base:
            candidates.append(Path(base).expanduser() / given)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    for candidate in candidates:
        if candidate.exists():  # a file: require_folder says so, with a hint for archives
            return require_folder(candidate, "image folder", "pass the folder that holds the images")
    where = " or ".join(str(c) for c in candidates)
    raise DataError(
        f"folder {path!r} not found (looked for {where}); pass an existing folder, an absolute path, or a path "
        f"relative to root= / $MEDMAE_DATA"
    )
