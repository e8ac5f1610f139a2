"""Adapting an encoder's first layer to another number of input channels, as timm does for pre-trained weights.

An encoder pre-trained on gray scans (``in_chans=1``) may be fine-tuned on RGB data (dermatoscopy, pathology), and an
ImageNet encoder (``in_chans=3``) on gray ones. Only the first convolution (a CNN's stem, a ViT's patch embedding)
sees the channels, so only its weight ``(out, C_in, k, k)`` changes, by timm's rule (``adapt_input_conv``):

* to 1 channel: the filters of the ``C_in`` channels are summed, so a gray image gives exactly the output that an
  image with ``C_in`` equal channels gave before;
* to ``N`` channels: the filters are repeated and scaled by ``C_in / N``, so an image with ``N`` equal channels (a gray
  image stored as RGB) gives exactly the output the ``C_in``-channel image gave (when ``N`` is a multiple of
  ``C_in``, e.g. 1 to 3).

Either way the adapted layer is a heuristic start for colour data, not learned colour features: fine-tuning has to
learn what the channels mean.

References:
    Wightman, "PyTorch Image Models" (timm), ``timm.models.adapt_input_conv``.
"""

from __future__ import annotations

import inspect
import logging
import math

import torch
from torch import nn

try:
    from timm.models import adapt_input_conv
except ImportError:  # older timm keeps it in the private module only
    from timm.models._manipulate import adapt_input_conv

from .base import SSLMethod

__all__ = ["adapt_input_channels", "find_input_conv"]

_log = logging.getLogger(__name__)
# timm >= 1.0.2x adapts from any channel count (base_chans); older releases assume 3-channel source weights.
_TIMM_BASE_CHANS = "base_chans" in inspect.signature(adapt_input_conv).parameters
# where the book's and timm's encoders keep their first convolution, tried after timm's own pretrained_cfg entry
_KNOWN_FIRST = ("patch_embed.proj", "stem.0", "stem.conv", "stem", "conv1", "conv_stem")


def find_input_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The convolution that sees the input image, and its name in ``model``.

    Looks, in order, at timm's ``pretrained_cfg["first_conv"]`` (every timm model names its first layer there), at the
    places the book's encoders use (``patch_embed.proj`` for ViTs and MAE, ``stem.0`` for :class:`SmallCNN` and
    ConvNeXt, ``conv1`` for ResNets), then at the first ``nn.Conv2d`` the model registers.

    Raises:
        ValueError: the model has no ``nn.Conv2d`` (e.g. a ViT whose patch embedding is a linear layer).

    Example:
        >>> from medmae_nb.models.cnn import SmallCNN
        >>> find_input_conv(SmallCNN(in_chans=1))[0]
        'stem.0'
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv") if isinstance(cfg, dict) else None
    names = [first] if isinstance(first, str) else list(first or [])
    for name in [*names, *_KNOWN_FIRST]:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, nn.Conv2d):
            return name, module
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(
        f"{type(model).__name__} has no nn.Conv2d, so there is no first convolution to adapt; adapt_input_channels "
        f"works on CNN stems and convolutional ViT patch embeddings (timm models, create_encoder(...))"
    )


def adapt_input_channels(model: nn.Module, in_chans: int, verbose: bool = True) -> nn.Module:
    """Adapts ``model``'s first convolution to ``in_chans`` input channels in place (timm's rule), and returns it.

    The weight is replaced (same device, dtype, ``requires_grad``; the bias is kept); ``in_channels`` of the layer,
    ``in_chans`` of the model and of the modules above the layer (timm's ``VisionTransformer``, ``ResNet``,
    ``ConvNeXt``), ``config["in_chans"]`` of the book's models and the channel count of timm's ``pretrained_cfg`` /
    ``default_cfg["input_size"]`` are updated so that they describe the adapted model. One line says what was done
    (printed when ``verbose``, and always logged at INFO).

    Args:
        model: a timm model, an encoder from :func:`~medmae_nb.models.create_encoder`, ``method.to_timm()`` of a
            pre-trained method, or any module whose first ``nn.Conv2d`` sees the image.
        in_chans: the new number of input channels (1 for gray, 3 for RGB).
        verbose: print the line saying what was adapted.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: ``in_chans`` not a positive int, a whole self-supervised method (its pretext task depends on
            ``in_chans``: adapt the encoder it exports), a grouped first convolution, or no convolution.

    Example:
        >>> from medmae_nb.models.cnn import SmallCNN
        >>> model = adapt_input_channels(SmallCNN(in_chans=1), 3)
        adapted stem.0 of SmallCNN from 1 to 3 input channels (weights repeated and scaled by 1/3, as timm does)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int (1 for gray, 3 for RGB), got {in_chans!r}")
    if isinstance(model, SSLMethod):
        raise ValueError(
            f"{type(model).__name__} is a whole self-supervised method: its pretext task depends on in_chans (a "
            f"reconstruction head predicts that many channels, a teacher or momentum encoder has its own first "
            f"layer), so adapting one convolution would break it. Adapt the encoder it exports instead: "
            f"adapt_input_channels(method.to_timm(), {in_chans}); or build the method with in_chans={in_chans}"
        )
    name, conv = find_input_conv(model)
    source = conv.in_channels
    what = f"{name} of {type(model).__name__}"
    if source == in_chans:
        _say(f"{what} already takes {in_chans} input channel{'s' * (in_chans != 1)}; nothing adapted", verbose)
        return model
    if conv.groups != 1:
        raise ValueError(f"{what} is a grouped convolution ({conv.groups} groups); its channels cannot be adapted")
    with torch.no_grad():
        old = conv.weight
        weight = _adapt(old.detach(), in_chans, source)
        if old.is_contiguous(memory_format=torch.channels_last) and not old.is_contiguous():
            weight = weight.contiguous(memory_format=torch.channels_last)
        elif _channels_last(model):  # a 1-channel weight is contiguous both ways: follow the model's other convs
            weight = weight.contiguous(memory_format=torch.channels_last)
        conv.weight = nn.Parameter(weight.to(old.dtype), requires_grad=old.requires_grad)
    conv.in_channels = in_chans
    _update_attributes(model, name, source, in_chans)
    how = (
        f"weights summed over the {source} channels" if in_chans == 1
        else f"weights repeated and scaled by {_ratio(source, in_chans)}"
    )
    _say(f"adapted {what} from {source} to {in_chans} input channels ({how}, as timm does)", verbose)
    return model


def _adapt(weight: torch.Tensor, in_chans: int, source: int) -> torch.Tensor:
    """timm's ``adapt_input_conv`` from ``source`` channels (its formula, where an older timm assumes 3)."""
    if _TIMM_BASE_CHANS:
        return adapt_input_conv(in_chans, weight, base_chans=source)
    if source == 3:
        return adapt_input_conv(in_chans, weight)
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / source), 1, 1)[:, :in_chans] * (source / in_chans)
    return w.to(weight.dtype)


def _update_attributes(model: nn.Module, conv_name: str, source: int, in_chans: int) -> None:
    """Sets ``in_chans`` (where it said ``source``) on the model and every module above the layer, the book's
    ``config["in_chans"]`` and timm's ``input_size``."""
    parts = conv_name.split(".")[:-1]
    owners = [model] + [model.get_submodule(".".join(parts[: i + 1])) for i in range(len(parts))]
    for owner in owners:
        if getattr(owner, "in_chans", None) == source:
            owner.in_chans = in_chans
    config = getattr(model, "config", None)
    if isinstance(config, dict) and config.get("in_chans") == source:
        config["in_chans"] = in_chans
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)) and len(cfg["input_size"]) == 3:
        cfg = {**cfg, "input_size": (in_chans, *tuple(cfg["input_size"])[1:])}  # a copy: timm may share the dict
        model.pretrained_cfg = cfg
        if hasattr(model, "default_cfg"):
            model.default_cfg = cfg  # timm's alias of pretrained_cfg


def _channels_last(model: nn.Module) -> bool:
    """Whether the model keeps its convolution weights channels-last (as :class:`SmallCNN` does)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels > 1 and module.kernel_size != (1, 1):
            w = module.weight
            return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return False


def _ratio(source: int, target: int) -> str:
    g = math.gcd(source, target)
    return f"{source // g}/{target // g}" if target // g != 1 else str(source // g)


def _say(message: str, verbose: bool) -> None:
    _log.info(message)
    if verbose:
        print(message)
