"""The Landmarks panel's file actions: save both sides, load one side (world RAS mm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from ._lm_files import outside, read_for_layer, save_pair

__all__ = ["LandmarkFileActions", "LANDMARK_FILE_FILTER"]

LANDMARK_FILE_FILTER = "Landmarks (*.csv *.fcsv *.mrk.json *.json)"
_FILTER = LANDMARK_FILE_FILTER


class LandmarkFileActions:
    """Mixed into :class:`~.landmarks_widget.LandmarksWidget` (uses its layers, undo
    stack and refresh)."""

    native: Any
    load_side: Any
    undo_stack: Any
    _follow: dict

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, coordinate_system: str = "LPS") -> tuple[Path, Path]:
        """Write ``<name>_fixed<ext>`` and ``<name>_moving<ext>`` (world RAS mm; Slicer
        files in ``coordinate_system``). Returns the two paths."""
        out = save_pair(*self._layers(), path, coordinate_system)
        show_info(f"Saved {out[0].name} and {out[1].name} (world RAS mm)")
        return out

    def load(self, path: str | Path, side: str) -> None:
        """Replace one side's landmarks with a file's (world RAS mm; undoable)."""
        fixed, moving = self._layers()
        if fixed is None or moving is None:
            fixed, moving = self.create_layers()
        layer = fixed if side == "fixed" else moving
        data, ids = read_for_layer(path, layer)  # a ValueError names file and problem
        self.undo_stack.push(self.snapshot())
        self._write(layer, data, ids)
        image = self._follow.get(id(layer))
        out = outside(data, ids, image) if image is not None else []
        if out:
            show_warning(f"Landmarks outside the {side} image '{image.name}' (kept, check "
                         f"the file's space): {', '.join(out)}")
        self.refresh()

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Save landmarks (two files: "
                                              "_fixed and _moving)", "landmarks.csv", _FILTER)
        if path:
            self.save(path)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.native, f"Load {self.load_side.value} "
                                              "landmarks", "", _FILTER)
        if path:
            self.load(path, self.load_side.value)
