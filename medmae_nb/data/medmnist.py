"""MedMNIST v2/v3 (MedMNIST+) 2D datasets from their official ``.npz`` release files, checksummed.

The official files hold ``train_images``/``train_labels``, ``val_images``/``val_labels`` and
``test_images``/``test_labels``; :func:`load_medmnist` returns all three as one :class:`ImageDataset` with its
``split`` filled, so the official split is kept and every chapter uses the same one. Like the folder loaders it
takes ``image_size`` and ``channels`` and resizes to any size; ``file_size`` picks which release file is read.

Label names, channel counts, split sizes, task types, file checksums (all 12 2D datasets at 28, 64, 128 and 224 px)
and the download address follow the ``medmnist`` package's ``info.py`` (v3.0.2, Zenodo record 10519652). Files are
downloaded only when asked (``download=True``), never on import. ChestMNIST is multi-label (14 findings per image)
and is refused with a ``DataError`` saying so: an :class:`ImageDataset` holds one class per image.

References:
    Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
    classification", Scientific Data 10:41 (2023).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import atomic_write, cache_dir
from .base import SPLITS, DataError, ImageDataset, require_folder

SIZES = (28, 64, 128, 224)
URL_TEMPLATE = "https://zenodo.org/records/10519652/files/{file}?download=1"

_ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

# Official label names, in label order, of the supported (single-label) 2D datasets.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": (
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ),
    "tissuemnist": (
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}
# The 14 findings of the multi-label ChestMNIST (NIH ChestX-ray14), in label-column order; any number per image.
MULTI_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "chestmnist": (
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural",
        "hernia",
    ),
}
MULTI_LABEL = tuple(MULTI_LABEL_NAMES)
# Every 2D dataset of MedMNIST v2 (and its 64/128/224-px MedMNIST+ files), in the order of the official table.
DATASETS_2D = (
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)
# Label names of every 2D dataset: class names of the single-label ones, finding names of the multi-label one.
LABEL_NAMES: dict[str, tuple[str, ...]] = {name: {**CLASS_NAMES, **MULTI_LABEL_NAMES}[name] for name in DATASETS_2D}
# Channels of the official files (the native count that channels=None keeps): RGB for pathology, dermatoscopy,
# fundus and blood smears, gray for the rest.
N_CHANNELS: dict[str, int] = {
    name: 3 if name in ("pathmnist", "dermamnist", "retinamnist", "bloodmnist") else 1 for name in DATASETS_2D
}
CHANNELS = {name: c for name, c in N_CHANNELS.items() if c == 3}  # the RGB ones (kept for older callers)
# Task type and official (train, val, test) sizes, the same for every file size, from medmnist/info.py v3.0.2.
TASKS: dict[str, str] = {
    "pathmnist": "multi-class",
    "chestmnist": "multi-label, binary-class",
    "dermamnist": "multi-class",
    "octmnist": "multi-class",
    "pneumoniamnist": "binary-class",
    "retinamnist": "ordinal-regression",
    "breastmnist": "binary-class",
    "bloodmnist": "multi-class",
    "tissuemnist": "multi-class",
    "organamnist": "multi-class",
    "organcmnist": "multi-class",
    "organsmnist": "multi-class",
}
SPLIT_SIZES: dict[str, tuple[int, int, int]] = {
    "pathmnist": (89996, 10004, 7180),
    "chestmnist": (78468, 11219, 22433),
    "dermamnist": (7007, 1003, 2005),
    "octmnist": (97477, 10832, 1000),
    "pneumoniamnist": (4708, 524, 624),
    "retinamnist": (1080, 120, 400),
    "breastmnist": (546, 78, 156),
    "bloodmnist": (11959, 1712, 3421),
    "tissuemnist": (165466, 23640, 47280),
    "organamnist": (34561, 6491, 17778),
    "organcmnist": (12975, 2392, 8216),
    "organsmnist": (13932, 2452, 8827),
}
VOLUMES = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d")

# Official MD5 per (dataset, size) for every 2D dataset at every size (chestmnist too, so that a download of it is
# checked even though it cannot be loaded), copied from medmnist/info.py v3.0.2. Several values per key are accepted
# where an earlier official release (v2.x, Zenodo record 6496656) shipped a different file under the same name.
MD5: dict[tuple[str, int], tuple[str, ...]] = {
    ("pathmnist", 28): ("a8b06965200029087d5bd730944a56c1",),
    ("pathmnist", 64): ("55aa9c1e0525abe5a6b9d8343a507616",),
    ("pathmnist", 128): ("ac42d08fb904d92c244187169d1fd1d9",),
    ("pathmnist", 224): ("2c51a510bcdc9cf8ddb2af93af1eadec",),
    ("chestmnist", 28): ("02c8a6516a18b556561a56cbdd36c4a8",),
    ("chestmnist", 64): ("9de6cd0b934ebb5b7426cfba5efbae16",),
    ("chestmnist", 128): ("db107e5590b27930b62dbaf558aebee3",),
    ("chestmnist", 224): ("45bd33e6f06c3e8cdb481c74a89152aa",),
    ("dermamnist", 28): ("0744692d530f8e62ec473284d019b0c7",),
    ("dermamnist", 64): ("b70a2f5635c6199aeaa28c31d7202e1f",),
    ("dermamnist", 128): ("2defd784463fa5243564e855ed717de1",),
    ("dermamnist", 224): ("8974907d8e169bef5f5b96bc506ae45d",),
    ("octmnist", 28): ("c68d92d5b585d8d81f7112f81e2d0842",),
    ("octmnist", 64): ("e229e9440236b774d9f0dfef9d07bdaf",),
    ("octmnist", 128): ("0a97e76651ace45c5d943ee3f65b63ae",),
    ("octmnist", 224): ("abc493b6d529d5de7569faaef2773ba3",),
    ("pneumoniamnist", 28): ("28209eda62fecd6e6a2d98b1501bb15f",),
    ("pneumoniamnist", 64): ("8f4eceb4ccffa70c672198ea285246c6",),
    ("pneumoniamnist", 128): ("05b46931834c231683c68f40c47b2971",),
    ("pneumoniamnist", 224): ("d6a3c71de1b945ea11211b03746c1fe1",),
    ("retinamnist", 28): ("bd4c0672f1bba3e3a89f0e4e876791e4",),
    ("retinamnist", 64): ("afda852cc34dcda56f86ad2b2457dbcc",),
    ("retinamnist", 128): ("e48e916a24454daf90583d4e6efb1a18",),
    ("retinamnist", 224): ("eae7e3b6f3fcbda4ae613ebdcbe35348",),
    ("breastmnist", 28): ("750601b1f35ba3300ea97c75c52ff8f6",),
    ("breastmnist", 64): ("742edef2a1fd1524b2efff4bd7ba9364",),
    ("breastmnist", 128): ("363e4b3f8d712e9b5de15470a2aaadf1",),
    ("breastmnist", 224): ("b56378a6eefa9fed602bb16d192d4c8b",),
    ("bloodmnist", 28): ("7053d0359d879ad8a5505303e11de1dc",),
    ("bloodmnist", 64): ("2b94928a2ae4916078ca51e05b6b800b",),
    ("bloodmnist", 128): ("adace1e0ed228fccda1f39692059dd4c",),
    ("bloodmnist", 224): ("b718ff6835fcbdb22ba9eacccd7b2601",),
    ("tissuemnist", 28): ("ebe78ee8b05294063de985d821c1c34b",),
    ("tissuemnist", 64): ("123ece2eba09d0aa5d698fda57103344",),
    ("tissuemnist", 128): ("61b955355d7425a89687b06cca3ce0c2",),
    ("tissuemnist", 224): ("b077128c4a949f0a4eb01517f9037b9c",),
    ("organamnist", 28): ("68e3f8846a6bd62f0c9bf841c0d9eacc", "866b832ed4eeba67bfb9edee1d5544e6"),
    ("organamnist", 64): ("2dcccc29b88e6da5a01161ef20cda288",),
    ("organamnist", 128): ("eeae80d0a227a8d099027e1b3cfd3b60",),
    ("organamnist", 224): ("50747347e05c87dd3aaf92c49f9f3170",),
    ("organcmnist", 28): ("b9ceb9546e10131b32923c5bbeaea2b1", "0afa5834fb105f7705a7d93372119a21"),
    ("organcmnist", 64): ("3ce34a8724ea6f548e6db4744d03b6a9",),
    ("organcmnist", 128): ("773c1f009daa3fe5d9a2a201b2a7ed94",),
    ("organcmnist", 224): ("050f5e875dc056f6768abf94ec9995d1",),
    ("organsmnist", 28): ("9ab87b696fb54e2a387ebe992d6ed5f1", "e5c39f1af030238290b9557d9503af9d"),
    ("organsmnist", 64): ("53a6d115339d874c25e309a994ff46d3",),
    ("organsmnist", 128): ("ded0c5fa01a95dc4978b956f613e9b8e",),
    ("organsmnist", 224): ("b354719e553fbbb2513d5533f52a4cb1",),
}

# Hashing a 224-px file takes seconds, so a file already verified is trusted again while it is unchanged on disk.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def medmnist_filename(name: str, size: int = 28) -> str:
    """The official file name: ``NAME.npz`` at 28 px, ``NAME_SIZE.npz`` otherwise.

    Example:
        >>> medmnist_filename("breastmnist"), medmnist_filename("breastmnist", 64)
        ('breastmnist.npz', 'breastmnist_64.npz')
    """
    name = _check_name(name)
    if size not in SIZES:
        raise DataError(f"unknown MedMNIST image size {size!r}; the official files come in sizes {SIZES}")
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def medmnist_url(name: str, size: int = 28) -> str:
    """The official download address of a MedMNIST file (Zenodo record 10519652)."""
    return URL_TEMPLATE.format(file=medmnist_filename(name, size))


def file_md5(path: str | os.PathLike) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks; cached while the file's mtime and size are unchanged."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _VERIFIED:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _VERIFIED[key] = digest.hexdigest()
    return _VERIFIED[key]


def load_medmnist(
    name: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    *,
    file_size: int | None = None,
    download: bool = False,
    size: int | None = None,
    as_rgb: bool | None = None,
) -> ImageDataset:
    """Loads a single-label 2D MedMNIST dataset, all three official splits in one dataset, at any size.

    MedMNIST ships each dataset as separate files of 28, 64, 128 and 224 px. ``image_size`` is the side of the
    images returned, as in the folder loaders; ``file_size`` picks the file they are read from. By default that is
    the smallest file on disk at least as large as ``image_size`` (so shrinking never starts from a file smaller
    than needed), else the largest file on disk; with ``image_size`` None, the 28-px file at its own size. The
    images are then resized: shrinking averages over each output pixel's area (a box filter weighted by overlap: no
    aliasing, mean intensity kept exactly), enlarging is bilinear. Channels are converted as asked: gray is
    replicated to RGB, RGB becomes gray by ITU-R 601 luma (as PIL's ``convert("L")``, the folder loaders'
    conversion).

    Args:
        name: dataset name, e.g. ``"breastmnist"`` (case-insensitive); see ``CLASS_NAMES`` for the supported ones.
        root: folder holding the file, directly or in a ``medmnist/`` subfolder; None means ``$MEDMAE_DATA``, or
            ``cache_dir()/data`` when that is not set.
        image_size: side of the square images returned; None keeps the file's size.
        channels: 1 (gray) or 3 (RGB); None keeps the dataset's own (3 for pathmnist, dermamnist, retinamnist,
            bloodmnist, 1 for the others).
        file_size: the release file to read, 28, 64, 128 or 224; default as described above. With ``download=True``
            and no file on disk, the file fetched is ``file_size``, else the smallest official size
            ``>= image_size`` (224 at most), else 28.
        download: fetch the official file into ``root/medmnist/`` when it is missing (checksummed, atomic).
        size: deprecated, use ``image_size`` (``size=S`` is ``image_size=S, file_size=S``).
        as_rgb: deprecated, use ``channels=3`` (``as_rgb=False`` is ``channels=None``).

    Returns:
        float32 images ``(N, C, image_size, image_size)`` in ``[0, 1]``, int64 labels, ``split`` set to the official
        train/val/test, ``meta["index"]`` the index within the official split; named ``NAME`` at 28 px, else
        ``NAME_SIZE``.

    Raises:
        DataError: unknown name or size, bad ``image_size`` or ``channels``, multi-label or 3D dataset, root missing
            or a file, file missing, checksum mismatch, or a file that is not a valid MedMNIST npz.

    Example:
        >>> ds = load_medmnist("breastmnist", root="../shared/data", image_size=32, channels=3)  # doctest: +SKIP
        >>> ds.images.shape, ds.class_counts()  # doctest: +SKIP
        ((780, 3, 32, 32), {'malignant': 210, 'normal, benign': 570})
    """
    if size is not None:
        warnings.warn(
            f"load_medmnist(size={size!r}) is deprecated and will be removed in the next release: use "
            f"image_size={size!r} (the side of the images returned; file_size picks the release file)",
            FutureWarning,
            stacklevel=2,
        )
        if image_size is not None or file_size is not None:
            raise DataError("pass either size (deprecated) or image_size/file_size, not both; use image_size")
        image_size = file_size = size
    if as_rgb is not None:
        warnings.warn(
            f"load_medmnist(as_rgb={as_rgb!r}) is deprecated and will be removed in the next release: use "
            f"channels={3 if as_rgb else None!r}",
            FutureWarning,
            stacklevel=2,
        )
        if channels is not None:
            raise DataError("pass either as_rgb (deprecated) or channels, not both; use channels")
        channels = 3 if as_rgb else None
    if isinstance(channels, bool) or channels not in (None, 1, 3):
        raise DataError(
            f"channels must be 1 (gray), 3 (RGB) or None (the dataset's own), got {channels!r}"
            + ("; download is keyword-only: pass download=True" if isinstance(channels, bool) else "")
        )
    if image_size is not None:
        try:
            ok = not isinstance(image_size, bool) and int(image_size) == image_size and image_size >= 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise DataError(f"image_size must be a positive integer or None (the file's size), got {image_size!r}")
        image_size = int(image_size)
    name = _check_name(name)
    if file_size is not None and file_size not in SIZES:
        raise DataError(
            f"unknown MedMNIST file size {file_size!r}; the official files come in sizes {SIZES}. Images of any size "
            f"are made by resizing: pass image_size={file_size!r} and leave file_size out"
        )
    file_size = None if file_size is None else int(file_size)
    root, origin = _resolve_root(root)
    any_file = file_size is None and image_size is not None  # the file is ours to choose: any size would do
    file_size = _choose_file_size(name, root, image_size, file_size)
    filename = medmnist_filename(name, file_size)
    path = _find_file(name, file_size, root, origin, download, any_file)
    expected = MD5.get((name, file_size))
    if expected:
        found = file_md5(path)
        if found not in expected:
            raise DataError(
                f"{path} is not the official {filename}: MD5 {found}, expected {' or '.join(expected)}. The file is "
                f"corrupt or from another release; delete it and download it again (load_medmnist(..., "
                f"download=True) or {medmnist_url(name, file_size)})."
            )
    images, labels, split, index = _read_npz(path, file_size)
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{path} has {labels.shape[1]} labels per image (multi-label); multi-label is not supported")
    labels = labels.reshape(len(labels)).astype(np.int64)
    class_names = CLASS_NAMES[name]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{path} has labels outside 0..{len(class_names) - 1} ({name} has {len(class_names)} classes)")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: images must be (N, H, W) or (N, H, W, 3), got {images.shape}")
    image_size = file_size if image_size is None else image_size
    x = _convert(images, image_size, channels or images.shape[1])
    label = name if image_size == 28 else f"{name}_{image_size}"
    return ImageDataset(x, labels, class_names, split=split, meta={"index": index}, name=label)


def _convert(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` to float32 ``(N, channels, image_size, image_size)`` in ``[0, 1]``.

    Works in chunks into an output of the final size, so a large file never exists as a full-size float copy.
    """
    n, c, h, w = images.shape
    chunk = max(1, (16 << 20) // (c * h * w))  # about 64 MB of float32 at a time
    out = np.empty((n, channels, image_size, image_size), np.float32)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    shrink = image_size < min(h, w)
    if shrink:
        rows, cols = _area_weights(h, image_size), _area_weights(w, image_size)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])).float() / 255.0
        if channels == 1 and c == 3:
            x = (x * luma).sum(dim=1, keepdim=True)
        if shrink:
            x = (rows @ x @ cols.T).clamp_(0.0, 1.0)
        elif (h, w) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
        out[start : start + chunk] = x.numpy()  # broadcasts one gray channel to three where asked
    return out


def _area_weights(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` box-filter weights: output pixel i averages the input pixels it covers, weighted by overlap.

    Every input pixel contributes in total ``n_out / n_in``, so the mean intensity is kept exactly, and nothing
    aliases; for an integer factor this is the mean of each block.
    """
    step = n_in / n_out
    edges = torch.arange(n_out + 1, dtype=torch.float64) * step
    left = torch.arange(n_in, dtype=torch.float64)
    overlap = torch.minimum(edges[1:, None], left + 1) - torch.maximum(edges[:-1, None], left)
    return (overlap.clamp(min=0) / step).float()


def download_medmnist(name: str, root: str | Path, size: int = 28, url: str | None = None) -> Path:
    """Downloads an official MedMNIST file into ``root/medmnist/`` unless it is already there.

    The file is streamed to a temporary file beside the target, its MD5 checked, and only then renamed into
    place, so an interrupted or corrupt download never leaves a file that looks complete.

    Args:
        name: dataset name.
        root: data root; the file goes to ``root/medmnist/``.
        size: image size of the release file.
        url: address to fetch from; defaults to the official Zenodo address.

    Returns:
        The path of the file.
    """
    name = _check_name(name)
    filename = medmnist_filename(name, size)
    target = Path(root).expanduser() / "medmnist" / filename
    if target.exists():
        return target
    url = url or medmnist_url(name, size)
    expected = MD5.get((name, size))

    def fetch(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
        except OSError as err:  # URLError and socket errors are OSErrors
            raise DataError(
                f"could not download {url}: {err}. Check the connection, or fetch the file by hand "
                f"and place it at {target}"
            ) from None
        found = file_md5(tmp)
        if expected and found not in expected:
            raise DataError(
                f"download of {url} is corrupt: MD5 {found}, expected {' or '.join(expected)}; "
                f"nothing was saved, try again"
            )

    print(f"downloading {url} -> {target}")
    return atomic_write(target, fetch)


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key in MULTI_LABEL:
        findings = MULTI_LABEL_NAMES[key]
        raise DataError(
            f"{key} is multi-label: each image carries {len(findings)} yes/no findings ({', '.join(findings[:3])}, "
            f"...), any number of them at once; multi-label is not supported, since an ImageDataset holds one class "
            f"per image. Use a single-label dataset (for chest X-rays: pneumoniamnist), one of {sorted(CLASS_NAMES)}"
        )
    if key in VOLUMES:
        raise DataError(f"{key} is a 3D dataset; only the 2D datasets are supported: {sorted(CLASS_NAMES)}")
    if key not in CLASS_NAMES:
        raise DataError(f"unknown MedMNIST dataset {name!r}; known 2D datasets: {sorted(CLASS_NAMES)}")
    return key


def _resolve_root(root: str | Path | None) -> tuple[Path, str]:
    """The data root and, for messages, where it came from; a root that is a file is an error."""
    if root is None:
        env = os.environ.get("MEDMAE_DATA")
        # Without MEDMAE_DATA, downloads go to (and are found again in) the package cache, so download=True works
        # with no setup at all.
        path = Path(env) if env else cache_dir() / "data"
        origin = "MEDMAE_DATA" if env else "the default root (MEDMAE_DATA is not set)"
    else:
        path, origin = Path(root), "root"
    path = path.expanduser()
    if path.is_file():
        fix = "pass the folder that holds the .npz file; the file name is chosen from name and file_size"
        if path.suffix.lower() == ".npz":
            fix = f"pass root={str(path.parent)!r}; load_medmnist picks the file name from name and file_size"
        require_folder(path, f"data root ({origin})", fix)
    return path, origin


def _candidates(name: str, size: int, root: Path) -> list[Path]:
    filename = medmnist_filename(name, size)
    return [root / filename, root / "medmnist" / filename]


def _choose_file_size(name: str, root: Path, image_size: int | None, file_size: int | None) -> int:
    """The release file to read: see ``file_size`` in :func:`load_medmnist`."""
    if file_size is not None:
        return file_size
    if image_size is None:
        return 28
    on_disk = [s for s in SIZES if any(p.is_file() for p in _candidates(name, s, root))]
    large_enough = [s for s in on_disk if s >= image_size]
    if large_enough:
        return min(large_enough)
    if on_disk:
        return max(on_disk)
    return min([s for s in SIZES if s >= image_size] or [max(SIZES)])


def _find_file(name: str, size: int, root: Path, origin: str, download: bool, any_file: bool = False) -> Path:
    filename = medmnist_filename(name, size)
    # When the file was chosen for an image_size, any release file would have done: say so, not just one name.
    wanted = (
        f"no {name} release file ({', '.join(medmnist_filename(name, s) for s in SIZES)}) found"
        if any_file
        else f"{filename} not found"
    )
    how = (
        "set MEDMAE_DATA to your data folder or pass root=..., and place the official file there (or in its "
        "medmnist/ subfolder), or pass download=True to fetch it from Zenodo"
    )
    if not root.is_dir() and not download:
        raise DataError(f"data root {root} ({origin}) does not exist; {how}")
    candidates = _candidates(name, size, root)
    for path in candidates:
        if path.is_file():
            return path
    if download:
        return download_medmnist(name, root, size)
    where = f"in {root} and {root / 'medmnist'}" if any_file else f"at {', '.join(map(str, candidates))}"
    raise DataError(f"{wanted}; looked {where}. {how[0].upper()}{how[1:]}")


def _read_npz(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files if key.endswith(("_images", "_labels"))}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(
            f"{path} is not a valid npz file ({type(err).__name__}: {err}); delete it and download it again"
        ) from None
    missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in arrays]
    if missing:
        raise DataError(f"{path} lacks the keys {missing} of an official MedMNIST file (has {sorted(arrays)})")
    parts = [(arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS]
    for s, (x, y) in zip(SPLITS, parts, strict=True):
        if len(x) != len(y):
            raise DataError(f"{path}: {s}_images has {len(x)} entries but {s}_labels has {len(y)}")
        if x.dtype != np.uint8:  # official files are uint8; anything else would be scaled wrongly by 1/255
            raise DataError(f"{path}: {s}_images has dtype {x.dtype}, expected uint8 as in the official files")
        if x.ndim < 3 or x.shape[1:3] != (size, size):
            raise DataError(f"{path}: {s}_images has shape {x.shape}, expected (N, {size}, {size}[, 3])")
    images = np.concatenate([x for x, _ in parts])
    labels = np.concatenate([y.reshape(len(y), -1) for _, y in parts])
    split = np.concatenate([np.full(len(x), s) for s, (x, _) in zip(SPLITS, parts, strict=True)])
    index = np.concatenate([np.arange(len(x)) for x, _ in parts])
    return images, labels, split, index
