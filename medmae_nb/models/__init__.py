"""Models and self-supervised methods, one method per module (``mae.py`` → :class:`MaskedAutoencoderViT`, …), with
timm-style factories; ``base.py`` holds the contract every method follows (:class:`SSLMethod`, :class:`Batch`).

Example:
    >>> from medmae_nb.models import mae_vit_tiny
    >>> mae_vit_tiny(img_size=64, patch_size=8, in_chans=1).num_patches
    64
"""

from .backbones import BOOK_ENCODERS, WeightsError, create_encoder, download_weights, encoder_info
from .base import Batch, MethodOutput, Reconstruction, SSLMethod, as_batch
from .channels import adapt_input_channels, find_input_conv
from .cnn import SmallCNN, small_cnn
from .contrastive import MoCo, moco_v2_resnet18, momentum_at
from .decoders import MAEDecoder, sincos_pos_embed
from .dino import DINO, DINOHead, dino_resnet18_micro, dino_vit_micro, multi_crop_forward, teacher_temp_at
from .mae import (
    MAEOutput,
    MAEReconstruction,
    MaskedAutoencoderViT,
    mae_vit_micro,
    mae_vit_small,
    mae_vit_tiny,
)
from .masked_convnext import (
    MaskedConvNeXt,
    dense_masking,
    masked_convnext_atto,
    masked_convnext_femto,
    masked_convnext_tiny,
)
from .miram import (
    MIRAMOutput,
    MIRAMViT,
    ScaleDecoder,
    child_indices,
    miram_vit_micro,
    miram_vit_small,
    miram_vit_tiny,
    upsample_tokens,
)
from .registry import create_method, get_method, list_methods, method_name, register_method
from .spark import SparK, spark_convnext_atto, spark_resnet18, sparse_batch_norm, sparse_masking

__all__ = [
    "Reconstruction",
    "adapt_input_channels",
    "find_input_conv",
    "create_method",
    "get_method",
    "list_methods",
    "method_name",
    "register_method",
    "BOOK_ENCODERS",
    "WeightsError",
    "create_encoder",
    "download_weights",
    "encoder_info",
    "Batch",
    "DINO",
    "DINOHead",
    "MAEDecoder",
    "MAEOutput",
    "MAEReconstruction",
    "MaskedAutoencoderViT",
    "MaskedConvNeXt",
    "MoCo",
    "moco_v2_resnet18",
    "momentum_at",
    "SparK",
    "dense_masking",
    "masked_convnext_atto",
    "masked_convnext_femto",
    "masked_convnext_tiny",
    "spark_convnext_atto",
    "spark_resnet18",
    "sparse_batch_norm",
    "sparse_masking",
    "MethodOutput",
    "MIRAMOutput",
    "MIRAMViT",
    "SSLMethod",
    "ScaleDecoder",
    "SmallCNN",
    "as_batch",
    "child_indices",
    "dino_resnet18_micro",
    "dino_vit_micro",
    "mae_vit_micro",
    "mae_vit_small",
    "mae_vit_tiny",
    "miram_vit_micro",
    "miram_vit_small",
    "miram_vit_tiny",
    "multi_crop_forward",
    "sincos_pos_embed",
    "small_cnn",
    "teacher_temp_at",
    "upsample_tokens",
]
