"""Masked autoencoder with a ViT encoder (MAE), built from timm blocks, for 1- or 3-channel images.

The encoder sees only the visible tokens — that is where MAE's speed comes from; a light decoder gets the encoded
visible tokens plus one learned mask token per hidden position, un-shuffled back into image order, and predicts the
pixels of every patch. The loss is the mean squared error over hidden patches only, optionally against per-patch
standardised pixels (``norm_pix_loss``). Position embeddings are fixed 2-D sin-cos tables.

References:
    He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from timm.layers import LayerNorm, PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn
from torch.nn import functional as F

from ..masking import MaskInfo, MaskingError, gather_tokens, patch_grid, patchify, random_masking, unpatchify

__all__ = [
    "MAEOutput",
    "MAEReconstruction",
    "MaskedAutoencoderViT",
    "mae_loss",
    "mae_vit_micro",
    "mae_vit_small",
    "mae_vit_tiny",
    "patch_stats",
    "sincos_pos_embed",
]

_norm_layer = partial(LayerNorm, eps=1e-6)  # MAE's and timm ViT's choice; needed for exact export to timm


# ------------------------------------------------------------------------------------------- building blocks
def sincos_pos_embed(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos position embeddings, MAE's layout.

    The first ``dim/2`` channels encode the column (x) index and the last ``dim/2`` the row (y) index; each half is
    ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000 ** (-k / (dim/4))``, ``k = 0..dim/4-1``. Computed in
    float64, returned as float32.

    Args:
        dim: embedding width, a multiple of 4.
        grid_h: patches along the height (rows).
        grid_w: patches along the width (columns).
        cls_token: prepend an all-zero row for the CLS token.

    Returns:
        ``(grid_h * grid_w [+ 1], dim)``, patches in row-major order.

    References:
        Vaswani et al. 2017 (1-D sin-cos); He et al., CVPR 2022 (2-D variant used by MAE).

    Example:
        >>> sincos_pos_embed(8, 2, 3).shape
        torch.Size([7, 8])
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")

    def encode(pos: np.ndarray) -> np.ndarray:
        angles = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    emb = np.concatenate([encode(cols), encode(rows)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb.astype(np.float32))


def patch_stats(target: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-patch mean and ``sqrt(var + eps)`` over the last dimension (MAE's unbiased variance).

    Args:
        target: patches ``(..., p*p*C)``.
        eps: added to the variance; keeps flat patches finite.

    Returns:
        ``(mean, std)``, each ``(..., 1)``.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return mean, (var + eps).sqrt()


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix_loss: bool = False, eps: float = 1e-6) -> Tensor:
    """MAE's loss: per-patch mean squared error, averaged over hidden patches only.

    Args:
        pred: predicted patches ``(N, L, P)``.
        target: true patches ``(N, L, P)`` (see :func:`~medmae_nb.masking.patchify`).
        mask: ``(N, L)``, 1 = hidden; visible patches do not contribute.
        norm_pix_loss: standardise each target patch by its own mean and std first (then ``pred`` is in those units).
        eps: variance floor for ``norm_pix_loss``.

    Returns:
        Scalar loss (0 if nothing is hidden).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
    """
    if norm_pix_loss:
        mean, std = patch_stats(target, eps)
        target = (target - mean) / std
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MAEOutput(NamedTuple):
    """What :meth:`MaskedAutoencoderViT.forward` returns."""

    loss: Tensor  #: scalar masked MSE
    pred: Tensor  #: ``(N, L, p*p*C)`` predicted patches, in target units (standardised if ``norm_pix_loss``)
    mask: Tensor  #: ``(N, L)`` token mask, 1 = hidden


class MAEReconstruction(NamedTuple):
    """Images for a reconstruction figure, all ``(N, C, H, W)`` except ``mask``."""

    masked: Tensor  #: the input with hidden patches set to 0
    pasted: Tensor  #: visible patches from the input, hidden ones from the prediction
    pred: Tensor  #: the full prediction, every patch
    mask: Tensor  #: ``(N, 1, H, W)`` pixel mask, 1 = hidden


# --------------------------------------------------------------------------------------------------- the model
class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder with a ViT encoder and a light ViT decoder, both made of timm ``Block`` s.

    Args:
        img_size: input side ``H`` (square) or ``(H, W)``; must be a multiple of ``patch_size``.
        patch_size: patch side ``p`` (4, 8 and 16 are the book's choices).
        in_chans: image channels (1 for grey-scale scans, 3 for RGB).
        embed_dim: encoder width (multiple of 4 for the sin-cos table).
        depth: encoder blocks.
        num_heads: encoder attention heads.
        decoder_embed_dim: decoder width (multiple of 4).
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder attention heads.
        mlp_ratio: MLP hidden width / block width, encoder and decoder.
        norm_pix_loss: regress per-patch standardised pixels (MAE's released models do).
        mask_ratio: default fraction of hidden tokens for :meth:`forward`.
        drop_path_rate: stochastic depth in the encoder (MAE pre-trains with 0).

    Attributes:
        config: every constructor argument, for cache keys and checkpoints.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).

    Example:
        >>> model = MaskedAutoencoderViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        ...                              decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
        >>> out = model(torch.rand(2, 1, 32, 32), mask_ratio=0.75)
        >>> out.pred.shape, out.mask.sum(1).tolist()
        (torch.Size([2, 16, 64]), [12.0, 12.0])
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 64,
        patch_size: int = 8,
        in_chans: int = 1,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        decoder_embed_dim: int = 128,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
        mask_ratio: float = 0.75,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "img_size": img_size if isinstance(img_size, int) else tuple(img_size),
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "decoder_embed_dim": decoder_embed_dim,
            "decoder_depth": decoder_depth,
            "decoder_num_heads": decoder_num_heads,
            "mlp_ratio": mlp_ratio,
            "norm_pix_loss": norm_pix_loss,
            "mask_ratio": mask_ratio,
            "drop_path_rate": drop_path_rate,
        }
        grid_h, grid_w = patch_grid(img_size, patch_size)
        if embed_dim % 4 or decoder_embed_dim % 4:
            raise ValueError(
                f"embed_dim ({embed_dim}) and decoder_embed_dim ({decoder_embed_dim}) must be multiples of 4 "
                "(the sin-cos position table splits each into 4 parts)"
            )
        if embed_dim % num_heads or decoder_embed_dim % decoder_num_heads:
            raise ValueError("embed_dim / decoder_embed_dim must be divisible by num_heads / decoder_num_heads")
        self.img_size = (grid_h * patch_size, grid_w * patch_size)
        self.grid_size = (grid_h, grid_w)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_patches = grid_h * grid_w
        self.norm_pix_loss = norm_pix_loss
        self.mask_ratio = mask_ratio

        # encoder: names match timm's VisionTransformer so the weights export 1:1 (see to_timm)
        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed tables as buffers: saved in checkpoints, moved by .to(), never seen by the optimizer
        self.register_buffer("pos_embed", sincos_pos_embed(embed_dim, grid_h, grid_w)[None])
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(
            *[
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=_norm_layer)
                for i in range(depth)
            ]
        )
        self.norm = _norm_layer(embed_dim)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(decoder_embed_dim, grid_h, grid_w)[None])
        self.decoder_blocks = nn.Sequential(
            *[
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=_norm_layer)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = _norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        self._init_weights()

    def _init_weights(self) -> None:
        # the patch-embed conv is a Linear on flattened patches, so initialise it like one
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------------ parts
    def _check_images(self, imgs: Tensor) -> None:
        expected = (self.in_chans, *self.img_size)
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
            raise MaskingError(
                f"this model takes images (N, {expected[0]}, {expected[1]}, {expected[2]}), got {tuple(imgs.shape)}; "
                "resize the images or build the model with matching img_size / in_chans"
            )

    def patchify(self, imgs: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, L, p*p*C)`` with this model's patch size."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """``(N, L, p*p*C)`` -> ``(N, C, H, W)`` with this model's patch size and image size."""
        return unpatchify(tokens, self.patch_size, self.in_chans, self.img_size)

    def random_mask(
        self, n: int, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> MaskInfo:
        """Uniform random :class:`~medmae_nb.masking.MaskInfo` for ``n`` images on the model's device."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        return random_masking(n, self.num_patches, ratio, generator=generator, device=self.cls_token.device)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """The patch embedding applied to already patchified pixels ``(N, K, p*p*C)`` -> ``(N, K, D)``.

        ``PatchEmbed``'s convolution (kernel = stride = p) is a linear map of each patch's pixels; written as one,
        it runs on the visible patches only, which saves most of the embedding's cost (forward and backward).
        """
        weight = self.patch_embed.proj.weight  # (D, C, p, p); patchify orders pixels (row, col, channel)
        return F.linear(patches, weight.permute(0, 2, 3, 1).flatten(1), self.patch_embed.proj.bias)

    def forward_encoder(self, imgs: Tensor, mask_info: MaskInfo | None = None) -> Tensor:
        """Encode the visible tokens (all tokens if ``mask_info`` is None).

        Each visible patch token gets its own position embedding (MAE adds them to all tokens, then picks; picking
        first is the same and cheaper), and the CLS token gets slot 0 — the same sums timm's ``VisionTransformer``
        forms, so the weights transfer exactly. The encoder never sees a hidden patch's pixels.

        Args:
            imgs: ``(N, C, H, W)``.
            mask_info: which tokens are visible; None encodes all of them.

        Returns:
            latent ``(N, 1 + len_keep, D)``, CLS first, visible tokens in ``mask_info.keep_idx`` order.
        """
        self._check_images(imgs)
        pos = self.pos_embed[:, 1:]
        if mask_info is None:
            x = self.patch_embed(imgs) + pos
        else:
            # pick the visible patches' pixels first, so the embedding runs on them alone
            keep = mask_info.keep_idx
            x = self.embed_patches(gather_tokens(self.patchify(imgs), keep))
            x = x + gather_tokens(pos.expand(len(keep), -1, -1), keep)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        return self.norm(self.blocks(x))

    def forward_features_all(self, imgs: Tensor) -> Tensor:
        """Encode every token (no masking): ``(N, 1 + L, D)``, equal to the exported timm model's
        ``forward_features``."""
        return self.forward_encoder(imgs, None)

    def forward_decoder(self, latent: Tensor, restore: Tensor | None = None) -> Tensor:
        """Predict every patch from the encoded visible tokens.

        Args:
            latent: ``(N, 1 + len_keep, D)`` from :meth:`forward_encoder`.
            restore: ``MaskInfo.restore`` ``(N, L)``; None when ``latent`` holds all tokens in image order.

        Returns:
            ``(N, L, p*p*C)`` predicted patches in image order (CLS dropped).
        """
        x = self.decoder_embed(latent)
        if restore is not None:
            n, length = restore.shape
            mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
            tokens = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), restore)  # back in image order
            x = torch.cat([x[:, :1], tokens], dim=1)
        x = x + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, 1:])

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Masked MSE of ``pred`` against the patches of ``imgs`` (see :func:`mae_loss`)."""
        return mae_loss(pred, self.patchify(imgs), mask, self.norm_pix_loss)

    def forward(
        self,
        imgs: Tensor,
        mask_ratio: float | None = None,
        mask_info: MaskInfo | None = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """Mask, encode, decode and score one batch.

        Args:
            imgs: ``(N, C, H, W)``.
            mask_ratio: fraction hidden (default: the model's ``mask_ratio``); ignored when ``mask_info`` is given.
            mask_info: a ready mask (e.g. from :func:`~medmae_nb.masking.informed_masking`).
            generator: makes the random mask reproducible.

        Returns:
            :class:`MAEOutput` ``(loss, pred, mask)``.
        """
        if mask_info is None:
            mask_info = self.random_mask(imgs.shape[0], mask_ratio, generator)
        elif mask_info.mask.shape != (imgs.shape[0], self.num_patches):
            raise MaskingError(
                f"mask_info is for {tuple(mask_info.mask.shape)} tokens; this batch needs ({imgs.shape[0]}, "
                f"{self.num_patches}) — build it with num_tokens = model.num_patches"
            )
        latent = self.forward_encoder(imgs, mask_info)
        pred = self.forward_decoder(latent, mask_info.restore)
        return MAEOutput(self.forward_loss(imgs, pred, mask_info.mask), pred, mask_info.mask)

    @torch.no_grad()
    def reconstruct(
        self,
        imgs: Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        denormalize: str = "none",
        mask_info: MaskInfo | None = None,
    ) -> MAEReconstruction:
        """Images for a reconstruction figure: masked input, prediction pasted into the visible patches, full
        prediction.

        A model trained with ``norm_pix_loss`` predicts standardised patches. ``denormalize="none"`` shows them as
        they are (per-patch zero mean, unit variance). ``denormalize="target_stats"`` rescales each predicted patch
        with the mean and std of the *ground-truth* patch — information the model never saw for hidden patches, so
        these pictures flatter the model: brightness and contrast of every patch come from the answer. Say so in
        any figure that uses it. Without ``norm_pix_loss`` both options return the raw prediction.

        Args:
            imgs: ``(N, C, H, W)``.
            mask_ratio: fraction hidden (default: the model's).
            generator: makes the mask reproducible.
            denormalize: ``"none"`` or ``"target_stats"``.
            mask_info: a ready mask instead of a random one.

        Returns:
            :class:`MAEReconstruction`.
        """
        if denormalize not in ("none", "target_stats"):
            raise ValueError(f"denormalize must be 'none' or 'target_stats', got {denormalize!r}")
        out = self.forward(imgs, mask_ratio, mask_info, generator)
        pred = out.pred
        if self.norm_pix_loss and denormalize == "target_stats":
            mean, std = patch_stats(self.patchify(imgs))
            pred = pred * std + mean
        pixel_mask = self.unpatchify(out.mask[..., None].expand(-1, -1, pred.shape[-1]).to(pred.dtype))
        pred_img = self.unpatchify(pred)
        return MAEReconstruction(
            masked=imgs * (1 - pixel_mask),
            pasted=imgs * (1 - pixel_mask) + pred_img * pixel_mask,
            pred=pred_img,
            mask=pixel_mask[:, :1],
        )

    # ------------------------------------------------------------------------------------------- export to timm
    def timm_kwargs(self, num_classes: int = 0, global_pool: str = "token", **overrides: Any) -> dict[str, Any]:
        """Arguments for a timm ``VisionTransformer`` whose encoder matches this one."""
        kwargs: dict[str, Any] = {
            "img_size": self.img_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "embed_dim": self.config["embed_dim"],
            "depth": self.config["depth"],
            "num_heads": self.config["num_heads"],
            "mlp_ratio": self.config["mlp_ratio"],
            "qkv_bias": True,
            "class_token": True,
            "no_embed_class": False,
            "global_pool": global_pool,
            "num_classes": num_classes,
            "norm_layer": _norm_layer,
        }
        kwargs.update(overrides)
        return kwargs

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's weights under timm ``VisionTransformer`` names (``pos_embed`` with its CLS slot)."""
        prefixes = ("patch_embed.", "blocks.", "norm.")
        state = {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}
        state["cls_token"] = self.cls_token.detach()
        state["pos_embed"] = self.pos_embed
        return state

    def to_timm(self, num_classes: int = 0, global_pool: str = "token", **overrides: Any) -> VisionTransformer:
        """A timm ``VisionTransformer`` carrying this encoder's weights, ready for fine-tuning or probing.

        With ``global_pool="token"`` (CLS pooling) ``vit.forward_features(x)`` equals :meth:`forward_features_all`.
        With ``"avg"`` timm swaps the final ``norm`` for a fresh ``fc_norm`` after pooling, as MAE fine-tuning does;
        the encoder's ``norm`` weights are then dropped. The exported ``pos_embed`` is a learnable parameter
        initialised with the sin-cos table. The head (if ``num_classes > 0``) keeps timm's initialisation.

        Args:
            num_classes: classifier outputs; 0 gives a feature extractor (``head = Identity``).
            global_pool: ``"token"`` (CLS) or ``"avg"`` (mean of patch tokens), or another timm pooling.
            **overrides: further ``VisionTransformer`` arguments (e.g. ``drop_path_rate=0.1``).

        Returns:
            The timm model, on this model's device, in train mode.
        """
        vit = VisionTransformer(**self.timm_kwargs(num_classes, global_pool, **overrides))
        state = self.encoder_state_dict()
        if isinstance(vit.norm, nn.Identity):
            state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        missing, unexpected = vit.load_state_dict(state, strict=False)
        leftover = [k for k in missing if not k.startswith(("head.", "fc_norm.", "attn_pool."))]
        if leftover or unexpected:
            raise RuntimeError(f"export to timm failed: missing {leftover}, unexpected {unexpected}")
        return vit.to(self.cls_token.device)


# ------------------------------------------------------------------------------------------------- factories
def _build(
    defaults: dict[str, Any], img_size: int | tuple[int, int], patch_size: int, in_chans: int, **kw: Any
) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, **{**defaults, **kw})


def mae_vit_micro(
    img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1, **kw: Any
) -> MaskedAutoencoderViT:
    """MAE with a micro ViT (128-d, 6 blocks, 4 heads; decoder 96-d, 2 blocks, 3 heads) for CPU chapters.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
    """
    defaults = dict(embed_dim=128, depth=6, num_heads=4, decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3)
    return _build(defaults, img_size, patch_size, in_chans, **kw)


def mae_vit_tiny(
    img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1, **kw: Any
) -> MaskedAutoencoderViT:
    """MAE with ViT-Tiny (192-d, 12 blocks, 3 heads; light decoder 128-d, 2 blocks, 4 heads).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).

    Example:
        >>> mae_vit_tiny(img_size=32, patch_size=8).config["embed_dim"]
        192
    """
    defaults = dict(embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    return _build(defaults, img_size, patch_size, in_chans, **kw)


def mae_vit_small(
    img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1, **kw: Any
) -> MaskedAutoencoderViT:
    """MAE with ViT-Small (384-d, 12 blocks, 6 heads; decoder 256-d, 4 blocks, 8 heads).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
    """
    defaults = dict(embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8)
    return _build(defaults, img_size, patch_size, in_chans, **kw)
