"""Figures in one book style: image grids with lesion outlines, curves with confidence bands, heat-map overlays.

Every helper draws with matplotlib and returns the figure; call :func:`show` to display and close it, so long
notebooks do not keep dozens of open figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
CLASS_COLORS = {"normal": "#2ca02c", "benign": "#1f77b4", "malignant": "#d62728"}


def set_style() -> None:
    """Applies the book's matplotlib style (called on import of this module)."""
    plt.rcParams.update({
        "figure.dpi": 150,
        "savefig.dpi": 150,
        "figure.figsize": (6.4, 4.0),
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
        "image.cmap": "gray",
        "axes.prop_cycle": plt.cycler(color=PALETTE),
    })


set_style()


def show(fig: plt.Figure | None = None) -> None:
    """Shows a figure and closes it."""
    fig = fig or plt.gcf()
    plt.show()
    plt.close(fig)


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    return img


def outline(ax: plt.Axes, mask: np.ndarray, color: str = "#ffdd00", lw: float = 1.0) -> None:
    """Draws the outline of a boolean mask on ``ax`` (nothing when the mask is empty)."""
    mask = np.asarray(mask, dtype=float)
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=[color], linewidths=lw)


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    masks: np.ndarray | None = None,
    ncols: int = 6,
    size: float = 1.6,
    suptitle: str | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> plt.Figure:
    """A grid of images ``(N, C, H, W)`` or ``(N, H, W)``, optionally with lesion-mask outlines and titles."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_gray(images[i]), vmin=vmin, vmax=vmax, interpolation="nearest")
        if masks is not None:
            outline(ax, masks[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def overlay(ax: plt.Axes, image: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None,
            alpha: float = 0.5, cmap: str = "inferno", title: str | None = None) -> None:
    """Draws ``image`` in gray with ``heat`` (same size, any scale) on top, and the lesion outline if given."""
    ax.imshow(_gray(image), vmin=0, vmax=1)
    heat = np.asarray(heat, dtype=float)
    span = np.ptp(heat)
    ax.imshow((heat - heat.min()) / (span if span > 0 else 1), cmap=cmap, alpha=alpha, interpolation="nearest")
    if mask is not None:
        outline(ax, mask, color="#00e5ff")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)


def curve_ci(ax: plt.Axes, x: Sequence[float], y: Sequence[float], low: Sequence[float] | None = None,
             high: Sequence[float] | None = None, label: str | None = None, color: str | None = None,
             marker: str = "o") -> None:
    """A line with markers and, when given, a shaded confidence band."""
    line, = ax.plot(x, y, marker=marker, label=label, color=color)
    if low is not None and high is not None:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def log_axis(ax: plt.Axes, which: str = "x") -> None:
    """A log-scaled axis with ticks at 1, 2 and 5 times each power of ten, labelled as plain numbers (10, 20, 50,
    100, …) instead of crowded ``3 × 10^1`` minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 10, 2.5, 1 — never "1.0" or 1e+01
    axis.set_minor_formatter(NullFormatter())


def budget_figure(sweeps: dict, title: str, chance: float, colors: dict[str, str] | None = None,
                  metric: str = "bal_acc", ylabel: str = "balanced accuracy (test)") -> plt.Figure:
    """Label-budget curves of several :class:`~medmae_nb.budgets.BudgetSweep` results: mean over seeds with its
    interval, collapsed runs as open circles, the constant predictor's level dotted. With a single budget the
    learners are drawn side by side so their intervals do not overlap."""
    colors = colors or {}
    if all(len(s.budgets) == 1 for s in sweeps.values()):
        return _single_budget_figure(sweeps, title, chance, colors, metric, ylabel)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for k, (name, s) in enumerate(sweeps.items()):
        cis = s.metrics[metric]
        x = [100 * b for b in s.budgets] if s.unit == "fraction" else list(s.budgets)
        if len(x) == 1:
            x = [b * 1.1 ** (k - (len(sweeps) - 1) / 2) for b in x]
        color = colors.get(name, PALETTE[k % len(PALETTE)])
        curve_ci(ax, x, [m.value for m in cis], [m.low for m in cis], [m.high for m in cis], label=name, color=color)
        for i, b in enumerate(x):
            for v, bad in zip(s.per_seed[metric][i], s.collapsed[i]):
                if bad:
                    ax.plot(b, v, "o", mfc="none", color=color, ms=9)
    ax.axhline(chance, color="gray", ls=":", label="chance (constant prediction)")
    fraction = next(iter(sweeps.values())).unit == "fraction"
    ax.set(xlabel="% of the labelled pool" if fraction else "labelled images per class", ylabel=ylabel, title=title,
           ylim=(0, 1))
    log_axis(ax)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _single_budget_figure(sweeps: dict, title: str, chance: float, colors: dict[str, str], metric: str,
                          ylabel: str) -> plt.Figure:
    """One budget: each learner's mean with its interval as an error bar, every seed's run as a small dot (open
    circles: collapsed runs), learners side by side."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.95 * len(sweeps) + 1.5), 4.0))
    for k, (name, s) in enumerate(sweeps.items()):
        ci = s.metrics[metric][0]
        color = colors.get(name, PALETTE[k % len(PALETTE)])
        ax.errorbar([k], [ci.value], yerr=[[ci.value - ci.low], [ci.high - ci.value]], fmt="o", color=color,
                    capsize=4, ms=7)
        for v, bad in zip(s.per_seed[metric][0], s.collapsed[0]):
            ax.plot(k + 0.18, v, "o", ms=9 if bad else 3, mfc="none" if bad else color, color=color, alpha=0.8)
    ax.axhline(chance, color="gray", ls=":", label="chance (constant prediction)")
    ax.plot([], [], "o", mfc="none", color="gray", ms=9, label="collapsed run")
    first = next(iter(sweeps.values()))
    budget = (f"{first.budgets[0]:g} labels per class" if first.unit == "per_class"
              else f"{100 * first.budgets[0]:g} % of the labelled pool")
    ax.set_xticks(range(len(sweeps)), list(sweeps), fontsize=7, rotation=25, ha="right")
    ax.set(ylabel=ylabel, title=f"{title}\n{budget}; dots: the seeds' runs", ylim=(0, 1))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def confusion_figure(sweeps: dict, class_names: Sequence[str], budget: int) -> plt.Figure:
    """Row-normalised confusion matrices at one budget, the seeds' runs pooled, one panel per learner."""
    from .evaluate import confusion_matrix

    fig, axes = plt.subplots(1, len(sweeps), figsize=(2.7 * len(sweeps), 2.9))
    im = None
    for ax, (name, s) in zip(np.atleast_1d(axes), sweeps.items()):
        i = s.budgets.index(budget)
        cm = sum(confusion_matrix(s.y_test, s.probs[i, j]) for j in range(len(s.seeds)))
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        im = ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else "black")
        short = [n[:6] for n in class_names]
        ax.set_xticks(range(len(short)), short, fontsize=7)
        ax.set_yticks(range(len(short)), short, fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.8, label="share of the true class")
    seeds = len(next(iter(sweeps.values())).seeds)
    fig.suptitle(f"{budget} labels per class, {seeds} seeds pooled (rows: true class)", fontsize=9)
    return fig


def same(mine, package, what: str = "equal to the package's", exact: bool = False,
         atol: float = 1e-5, rtol: float = 1.3e-6) -> None:
    """The teach-then-use check a chapter shows: ``mine`` (the code written out on the page) against ``package``
    (what the book's code computes). Prints one line saying how close they are; raises ``AssertionError`` with the
    largest difference when they differ (``exact``: bit for bit; else within ``atol + rtol * |package|``), or when the
    shapes differ."""
    a = np.asarray(mine.detach().cpu() if hasattr(mine, "detach") else mine, dtype=np.float64)
    b = np.asarray(package.detach().cpu() if hasattr(package, "detach") else package, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {a.shape} (written out) vs {b.shape} (package)")
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    ok = np.array_equal(a, b) if exact else bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))
    if not ok:
        raise AssertionError(f"{what}: they differ, largest difference {diff:.3g} "
                             f"({'bit-for-bit equality asked' if exact else f'atol {atol:g}, rtol {rtol:g}'})")
    how = "identical" if diff == 0 else f"equal within float rounding (largest difference {diff:.1g})"
    print(f"✓ {what}: {how}, shape {tuple(a.shape)}")
