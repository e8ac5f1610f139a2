"""Model definitions, one method per module (``mae.py`` → :class:`MaskedAutoencoderViT`, …), with timm-style factories.

Example:
    >>> from medmae_nb.models import mae_vit_tiny
    >>> mae_vit_tiny(img_size=64, patch_size=8, in_chans=1).num_patches
    64
"""

from .mae import (
    MAEOutput,
    MAEReconstruction,
    MaskedAutoencoderViT,
    mae_loss,
    mae_vit_micro,
    mae_vit_small,
    mae_vit_tiny,
    sincos_pos_embed,
)

__all__ = [
    "MAEOutput",
    "MAEReconstruction",
    "MaskedAutoencoderViT",
    "mae_loss",
    "mae_vit_micro",
    "mae_vit_small",
    "mae_vit_tiny",
    "sincos_pos_embed",
]
