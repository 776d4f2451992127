"""The cost plot keeps every reported point, marks level boundaries, keeps earlier runs."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_reg.widgets.cost_plot import CostPlotPanel


def test_curves_boundaries_and_clear(qtbot):
    panel = CostPlotPanel()
    qtbot.addWidget(panel)
    panel.resize(500, 220)
    panel.show()
    plot = panel.plot
    plot.start_run("run 1")
    plot.mark_boundary(0, "affine L1/2")
    plot.add_points([1, 2, 3], [-0.2, -0.3, -0.35])
    plot.mark_boundary(3, "affine L2/2")
    plot.add_points([4, 5], [-0.5, float("nan")])  # NaN (no evaluation yet) is kept, not drawn
    x, y = plot.curve_data()
    np.testing.assert_array_equal(x, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(y[:4], [-0.2, -0.3, -0.35, -0.5])
    assert [b for b, _ in plot.current.boundaries] == [0, 3]
    plot.start_run("run 2")
    plot.add_points([1, 2], [-0.1, -0.4])
    assert len(plot.curves) == 2  # the earlier run stays
    np.testing.assert_array_equal(plot.curve_data(0)[0], [1, 2, 3, 4, 5])

    image = panel.grab().toImage()
    image.save("/tmp/napari_reg_cost_plot.png")
    # the latest curve is drawn in its colour (light blue, antialiased) in the plot area
    pixels = [image.pixelColor(i, j) for i in range(60, image.width() - 10)
              for j in range(30, 150)]
    blue = [c for c in pixels if c.blue() > 200 and c.red() < 130 and c.green() > 150]
    assert len(blue) > 30

    qtbot.mouseClick(panel.clear_button, Qt.LeftButton)
    assert plot.curves == []


def test_events_become_points_and_boundaries(qtbot):
    """Only iterations are points; level starts are boundaries; the early "initialised"
    event (initial alignment, no cost yet) and level ends add nothing."""
    from napari_reg.core.engine.events import ProgressEvent
    from napari_reg.core.transforms.base import MatrixTransform

    def event(kind, total, cost=float("nan"), level=0):
        return ProgressEvent(kind=kind, stage=0, stage_name="affine", level=level, n_levels=2,
                             iteration=0, max_iterations=10, cost=cost,
                             transform=MatrixTransform(np.eye(4)), elapsed=0.0,
                             total_iterations=total)

    panel = CostPlotPanel()
    qtbot.addWidget(panel)
    plot = panel.plot
    plot.start_run("run")
    plot.add_events([event("initialised", 0), event("level_start", 0), event("iteration", 1, -1.0),
                     event("iteration", 2, -2.0)])
    plot.add_events([event("level_end", 2, -2.0), event("level_start", 2, level=1),
                     event("iteration", 3, -2.5, level=1), event("done", 3, -2.5)])
    x, y = plot.curve_data()
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_array_equal(y, [-1.0, -2.0, -2.5])
    assert plot.current.boundaries == [(0.0, "affine L1/2"), (2.0, "affine L2/2")]


def _ev(kind, stage, name, level, n_levels, iteration=0, max_iterations=10, total=0,
        cost=float("nan"), elapsed=1.0):
    from napari_reg.core.engine.events import ProgressEvent
    from napari_reg.core.transforms.base import MatrixTransform

    return ProgressEvent(kind=kind, stage=stage, stage_name=name, level=level,
                         n_levels=n_levels, iteration=iteration, max_iterations=max_iterations,
                         cost=cost, transform=MatrixTransform(np.eye(4)), elapsed=elapsed,
                         total_iterations=total)


def test_each_stage_has_its_metric_and_each_level_its_own_scale(qtbot):
    """An affine (MI) stage then SyN (local NCC) whose cost steps up at every level: the
    raw values are kept, each level is scaled on its own, labels name the metrics."""
    from napari_reg.widgets._register_settings import stage_metrics

    metrics = stage_metrics({"transform": "syn", "metric": "mi"})
    assert metrics == {"affine": "mi", "syn": "lncc/mi"}  # SyN picks one per pair
    assert stage_metrics({"transform": "bspline", "metric": "nmi"}) == {"affine": "nmi",
                                                                        "bspline": "nmi"}
    panel = CostPlotPanel()
    qtbot.addWidget(panel)
    panel.resize(700, 220)
    panel.show()
    plot = panel.plot
    plot.start_run("run 1: Affine + diffeomorphic", metrics)
    events = [_ev("level_start", 0, "affine", 0, 1, total=0)]
    events += [_ev("iteration", 0, "affine", 0, 1, i, total=i + 1, cost=-0.5 - 0.05 * i)
               for i in range(5)]
    for level in range(2):  # SyN: each level starts higher than the last one ended
        start = 5 + 4 * level
        events.append(_ev("level_start", 1, "syn", level, 2, total=start))
        events += [_ev("iteration", 1, "syn", level, 2, i, total=start + i + 1,
                       cost=-0.2 - 0.3 * level - 0.02 * i) for i in range(4)]
    plot.add_events(events)
    segments = plot.current.segments()
    assert [metric for _, metric in segments] == ["mi", "lncc/mi", "lncc/mi"]
    assert [len(idx) for idx, _ in segments] == [5, 4, 4]
    _, y = plot.curve_data()
    assert y[0] == -0.5 and y[-1] == -0.2 - 0.3 - 0.06  # raw values kept
    image = panel.grab().toImage()
    image.save("/tmp/napari_reg_cost_plot_stages.png")


def test_run_fraction_and_the_final_event():
    from napari_reg.widgets._run_progress import LEVEL_GROWTH, STAGE_WEIGHTS, run_fraction

    stages = ["affine", "syn"]
    total = 1.0 + STAGE_WEIGHTS["syn"]
    assert run_fraction(_ev("initialised", 0, "affine", 0, 4), stages) == 0.0
    mid_affine = run_fraction(_ev("iteration", 0, "affine", 1, 4, 4, 10), stages)
    assert mid_affine == pytest.approx((1.5 / 4) / total)  # linear levels weigh the same
    syn_start = run_fraction(_ev("level_start", 1, "syn", 0, 3), stages)
    assert syn_start == pytest.approx(1.0 / total)
    # SyN's finer levels cost more: after two of three levels far less than 2/3 is done
    g = LEVEL_GROWTH["syn"]
    syn_two = run_fraction(_ev("level_end", 1, "syn", 1, 3), stages)
    assert syn_two == pytest.approx((1.0 + STAGE_WEIGHTS["syn"] * (1 + g) / (1 + g + g * g))
                                    / total)
    syn_late = run_fraction(_ev("iteration", 1, "syn", 2, 3, 9, 10), stages)
    assert syn_start < syn_two < syn_late == 1.0
    # the final event reports the linear stage's level count with the last stage's name:
    # it counts as the end of the optimisation, never as "level 4/4" of a 3-level stage
    assert run_fraction(_ev("done", 1, "syn", 3, 4), stages) == 1.0


def test_whole_run_bar_never_goes_back_when_a_level_takes_a_second_pass(qtbot):
    from magicgui.widgets import Label, ProgressBar

    from napari_reg.widgets._run_progress import RunProgressView

    panel = CostPlotPanel()
    qtbot.addWidget(panel)
    overall = ProgressBar(max=1000)
    view = RunProgressView(panel.plot, ProgressBar(), Label(), overall=overall)
    view.start("run", {"affine": "mi", "bspline": "mi"})
    shown = []
    for event in (_ev("level_end", 1, "bspline", 2, 3, 9, 10, elapsed=5.0),
                  _ev("level_start", 1, "bspline", 2, 3, elapsed=5.1),  # a second pass
                  _ev("iteration", 1, "bspline", 2, 3, 4, 10, elapsed=6.0)):
        view.add([event])
        view.show()
        shown.append(overall.value)
    assert shown == [1000, 1000, 1000]
    view.start("run 2", {"affine": "mi", "bspline": "mi"})  # a new run starts from 0
    view.add([_ev("iteration", 0, "affine", 0, 4, 1, 10)])
    view.show()
    assert overall.value < 100


def test_panel_progress_joins_the_live_frame_and_waits_for_the_next_one(qtbot):
    """Events are shown with a live frame at once (one window repaint for both); without
    frames the panel updates on its own at most every ``interval_s``, and not while
    frames are coming (the next frame will carry them)."""
    from magicgui.widgets import Label, ProgressBar

    from napari_reg.core.engine.events import EventKind, ProgressEvent
    from napari_reg.core.transforms.base import MatrixTransform
    from napari_reg.widgets._run_progress import FRAME_WAIT_S, RunProgressView

    panel = CostPlotPanel()
    qtbot.addWidget(panel)
    view = RunProgressView(panel.plot, ProgressBar(), Label(), interval_s=0.0,
                           overall=ProgressBar(max=1000))
    view.start("run", {"affine": "mi"})

    def event(i):
        return ProgressEvent(EventKind.ITERATION, 0, "affine", 0, 1, i, 50, -0.1 * i,
                             MatrixTransform(np.eye(4)), 0.1 * i, i)

    view.add([event(1), event(2)])
    view.maybe_show(frame_shown=True)
    assert view.unshown == [] and len(panel.plot.curve_data()[0]) == 2
    view.add([event(3)])
    view.maybe_show(frame_shown=False)  # a frame was just shown: wait for the next one
    assert len(view.unshown) == 1
    qtbot.wait(int(FRAME_WAIT_S * 1000) + 50)
    view.maybe_show(frame_shown=False)  # no frame for a while: the panel's own update
    assert view.unshown == [] and len(panel.plot.curve_data()[0]) == 3
