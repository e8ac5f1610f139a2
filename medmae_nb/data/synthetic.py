"""A procedural breast-ultrasound phantom: the default data of every chapter, made on the fly with no download.

This is a teaching phantom, not a clinical simulator. It borrows the look of a B-mode breast scan (speckle, skin
line, tissue layers, Cooper's ligaments, depth attenuation) and the BI-RADS-like descriptors radiologists use for
masses (shape, orientation, margin, posterior feature, internal echo, halo, calcifications), but the physics is a
cartoon and the descriptor distributions are invented. Nothing learned on it says anything about real patients;
it gives the book a task with known ground truth, lesion masks and a difficulty knob.

How an image is made (``phantom_steps`` returns each stage for one image):

1. ``speckle``: complex white noise shaped in Fourier space by an anisotropic point spread function (longer
   laterally than axially), plus a small coherent part; its envelope is Rician, close to Rayleigh. Its contrast is
   then lowered (``speckle``, default :data:`SPECKLE`) as in a scan shrunk from a larger one, where each pixel
   averages several grains.
2. ``layers``: an echogenicity map (mean echo amplitude) with a dark near field, a bright skin line, 2 to 4
   tissue layers with wavy boundaries, patchy glandular texture and curved bright Cooper's ligaments.
3. ``mimics``: lesion look-alikes: dark oval fat lobules and acoustic shadow columns (mostly in normal images).
4. ``lesion_shape`` / ``lesion``: for benign and malignant images, a hypoechoic mass whose outline is a radial
   function r(theta) (low harmonics for irregular shape; high harmonics, polygon corners and spikes for the
   margin), with internal heterogeneity and an optional echogenic halo.
5. ``posterior``: a brighter (enhancement) or darker (shadowing) column below the mass.
6. ``attenuation``: depth attenuation with imperfect time-gain compensation and lateral fall-off.
7. ``final``: map times speckle plus point-like calcifications, log-compressed, with random gain and contrast,
   clipped to ``[0, 1]``.

Speckle multiplies the map instead of being convolved with it, so edges stay sharper than in a real scan; the
trade buys one FFT per image instead of two.

Benign and malignant masses differ only in the distributions of their descriptors, which overlap more as
``difficulty`` grows; normal images hold mimics, so "is there a dark blob" does not solve the task.

Images are generated in chunks whose random numbers come from ``(seed, stream, chunk index)`` only, so the first
``k`` images of ``make_phantom(n, seed=s)`` are the same for every ``n >= k``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..cache import load_npz, load_or_make, save_npz
from .base import SPLITS, DataError, ImageDataset

CLASS_NAMES = ("normal", "benign", "malignant")
BINARY_CLASS_NAMES = ("malignant", "normal or benign")  # BreastMNIST's order: 0 = malignant
MARGIN_TYPES = ("circumscribed", "microlobulated", "angular", "spiculated")
STEP_NAMES = ("speckle", "layers", "mimics", "lesion_shape", "lesion", "posterior", "attenuation", "final")

# Bump whenever the pictures change, so cached data sets made by older code are never reused.
GENERATOR_VERSION = 3
MIN_SIZE, MAX_SIZE = 32, 256
DIFFICULTY_SCALE = 0.45  # internal overlap at difficulty 1 (the calibrated default)
# Speckle contrast in the log image. 1 is fully developed speckle at one grain per pixel, which at 64 px left
# about 4x the pixel-scale variance of BUSI shrunk to 64 px (where each pixel averages several grains) and buried
# the structure that masked-image pre-training should learn. At 0.3 the phantom matches BUSI at 64 px: pixel-scale
# residual (image minus a 1-px Gaussian blur) std 0.035 vs 0.033, lag-1 autocorrelation of the 2-px residual 0.79
# vs 0.80 laterally and 0.38 vs 0.37 axially (speckle 1.0: 0.072, 0.69, 0.23). `python -m medmae_nb.bench texture`
# prints the table.
SPECKLE = 0.3
LESION_RADIUS_FRAC = (0.045, 0.22)  # log-uniform lesion radius as a fraction of the image side
_CHUNK_PIXELS = 2**18  # pixels per chunk: 64 images at 64 px, small enough to stay in cache
_N_ANGLES = 256  # resolution of the r(theta) lookup table
_GRID = 8  # low-resolution grid of the smooth texture fields
_N_LIGAMENTS, _N_LOBULES, _N_SPIKES, _MAX_CALC = 3, 2, 10, 8
_TAU = 2 * math.pi


def check_image_size(image_size: int) -> int:
    """Returns ``image_size`` as an int, or raises ``DataError`` unless it is a multiple of 8 in 32..256."""
    if isinstance(image_size, bool) or int(image_size) != image_size:
        raise DataError(f"image_size must be an integer, got {image_size!r}")
    s = int(image_size)
    if not MIN_SIZE <= s <= MAX_SIZE or s % 8:
        raise DataError(
            f"image_size must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} (e.g. 32, 64, 128), got {s}"
        )
    return s


@functools.cache
def _upsampler(size: int) -> np.ndarray:
    """``(size, _GRID)`` weights that smoothly interpolate a coarse grid of values onto ``size`` pixels."""
    x = (np.arange(size) + 0.5) / size
    centres = (np.arange(_GRID) + 0.5) / _GRID
    w = np.exp(-0.5 * ((x[:, None] - centres[None, :]) * _GRID / 0.8) ** 2)
    # Unit row norm keeps the interpolated field close to unit variance, like the coarse noise.
    return (w / np.sqrt((w**2).sum(1, keepdims=True))).astype(np.float32)


@functools.cache
def _psf_filter(size: int) -> np.ndarray:
    """Fourier transfer function that turns white int8 noise into unit-power speckle.

    The point spread function is a Gaussian longer laterally (x) than axially (y), as for a linear array, scaled by
    the square root of the image size so that larger images show more, slightly larger speckle grains. The scale
    folds in the FFT's ``1/S**2`` and the variance of uniform int8 noise, so the complex field has
    ``E|z|**2 = 1`` and its envelope ``|z|`` is Rayleigh distributed (each pixel sums S**2 terms, so it is
    Gaussian however the noise is distributed).
    """
    scale = math.sqrt(size / 64)
    sx, sy = 1.4 * scale, 0.7 * scale  # PSF standard deviations in pixels
    k = np.fft.fftfreq(size)
    h = np.exp(-2 * math.pi**2 * ((k[None, :] * sx) ** 2 + (k[:, None] * sy) ** 2))
    h *= size / np.sqrt((h**2).mean() * 2 * (256**2 - 1) / 12)
    return h.astype(np.float32)


def _smooth_field(coarse: np.ndarray, size: int) -> np.ndarray:
    """Interpolates ``(m, _GRID, _GRID)`` coarse noise onto ``(m, size, size)`` with two small matrix products."""
    u = _upsampler(size)
    return u @ coarse @ u.T


def _draw(
    rng: np.random.Generator, m: int, size: int, difficulty: float, cum_probs: np.ndarray, label: int | None
) -> dict[str, np.ndarray]:
    """Draws every random number of a chunk of ``m`` images.

    All variates are drawn for every image whatever its class, in a fixed order, so forcing a label (as
    ``phantom_steps`` does) changes only how they are mapped, never which numbers come out of the stream.
    """
    # Calibrated in chapter 00: at difficulty 1 a from-scratch CNN is clearly imperfect with 20 labels per class
    # and clearly better with 1000 (see the README for the measured figures).
    d = DIFFICULTY_SCALE * difficulty
    u = rng.uniform
    p: dict[str, np.ndarray] = {}
    lab = np.minimum(np.searchsorted(cum_probs, rng.random(m), side="right"), 2)
    p["label"] = np.full(m, label) if label is not None else lab
    # Tissue: skin, layers (boundary k separates layer k from k+1), texture, ligaments.
    p["skin_y"], p["skin_amp"] = u(0.025, 0.06, m), u(1.8, 3.0, m)
    p["n_layers"] = rng.integers(2, 5, m)
    p["bound"] = np.stack([u(0.14, 0.32, m), u(0.5, 0.68, m), u(0.76, 0.92, m)], 1)
    p["level"] = np.stack([u(0.25, 0.5, m), u(0.9, 1.4, m), u(0.25, 0.5, m), u(0.45, 0.75, m)], 1)
    p["wave_amp"], p["wave_freq"], p["wave_phase"] = u(0, 0.03, (m, 3, 2)), u(0.5, 3, (m, 3, 2)), u(0, _TAU, (m, 3, 2))
    p["tex"], p["tex_strength"] = rng.standard_normal((m, _GRID, _GRID), np.float32), u(0.15, 0.35, m)
    shape = (m, _N_LIGAMENTS)
    p["lig_on"], p["lig_x"], p["lig_y"] = u(0, 1, shape) < 0.85, u(0, 1, shape), u(0, 1, shape)
    p["lig_len"], p["lig_curv"], p["lig_slope"] = u(0.12, 0.4, shape), u(-1.2, 1.2, shape), u(-0.7, 0.7, shape)
    p["lig_amp"] = u(0.8, 2.0, shape)
    # Acquisition: attenuation, time-gain compensation, image quality.
    p["alpha"], p["tgc_comp"], p["tgc"] = u(0.8, 2.2, m), u(0.55, 1.1, m), rng.normal(0, 0.12, (m, 5))
    p["vignette"], p["dyn_range"], p["coherent"] = u(0, 0.35, m), u(4.5, 6.5, m), u(0.4, 1.0, m)
    p["gain"], p["contrast"] = rng.normal(0, 0.05, m).astype(np.float32), u(0.8, 1.2, m).astype(np.float32)
    # Mimics: fat lobules and shadow columns, more often in normal images.
    cls = p["label"]
    p_lob = np.array([min(0.9, 0.75 * d), min(0.5, 0.35 * d), min(0.35, 0.25 * d)])[cls]
    p_shadow = np.array([min(0.6, 0.35 * d), min(0.4, 0.25 * d), min(0.3, 0.15 * d)])[cls]
    shape = (m, _N_LOBULES)
    p["lob_on"] = u(0, 1, shape) < p_lob[:, None] * np.array([1.0, 0.5])
    p["lob_x"], p["lob_y"], p["lob_a"] = u(0.1, 0.9, shape), u(0, 1, shape), u(0.04, 0.13, shape)
    p["lob_ratio"], p["lob_level"] = u(0.35, 0.7, shape), u(0.12, 0.45, shape)
    p["shadow_on"], p["shadow_x"], p["shadow_w"] = u(0, 1, m) < p_shadow, u(0.1, 0.9, m), u(0.01, 0.05, m)
    p["shadow_y"], p["shadow_amp"] = u(0.15, 0.6, m), u(0.4, 0.8, m)
    # Lesion geometry and appearance (drawn for every image; used only for benign and malignant ones).
    lo, hi = LESION_RADIUS_FRAC
    p["radius"] = np.exp(u(math.log(lo), math.log(hi), m))
    p["cx"], p["cy"], p["tilt"] = u(0.2, 0.8, m), u(0.3, 0.68, m), rng.normal(0, 0.2, m)
    p["echo"], p["aspect_u"] = u(0.02, 0.2, m), u(0, 1, m)
    p["harm_lo"] = (rng.standard_normal((m, 3)) + 1j * rng.standard_normal((m, 3))) / 2
    p["harm_hi"] = (rng.standard_normal((m, 7)) + 1j * rng.standard_normal((m, 7))) / 2
    p["poly_k"], p["poly_phase"] = rng.integers(4, 8, m), u(0, _TAU, m)
    shape = (m, _N_SPIKES)
    p["spike_theta"], p["spike_h"], p["spike_w"] = u(0, _TAU, shape), u(0.4, 1.0, shape), u(0.04, 0.1, shape)
    p["edge_u"], p["het_noise"] = u(0, 1, m), rng.standard_normal((m, _GRID, _GRID), np.float32)
    p["post_amp"], p["post_decay"], p["halo_w"], p["halo_amp"] = (
        u(0.4, 0.8, m),
        u(0.2, 0.8, m),
        u(1, 2.5, m),
        u(0.5, 1.0, m),
    )
    p["calc_u"], p["calc_r"], p["calc_theta"] = u(0, 1, m), u(0, 1, (m, _MAX_CALC)), u(0, _TAU, (m, _MAX_CALC))
    p["calc_amp"] = u(2.5, 3.5, (m, _MAX_CALC))
    # Descriptor tendencies t in [0, 1]: 0 benign-looking, 1 malignant-looking. Class means 0.3 / 0.7 with a
    # +-0.15 jitter never overlap; difficulty adds a shared and a per-descriptor Gaussian spread that makes them.
    mu = np.array([0.0, 0.3, 0.7])[cls]
    jitter, shared, own = u(-0.15, 0.15, (m, 7)), rng.standard_normal((m, 1)), rng.standard_normal((m, 7))
    t = np.clip(mu[:, None] + jitter + d * (0.18 * shared + 0.2 * own), 0, 1)
    p["t"] = t  # columns: irregularity, orientation, margin, posterior, heterogeneity, halo, calcifications
    # Uniform bytes are five times cheaper than Gaussian draws and just as good after the FFT (see _psf_filter).
    p["noise"] = np.frombuffer(rng.bytes(m * size * size * 2), np.int8).reshape(m, size, size, 2)
    return p


def _descriptors(p: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Maps tendencies and uniforms to the BI-RADS-like descriptors; zero / False for normal images."""
    les = p["label"] > 0
    t = p["t"]
    out = {
        "shape_irregularity": 0.03 + 0.35 * t[:, 0],
        "taller_than_wide": t[:, 1] > 0.62,
        "margin": t[:, 2],
        "margin_type": np.digitize(t[:, 2], [0.35, 0.55, 0.75]),
        "posterior": np.where(t[:, 3] < 0.4, 1, np.where(t[:, 3] > 0.6, -1, 0)),
        "heterogeneity": 0.05 + 0.6 * t[:, 4],
        "halo": t[:, 5] > 0.65,
        # Small lesions hold fewer dots: at most one per pixel of radius.
        "n_calcifications": np.minimum(
            np.where(t[:, 6] > 0.6, 1 + np.floor(p["calc_u"] * 18 * (t[:, 6] - 0.6)), 0),
            np.minimum(_MAX_CALC, np.floor(p["radius"] * size)),
        ),
    }
    return {k: np.where(les, v, 0).astype(v.dtype if v.dtype == bool else np.float32) for k, v in out.items()}


@functools.cache
def _harmonics(orders: tuple[int, ...]) -> np.ndarray:
    """``(2 * len(orders), _N_ANGLES)`` table of cos(k theta) then -sin(k theta), so Re(c e^{ik theta}) is a matmul."""
    theta = np.linspace(0, _TAU, _N_ANGLES, endpoint=False)
    k = np.asarray(orders)[:, None]
    return np.concatenate([np.cos(k * theta), -np.sin(k * theta)])


def _fourier(coef: np.ndarray, orders: tuple[int, ...]) -> np.ndarray:
    """Evaluates sum_k Re(coef_k e^{ik theta}) for complex ``coef`` ``(m, K)`` on the angle grid: ``(m, _N_ANGLES)``."""
    return np.concatenate([coef.real, coef.imag], 1) @ _harmonics(orders)


def _radius_table(p: dict[str, np.ndarray], desc: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Outline radius r(theta) in pixels (of the aspect-normalised lesion frame) on ``_N_ANGLES`` angles."""
    theta = np.linspace(0, _TAU, _N_ANGLES, endpoint=False)
    margin = desc["margin"][:, None]
    shape = 1 + desc["shape_irregularity"][:, None] * _fourier(p["harm_lo"], (2, 3, 4))
    # Microlobulation grows first, then polygon corners (angular), then spikes (spiculated).
    shape += 0.08 * np.clip((margin - 0.3) / 0.3, 0, 1) * _fourier(p["harm_hi"], tuple(range(8, 15)))
    k = p["poly_k"][:, None]
    sector = np.mod(theta[None, :] - p["poly_phase"][:, None], _TAU / k) - math.pi / k
    polygon = np.cos(math.pi / k) / np.cos(sector)
    w_poly = 0.7 * np.clip((margin - 0.5) / 0.3, 0, 1)
    shape *= 1 + w_poly * (polygon - 1)
    n_spikes = np.where(margin[:, 0] > 0.7, 3 + np.round((margin[:, 0] - 0.7) * 25), 0)
    on = np.arange(_N_SPIKES)[None, :] < n_spikes[:, None]
    dtheta = np.mod(theta[None, None, :] - p["spike_theta"][:, :, None] + math.pi, _TAU) - math.pi
    spikes = np.clip(1 - np.abs(dtheta) / p["spike_w"][:, :, None], 0, None) ** 2
    shape += ((on * p["spike_h"])[:, :, None] * spikes).sum(1) * np.clip((margin - 0.6) / 0.4, 0, 1) * 1.2
    # A floor of one pixel keeps the pixel nearest the centre inside the mask even for the tiniest lesions.
    return np.maximum(p["radius"][:, None] * size * np.clip(shape, 0.45, 2.5), 1.0).astype(np.float32)


def _soft_step(d: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """In place: ``clip(d * scale + 0.5, 0, 1)``, a ramp of width ``1 / scale`` (cheaper than a sigmoid)."""
    d *= scale
    d += 0.5
    return np.clip(d, 0.0, 1.0, out=d)


def _gauss_line(d: np.ndarray, scale: float, amp: np.ndarray) -> np.ndarray:
    """In place: ``amp * exp(-0.5 * (d * scale) ** 2)``, the profile of a thin bright line at distance ``d``."""
    d *= scale
    np.square(d, out=d)
    d *= -0.5
    np.exp(d, out=d)
    d *= amp
    return d


def _render(
    p: dict[str, np.ndarray], size: int, steps: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Draws a chunk from its random numbers; fills ``steps`` with the intermediate stages when given.

    Full-image arrays are updated in place wherever possible: at 64 px a chunk is small enough to stay in cache, and
    avoiding temporaries is what keeps the generator above 1000 images per second on one core.
    """
    m = len(p["label"])
    f32 = np.float32
    xs = ((np.arange(size) + 0.5) / size).astype(f32)
    Y = xs[None, :, None]  # (1, S, 1) depth in image fractions; lateral profiles are (m, 1, S)
    px = size / 64  # widths in pixels are given at 64 px and scale with the image
    col = lambda a: np.asarray(a, f32)[:, None, None]  # noqa: E731  per-image value -> (m, 1, 1)
    rows = lambda a: np.asarray(a, f32)[:, :, None]  # noqa: E731  per-image depth profile -> (m, S, 1)
    cols = lambda a: np.asarray(a, f32)[:, None, :]  # noqa: E731  per-image lateral profile -> (m, 1, S)

    def record(name: str, a: np.ndarray) -> None:
        if steps is not None:
            steps[name] = a.copy()

    # 1. Speckle: white complex noise shaped by the PSF in Fourier space; its envelope multiplies the echo map.
    field = p["noise"].astype(f32).view(np.complex64)[..., 0]
    field *= _psf_filter(size)
    field = np.fft.ifft2(field)
    # A coherent part k turns Rayleigh into Rician statistics (partly developed speckle): fewer black pixels.
    field += col(p["coherent"])
    speckle = np.abs(field).astype(f32)
    speckle *= col(1 / np.sqrt(1 + p["coherent"] ** 2))
    if p["speckle"] != 1.0:
        # A pixel of a scan shrunk from ~500 px averages several speckle grains, which lowers the speckle's
        # contrast; a power below 1 does that in the log-compressed display (log(s**g) = g log s), and the
        # division keeps the mean echo level where it was.
        np.power(speckle, f32(p["speckle"]), out=speckle)
        speckle /= speckle.mean(axis=(1, 2), keepdims=True)
    record("speckle", speckle)

    # 2. Layers: a dark near field, then soft steps between tissue levels at wavy boundaries, patchy texture,
    # the skin line and Cooper's ligaments (short bright arcs in the subcutaneous fat).
    wave = p["wave_amp"][..., None] * np.sin(_TAU * p["wave_freq"][..., None] * xs + p["wave_phase"][..., None])
    bound = (p["bound"][..., None] + wave.sum(2)).astype(f32)  # (m, 3, S)
    bound[np.arange(3)[None, :] >= p["n_layers"][:, None] - 1] = 9.0  # unused boundaries lie below the image
    skin = cols(p["skin_y"][:, None] + 0.3 * wave[:, 0, 0])
    lev = p["level"].astype(f32)
    echo = _soft_step(Y - skin, size / (1.5 * px))
    echo *= col(lev[:, 0] - 0.1)
    echo += 0.1
    for k in range(3):
        echo += _soft_step(Y - bound[:, k, None, :], size / (2.5 * px)) * col(lev[:, k + 1] - lev[:, k])
    tex = _smooth_field(p["tex"], size)
    tex *= col(p["tex_strength"])
    echo *= np.exp(tex, out=tex)
    echo += _gauss_line(Y - skin, size / (0.7 * px + 0.3), col(p["skin_amp"]))
    lig_y = p["skin_y"][:, None] + 0.02 + p["lig_y"] * (p["bound"][:, :1] + 0.06 - p["skin_y"][:, None])
    dx = xs[None, None, :] - p["lig_x"][..., None]  # (m, L, S)
    curve = (lig_y[..., None] + p["lig_curv"][..., None] * dx**2 + p["lig_slope"][..., None] * dx).astype(f32)
    amp = (p["lig_on"] * p["lig_amp"])[..., None] * np.clip((p["lig_len"][..., None] - np.abs(dx)) * 20, 0, 1)
    for j in range(_N_LIGAMENTS):
        echo += _gauss_line(Y - curve[:, j, None, :], size / (0.8 * px + 0.2), cols(amp[:, j]))
    record("layers", echo)

    # 3. Mimics: dark oval fat lobules with soft edges, and acoustic shadow columns cast from above.
    for j in range(_N_LOBULES):
        if not p["lob_on"][:, j].any():
            continue
        a, b = p["lob_a"][:, j], p["lob_a"][:, j] * p["lob_ratio"][:, j]
        y0 = p["skin_y"] + 0.05 + p["lob_y"][:, j] * (0.72 - p["skin_y"])
        q = cols(((xs - p["lob_x"][:, j, None]) / a[:, None]) ** 2) + rows(((xs - y0[:, None]) / b[:, None]) ** 2)
        np.sqrt(q, out=q)
        inside = _soft_step(np.subtract(1, q, out=q), col(b * size / (1.5 * px)))
        inside *= col(p["lob_on"][:, j])
        echo += inside * (col(p["lob_level"][:, j]) - echo)
    shadow_x = _soft_step(p["shadow_w"][:, None] - np.abs(xs - p["shadow_x"][:, None]), size / (1.5 * px))
    shadow_y = _soft_step(xs - p["shadow_y"][:, None], size / (2 * px)) * (p["shadow_on"] * p["shadow_amp"])[:, None]
    echo *= 1 - rows(shadow_y) * cols(shadow_x)
    record("mimics", echo)

    # 4. Lesion: polar coordinates in a rotated frame stretched to the lesion's aspect ratio, then the r(theta)
    # table. Only pixels near a lesion need the (slow) arctangent and look-up, so they are gathered first.
    desc = _descriptors(p, size)
    les = np.flatnonzero(p["label"] > 0)
    aspect = np.where(desc["taller_than_wide"], 0.6 + 0.3 * p["aspect_u"], 1.15 + 0.65 * p["aspect_u"])
    sq = np.sqrt(aspect)
    table = _radius_table(p, desc, size)
    cy = np.maximum(p["cy"], p["skin_y"] + 0.6 * p["radius"])
    cos, sin = np.cos(p["tilt"]), np.sin(p["tilt"])
    ddx, ddy = (xs - p["cx"][:, None]) * size, (xs - cy[:, None]) * size  # (m, S) lateral and depth offsets
    us = cols((ddx * cos[:, None] / sq[:, None])[les]) + rows((ddy * sin[:, None] / sq[:, None])[les])
    vs = cols((-ddx * sin[:, None] * sq[:, None])[les]) + rows((ddy * cos[:, None] * sq[:, None])[les])
    edge = 0.5 + 1.5 * desc["margin"] * p["edge_u"]  # indistinct margins blur the edge
    halo_w = np.where(desc["halo"], p["halo_w"] * math.sqrt(px), 0)
    reach = (table.max(1) + edge + halo_w + 1)[les]
    near = np.square(us)
    near += np.square(vs)
    l_idx, i_idx, j_idx = np.nonzero(near < col(reach**2))
    n_idx = les[l_idx]
    u_near, v_near = us[l_idx, i_idx, j_idx], vs[l_idx, i_idx, j_idx]
    a_idx = (np.arctan2(v_near, u_near) * (_N_ANGLES / _TAU)).astype(np.int64) % _N_ANGLES
    d_out = np.sqrt(u_near**2 + v_near**2) - table[n_idx, a_idx]  # > 0 outside the outline, in pixels
    mask = np.zeros((m, size, size), bool)
    mask[n_idx, i_idx, j_idx] = d_out < 0
    record("lesion_shape", mask)
    inside = _soft_step(-d_out, 1 / edge[n_idx])
    het = _smooth_field(p["het_noise"][les], size)[l_idx, i_idx, j_idx]
    interior = p["echo"][n_idx] * np.exp(desc["heterogeneity"][n_idx] * het)
    hw = halo_w[n_idx]
    halo = np.clip(1 - np.abs(d_out - hw / 2) / (hw / 2 + 0.5), 0, 1) * np.where(desc["halo"], p["halo_amp"], 0)[n_idx]
    around = echo[n_idx, i_idx, j_idx]
    echo[n_idx, i_idx, j_idx] = around * (1 - inside) * (1 + halo) + interior * inside
    record("lesion", echo)

    # 5. Posterior feature: a column under the lesion, as wide as the lesion, fading with depth.
    half_w = p["radius"] * size * sq * 0.9
    post_x = _soft_step(half_w[:, None] - np.abs(xs - p["cx"][:, None]) * size, 1 / (2 * px))
    start = (cy + p["radius"] / sq * 0.8)[:, None]
    post_y = _soft_step((xs - start) * size, 1 / (2 * px))
    post_y *= np.exp(-np.maximum(xs - start, 0) / p["post_decay"][:, None])
    # Enhancement is drawn half as strong again as shadowing; in log display both then read about as clearly.
    post_y *= (desc["posterior"] * p["post_amp"] * np.where(desc["posterior"] > 0, 1.5, 1))[:, None]
    echo *= 1 + rows(post_y) * cols(post_x)
    record("posterior", echo)

    # 6. Attenuation: exponential loss with depth, partly undone by a time-gain compensation that is never perfect.
    tgc = np.stack([np.interp(xs, np.linspace(0, 1, 5), row) for row in p["tgc"]])
    echo *= rows(np.exp(-(p["alpha"] * (1 - p["tgc_comp"]))[:, None] * xs + tgc))
    echo *= cols(1 - p["vignette"][:, None] * (2 * xs - 1) ** 4)
    record("attenuation", echo)

    # 7. Echo amplitude = map x speckle, plus calcifications: bright points scattered inside the outline.
    amp = np.multiply(echo, speckle, out=speckle)
    cn, ck = np.nonzero(np.arange(_MAX_CALC)[None, :] < desc["n_calcifications"][:, None])
    if len(cn):
        ct = p["calc_theta"][cn, ck]
        r = np.sqrt(p["calc_r"][cn, ck]) * 0.75 * table[cn, (ct * (_N_ANGLES / _TAU)).astype(np.int64) % _N_ANGLES]
        cu, cv = r * np.cos(ct) * sq[cn], r * np.sin(ct) / sq[cn]
        cj = np.clip(p["cx"][cn] * size + cu * cos[cn] - cv * sin[cn], 0, size - 1).astype(np.int64)
        ci = np.clip(cy[cn] * size + cu * sin[cn] + cv * cos[cn], 0, size - 1).astype(np.int64)
        np.add.at(amp, (cn, ci, cj), p["calc_amp"][cn, ck])

    # 8. Log compression into the display range, then the operator's gain and contrast:
    # clip((0.62 + log(amp) / D - 0.5) * contrast + 0.5 + gain).
    amp += 1e-4
    img = np.log(amp, out=amp)
    img *= col(p["contrast"] / p["dyn_range"])
    img += col(0.12 * p["contrast"] + 0.5 + p["gain"])
    np.clip(img, 0, 1, out=img)
    record("final", img)

    is_les = p["label"] > 0
    meta = {
        "lesion_radius_px": np.where(is_les, p["radius"] * size, 0).astype(f32),
        "lesion_area_frac": mask.mean((1, 2)).astype(f32),
        "lesion_x": np.where(is_les, p["cx"] * size, -1).astype(f32),
        "lesion_y": np.where(is_les, cy * size, -1).astype(f32),
        "lesion_echo": np.where(is_les, p["echo"], 0).astype(f32),
        **desc,
        "has_mimic": p["lob_on"].any(1) | p["shadow_on"],
        "gain": p["gain"],
        "contrast": p["contrast"],
    }
    for key in ("margin_type", "posterior", "n_calcifications"):
        meta[key] = meta[key].astype(np.int64)
    return img, mask, meta


def _check(n: int, image_size: int, seed: int, difficulty: float, class_probs: Sequence[float],
           speckle: float = 1.0) -> np.ndarray:
    """Validates the arguments; returns the cumulative class probabilities."""
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    check_image_size(image_size)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if not math.isfinite(difficulty) or difficulty < 0:
        raise DataError(f"difficulty must be a finite number >= 0 (0 = well separated, 1 = default), got {difficulty}")
    if isinstance(speckle, bool) or not isinstance(speckle, (int, float)) or not 0 <= speckle <= 2:
        raise DataError(f"speckle must be a number in [0, 2] (1 = fully developed speckle), got {speckle!r}")
    probs = np.asarray(class_probs, float)
    if probs.shape != (3,) or (probs < 0).any() or probs.sum() <= 0:
        raise DataError(f"class_probs must be 3 non-negative weights for {CLASS_NAMES}, got {class_probs!r}")
    return np.cumsum(probs / probs.sum())[:2]


def _generate(
    n: int,
    image_size: int,
    seed: int,
    difficulty: float,
    class_probs: Sequence[float],
    stream: int,
    label: int | None = None,
    steps: dict[str, np.ndarray] | None = None,
    speckle: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Images, 3-class labels, masks and meta for ``n`` images; chunk ``c`` uses only ``(seed, stream, c)``."""
    cum = _check(n, image_size, seed, difficulty, class_probs, speckle)
    size = check_image_size(image_size)
    chunk = max(4, _CHUNK_PIXELS // size**2)
    parts = []
    for c in range(-(-n // chunk)):
        rng = np.random.default_rng([int(seed), int(stream), c])
        # A whole chunk is always drawn, so the random stream (and image i) does not depend on n.
        p = _draw(rng, chunk, size, float(difficulty), cum, label)
        p["speckle"] = speckle
        img, mask, meta = _render(p, size, steps if c == 0 else None)
        k = min(chunk, n - c * chunk)
        parts.append((img[:k], p["label"][:k], mask[:k], {key: v[:k] for key, v in meta.items()}))
    if not parts:  # n == 0: render one empty chunk's worth of nothing with the right shapes and keys
        p = _draw(np.random.default_rng([int(seed), int(stream), 0]), 1, size, float(difficulty), cum, label)
        p["speckle"] = speckle
        img, mask, meta = _render(p, size)
        parts.append((img[:0], p["label"][:0], mask[:0], {key: v[:0] for key, v in meta.items()}))
    images = np.concatenate([q[0] for q in parts])[:, None]
    labels = np.concatenate([q[1] for q in parts]).astype(np.int64)
    masks = np.concatenate([q[2] for q in parts])
    meta = {key: np.concatenate([q[3][key] for q in parts]) for key in parts[0][3]}
    return images, labels, masks, meta


def _to_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray,
    meta: dict[str, np.ndarray],
    binary: bool,
    name: str,
    split: np.ndarray | None = None,
) -> ImageDataset:
    meta = {"label3": labels, **meta}
    if binary:
        labels = np.where(labels == 2, 0, 1)
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=BINARY_CLASS_NAMES if binary else CLASS_NAMES,
        masks=masks,
        split=split,
        meta=meta,
        name=name,
    )


def _cached(config: dict, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Loads the arrays cached for ``config`` or makes and saves them; keys are the full config plus the version."""
    return load_or_make({**config, "version": GENERATOR_VERSION}, make, kind="phantom", suffix=".npz",
                        save=lambda path, arrays: save_npz(path, **arrays), load=load_npz)


def _pack(images, labels, masks, meta, split=None) -> dict[str, np.ndarray]:
    out = {"images": images, "labels": labels, "masks": masks, **{f"meta_{k}": v for k, v in meta.items()}}
    if split is not None:
        out["split"] = split
    return out


def _unpack(arrays: dict[str, np.ndarray]) -> tuple:
    meta = {k[5:]: v for k, v in arrays.items() if k.startswith("meta_")}
    return arrays["images"], arrays["labels"], arrays["masks"], meta, arrays.get("split")


def make_phantom(
    n: int,
    image_size: int = 64,
    seed: int = 0,
    difficulty: float = 1.0,
    class_probs: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    binary: bool = False,
    cache: bool = False,
    speckle: float = SPECKLE,
) -> ImageDataset:
    """Makes ``n`` phantom breast-ultrasound images with labels, lesion masks and the descriptors used to draw them.

    Args:
        n: number of images.
        image_size: side in pixels, a multiple of 8 from 32 to 256. Lesion sizes are fractions of the side, so the
            same seed gives the same kinds of scene at every size (not the same pixels).
        seed: non-negative seed; the same seed and arguments give identical arrays.
        difficulty: overlap of the classes: 0 keeps benign and malignant descriptors apart and leaves out mimics,
            1 (default) gives a hard but learnable task, larger values overlap more.
        class_probs: probabilities of normal, benign and malignant (normalised if they do not sum to 1).
        binary: if True, labels follow BreastMNIST: 0 = malignant, 1 = normal or benign; ``meta["label3"]`` keeps
            the 3-class label.
        cache: if True, load from / save to the data cache (``MEDMAE_CACHE``) under a key made of all arguments.
        speckle: speckle contrast in the log-compressed image: 1 is fully developed speckle, one grain per pixel
            or so; lower values emulate a scan shrunk from a larger one, where each pixel averages several grains
            (see ``SPECKLE`` for the default and how it was chosen); 0 removes speckle.

    Returns:
        An ``ImageDataset`` named ``phantom-<size>`` with float32 images ``(n, 1, S, S)`` in ``[0, 1]``, bool
        masks ``(n, S, S)`` (all False for normal images), no split, and ``meta`` holding per-image arrays:
        ``label3``, ``lesion_radius_px`` (0 if normal), ``lesion_area_frac``, ``lesion_x``/``lesion_y`` (centre in
        pixels, -1 if normal), ``lesion_echo``, ``shape_irregularity``, ``taller_than_wide``, ``margin`` (0
        circumscribed .. 1 spiculated), ``margin_type`` (index into ``MARGIN_TYPES``), ``posterior`` (+1
        enhancement, -1 shadowing, 0 none), ``heterogeneity``, ``halo``, ``n_calcifications``, ``has_mimic``,
        ``gain`` and ``contrast``.

    Raises:
        DataError: for a bad size, seed, difficulty, class_probs or speckle.

    Example:
        >>> ds = make_phantom(8, image_size=32, seed=1)
        >>> ds.images.shape, ds.images.dtype, ds.class_names
        ((8, 1, 32, 32), dtype('float32'), ('normal', 'benign', 'malignant'))
    """
    _check(n, image_size, seed, difficulty, class_probs, speckle)
    config = dict(n=n, image_size=image_size, seed=seed, difficulty=difficulty, class_probs=list(class_probs),
                  speckle=float(speckle))

    def make() -> dict[str, np.ndarray]:
        return _pack(*_generate(n, image_size, seed, difficulty, class_probs, stream=0, speckle=speckle))

    arrays = _cached(config, make) if cache else make()
    images, labels, masks, meta, _ = _unpack(arrays)
    return _to_dataset(images, labels, masks, meta, binary, f"phantom-{int(image_size)}")


def make_phantom_splits(
    n_train: int,
    n_val: int,
    n_test: int,
    image_size: int = 64,
    seed: int = 0,
    difficulty: float = 1.0,
    binary: bool = False,
    cache: bool = False,
    speckle: float = SPECKLE,
) -> ImageDataset:
    """Makes train, validation and test phantom images in one dataset with ``split`` filled.

    Each split is drawn from its own random stream, so no test image is a copy of a training image; the train
    split equals ``make_phantom(n_train, ...)``. Classes are balanced in expectation. Arguments are as for
    ``make_phantom``.

    Example:
        >>> ds = make_phantom_splits(6, 2, 2, image_size=32)
        >>> len(ds.get_split("train")), len(ds.get_split("test"))
        (6, 2)
    """
    counts = (n_train, n_val, n_test)
    probs = (1 / 3, 1 / 3, 1 / 3)
    for k in counts:
        _check(k, image_size, seed, difficulty, probs, speckle)
    config = dict(counts=list(counts), image_size=image_size, seed=seed, difficulty=difficulty, splits=True,
                  speckle=float(speckle))

    def make() -> dict[str, np.ndarray]:
        parts = [_generate(k, image_size, seed, difficulty, probs, stream=i, speckle=speckle)
                 for i, k in enumerate(counts)]
        split = np.concatenate([np.full(k, s) for s, k in zip(SPLITS, counts)]).astype("<U5")
        cat = [np.concatenate([q[i] for q in parts]) for i in range(3)]
        meta = {key: np.concatenate([q[3][key] for q in parts]) for key in parts[0][3]}
        return _pack(*cat, meta, split)

    arrays = _cached(config, make) if cache else make()
    images, labels, masks, meta, split = _unpack(arrays)
    return _to_dataset(images, labels, masks, meta, binary, f"phantom-{int(image_size)}", split)


def phantom_steps(
    image_size: int = 64, seed: int = 0, label: int = 2, difficulty: float = 1.0, speckle: float = SPECKLE
) -> dict[str, np.ndarray]:
    """The stages of making one phantom image, for showing how it is built.

    It runs the same code as ``make_phantom`` with the class of image 0 forced to ``label``; if
    ``make_phantom(n, seed=seed)`` happens to give image 0 that class, its ``"final"`` stage is that very image.

    Args:
        image_size: side in pixels (multiple of 8, 32..256).
        seed: seed of the image.
        label: 0 normal, 1 benign, 2 malignant.
        difficulty: as for ``make_phantom``.

    Returns:
        ``{name: array}`` for the names in ``STEP_NAMES``, each ``(S, S)``: echogenicity maps (mean echo
        amplitude, about 1 for glandular tissue, not clipped) for ``layers``, ``mimics``, ``lesion``,
        ``posterior`` and ``attenuation``; the bool mask for ``lesion_shape``; the speckle envelope for
        ``speckle``; the displayed image in ``[0, 1]`` for ``final``.

    Example:
        >>> steps = phantom_steps(32, label=1)
        >>> list(steps)[:3], steps["final"].shape
        (['speckle', 'layers', 'mimics'], (32, 32))
    """
    if label not in (0, 1, 2):
        raise DataError(f"label must be 0 (normal), 1 (benign) or 2 (malignant), got {label!r}")
    steps: dict[str, np.ndarray] = {}
    _generate(1, image_size, seed, difficulty, (1 / 3, 1 / 3, 1 / 3), stream=0, label=label, steps=steps,
              speckle=speckle)
    return {k: steps[k][0] for k in STEP_NAMES}
