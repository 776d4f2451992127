"""One dock for the whole plugin: every panel as a collapsible section, the cost curve
under the Register panel, and the view mode (single, ortho, side by side) on top.

Why one dock: napari stacks plugin docks on top of each other, and the panels' minimum
heights (330-660 px each) add up to a window taller than a laptop screen (1373x1645 px
with every panel docked). Here only one section is open at a time (a QToolBox), each in
a scroll area, so the dock fits a 1280x800 screen and leaves most of the width to the
image. Every panel is still offered on its own in *Plugins* and *Layers > Register*.

The panels are built by their public classes (``LoadWidget(viewer)``, ...); they meet
through the viewer's :class:`~napari_reg.widgets._session.RegistrationSession` exactly as
when napari docks them one by one. The cost curve is hosted here by giving the session a
:class:`~napari_reg.widgets.cost_plot.CostPlotPanel` before the Register panel looks for
one, so that panel docks no separate curve.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolBox,
    QVBoxLayout,
    QWidget,
)

from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips

__all__ = ["DOCK_WIDTH", "RegistrationDock", "SECTIONS"]

# (section title, module, class): the order a user follows, then the extras.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("Load images", "load_widget", "LoadWidget"),
    ("Register (cost curve below)", "register_widget", "RegisterWidget"),
    ("Manual alignment", "manual_widget", "ManualWidget"),
    ("Landmarks", "landmarks_widget", "LandmarksWidget"),
    ("Quality control", "qc_widget", "QCWidget"),
    ("Export", "export_widget", "ExportWidget"),
    ("Atlas segmentation", "atlas_widget", "AtlasWidget"),
    ("Motion correction (4D series)", "motion_widget", "MotionWidget"),
)
# Width of the dock in pixels: the panels' widest minimum (Register, ~330 px) plus a
# scroll bar, and no more, so the canvas keeps the rest of the window.
DOCK_WIDTH = 370
# The cost curve's height inside the Register section.
_COST_HEIGHT = 190


def _scrolling(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area (no horizontal scrolling: it gets the width)."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(widget)
    return area


def _native(panel: Any) -> QWidget:
    """The QWidget of a magicgui Container or of a plain QWidget."""
    return getattr(panel, "native", panel)


class RegistrationDock(QWidget):
    """All napari-reg panels in one dock (see the module docstring).

    ``panels`` maps each section's class name to the panel object (magicgui Container or
    QWidget); ``views`` is the :class:`~napari_reg.widgets.view_mode.ViewModeControl`.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self.panels: dict[str, Any] = {}
        self.setObjectName("napari-reg dock")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)

        from .view_mode import ViewModeControl

        self.views = ViewModeControl(viewer)
        layout.addWidget(self.views)

        self.sections = QToolBox()
        self.sections.setToolTip("The napari-reg panels; click a title to open its section.")
        layout.addWidget(self.sections, 1)
        self._host_cost_panel()
        for title, module, cls in SECTIONS:
            self.sections.addItem(_scrolling(self._build(title, module, cls)), title)
            self.sections.setItemToolTip(self.sections.count() - 1,
                                         f"Open the {title} panel")
        self.setMinimumWidth(DOCK_WIDTH)
        self.setMaximumWidth(int(DOCK_WIDTH * 1.6))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def _host_cost_panel(self) -> None:
        from .cost_plot import CostPlotPanel

        session = get_session(self._viewer)
        existing = session.cost_panel
        try:
            if existing is not None and existing.isVisible() is not None:
                self.cost_panel = existing  # a Register panel docked earlier made it
                return
        except RuntimeError:  # Qt deleted it
            pass
        self.cost_panel = CostPlotPanel()
        self.cost_panel.setMinimumHeight(_COST_HEIGHT)
        apply_tooltips(self.cost_panel)
        session.cost_panel = self.cost_panel

    def _build(self, title: str, module: str, cls: str) -> QWidget:
        """The section's page: the panel (plus the cost curve under Register); a panel
        that fails to build becomes a one-line message, the others still work."""
        try:
            panel_class = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
            panel = panel_class(unwrap_viewer(self._viewer))
        except Exception as exc:  # report, keep the other sections usable
            print(f"napari-reg: the {title!r} panel could not be built: {exc}", file=sys.stderr)
            label = QLabel(f"This panel could not be built: {exc}")
            label.setWordWrap(True)
            return label
        self.panels[cls] = panel
        apply_tooltips(panel)  # the panels do it too; harmless twice
        if cls != "RegisterWidget" or self.cost_panel.parent() is not None:
            return _native(panel)
        page = QWidget()
        column = QVBoxLayout(page)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(_native(panel))
        column.addWidget(self.cost_panel)
        return page

    def open_section(self, cls: str) -> None:
        """Open the section hosting the panel class named ``cls`` (e.g. "QCWidget")."""
        for index, (_title, _module, name) in enumerate(SECTIONS):
            if name == cls:
                self.sections.setCurrentIndex(index)
                return
        raise KeyError(cls)
