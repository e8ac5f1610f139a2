"""MIRAM: a masked autoencoder that reconstructs the hidden patches at the input scale and at x2 (and x4) scale.

One MAE encoder (:class:`~medmae_nb.models.mae.MaskedAutoencoderViT`, inherited with its masking, timm export and
factories' sizes) feeds several decoders. Every decoder starts from the same *decoder-embedded* token grid — the
encoded visible tokens through one shared ``decoder.embed``, one shared mask token in each hidden slot, back in image
order — as the authors' code does from its v2 on (their v1 gave the x2 branch its own embedding and mask token; v2
keeps those parameters but never uses them, so here they are not built). The x1 decoder is MAE's. A x``s`` decoder
repeats each token ``s x s`` times in 2-D ("token interpolation" = nearest-neighbour upsampling of the grid), adds its
own fixed sin-cos table for the ``(s h, s w)`` grid, runs its own blocks and predicts ``p x p`` pixels per token with
its own head, so each x``s`` token covers ``p/s x p/s`` pixels of the encoder's input. A hidden token at x1 is hidden
at x``s`` as its ``s x s`` children; every scale is scored by MAE's loss (norm-pix with ``norm_pix_loss``) on its
hidden tokens, and the loss is the weighted sum over scales (``loss_weights``, equal in the authors' code). The
authors' code scores its x``s`` branches on every token, visible ones too; here each scale scores hidden tokens only,
as MAE does, so no scale is rewarded for copying what the encoder saw.

Two targets, named for what they are:

* ``target="upsampled"`` (the authors' code): the encoder sees the input; the x``s`` target is the input upsampled by
  nearest neighbour. No new pixels: what changes is the number of tokens and the granularity of the per-patch
  normalisation (each target patch is a ``p/s x p/s`` piece of the input, standardised on its own).
* ``target="native"`` (an inferred variant, after the abstract's "high-resolution images"): the encoder sees the
  input average-pooled by ``max(scales)``, and the x``s`` target is the input pooled by ``max(scales)/s`` — the largest
  scale's target is the full-resolution input, detail the encoder never saw. ``img_size`` is the input's size; the
  encoder (and the exported timm model) work at ``img_size / max(scales)``.

A x``s`` decoder holds ``s^2`` times more tokens than MAE's, so full attention costs ``s^4`` times more (the reason
for the linear-attention decoder of the paper's v4). ``scale_attention="local"`` splits the x``s`` grid into
non-overlapping windows covering ``local_window x local_window`` x1 tokens and attends within each window only; every
window gets its own copy of the CLS token, the encoder's summary of all visible patches, so a window of mask tokens
still knows the image. Windows save attention work only: the per-token MLP stays, and with torch's fused attention
no attention matrix is stored, so memory barely changes (``python -m medmae_nb.bench miram``: at 64 px, patch 8, the
x1+x2+x4 step takes about a third less time on one CPU thread). ``scale_decoder_depth`` (fewer x``s`` blocks) cuts
both time and memory.

References:
    Vo et al., "MIRAM: Masked Image Reconstruction Across Multiple Scales for Breast Lesion Risk Prediction",
    arXiv 2503.07157 (2025); He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.nn import functional as F

from ..inference import eval_mode
from ..losses import masked_mse, patch_stats
from ..masking import MaskInfo, MaskingError, gather_tokens, patchify, unpatchify
from .base import Batch, as_batch
from .decoders import sincos_pos_embed, vit_norm_layer
from .mae import MAE_SIZES, MAEOutput, MAEReconstruction, MaskedAutoencoderViT
from .registry import register_method

__all__ = [
    "MIRAMOutput",
    "MIRAMViT",
    "ScaleDecoder",
    "child_indices",
    "miram_vit_micro",
    "miram_vit_small",
    "miram_vit_tiny",
    "upsample_tokens",
]

SCALES = (2, 4)  # the extra scales the authors' code builds
TARGETS = ("upsampled", "native")
ATTENTIONS = ("full", "local")


# ----------------------------------------------------------------------------------------------- token grids
def upsample_tokens(x: Tensor, grid_size: tuple[int, int], scale: int) -> Tensor:
    """Nearest-neighbour upsampling of a token grid: each token repeated ``scale x scale`` times in 2-D.

    Args:
        x: ``(N, h*w)`` or ``(N, h*w, *D)``, tokens in row-major order of the ``(h, w)`` grid.
        grid_size: ``(h, w)``.
        scale: ``s``.

    Returns:
        ``(N, s*h * s*w, *D)`` in row-major order of the ``(s h, s w)`` grid.

    Example:
        >>> upsample_tokens(torch.tensor([[1, 2]]), (1, 2), 2).tolist()
        [[1, 1, 2, 2, 1, 1, 2, 2]]
    """
    h, w = grid_size
    n, rest = x.shape[0], x.shape[2:]
    x = x.reshape(n, h, w, *rest).repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return x.reshape(n, h * w * scale * scale, *rest)


def child_indices(idx: Tensor, grid_size: tuple[int, int], scale: int) -> Tensor:
    """The ``s x s`` children on the ``(s h, s w)`` grid of tokens ``idx`` of the ``(h, w)`` grid.

    Args:
        idx: int64 ``(N, M)`` token indices at x1.
        grid_size: ``(h, w)``, the x1 grid.
        scale: ``s``.

    Returns:
        int64 ``(N, M * s * s)``: each parent's children together, row-major within the parent.

    Example:
        >>> child_indices(torch.tensor([[1]]), (2, 2), 2).tolist()  # token (0, 1) -> rows 0-1, columns 2-3 of 4x4
        [[2, 3, 6, 7]]
    """
    w = grid_size[1]
    offsets = torch.arange(scale, device=idx.device)
    rows = (idx // w)[..., None, None] * scale + offsets[:, None]
    cols = (idx % w)[..., None, None] * scale + offsets[None, :]
    return (rows * (w * scale) + cols).flatten(1)


# ----------------------------------------------------------------------------------------------- x s decoder
class ScaleDecoder(nn.Module):
    """MIRAM's decoder at scale ``s``: upsample the decoder-embedded x1 grid by repetition, add this grid's own
    sin-cos positions, run its own blocks (full or windowed attention), predict pixels per token with its own head.

    Args:
        grid_size: the x1 token grid ``(h, w)``.
        scale: ``s`` (2 or 4).
        dim: decoder width (shared with the x1 decoder: they read the same embedded tokens).
        depth: transformer blocks.
        num_heads: attention heads.
        out_dim: values predicted per token (``p * p * C``).
        mlp_ratio: MLP hidden width / block width.
        attention: ``"full"``, or ``"local"`` for attention within windows (see the module docstring).
        local_window: window side in x1 tokens (``s * local_window`` tokens at this scale); clipped to the grid.

    References:
        Vo et al., "MIRAM", arXiv 2503.07157 (2025).

    Example:
        >>> dec = ScaleDecoder((2, 2), 2, dim=16, depth=1, num_heads=2, out_dim=64)
        >>> dec(torch.zeros(3, 1 + 4, 16)).shape  # CLS + 4 tokens at x1 -> 16 tokens at x2
        torch.Size([3, 16, 64])
    """

    def __init__(self, grid_size: tuple[int, int], scale: int, dim: int, depth: int, num_heads: int, out_dim: int,
                 mlp_ratio: float = 4.0, attention: str = "full", local_window: int = 4) -> None:
        super().__init__()
        self.base_grid = tuple(grid_size)
        self.scale = scale
        self.grid_size = (grid_size[0] * scale, grid_size[1] * scale)
        self.attention = attention
        self.window = tuple(min(local_window, g) * scale for g in grid_size)  # in tokens of this grid
        self.register_buffer("pos_embed", sincos_pos_embed(dim, *self.grid_size)[None])
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=vit_norm_layer)
                                      for _ in range(depth)])
        self.norm = vit_norm_layer(dim)
        self.pred = nn.Linear(dim, out_dim)

    def _windowed(self, x: Tensor) -> Tensor:
        """The blocks on each window, CLS copied into every window; returns the patch tokens in image order."""
        n, _, d = x.shape
        (gh, gw), (wh, ww) = self.grid_size, self.window
        nh, nw = gh // wh, gw // ww
        tokens = x[:, 1:].reshape(n, nh, wh, nw, ww, d).transpose(2, 3).reshape(n * nh * nw, wh * ww, d)
        cls = x[:, :1].repeat_interleave(nh * nw, dim=0)  # sample-major, like the windows
        out = self.blocks(torch.cat([cls, tokens], dim=1))[:, 1:]
        return out.reshape(n, nh, nw, wh, ww, d).transpose(2, 3).reshape(n, gh * gw, d)

    def forward(self, filled: Tensor, predict_idx: Tensor | None = None) -> Tensor:
        """Predict per-token values at this scale.

        Args:
            filled: ``(N, 1 + h*w, dim)``: embedded CLS, then the x1 tokens in image order with mask tokens in the
                hidden slots (:meth:`~medmae_nb.models.decoders.MAEDecoder.fill`).
            predict_idx: ``(N, M)`` token indices of this grid to predict; None predicts all.

        Returns:
            ``(N, s^2 h w, out_dim)`` in image order, or ``(N, M, out_dim)`` in ``predict_idx`` order.
        """
        x = torch.cat([filled[:, :1], upsample_tokens(filled[:, 1:], self.base_grid, self.scale)], dim=1)
        x = x + self.pos_embed
        x = self._windowed(x) if self.attention == "local" else self.blocks(x)[:, 1:]
        x = self.norm(x)
        if predict_idx is not None:  # the head only where the loss looks
            x = gather_tokens(x, predict_idx)
        return self.pred(x)


class MIRAMOutput(MAEOutput):
    """What :meth:`MIRAMViT.forward` returns: ``loss`` (weighted sum over scales), ``logs`` (``loss_x1``,
    ``loss_x2``, …), ``pred`` / ``mask`` / ``mask_info`` at x1 as in :class:`~medmae_nb.models.mae.MAEOutput`, and

    * ``preds``: ``{scale: predicted patches}`` — hidden tokens only (children of ``mask_info.hidden_idx`` in
      :func:`child_indices` order) or, with ``full=True``, every token in image order;
    * ``masks``: ``{scale: (N, s^2 L) token mask}``, 1 = hidden.
    """

    preds: dict[int, Tensor]
    masks: dict[int, Tensor]


# ----------------------------------------------------------------------------------------------- the method
def _check_config(img_size: int | tuple[int, int], patch_size: int, scales: Any, loss_weights: Any, target: str,
                  scale_attention: str, local_window: int) -> tuple[tuple[int, ...], tuple[float, ...],
                                                                     tuple[int, int], tuple[int, int]]:
    """Validates MIRAM's own settings; returns scales, weights, input size and encoder size."""
    scales = tuple(scales) if isinstance(scales, (list, tuple)) else (scales,)
    bad = [s for s in scales if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s not in (1, *SCALES)]
    if bad:
        raise ValueError(f"scale {bad[0]!r} is not supported: MIRAM's extra decoders work at x2 or x4; use scales "
                         "(1, 2), (1, 4) or (1, 2, 4)")
    scales = tuple(int(s) for s in scales)
    if scales[:1] != (1,) or len(set(scales)) != len(scales) or list(scales) != sorted(scales) or len(scales) < 2:
        raise ValueError(f"scales must start with 1 (the input scale) and list 2 and/or 4 once each, in increasing "
                         f"order, e.g. (1, 2) or (1, 2, 4); got {scales} (for x1 alone use MaskedAutoencoderViT)")
    weights = (1.0,) * len(scales) if loss_weights is None else loss_weights
    try:
        weights = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"loss_weights must be a sequence of numbers, one per scale, got {loss_weights!r}") from None
    if len(weights) != len(scales):
        raise ValueError(f"loss_weights has {len(weights)} values but scales {scales} has {len(scales)}; give one "
                         "weight per scale, in the same order")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"loss_weights must be finite, >= 0 and not all 0, got {weights}; (1.0,) * len(scales) is "
                         "the authors' choice")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} (upsampled: the input upsampled, as in the authors' "
                         f"code; native: the encoder sees the input downsampled), got {target!r}")
    if scale_attention not in ATTENTIONS:
        raise ValueError(f"scale_attention must be one of {ATTENTIONS}, got {scale_attention!r}")
    if isinstance(local_window, bool) or not isinstance(local_window, int) or local_window < 1:
        raise ValueError(f"local_window must be a positive int (window side in x1 tokens), got {local_window!r}")
    height, width = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
    down = max(scales) if target == "native" else 1
    where = f"in native mode the encoder sees img_size / {down}" if down > 1 else "the encoder sees img_size"
    need = down * patch_size
    if height % need or width % need or height < need or width < need:
        small = "smaller than" if min(height, width) < need else "not a multiple of"
        raise MaskingError(
            f"image {height}x{width} does not fit the patch grid at the encoder's resolution: {where}, "
            f"{height / down:g}x{width / down:g} px, {small} patch_size {patch_size}; use image sides that are "
            f"multiples of {need} (at least {need}) or a smaller patch_size{' or max scale' if down > 1 else ''}"
        )
    return scales, weights, (height, width), (height // down, width // down)


@register_method("miram", family="masked image modelling", paper="Vo et al., arXiv 2503.07157 (2025)",
                 description="MAE with decoders at several scales: a high-resolution target for fine detail")
class MIRAMViT(MaskedAutoencoderViT):
    """MIRAM: MAE's ViT encoder and x1 decoder plus a decoder per extra scale (x2, x4), losses summed with weights.

    Args:
        img_size: input side ``H`` (square) or ``(H, W)`` — the batch's images. In ``native`` mode the encoder works
            at ``img_size / max(scales)``.
        patch_size: patch side ``p``, the same at every scale.
        in_chans: image channels.
        scales: ``(1, 2)``, ``(1, 4)`` or ``(1, 2, 4)``.
        loss_weights: one weight per scale (default all 1, the authors' choice); >= 0, not all 0.
        target: ``"upsampled"`` or ``"native"`` (see the module docstring).
        scale_attention: ``"full"`` or ``"local"`` attention in the x``s`` decoders.
        local_window: window side in x1 tokens for ``"local"``; must divide the x1 grid (clipped to it).
        scale_decoder_depth: blocks of each x``s`` decoder (default ``decoder_depth``).
        **kw: :class:`~medmae_nb.models.mae.MaskedAutoencoderViT`'s arguments (widths, depths, ``mask_ratio``,
            ``norm_pix_loss``, …); the x``s`` decoders share the x1 decoder's width, heads and MLP ratio.

    Attributes:
        config: every constructor argument (``img_size`` is the input's size), for cache keys and checkpoint cards.
        input_size: ``(H, W)`` of the images :meth:`forward` takes; ``img_size`` is the encoder's (as in MAE, it is
            what :meth:`forward_features_all` and :meth:`to_timm` take).
        scale_decoders: ``{"x2": ScaleDecoder, …}``; the x1 decoder is ``decoder``, named as in MAE, so MAE weights
            load into it.

    References:
        Vo et al., "MIRAM: Masked Image Reconstruction Across Multiple Scales for Breast Lesion Risk Prediction",
        arXiv 2503.07157 (2025).

    Example:
        >>> model = MIRAMViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
        ...                  decoder_depth=1, decoder_num_heads=2, scales=(1, 2))
        >>> out = model(torch.rand(2, 1, 32, 32))  # 12 of 16 tokens hidden at x1 -> 48 of 64 at x2
        >>> out.preds[1].shape, out.preds[2].shape, sorted(out.logs)
        (torch.Size([2, 12, 64]), torch.Size([2, 48, 64]), ['loss_x1', 'loss_x2'])
    """

    def __init__(self, img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1, *,
                 scales: tuple[int, ...] = (1, 2), loss_weights: tuple[float, ...] | None = None,
                 target: str = "upsampled", scale_attention: str = "full", local_window: int = 4,
                 scale_decoder_depth: int | None = None, **kw: Any) -> None:
        scales, weights, input_size, encoder_size = _check_config(img_size, patch_size, scales, loss_weights, target,
                                                                  scale_attention, local_window)
        super().__init__(img_size=encoder_size, patch_size=patch_size, in_chans=in_chans, **kw)
        depth = self.config["decoder_depth"] if scale_decoder_depth is None else scale_decoder_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"scale_decoder_depth must be a positive int (or None for decoder_depth), got {depth!r}")
        h, w = self.grid_size
        if scale_attention == "local" and (h % min(local_window, h) or w % min(local_window, w)):
            raise ValueError(f"local_window={local_window} does not tile the {h}x{w} x1 token grid; choose a divisor "
                             f"of both sides (e.g. {math.gcd(h, w)})")
        self.config.update(img_size=img_size if isinstance(img_size, int) else tuple(img_size), scales=scales,
                           loss_weights=weights, target=target, scale_attention=scale_attention,
                           local_window=local_window, scale_decoder_depth=depth)
        self.input_size = input_size
        dim = self.config["decoder_embed_dim"]
        self.scale_decoders = nn.ModuleDict({
            f"x{s}": ScaleDecoder(self.grid_size, s, dim, depth, self.config["decoder_num_heads"],
                                  patch_size * patch_size * self.in_chans, self.config["mlp_ratio"], scale_attention,
                                  local_window)
            for s in scales[1:]
        })
        for m in self.scale_decoders.modules():  # MAE's initialisation, as the x1 decoder got it
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales reconstructed, x1 first (from ``config``)."""
        return self.config["scales"]

    @property
    def loss_weights(self) -> dict[int, float]:
        """``{scale: weight}`` (from ``config``)."""
        return dict(zip(self.scales, self.config["loss_weights"]))

    def scale_targets(self, imgs: Tensor) -> dict[int, Tensor]:
        """``{scale: (N, C, s H_enc, s W_enc)}``: the image each scale reconstructs; x1 is what the encoder sees.

        ``upsampled``: the input, repeated ``s x s`` per pixel (nearest neighbour, exact for integer factors).
        ``native``: the input average-pooled by ``max(scales) / s`` (area averaging, so a detail smaller than the
        pooling window reaches only the larger scales' targets, never the encoder).
        """
        expected = (self.in_chans, *self.input_size)
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
            raise MaskingError(f"this MIRAM takes images (N, {expected[0]}, {expected[1]}, {expected[2]}), got "
                               f"{tuple(imgs.shape)}; resize the images or build the model with matching img_size / "
                               "in_chans")
        if self.config["target"] == "upsampled":
            return {s: imgs if s == 1 else imgs.repeat_interleave(s, -2).repeat_interleave(s, -1) for s in self.scales}
        top = max(self.scales)
        return {s: imgs if s == top else F.avg_pool2d(imgs, top // s) for s in self.scales}

    def scale_mask(self, mask: Tensor, scale: int) -> Tensor:
        """The x1 token mask ``(N, L)`` at ``scale``: ``(N, s^2 L)``, each token's children hidden with it."""
        return upsample_tokens(mask, self.grid_size, scale)

    def forward_scale_decoder(self, scale: int, latent: Tensor, restore: Tensor | None = None,
                              predict_idx: Tensor | None = None) -> Tensor:
        """Predict patches at ``scale`` from the encoded visible tokens (x1: MAE's decoder, see
        :meth:`~medmae_nb.models.mae.MaskedAutoencoderViT.forward_decoder`; ``predict_idx`` indexes that scale's
        grid)."""
        if scale == 1:
            return self.forward_decoder(latent, restore, predict_idx)
        filled = self.decoder.fill(self.decoder.embed(latent), restore)  # the shared embedding and mask token
        return self.scale_decoders[f"x{scale}"](filled, predict_idx)

    def forward(self, x: Batch | Tensor, mask_info: MaskInfo | None = None, generator: torch.Generator | None = None,
                full: bool = False) -> MIRAMOutput:
        """Mask, encode, decode at every scale and score one batch.

        Args:
            x: a :class:`~medmae_nb.models.base.Batch` (per-sample seeds draw the masks) or images ``(N, C, H, W)``
                at ``input_size``.
            mask_info: a ready x1 mask (over ``num_patches`` tokens).
            generator: draw the random mask from this generator instead of the batch's seeds.
            full: predict every token of every scale in image order (for figures); by default only hidden ones.

        Returns:
            :class:`MIRAMOutput`.
        """
        batch = as_batch(x)
        targets = self.scale_targets(batch.images)
        info = self._mask_for(batch, mask_info, generator)
        latent = self.forward_encoder(targets[1], info)
        preds, masks, logs = {}, {}, {}
        loss = 0.0
        for s, weight in self.loss_weights.items():
            target = patchify(targets[s], self.patch_size)
            masks[s] = info.mask if s == 1 else self.scale_mask(info.mask, s)
            if full:
                preds[s] = self.forward_scale_decoder(s, latent, info.restore)
                logs[f"loss_x{s}"] = masked_mse(preds[s], target, masks[s], self.norm_pix_loss)
            else:
                idx = info.hidden_idx if s == 1 else child_indices(info.hidden_idx, self.grid_size, s)
                preds[s] = self.forward_scale_decoder(s, latent, info.restore, idx)
                logs[f"loss_x{s}"] = masked_mse(preds[s], gather_tokens(target, idx), None, self.norm_pix_loss)
            loss = loss + weight * logs[f"loss_x{s}"]
        logs = {k: v.detach() for k, v in logs.items()}
        return MIRAMOutput(loss, logs, pred=preds[1], mask=info.mask, mask_info=info, preds=preds, masks=masks)

    @torch.no_grad()
    def reconstruct_scales(self, imgs: Tensor, mask_ratio: float | None = None,
                           generator: torch.Generator | None = None, denormalize: str = "none",
                           mask_info: MaskInfo | None = None) -> dict[int, MAEReconstruction]:
        """Images for a figure at every scale: ``{scale: MAEReconstruction}`` against that scale's target image.

        Args and the caveat on ``denormalize="target_stats"`` (it borrows each hidden patch's true mean and std, so
        the pictures flatter the model) as in :meth:`~medmae_nb.models.mae.MaskedAutoencoderViT.reconstruct`;
        ``imgs`` are at ``input_size``. ``masked`` shows the scale's target image with its hidden patches set to 0.
        """
        if denormalize not in ("none", "target_stats"):
            raise ValueError(f"denormalize must be 'none' or 'target_stats', got {denormalize!r}")
        info = mask_info if mask_info is not None else self.random_mask(len(imgs), mask_ratio, generator)
        with eval_mode(self):
            out = self.forward(imgs, info.to(imgs.device), full=True)
        recs = {}
        for s, image in self.scale_targets(imgs).items():
            pred, size = out.preds[s], tuple(image.shape[-2:])
            if self.norm_pix_loss and denormalize == "target_stats":
                mean, std = patch_stats(patchify(image, self.patch_size))
                pred = pred * std + mean
            hidden = out.masks[s][..., None].expand(-1, -1, pred.shape[-1]).to(pred.dtype)
            pixel_mask = unpatchify(hidden, self.patch_size, self.in_chans, size)
            pred_img = unpatchify(pred, self.patch_size, self.in_chans, size)
            recs[s] = MAEReconstruction(masked=image * (1 - pixel_mask), pasted=image * (1 - pixel_mask)
                                        + pred_img * pixel_mask, pred=pred_img, mask=pixel_mask[:, :1])
        return recs

    def reconstruct(self, imgs: Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None,
                    denormalize: str = "none", mask_info: MaskInfo | None = None) -> MAEReconstruction:
        """The x1 entry of :meth:`reconstruct_scales` (MAE's figure, against what the encoder saw)."""
        return self.reconstruct_scales(imgs, mask_ratio, generator, denormalize, mask_info)[1]


# ------------------------------------------------------------------------------------------------- factories
def _build(size: str, img_size: int | tuple[int, int], patch_size: int, in_chans: int, **kw: Any) -> MIRAMViT:
    return MIRAMViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, **{**MAE_SIZES[size], **kw})


def miram_vit_micro(img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1,
                    **kw: Any) -> MIRAMViT:
    """MIRAM on :func:`~medmae_nb.models.mae.mae_vit_micro`'s encoder and decoder (CPU chapters); ``**kw`` as
    :class:`MIRAMViT` (``scales``, ``target``, ``loss_weights``, ``scale_attention``, …).

    References:
        Vo et al., "MIRAM", arXiv 2503.07157 (2025).

    Example:
        >>> m = miram_vit_micro(img_size=64, patch_size=8, scales=(1, 2), target="native")
        >>> m.input_size, m.img_size, m.grid_size  # the encoder sees 32 px; x2 predicts the 64-px input
        ((64, 64), (32, 32), (4, 4))
    """
    return _build("micro", img_size, patch_size, in_chans, **kw)


def miram_vit_tiny(img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1,
                   **kw: Any) -> MIRAMViT:
    """MIRAM on :func:`~medmae_nb.models.mae.mae_vit_tiny`'s encoder and decoder (ViT-Tiny).

    References:
        Vo et al., "MIRAM", arXiv 2503.07157 (2025).
    """
    return _build("tiny", img_size, patch_size, in_chans, **kw)


def miram_vit_small(img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1,
                    **kw: Any) -> MIRAMViT:
    """MIRAM on :func:`~medmae_nb.models.mae.mae_vit_small`'s encoder and decoder (ViT-Small).

    References:
        Vo et al., "MIRAM", arXiv 2503.07157 (2025).
    """
    return _build("small", img_size, patch_size, in_chans, **kw)
