"""Texture statistics of grey-level images, to compare the phantom's speckle with real scans at the same size."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["texture_stats"]


def texture_stats(images: np.ndarray) -> dict[str, float]:
    """Mean over images of simple texture statistics of the first channel.

    * ``pixel_noise_std``: std of the image minus its Gaussian blur with sigma 1 px — the pixel-scale grain;
    * ``highpass_std``: the same with sigma 2 px — grain plus fine structure;
    * ``acf_lateral_1`` / ``acf_axial_1``: autocorrelation of the sigma-2 residual at a lag of one pixel across /
      down the image (speckle grains are longer laterally);
    * ``mean`` and ``std`` of the grey levels.

    Args:
        images: ``(N, C, H, W)`` in ``[0, 1]``.

    Example:
        >>> flat = np.full((2, 1, 16, 16), 0.5)
        >>> texture_stats(flat)["pixel_noise_std"]
        0.0
    """
    x = np.asarray(images, dtype=np.float64)[:, 0]
    res1 = x - gaussian_filter(x, sigma=(0, 1, 1))
    res2 = x - gaussian_filter(x, sigma=(0, 2, 2))

    def acf(a: np.ndarray, dy: int, dx: int) -> float:
        a = a - a.mean(axis=(1, 2), keepdims=True)
        h, w = a.shape[1:]
        u, v = a[:, : h - dy, : w - dx], a[:, dy:, dx:]
        return float(np.mean((u * v).mean(axis=(1, 2)) / np.maximum(a.var(axis=(1, 2)), 1e-12)))

    return {"pixel_noise_std": float(res1.std(axis=(1, 2)).mean()), "highpass_std": float(res2.std(axis=(1, 2)).mean()),
            "acf_lateral_1": acf(res2, 0, 1), "acf_axial_1": acf(res2, 1, 0), "mean": float(x.mean()),
            "std": float(x.std(axis=(1, 2)).mean())}
