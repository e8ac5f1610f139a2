"""medmae_nb: self-supervised pre-training for medical image classification with few labels.

The package behind the book: data (an embedded breast-ultrasound phantom and real-data loaders), masking and
masked autoencoders, training loops, metrics with confidence intervals, and explanations.
"""

__version__ = "0.1.0"

from .profiles import get_device, get_profile, print_config, resolve, seed_everything  # noqa: E402

__all__ = ["__version__", "get_device", "get_profile", "print_config", "resolve", "seed_everything"]
