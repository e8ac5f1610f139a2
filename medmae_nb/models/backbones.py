"""One way to make every encoder the book uses: timm models by name, with honest ImageNet initialisation.

:func:`create_encoder` builds any timm model, plus the book's short names (``vit_micro``, ``vit_tiny``, ``vit_small``
at 64 px with 8-px patches; ``convnext_atto`` … ``resnet50``). Weights come from exactly one of three places, and
the model says which in ``model.init_source``:

* ``pretrained=False`` — random initialisation (``"random"``);
* ``pretrained=True`` — timm's hub weights (``"hub:<model>.<tag>"``); without internet this raises
  :class:`WeightsUnavailable` — it never falls back to random weights;
* ``pretrained="file.safetensors"`` / ``".pth"`` — a local file, loaded through timm's own machinery, so timm adapts
  the first convolution to ``in_chans`` and drops a classifier that does not fit (``"file:<name> sha256:<12 hex>"``).
  Keys that do not match the architecture raise :class:`WeightsMismatch`; nothing is left silently random.

:func:`download_weights` is the one explicit, checksummed download, for a user with internet to run once.

References:
    Wightman, "PyTorch Image Models" (timm), https://github.com/huggingface/pytorch-image-models.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import socket
import urllib.error
import warnings
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import LayerNorm
from torch import nn

from ..cache import atomic_write

__all__ = [
    "BOOK_ENCODERS",
    "WeightsError",
    "WeightsMismatch",
    "WeightsUnavailable",
    "ChecksumMismatch",
    "copy_into_timm",
    "create_encoder",
    "download_weights",
    "encoder_info",
    "file_sha256",
    "hub_reachable",
]

#: The book's short encoder names and what each one is.
BOOK_ENCODERS: dict[str, str] = {
    "vit_micro": "ViT 128-d, 6 blocks, 4 heads — the encoder of mae_vit_micro (no ImageNet weights)",
    "vit_tiny": "ViT-Tiny 192-d, 12 blocks, 3 heads (ImageNet: timm vit_tiny_patch16_224, resampled)",
    "vit_small": "ViT-Small 384-d, 12 blocks, 6 heads (ImageNet: timm vit_small_patch16_224, resampled)",
    "convnext_atto": "timm convnext_atto (3.4 M parameters)",
    "convnext_femto": "timm convnext_femto (4.8 M parameters)",
    "convnext_tiny": "timm convnext_tiny (28 M parameters)",
    "resnet18": "timm resnet18 (11 M parameters)",
    "resnet18_micro": "ResNet-18 with its four stages at a quarter of their width, 16-32-64-128 channels, after "
    "ResNet-18's own 64-channel stem (0.7 M parameters, no ImageNet weights) — chapter 04's CPU encoder",
    "resnet50": "timm resnet50 (24 M parameters)",
}

# book ViT -> (timm architecture it is built from, its ViT arguments, whether that architecture's hub weights fit it)
_BOOK_VITS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "vit_micro": ("vit_tiny_patch16_224", dict(embed_dim=128, depth=6, num_heads=4), False),
    "vit_tiny": ("vit_tiny_patch16_224", dict(embed_dim=192, depth=12, num_heads=3), True),
    "vit_small": ("vit_small_patch16_224", dict(embed_dim=384, depth=12, num_heads=6), True),
}
# book CNN -> (timm architecture, its arguments); book-only sizes, so no hub weights fit them
_BOOK_CNNS: dict[str, tuple[str, dict[str, Any]]] = {
    # timm's plain stem is 64 channels whatever the stage widths (stem_width applies to deep stems only)
    "resnet18_micro": ("resnet18", dict(channels=(16, 32, 64, 128))),
}
# exactly what MaskedAutoencoderViT.to_timm builds, so MAE encoders load strictly into these
_VIT_COMMON: dict[str, Any] = dict(
    patch_size=8, mlp_ratio=4.0, qkv_bias=True, global_pool="token", norm_layer=partial(LayerNorm, eps=1e-6)
)
_BOOK_VIT_IMG_SIZE = 64
# a BatchNorm step counter is not a weight; torch fills it in when a file lacks it
_NOT_WEIGHTS = (".num_batches_tracked",)


class WeightsError(RuntimeError):
    """Base class of the errors raised when pre-trained weights cannot be used as asked.

    References:
        Wightman, "PyTorch Image Models" (timm) — its pretrained-weight loading is what these errors guard.
    """


class WeightsUnavailable(WeightsError):
    """The requested weights cannot be had here: no internet for the hub, or none exist for this model.

    References:
        Wightman, "PyTorch Image Models" (timm).
    """


class WeightsMismatch(WeightsError):
    """A weights file does not fit the architecture (keys or shapes differ), so loading it would leave random weights.

    References:
        Caron et al., DINO (ICCV 2021), GitHub issue #228: a non-strict load that silently kept random weights.
    """


class ChecksumMismatch(WeightsError):
    """A downloaded file's SHA-256 differs from the expected one; the file was not kept.

    References:
        Wightman, "PyTorch Image Models" (timm).
    """


# ------------------------------------------------------------------------------------------------ names
def _resolve_name(name: str) -> tuple[str, dict[str, Any], bool]:
    """``name`` -> (timm name, default kwargs, whether hub weights exist for it)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string such as 'vit_micro' or 'resnet18', got {name!r}")
    if name in _BOOK_VITS:
        timm_name, dims, has_hub = _BOOK_VITS[name]
        return timm_name, {**_VIT_COMMON, **dims, "img_size": _BOOK_VIT_IMG_SIZE}, has_hub
    if name in _BOOK_CNNS:
        timm_name, args = _BOOK_CNNS[name]
        return timm_name, dict(args), False
    if ":" in name:  # "hf-hub:org/repo" and "local-dir:..." are resolved by timm itself
        return name, {}, True
    if timm.is_model(name.split(".", 1)[0]):
        return name, {}, True
    candidates = list(BOOK_ENCODERS) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown encoder {name!r}.{hint} The book's short names are {', '.join(BOOK_ENCODERS)}; any timm model "
        "name works too (see timm.list_models(), e.g. timm.list_models('convnext*'))."
    )


def _registry_cfg(timm_name: str) -> Any:
    """timm's registered pretrained config for ``timm_name`` (a ``PretrainedCfg``), or None."""
    if ":" in timm_name:
        return None
    try:
        return timm.models.get_pretrained_cfg(timm_name)
    except RuntimeError as err:  # a tag that does not exist for the architecture
        arch = timm_name.split(".")[0]
        raise ValueError(f"{timm_name!r}: {err} List the tags with timm.list_pretrained('{arch}*').") from err


def _tag_of(cfg: Mapping[str, Any] | Any) -> str:
    get = cfg.get if isinstance(cfg, Mapping) else partial(getattr, cfg)
    arch, tag = get("architecture", None), get("tag", None)
    return f"{arch}.{tag}" if tag else str(arch)


def _as_tuple(names: str | Iterable[str] | None) -> tuple[str, ...]:
    if not names:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


# ------------------------------------------------------------------------------------------------ files
def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as 64 hex digits (read in 1 MiB chunks, so large files need little memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_safetensors(path: Path) -> bool:
    # safetensors = 8-byte little-endian header length, then a JSON header starting with "{"
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict timm will see for ``path``: unwrapped from "model"/"state_dict" (EMA first), DDP prefix off."""
    is_st = path.suffix == ".safetensors"
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as err:
        if not is_st and _looks_like_safetensors(path):
            raise WeightsMismatch(f"{path} is a safetensors file; rename it to end in '.safetensors'") from err
        kind = "safetensors" if is_st else "torch (torch.save)"
        raise WeightsMismatch(
            f"could not read {path} as a {kind} weights file ({_short(err)}). Save weights with "
            "safetensors.torch.save_file(model.state_dict(), 'x.safetensors') or torch.save(model.state_dict(), "
            "'x.pth')."
        ) from err
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)] if isinstance(state, Mapping) else None
    if bad is None or bad:
        found = f"keys {sorted(state)[:8]}" if isinstance(state, Mapping) else type(state).__name__
        raise WeightsMismatch(
            f"{path} holds {found}, not a state dict of tensors; store model.state_dict() itself, or under the key "
            "'model' or 'state_dict'"
        )
    return dict(state)


def _key_report(file_keys: Iterable[str], model_keys: Iterable[str], free: set[str]) -> tuple[list[str], list[str]]:
    """(missing from the file, unexpected in the file), ignoring ``free`` keys and BatchNorm step counters."""
    file_keys, model_keys = set(file_keys), set(model_keys)
    missing = sorted(k for k in model_keys - file_keys - free if not k.endswith(_NOT_WEIGHTS))
    unexpected = sorted(k for k in file_keys - model_keys - free if not k.endswith(_NOT_WEIGHTS))
    return missing, unexpected


def _short(err: BaseException) -> str:
    """``Type: first line of the message`` — torch's and the hub's messages run to many paragraphs."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def _first_lines(err: BaseException, n: int = 3) -> str:
    lines = str(err).strip().splitlines()
    return "\n    ".join(lines[:n]) + (f"\n    … ({len(lines) - n} more lines)" if len(lines) > n else "")


def _mismatch_message(path: Path, name: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    lines = [f"{path.name} does not fit {name!r}; loading it would leave weights random."]
    if missing:
        lines.append(f"  {len(missing)} weights the model needs are not in the file, e.g. {missing[:5]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} weights in the file are not in the model, e.g. {unexpected[:5]}")
    if shapes:
        lines.append(f"  {len(shapes)} weights differ in shape, e.g. {shapes[:5]}")
    prefixes = {k.split(".", 1)[0] for k in unexpected}
    if len(prefixes) == 1 and missing and set(missing) <= {k.split(".", 1)[-1] for k in unexpected}:
        lines.append(f"  Every extra key starts with '{prefixes.pop()}.': strip that prefix when saving.")
    if missing and all(k.startswith("fc_norm.") for k in missing) and all(k.startswith("norm.") for k in unexpected):
        lines.append(
            "  The file was saved with global_pool='token' (a final norm); build the model with the same pooling."
        )
    if any(k.startswith("decoder") for k in unexpected):
        lines.append("  This looks like a whole MAE: save its encoder with mae.to_timm().state_dict().")
    lines.append(
        "  Pass the file saved from the same architecture (same name and widths; img_size and in_chans may differ), "
        "with timm's parameter names."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ network
def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError]
    try:
        from huggingface_hub import errors as hf_errors

        errors += [hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled]
    except ImportError:  # older huggingface_hub, or none installed (timm then uses plain URLs)
        pass
    for module, attr in (("httpx", "TransportError"), ("requests.exceptions", "ConnectionError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[attr]), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _is_network_error(err: BaseException) -> bool:
    """Whether ``err`` or anything in its cause/context chain says the network or the hub could not be reached."""
    kinds, seen = _network_errors(), set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


_HUB_HOST, _HUB_TIMEOUT_S = "huggingface.co", 3.0


def hub_reachable(host: str = _HUB_HOST, timeout: float = _HUB_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the weights hub opens within ``timeout`` seconds (a quick offline check)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached_file(cfg: Any) -> Path | None:
    """The hub cache's copy of ``cfg``'s weights file, if an earlier online run left one."""
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in filter(None, (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin")):
        found = try_to_load_from_cache(repo_id=repo, filename=filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _no_hub_message(name: str, tag: str, err: BaseException) -> str:
    return (
        f"could not fetch the ImageNet weights of {name!r} ({tag}) from the Hugging Face hub / timm URLs: "
        f"{_short(err)}\nThis machine seems to have no internet access. create_encoder never "
        "falls back to random weights. Either run, once, on a machine with internet:\n"
        f"    path = download_weights({name!r}, 'weights/')\n"
        "copy the file here and pass pretrained=<that file> (any .safetensors or .pth state dict works), or pass "
        "pretrained=False for a random initialisation (init_source 'random')."
    )


# ------------------------------------------------------------------------------------------------ factory
def _warn_adapted(name: str, source_chans: int, in_chans: int) -> None:
    warnings.warn(
        f"{name}: the weights were trained on {source_chans}-channel images; timm adapts the first convolution to "
        f"{in_chans} channels by repeating its filters, scaled by {source_chans}/{in_chans} — a heuristic start for "
        "that layer, not learned features.",
        UserWarning,
        stacklevel=3,
    )


def create_encoder(
    name: str,
    in_chans: int = 1,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int = 0,
    pretrained: bool | str | os.PathLike = False,
    **kwargs: Any,
) -> nn.Module:
    """Build an encoder (a timm model) with random, hub or local-file weights, recorded in ``model.init_source``.

    For ``in_chans=1`` timm sums the RGB filters of the first convolution (a grey image then gives the response an
    RGB image with equal channels would); for other channel counts it repeats them, scaled by ``3 / in_chans``.
    Book ViTs loaded with ImageNet weights get the 16-px patch embedding and the position table resampled to their
    patch and image size by timm. CNNs accept any image size, so ``img_size`` is passed only to models with a fixed
    input size (ViTs).

    Args:
        name: a book name (see :data:`BOOK_ENCODERS`) or any timm model name, optionally with a tag
            (``"resnet18.a1_in1k"``).
        in_chans: image channels (1 for grey-scale scans).
        img_size: input side for fixed-size models (book ViTs: 64 when None; timm names: timm's default).
        num_classes: classifier outputs; 0 gives a feature extractor (``head = Identity``).
        pretrained: False (random), True (timm's hub weights) or a path to a ``.safetensors`` / ``.pth`` state dict
            with timm's parameter names, possibly wrapped under ``"model"`` or ``"state_dict"``.
        **kwargs: passed to ``timm.create_model`` (``patch_size``, ``drop_path_rate``, ``dynamic_img_size`` …);
            they override the book's defaults (book ViTs: ``patch_size=8``, ``global_pool="token"``).

    Returns:
        The timm model, on the default device in train mode, with ``init_source`` and ``encoder_name`` attributes.

    Raises:
        ValueError: unknown name or bad arguments.
        FileNotFoundError: ``pretrained`` names a file that does not exist.
        WeightsUnavailable: hub weights asked for but unreachable, or none exist for this model.
        WeightsMismatch: the file does not fit the architecture.

    Example:
        >>> enc = create_encoder("vit_micro", in_chans=1, img_size=32)
        >>> enc.init_source, enc.num_features
        ('random', 128)
    """
    timm_name, defaults, has_hub = _resolve_name(name)
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int (1 for grey-scale, 3 for RGB), got {in_chans!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0 (0 = no classifier, features only), got {num_classes!r}")
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise TypeError(f"pretrained must be False, True or a path to a weights file, got {type(pretrained).__name__}")
    cfg = _registry_cfg(timm_name)
    build = {**defaults, **kwargs, "in_chans": in_chans, "num_classes": num_classes}
    if img_size is not None and (cfg is None or cfg.fixed_input_size or "img_size" in defaults):
        build["img_size"] = img_size
    if pretrained is False:
        model = timm.create_model(timm_name, pretrained=False, **build)
        source = "random"
    elif pretrained is True:
        if in_chans not in (1, 3):
            _warn_adapted(name, 3, in_chans)
        model, source = _from_hub(name, timm_name, cfg, has_hub, build)
    else:
        model, source = _from_file(name, timm_name, Path(pretrained).expanduser(), build)
    model.init_source = source
    model.encoder_name = name
    return model


def _from_hub(name: str, timm_name: str, cfg: Any, has_hub: bool, build: dict[str, Any]) -> tuple[nn.Module, str]:
    if not has_hub or (cfg is not None and not cfg.has_weights):
        raise WeightsUnavailable(
            f"{name!r} has no ImageNet weights on the hub"
            + (" (it is a book-only size)" if name in _BOOK_VITS or name in _BOOK_CNNS else "")
            + ". Pass pretrained=False, a weights file (pretrained='path/to/file.safetensors', e.g. from your own "
            "pre-training), or choose a model that has them (vit_tiny, vit_small, convnext_*, resnet*)."
        )
    tag = _tag_of(cfg) if cfg is not None else timm_name
    if not hub_reachable():
        # without this check an offline machine spends about a minute in the hub client's retries before failing
        cached = _hub_cached_file(cfg)
        if cached is not None:
            model, _ = _from_file(name, timm_name, cached, build)
            return model, f"hub-cache:{tag}"
        raise WeightsUnavailable(_no_hub_message(name, tag, ConnectionError(
            f"{_HUB_HOST} could not be reached within {_HUB_TIMEOUT_S:g} s and the hub cache holds no copy")))
    try:
        model = timm.create_model(timm_name, pretrained=True, **build)
    except Exception as err:
        if _is_network_error(err):
            raise WeightsUnavailable(_no_hub_message(name, tag, err)) from err
        raise
    return model, f"hub:{_tag_of(model.pretrained_cfg)}"


def _from_file(name: str, timm_name: str, path: Path, build: dict[str, Any]) -> tuple[nn.Module, str]:
    if not path.exists():
        raise FileNotFoundError(
            f"weights file {path} not found. Pass the path of a .safetensors or .pth state dict; on a machine with "
            f"internet, download_weights({name!r}, {str(path.parent)!r}) fetches timm's ImageNet weights once."
        )
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the weights file inside it (.safetensors or .pth)")
    if "pretrained_cfg" in build or "pretrained_cfg_overlay" in build:
        raise ValueError("pretrained_cfg / pretrained_cfg_overlay are set by create_encoder when loading a file")
    state = _read_state_dict(path)

    # the architecture's parameter names and shapes, from a copy on the meta device (no memory, no init cost);
    # timm loads into the plain model before any features_only wrapping, so compare with that
    plain = {k: v for k, v in build.items() if k not in ("features_only", "out_indices", "feature_cls")}
    try:
        with torch.device("meta"):
            skeleton = timm.create_model(timm_name, pretrained=False, **plain)
    except (RuntimeError, NotImplementedError):  # a constructor that reads tensor values (.item()) cannot run on meta
        skeleton = timm.create_model(timm_name, pretrained=False, **plain)
    model_state = skeleton.state_dict()
    pcfg = skeleton.pretrained_cfg
    classifiers = _as_tuple(pcfg.get("classifier"))
    heads = {f"{c}.{p}" for c in classifiers for p in ("weight", "bias")}

    # A strict key check of our own: timm loads non-strictly whenever the class count changes (the default
    # num_classes=0 always does), and a non-strict load of a wrong file silently keeps random weights
    # (the DINO issue #228 pitfall). Only the classifier may be missing (it is new) or extra (it is dropped).
    missing, unexpected = _key_report(state, model_state, heads)
    if missing or unexpected:
        raise WeightsMismatch(_mismatch_message(path, name, missing, unexpected, []))

    overlay: dict[str, Any] = dict(file=str(path), source=None, custom_load=False)
    first = next((state[f"{c}.weight"] for c in _as_tuple(pcfg.get("first_conv")) if f"{c}.weight" in state), None)
    if first is not None and first.ndim == 4:
        # tell timm how many channels the file was trained on, so it adapts from that count (not from RGB)
        file_chans = int(first.shape[1])
        overlay["input_size"] = (file_chans, *tuple(pcfg.get("input_size") or (3, 224, 224))[1:])
        if file_chans != build["in_chans"] != 1:  # summing to one channel is the standard, exact-for-grey case
            _warn_adapted(name, file_chans, build["in_chans"])
    head = next((state[f"{c}.weight"] for c in classifiers if f"{c}.weight" in state), None)
    if classifiers:
        # timm keeps the file's classifier only when its class count equals the model's, and drops it otherwise
        overlay["num_classes"] = int(head.shape[0]) if head is not None else 0
    try:
        model = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **build)
    except (RuntimeError, ValueError) as err:
        first_convs = {f"{c}.weight" for c in _as_tuple(pcfg.get("first_conv"))}
        shapes = [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
            for k, v in model_state.items()
            if k in state and k not in (heads | first_convs) and tuple(state[k].shape) != tuple(v.shape)
        ]
        raise WeightsMismatch(
            _mismatch_message(path, name, [], [], shapes) + f"\n  timm said: {_first_lines(err)}"
        ) from err
    return model, f"file:{path.name} sha256:{file_sha256(path)[:12]}"


def copy_into_timm(encoder: nn.Module, name: str, in_chans: int, num_classes: int = 0, init_source: str | None = None,
                   **overrides: Any) -> nn.Module:
    """A fresh timm model ``name`` carrying ``encoder``'s weights, with a new classifier of ``num_classes``.

    What every method's ``to_timm`` does with its pre-trained encoder (a plain timm model itself): the load is
    strict except for the new classifier, so a mismatch raises instead of leaving random weights behind.

    Raises:
        RuntimeError: keys other than the classifier's are missing, or unexpected keys are present.
    """
    model = create_encoder(name, in_chans=in_chans, num_classes=num_classes, **overrides)
    missing, unexpected = model.load_state_dict(encoder.state_dict(), strict=False)
    classifier = str(model.pretrained_cfg.get("classifier") or "head.fc") + "."
    leftover = [k for k in missing if not k.startswith(classifier)]
    if leftover or unexpected:
        raise RuntimeError(f"export to timm failed: missing {leftover}, unexpected {unexpected}")
    if init_source is not None:
        model.init_source = init_source
    return model.to(next(encoder.parameters()).device)


# ------------------------------------------------------------------------------------------------ download
def _fetch_weights(source: dict[str, str], tmp: Path) -> None:
    """Write the weights ``source`` names (``hf_hub_id`` + ``filename``, or ``url``) to ``tmp``. Touches the network."""
    if "hf_hub_id" in source:
        from huggingface_hub import hf_hub_download

        # through the hub cache, so a later create_encoder(pretrained=True) finds the file offline as well
        cached = hf_hub_download(repo_id=source["hf_hub_id"], filename=source["filename"])
        shutil.copyfile(cached, tmp)
    else:
        torch.hub.download_url_to_file(source["url"], str(tmp), progress=True)


def download_weights(name: str, dest: str | os.PathLike, sha256: str | None = None) -> Path:
    """Download the ImageNet weights of an encoder once, checksummed, to a local file for ``create_encoder``.

    The only function here that touches the network, and only when called. It fetches the file of the model's
    default timm pretrained tag (the one ``create_encoder(name, pretrained=True)`` would use) from the Hugging Face
    hub (or timm's URL), writes it to a temporary file beside ``dest`` and renames it into place only once complete
    and, if ``sha256`` is given, verified; otherwise nothing is left behind. Record ``file_sha256(dest)`` and pass it
    next time to pin the exact file.

    Args:
        name: a book name or a timm name, optionally with a tag (``"convnext_atto.d2_in1k"``).
        dest: the file to write (its suffix must fit the format, usually ``.safetensors``), or a folder (an existing
            one, a path ending in ``/``, or a path with no suffix, such as ``cache_dir() / "weights"``, which is
            created; the file is then named ``<model>.<tag>.safetensors``).
        sha256: expected SHA-256 (64 hex digits); when ``dest`` already has it, nothing is downloaded.

    Returns:
        The path of the weights file.

    Raises:
        WeightsUnavailable: no weights for this model, or the network / hub cannot be reached.
        ChecksumMismatch: the downloaded file's SHA-256 differs from ``sha256`` (the file is deleted).

    Example:
        >>> path = download_weights("convnext_atto", "weights/")  # doctest: +SKIP
        >>> create_encoder("convnext_atto", in_chans=1, pretrained=path).init_source  # doctest: +SKIP
        'file:convnext_atto.d2_in1k.safetensors sha256:…'
    """
    timm_name, _, has_hub = _resolve_name(name)
    cfg = _registry_cfg(timm_name)
    if not has_hub or cfg is None or not cfg.has_weights:
        raise WeightsUnavailable(f"timm has no registered ImageNet weights for {name!r}; nothing to download")
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"sha256 must be 64 hex digits (see file_sha256), got {sha256!r}")
    if cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or "model.safetensors"  # what timm's hub repositories hold
        source = {"hf_hub_id": cfg.hf_hub_id, "filename": filename}
    elif cfg.url and not cfg.custom_load:
        filename = cfg.url.rsplit("/", 1)[-1]
        source = {"url": cfg.url}
    else:
        raise WeightsUnavailable(f"the weights of {name!r} are in a foreign format ({cfg.url}); use another model")
    suffix = ".safetensors" if filename.endswith(".safetensors") else Path(filename).suffix or ".pth"

    as_folder = str(dest).endswith(("/", os.sep))  # Path() would drop the trailing slash that says "a folder"
    dest = Path(dest).expanduser()
    if as_folder or dest.is_dir() or not dest.suffix:  # a path with no suffix names a folder, not a weights file
        dest = dest / f"{_tag_of(cfg)}{suffix}"
    if (dest.suffix == ".safetensors") != (suffix == ".safetensors"):
        # timm picks the reader by the suffix, so a wrong one makes an unreadable file
        raise ValueError(
            f"{_tag_of(cfg)} comes as a {suffix} file; name dest with that suffix, e.g. {dest.stem}{suffix}"
        )
    if sha256 is not None and dest.is_file() and file_sha256(dest) == sha256:
        return dest

    def write(tmp: Path) -> None:
        try:
            _fetch_weights(source, tmp)
        except Exception as err:
            if _is_network_error(err):
                raise WeightsUnavailable(
                    f"could not download {_tag_of(cfg)} ({_short(err)}); check the "
                    "internet connection (HF_HUB_OFFLINE must be unset)"
                ) from err
            raise
        digest = file_sha256(tmp)
        if sha256 is not None and digest != sha256:
            raise ChecksumMismatch(
                f"{_tag_of(cfg)}: downloaded file has sha256 {digest}, expected {sha256}; it was deleted. The download "
                "was corrupted or the expected checksum belongs to another file."
            )

    return atomic_write(dest, write)


# ------------------------------------------------------------------------------------------------ info
def encoder_info(model: nn.Module) -> dict[str, Any]:
    """What a chapter prints about an encoder: name, size, input and where its weights came from.

    Args:
        model: a model from :func:`create_encoder` (any timm model or ``nn.Module`` works; unknown fields are None).

    Returns:
        ``{"name", "params", "in_chans", "img_size", "num_features", "init_source"}``; ``img_size`` is None for
        models that take any size, ``init_source`` is ``"unknown"`` for models not made by :func:`create_encoder`.

    Example:
        >>> info = encoder_info(create_encoder("resnet18", in_chans=1))
        >>> info["in_chans"], info["init_source"]
        (1, 'random')
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    conv = None
    for conv_name in _as_tuple(cfg.get("first_conv")):
        try:
            conv = model.get_submodule(conv_name)
            break
        except AttributeError:  # a features_only wrapper renames modules
            continue
    if not isinstance(conv, nn.Conv2d):
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return {
        "name": getattr(model, "encoder_name", None) or cfg.get("architecture") or type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "in_chans": conv.in_channels if conv is not None else None,
        "img_size": tuple(img_size) if img_size is not None else None,
        "num_features": getattr(model, "num_features", None),
        "init_source": getattr(model, "init_source", "unknown"),
    }
