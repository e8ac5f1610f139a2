"""Masked autoencoder with a ViT encoder (MAE), built from timm blocks, for 1- or 3-channel images.

The encoder sees only the visible tokens — that is where MAE's speed comes from; a light decoder
(:class:`~medmae_nb.models.decoders.MAEDecoder`) gets the encoded visible tokens plus one learned mask token per
hidden position, un-shuffled back into image order, and predicts the pixels of the hidden patches. The loss is the
mean squared error over hidden patches only, optionally against per-patch standardised pixels (``norm_pix_loss``).
Position embeddings are fixed 2-D sin-cos tables. The model is an :class:`~medmae_nb.models.base.SSLMethod`, so
:func:`medmae_nb.train.pretrain` trains it like every other method of the book.

References:
    He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn
from torch.nn import functional as F

from ..inference import eval_mode
from ..losses import masked_mse, patch_stats
from ..masking import MaskInfo, MaskingError, gather_tokens, patch_grid, patchify, random_masking, unpatchify
from .base import Batch, MethodOutput, Reconstruction, SSLMethod, as_batch
from .decoders import MAEDecoder, sincos_pos_embed, vit_norm_layer
from .registry import register_method

__all__ = [
    "MAEOutput",
    "MAEReconstruction",
    "MaskedAutoencoderViT",
    "mae_vit_micro",
    "mae_vit_small",
    "mae_vit_tiny",
    "sincos_pos_embed",
]

_norm_layer = vit_norm_layer


class MAEOutput(MethodOutput):
    """What :meth:`MaskedAutoencoderViT.forward` returns: ``loss``, ``logs``, and

    * ``pred``: predicted patches, in target units (standardised if ``norm_pix_loss``) — ``(N, L - K, p*p*C)`` for
      the hidden tokens in ``mask_info.hidden_idx`` order, or ``(N, L, p*p*C)`` in image order with ``full=True``;
    * ``mask``: ``(N, L)`` token mask, 1 = hidden;
    * ``mask_info``: the :class:`~medmae_nb.masking.MaskInfo` used.
    """

    pred: Tensor
    mask: Tensor
    mask_info: MaskInfo


MAEReconstruction = Reconstruction  # the one reconstruction type of every masked-modelling method


# --------------------------------------------------------------------------------------------------- the model
@register_method("mae", family="masked image modelling", paper="He et al., CVPR 2022",
                 description="masked autoencoder: a ViT encodes the visible patches, a light decoder predicts the "
                             "hidden")
class MaskedAutoencoderViT(SSLMethod):
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
        mask_ratio: fraction of hidden tokens in training (:meth:`forward`); the one place it is set.
        drop_path_rate: stochastic depth in the encoder (MAE pre-trains with 0).

    Attributes:
        config: every constructor argument, for cache keys and checkpoint cards.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).

    Example:
        >>> model = MaskedAutoencoderViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        ...                              decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
        >>> out = model(torch.rand(2, 1, 32, 32))  # mask_ratio 0.75: 12 of 16 tokens hidden
        >>> out.pred.shape, out.mask.sum(1).tolist()
        (torch.Size([2, 12, 64]), [12.0, 12.0])
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
        random_masking(1, grid_h * grid_w, mask_ratio)  # a bad ratio fails here, not at the first step
        self.img_size = (grid_h * patch_size, grid_w * patch_size)
        self.grid_size = (grid_h, grid_w)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_patches = grid_h * grid_w

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

        self.decoder = MAEDecoder(self.grid_size, embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads,
                                  patch_size * patch_size * in_chans, mlp_ratio)
        self._init_weights()

    def _init_weights(self) -> None:
        # the patch-embed conv is a Linear on flattened patches, so initialise it like one
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def mask_ratio(self) -> float:
        """Fraction of tokens hidden in training — read from ``config``, the one place it is set (so the cache key
        and checkpoint card always describe what the model does)."""
        return self.config["mask_ratio"]

    @property
    def norm_pix_loss(self) -> bool:
        """Whether targets are per-patch standardised (from ``config``)."""
        return self.config["norm_pix_loss"]

    def no_weight_decay(self) -> set[str]:
        """Tokens are exempt from weight decay (biases and norms are by their shape)."""
        return {"cls_token", "decoder.mask_token"}

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
        """Uniform random :class:`~medmae_nb.masking.MaskInfo` for ``n`` images on the model's device (the model's
        ``mask_ratio`` unless another is given, e.g. for a figure)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        return random_masking(n, self.num_patches, ratio, generator=generator, device=self.cls_token.device)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """The patch embedding applied to already patchified pixels ``(N, K, p*p*C)`` -> ``(N, K, D)``.

        ``PatchEmbed``'s convolution (kernel = stride = p) is a linear map of each patch's pixels; written as one,
        it runs on the visible patches only, which saves most of the embedding's cost (forward and backward).
        """
        weight = self.patch_embed.proj.weight  # (D, C, p, p)
        p, c = self.patch_size, self.in_chans
        # patchify orders pixels (row, col, channel); reorder the (few) visible pixels rather than the weight, so
        # the weight's gradient keeps its own memory layout (DDP's gradient buckets expect that)
        patches = patches.unflatten(-1, (p, p, c)).movedim(-1, -3).flatten(-3)
        return F.linear(patches, weight.flatten(1), self.patch_embed.proj.bias)

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

    def forward_decoder(self, latent: Tensor, restore: Tensor | None = None,
                        predict_idx: Tensor | None = None) -> Tensor:
        """Predict patches from the encoded visible tokens (see :class:`~medmae_nb.models.decoders.MAEDecoder`).

        Args:
            latent: ``(N, 1 + len_keep, D)`` from :meth:`forward_encoder`.
            restore: ``MaskInfo.restore`` ``(N, L)``; None when ``latent`` holds all tokens in image order.
            predict_idx: tokens to predict (``MaskInfo.hidden_idx`` in training); None predicts every patch.

        Returns:
            ``(N, L, p*p*C)`` in image order, or ``(N, M, p*p*C)`` in ``predict_idx`` order.
        """
        return self.decoder(latent, restore, predict_idx)

    def _mask_for(self, batch: Batch, mask_info: MaskInfo | None, generator: torch.Generator | None) -> MaskInfo:
        n = len(batch)
        if mask_info is not None:
            if mask_info.mask.shape != (n, self.num_patches):
                raise MaskingError(
                    f"mask_info is for {tuple(mask_info.mask.shape)} tokens; this batch needs ({n}, "
                    f"{self.num_patches}) — build it with num_tokens = model.num_patches"
                )
            return mask_info.to(batch.device)
        if generator is not None:
            return random_masking(n, self.num_patches, self.mask_ratio, generator=generator, device=batch.device)
        return random_masking(n, self.num_patches, self.mask_ratio, noise=batch.rand(self.num_patches))

    def forward(self, x: Batch | Tensor, mask_info: MaskInfo | None = None, generator: torch.Generator | None = None,
                full: bool = False) -> MAEOutput:
        """Mask, encode, decode and score one batch.

        Args:
            x: a :class:`~medmae_nb.models.base.Batch` (what the training loop passes; its per-sample seeds draw the
                masks) or images ``(N, C, H, W)``.
            mask_info: a ready mask (e.g. from :func:`~medmae_nb.masking.informed_masking`).
            generator: draw the random mask from this generator instead of the batch's seeds.
            full: predict every patch in image order (for figures); by default only the hidden ones, which is all
                the loss needs.

        Returns:
            :class:`MAEOutput`.
        """
        batch = as_batch(x)
        imgs = batch.images
        info = self._mask_for(batch, mask_info, generator)
        latent = self.forward_encoder(imgs, info)
        target = self.patchify(imgs)
        if full:
            pred = self.forward_decoder(latent, info.restore)
            loss = masked_mse(pred, target, info.mask, self.norm_pix_loss)
        else:
            pred = self.forward_decoder(latent, info.restore, info.hidden_idx)
            loss = masked_mse(pred, gather_tokens(target, info.hidden_idx), None, self.norm_pix_loss)
        return MAEOutput(loss, pred=pred, mask=info.mask, mask_info=info)

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
            generator: makes the mask reproducible (default: torch's global generator).
            denormalize: ``"none"`` or ``"target_stats"``.
            mask_info: a ready mask instead of a random one.

        Returns:
            :class:`MAEReconstruction`.
        """
        if denormalize not in ("none", "target_stats"):
            raise ValueError(f"denormalize must be 'none' or 'target_stats', got {denormalize!r}")
        info = mask_info if mask_info is not None else self.random_mask(len(imgs), mask_ratio, generator)
        with eval_mode(self):  # no drop-path noise in a figure
            out = self.forward(imgs, info.to(imgs.device), full=True)
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
    @property
    def encoder(self) -> nn.Module:
        """The encoder as one module: a timm ``VisionTransformer`` with a copy of the encoder's weights (the patch
        embedding, blocks and norm are parts of this model, not one submodule; train the method, not this copy)."""
        return self.to_timm(num_classes=0)

    @classmethod
    def build(cls, img_size: int = 64, in_chans: int = 1, arch: str | None = None, **kw: Any) -> MaskedAutoencoderViT:
        """A new model; ``arch`` (``"micro"``, ``"tiny"``, ``"small"``) takes the sizes of :data:`MAE_SIZES`."""
        sizes = {} if arch is None else _sizes(arch)
        return cls(img_size=img_size, in_chans=in_chans, **{**sizes, **kw})

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
# encoder and decoder sizes of the factories below (MIRAM's factories build the same sizes)
MAE_SIZES: dict[str, dict[str, int]] = {
    "micro": dict(embed_dim=128, depth=6, num_heads=4, decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    "small": dict(embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8),
}


def _sizes(arch: str) -> dict[str, int]:
    if arch not in MAE_SIZES:
        raise ValueError(f"arch={arch!r}; use one of {sorted(MAE_SIZES)}")
    return MAE_SIZES[arch]


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
    return _build(MAE_SIZES["micro"], img_size, patch_size, in_chans, **kw)


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
    return _build(MAE_SIZES["tiny"], img_size, patch_size, in_chans, **kw)


def mae_vit_small(
    img_size: int | tuple[int, int] = 64, patch_size: int = 8, in_chans: int = 1, **kw: Any
) -> MaskedAutoencoderViT:
    """MAE with ViT-Small (384-d, 12 blocks, 6 heads; decoder 256-d, 4 blocks, 8 heads).

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (MAE).
    """
    return _build(MAE_SIZES["small"], img_size, patch_size, in_chans, **kw)
