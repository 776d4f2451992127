"""The landmark pairs table: one row per id, fixed and moving xyz (RAS mm), residual (mm)."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ._lm_model import PairRow

__all__ = ["PairTable", "COLUMNS"]

COLUMNS = ["id", "fixed x", "fixed y", "fixed z", "moving x", "moving y", "moving z",
           "residual mm"]
_UNPAIRED = QColor(255, 170, 60, 90)  # an orange tint marks a point without partner


class PairTable(QTableWidget):
    """Read-only table of :class:`PairRow`; ``row_chosen(row_index, side)`` when the user
    selects a row (``side`` is "fixed" or "moving": the half of the row clicked)."""

    row_chosen = Signal(int, str)

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.setMinimumHeight(160)
        self.rows: list[PairRow] = []
        self.cellClicked.connect(self._clicked)

    def _clicked(self, row: int, column: int) -> None:
        self.row_chosen.emit(row, "moving" if 4 <= column <= 6 else "fixed")

    def set_rows(self, rows: Sequence[PairRow]) -> None:
        """Show ``rows``; keeps the selected id selected when it still exists."""
        selected = self.selected_id()
        self.rows = list(rows)
        self.blockSignals(True)
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = [row.id]
            for point in (row.fixed, row.moving):
                cells += (["-"] * 3 if point is None else [f"{v:.2f}" for v in point[:3]])
                if point is not None and len(point) == 2:
                    cells[-1] = ""
            cells.append("unpaired" if not row.paired else
                         ("" if row.residual is None else f"{row.residual:.3f}"))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter) if c else
                                      int(Qt.AlignLeft | Qt.AlignVCenter))
                if not row.paired:
                    item.setBackground(QBrush(_UNPAIRED))
                    item.setToolTip(f"landmark {row.id} has no "
                                    f"{'moving' if row.moving is None else 'fixed'} partner")
                self.setItem(r, c, item)
            if row.id == selected:
                self.selectRow(r)
        self.blockSignals(False)

    def selected_id(self) -> str | None:
        rows = {i.row() for i in self.selectedIndexes()}
        if len(rows) != 1:
            return None
        r = rows.pop()
        return self.rows[r].id if r < len(self.rows) else None

    def selected_row(self) -> PairRow | None:
        i = self.selected_id()
        return next((row for row in self.rows if row.id == i), None)

    def text(self, row: int, column: int) -> str:
        item = self.item(row, column)
        return item.text() if item is not None else ""
