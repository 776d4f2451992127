"""QC panel: is the registration right? Views to look at and numbers to compare.

Views (layers named "QC ...", all on the fixed grid, world RAS mm): the warped image
itself with flicker (a timer toggling it) and fade (its opacity); a checkerboard of fixed
and warped with squares of a given size in mm; the difference image; the fixed image's
edges drawn over the warped one; for deformable results the Jacobian determinant map
with folds (det <= 0) highlighted and a deformed grid. Numbers: a before/after table of
NCC, MI, landmark TRE (mm) and, given label maps, Dice per label. "Before" is the
identity (the images where their files put them). The maths is :mod:`napari_reg.core.qc`;
this panel only gathers inputs (``_qc_inputs``) and shows layers.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Labels, Points
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ..core import qc
from ..core.transforms.base import MatrixTransform
from ._alignment import get_alignment
from ._layer_volumes import layer_volume
from ._lm_model import pair_rows
from ._notify import guarded
from ._qc_inputs import QCInputs, gather, upsert_layer
from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips
from .overlay import coarse_grid

__all__ = ["QCWidget", "SOURCE_CHOICES", "QC_PREFIX"]

SOURCE_CHOICES = [("Last registration result", "result"),
                  ("Current alignment (manual / landmarks)", "alignment")]
QC_PREFIX = "QC "
_DEFORMATION_VOXELS = 1_000_000  # Jacobian and grid on a coarse copy: a field per voxel


class QCWidget(Container):
    """Checkerboard, difference, flicker/fade, edges, Jacobian, grid, before/after table."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.source = ComboBox(label="Inspect", choices=SOURCE_CHOICES, value="result")
        self.square = FloatSpinBox(label="Checker square (mm)", min=0.5, max=500.0, step=1.0,
                                   value=10.0)
        self.show_checker = PushButton(text="Checkerboard")
        self.show_difference = PushButton(text="Difference")
        self.show_edges = PushButton(text="Fixed edges over warped")
        self.flicker = CheckBox(text="Flicker warped / fixed")
        self.flicker_ms = SpinBox(label="Flicker period (ms)", min=100, max=5000, step=50,
                                  value=500)
        self.fade = FloatSlider(label="Fade (warped opacity)", min=0.0, max=1.0, step=0.05,
                                value=1.0)
        self.show_deformation = PushButton(text="Jacobian, folds and deformed grid")
        self.grid_mm = FloatSpinBox(label="Grid spacing (mm)", min=1.0, max=200.0, value=8.0)
        self.fixed_points = ComboBox(label="Fixed landmarks", choices=self._of(Points),
                                     nullable=True)
        self.moving_points = ComboBox(label="Moving landmarks", choices=self._of(Points),
                                      nullable=True)
        self.fixed_labels = ComboBox(label="Fixed labels", choices=self._of(Labels),
                                     nullable=True)
        self.moving_labels = ComboBox(label="Moving labels", choices=self._of(Labels),
                                      nullable=True)
        self.compute = PushButton(text="Before / after numbers")
        self.status = Label(value="")
        self.extend([self.source, self.square,
                     Container(widgets=[self.show_checker, self.show_difference],
                               layout="horizontal", labels=False),
                     self.show_edges, self.flicker, self.flicker_ms, self.fade, self.grid_mm,
                     self.show_deformation, self.fixed_points, self.moving_points,
                     self.fixed_labels, self.moving_labels, self.compute, self.status])
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["measure", "before", "after"])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(150)
        self.native.layout().addWidget(self.table)

        self.inputs: QCInputs | None = None
        self.numbers: dict[str, tuple[float, float]] = {}
        self._timer = QTimer(self.native)  # dies with the panel
        self._timer.timeout.connect(self._toggle)
        self.show_checker.clicked.connect(guarded(self.checkerboard))
        self.show_difference.clicked.connect(guarded(self.difference))
        self.show_edges.clicked.connect(guarded(self.edges))
        self.show_deformation.clicked.connect(guarded(self.deformation))
        self.compute.clicked.connect(guarded(self.before_after))
        self.square.changed.connect(self._square_changed)
        self.flicker.changed.connect(self._flicker)
        self.flicker_ms.changed.connect(lambda v: self._timer.setInterval(int(v)))
        self.fade.changed.connect(self._fade)
        self.source.changed.connect(self._drop_inputs)
        self._session.result_changed.connect(self._drop_inputs)
        self._alignment = get_alignment(viewer)
        self._alignment.changed.connect(self._drop_inputs)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self.reset_choices)
        self.native.destroyed.connect(self._shutdown)
        self._on_inserted()
        apply_tooltips(self)  # what each control does, in which units

    def _shutdown(self, *_args: Any) -> None:
        self._session.result_changed.disconnect(self._drop_inputs)
        self._alignment.changed.disconnect(self._drop_inputs)
        events = self._viewer.layers.events
        events.inserted.disconnect(self._on_inserted)
        events.removed.disconnect(self.reset_choices)

    def _on_inserted(self, *_args: Any) -> None:
        """Refresh choices; pick Points layers named 'fixed ...' / 'moving ...' if unset."""
        self.reset_choices()
        for side, combo in (("fixed", self.fixed_points), ("moving", self.moving_points)):
            if combo.value is None:
                combo.value = next((lyr for _, lyr in self._of(Points)()
                                    if side in lyr.name.lower()), None)

    def _of(self, kind: type) -> Any:
        return lambda _w=None: [(lyr.name, lyr) for lyr in self._viewer.layers
                                if isinstance(lyr, kind)]

    def _drop_inputs(self, *_args: Any) -> None:
        self.inputs = None

    def _inputs(self) -> QCInputs:
        if self.inputs is None:
            self.inputs = gather(self._viewer, self.source.value)
        return self.inputs

    def _layer(self, what: str, data: np.ndarray, kind: str = "image", **style: Any) -> Any:
        return upsert_layer(self._viewer, QC_PREFIX + what, data, self._inputs().affine, kind,
                            **style)

    # ------------------------------------------------------------------ views
    def warped_layer(self) -> Any:
        """The warped image on the QC grid (what flicker and fade act on)."""
        inp = self._inputs()
        hi = float(np.percentile(inp.warped, 99.5)) or 1.0
        return self._layer("warped", inp.warped, colormap="magenta", blending="additive",
                           contrast_limits=(0.0, hi), opacity=float(self.fade.value))

    def checkerboard(self) -> Any:
        """Squares of ``square`` mm (world), alternating fixed and warped (both scaled 0-1)."""
        inp = self._inputs()
        board = qc.checkerboard(inp.fixed, inp.warped, float(self.square.value), inp.affine)
        return self._layer("checkerboard", board, colormap="gray", contrast_limits=(0.0, 1.0))

    def _square_changed(self, *_args: Any) -> None:
        if any(lyr.name == QC_PREFIX + "checkerboard" for lyr in self._viewer.layers):
            guarded(self.checkerboard)()

    def difference(self) -> Any:
        """Fixed - warped (both scaled 0-1): 0 where they agree."""
        inp = self._inputs()
        diff = qc.difference(inp.fixed, inp.warped)
        return self._layer("difference", diff, colormap="twilight_shifted",
                           contrast_limits=(-1.0, 1.0))

    def edges(self) -> Any:
        """The fixed image's edges (green) over the warped image."""
        inp = self._inputs()
        self.warped_layer()
        sigma = float(np.max(np.linalg.norm(inp.affine[:-1, :-1], axis=0)))
        mask = qc.edges(inp.fixed, inp.affine, sigma_mm=sigma).astype(np.uint8)
        return self._layer("fixed edges", mask, colormap="green", blending="additive",
                           contrast_limits=(0.0, 1.0))

    def _flicker(self, on: bool) -> None:
        if on:
            try:
                self.warped_layer()
            except ValueError as exc:
                show_error(str(exc))
                self.flicker.value = False
                return
            self._timer.setInterval(int(self.flicker_ms.value))
            self._timer.start()
        else:
            self._timer.stop()
            layer = self._find("warped")
            if layer is not None:
                layer.visible = True

    def _toggle(self) -> None:
        layer = self._find("warped")
        if layer is None:
            self._timer.stop()
            self.flicker.value = False
            return
        layer.visible = not layer.visible

    def _fade(self, value: float) -> None:
        layer = self._find("warped")
        if layer is None:
            try:
                layer = self.warped_layer()
            except ValueError as exc:
                show_error(str(exc))
                return
        layer.opacity = float(value)

    def _find(self, what: str) -> Any:
        return next((lyr for lyr in self._viewer.layers if lyr.name == QC_PREFIX + what), None)

    def deformation(self) -> tuple[Any, Any, Any]:
        """Jacobian determinant (1 = volume kept), folds (det <= 0) and a deformed grid,
        on a copy of the fixed grid of at most ~1 M voxels."""
        inp = self._inputs()
        if inp.transform.is_linear:
            raise ValueError("This transform is linear: its Jacobian is one number "
                             f"({np.linalg.det(np.asarray(inp.transform.matrix)[:-1, :-1]):.4f})"
                             " everywhere and nothing can fold.")
        grid_volume = inp.fixed_volume
        shape, affine = coarse_grid(grid_volume, _DEFORMATION_VOXELS)
        jac = qc.jacobian_determinant(inp.transform, shape, affine)
        folds = (jac <= 0).astype(np.uint8)
        grid = qc.deformed_grid(inp.transform, shape, affine,
                                spacing_mm=float(self.grid_mm.value))
        self.status.value = (f"Jacobian {jac.min():.3f} .. {jac.max():.3f}; folded "
                             f"{100 * qc.folding_fraction(jac):.3f} % of voxels")
        view = [upsert_layer(self._viewer, QC_PREFIX + "Jacobian determinant",
                             jac.astype(np.float32), affine, colormap="PiYG",
                             contrast_limits=(0.0, 2.0)),
                upsert_layer(self._viewer, QC_PREFIX + "folds", folds, affine, "labels",
                             colormap=DirectLabelColormap(color_dict={
                                 None: "transparent", 0: "transparent", 1: "red"})),
                upsert_layer(self._viewer, QC_PREFIX + "deformed grid", grid, affine,
                             colormap="yellow", blending="additive",
                             contrast_limits=(0.0, 1.0))]
        return view[0], view[1], view[2]

    # ------------------------------------------------------------------ numbers
    def before_after(self) -> dict[str, tuple[float, float]]:
        """NCC, MI, TRE (mean mm) and Dice per label, before (identity) and after."""
        inp = self._inputs()
        before = inp.before()
        out: dict[str, tuple[float, float]] = {}
        for name in ("ncc", "mi"):
            out[name.upper()] = (qc.similarity(inp.fixed, before, name),
                                 qc.similarity(inp.fixed, inp.warped, name))
        f_pts, m_pts = self.fixed_points.value, self.moving_points.value
        if f_pts is not None and m_pts is not None:
            rows = [r for r in pair_rows(f_pts, m_pts) if r.paired]
            if rows:
                f = np.array([r.fixed for r in rows])
                m = np.array([r.moving for r in rows])
                ident = MatrixTransform(np.eye(f.shape[1] + 1))
                out[f"TRE mean mm ({len(rows)} pairs)"] = (
                    float(qc.target_registration_error(ident, f, m).mean()),
                    float(qc.target_registration_error(inp.transform, f, m).mean()))
        f_lab, m_lab = self.fixed_labels.value, self.moving_labels.value
        if f_lab is not None and m_lab is not None:
            out.update(self._dice(inp, f_lab, m_lab))
        self.numbers = out
        self.table.setRowCount(len(out))
        for r, (name, (b, a)) in enumerate(out.items()):
            for c, text in enumerate((name, f"{b:.4f}", f"{a:.4f}")):
                self.table.setItem(r, c, QTableWidgetItem(text))
        show_info("QC numbers updated (before = images as loaded).")
        return out

    def _dice(self, inp: QCInputs, f_lab: Any, m_lab: Any) -> dict[str, tuple[float, float]]:
        ident = MatrixTransform(np.eye(len(inp.shape) + 1))
        fixed = inp.warp(layer_volume(f_lab, use_file_affine=True), ident, order=0)
        moving = layer_volume(m_lab, use_file_affine=True)
        before = qc.dice_per_label(fixed, inp.warp(moving, ident, order=0))
        after = qc.dice_per_label(fixed, inp.warp(moving, inp.transform, order=0))
        return {f"Dice label {k}": (before[k], after.get(k, float("nan")))
                for k in sorted(set(before) | set(after)) if k in before}
