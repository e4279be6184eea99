"""The figures of ``sdeflow verify --plots`` from the grid and Monte Carlo checks follow the plot standard:
every panel has both axis labels, colour bars are labelled, and 1-D density plots have an error panel
(the curves overlap at plotting resolution, so only the difference shows the error)."""

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from sdeflow.verify import standard_checks  # noqa: E402
from sdeflow.verify.suite import SuiteContext, registered_checks  # noqa: E402

CHECKS = ["fp_grid/ou_1d_l1", "fp_grid/rotating_ou_2d_l1", "fp_grid/double_well_long_time", "mc_vs_grid/double_well"]


@pytest.mark.parametrize("name", CHECKS)
def test_check_figure_is_labelled(name, monkeypatch, tmp_path):
    (check,) = [c for c in registered_checks(quick=True) if c.name == name]
    figures = []

    def keep(fig, path: Path) -> Path:          # capture the figure instead of closing it
        figures.append(fig)
        return path

    monkeypatch.setattr(standard_checks, "_save", keep)
    outcome = check.fn(SuiteContext(quick=True))
    assert outcome.plot is not None
    outcome.plot(tmp_path)
    assert len(figures) == 1
    fig = figures[0]
    colorbars = {getattr(im.colorbar, "ax", None) for ax in fig.axes for im in ax.images if im.colorbar}
    panels = [ax for ax in fig.axes if ax not in colorbars]
    for ax in panels:
        assert ax.get_ylabel(), (name, ax.get_title())
        # a panel stacked on one that shares its x axis may leave the label to the bottom panel
        assert ax.get_xlabel() or ax.get_shared_x_axes().joined(ax, panels[-1]), (name, ax.get_title())
    assert panels[-1].get_xlabel()
    for cb in colorbars:
        assert cb.get_ylabel(), name
    if name.startswith("fp_grid/") and "2d" not in name:
        assert len(panels) == 2 and panels[1].get_ylabel() == "difference"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_order_plot_labels_each_step_and_no_minor_ticks(monkeypatch, tmp_path):
    # a one-decade step range (2^-3 ... 2^-6): matplotlib's default log axis labels minor ticks there,
    # and the labels overlap
    import matplotlib.pyplot as plt
    import torch

    import sdeflow as sf
    from sdeflow.verify import strong_order

    gbm = sf.GeometricBrownianMotion(0.5, 0.3)
    dts = [2.0**-k for k in range(3, 7)]
    r = strong_order(gbm, torch.ones(200, 1, dtype=torch.float64), 1.0, method="euler", dts=dts, n_batches=10,
                     n_boot=50, generator=0, exact=lambda x0, t, w: gbm.exact_solution(x0, t, w))
    closed = []
    monkeypatch.setattr(plt, "close", lambda fig=None: closed.append(fig))
    assert r.plot(tmp_path / "order.png").exists()
    (fig,) = closed
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(labels) == sorted(["$2^{-3}$", "$2^{-4}$", "$2^{-5}$", "$2^{-6}$"])   # one label per step
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
    assert all(t.get_text() == "" for t in ax.get_yticklabels(minor=True))
    lo, hi = ax.get_ylim()
    shown = [t for t in ax.yaxis.get_majorticklocs() if lo <= t <= hi]
    assert len(shown) >= 2                                   # the error axis is still readable
    assert ax.get_xlabel() and ax.get_ylabel()
    monkeypatch.undo()
    plt.close(fig)


@pytest.mark.parametrize("name", ["samplers/order/heun", "pf_ode/samples_delta_nll"])
def test_sampler_and_pf_ode_checks_write_a_labelled_figure(name, monkeypatch, tmp_path):
    from sdeflow.generative import checks as gen_checks

    (check,) = [c for c in registered_checks(quick=True) if c.name == name]
    figures = []

    def keep(fig, path: Path) -> Path:
        figures.append((fig, path))
        return path

    monkeypatch.setattr(gen_checks, "_save", keep)
    outcome = check.fn(SuiteContext(quick=True))
    assert outcome.plot is not None
    paths = outcome.plot(tmp_path)
    assert len(figures) == 1 and paths == [figures[0][1]] and paths[0].suffix == ".png"
    fig = figures[0][0]
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
    if name.startswith("samplers/order/"):
        (ax,) = fig.axes
        assert not [t for t in ax.xaxis.get_minorticklabels() if t.get_text()]  # no overlapping minor labels
        assert [round(v) for v in ax.get_xticks()] == outcome.data["steps"]
    import matplotlib.pyplot as plt

    plt.close(fig)
