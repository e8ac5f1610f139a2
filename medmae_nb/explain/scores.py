"""Scores of explanation maps against lesion masks, and the chance level they must beat.

:func:`pointing_game`, :func:`mass_in_lesion` and :func:`mass_ratio` score each image's map; :func:`score_maps`
summarises them with bootstrap intervals and :func:`random_map_baseline` gives their values for random maps, the
control every map must be compared with. Maps at token resolution are upsampled (nearest) to the mask size.

A constant map (all zero, as Grad-CAM gives when every gradient-weighted channel is negative) points nowhere: it is
scored as a uniform map — chance level: a pointing-game hit of the lesion's area share and a mass ratio of 1 — and
:func:`score_maps` reports how many there were. None is dropped. :func:`map_similarity` compares two methods' (or
a trained and a randomised network's) maps by rank correlation.

NumPy only: maps from :mod:`medmae_nb.explain.maps` may be passed as torch tensors and are converted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate import MetricCI, bootstrap_mean_ci

__all__ = ["pointing_game", "mass_in_lesion", "mass_ratio", "constant_maps", "random_map_baseline", "score_maps",
           "map_similarity"]


def _as_numpy(a: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor, recognised without importing torch
        a = a.detach().cpu()
        a = (a.float() if a.is_floating_point() else a).numpy()
    return np.asarray(a, dtype=dtype)


def _maps_and_lesion(maps: Any, lesion: Any) -> tuple[np.ndarray, np.ndarray]:
    les = _as_numpy(lesion, dtype=bool)
    m = _as_numpy(maps)
    if les.ndim == 2:
        les = les[None]
    if m.ndim == 2:
        m = m[None]
    if les.ndim != 3 or m.ndim != 3:
        raise ValueError(f"maps and lesion must be (N, H, W); got {m.shape} and {les.shape}")
    if len(m) != len(les):
        raise ValueError(f"{len(m)} maps but {len(les)} lesion masks")
    if m.shape[1:] != les.shape[1:]:
        if les.shape[1] % m.shape[1] or les.shape[2] % m.shape[2]:
            raise ValueError(f"map size {m.shape[1:]} does not divide the lesion mask size {les.shape[1:]}")
        # nearest-neighbour upsampling by a whole factor is a repeat (upsample_map gives the same for tensors)
        m = np.repeat(np.repeat(m, les.shape[1] // m.shape[1], axis=1), les.shape[2] // m.shape[2], axis=2)
    if not np.all(np.isfinite(m)):
        raise ValueError("maps hold NaN or infinite values")
    return m, les


def pointing_game(maps: Any, lesion: Any) -> np.ndarray:
    """Whether each map's peak falls inside the lesion: 1.0 hit, 0.0 miss, NaN where the image has no lesion.

    Ties at the peak (a patch-level map upsampled to pixels has a whole patch at its maximum) count by the share of
    the tied pixels inside the lesion, so a hit may be fractional; a constant map scores the lesion's area share,
    which is chance. Maps at token resolution are upsampled (nearest) to the mask size.

    Args:
        maps: ``(N, H, W)`` (or ``(N, h, w)`` dividing the mask size).
        lesion: ``(N, H, W)`` boolean lesion masks.

    Returns:
        ``(N,)`` float array.

    References:
        Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016 (the pointing game).

    Example:
        >>> les = np.zeros((1, 4, 4), bool); les[0, :2, :2] = True
        >>> m = np.zeros((1, 4, 4)); m[0, 0, 1] = 1
        >>> pointing_game(m, les)
        array([1.])
    """
    m, les = _maps_and_lesion(maps, lesion)
    peak = m == m.max(axis=(1, 2), keepdims=True)
    hit = (peak & les).sum(axis=(1, 2)) / peak.sum(axis=(1, 2))
    return np.where(les.any(axis=(1, 2)), hit, np.nan)


def constant_maps(maps: Any) -> np.ndarray:
    """Whether each map is constant (e.g. all zero): such a map carries no location.

    Example:
        >>> constant_maps(np.stack([np.zeros((2, 2)), np.eye(2)])).tolist()
        [True, False]
    """
    m = _as_numpy(maps)
    if m.ndim == 2:
        m = m[None]
    flat = m.reshape(len(m), -1)
    return flat.max(1) == flat.min(1)


def mass_in_lesion(maps: Any, lesion: Any) -> np.ndarray:
    """Share of each map's mass inside the lesion (negative values clipped to 0).

    NaN where the image has no lesion. A map with no positive mass (all zero after clipping) points nowhere and
    counts as uniform: its share is the lesion's area share (see :func:`constant_maps`).

    Example:
        >>> les = np.zeros((1, 4, 4), bool); les[0, :2] = True
        >>> mass_in_lesion(np.ones((1, 4, 4)), les)
        array([0.5])
    """
    m, les = _maps_and_lesion(maps, lesion)
    m = np.clip(m, 0, None)
    total = m.sum(axis=(1, 2))
    inside = (m * les).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, inside / total, les.mean(axis=(1, 2)))
    return np.where(les.any(axis=(1, 2)), share, np.nan)


def mass_ratio(maps: Any, lesion: Any) -> np.ndarray:
    """:func:`mass_in_lesion` divided by the lesion's share of the image area.

    1 means no better than a uniform map, above 1 means the map concentrates on the lesion; NaN without a lesion.

    Example:
        >>> les = np.zeros((1, 4, 4), bool); les[0, 0, 0] = True
        >>> mass_ratio(np.ones((1, 4, 4)), les)
        array([1.])
    """
    m, les = _maps_and_lesion(maps, lesion)
    area = les.mean(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return mass_in_lesion(m, les) / area


def random_map_baseline(lesion: Any, n_draws: int = 100, patch_size: int = 8, seed: int = 0) -> dict[str, float]:
    """Chance levels of the lesion scores: the scores of random maps, averaged over draws and lesion images.

    Random maps are uniform noise on the token grid (``patch_size`` pixels per cell) upsampled by nearest
    neighbour, i.e. as blocky as a ViT's attention maps. Expect a mass share near the lesion's area share, a mass
    ratio near 1 and a pointing-game rate near the area share.

    Args:
        lesion: ``(N, H, W)`` boolean lesion masks.
        n_draws: random maps per image.
        patch_size: pixels per noise cell (1 for pixel noise).
        seed: seed of the noise.

    Returns:
        ``{"pointing_game", "mass_in_lesion", "mass_ratio"}`` means over images with a lesion.

    Example:
        >>> les = np.zeros((2, 32, 32), bool); les[:, 8:24, 8:24] = True
        >>> bool(abs(random_map_baseline(les, n_draws=50)["mass_in_lesion"] - 0.25) < 0.02)  # 0.25 = area share
        True
    """
    les = _as_numpy(lesion, dtype=bool)
    if les.ndim != 3:
        raise ValueError(f"lesion must be (N, H, W), got shape {les.shape}")
    for name, value in (("n_draws", n_draws), ("patch_size", patch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    n, height, width = les.shape
    gh, gw = -(-height // patch_size), -(-width // patch_size)
    rng = np.random.default_rng(seed)
    scores: dict[str, list[np.ndarray]] = {"pointing_game": [], "mass_in_lesion": [], "mass_ratio": []}
    for _ in range(n_draws):
        noise = rng.random((n, gh, gw))
        maps = np.repeat(np.repeat(noise, patch_size, axis=1), patch_size, axis=2)[:, :height, :width]
        scores["pointing_game"].append(pointing_game(maps, les))
        scores["mass_in_lesion"].append(mass_in_lesion(maps, les))
        scores["mass_ratio"].append(mass_ratio(maps, les))
    if not les.any():
        return {k: float("nan") for k in scores}
    return {k: float(np.nanmean(np.stack(v))) for k, v in scores.items()}


def score_maps(maps: Any, lesion: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, MetricCI]:
    """Pointing game, mass in lesion and mass ratio: means over the images with a lesion, with bootstrap CIs.

    Args:
        maps: ``(N, H, W)`` maps (or at token resolution dividing the mask size).
        lesion: ``(N, H, W)`` boolean lesion masks; images without a lesion are left out.
        n_boot: bootstrap resamples of the images.
        alpha: 1 - confidence level.
        seed: seed of the resampling.

    Returns:
        ``{"pointing_game", "mass_in_lesion", "mass_ratio", "constant_maps"}`` → ``MetricCI(mean, low, high)``;
        ``constant_maps`` is the share of the lesion images whose map is constant (scored as uniform, not dropped).

    Example:
        >>> les = np.zeros((3, 8, 8), bool); les[:, :4, :4] = True
        >>> score_maps(les.astype(float), les, n_boot=20)["mass_ratio"].value
        4.0
        >>> maps = les.astype(float); maps[0] = 0  # one all-zero map: chance level, and counted
        >>> s = score_maps(maps, les, n_boot=20)
        >>> round(s["mass_ratio"].value, 3), round(s["constant_maps"].value, 3)
        (3.0, 0.333)
    """
    m, les = _maps_and_lesion(maps, lesion)
    per_image = {"pointing_game": pointing_game(m, les), "mass_in_lesion": mass_in_lesion(m, les)}
    per_image["mass_ratio"] = mass_ratio(m, les)
    per_image["constant_maps"] = np.where(les.any(axis=(1, 2)), constant_maps(m).astype(float), np.nan)
    return {k: bootstrap_mean_ci(v, n_boot=n_boot, alpha=alpha, seed=seed) for k, v in per_image.items()}


def map_similarity(maps_a: Any, maps_b: Any) -> np.ndarray:
    """Spearman rank correlation between two maps of each image (the model-randomisation check's measure).

    Near 1: the two maps order the pixels alike (e.g. a trained and a randomly initialised network giving the same
    map — the method then shows the image, not the model); near 0: unrelated. Pairs with a constant map give NaN.

    Args:
        maps_a, maps_b: ``(N, H, W)`` maps of the same images (or token grids; both are compared as given, so
            upsample both to one size first when their resolutions differ).

    Returns:
        ``(N,)`` correlations in [-1, 1].

    Example:
        >>> a = np.arange(16.0).reshape(1, 4, 4)
        >>> map_similarity(a, a ** 2).round(3).tolist(), map_similarity(a, -a).round(3).tolist()
        ([1.0], [-1.0])
    """
    a, b = (m[None] if m.ndim == 2 else m for m in (_as_numpy(maps_a), _as_numpy(maps_b)))
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must be two (N, H, W) arrays of one shape; got {a.shape} and {b.shape}")

    def ranks(x: np.ndarray) -> np.ndarray:  # average ranks of ties, per image
        flat = x.reshape(len(x), -1)
        out = np.empty_like(flat)
        for i, row in enumerate(flat):
            _, inv, counts = np.unique(row, return_inverse=True, return_counts=True)
            ends = np.cumsum(counts)
            out[i] = ((ends - counts + ends - 1) / 2.0)[inv]
        return out

    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)
