"""A live cost-vs-iteration plot drawn with QPainter (no plotting dependency).

Why not matplotlib or pyqtgraph: neither ships with napari 0.9 here, and the curve is
small (a few thousand points at most), so a QWidget that keeps the numbers and repaints
on ``update()`` is enough. ``update()`` only *schedules* a paint and Qt coalesces
requests, so appending points at any rate costs one repaint per frame, never one per
point; the register widget already batches events at ~25 Hz.

The x axis is the iteration count over the whole run (all stages and levels); dashed
vertical lines mark pyramid-level / stage boundaries, labelled with the stage, level and
the stage's own metric. Each level is drawn scaled to its own range (top: its worst
value, bottom: its best): stages minimise different metrics (MI for an affine stage,
local NCC for SyN) and levels see differently smoothed images, so their raw values are
not on one scale, and drawing them on one axis made a SyN run look as if it got worse at
every level. The raw values are kept (:meth:`CostPlot.curve_data`) and the latest one is
printed with its metric's name. Curves of earlier runs stay (faded) until
:meth:`CostPlot.clear` is called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..core.engine.events import EventKind
from ._tooltips import apply_tooltips

__all__ = ["CostCurve", "CostPlot", "CostPlotPanel"]

_RUN_COLOURS = ["#ff4fd8", "#4fc3ff", "#ffd24f", "#7dff4f", "#ff8a4f", "#b38cff"]


@dataclass
class CostCurve:
    """One run's costs: ``x`` iteration index over the run, ``y`` metric value (minimised)."""

    label: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    boundaries: list[tuple[float, str]] = field(default_factory=list)  # (x, level label)
    metrics: dict[str, str] = field(default_factory=dict)  # stage name -> metric name
    boundary_stages: list[str] = field(default_factory=list)  # stage of each boundary

    def segments(self) -> list[tuple[np.ndarray, str]]:
        """Indices of the points of each level (in order) and that level's metric name."""
        x = np.asarray(self.x, dtype=float)
        if not self.boundaries:
            return [(np.arange(len(x)), next(iter(self.metrics.values()), "cost"))]
        edges = [b for b, _ in self.boundaries] + [np.inf]
        out = []
        first = np.flatnonzero(x <= edges[0])
        if first.size:
            out.append((first, self.metric_of(0)))
        for k in range(len(self.boundaries)):
            idx = np.flatnonzero((x > edges[k]) & (x <= edges[k + 1]))
            if idx.size:
                out.append((idx, self.metric_of(k)))
        return out

    def metric_of(self, boundary: int) -> str:
        stage = (self.boundary_stages[boundary] if boundary < len(self.boundary_stages)
                 else "")
        return self.metrics.get(stage, "cost")


class _PlotArea(QWidget):
    """The painted axes area; all state lives in the owning :class:`CostPlot`."""

    def __init__(self, owner: CostPlot):
        super().__init__(owner)
        self._owner = owner
        self.setMinimumHeight(120)
        self.setAttribute(Qt.WA_OpaquePaintEvent, True)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._owner._paint(self)


class CostPlot(QWidget):
    """Cost vs iteration for the current run plus earlier runs, level boundaries marked."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.curves: list[CostCurve] = []
        self._area = _PlotArea(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._area)

    # ------------------------------------------------------------------ data API
    def start_run(self, label: str, metrics: dict[str, str] | None = None) -> CostCurve:
        """Begin a new curve; earlier ones stay visible (faded) until :meth:`clear`.

        ``metrics`` names the metric each stage minimises (``{"affine": "mi", "syn":
        "lncc"}``), shown with the level labels and the latest value."""
        curve = CostCurve(label, metrics=dict(metrics or {}))
        self.curves.append(curve)
        self._area.update()
        return curve

    @property
    def current(self) -> CostCurve | None:
        return self.curves[-1] if self.curves else None

    def add_points(self, xs: list[float], ys: list[float]) -> None:
        """Append points to the current curve (a run must have been started)."""
        if self.current is None:
            self.start_run("run")
        self.current.x.extend(float(v) for v in xs)
        self.current.y.extend(float(v) for v in ys)
        self._area.update()

    def mark_boundary(self, x: float, label: str, stage: str | None = None) -> None:
        """Mark the start of a pyramid level or stage at iteration ``x``."""
        if self.current is None:
            self.start_run("run")
        self.current.boundaries.append((float(x), label))
        self.current.boundary_stages.append(stage if stage is not None else label.split()[0])
        self._area.update()

    def add_events(self, events: list[Any]) -> None:
        """Append a batch of the core's ProgressEvents to the current curve: each
        ``iteration`` is a point (``total_iterations``, ``cost``), each ``level_start`` a
        boundary; other kinds ("initialised", "level_end", "done") add nothing."""
        xs: list[float] = []
        ys: list[float] = []
        for ev in events:
            if ev.kind == EventKind.LEVEL_START:
                self.add_points(xs, ys)
                xs, ys = [], []
                self.mark_boundary(ev.total_iterations,
                                   f"{ev.stage_name} L{ev.level + 1}/{ev.n_levels}",
                                   ev.stage_name)
            elif ev.kind == EventKind.ITERATION:
                xs.append(ev.total_iterations)
                ys.append(ev.cost)
        self.add_points(xs, ys)

    def clear(self) -> None:
        """Forget every curve."""
        self.curves.clear()
        self._area.update()

    def curve_data(self, index: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` arrays of one curve (default: the latest run)."""
        c = self.curves[index]
        return np.asarray(c.x, dtype=float), np.asarray(c.y, dtype=float)

    # ------------------------------------------------------------------ painting
    def _bounds(self) -> tuple[float, float, float, float] | None:
        xs: list[float] = []
        ys: list[float] = []
        for c in self.curves:
            xs.extend(c.x)
            ys.extend(v for v in c.y if math.isfinite(v))
            xs.extend(b for b, _ in c.boundaries)
        if not ys:
            return None
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if x1 <= x0:
            x1 = x0 + 1.0
        if y1 <= y0:
            pad = abs(y0) * 0.05 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        pad = (y1 - y0) * 0.05
        return x0, x1, y0 - pad, y1 + pad

    def _paint(self, area: QWidget) -> None:
        p = QPainter(area)
        p.setRenderHint(QPainter.Antialiasing, True)
        w, h = area.width(), area.height()
        p.fillRect(0, 0, w, h, QColor("#262930"))
        left, right, top, bottom = 64, 8, 8, 20
        plot = QRectF(left, top, max(w - left - right, 1), max(h - top - bottom, 1))
        p.setPen(QPen(QColor("#8b8e95"), 1))
        p.drawRect(plot)
        bounds = self._bounds()
        if bounds is None:
            p.drawText(plot, Qt.AlignCenter, "cost vs iteration (run a registration)")
            p.end()
            return
        x0, x1, _, _ = bounds
        y0, y1 = -0.05, 1.05  # every level scaled to [0 = its best, 1 = its worst]

        def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            px = plot.left() + (x - x0) / (x1 - x0) * plot.width()
            py = plot.bottom() - (y - y0) / (y1 - y0) * plot.height()
            return px, py

        p.drawText(QRectF(0, top - 4, left - 4, 16), Qt.AlignRight, "worse")
        p.drawText(QRectF(0, plot.bottom() - 12, left - 4, 16), Qt.AlignRight, "better")
        p.drawText(QRectF(left, plot.bottom() + 2, 300, 16), Qt.AlignLeft,
                   f"{x0:.0f}   (each level scaled to its own range)")
        p.drawText(QRectF(plot.right() - 120, plot.bottom() + 2, 120, 16), Qt.AlignRight,
                   f"{x1:.0f} iterations")

        n = len(self.curves)
        for i, c in enumerate(self.curves):
            latest = i == n - 1
            colour = QColor(_RUN_COLOURS[i % len(_RUN_COLOURS)])
            if not latest:
                colour.setAlpha(110)
            if latest:
                p.setPen(QPen(QColor("#c0c0c0"), 1, Qt.DashLine))
                last_x, row = -1e9, 0
                for k, (bx, label) in enumerate(c.boundaries):
                    text = f"{label} {c.metric_of(k)}"
                    px, _ = to_px(np.array([bx]), np.array([y0]))
                    p.drawLine(QPointF(px[0], plot.top()), QPointF(px[0], plot.bottom()))
                    # labels of close boundaries go one line lower instead of overlapping
                    row = row + 1 if px[0] - last_x < 7 * len(text) and row < 3 else 0
                    last_x = px[0]
                    p.drawText(QPointF(px[0] + 3, plot.top() + 28 + 13 * row), text)
            x = np.asarray(c.x, dtype=float)
            y = np.asarray(c.y, dtype=float)
            p.setPen(QPen(colour, 2 if latest else 1))
            last_value, last_metric = None, ""
            for idx, metric in c.segments():
                xs, ys = x[idx], y[idx]
                ok = np.isfinite(ys)
                if not ok.any():
                    continue
                xs, ys = xs[ok], ys[ok]
                lo, hi = float(ys.min()), float(ys.max())
                scaled = (ys - lo) / (hi - lo) if hi > lo else np.full(len(ys), 0.5)
                px, py = to_px(xs, scaled)
                p.drawPolyline(QPolygonF([QPointF(a, b) for a, b in zip(px, py, strict=True)]))
                last_value, last_metric = float(ys[-1]), metric
            if latest and last_value is not None:
                p.drawText(QRectF(plot.right() - 260, plot.top() + 2, 256, 16), Qt.AlignRight,
                           f"{c.label}: {last_metric} {last_value:.5g}")
        p.end()


class CostPlotPanel(QWidget):
    """The dockable panel: the plot, a status line and a Clear button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = CostPlot(self)
        self.clear_button = QPushButton("Clear curves")
        self.clear_button.clicked.connect(self.plot.clear)
        self.status = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.plot, 1)
        layout.addLayout(row)
        self.setMinimumHeight(180)
        apply_tooltips(self)  # what each control does, in which units
