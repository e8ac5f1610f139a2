"""Running a trained model over a dataset: class probabilities, frozen features, and the checks around them.

* :func:`predict_proba` — labels and softmax probabilities, the input of every metric in :mod:`medmae_nb.evaluate`.
* :func:`extract_features` — frozen ``(N, D)`` features for linear probes and the classical classifiers.
* :func:`feature_fn` — how features are read from an encoder (timm pre-logits, else pooled ``forward_features``).
* :func:`eval_mode` — a context manager that puts a model in eval mode and gives every submodule its own mode back.
* :func:`check_model_input` — a clear error when the model's input channels or image size differ from the data's,
  instead of a shape error from deep inside a convolution.

Both runners use a plain single-process ``DataLoader`` without shuffling, so row ``i`` of the output is sample ``i``
of the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["predict_proba", "extract_features", "feature_fn", "eval_mode", "check_model_input"]

M = TypeVar("M")


@contextmanager
def eval_mode(model: M) -> Iterator[M]:
    """Puts ``model`` in eval mode for the ``with`` block, then gives every submodule back its own ``training`` flag.

    Restoring only the top-level flag with ``model.train(was_training)`` would switch every submodule to that one
    mode, e.g. put back into training a frozen encoder that was deliberately kept in eval mode inside a model in
    training mode (a linear probe), and so change its BatchNorm statistics on the next training step.

    Args:
        model: an ``nn.Module``; anything else (a plain function) passes through unchanged.

    Yields:
        The same ``model``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> net[0].eval()  # doctest: +ELLIPSIS
        Linear(...)
        >>> with eval_mode(net):
        ...     assert not net.training and not net[1].training
        >>> net.training, net[0].training, net[1].training
        (True, False, True)
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode  # the attribute, not m.train(mode), which would recurse and override the children


# ------------------------------------------------------------------------------------------------------ input check


def _patch_embed(model: nn.Module) -> tuple[str, nn.Module, nn.Module] | None:
    """``(name, patch_embed, owner)`` of the first timm-style ``patch_embed`` in ``model`` (it may be wrapped)."""
    for name, m in model.named_modules():
        owner, _, leaf = name.rpartition(".")
        if leaf == "patch_embed":
            return name, m, model.get_submodule(owner)
    return None


def _timm_first_conv(model: nn.Module) -> tuple[int, str] | None:
    """``(in_channels, name)`` of the input convolution a timm model names in ``pretrained_cfg["first_conv"]``."""
    for name, m in model.named_modules():
        first = (getattr(m, "pretrained_cfg", None) or {}).get("first_conv")
        for conv_name in [first] if isinstance(first, str) else list(first or ()):
            try:
                conv = m.get_submodule(conv_name)
            except AttributeError:  # a features_only wrapper renames modules
                continue
            if isinstance(conv, nn.Conv2d):
                return conv.in_channels, f"{name}.{conv_name}" if name else conv_name
    return None


def _expected_channels(model: nn.Module) -> tuple[int, str] | None:
    """``(in_channels, layer name)`` of the layer that first sees the image, or None when there is no conv layer.

    timm's own record of its input convolution comes first, then a ``patch_embed.proj``; the last resort is the
    first ``Conv2d`` in registration order, which is the input layer in every model built the usual way.
    """
    found = _timm_first_conv(model)
    if found is not None:
        return found
    pe = _patch_embed(model)
    if pe is not None and isinstance(getattr(pe[1], "proj", None), nn.Conv2d):
        return pe[1].proj.in_channels, f"{pe[0]}.proj"
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels, name or type(m).__name__
    return None


def check_model_input(model: nn.Module | Callable, example: Tensor) -> None:
    """Raises a clear ``ValueError`` when ``model`` cannot take images shaped like ``example``.

    Checks the input channels (``in_channels`` of the convolution timm records as ``first_conv``, else of a
    ``patch_embed.proj``, else of the first registered ``nn.Conv2d``) and, for a ViT with a fixed input size (timm
    ``PatchEmbed`` with ``strict_img_size``), the image size; a ViT built with ``dynamic_img_size=True`` only needs
    the size to be a multiple of its patch size. Models without a convolution (e.g. a plain function) are not
    checked. Call it on the first batch, before training or inference.

    Args:
        model: the classifier or encoder.
        example: an image batch ``(B, C, H, W)`` or one image ``(C, H, W)``.

    Raises:
        ValueError: the channels or the image size differ; the message names both numbers and how to fix it.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
        >>> check_model_input(net, torch.zeros(2, 1, 8, 8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the model expects 3 input channels (its layer `0` has in_channels=3) but the images have 1 ...
    """
    if not isinstance(model, nn.Module):
        return
    shape = tuple(example.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"expected images (B, C, H, W) or one image (C, H, W), got a tensor of shape {shape}")
    c, h, w = shape[-3:]
    found = _expected_channels(model)
    if found is not None and found[0] != c:
        expected, where = found
        fix = (
            "convert the data with `ImageDataset.to_rgb()`"
            if expected == 3 and c == 1
            else f"convert the images to {expected} channels"
        )
        raise ValueError(
            f"the model expects {expected} input channels (its layer `{where}` has in_channels={expected}) but the "
            f"images have {c} channel{'s' if c != 1 else ''}; {fix}, or build the model with `in_chans={c}`"
        )
    found_pe = _patch_embed(model)
    if found_pe is None or getattr(found_pe[1], "img_size", None) is None:
        return
    name, pe, owner = found_pe
    size = pe.img_size
    fixed = (size, size) if isinstance(size, int) else tuple(size)
    if getattr(pe, "strict_img_size", True) and not getattr(owner, "dynamic_img_size", False):
        if fixed != (h, w):
            raise ValueError(
                f"the model takes {fixed[0]}x{fixed[1]} images ({name}.img_size = {fixed}) but the images are "
                f"{h}x{w}; resize the data to {fixed[0]}x{fixed[1]}, or build the model with "
                f"`img_size={h if h == w else (h, w)}` "
                "(or `dynamic_img_size=True` for a timm ViT)"
            )
        return
    patch = getattr(pe, "patch_size", None)
    if patch is not None and not getattr(pe, "dynamic_img_pad", False):
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        if h % ph or w % pw:
            raise ValueError(
                f"the images are {h}x{w}, not a multiple of the model's patch size {ph}x{pw}; resize or crop them to "
                f"a multiple of {ph}, or build the model with `dynamic_img_pad=True`"
            )


# ------------------------------------------------------------------------------------------------------- loading


def _loader(dataset: Any, batch_size: int) -> torch.utils.data.DataLoader:
    if isinstance(dataset, torch.utils.data.DataLoader):
        return dataset
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    # one process and no shuffling: row i of every output is sample i, and nothing is forked inside a notebook
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def _split_batch(batch: Any) -> tuple[Tensor, Any]:
    """``(images, labels or None)`` of a batch given as a tuple, a ``{"image", "label"}`` mapping or bare images."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise ValueError(f"a batch given as a mapping needs an 'image' key, got keys {sorted(batch)}")
        return batch["image"], batch.get("label")
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0], batch[1] if len(batch) > 1 else None
    raise ValueError(
        f"the dataset must yield (image, label) pairs, {{'image', 'label'}} mappings or images; got {type(batch)}"
    )


def _device_of(model: Any, device: torch.device | str | None) -> torch.device:
    """The given device (the model is moved there), else the device of the model's parameters (CPU if none)."""
    if device is not None:
        device = torch.device(device)
        if isinstance(model, nn.Module):
            model.to(device)
        return device
    param = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------------- predictions


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    dataset: torch.utils.data.Dataset | torch.utils.data.DataLoader,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a classifier over a dataset, in eval mode without gradients.

    The first batch is checked with :func:`check_model_input`, so a model built for other channels or another
    image size fails with a message saying how to fix it.

    Args:
        model: maps an image batch ``(B, C, H, W)`` to logits ``(B, K)``.
        dataset: yields ``(image, label)`` pairs or ``{"image", "label"}`` mappings; a ``DataLoader`` of such batches
            is used as it is (keep it unshuffled).
        batch_size: batch size when a dataset is given.
        device: where to run; None keeps the model where it is (its parameters' device). A given device moves the
            model there.

    Returns:
        ``(y_true (N,) int64, probs (N, K) float32)`` as NumPy arrays, in the dataset's order.

    Raises:
        ValueError: an empty dataset, batches without labels, a model that does not return ``(B, K)`` logits, or
            images the model cannot take.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
        >>> y, p = predict_proba(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), ds)
        >>> p.shape
        (4, 2)
    """
    loader = _loader(dataset, batch_size)
    device = _device_of(model, device)
    ys, ps = [], []
    with eval_mode(model):
        for batch in loader:
            x, y = _split_batch(batch)
            if y is None:
                raise ValueError("predict_proba needs labels: the dataset must yield (image, label) pairs")
            if not ps:
                check_model_input(model, x)
            logits = model(x.to(device))
            if not isinstance(logits, Tensor) or logits.ndim != 2:
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"the model must return logits (B, K); got {shape}")
            ps.append(torch.softmax(logits.float(), dim=1).cpu())
            ys.append(torch.as_tensor(y).reshape(-1).cpu())
    if not ps:
        raise ValueError("the dataset is empty")
    return torch.cat(ys).numpy().astype(np.int64), torch.cat(ps).numpy()


# ------------------------------------------------------------------------------------------------------- features


def feature_fn(encoder: nn.Module | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The function ``x (B, C, H, W) -> features (B, D)`` of an encoder.

    A timm model gives its pre-logits, ``forward_head(forward_features(x), pre_logits=True)``, so the model's own
    pooling (CLS token or average) is used; else ``forward_features(x)``, or ``encoder(x)``, is pooled: a feature
    map ``(B, D, h, w)`` by its spatial mean, tokens ``(B, T, D)`` by their mean.

    Args:
        encoder: a timm model, a module with ``forward_features``, or any callable returning features.

    Returns:
        The feature function (it does not switch modes or turn off gradients; :func:`extract_features` does).

    Example:
        >>> fn = feature_fn(nn.Conv2d(1, 5, 3))
        >>> fn(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 5])
    """
    if hasattr(encoder, "forward_features") and hasattr(encoder, "forward_head"):
        return lambda x: encoder.forward_head(encoder.forward_features(x), pre_logits=True)
    base = encoder.forward_features if hasattr(encoder, "forward_features") else encoder

    def features(x: Tensor) -> Tensor:
        f = base(x)
        if f.ndim == 4:  # (B, D, h, w) feature map
            return f.mean(dim=(2, 3))
        if f.ndim == 3:  # (B, tokens, D)
            return f.mean(dim=1)
        if f.ndim != 2:
            raise ValueError(f"the encoder returned features of shape {tuple(f.shape)}; expected (B, D), "
                             "(B, tokens, D) or (B, D, h, w)")
        return f

    return features


@torch.no_grad()
def extract_features(
    encoder: nn.Module | Callable[[Tensor], Tensor],
    dataset: torch.utils.data.Dataset | torch.utils.data.DataLoader,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Frozen features ``(N, D)`` of every image in ``dataset``, in eval mode without gradients, as float32 NumPy.

    Features come from :func:`feature_fn`. No augmentation is applied beyond the dataset's own transform. The first
    batch is checked with :func:`check_model_input`.

    Args:
        encoder: a timm model, a module with ``forward_features``, or any callable returning features.
        dataset: yields ``(image, label)`` pairs, ``{"image", ...}`` mappings or bare images; a ``DataLoader`` is used
            as it is (keep it unshuffled).
        batch_size: batch size when a dataset is given.
        device: where to run; None keeps the encoder where it is (its parameters' device, CPU for a function). A
            given device moves the encoder there.

    Returns:
        ``(N, D)`` float32 features in the dataset's order.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.rand(6, 1, 8, 8), torch.zeros(6))
        >>> extract_features(nn.Conv2d(1, 4, 3), ds, batch_size=4).shape
        (6, 4)
    """
    loader = _loader(dataset, batch_size)
    device = _device_of(encoder, device)
    fn = feature_fn(encoder)
    out: list[Tensor] = []
    with eval_mode(encoder):
        for batch in loader:
            x, _ = _split_batch(batch)
            if not out:
                check_model_input(encoder, x)
            out.append(fn(x.to(device)).float().cpu())
    if not out:
        raise ValueError("the dataset is empty")
    return torch.cat(out).numpy()
