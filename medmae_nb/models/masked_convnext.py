"""Masked image modelling on a plain timm ConvNeXt: dense masked convolutions, a light decoder, random or entropy masks.

A CNN cannot drop hidden patches the way a ViT drops tokens, and a zero-filled hole is not enough: every 7x7
depthwise convolution would carry the content of visible pixels into the hole and, worse, carry whatever sits in the
hole into its visible neighbours. FCMAE (ConvNeXt V2) runs the encoder on sparse tensors; its authors give a dense
equivalent, which this module uses: multiply the activations by the visibility map

* after the stem and after each downsampling norm (so no layer sees a hidden site's content),
* before and after every depthwise convolution (the only layers that mix sites),
* after every block (the MLP's biases would otherwise turn hidden sites into non-zero constants).

ConvNeXt V1's norms are per-site LayerNorms, so their statistics are over each visible site's channels already;
there is no BatchNorm and no GRN to correct. The masking is done by forward hooks that exist only inside
:func:`dense_masking`, so :attr:`MaskedConvNeXt.encoder` *is* a plain timm ConvNeXt: its weights load into
``timm.create_model(name)`` unchanged (:meth:`MaskedConvNeXt.to_timm`).

The mask lives on a grid of ``mask_patch``-pixel cells. At stages finer than a cell the map is repeated; at a
coarser stage (a 32-px site over 16-px cells) a site is visible when any cell under it is, and its features are
computed from the visible cells only (hidden cells are exactly zero when they reach it). The decoder projects
every stage at least as coarse as a cell onto the cell grid, puts a learned mask token in every hidden cell, runs
one ConvNeXt block and predicts each cell's pixels (FCMAE's decoder, with a skip from the cell-sized stage when
cells are finer than the last stage). The loss is the normalised-pixel MSE on hidden cells.

References:
    Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023 (FCMAE).
    Liu et al., "A ConvNet for the 2020s", CVPR 2022 (ConvNeXt).
    Florindo & Moura, arXiv:2605.21970, 2026 (entropy-guided MAE on ConvNeXt-Tiny; reconstructed here).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.models.convnext import ConvNeXtBlock
from torch import Tensor, nn
from torch.nn import functional as F

from ..inference import eval_mode
from ..losses import masked_mse
from ..masking import MaskInfo, MaskingError, entropy_masking, patch_grid, patchify, random_masking, unpatchify
from .backbones import copy_into_timm, create_encoder
from .base import Batch, MethodOutput, Reconstruction, SSLMethod, as_batch
from .registry import register_method

__all__ = ["MaskedConvNeXt", "dense_masking", "masked_convnext_atto", "masked_convnext_femto",
           "masked_convnext_tiny", "visibility_at"]

MASKINGS = ("random", "entropy")


def visibility_at(visible: Tensor, size: tuple[int, int]) -> Tensor:
    """The cell-grid visibility map ``(N, 1, gh, gw)`` (1 = visible) at a feature map's resolution ``size``.

    Finer maps repeat each cell; coarser maps mark a site visible when any cell under it is (max-pooling).
    """
    gh, gw = visible.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (gh, gw):
        return visible
    if h >= gh:
        if h % gh or w % gw:
            raise MaskingError(f"feature map {h}x{w} is not a whole number of {gh}x{gw} mask cells")
        return visible.repeat_interleave(h // gh, dim=-2).repeat_interleave(w // gw, dim=-1)
    if gh % h or gw % w:
        raise MaskingError(f"mask grid {gh}x{gw} does not pool evenly onto a {h}x{w} feature map")
    return F.max_pool2d(visible, kernel_size=(gh // h, gw // w))


@contextmanager
def dense_masking(encoder: nn.Module, visible: Tensor) -> Iterator[None]:
    """Runs a timm ConvNeXt ``encoder`` as if hidden cells were absent, for the duration of the ``with`` block.

    Registers forward hooks (removed on exit, also after an error) that zero hidden sites at the points listed in
    the module docstring. ``visible`` is ``(N, 1, gh, gw)`` with 1 for visible cells; the encoder's input must be
    ``gh`` and ``gw`` cells high and wide.

    Example:
        >>> enc = create_encoder("convnext_atto", in_chans=1)
        >>> vis = torch.ones(2, 1, 4, 4); vis[:, :, :2] = 0
        >>> with dense_masking(enc, vis):
        ...     f = enc.stages[0](enc.stem(torch.rand(2, 1, 64, 64)))
        >>> bool(f[:, :, :8].abs().max() == 0), bool(f[:, :, 8:].abs().min() > 0)
        (True, True)
    """
    visible = visible.float()

    def mask_output(_module: nn.Module, _inputs: Any, out: Tensor) -> Tensor:
        return out * visibility_at(visible, out.shape[-2:]).to(out.dtype)

    def mask_input(_module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = inputs[0]
        return (x * visibility_at(visible, x.shape[-2:]).to(x.dtype), *inputs[1:])

    handles = [encoder.stem.register_forward_hook(mask_output)]
    for stage in encoder.stages:
        if isinstance(stage.downsample, nn.Sequential):  # (norm, conv): mask between them and after
            handles.append(stage.downsample[0].register_forward_hook(mask_output))
            handles.append(stage.downsample.register_forward_hook(mask_output))
        for block in stage.blocks:
            handles.append(block.conv_dw.register_forward_pre_hook(mask_input))
            handles.append(block.conv_dw.register_forward_hook(mask_output))
            handles.append(block.register_forward_hook(mask_output))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@register_method("masked-convnext", family="masked image modelling", stores=("all", "encoder"),
                 paper="Woo et al., ConvNeXt V2, CVPR 2023; Florindo & Moura 2026 (entropy-guided masking)",
                 description="FCMAE dense masking on a timm ConvNeXt, random or entropy-guided masks")
class MaskedConvNeXt(SSLMethod):
    """FCMAE-style masked pre-training of a timm ConvNeXt, with random or entropy-guided masks.

    Args:
        encoder: a timm ConvNeXt name (``convnext_atto``, ``convnext_femto``, ``convnext_tiny`` …).
        img_size: input side; a multiple of 32 (the encoder's total stride).
        in_chans: image channels.
        mask_patch: mask cell side: 32 (the last stage, FCMAE) or 16 / 8 (a stage's stride) for small images.
        mask_ratio: fraction of cells hidden (FCMAE: 0.6).
        masking: ``"random"`` (uniform, as MAE) or ``"entropy"`` (:func:`~medmae_nb.masking.entropy_masking`).
        tau: entropy-masking temperature (small: top-k entropy; large: uniform).
        direction: ``"high"`` hides high-entropy cells first, ``"low"`` low-entropy ones.
        entropy_bins: histogram bins for the entropy.
        decoder_dim: width of the decoder's ConvNeXt block.
        norm_pix_loss: standardise each target cell (MAE/FCMAE's normalised-pixel loss).
        drop_path_rate: stochastic depth in the encoder.
        encoder_weights: start the encoder from a weights file (or ``True``: timm's ImageNet hub weights) instead of
            a random init — one of the published method's unknowns, exposed as a parameter.

    References:
        Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023.
        Florindo & Moura, arXiv:2605.21970, 2026.

    Example:
        >>> m = masked_convnext_atto(img_size=64, masking="entropy")
        >>> out = m(torch.rand(2, 1, 64, 64)); out.loss.ndim, tuple(out.mask.shape)
        (0, (2, 16))
    """

    def __init__(self, encoder: str = "convnext_atto", img_size: int = 64, in_chans: int = 1, mask_patch: int = 16,
                 mask_ratio: float = 0.6, masking: str = "random", tau: float = 0.5, direction: str = "high",
                 entropy_bins: int = 16, decoder_dim: int = 128, norm_pix_loss: bool = True,
                 drop_path_rate: float = 0.0, encoder_weights: str | bool | None = None) -> None:
        super().__init__()
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        if direction not in ("high", "low"):
            raise ValueError(f"direction must be 'high' or 'low', got {direction!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0 (small = top-k entropy, large = uniform), got {tau!r}")
        self.encoder = create_encoder(encoder, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate,
                                      pretrained=encoder_weights if encoder_weights is not None else False)
        head_norm = getattr(getattr(self.encoder, "head", None), "norm", None)
        if isinstance(head_norm, nn.Module):  # the classifier head's norm takes no part in the pretext task: frozen,
            head_norm.requires_grad_(False)  # so DDP (find_unused_parameters=False) does not wait for its gradient
        strides = [int(f["reduction"]) for f in self.encoder.feature_info]
        total = max(strides)
        if img_size % total:
            fit = max(total, img_size // total * total)
            raise MaskingError(f"img_size must be a multiple of {encoder}'s total stride {total}, got {img_size}; "
                               f"resize the images (e.g. load_busi(image_size={fit}))")
        if mask_patch not in strides:
            raise MaskingError(f"mask_patch must be one of the stage strides {strides} so cells align with every "
                               f"stage, got {mask_patch}")
        self.grid = patch_grid(img_size, mask_patch)
        self.img_size, self.in_chans, self.mask_patch = img_size, in_chans, mask_patch
        self.mask_ratio, self.masking, self.tau, self.direction = mask_ratio, masking, tau, direction
        self.entropy_bins, self.norm_pix_loss = entropy_bins, norm_pix_loss
        # decoder: every stage at least as coarse as a cell, projected onto the cell grid and summed
        self.decoder_stages = [i for i, s in enumerate(strides) if s >= mask_patch]
        chans = [int(f["num_chs"]) for f in self.encoder.feature_info]
        self.proj = nn.ModuleList(nn.Conv2d(chans[i], decoder_dim, 1) for i in self.decoder_stages)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = ConvNeXtBlock(decoder_dim)
        self.pred = nn.Conv2d(decoder_dim, mask_patch * mask_patch * in_chans, 1)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.config = {
            "encoder": encoder, "img_size": img_size, "in_chans": in_chans, "mask_patch": mask_patch,
            "mask_ratio": mask_ratio, "masking": masking, "tau": tau, "direction": direction,
            "entropy_bins": entropy_bins, "decoder_dim": decoder_dim, "norm_pix_loss": norm_pix_loss,
            "drop_path_rate": drop_path_rate,
            "encoder_weights": getattr(self.encoder, "init_source", "random"),
        }

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    # ----------------------------------------------------------------------------------------------- masks
    def make_mask(self, imgs: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None,
                  masking: str | None = None) -> MaskInfo:
        """This model's mask for ``imgs`` (random or entropy-guided, per ``config``, or ``masking`` to override)."""
        masking = masking or self.masking
        if masking == "entropy":
            return entropy_masking(imgs, self.mask_patch, self.mask_ratio, self.tau, self.direction,
                                   self.entropy_bins, generator=generator, noise=noise)
        if noise is not None:
            return random_masking(len(imgs), self.num_patches, self.mask_ratio, noise=noise.to(imgs.device))
        return random_masking(len(imgs), self.num_patches, self.mask_ratio, generator=generator,
                              device=imgs.device)

    def visible_map(self, mask: Tensor) -> Tensor:
        """``(N, L)`` mask (1 = hidden) -> ``(N, 1, gh, gw)`` visibility map (1 = visible)."""
        return (1 - mask).reshape(-1, 1, *self.grid)

    # ------------------------------------------------------------------------------------------- forward
    def stage_features(self, imgs: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """The encoder's output after each stage; with ``mask`` ``(N, L)`` (1 = hidden) under dense masking."""
        if tuple(imgs.shape[-2:]) != (self.img_size, self.img_size):
            raise MaskingError(f"this model was built for {self.img_size}x{self.img_size} images, got "
                               f"{tuple(imgs.shape[-2:])}; resize them or build it with img_size={imgs.shape[-1]}")
        feats = []

        def run() -> None:
            x = self.encoder.stem(imgs)
            for stage in self.encoder.stages:
                x = stage(x)
                feats.append(x)

        if mask is None:
            run()
        else:
            with dense_masking(self.encoder, self.visible_map(mask)):
                run()
        return feats

    def decode(self, feats: list[Tensor], mask: Tensor) -> Tensor:
        """Stage features -> predicted cells ``(N, L, p*p*C)``; hidden cells start from the mask token."""
        x = 0
        for proj, i in zip(self.proj, self.decoder_stages):
            y = proj(feats[i])
            x = x + (y if y.shape[-2:] == self.grid else F.interpolate(y, size=self.grid, mode="nearest"))
        hidden = mask.reshape(-1, 1, *self.grid).to(x.dtype)
        x = x * (1 - hidden) + self.mask_token.to(x.dtype) * hidden
        x = self.pred(self.decoder(x))
        return x.flatten(2).transpose(1, 2)

    def forward(self, x: Batch | Tensor, mask_info: MaskInfo | None = None,
                generator: torch.Generator | None = None) -> MethodOutput:
        """Mask, encode densely-masked, decode, score the hidden cells.

        Args:
            x: a :class:`~medmae_nb.models.base.Batch` (its per-sample seeds draw the masks) or images.
            mask_info: a ready mask.
            generator: draw the mask from this generator instead of the batch's seeds.

        Returns:
            :class:`~medmae_nb.models.base.MethodOutput` with ``pred`` (every cell, ``(N, L, p*p*C)``), ``mask`` and
            ``mask_info``.
        """
        batch = as_batch(x)
        imgs = batch.images
        if mask_info is None:
            noise = None if generator is not None else batch.rand(self.num_patches)
            mask_info = self.make_mask(imgs, noise=noise, generator=generator)
        mask = mask_info.mask.to(imgs.device)
        pred = self.decode(self.stage_features(imgs, mask), mask)
        loss = masked_mse(pred, patchify(imgs, self.mask_patch), mask, self.norm_pix_loss)
        return MethodOutput(loss, pred=pred, mask=mask, mask_info=mask_info)

    @torch.no_grad()
    def reconstruct(self, imgs: Tensor, mask_info: MaskInfo | None = None,
                    generator: torch.Generator | None = None) -> Reconstruction:
        """Images for a figure (:class:`~medmae_nb.models.base.Reconstruction`): ``masked`` input, prediction
        ``pred`` (standardised cells when ``norm_pix_loss``: shown as they are, no ground-truth statistics), the
        visible input with the predicted cells pasted in, and the pixel ``mask`` (1 = hidden)."""
        with eval_mode(self):
            out = self.forward(imgs, mask_info=mask_info, generator=generator)
        p, c = self.mask_patch, self.in_chans
        pix = unpatchify(out.mask[..., None].expand(-1, -1, p * p * c).float(), p, c, self.img_size)
        pred = unpatchify(out.pred, p, c, self.img_size)
        return Reconstruction(masked=imgs * (1 - pix), pasted=imgs * (1 - pix) + pred * pix, pred=pred,
                              mask=pix[:, :1])

    # ---------------------------------------------------------------------------------------- to timm
    def to_timm(self, num_classes: int = 0, **overrides: Any) -> nn.Module:
        """A fresh timm ConvNeXt with this encoder's weights (and a new head of ``num_classes``), for fine-tuning."""
        return copy_into_timm(self.encoder, self.config["encoder"], self.in_chans, num_classes,
                              f"masked-convnext({self.masking})", **overrides)


def masked_convnext_atto(img_size: int = 64, in_chans: int = 1, mask_patch: int = 16, **kw: Any) -> MaskedConvNeXt:
    """Masked ConvNeXt-Atto (3.4 M parameters; 16-px cells on 64-px images: a 4x4 grid) for CPU chapters.

    References:
        Woo et al., "ConvNeXt V2", CVPR 2023 (FCMAE; convnext_atto is one of its sizes).
    """
    return MaskedConvNeXt("convnext_atto", img_size=img_size, in_chans=in_chans, mask_patch=mask_patch, **kw)


def masked_convnext_femto(img_size: int = 64, in_chans: int = 1, mask_patch: int = 16, **kw: Any) -> MaskedConvNeXt:
    """Masked ConvNeXt-Femto (4.8 M parameters).

    References:
        Woo et al., "ConvNeXt V2", CVPR 2023.
    """
    return MaskedConvNeXt("convnext_femto", img_size=img_size, in_chans=in_chans, mask_patch=mask_patch, **kw)


def masked_convnext_tiny(img_size: int = 224, in_chans: int = 1, mask_patch: int = 32, **kw: Any) -> MaskedConvNeXt:
    """Masked ConvNeXt-Tiny (28 M parameters; 32-px cells on 224-px images: FCMAE's 7x7 grid) — the paper's size.

    References:
        Florindo & Moura, arXiv:2605.21970, 2026; Woo et al., "ConvNeXt V2", CVPR 2023.
    """
    return MaskedConvNeXt("convnext_tiny", img_size=img_size, in_chans=in_chans, mask_patch=mask_patch, **kw)
