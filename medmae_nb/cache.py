"""A small on-disk cache for generated data sets and checkpoints.

Entries live under ``cache_dir()`` (env ``MEDMAE_CACHE``, default ``~/.cache/medmae_nb``) and are named by a key
made from the full config, so a cached entry can never pass for a different config. Every write goes to a
temporary file in the same folder and is then renamed into place, so an interrupted write leaves no entry at all,
and a failed one (a full disk) leaves neither the entry nor the temporary file, with an error naming the file.
An entry that cannot be read back (truncated or damaged) is rebuilt by :func:`load_or_make`, with a warning.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def cache_dir() -> Path:
    """The cache folder: ``$MEDMAE_CACHE`` if set, else ``~/.cache/medmae_nb`` (created on first use)."""
    root = os.environ.get("MEDMAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medmae_nb")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float):
        return float(repr(obj))
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


def config_key(config: dict[str, Any], prefix: str = "") -> str:
    """A stable key for ``config``: ``prefix-`` plus 16 hex digits of the SHA-256 of its canonical JSON.

    Example:
        >>> config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1})
        True
    """
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{prefix}-{digest}" if prefix else digest


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _write_error(path: Path, err: OSError) -> OSError:
    """``err`` (a full disk or quota) as an ``OSError`` with the same errno whose message names ``path``."""
    fix = ("Free space on that disk (or, for the cache, set MEDMAE_CACHE to a folder on a larger disk) and run "
           "again")
    return OSError(err.errno, f"could not write {path}: {err.strerror or err}. Nothing was written: {path} is left as "
                              f"it was (absent, or with its previous content) and no temporary file remains. {fix}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp_path)`` then renames the temporary file to ``path``; on any error nothing is left behind.

    Raises:
        OSError: the disk (or quota) is full: the message names ``path`` and says that nothing was written (an
            existing ``path`` keeps its content). Other errors of ``write`` propagate as they are, the temporary
            file removed all the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in _DISK_FULL:
            raise _write_error(path, err) from err
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise _write_error(path, err) from err
        raise
    return path


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Atomically writes arrays to an uncompressed ``.npz`` file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles), the file closed whatever happens.

    ``np.load(path)`` leaves its file open when the archive is truncated (NumPy hands the file over before it reads
    the zip directory, which then fails); here the file is opened and closed by a ``with``. A damaged file raises
    (``zipfile.BadZipFile``, ``ValueError``, ``EOFError``): a truncated one is no zip archive, and every array's
    CRC-32 is checked as it is read.
    """
    with open(path, "rb") as f:
        data = np.load(f, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array (.npy), not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically writes ``obj`` with ``torch.save``.

    The file is serialised in memory and written by Python: ``torch.save`` writing to a file itself reports a full
    disk as a bare ``RuntimeError`` ("unexpected pos …"), which :func:`atomic_write` could not tell from a bug.
    """
    import torch

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())

    return atomic_write(path, write)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically writes ``obj`` as indented JSON."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(_canonical(obj), indent=2)))


def entry(key: str, suffix: str = ".npz", subdir: str = "") -> Path:
    """The cache path of an entry named ``key`` (the file may not exist yet; its folder is made on first write)."""
    folder = cache_dir() / subdir if subdir else cache_dir()
    return folder / f"{key}{suffix}"


def load_or_make(config: dict[str, Any], make: Callable[[], T], *, kind: str, suffix: str,
                 save: Callable[[Path, T], Any], load: Callable[[Path], T], enabled: bool = True,
                 verbose: bool = False) -> T:
    """The one cache pattern of the package: load the entry made for exactly ``config``, or make, save and return it.

    Phantom data sets, pre-trained checkpoints and label-budget results all go through here, under
    ``cache_dir()/kind/kind-<config_key>suffix``.

    Args:
        config: everything the result depends on; its canonical JSON names the entry.
        make: builds the result when there is no entry.
        kind: entry type, also the sub-folder (``"data"``, ``"checkpoints"``, ``"sweeps"``).
        suffix: file suffix, e.g. ``".npz"``.
        save: writes a result to a path (use :func:`atomic_write` or the ``save_*`` helpers, so that an interrupted
            write leaves no entry).
        load: reads a result back; it must raise on a damaged file (:func:`load_npz` does: a truncated file is no
            zip archive, and every array carries a CRC-32 that is checked on reading).
        enabled: False skips the cache entirely (always ``make``).
        verbose: print whether the entry was loaded or made.

    An entry that ``load`` cannot read (truncated by an interrupted copy, damaged on disk) is not an error: a cache
    holds nothing that cannot be made again, so the entry is deleted, rebuilt with ``make`` and saved anew, with a
    ``RuntimeWarning`` that names the file and what was wrong. A damaged entry is thus never returned, and never
    blocks a run.

    Raises:
        OSError: the disk is full while saving (see :func:`atomic_write`): nothing is left of the entry.

    Example:
        >>> calls = []
        >>> make = lambda: calls.append(1) or np.arange(3)
        >>> kw = dict(kind="doc", suffix=".npz", save=lambda p, a: save_npz(p, a=a), load=lambda p: load_npz(p)["a"])
        >>> a, b = load_or_make({"x": 1}, make, **kw), load_or_make({"x": 1}, make, **kw)  # doctest: +SKIP
        >>> len(calls)  # doctest: +SKIP
        1
    """
    if not enabled:
        return make()
    path = entry(config_key(config, kind), suffix, kind)
    if path.exists():
        try:
            result = load(path)
        except MemoryError:
            raise
        except Exception as err:  # truncated (an interrupted copy), damaged (a bad CRC) or not an entry at all
            warnings.warn(f"{kind}: cache entry {path} cannot be read ({type(err).__name__}: {err}); it is damaged "
                          "or truncated, so it is rebuilt and replaced", RuntimeWarning, stacklevel=2)
            path.unlink(missing_ok=True)
        else:
            if verbose:
                print(f"{kind}: loaded from the cache ({path.name})")
            return result
    result = make()
    save(path, result)
    if verbose:
        print(f"{kind}: made and cached ({path.name})")
    return result


# ------------------------------------------------------------------------------------------- fingerprints
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


_SIMPLE = (int, float, str, bool, type(None))


def _simple_attrs(obj: Any) -> dict[str, Any]:
    """Public attributes of plain types (numbers, strings, tuples of them): what a transform's repr may leave out,
    e.g. the probability of torchvision's ``RandomApply``."""
    out = {}
    for k, v in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _SIMPLE) or (isinstance(v, (tuple, list)) and all(isinstance(x, _SIMPLE) for x in v)):
            out[k] = v
    return out


def describe(obj: Any, _depth: int = 0) -> Any:
    """A description of a callable or object that is stable across sessions (no memory addresses), for cache keys.

    * A function importable from a package is named by its dotted path: the name reads the same under every Python
      version (bytecode does not) and survives docstring edits.
    * A lambda or a function defined in a notebook is fingerprinted by its bytecode, constants, the names it uses,
      the values of the plain globals it reads (a notebook's UPPER_CASE parameters), its defaults and its closure, so
      editing it changes the key while re-running it does not.
    * Other objects (torchvision transforms, callable classes) are described by their ``repr`` without addresses,
      their plain public attributes, and those of the transforms they hold.

    Example:
        >>> describe(None), describe(len)
        (None, 'builtins.len')
        >>> describe(lambda x: x + 1) == describe(lambda x: x + 1) != describe(lambda x: x + 2)
        True
    """
    if obj is None or isinstance(obj, _SIMPLE):
        return obj
    if _depth > 4:
        return type(obj).__qualname__
    if inspect.isfunction(obj):
        module, qualname = obj.__module__ or "", obj.__qualname__
        if module and module != "__main__" and "<" not in qualname and not module.startswith("__"):
            return f"{module}.{qualname}"
        code = obj.__code__
        used = {n: describe(obj.__globals__[n], _depth + 1) for n in code.co_names if n in obj.__globals__}
        parts = [code.co_code.hex(), repr(code.co_consts), repr(code.co_names), repr(obj.__defaults__),
                 repr([describe(c.cell_contents, _depth + 1) for c in obj.__closure__ or ()]), repr(used)]
        digest = hashlib.sha256(_ADDRESS.sub("", "|".join(parts)).encode()).hexdigest()[:12]
        return f"{module}.{qualname}#{digest}"
    if inspect.isbuiltin(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
        return f"{getattr(obj, '__module__', '') or ''}.{getattr(obj, '__qualname__', obj.__name__)}".lstrip(".")
    text = _ADDRESS.sub("", " ".join(repr(obj).split()))
    attrs = _simple_attrs(obj)
    children = [describe(t, _depth + 1) for t in getattr(obj, "transforms", None) or ()
                if not isinstance(obj.transforms, str)]
    if attrs:
        text += f" {json.dumps(attrs, sort_keys=True, default=str)}"
    if children:
        text += f" [{'; '.join(map(str, children))}]"
    return text


def array_digest(*arrays: Any, max_values: int = 2**26) -> str:
    """16 hex digits of a SHA-256 over arrays' shapes, dtypes and values (a strided sample above ``max_values``)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        flat = a.reshape(-1)
        if flat.size > max_values:
            flat = flat[:: flat.size // max_values + 1]
        h.update(np.ascontiguousarray(flat).tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(dataset: Any, labels: bool = False) -> dict[str, Any]:
    """Name, size, image shape and a SHA-256 of the images (plus the labels when asked) of a dataset.

    Labels are left out by default: they do not change self-supervised pre-training. Datasets without an ``images``
    array are hashed by their first 64 items.
    """
    images = getattr(dataset, "images", None)
    if isinstance(images, np.ndarray):
        parts = [images] + ([np.asarray(dataset.labels)] if labels else [])
        digest, shape = array_digest(*parts), list(images.shape)
    else:
        import torch

        items = [dataset[i] for i in range(min(len(dataset), 64))]
        pairs = [(it[0], it[1] if len(it) > 1 else None) if isinstance(it, (tuple, list)) else (it, None)
                 for it in items]  # (image, label) pairs, or bare images
        parts = [torch.as_tensor(x).numpy() for x, _ in pairs]
        if labels:
            parts.append(np.array([-1 if y is None else int(y) for _, y in pairs]))
        digest = array_digest(*parts)
        shape = [len(dataset), *torch.as_tensor(pairs[0][0]).shape] if pairs else [0]
    return {"name": getattr(dataset, "name", type(dataset).__name__), "n": len(dataset), "shape": shape,
            "sha256": digest, "transform": describe(getattr(dataset, "transform", None))}


def image_probe(images: np.ndarray, n: int = 16, cell: int = 16) -> dict[str, Any]:
    """A fingerprint of images that survives floating-point noise: the mean and standard deviation of all pixels and
    ``cell``-pixel block means of the first ``n`` images, rounded to 6 decimals.

    A SHA-256 of the pixels changes when another CPU computes a transcendental function one ulp differently (the
    phantom drawn on two processor families differs in the last bits); compare probes with :func:`probes_match`
    instead, which tolerates such noise and still sees any change to the pictures themselves.
    """
    images = np.asarray(images, dtype=np.float64)
    head = images[:n]
    h, w = head.shape[-2] // cell * cell, head.shape[-1] // cell * cell
    blocks = head[..., :h, :w].reshape(*head.shape[:-2], h // cell, cell, w // cell, cell).mean(axis=(-3, -1))
    return {"n": int(min(n, len(images))), "cell": cell, "mean": round(float(images.mean()), 6),
            "std": round(float(images.std()), 6), "blocks": np.round(blocks, 6).reshape(-1).tolist()}


def probes_match(a: dict[str, Any], b: dict[str, Any], atol: float = 1e-4) -> bool:
    """Whether two :func:`image_probe` results describe the same images up to floating-point noise."""
    if (a.get("n"), a.get("cell"), len(a.get("blocks", []))) != (b.get("n"), b.get("cell"), len(b.get("blocks", []))):
        return False
    return (abs(a["mean"] - b["mean"]) <= atol and abs(a["std"] - b["std"]) <= atol
            and bool(np.allclose(a["blocks"], b["blocks"], rtol=0, atol=atol)))


def module_fingerprint(module: Any) -> str:
    """16 hex digits of a SHA-256 over a module's state (names, shapes and values): two models with the same
    architecture but different weights get different fingerprints."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
