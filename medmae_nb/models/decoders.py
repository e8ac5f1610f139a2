"""Light transformer decoders for masked image modelling, built from timm blocks.

:class:`MAEDecoder` is MAE's decoder as a module of its own, so that multi-scale methods (MIRAM) can put several of
them, each with its own token grid, position table and prediction head, behind one encoder.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..masking import gather_tokens

__all__ = ["MAEDecoder", "sincos_pos_embed", "vit_norm_layer"]

vit_norm_layer = partial(LayerNorm, eps=1e-6)  # MAE's and timm ViT's choice; needed for exact export to timm


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


class MAEDecoder(nn.Module):
    """MAE's decoder: embed the encoded visible tokens, fill the hidden slots with one learned mask token, put every
    token back in image order, add fixed sin-cos positions, run a few transformer blocks, predict pixels per token.

    Args:
        grid_size: token grid ``(h, w)`` the decoder works on.
        embed_dim: width of the encoder tokens it receives.
        decoder_embed_dim: decoder width (a multiple of 4 and of ``num_heads``).
        depth: transformer blocks.
        num_heads: attention heads.
        out_dim: values predicted per token (``p * p * C`` for pixels).
        mlp_ratio: MLP hidden width / block width.

    References:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.

    Example:
        >>> dec = MAEDecoder((4, 4), embed_dim=32, decoder_embed_dim=16, depth=1, num_heads=2, out_dim=64)
        >>> dec(torch.zeros(2, 1 + 16, 32)).shape  # CLS + all 16 tokens in image order
        torch.Size([2, 16, 64])
    """

    def __init__(self, grid_size: tuple[int, int], embed_dim: int, decoder_embed_dim: int, depth: int, num_heads: int,
                 out_dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if decoder_embed_dim % 4 or decoder_embed_dim % num_heads:
            raise ValueError(f"decoder_embed_dim ({decoder_embed_dim}) must be a multiple of 4 (the sin-cos table) and "
                             f"of decoder_num_heads ({num_heads})")
        self.grid_size = tuple(grid_size)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        # a fixed table as a buffer: saved in checkpoints, moved by .to(), never seen by the optimizer
        self.register_buffer("pos_embed", sincos_pos_embed(decoder_embed_dim, *self.grid_size)[None])
        self.blocks = nn.Sequential(*[Block(decoder_embed_dim, num_heads, mlp_ratio, qkv_bias=True,
                                            norm_layer=vit_norm_layer) for _ in range(depth)])
        self.norm = vit_norm_layer(decoder_embed_dim)
        self.pred = nn.Linear(decoder_embed_dim, out_dim)

    def fill(self, x: Tensor, restore: Tensor | None) -> Tensor:
        """``(N, 1 + K, D)`` embedded CLS + visible tokens -> ``(N, 1 + L, D)`` in image order, mask tokens in the
        hidden slots (``restore`` from :class:`~medmae_nb.masking.MaskInfo`; None when all tokens are present)."""
        if restore is None:
            return x
        n, length = restore.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        tokens = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), restore)
        return torch.cat([x[:, :1], tokens], dim=1)

    def forward(self, latent: Tensor, restore: Tensor | None = None, predict_idx: Tensor | None = None) -> Tensor:
        """Predict per-token values from the encoded visible tokens.

        Args:
            latent: ``(N, 1 + K, embed_dim)``: CLS first, then the visible tokens in ``keep_idx`` order.
            restore: ``MaskInfo.restore`` ``(N, L)``; None when ``latent`` holds all ``L`` tokens in image order.
            predict_idx: ``(N, M)`` token indices to predict (e.g. ``MaskInfo.hidden_idx``); None predicts all.

        Returns:
            ``(N, L, out_dim)`` in image order, or ``(N, M, out_dim)`` in ``predict_idx`` order.
        """
        x = self.fill(self.embed(latent), restore) + self.pos_embed
        x = self.norm(self.blocks(x))[:, 1:]
        if predict_idx is not None:  # the head only where the loss looks
            x = gather_tokens(x, predict_idx)
        return self.pred(x)
