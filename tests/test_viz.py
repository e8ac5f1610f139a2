"""The book's figure style: print-quality resolution and readable log axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medmae_nb import viz  # noqa: E402


def test_figures_are_at_least_150_dpi():
    viz.set_style()
    assert plt.rcParams["figure.dpi"] >= 150 and plt.rcParams["savefig.dpi"] >= 150


def test_log_axis_has_ticks_between_decades_as_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([10, 100], [0, 1])
    viz.log_axis(ax)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    labels = {t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi}
    assert {10.0, 20.0, 50.0, 100.0} <= set(shown)
    assert {"10", "20", "50", "100"} <= labels
    viz.show(fig)
