"""SparK: BERT-style masked modelling for plain timm CNNs (ResNet, ConvNeXt), sparse convolution emulated densely.

A CNN cannot drop hidden patches as a ViT drops tokens. SparK treats the visible cells as a *sparse* image: every
layer computes only at visible sites and hidden sites hold nothing, not even a zero that a BatchNorm would average
in. This module emulates that on the dense timm model, with hooks that exist only inside :func:`sparse_masking`:

* the input is multiplied by the pixel visibility map;
* every ``Conv2d``, ``MaxPool2d``, ``AvgPool2d`` and norm (``LayerNorm2d`` channels-first, ``LayerNorm`` and
  ``Linear`` channels-last, as in ConvNeXt blocks) has its output re-zeroed at hidden sites, so biases and
  per-site norms never turn a hole into a constant and no kernel carries hidden content to a visible neighbour;
* every ``BatchNorm2d`` (ResNet) is replaced, for the ``with`` block only, by :func:`sparse_batch_norm`: the
  visible vectors are gathered, normalised with *their* batch mean and variance (the running statistics are
  updated as ``BatchNorm1d`` would update them on those vectors) and scattered back, zeros elsewhere.

No global state: the visibility map is passed to the context manager, so two models (or threads) never share a
mask, and :attr:`SparK.encoder` stays a plain timm model whose weights load into ``timm.create_model(name)``
(:meth:`SparK.to_timm`).

Masks live on a grid of ``mask_stride``-pixel cells. ``mask_stride=32`` is SparK's choice (the total stride: one
cell per site of the last stage, 7x7 at 224 px). For small images (a 2x2 grid at 64 px) ``mask_stride=16`` masks on
the stride-16 grid instead; every stage still runs (so every weight is trained and transfers), and at the stride-32
stage a site is visible when any of its four cells is — hidden cells are exactly zero when they reach it, so nothing
leaks (the rule of :func:`~medmae_nb.models.masked_convnext.visibility_at`).

Decoder ("densify" + light UNet): each stage's features, coarsest first, pass a per-site LayerNorm and a 1x1
projection to the decoder width (``decoder_width`` at stride 32, halving per scale up to a floor of 16); a learned
per-scale mask token fills the hidden sites; the coarsest map goes through upsampling blocks (transposed conv x2,
then two 3x3 conv-BN) up to full resolution, the densified skip of each finer stage added on the way, and a 1x1
conv predicts the image. Prediction and image are cut into the mask's cells; the loss is the normalised-pixel MSE on
hidden cells only.

References:
    Tian et al., "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling", ICLR 2023.
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Liu et al., "A ConvNet for the 2020s",
    CVPR 2022.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXt
from timm.models.resnet import ResNet
from torch import Tensor, nn
from torch.nn import functional as F

from ..inference import eval_mode
from ..losses import masked_mse
from ..masking import MaskInfo, MaskingError, mask_to_pixels, num_visible, patch_grid, patchify, random_masking
from .backbones import copy_into_timm, create_encoder
from .base import Batch, MethodOutput, Reconstruction, SSLMethod, as_batch
from .masked_convnext import visibility_at
from .registry import register_method

__all__ = ["SparK", "encoder_stages", "spark_convnext_atto", "spark_resnet18", "sparse_batch_norm",
           "sparse_masking"]

MASK_STRIDES = (16, 32)
_MIN_WIDTH = 16


def encoder_stages(encoder: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(stem modules, four stages)`` of a timm ResNet or ConvNeXt, in the order ``forward_features`` runs them."""
    if isinstance(encoder, ResNet):
        return ([encoder.conv1, encoder.bn1, encoder.act1, encoder.maxpool],
                [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4])
    if isinstance(encoder, ConvNeXt):
        return [encoder.stem], list(encoder.stages)
    raise MaskingError(f"SparK here supports timm ResNet and ConvNeXt encoders, not {type(encoder).__name__}; "
                       "pick e.g. 'resnet18', 'resnet50' or 'convnext_atto' (ViTs: use the MAE chapter's model)")


def sparse_batch_norm(bn: nn.BatchNorm2d, x: Tensor, visible: Tensor) -> Tensor:
    """``bn`` applied to the visible sites of ``x`` only, as ``BatchNorm1d`` on the gathered visible vectors.

    Args:
        bn: a ``BatchNorm2d``; in training mode its running statistics (and step counter) are updated from the
            visible vectors alone, with its own momentum rule.
        x: ``(N, C, H, W)``.
        visible: ``(N, 1, H, W)``, nonzero where a site is visible.

    Returns:
        ``(N, C, H, W)``: normalised visible sites, exact zeros at hidden ones.

    Example:
        >>> bn = nn.BatchNorm2d(2); vis = torch.zeros(1, 1, 2, 2); vis[..., 0] = 1
        >>> y = sparse_batch_norm(bn, torch.rand(1, 2, 2, 2), vis)
        >>> y[..., 1].abs().max().item(), y[..., 0].mean().abs().item() < 1e-6
        (0.0, True)
    """
    keep = visible[:, 0] != 0
    rows = x.permute(0, 2, 3, 1)[keep]  # (K, C): the visible vectors
    factor = 0.0 if bn.momentum is None else bn.momentum  # torch's _BatchNorm.forward rule, verbatim in effect
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    y = F.batch_norm(rows, bn.running_mean if track else None, bn.running_var if track else None, bn.weight,
                     bn.bias, batch_stats, factor, bn.eps)
    out = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    out[keep] = y.to(out.dtype)
    return out.permute(0, 3, 1, 2).contiguous()


@contextmanager
def sparse_masking(encoder: nn.Module, visible: Tensor) -> Iterator[None]:
    """Runs ``encoder`` as a sparse CNN over the visible cells of ``visible`` for the duration of the ``with`` block.

    Registers forward hooks on every conv, pool, norm and channels-last linear layer, and swaps each ``BatchNorm2d``'s
    forward for :func:`sparse_batch_norm` (see the module docstring). All of it is undone on exit, also after an
    error. ``visible`` is ``(N, 1, gh, gw)``, 1 for visible cells; every feature map must tile or pool evenly onto it.

    Raises:
        MaskingError: on a layer with no sparse version here (GroupNorm, fused BatchNorm-activation, ...).

    Example:
        >>> enc = create_encoder("resnet18", in_chans=1, num_classes=0)
        >>> vis = torch.ones(2, 1, 4, 4); vis[:, :, :2] = 0
        >>> with sparse_masking(enc, vis):
        ...     f = enc.layer1(enc.maxpool(enc.act1(enc.bn1(enc.conv1(torch.rand(2, 1, 64, 64))))))
        >>> bool(f[:, :, :8].abs().max() == 0), bool(f[:, :, 8:].abs().sum() > 0)
        (True, True)
    """
    visible = visible.float()
    cache: dict[tuple[int, int], Tensor] = {}

    def vis_at(h: int, w: int) -> Tensor:
        if (h, w) not in cache:
            cache[h, w] = visibility_at(visible, (h, w))
        return cache[h, w]

    def channels_first(_module: nn.Module, _inputs: Any, out: Tensor) -> Tensor:
        return out * vis_at(*out.shape[-2:]).to(out.dtype)

    def channels_last(_module: nn.Module, _inputs: Any, out: Tensor) -> Tensor | None:
        if out.ndim != 4:  # a classifier on pooled features: no sites
            return None
        return out * vis_at(*out.shape[1:3]).permute(0, 2, 3, 1).to(out.dtype)

    def sparse_bn(bn: nn.BatchNorm2d):
        return lambda x: sparse_batch_norm(bn, x, vis_at(*x.shape[-2:]))

    handles, swapped = [], []
    try:
        for name, module in encoder.named_modules():
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, LayerNorm2d)):  # LayerNorm2d first: it
                handles.append(module.register_forward_hook(channels_first))  # subclasses nn.LayerNorm
            elif isinstance(module, (nn.LayerNorm, nn.Linear)):
                handles.append(module.register_forward_hook(channels_last))
            elif type(module) is nn.BatchNorm2d:
                module.forward = sparse_bn(module)
                swapped.append(module)
            elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
                raise MaskingError(f"{name or 'the encoder'} is a {type(module).__name__}, which has no sparse "
                                   "version here; use an encoder with plain BatchNorm2d or LayerNorm")
        yield
    finally:
        for h in handles:
            h.remove()
        for module in swapped:
            del module.forward


def _up_block(cin: int, cout: int) -> nn.Sequential:
    """x2 upsampling (transposed conv), then two 3x3 conv-BN (ReLU6 between): one step of the UNet decoder."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
    )


@register_method("spark", family="masked image modelling", stores=("all", "encoder"),
                 paper="Tian et al., ICLR 2023", description="sparse, hierarchical masked modelling for CNNs")
class SparK(SSLMethod):
    """SparK masked pre-training of a timm ResNet or ConvNeXt: sparse encoder emulation, densify, UNet decoder.

    Args:
        encoder: a timm ResNet or ConvNeXt name (``resnet18``, ``resnet50``, ``convnext_atto`` ...).
        img_size: input side; a multiple of the encoder's total stride (32).
        in_chans: image channels.
        mask_ratio: fraction of cells hidden (SparK: 0.6).
        mask_stride: mask cell side: 32 (SparK: the last stage's stride) or 16 for small images (see the module
            docstring).
        decoder_width: decoder width at the coarsest scale; it halves per x2 upsampling, down to 16.
        norm_pix_loss: standardise each target cell (SparK always does; MAE's normalised-pixel loss).
        densify: fill hidden sites of every scale with a learned mask token; False leaves them zero (the paper's
            ablation without densifying).
        drop_path_rate: stochastic depth in the encoder.
        encoder_weights: start the encoder from a weights file (or ``True``: timm's ImageNet hub weights) instead of
            a random init (the SparK authors' advice for small data sets).

    References:
        Tian et al., "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling", ICLR 2023.

    Example:
        >>> m = spark_resnet18(img_size=64)
        >>> out = m(torch.rand(2, 1, 64, 64)); out.loss.ndim, tuple(out.image.shape), tuple(out.mask.shape)
        (0, (2, 1, 64, 64), (2, 16))
    """

    def __init__(self, encoder: str = "resnet18", img_size: int = 224, in_chans: int = 1, mask_ratio: float = 0.6,
                 mask_stride: int = 32, decoder_width: int = 128, norm_pix_loss: bool = True, densify: bool = True,
                 drop_path_rate: float = 0.0, encoder_weights: str | bool | None = None) -> None:
        super().__init__()
        if mask_stride not in MASK_STRIDES:
            raise MaskingError(f"mask_stride must be one of {MASK_STRIDES} (SparK's last-stage cells, or stride-16 "
                               f"cells for small images), got {mask_stride!r}")
        self.encoder = create_encoder(encoder, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate,
                                      pretrained=encoder_weights if encoder_weights is not None else False)
        encoder_stages(self.encoder)  # refuses other families now rather than at the first step
        info = self.encoder.feature_info[-4:]
        strides, chans = [int(f["reduction"]) for f in info], [int(f["num_chs"]) for f in info]
        total = strides[-1]
        if img_size % total:
            fit = max(total, img_size // total * total)
            raise MaskingError(f"img_size must be a multiple of {encoder}'s total stride {total}, got {img_size}; "
                               f"resize the images (e.g. load_busi(image_size={fit}))")
        self.grid = patch_grid(img_size, mask_stride)
        num_visible(self.grid[0] * self.grid[1], mask_ratio)  # checks the ratio, with its own message
        self.img_size, self.in_chans, self.mask_stride = img_size, in_chans, mask_stride
        self.mask_ratio, self.norm_pix_loss, self.densify = mask_ratio, norm_pix_loss, densify
        # decoder, coarsest scale first: widths[i] at stride total / 2**i, one up-block per halving of the stride
        n_up = total.bit_length() - 1
        widths = [max(decoder_width >> i, _MIN_WIDTH) for i in range(n_up + 1)]
        stage_chans = chans[::-1]
        self.proj = nn.ModuleList(nn.Sequential(LayerNorm2d(c), nn.Conv2d(c, widths[i], 1))
                                  for i, c in enumerate(stage_chans))
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, widths[i], 1, 1))
                                            for i in range(len(stage_chans) if densify else 0))
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02, a=-0.02, b=0.02)
        self.blocks = nn.ModuleList(_up_block(widths[i], widths[i + 1]) for i in range(n_up))
        self.head = nn.Conv2d(widths[-1], in_chans, 1)
        self.config = {
            "encoder": encoder, "img_size": img_size, "in_chans": in_chans, "mask_ratio": mask_ratio,
            "mask_stride": mask_stride, "decoder_width": decoder_width, "norm_pix_loss": norm_pix_loss,
            "densify": densify, "drop_path_rate": drop_path_rate,
            "encoder_weights": getattr(self.encoder, "init_source", "random"),
        }

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def no_weight_decay(self) -> set[str]:
        """The mask tokens are exempt from weight decay (biases and norms are by their shape), as in SparK."""
        return {f"mask_tokens.{i}" for i in range(len(self.mask_tokens))}

    # ----------------------------------------------------------------------------------------------- masks
    def make_mask(self, imgs: Tensor, noise: Tensor | None = None,
                  generator: torch.Generator | None = None) -> MaskInfo:
        """A uniform random mask on the ``mask_stride`` grid (from ``noise`` ``(N, L)`` when given)."""
        if noise is not None:
            return random_masking(len(imgs), self.num_patches, self.mask_ratio, noise=noise.to(imgs.device))
        return random_masking(len(imgs), self.num_patches, self.mask_ratio, generator=generator,
                              device=imgs.device)

    def visible_map(self, mask: Tensor) -> Tensor:
        """``(N, L)`` mask (1 = hidden) -> ``(N, 1, gh, gw)`` visibility map (1 = visible)."""
        return (1 - mask.float()).reshape(-1, 1, *self.grid)

    # ------------------------------------------------------------------------------------------- forward
    def stage_features(self, imgs: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """The encoder's four stage outputs, finest first; with ``mask`` ``(N, L)`` (1 = hidden) run sparsely."""
        if tuple(imgs.shape[-2:]) != (self.img_size, self.img_size):
            raise MaskingError(f"this model was built for {self.img_size}x{self.img_size} images, got "
                               f"{tuple(imgs.shape[-2:])}; resize them or build it with img_size={imgs.shape[-1]}")
        stem, stages = encoder_stages(self.encoder)

        def run(x: Tensor) -> list[Tensor]:
            for module in stem:
                x = module(x)
            feats = []
            for stage in stages:
                x = stage(x)
                feats.append(x)
            return feats

        if mask is None:
            return run(imgs)
        visible = self.visible_map(mask)
        with sparse_masking(self.encoder, visible):
            return run(imgs * visibility_at(visible, imgs.shape[-2:]).to(imgs.dtype))

    def decode(self, feats: list[Tensor], mask: Tensor) -> Tensor:
        """Stage features (finest first) -> predicted image ``(N, C, H, W)`` at the input's resolution."""
        visible = self.visible_map(mask)
        x: Tensor | None = None
        for i, feat in enumerate(feats[::-1]):  # coarsest first
            y = self.proj[i](feat)
            vis = visibility_at(visible, y.shape[-2:]).to(y.dtype)
            y = y * vis + (self.mask_tokens[i].to(y.dtype) * (1 - vis) if self.densify else 0)
            x = self.blocks[i](y if x is None else x + y)
        for block in self.blocks[len(feats):]:
            x = block(x)
        return self.head(x)

    def forward(self, x: Batch | Tensor, mask_info: MaskInfo | None = None,
                generator: torch.Generator | None = None) -> MethodOutput:
        """Mask, encode sparsely, densify and decode, score the hidden cells.

        Args:
            x: a :class:`~medmae_nb.models.base.Batch` (its per-sample seeds draw the masks) or images.
            mask_info: a ready mask.
            generator: draw the mask from this generator instead of the batch's seeds.

        Returns:
            :class:`~medmae_nb.models.base.MethodOutput` with ``image`` (the prediction, ``(N, C, H, W)``), ``pred``
            (its cells, ``(N, L, s*s*C)``), ``mask`` and ``mask_info``.
        """
        batch = as_batch(x)
        imgs = batch.images
        if mask_info is None:
            noise = None if generator is not None else batch.rand(self.num_patches)
            mask_info = self.make_mask(imgs, noise=noise, generator=generator)
        mask = mask_info.mask.to(imgs.device)
        image = self.decode(self.stage_features(imgs, mask), mask)
        pred = patchify(image, self.mask_stride)
        loss = masked_mse(pred, patchify(imgs, self.mask_stride), mask, self.norm_pix_loss)
        return MethodOutput(loss, image=image, pred=pred, mask=mask, mask_info=mask_info)

    @torch.no_grad()
    def reconstruct(self, imgs: Tensor, mask_info: MaskInfo | None = None,
                    generator: torch.Generator | None = None) -> Reconstruction:
        """Images for a figure (:class:`~medmae_nb.models.base.Reconstruction`): ``masked`` input, prediction
        ``pred`` (standardised cells when ``norm_pix_loss``: shown as they are, no ground-truth statistics), the
        visible input with the predicted cells pasted in, and the pixel ``mask`` (1 = hidden)."""
        with eval_mode(self):
            out = self.forward(imgs, mask_info=mask_info, generator=generator)
        pix = mask_to_pixels(out.mask, self.mask_stride, self.img_size)[:, None].to(imgs.dtype)
        return Reconstruction(masked=imgs * (1 - pix), pasted=imgs * (1 - pix) + out.image * pix, pred=out.image,
                              mask=pix)

    # ---------------------------------------------------------------------------------------- to timm
    def to_timm(self, num_classes: int = 0, **overrides: Any) -> nn.Module:
        """A fresh timm model with this encoder's weights (and a new head of ``num_classes``), for fine-tuning."""
        return copy_into_timm(self.encoder, self.config["encoder"], self.in_chans, num_classes,
                              f"spark({self.config['encoder']})", **overrides)


def spark_resnet18(img_size: int = 64, in_chans: int = 1, mask_stride: int = 16, **kw: Any) -> SparK:
    """SparK on a ResNet-18 (11 M parameters; 16-px cells on 64-px images: a 4x4 grid) for CPU chapters.

    References:
        Tian et al., "Designing BERT for Convolutional Networks", ICLR 2023 (SparK; ResNets are its main encoders).
    """
    return SparK("resnet18", img_size=img_size, in_chans=in_chans, mask_stride=mask_stride, **kw)


def spark_convnext_atto(img_size: int = 64, in_chans: int = 1, mask_stride: int = 16, **kw: Any) -> SparK:
    """SparK on a ConvNeXt-Atto (3.4 M parameters; 16-px cells on 64-px images).

    References:
        Tian et al., "Designing BERT for Convolutional Networks", ICLR 2023 (SparK on ConvNeXt).
    """
    return SparK("convnext_atto", img_size=img_size, in_chans=in_chans, mask_stride=mask_stride, **kw)
