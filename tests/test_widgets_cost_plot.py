"""The cost plot keeps every reported point, marks level boundaries, keeps earlier runs."""

from __future__ import annotations

import numpy as np
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
