"""Motion traces drawn with QPainter: rotations, translations and framewise displacement.

Three rows over one frame axis (0 .. T-1, fixed from the start so the traces grow from
the left as frames arrive): rotations about x, y, z (degrees), translations along x, y, z
(mm), and the framewise displacement (mm) with its threshold dashed and the frames above
it marked. A vertical line shows the viewer's current frame. Clicking anywhere in the
plot emits ``frame_clicked(index)`` for the nearest frame.

Like :mod:`.cost_plot`, no plotting dependency: the data are a few hundred points, and
``update()`` only schedules one repaint however often the data change.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

__all__ = ["MotionPlot"]

_AXIS_COLOURS = ("#ff6b6b", "#6bdc6b", "#6bb5ff")  # x, y, z
_ROWS = (("rotation (deg)", "rot"), ("translation (mm)", "trans"), ("FD (mm)", "fd"))
_LEFT, _RIGHT, _TOP, _BOTTOM, _GAP = 56, 8, 6, 18, 16


class MotionPlot(QWidget):
    """The traces; feed them with :meth:`set_frames`, :meth:`set_data`, :meth:`set_current`."""

    frame_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.n_frames = 0
        self.parameters = np.zeros((0, 6))
        self.fd = np.zeros(0)
        self.threshold = 0.5
        self.current = -1
        self.setMinimumHeight(240)
        self.setAttribute(Qt.WA_OpaquePaintEvent, True)
        self.setCursor(Qt.PointingHandCursor)

    # ------------------------------------------------------------------ data API
    def set_frames(self, n_frames: int) -> None:
        """A new series of ``n_frames``: the traces start empty (NaN = not done)."""
        self.n_frames = int(n_frames)
        self.parameters = np.full((self.n_frames, 6), np.nan)
        self.fd = np.full(self.n_frames, np.nan)
        self.update()

    def set_data(self, parameters: np.ndarray, fd: np.ndarray, threshold: float) -> None:
        """(T, 6) rotations (deg) and translations (mm), (T,) FD (mm); NaN = not done."""
        self.parameters = np.asarray(parameters, dtype=float)
        self.fd = np.asarray(fd, dtype=float)
        self.threshold = float(threshold)
        self.update()

    def set_current(self, frame: int) -> None:
        self.current = int(frame)
        self.update()

    def flagged(self) -> list[int]:
        """Frames whose FD is above the threshold."""
        with np.errstate(invalid="ignore"):
            return [int(k) for k in np.flatnonzero(self.fd > self.threshold)]

    # ------------------------------------------------------------------ geometry
    def _rows(self) -> list[QRectF]:
        w, h = self.width(), self.height()
        row_h = max((h - _TOP - _BOTTOM - 2 * _GAP) / 3.0, 10.0)
        width = max(w - _LEFT - _RIGHT, 1)
        return [QRectF(_LEFT, _TOP + i * (row_h + _GAP), width, row_h) for i in range(3)]

    def x_of(self, frame: float) -> float:
        """Pixel x of a frame index."""
        row = self._rows()[0]
        span = max(self.n_frames - 1, 1)
        return row.left() + frame / span * row.width()

    def frame_at(self, x: float) -> int | None:
        """The frame nearest to pixel ``x`` (None without frames)."""
        if self.n_frames == 0:
            return None
        row = self._rows()[0]
        span = max(self.n_frames - 1, 1)
        return int(np.clip(round((x - row.left()) / row.width() * span), 0, self.n_frames - 1))

    def point_of(self, frame: int, row: int = 2) -> QPointF:
        """Pixel position of a frame in one row (0 rotation, 1 translation, 2 FD), at the
        row's middle height: where a click selects that frame."""
        rect = self._rows()[row]
        return QPointF(self.x_of(frame), rect.center().y())

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt API)
        position = event.pos() if hasattr(event, "pos") else event.position()
        frame = self.frame_at(position.x())
        if frame is not None:
            self.frame_clicked.emit(frame)

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing, True)
        p.fillRect(0, 0, self.width(), self.height(), QColor("#262930"))
        if self.n_frames == 0:
            p.setPen(QColor("#8b8e95"))
            p.drawText(QRectF(0, 0, self.width(), self.height()), Qt.AlignCenter,
                       "motion traces (choose a 4D image and run)")
            p.end()
            return
        series = {"rot": [self.parameters[:, i] for i in range(3)],
                  "trans": [self.parameters[:, 3 + i] for i in range(3)], "fd": [self.fd]}
        for rect, (label, key) in zip(self._rows(), _ROWS, strict=True):
            self._paint_row(p, rect, label, series[key], key == "fd")
        rows = self._rows()
        p.setPen(QColor("#c0c0c0"))
        p.drawText(QRectF(_LEFT, rows[-1].bottom() + 2, 60, 14), Qt.AlignLeft, "0")
        p.drawText(QRectF(rows[-1].right() - 120, rows[-1].bottom() + 2, 120, 14),
                   Qt.AlignRight, f"frame {self.n_frames - 1}")
        p.end()

    def _paint_row(self, p: QPainter, rect: QRectF, label: str, lines: list[np.ndarray],
                   is_fd: bool) -> None:
        p.setPen(QPen(QColor("#8b8e95"), 1))
        p.drawRect(rect)
        values = np.concatenate([v[np.isfinite(v)] for v in lines] or [np.zeros(0)])
        if is_fd:
            lo, hi = 0.0, max(float(values.max()) if values.size else 0.0, self.threshold) * 1.1
        else:
            extent = max(float(np.abs(values).max()) if values.size else 0.0, 0.1) * 1.1
            lo, hi = -extent, extent
        hi = hi if hi > lo else lo + 1.0

        def y_of(v: float) -> float:
            return rect.bottom() - (v - lo) / (hi - lo) * rect.height()

        p.setPen(QColor("#c0c0c0"))
        p.drawText(QRectF(0, rect.top() - 2, _LEFT - 4, 14), Qt.AlignRight, f"{hi:.2g}")
        p.drawText(QRectF(0, rect.bottom() - 12, _LEFT - 4, 14), Qt.AlignRight, f"{lo:.2g}")
        p.drawText(QRectF(rect.left() + 4, rect.top() + 1, 200, 14), Qt.AlignLeft, label)
        if 0 <= self.current < self.n_frames:
            p.setPen(QPen(QColor("#f0f0f0"), 1, Qt.DotLine))
            x = self.x_of(self.current)
            p.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        if is_fd:
            p.setPen(QPen(QColor("#ffb347"), 1, Qt.DashLine))
            p.drawLine(QPointF(rect.left(), y_of(self.threshold)),
                       QPointF(rect.right(), y_of(self.threshold)))
        colours = ("#f0f0f0",) if is_fd else _AXIS_COLOURS
        for values_k, colour in zip(lines, colours, strict=False):
            p.setPen(QPen(QColor(colour), 1.5))
            for segment in _finite_runs(values_k):
                poly = QPolygonF([QPointF(self.x_of(k), y_of(values_k[k])) for k in segment])
                if len(segment) == 1:
                    p.drawEllipse(poly[0], 1.5, 1.5)
                else:
                    p.drawPolyline(poly)
        if is_fd:
            p.setPen(QPen(QColor("#ff4040"), 2))
            for k in self.flagged():
                p.drawEllipse(QPointF(self.x_of(k), y_of(self.fd[k])), 4, 4)


def _finite_runs(values: np.ndarray) -> list[list[int]]:
    """Index runs of consecutive finite values (a trace is not drawn across a gap)."""
    runs: list[list[int]] = []
    current: list[int] = []
    for k, v in enumerate(values):
        if math.isfinite(v):
            current.append(k)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs
