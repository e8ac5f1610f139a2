"""Content-based leak guard: find test images that a pre-training pool has seen, whatever their size or channels.

A model pre-trained on images that overlap a test split has seen the test set, and its test score is no longer an
estimate of anything. Dataset names do not tell: BreastMNIST is BUSI, resized to 28 px. This module compares the
*pixels*: every image becomes a small gray signature (luma of RGB, resized to ``size x size`` with PIL's
antialiased bilinear filter, minus its mean, divided by its norm) so that the dot product of two signatures is the
Pearson correlation of the two thumbnails. It does not depend on size, channel count, brightness or contrast.

Why crops: BreastMNIST was made from the BUSI originals (about 500 px, of varying aspect ratio) by a centre crop to
a square and a resize to 28 px, while the ``busi_256`` copy squashed the same originals to a square. In squashed
space a BreastMNIST image is a centred crop of its BUSI image (width or height fraction between 1 and 0.5), so the
side with the larger resolution is compared under every crop variant of :data:`DEFAULT_CROPS` and the best one
counts. Without crops the match is not reliable (median correlation 0.94 and a second-best often 0.89); with them,
all 780 BreastMNIST images find their BUSI image at correlation >= 0.99 (median 0.9996), while unrelated
ultrasound (every BUSI image against all mirrored BUSI images) stays below 0.96. What scores 0.98 to 1.0 besides
the image itself is the same scan: BUSI's duplicates and its neighbouring frames of one lesion (calipers moved), a
leak at the patient level that the guard reports on purpose (see the table in :func:`find_overlap`).

Main entry points:

* :func:`content_signatures` / :func:`signature`: the signatures themselves (all crop variants / full image);
* :func:`find_overlap` ``(a, b)``: every pair (image of ``a``, image of ``b``) whose correlation reaches the
  threshold, as an :class:`Overlap` (:func:`score_matrix` gives all the scores);
* :func:`check_no_leak` ``(pretrain, test)``: raises :class:`DataLeakError` when test images were seen in
  pre-training (or warns loudly with ``allow=True``);
* :func:`pool_signatures` ``(ds)``: the small float16 form of a pre-training pool that a checkpoint can store, so that
  the check runs later without the pool's images;
* :func:`busi_split_from_breastmnist` (:func:`match_busi_to_breastmnist` for the full record) and
  :func:`shared_busi_split`: BUSI with BreastMNIST's official split carried over image by image, so that
  pre-training on BUSI train images and testing on BreastMNIST test images is clean.

Not covered: flipped, rotated or shifted copies (only centred crops are searched), and other frames of one scan that
correlate below the threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .base import SPLITS, DataError, ImageDataset

# Centred crops (height fraction, width fraction) compared on the larger-resolution side: the full image first,
# then width crops 0.95 .. 0.5 and height crops 0.95 .. 0.5 in steps of 0.05. BreastMNIST's crops of busi_256 lie
# between 0.5 and 1 (widths mostly, 0.55 to 0.7 for about 40 images; stopping at 0.7 leaves 38 of 780 below 0.98).
# A step of 0.05 keeps every true match at >= 0.9905 (256 px); 0.025 lifts the worst to 0.9953 for twice the
# variants (and twice the storage of pool_signatures).
_FRACTIONS = tuple(round(1.0 - 0.05 * i, 2) for i in range(1, 11))
DEFAULT_CROPS: tuple[tuple[float, float], ...] = (
    ((1.0, 1.0),) + tuple((1.0, f) for f in _FRACTIONS) + tuple((f, 1.0) for f in _FRACTIONS)
)
DEFAULT_SIZE = 28
DEFAULT_THRESHOLD = 0.98
# A BUSI train image that matches a BreastMNIST val/test image from this correlation on goes to test: 0.01 below the
# threshold, because scores move by up to 0.004 with the size BUSI is loaded at (see busi_split_from_breastmnist).
DEFAULT_GUARD = 0.97
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L") and the loaders
_CHUNK_IMAGES = 128  # images resampled at once (bounds memory for large sets of large images)
_BLOCK_VALUES = 1 << 23  # scores computed at once (32 MiB of float32)
_FLAT = 1e-6  # signatures of images whose thumbnail has (almost) no contrast are left at zero


class DataLeakError(DataError):
    """Raised by :func:`check_no_leak` when test images were seen in pre-training; ``.overlap`` holds the pairs."""

    def __init__(self, message: str, overlap: Overlap | None = None) -> None:
        super().__init__(message)
        self.overlap = overlap


# ----------------------------------------------------------------------------------------------------- signatures
def _check_crops(crops: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """The crop list as float pairs with the full image first (added when missing)."""
    out: list[tuple[float, float]] = []
    for crop in crops:
        try:
            fh, fw = (float(v) for v in crop)
        except (TypeError, ValueError):
            raise DataError(f"each crop must be a pair (height fraction, width fraction), got {crop!r}") from None
        if not (0 < fh <= 1 and 0 < fw <= 1):
            raise DataError(f"crop fractions must lie in (0, 1], got {crop!r}; e.g. (1.0, 0.8) keeps the centred 80 % "
                            "of the width")
        out.append((fh, fw))
    out = [c for c in out if c != (1.0, 1.0)]
    return ((1.0, 1.0), *dict.fromkeys(out))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 4 <= size <= 256:
        raise DataError(f"size must be an int from 4 to 256 (the side of the signature thumbnail), got {size!r}")
    return int(size)


def _resample_matrix(n_in: int, n_out: int, start: float, length: float) -> torch.Tensor:
    """``(n_out, n_in)`` weights that resize the span ``[start, start + length)`` of ``n_in`` pixels to ``n_out``.

    PIL's BILINEAR resize with a (fractional) ``box``: a triangle filter widened by the scale when shrinking (so
    shrinking averages, without aliasing), renormalised at the borders. As a matrix it crops at sub-pixel precision
    and turns crop-and-resize of a whole batch into two matrix products.
    """
    scale = length / n_out
    support = max(scale, 1.0)
    centres = start + (np.arange(n_out) + 0.5) * scale
    pixels = np.arange(n_in) + 0.5
    w = np.clip(1.0 - np.abs(pixels[None, :] - centres[:, None]) / support, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    return torch.from_numpy(w.astype(np.float32))


def _gray(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` float32 gray: the channel of gray images, ITU-R 601 luma of RGB, the mean of other counts."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] == 3:
        return torch.einsum("nchw,c->nhw", x, torch.tensor(_LUMA, dtype=torch.float32))
    return x.mean(1)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit norm along the last axis: dot products become Pearson correlations. Flat rows stay zero."""
    v = v - v.mean(-1, keepdim=True)
    norm = v.norm(dim=-1, keepdim=True)
    return torch.where(norm > _FLAT, v / norm.clamp_min(_FLAT), torch.zeros_like(v))


def _images_of(ds: ImageDataset, what: str) -> np.ndarray:
    if not isinstance(ds, ImageDataset):
        raise DataError(f"{what} must be an ImageDataset (or, where accepted, a signature array), got "
                        f"{type(ds).__name__}")
    return ds.images


def content_signatures(ds: ImageDataset, size: int = DEFAULT_SIZE,
                       crops: Sequence[Sequence[float]] = DEFAULT_CROPS) -> np.ndarray:
    """Signatures of every image under every centred crop: float32 ``(N, K, size * size)``, unit-norm, zero-mean.

    Each image is made gray (luma of RGB), cropped to the centred ``(height fraction, width fraction)`` of each
    crop variant (sub-pixel exact), resized to ``size x size`` with an antialiased bilinear filter (PIL's), then
    centred and scaled to unit norm, so that ``sig_a @ sig_b`` is the Pearson correlation of the two thumbnails.
    Variant 0 is always the full image (added in front when ``crops`` lacks it). Any image size and channel count
    work; an image without contrast (constant) gets an all-zero signature, which matches nothing.

    Args:
        ds: the images.
        size: side of the thumbnails; 28 (BreastMNIST's) keeps all of the smallest common size's detail.
        crops: the crop variants, ``(height fraction, width fraction)`` pairs in ``(0, 1]``.

    Returns:
        float32 ``(N, K, size * size)`` with ``K = len(crops)`` (plus one when the full image was missing).

    Example:
        >>> from medmae_nb.data import make_phantom
        >>> content_signatures(make_phantom(3, 64)).shape
        (3, 21, 784)
    """
    images = _images_of(ds, "ds")
    size, crops = _check_size(size), _check_crops(crops)
    n, _, h, w = images.shape
    rows = {fh: _resample_matrix(h, size, (h - h * fh) / 2, h * fh) for fh in {c[0] for c in crops}}
    cols = {fw: _resample_matrix(w, size, (w - w * fw) / 2, w * fw) for fw in {c[1] for c in crops}}
    # Separable filters commute with each other, so all width-only crops share the full-height resize (and all
    # height-only crops the full-width one); each group is then one stacked matrix product.
    wide = [k for k, (fh, _) in enumerate(crops) if fh == 1.0]
    tall = [k for k, (fh, fw) in enumerate(crops) if fw == 1.0 and fh != 1.0]
    other = [k for k, (fh, fw) in enumerate(crops) if fh != 1.0 and fw != 1.0]
    wide_cols = torch.cat([cols[crops[k][1]] for k in wide]).T  # (W, len(wide) * size)
    tall_rows = torch.cat([rows[crops[k][0]] for k in tall]) if tall else None  # (len(tall) * size, H)
    out = torch.empty((n, len(crops), size, size), dtype=torch.float32)
    with torch.no_grad():
        for lo in range(0, n, _CHUNK_IMAGES):
            x = _gray(images[lo:lo + _CHUNK_IMAGES])
            m = len(x)
            y = (rows[1.0] @ x).reshape(m * size, w) @ wide_cols  # (m * size, len(wide) * size)
            out[lo:lo + m, wide] = y.reshape(m, size, len(wide), size).permute(0, 2, 1, 3)
            if tall:
                t = (x @ cols[1.0].T).permute(1, 0, 2).reshape(h, m * size)  # (H, m * size)
                y = (tall_rows @ t).reshape(len(tall), size, m, size)
                out[lo:lo + m, tall] = y.permute(2, 0, 1, 3)
            for k in other:
                fh, fw = crops[k]
                out[lo:lo + m, k] = rows[fh] @ x @ cols[fw].T
        out = out.reshape(n, len(crops), size * size)
        out = _normalise(out)
    return out.numpy()


def signature(ds: ImageDataset, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The full-image signature of every image: float32 ``(N, size * size)`` (variant 0 of
    :func:`content_signatures`, computed alone)."""
    return content_signatures(ds, size, crops=((1.0, 1.0),))[:, 0]


def pool_signatures(ds: ImageDataset, size: int = DEFAULT_SIZE,
                    crops: Sequence[Sequence[float]] = DEFAULT_CROPS) -> np.ndarray:
    """The storable form of a pre-training pool: float16 ``(N, K, size * size)`` signatures under every crop variant.

    A checkpoint can keep this array beside its weights; :func:`check_no_leak` and :func:`find_overlap` accept it in
    place of the pool's dataset, so a later test set is checked without the pool's images. Both directions work: the
    stored crop variants cover a test set made by cropping the pool's images (BreastMNIST test against a BUSI pool),
    and the stored full-image variant (index 0) is compared with the crop variants of a test set of larger
    resolution (a BUSI test set against a BreastMNIST pool).

    Storage for BUSI's 780 images with the 21 default crops: 25.7 MB at ``size=28``, 8.4 MB at ``size=16``, 1.2 MB
    with ``crops=()`` (full image only; then only the second direction is covered). What 16 px loses is margin, not
    matches: true BUSI / BreastMNIST matches stay >= 0.995, but unrelated ultrasound (BUSI vs mirrored BUSI) rises
    from max 0.956 to 0.969 (66 of 780 above 0.95 instead of 8), 0.011 below the 0.98 threshold instead of 0.024.
    float16 changes a correlation by at most 1e-4.
    """
    return content_signatures(ds, size, crops).astype(np.float16)


# ------------------------------------------------------------------------------------------------------- overlap
@dataclass
class Overlap:
    """The pairs of images of ``a`` and ``b`` whose content matches, with their correlations.

    Attributes:
        pairs: int64 ``(M, 2)``: ``(i, j)`` with ``i`` an index into ``a`` and ``j`` into ``b``, by falling score.
        scores: float32 ``(M,)``: Pearson correlation of each pair (best crop variant), all ``>= threshold``.
        threshold: the correlation a pair had to reach.
        n_a, n_b: the sizes of ``a`` and ``b``.
        best_in_a: int64 ``(n_b,)``: for every image of ``b``, the index of its best match in ``a``.
        best_score: float32 ``(n_b,)``: that match's correlation (so ``best_score < threshold`` means unmatched).
        names: names of ``a`` and ``b`` for messages.
        crop_side: which side was compared under crop variants (``"a"``, ``"b"``, ``"both"``, ``"none"``).
    """

    pairs: np.ndarray
    scores: np.ndarray
    threshold: float
    n_a: int
    n_b: int
    best_in_a: np.ndarray
    best_score: np.ndarray
    names: tuple[str, str] = ("a", "b")
    crop_side: str = "a"

    @property
    def b_matched(self) -> np.ndarray:
        """Sorted indices of the images of ``b`` that match some image of ``a``."""
        return np.unique(self.pairs[:, 1])

    @property
    def a_matched(self) -> np.ndarray:
        """Sorted indices of the images of ``a`` that match some image of ``b``."""
        return np.unique(self.pairs[:, 0])

    def __bool__(self) -> bool:
        return len(self.pairs) > 0

    def summary(self, n_pairs: int = 5) -> str:
        """One paragraph: how many images of ``b`` match, the first pairs with their scores, the score spread."""
        a, b = self.names
        nb, na = len(self.b_matched), len(self.a_matched)
        share = f" ({100 * nb / self.n_b:.1f} %)" if self.n_b else ""
        head = (f"{nb} of {self.n_b} {b} images{share} match {na} of {self.n_a} {a} images at Pearson correlation "
                f">= {self.threshold:g} ({len(self.pairs)} pairs)")
        if len(self.pairs):
            shown = ", ".join(f"{a}[{i}]~{b}[{j}] {s:.4f}" for (i, j), s in
                              zip(self.pairs[:n_pairs].tolist(), self.scores[:n_pairs]))
            more = f", ... ({len(self.pairs) - n_pairs} more)" if len(self.pairs) > n_pairs else ""
            head += f"; pairs ({a} index ~ {b} index, correlation): {shown}{more}"
        if self.n_b:
            q = np.percentile(self.best_score, [50, 99, 100])
            head += (f". Best match of each {b} image: median {q[0]:.3f}, 99th percentile {q[1]:.3f}, "
                     f"max {q[2]:.4f}")
        return head + "."


@dataclass
class _Side:
    """One side of a comparison: a dataset (signatures made on demand) or stored signatures."""

    name: str
    resolution: int | None  # image side of a dataset; None for stored signatures
    crops: tuple[tuple[float, float], ...]
    ds: ImageDataset | None = None
    stored: np.ndarray | None = None  # (N, K, D) float32
    _cache: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ds) if self.ds is not None else len(self.stored)

    @property
    def n_variants(self) -> int:
        return len(self.crops) if self.ds is not None else self.stored.shape[1]

    def sigs(self, size: int, cropped: bool) -> np.ndarray:
        """``(N, K, D)`` with all variants when ``cropped``, else ``(N, 1, D)`` with the full image only."""
        if self.stored is not None:
            return self.stored if cropped else self.stored[:, :1]
        key = (size, cropped)
        if key not in self._cache:
            self._cache[key] = content_signatures(self.ds, size, self.crops if cropped else ((1.0, 1.0),))
        return self._cache[key]


def _side(x: ImageDataset | np.ndarray, what: str, crops: Sequence[Sequence[float]]) -> _Side:
    if isinstance(x, ImageDataset):
        return _Side(name=what, resolution=max(x.images.shape[2:]) if len(x) else 0, crops=_check_crops(crops), ds=x)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        s = np.asarray(x, dtype=np.float32)
        if s.ndim == 2:
            s = s[:, None]
        side = int(round(np.sqrt(s.shape[-1]))) if s.ndim == 3 else 0
        if s.ndim != 3 or side * side != s.shape[-1] or side < 4:
            raise DataError(
                f"{what}: a signature array must be (N, size*size) or (N, K, size*size) as made by signature() or "
                f"pool_signatures(), got shape {tuple(x.shape)}; pass an ImageDataset for images"
            )
        return _Side(name=what, resolution=None, crops=(), stored=s)
    raise DataError(f"{what} must be an ImageDataset or a signature array from pool_signatures(), got "
                    f"{type(x).__name__}")


def _plan(a: _Side, b: _Side, crop_side: str, size: int | None) -> tuple[int, str]:
    """The signature size and which side gets crop variants."""
    sizes = {int(round(np.sqrt(s.stored.shape[-1]))) for s in (a, b) if s.stored is not None}
    if len(sizes) > 1:
        raise DataError(f"the two signature arrays have different sizes {sorted(sizes)}; make both with the same "
                        "size=... argument")
    if sizes:
        stored = sizes.pop()
        if size is not None and size != stored:
            raise DataError(f"size={size} but the stored signatures are {stored}x{stored}; leave size=None or "
                            f"pass size={stored}")
        size = stored
    size = _check_size(DEFAULT_SIZE if size is None else size)
    if crop_side not in ("auto", "a", "b", "both", "none"):
        raise DataError(f"crop_side must be 'auto', 'a', 'b', 'both' or 'none', got {crop_side!r}")
    if crop_side == "auto":
        if a.stored is not None or b.stored is not None:
            # stored signatures: no resolution to compare; crop every side that can be cropped
            can = [s.n_variants > 1 for s in (a, b)]
            crop_side = "both" if all(can) else "a" if can[0] else "b" if can[1] else "none"
        elif a.resolution == b.resolution:
            crop_side = "both"
        else:
            crop_side = "a" if a.resolution > b.resolution else "b"
    for letter, s in (("a", a), ("b", b)):
        if crop_side in (letter, "both") and s.stored is not None and s.n_variants == 1:
            raise DataError(f"crop_side={crop_side!r} needs crop variants of {s.name}, but its stored signatures "
                            "hold the full image only; store them with pool_signatures(ds) (all crops)")
    return size, crop_side


def _best_over_variants(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """``(Na, Nb)``: for each pair the largest dot product over the variants of ``sa`` ``(Na, K, D)`` against the
    single variant of ``sb`` ``(Nb, D)``."""
    na, k, d = sa.shape
    out = np.empty((na, len(sb)), np.float32)
    tb = torch.from_numpy(np.ascontiguousarray(sb, dtype=np.float32)).T
    rows = max(1, _BLOCK_VALUES // max(1, k * len(sb)))
    for lo in range(0, na, rows):
        block = torch.from_numpy(np.ascontiguousarray(sa[lo:lo + rows], dtype=np.float32)).reshape(-1, d) @ tb
        out[lo:lo + rows] = block.reshape(-1, k, len(sb)).amax(1).numpy()
    return out


def _score_matrix(a: _Side, b: _Side, size: int, crop_side: str) -> np.ndarray:
    """``(Na, Nb)`` correlations, each the best over the crop variants of the side(s) named by ``crop_side``."""
    with torch.no_grad():
        scores = np.full((len(a), len(b)), -1.0, np.float32)
        if crop_side in ("a", "both", "none"):
            scores = _best_over_variants(a.sigs(size, crop_side != "none"), b.sigs(size, False)[:, 0])
        if crop_side in ("b", "both"):
            scores = np.maximum(scores, _best_over_variants(b.sigs(size, True), a.sigs(size, False)[:, 0]).T)
    return scores


def score_matrix(a: ImageDataset | np.ndarray, b: ImageDataset | np.ndarray, *, size: int | None = None,
                 crops: Sequence[Sequence[float]] = DEFAULT_CROPS, crop_side: str = "auto") -> np.ndarray:
    """float32 ``(len(a), len(b))``: the correlation of every pair, best over crop variants (see
    :func:`find_overlap` for the arguments). Holds the whole matrix: for large sets use :func:`find_overlap`."""
    sa, sb = _side(a, "a", crops), _side(b, "b", crops)
    size, crop_side = _plan(sa, sb, crop_side, size)
    return _score_matrix(sa, sb, size, crop_side)


def _overlap_from_scores(scores: np.ndarray, threshold: float, names: tuple[str, str], crop_side: str) -> Overlap:
    i, j = np.nonzero(scores >= threshold)
    s = scores[i, j]
    order = np.lexsort((j, i, -s))
    na, nb = scores.shape
    best = scores.argmax(0) if na else np.zeros(nb, np.int64)
    return Overlap(
        pairs=np.stack([i[order], j[order]], 1).astype(np.int64).reshape(-1, 2),
        scores=s[order].astype(np.float32),
        threshold=float(threshold),
        n_a=na,
        n_b=nb,
        best_in_a=best.astype(np.int64),
        best_score=(scores[best, np.arange(nb)] if na else np.full(nb, -1.0)).astype(np.float32),
        names=names,
        crop_side=crop_side,
    )


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not (
            0 < threshold <= 1):
        raise DataError(f"threshold must be a correlation in (0, 1], got {threshold!r}; 0.98 is the tested default")
    return float(threshold)


def find_overlap(a: ImageDataset | np.ndarray, b: ImageDataset | np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                 *, size: int | None = None, crops: Sequence[Sequence[float]] = DEFAULT_CROPS,
                 crop_side: str = "auto", names: tuple[str, str] = ("a", "b")) -> Overlap:
    """Every pair (image of ``a``, image of ``b``) with the same content, by Pearson correlation of thumbnails.

    Each image of ``b`` is compared with every image of ``a``; a pair's score is the best over the crop variants of
    the side with the larger resolution (a smaller image may be a centred crop of a larger one, not the reverse);
    with equal resolutions both sides are cropped in turn. Exact copies score 1.0; resized copies (256 or 64 px
    to 28), gray/RGB conversions, brightness and contrast changes and centred crops score above 0.98.

    Measured on the real data (780 BUSI images, BreastMNIST at 28 px, default crops, size 28), best score per image:

    - true match, BreastMNIST image vs BUSI at 256 px: min 0.9905, 1st percentile 0.9956, median 0.9996;
    - true match, BreastMNIST image vs BUSI at 64 px: min 0.9916, 1st percentile 0.9954, median 0.9993;
    - unrelated ultrasound, BUSI vs mirrored BUSI: median 0.865, 99th percentile 0.947, max 0.956;
    - BUSI vs the phantom (``make_phantom``): median 0.685, max 0.915;
    - BUSI vs the other BUSI images: median 0.927, and 314 of 780 at >= 0.98: exact duplicates and neighbouring
      frames of one scan (same lesion, calipers moved), a patient-level leak, reported on purpose;
    - BreastMNIST's own train split vs its test split: 50 of 156 test images at >= 0.98 (the same frames).

    A pair of different frames of one scan can reach 0.9999 at 28 px, so no threshold tells them from a copy; the
    guard treats them as the same image, which is what a leak check should do. 4 of 608,400 BUSI/BreastMNIST pairs
    cross 0.98 between BUSI loaded at 64 and at 256 px (scores move by up to 0.004).

    Args:
        a: the reference set (e.g. a pre-training pool): an ``ImageDataset`` or stored signatures
            (:func:`pool_signatures`; then ``size`` is theirs).
        b: the set to look up (e.g. a test split), likewise.
        threshold: the correlation from which two images count as the same.
        size: signature side, default 28 (or the stored signatures' size).
        crops: crop variants tried on the cropped side (see :data:`DEFAULT_CROPS`).
        crop_side: ``"auto"`` (the larger resolution; both when equal or when a side is stored signatures with
            crop variants), ``"a"``, ``"b"``, ``"both"`` or ``"none"``.
        names: how the two sides are called in :meth:`Overlap.summary`.

    Returns:
        An :class:`Overlap`; ``bool(overlap)`` is whether any pair matched.

    Cost: the score matrix is held whole (``len(a) * len(b) * 4`` bytes, 2.4 MB for BUSI against BreastMNIST), the
    products are computed in blocks of 32 MiB; signatures of 780 BUSI images at 256 px under the 21 crops take
    about 0.4 s on two CPU cores, a comparison with BreastMNIST about 0.2 s.
    """
    threshold = _check_threshold(threshold)
    sa, sb = _side(a, names[0], crops), _side(b, names[1], crops)
    size, crop_side = _plan(sa, sb, crop_side, size)
    return _overlap_from_scores(_score_matrix(sa, sb, size, crop_side), threshold, tuple(names), crop_side)


def check_no_leak(pretrain: ImageDataset | np.ndarray, test: ImageDataset | np.ndarray, *, allow: bool = False,
                  threshold: float = DEFAULT_THRESHOLD, what: str = "pre-training pool",
                  size: int | None = None) -> Overlap:
    """Raises :class:`DataLeakError` when images of ``test`` were seen in pre-training, by content.

    Args:
        pretrain: the images a model was (or will be) pre-trained on: an ``ImageDataset``, or the signatures a
            checkpoint stored (:func:`pool_signatures`), so the check runs without the pool's images.
        test: the images its evaluation will be scored on.
        allow: run anyway: a loud ``UserWarning`` instead of the error (for a deliberate, labelled experiment).
        threshold: the correlation from which two images count as the same (see :func:`find_overlap`).
        what: what ``pretrain`` is, for the message.
        size: signature side (default 28, or the stored signatures' size).

    Returns:
        The :class:`Overlap` (empty when clean).

    Raises:
        DataLeakError: a test image matches a pre-training image (unless ``allow``); the message says how many,
            shows the first pairs and says how to fix it.
    """
    overlap = find_overlap(pretrain, test, threshold, size=size, names=("pretrain", "test"))
    if not overlap:
        return overlap
    n, n_test = len(overlap.b_matched), overlap.n_b
    message = (
        f"data leak: {n} of {n_test} test images ({100 * n / n_test:.1f} %) were seen in the {what} "
        f"(same content at Pearson correlation >= {overlap.threshold:g}, across sizes, crops and channels). "
        f"{overlap.summary()} A score on this test set would measure memory, not generalisation. Fix: pre-train "
        f"only on images outside the test set, e.g. the train split of the shared BUSI/BreastMNIST split "
        f"(medmae_nb.data.shared_busi_split(...).get_split('train')), or drop the matched images "
        f"(overlap.a_matched) from the pool; or pass allow=True to run anyway with a loud warning."
    )
    if allow:
        warnings.warn("ALLOWED " + message, UserWarning, stacklevel=2)
        return overlap
    raise DataLeakError(message, overlap)


# --------------------------------------------------------------------------------- BUSI split from BreastMNIST's
_MATCH_SIZE = 64  # BUSI is matched at this side whatever size is asked for, so every size gets the same split
_SPLIT_VERSION = 1  # bump when the derivation changes, so that cached splits are remade


@dataclass
class BreastMNISTMatch:
    """How each BUSI image was matched to BreastMNIST, and the split it gets.

    Attributes:
        split: ``(N,)`` the derived split of each BUSI image.
        matched: ``(N,)`` index into the BreastMNIST dataset of each BUSI image's best match.
        score: ``(N,)`` that match's correlation.
        matched_split: ``(N,)`` the official split of that match (the split before the guard).
        moved: ``(N,)`` True where the guard moved a BUSI image to test: a would-be train image that also matches a
            BreastMNIST val/test image (BUSI's duplicates and neighbouring frames of one scan), or an image without
            any match.
        label_agrees: ``(N,)`` whether "malignant" agrees between the BUSI image and its match (None when either
            dataset lacks a class named "malignant").
        files: ``(N,)`` BUSI file names when known, for messages.
        threshold, guard: the thresholds used.
    """

    split: np.ndarray
    matched: np.ndarray
    score: np.ndarray
    matched_split: np.ndarray
    moved: np.ndarray
    label_agrees: np.ndarray | None
    files: np.ndarray | None
    threshold: float
    guard: float

    def disagreements(self) -> list[str]:
        """One line per BUSI image whose "malignant" label disagrees with its BreastMNIST match."""
        if self.label_agrees is None:
            return []
        return [f"{self._name(i)} ~ breastmnist[{self.matched[i]}] ({self.matched_split[i]}), r={self.score[i]:.4f}"
                for i in np.flatnonzero(~self.label_agrees)]

    def _name(self, i: int) -> str:
        return str(self.files[i]) if self.files is not None else f"busi[{i}]"

    def summary(self) -> str:
        """Split sizes, how many the guard moved, match scores and label agreement, in a few lines."""
        counts = "/".join(str(int((self.split == s).sum())) for s in SPLITS)
        before = "/".join(str(int((self.matched_split == s).sum())) for s in SPLITS)
        unmatched = int((self.score < self.threshold).sum())
        lines = [
            f"BUSI split from BreastMNIST (train/val/test): {counts}; by best match alone {before}; "
            f"{int(self.moved.sum())} moved to test by the guard (train images at r >= {self.guard:g} with a "
            f"BreastMNIST val/test image, and unmatched ones), {unmatched} without a match at r >= {self.threshold:g}",
            f"best-match correlation: min {self.score.min():.4f}, median {np.median(self.score):.4f}",
        ]
        if self.label_agrees is not None:
            bad = self.disagreements()
            lines.append(f"malignant label agrees for {int(self.label_agrees.sum())} of {len(self.split)} "
                         f"({100 * self.label_agrees.mean():.2f} %)" + ("; disagreements: " + "; ".join(bad)
                                                                         if bad else ""))
        return "\n".join(lines)


def match_busi_to_breastmnist(busi: ImageDataset, breastmnist: ImageDataset, *,
                              threshold: float = DEFAULT_THRESHOLD, guard: float = DEFAULT_GUARD,
                              crops: Sequence[Sequence[float]] = DEFAULT_CROPS) -> BreastMNISTMatch:
    """Matches every BUSI image to BreastMNIST by content and derives its split; see
    :func:`busi_split_from_breastmnist` for the rules. Returns the full record (scores, moves, label check)."""
    threshold, guard = _check_threshold(threshold), _check_threshold(guard)
    if guard > threshold:
        raise DataError(f"guard ({guard}) must not exceed threshold ({threshold}): the guard is the stricter, lower "
                        "correlation from which a BUSI train image counts as possibly a held-out one")
    for ds, what in ((busi, "busi"), (breastmnist, "breastmnist")):
        _images_of(ds, what)
    if breastmnist.split is None:
        raise DataError("breastmnist has no split; load it with medmae_nb.data.load_medmnist('breastmnist', root), "
                        "which keeps the official train/val/test split")
    if not len(busi) or not len(breastmnist):
        raise DataError(f"nothing to match: busi has {len(busi)} images, breastmnist {len(breastmnist)}")
    # BreastMNIST images are centred crops of the (squashed) BUSI images: crop the BUSI side only.
    scores = score_matrix(busi, breastmnist, crops=crops, crop_side="a")  # (N_busi, N_breastmnist)
    matched = scores.argmax(1)
    score = scores[np.arange(len(busi)), matched]
    official = np.asarray(breastmnist.split).astype(str)
    matched_split = official[matched]
    if (score >= threshold).mean() < 0.5:
        raise DataError(
            f"only {int((score >= threshold).sum())} of {len(busi)} BUSI images match a BreastMNIST image at "
            f"r >= {threshold:g} (median best {np.median(score):.3f}): these do not look like BUSI and BreastMNIST. "
            "Pass load_busi(root, ...) and load_medmnist('breastmnist', root)"
        )
    held_out = np.isin(official, ("val", "test"))
    sees_held_out = (scores[:, held_out] >= guard).any(1)
    to_test = (score < threshold) | ((matched_split == "train") & sees_held_out)
    split = np.where(to_test, "test", matched_split).astype("<U5")
    moved = split != matched_split
    label_agrees = None
    if "malignant" in busi.class_names and "malignant" in breastmnist.class_names:
        busi_malignant = busi.labels == busi.class_names.index("malignant")
        bm_malignant = breastmnist.labels[matched] == breastmnist.class_names.index("malignant")
        label_agrees = busi_malignant == bm_malignant
    files = np.asarray(busi.meta["file"]).astype(str) if "file" in busi.meta else None
    return BreastMNISTMatch(split=split, matched=matched.astype(np.int64), score=score.astype(np.float32),
                            matched_split=matched_split.astype("<U5"), moved=moved, label_agrees=label_agrees,
                            files=files, threshold=threshold, guard=guard)


def busi_split_from_breastmnist(busi: ImageDataset, breastmnist: ImageDataset, *,
                                threshold: float = DEFAULT_THRESHOLD, guard: float = DEFAULT_GUARD) -> np.ndarray:
    """BreastMNIST's official split carried over to BUSI, image by image: ``(N,)`` of ``"train"``/``"val"``/``"test"``.

    BreastMNIST is BUSI at 28 px with an official split; BUSI has none. Pre-training on BUSI and testing on
    BreastMNIST's test set is only clean when the BUSI images trained on are not BreastMNIST test images, so BUSI
    gets BreastMNIST's split:

    1. every BUSI image is matched to the BreastMNIST image with the highest correlation over the BUSI image's crop
       variants (:func:`find_overlap`'s method), and takes its split;
    2. conservative guard: a BUSI image that would be train but matches *any* BreastMNIST val or test image at
       ``r >= guard`` goes to test, and so does one without a match at ``r >= threshold``: never train on a
       possible test image. BUSI holds exact duplicates and many neighbouring frames of one scan (same lesion,
       other calipers: r 0.98 to 0.9999 at 28 px), and BreastMNIST's official split puts such pairs in different
       splits (50 of its 156 test images have such a partner in its train split), so the guard moves 103 images.
       ``guard`` lies 0.01 below ``threshold`` because correlations move by up to 0.004 between BUSI at 64 and at
       256 px: the derived train split then passes :func:`check_no_leak` against BreastMNIST val/test at
       ``threshold`` whatever size BUSI is loaded at.

    A val image that matches a test image stays val. The label check (BUSI malignant exactly where BreastMNIST says 0)
    is in :func:`match_busi_to_breastmnist`'s record; on the real data it agrees for 779 of 780 images, the one
    exception being BUSI's own conflict (``benign (433).png`` is ``malignant (145).png``).

    Args:
        busi: BUSI as loaded by :func:`medmae_nb.data.load_busi`, any size (64 px or more matches best).
        breastmnist: BreastMNIST as loaded by :func:`medmae_nb.data.load_medmnist` (official split).
        threshold: correlation from which a BUSI image counts as matched.
        guard: correlation from which a BUSI train image counts as possibly a val/test image.

    Returns:
        ``(N,)`` array of split names, in BUSI's order. Use :func:`shared_busi_split` for the loaded, cached result.
    """
    return match_busi_to_breastmnist(busi, breastmnist, threshold=threshold, guard=guard).split


def shared_busi_split(root: str | Path | None = None, image_size: int = 64, channels: int = 1, *,
                      cache: bool = True, verbose: bool = False) -> ImageDataset:
    """BUSI with BreastMNIST's official split carried over (:func:`busi_split_from_breastmnist`), cached on disk.

    The split to pre-train and evaluate with when BUSI and BreastMNIST are both in play: pre-train on
    ``.get_split("train")`` and any BreastMNIST test score stays clean. Lesion masks come along where the BUSI
    folder has them (``busi_256_gt``). Matching runs at 64 px gray whatever ``image_size`` and ``channels`` are
    asked for, so every size gets the same split; the result is cached under ``cache_dir()/splits``, keyed by the
    content of both datasets.

    On the shared real data (``busi_256_gt`` and the official ``breastmnist.npz``) the split is, per class
    (normal / benign / malignant):

    ========  =====  ======  ======  =========
    split     total  normal  benign  malignant
    ========  =====  ======  ======  =========
    train     440    66      242     132
    val       79     19      39      21
    test      261    48      156     57
    ========  =====  ======  ======  =========

    By best match alone it would be 543/79/158 (BreastMNIST's 546/78/156, give or take BUSI's duplicates); the
    guard moved 103 would-be train images to test. The best-match correlation is >= 0.9916 for every image, and the
    malignant label agrees for 779 of 780 (the exception: ``benign (433).png``, which is ``malignant (145).png``).

    Args:
        root: the data root holding BUSI (``busi_256_gt/``, ``busi_256/`` ...) and ``medmnist/breastmnist.npz``;
            None means ``$MEDMAE_DATA``.
        image_size: side of the returned images.
        channels: 1 (gray) or 3 (RGB).
        cache: False recomputes the split (a second or two, plus loading BUSI at 64 px gray when other
            settings are asked for).
        verbose: print whether the split was loaded from the cache, and the match summary when computed.

    Returns:
        BUSI (labels normal 0, benign 1, malignant 2) with ``split`` set and ``meta`` holding ``breastmnist_split``
        (the official split of each image's BreastMNIST match), ``breastmnist_index`` (its index within that split)
        and ``breastmnist_score`` (the correlation).

    Raises:
        DataError: BUSI or BreastMNIST not found (with where to get them), or they do not match.
    """
    from ..cache import array_digest, load_npz, load_or_make, save_npz
    from .folders import load_busi
    from .medmnist import load_medmnist

    try:
        breastmnist = load_medmnist("breastmnist", root)
    except DataError as err:
        raise DataError(f"shared_busi_split needs BreastMNIST beside BUSI: {err}. Get it with "
                        f"medmae_nb.data.load_medmnist('breastmnist', root, download=True)") from None
    busi = load_busi(root, image_size, channels)
    config = {
        "what": "busi split from breastmnist",
        "version": _SPLIT_VERSION,
        "busi": array_digest(busi.images, busi.labels),
        "files": array_digest(np.asarray(busi.meta["file"]).astype(str).astype("U")),
        "breastmnist": array_digest(breastmnist.images, breastmnist.labels, breastmnist.split.astype("U")),
        "threshold": DEFAULT_THRESHOLD,
        "guard": DEFAULT_GUARD,
        "match_size": _MATCH_SIZE,
        "crops": [list(c) for c in DEFAULT_CROPS],
    }

    def make() -> dict[str, np.ndarray]:
        probe = busi if (image_size, channels) == (_MATCH_SIZE, 1) else load_busi(root, _MATCH_SIZE, 1)
        if not np.array_equal(probe.meta["file"], busi.meta["file"]):
            raise DataError("the BUSI folder changed while it was read (its files differ between two loads); "
                            "run shared_busi_split again")
        match = match_busi_to_breastmnist(probe, breastmnist)
        if verbose:
            print(match.summary())
        return {"split": match.split, "files": np.asarray(busi.meta["file"]).astype(str),
                "matched": match.matched, "score": match.score}

    def save(path: Path, result: dict[str, np.ndarray]) -> None:
        save_npz(path, **result)

    result = load_or_make(config, make, kind="splits", suffix=".npz", save=save, load=load_npz, enabled=cache,
                          verbose=verbose)
    if not np.array_equal(result["files"].astype(str), np.asarray(busi.meta["file"]).astype(str)):
        raise DataError("the cached BUSI split lists other files than the BUSI folder holds; call "
                        "shared_busi_split(..., cache=False) to remake it")
    out = busi.subset(np.arange(len(busi)), name="busi-shared-split")
    out.split = result["split"].astype("<U5")
    matched = result["matched"].astype(np.int64)
    out.meta["breastmnist_split"] = np.asarray(breastmnist.split)[matched].astype("<U5")
    out.meta["breastmnist_index"] = np.asarray(breastmnist.meta["index"])[matched].astype(np.int64)
    out.meta["breastmnist_score"] = result["score"].astype(np.float32)
    return out
