"""The book's figure style: print-quality resolution and readable log axes."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

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


def _fake_sweeps(budgets, unit="per_class"):
    from medmae_nb.budgets import BudgetSweep
    from medmae_nb.evaluate import MetricCI

    y = np.array([0, 1, 2] * 4)
    out = {}
    for k, name in enumerate(["a", "b"]):
        probs = np.tile(np.eye(3)[y], (len(budgets), 3, 1, 1)) * 0.5 + 0.5 / 3
        cis = [MetricCI(0.5 + 0.1 * k, 0.4, 0.7)] * len(budgets)
        out[name] = BudgetSweep(name, list(budgets), [0, 1, 2], [3 * b for b in budgets], {"bal_acc": cis},
                                {"bal_acc": np.full((len(budgets), 3), 0.5)}, probs, y,
                                np.array([[k == 1, False, False]] * len(budgets)), unit=unit)
    return out


@pytest.mark.parametrize("budgets", [[100], [10, 100]])
def test_budget_figure_shows_intervals_for_one_budget_or_a_curve(budgets):
    fig = viz.budget_figure(_fake_sweeps(budgets), "t", 1 / 3)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if len(budgets) == 1:  # learners side by side, each with an error bar
        assert labels == ["a", "b"] and len(ax.containers) == 2
    else:
        assert ax.get_xscale() == "log"
    plt.close(fig)


@pytest.mark.parametrize("budgets", [[1.0], [0.01, 0.1, 1.0]])
def test_budget_figure_of_shares_of_the_pool_reads_in_percent(budgets):
    fig = viz.budget_figure(_fake_sweeps(budgets, unit="fraction"), "t", 1 / 3)
    ax = fig.axes[0]
    if len(budgets) == 1:
        assert "100 % of the labelled pool" in ax.get_title()
    else:
        assert ax.get_xlabel() == "% of the labelled pool"
        assert sorted(ax.lines[0].get_xdata()) == pytest.approx([1.0, 10.0, 100.0])
    plt.close(fig)


def test_confusion_figure_one_panel_per_learner_rows_sum_to_one():
    fig = viz.confusion_figure(_fake_sweeps([5]), ["normal", "benign", "malignant"], 5)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    cm = panels[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(cm).sum(1), 1.0)
    plt.close(fig)


def test_same_prints_one_line_when_equal_and_raises_with_the_difference_otherwise(capsys):
    torch = pytest.importorskip("torch")
    x = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    viz.same(x, x.clone(), "mine", exact=True)
    assert capsys.readouterr().out == "✓ mine: identical, shape (2, 3)\n"
    viz.same(x, x + 1e-7, "close")
    assert "equal within float rounding (largest difference 1e-07)" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"largest difference 1e-07 \(bit-for-bit"):
        viz.same(x, x + 1e-7, "bits", exact=True)
    with pytest.raises(AssertionError, match="largest difference 0.5"):
        viz.same(x.numpy(), x.numpy() + 0.5, "far")
    with pytest.raises(AssertionError, match=r"shapes differ, \(2, 3\) .* \(3, 2\)"):
        viz.same(x, x.T, "shape")
