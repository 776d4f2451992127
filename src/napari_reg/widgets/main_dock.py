"""One dock for the whole plugin: every panel as a section, the cost curve under the
Register panel, and the view mode (single, ortho, side by side) on top.

Why one dock: napari stacks plugin docks on top of each other, and the panels' minimum
heights (330-660 px each) add up to a window taller than a laptop screen (1373x1645 px
with every panel docked). Here one section is shown at a time: a grid of section buttons
(all titles visible, three rows) above the open section, which scrolls vertically. Each
panel is rearranged to fit the dock's ~300 px column (:mod:`._compact`: labels above
fields, long rows stacked), and the dock sits either in napari's left column as a tab
beside the layer controls (compact, the default on screens narrower than 1600 px) or on
the right (:mod:`._dock_placement`), so the image keeps most of the window's width. Every
panel is still offered on its own in *Plugins* and *Layers > Register*.

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
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFrame,
    QGridLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ._compact import compact
from ._dock_placement import place, prefers_compact
from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips

__all__ = ["BUTTON_NAMES", "DOCK_WIDTH", "RegistrationDock", "SECTIONS"]

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
# The section buttons' short names (the full title is the button's tooltip).
BUTTON_NAMES = {"LoadWidget": "Load", "RegisterWidget": "Register", "ManualWidget": "Manual",
                "LandmarksWidget": "Landmarks", "QCWidget": "QC", "ExportWidget": "Export",
                "AtlasWidget": "Atlas", "MotionWidget": "Motion (4D)"}
_BUTTON_COLUMNS = 3
# Width of the dock in pixels: napari's left column (layer controls) is 320 px, so the
# compact placement costs no width; the panels are rearranged to fit (see _compact).
DOCK_WIDTH = 300
# Room for the vertical scroll bar and margins inside the dock.
_PAGE_MARGIN = 26
# The cost curve's height inside the Register section.
_COST_HEIGHT = 170


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
    QWidget); ``views`` is the :class:`~napari_reg.widgets.view_mode.ViewModeControl`;
    ``buttons`` the section buttons (in :data:`SECTIONS` order), ``pages`` the stacked
    sections; ``compact_box`` switches the placement (see :mod:`._dock_placement`).
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self.panels: dict[str, Any] = {}
        self._placed = False
        self.setObjectName("napari-reg dock")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(3)

        from .view_mode import ViewModeControl

        self.views = ViewModeControl(viewer)
        layout.addWidget(self.views)
        self.compact_box = QCheckBox("Compact (tab beside layer controls)")
        self.compact_box.setToolTip(
            "On: this dock shares napari's left column as a tab beside the layer controls "
            "(the layer list stays below), so the image gets most of the window's width. "
            "Off: this dock is a column of its own on the right. On by default on screens "
            "narrower than 1600 pixels.")
        layout.addWidget(self.compact_box)
        layout.addLayout(self._build_buttons())
        self.pages = QStackedWidget()
        layout.addWidget(self.pages, 1)
        self._host_cost_panel()
        for title, module, cls in SECTIONS:
            self.pages.addWidget(_scrolling(self._build(title, module, cls)))
        self.open_section(SECTIONS[0][2])
        self.pages.currentChanged.connect(self._fit_page)
        self.compact_box.toggled.connect(self.set_compact)
        self.setMinimumWidth(DOCK_WIDTH)
        self.setMaximumWidth(int(DOCK_WIDTH * 1.8))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def _build_buttons(self) -> QGridLayout:
        grid = QGridLayout()
        grid.setSpacing(2)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self.buttons: list[QPushButton] = []
        for index, (title, _module, cls) in enumerate(SECTIONS):
            button = QPushButton()
            button.setText(BUTTON_NAMES[cls])
            button.setToolTip(f"Open the {title} panel")
            button.setCheckable(True)
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self._group.addButton(button, index)
            self.buttons.append(button)
            grid.addWidget(button, index // _BUTTON_COLUMNS, index % _BUTTON_COLUMNS)
        self._group.idClicked.connect(lambda index: self.pages.setCurrentIndex(index))
        return grid

    # ----------------------------------------------------------------- placement
    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if not self._placed:
            self._placed = True
            QTimer.singleShot(0, self._place_first)

    def _fit_page(self, index: int) -> None:
        """Fit a section to the column again once napari's style sheet applies to it."""
        page = self.pages.widget(index)
        content = page.widget() if isinstance(page, QScrollArea) else None
        if content is not None and self.isVisible():
            compact(content, DOCK_WIDTH - _PAGE_MARGIN)

    def _place_first(self) -> None:
        """Once napari has docked this widget: compact on a small screen."""
        self._fit_page(self.pages.currentIndex())
        wanted = prefers_compact(self)
        if self.compact_box.isChecked() != wanted:
            self.compact_box.setChecked(wanted)  # places it through the signal
        elif wanted:
            self.set_compact(True)

    def set_compact(self, compact_on: bool) -> None:
        """Place the dock as a tab beside napari's layer controls (True) or on the right."""
        if self.compact_box.isChecked() != compact_on:
            self.compact_box.setChecked(compact_on)  # re-enters through the signal
            return
        try:
            place(self, compact_on, DOCK_WIDTH)
        except RuntimeError:  # the window is closing
            pass

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
        compact(_native(panel), DOCK_WIDTH - _PAGE_MARGIN)
        page = QWidget()
        column = QVBoxLayout(page)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(_native(panel))
        if cls == "RegisterWidget" and self.cost_panel.parent() is None:
            column.addWidget(self.cost_panel)
        column.addStretch(1)  # rows stay together at the top of a tall page
        return page

    def open_section(self, cls: str) -> None:
        """Open the section hosting the panel class named ``cls`` (e.g. "QCWidget")."""
        for index, (_title, _module, name) in enumerate(SECTIONS):
            if name == cls:
                self.buttons[index].setChecked(True)
                self.pages.setCurrentIndex(index)
                return
        raise KeyError(cls)

    def current_section(self) -> str:
        """The class name of the panel shown (e.g. "RegisterWidget")."""
        return SECTIONS[self.pages.currentIndex()][2]
