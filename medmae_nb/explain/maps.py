"""Explanation maps: attention, attention rollout, Integrated Gradients and Grad-CAM.

Maps from a timm ``VisionTransformer`` (or any ViT with ``blocks[i].attn`` holding timm-style ``qkv``/``num_heads``):

* :func:`attention_maps` — the last block's CLS-token attention over the patch tokens, one map per head (DINO's
  figure). timm uses fused ``scaled_dot_product_attention`` by default, so no attention matrix ever exists; rather
  than asking for ``timm.layers.set_fused_attn(False)`` before the model is built, a temporary forward pre-hook on
  ``attn`` recomputes ``softmax(q k^T * scale)`` from the block's own ``qkv`` weights (and ``q_norm``/``k_norm``).
* :func:`attention_rollout` — attention propagated through all layers with the residual identity.

Maps from any classifier, via captum: :func:`integrated_gradients` and :func:`grad_cam` (with a token-grid reshape
for ViTs, and the last ``Conv2d`` for CNNs). :func:`upsample_map` brings token-grid maps to pixel resolution.

Controls, the maps an explanation must beat: :func:`intensity_map` (plain darkness: in ultrasound most lesions are
hypo-echoic, so "the dark region" already points at many of them without any model) and
:func:`randomize_weights` (Adebayo et al.'s model-randomisation check: a map method that gives the same maps for a
network with random weights explains the image, not the model; compare with
:func:`medmae_nb.explain.scores.map_similarity`).

Every function puts the model in eval mode for the call (:func:`medmae_nb.inference.eval_mode`, which gives every
submodule its own mode back) and removes every hook it adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..inference import eval_mode

__all__ = ["attention_maps", "attention_matrices", "attention_rollout", "integrated_gradients", "grad_cam",
           "upsample_map", "blurred_baseline", "intensity_map", "randomize_weights"]


# ---------------------------------------------------------------------------------------------------------- helpers


def _vit_blocks(vit: nn.Module) -> Sequence[nn.Module]:
    blocks = getattr(vit, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError("expected a timm VisionTransformer-like model with a non-empty `.blocks`")
    for i, b in enumerate(blocks):
        attn = getattr(b, "attn", None)
        if attn is None or not hasattr(attn, "qkv") or not hasattr(attn, "num_heads"):
            raise ValueError(f"blocks[{i}].attn is not a timm-style Attention (needs `qkv` and `num_heads`)")
    return blocks


def _num_prefix(vit: nn.Module) -> int:
    n = getattr(vit, "num_prefix_tokens", None)
    if n is None:
        n = 0 if getattr(vit, "cls_token", None) is None else 1
    return int(n)


def _has_cls(vit: nn.Module) -> bool:
    if hasattr(vit, "has_class_token"):
        return bool(vit.has_class_token)
    return getattr(vit, "cls_token", None) is not None


def _token_grid(vit: nn.Module, image_hw: tuple[int, int], n_patches: int) -> tuple[int, int]:
    """The patch grid ``(h, w)`` of ``n_patches`` tokens from an image of size ``image_hw``."""
    patch = getattr(getattr(vit, "patch_embed", None), "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        h, w = image_hw[0] // ph, image_hw[1] // pw
        if h * w == n_patches:
            return h, w
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"cannot arrange {n_patches} patch tokens on a grid for an image of size {image_hw}")
    return side, side


def _attention_probs(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T * scale)`` ``(B, heads, T, T)`` as timm's un-fused ``Attention.forward`` computes it."""
    b, t, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x)
    head_dim = qkv.shape[-1] // (3 * heads)
    q, k, _ = qkv.reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q = getattr(attn, "q_norm", nn.Identity())(q)
    k = getattr(attn, "k_norm", nn.Identity())(k)
    logits = (q * getattr(attn, "scale", head_dim**-0.5)) @ k.transpose(-2, -1)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return logits.softmax(dim=-1)


def _capture_attention(vit: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Runs ``vit`` on ``images`` and returns the attention matrices of the given block indices (fused or not)."""
    blocks = _vit_blocks(vit)
    captured: dict[int, torch.Tensor] = {}

    def make_hook(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["x"]
            captured[i] = _attention_probs(module, x, kwargs.get("attn_mask"))

        return hook

    handles = [blocks[i].attn.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i in layers]
    try:
        with eval_mode(vit), torch.no_grad():
            forward = getattr(vit, "forward_features", vit)
            forward(images)
    finally:
        for h in handles:
            h.remove()
    missing = [i for i in layers if i not in captured]
    if missing:
        raise RuntimeError(f"blocks {missing} were not run by the model's forward pass")
    return [captured[i] for i in layers]


# ------------------------------------------------------------------------------------------------------- attention


def attention_maps(vit: nn.Module, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Last-block attention of the CLS token over the patch tokens, one map per head.

    Row 0 of the last block's softmax attention (CLS as query), restricted to the patch keys (the
    ``num_prefix_tokens`` CLS/register columns dropped) and laid out on the patch grid. With ``normalize=True``
    each head's map is renormalised to sum to 1 over the patches, so maps are comparable across heads and models;
    with ``normalize=False`` the raw attention is returned, whose sum is the share of CLS attention that goes to
    patches (the rest goes to the prefix tokens).

    Works with timm's fused attention on or off, without changing the model (a temporary pre-hook recomputes the
    attention from the block's ``qkv`` weights).

    Args:
        vit: a timm ``VisionTransformer`` (or alike) with a class token.
        images: ``(N, C, H, W)`` on the model's device.
        normalize: renormalise each head's map to sum 1 over patches.

    Returns:
        ``(N, heads, h, w)`` non-negative maps on the patch grid (``h = H // patch``); see :func:`upsample_map`.

    References:
        Caron et al., Emerging Properties in Self-Supervised Vision Transformers (DINO), ICCV 2021.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=2)
        >>> attention_maps(vit, torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 4, 4])
    """
    depth = len(_vit_blocks(vit))
    if not _has_cls(vit):
        raise ValueError("attention_maps needs a class token; for models without one use grad_cam")
    (attn,) = _capture_attention(vit, images, [depth - 1])
    prefix = _num_prefix(vit)
    cls_row = attn[:, :, 0, prefix:]  # (N, heads, L)
    if normalize:
        cls_row = cls_row / cls_row.sum(-1, keepdim=True)
    h, w = _token_grid(vit, tuple(images.shape[-2:]), cls_row.shape[-1])
    return cls_row.reshape(*cls_row.shape[:2], h, w)


def attention_matrices(vit: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention probabilities ``softmax(q k^T * scale)``: a list of ``(N, heads, T, T)`` tensors.

    ``T`` counts the prefix tokens (CLS, registers) first, then the patch tokens in image order.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=2, depth=2)
        >>> [tuple(a.shape) for a in attention_matrices(vit, torch.rand(1, 3, 32, 32))]
        [(1, 3, 17, 17), (1, 3, 17, 17)]
    """
    with torch.no_grad():
        return _capture_attention(vit, images, list(range(len(_vit_blocks(vit)))))


def attention_rollout(
    vit: nn.Module, images: torch.Tensor, discard_ratio: float = 0.0, head_fusion: str = "mean",
    query: str = "cls",
) -> torch.Tensor:
    """Attention rollout: attention propagated from the input to the CLS token through every block.

    Per block, the heads are fused (``mean``/``max``/``min``), optionally the weakest ``discard_ratio`` share of
    each row's patch-key entries is zeroed (prefix columns are kept), the identity is added for the residual
    connection and rows are renormalised; the blocks' matrices are multiplied from first to last. The CLS row over
    the patch tokens, renormalised to sum 1, is the map — or, with ``query="mean"``, the mean of the patch tokens'
    rows, which is what a head on average-pooled tokens (MAE's fine-tuning default) reads; the CLS token of such a
    model is never trained by the classification loss.

    Args:
        vit: a timm ``VisionTransformer`` (or alike) with a class token.
        images: ``(N, C, H, W)``.
        discard_ratio: share of low attention entries to drop per row, in ``[0, 1)``.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.

    Returns:
        ``(N, h, w)`` non-negative maps summing to 1.

    References:
        Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=2)
        >>> attention_rollout(vit, torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 4, 4])
    """
    fusions = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fusions:
        raise ValueError(f"head_fusion must be one of {list(fusions)}, got {head_fusion!r}")
    if not 0 <= discard_ratio < 1:
        raise ValueError(f"discard_ratio must lie in [0, 1), got {discard_ratio}")
    if query not in ("cls", "mean"):
        raise ValueError(f"query must be 'cls' or 'mean', got {query!r}")
    depth = len(_vit_blocks(vit))
    if query == "cls" and not _has_cls(vit):
        raise ValueError("attention_rollout reads the CLS row; this model has no class token (use grad_cam)")
    attns = _capture_attention(vit, images, list(range(depth)))
    prefix = _num_prefix(vit)
    t = attns[0].shape[-1]
    eye = torch.eye(t, device=attns[0].device, dtype=attns[0].dtype)
    rollout = eye.expand(attns[0].shape[0], t, t)
    for attn in attns:
        a = fusions[head_fusion](attn)
        n_drop = int(discard_ratio * (t - prefix))
        if n_drop > 0:
            patch = a[..., prefix:]
            drop = patch.topk(n_drop, dim=-1, largest=False).indices
            a = torch.cat([a[..., :prefix], patch.scatter(-1, drop, 0.0)], dim=-1)
        a = a + eye
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    cls_row = rollout[:, 0, prefix:] if query == "cls" else rollout[:, prefix:, prefix:].mean(1)
    cls_row = cls_row / cls_row.sum(-1, keepdim=True)
    h, w = _token_grid(vit, tuple(images.shape[-2:]), cls_row.shape[-1])
    return cls_row.reshape(-1, h, w)


# -------------------------------------------------------------------------------------------------- attributions


def _resolve_target(model: nn.Module, images: torch.Tensor, target: Any) -> Any:
    if target is None:
        with torch.no_grad():
            return model(images).argmax(1)
    return target


def blurred_baseline(images: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """A Gaussian-blurred copy of each image: the Integrated Gradients baseline used for ultrasound here.

    IG attributes ``(x - baseline) * average gradient`` to each pixel, so a black baseline gives (near) zero
    attribution wherever the image is (near) black — in ultrasound, exactly the hypo-echoic lesions and shadows a
    reader wants explained. A heavily blurred image keeps the coarse brightness of the scan and removes the local
    structure (edges, texture, a small lesion's outline), so the attribution is about that structure
    (Sturmfels, Lundberg, Lee: Visualizing the Impact of Feature Attribution Baselines, Distill 2020).

    Args:
        images: ``(N, C, H, W)``.
        sigma: blur in pixels; default an eighth of the image side (8 px at 64 px).

    Returns:
        ``(N, C, H, W)`` blurred images (reflect padding at the borders), same dtype.

    Example:
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 16, 16] = 1
        >>> b = blurred_baseline(x)
        >>> bool(b.max() < 0.1) and abs(float(b.sum()) - 1.0) < 0.05
        True
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    sigma = max(images.shape[-2:]) / 8 if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
    radius = min(int(math.ceil(3 * sigma)), min(images.shape[-2:]) - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    steps: int = 32,
    baseline: torch.Tensor | float | str | None = "blur",
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """Integrated Gradients (captum), absolute value summed over channels.

    Args:
        model: any classifier mapping ``(N, C, H, W)`` to logits.
        images: ``(N, C, H, W)``.
        target: class index (int or ``(N,)`` tensor); None explains each image's predicted class.
        steps: points on the path from the baseline to the image.
        baseline: the reference image: ``"blur"`` (default, :func:`blurred_baseline`: a dark lesion differs from
            it, so it gets attribution), ``"black"`` (all zeros, the paper's default for natural images: near-zero
            attribution on dark lesions), a number (a uniform image of that value) or a tensor.
        internal_batch_size: bound on ``N * steps`` evaluated at once (memory).

    Returns:
        ``(N, H, W)`` non-negative attributions (detached).

    References:
        Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> integrated_gradients(net, torch.rand(2, 1, 16, 16), target=0, steps=8).shape
        torch.Size([2, 16, 16])
    """
    from captum.attr import IntegratedGradients

    if isinstance(baseline, str):
        if baseline not in ("blur", "black"):
            raise ValueError(f"baseline must be 'blur', 'black', a number or a tensor; got {baseline!r}")
        baseline = blurred_baseline(images) if baseline == "blur" else None
    with eval_mode(model):
        target = _resolve_target(model, images, target)
        attr = IntegratedGradients(model).attribute(
            images, baselines=baseline, target=target, n_steps=steps, internal_batch_size=internal_batch_size
        )
    return attr.detach().abs().sum(1)


def intensity_map(images: torch.Tensor, dark: bool = True, patch_size: int = 1) -> torch.Tensor:
    """A model-free control map: each pixel's darkness (or brightness), averaged over channels.

    Hypo-echoic lesions are darker than the tissue around them, so this map alone "finds" many of them; an
    explanation that scores no better than it adds nothing a threshold could not. With ``patch_size > 1`` the map is
    averaged over ``patch_size`` × ``patch_size`` cells (as blocky as a ViT's token maps).

    Args:
        images: ``(N, C, H, W)``.
        dark: darkness (``max - x`` per image) when True, brightness (``x - min``) when False.
        patch_size: cell size of the average (1: pixel resolution); must divide H and W.

    Returns:
        ``(N, H, W)`` non-negative maps.

    Example:
        >>> x = torch.ones(1, 1, 4, 4); x[..., :2, :2] = 0
        >>> intensity_map(x)[0, 0].tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    x = images.detach().float().mean(1)
    flat = x.flatten(1)
    if dark:
        m = flat.max(1).values.view(-1, 1, 1) - x
    else:
        m = x - flat.min(1).values.view(-1, 1, 1)
    if patch_size > 1:
        h, w = m.shape[-2:]
        if h % patch_size or w % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide the image size {h}x{w}")
        m = F.avg_pool2d(m[:, None], patch_size)
        m = F.interpolate(m, size=(h, w), mode="nearest")[:, 0]
    return m


def randomize_weights(model: nn.Module, seed: int = 0, include: Callable[[str], bool] | None = None) -> nn.Module:
    """A copy of ``model`` with its weights re-drawn at random: the model-randomisation sanity check.

    Adebayo et al. (Sanity Checks for Saliency Maps, NeurIPS 2018) compare an explanation of the trained network
    with the same explanation of a network whose weights are random: if the two look alike, the method shows the
    image (edges, dark regions), not what the network learned. Every submodule with ``reset_parameters`` (linear,
    convolution, normalisation layers) is reset with torch's default initialisation; parameters that belong to no
    such module (a ViT's ``cls_token``, ``pos_embed``) are drawn from N(0, 0.02²).

    Args:
        model: the trained network (left unchanged).
        seed: seed of the new weights.
        include: optional predicate on a submodule's or parameter's qualified name: only matching ones are
            re-drawn (e.g. ``lambda n: n.startswith("head") or n.startswith("blocks.11")`` for the cascading
            variant, top layers first).

    Returns:
        The randomised copy, in the model's training mode.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        >>> r = randomize_weights(net, seed=1)
        >>> bool(torch.equal(r[0].weight, net[0].weight))
        False
    """
    import copy

    rand = copy.deepcopy(model)
    keep = include or (lambda name: True)
    reset: set[int] = set()
    with torch.random.fork_rng():  # the caller's random streams are left as they were
        torch.manual_seed(seed)
        for name, module in rand.named_modules():
            if hasattr(module, "reset_parameters") and keep(name):
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
        with torch.no_grad():
            for name, p in rand.named_parameters():
                if id(p) not in reset and keep(name):
                    p.normal_(0.0, 0.02)
    return rand


class _Tap(nn.Module):
    """An identity that gives captum a module whose output is the ``(N, D, h, w)`` token grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _is_vit(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "patch_embed")


def _default_cam_layer(model: nn.Module) -> nn.Module:
    if _is_vit(model):
        # The last block's norm1 output feeds its attention, the only path from patch tokens to the CLS token
        # after which nothing mixes tokens; the block's own output would get zero gradient under CLS pooling.
        return model.blocks[-1].norm1
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no Conv2d layer found; pass `layer=` explicitly")
    return convs[-1]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    layer: nn.Module | None = None,
    interpolate_mode: str = "nearest",
) -> torch.Tensor:
    """Grad-CAM (captum ``LayerGradCam``) upsampled to the image size, ReLU applied.

    For a ViT the chosen layer's token output ``(N, prefix + h*w, D)`` is reshaped by a temporary forward hook into
    a ``(N, D, h, w)`` grid (the prefix tokens are kept aside and put back), so Grad-CAM's spatial averaging of the
    gradients runs over patches. The default layer is ``blocks[-1].norm1`` for a ViT and the last ``Conv2d`` for a
    CNN.

    Args:
        model: a classifier; a timm ViT (has ``blocks`` and ``patch_embed``) or a CNN.
        images: ``(N, C, H, W)``.
        target: class index (int or ``(N,)`` tensor); None explains each image's predicted class.
        layer: the layer to explain (a ViT layer must output tokens ``(N, T, D)``, a CNN layer ``(N, C, h, w)``).
        interpolate_mode: how the grid is upsampled (``"nearest"`` keeps patch blocks, ``"bilinear"`` smooths).

    Returns:
        ``(N, H, W)`` non-negative maps (detached).

    References:
        Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization, ICCV 2017.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> grad_cam(net, torch.rand(2, 1, 16, 16), target=1).shape
        torch.Size([2, 16, 16])
    """
    from captum.attr import LayerAttribution, LayerGradCam

    layer = _default_cam_layer(model) if layer is None else layer
    tap = _Tap()
    prefix = _num_prefix(model) if _is_vit(model) else 0
    image_hw = tuple(images.shape[-2:])

    def to_grid(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        if out.dim() == 4:
            return tap(out)
        if out.dim() != 3:
            raise ValueError(f"grad_cam layer output must be (N, T, D) tokens or (N, C, h, w), got {tuple(out.shape)}")
        n, t, d = out.shape
        h, w = _token_grid(model, image_hw, t - prefix)
        grid = tap(out[:, prefix:].transpose(1, 2).reshape(n, d, h, w))
        return torch.cat([out[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)

    handle = layer.register_forward_hook(to_grid)
    try:
        with eval_mode(model):
            target = _resolve_target(model, images, target)
            attr = LayerGradCam(model, tap).attribute(images, target=target, relu_attributions=True)
    finally:
        handle.remove()
    attr = LayerAttribution.interpolate(attr.detach(), image_hw, interpolate_mode)
    return attr[:, 0]


# ------------------------------------------------------------------------------------------------------- utilities


def upsample_map(maps: torch.Tensor | np.ndarray, image_size: int | tuple[int, int]) -> torch.Tensor | np.ndarray:
    """Nearest-neighbour upsampling of ``(N, h, w)`` (or ``(N, heads, h, w)``) maps to ``image_size``.

    Returns the same type (torch or NumPy) as given.

    Example:
        >>> upsample_map(torch.arange(4.0).reshape(1, 2, 2), 4)[0, :, 0]
        tensor([0., 0., 2., 2.])
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    is_numpy = not isinstance(maps, torch.Tensor)
    m = torch.as_tensor(np.asarray(maps)) if is_numpy else maps
    if m.dim() not in (3, 4):
        raise ValueError(f"maps must be (N, h, w) or (N, heads, h, w), got shape {tuple(m.shape)}")
    x = m if m.dim() == 4 else m[:, None]
    dtype = x.dtype
    up = F.interpolate(x.double() if not x.is_floating_point() else x, size=size, mode="nearest").to(dtype)
    up = up if m.dim() == 4 else up[:, 0]
    return up.numpy() if is_numpy else up
