"""QC panel: is the registration right? Views to look at and numbers to compare.

Views (layers named "QC ...", all on the fixed grid, world RAS mm): the warped image
itself with flicker (a timer toggling it) and fade (its opacity), for which the live
"warped" layers and the moving image step aside (they would cover or mix with it); a
checkerboard of fixed and warped with squares of a given size in mm; the plain
difference and, for two modalities, the local mismatch ``1 - |local NCC|``; the fixed
image's edges drawn over the warped one; for deformable results the Jacobian determinant
map with folds (det <= 0) highlighted and a deformed grid drawn as line segments (a
Vectors layer, crisp at any zoom) in the viewed plane, optionally without the affine
part; iso-surfaces of both images in contrasting colours for a 3D look. Each view
replaces the previous one (QC layers do not pile up). Numbers: a before/after table of
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
from ._alignment import ALIGNMENT_LAYER_NAME, get_alignment
from ._layer_volumes import layer_volume
from ._lm_model import pair_rows
from ._notify import guarded
from ._qc_inputs import QCInputs, gather, upsert_layer
from ._register_settings import LIVE_LAYER_NAME
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
        self.show_local = PushButton(text="Multi-modal mismatch (local NCC)",
                                     tooltip="1 - |local correlation| in a few-mm window: "
                                             "dark where structures line up, whatever the "
                                             "contrasts")
        self.show_3d = PushButton(text="3D surfaces (fixed cyan, warped magenta)",
                                  tooltip="Iso-surfaces of both images in a 3D view: where "
                                          "one shows through the other, they disagree")
        self.grid_linear = CheckBox(text="Grid without the affine part", value=False,
                                    tooltip="Draw only the non-linear part of the map "
                                            "(T(x) - A x): the local deformation")
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
                               layout="horizontal", labels=False), self.show_local,
                     self.show_edges, self.flicker, self.flicker_ms, self.fade, self.grid_mm,
                     self.grid_linear, self.show_deformation, self.show_3d,
                     self.fixed_points, self.moving_points, self.fixed_labels,
                     self.moving_labels, self.compute, self.status])
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
        self.show_local.clicked.connect(guarded(self.local_mismatch))
        self.show_3d.clicked.connect(guarded(self.surfaces_3d))
        self.grid_linear.changed.connect(lambda _v: self._refresh_grid())
        self._aside: dict[Any, bool] = {}  # layers hidden for flicker/fade: visibility
        self._grid: tuple[Any, Any, Any] | None = None  # (transform, shape, affine)
        self._grid_key: tuple | None = None  # the plane the grid layer shows
        viewer.dims.events.current_step.connect(self._refresh_grid)
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
        self._viewer.dims.events.current_step.disconnect(self._refresh_grid)
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

    def _show_view(self, *names: str) -> None:
        """Remove the QC views other than ``names`` (the warped layer stays: flicker)."""
        keep = {QC_PREFIX + n for n in (*names, "warped")}
        gone = [lyr for lyr in self._viewer.layers
                if lyr.name.startswith(QC_PREFIX) and lyr.name not in keep]
        for lyr in gone:
            self._viewer.layers.remove(lyr)
        if any(lyr.name.startswith(QC_PREFIX + "3D") for lyr in gone):  # leaving 3D
            self._step_back()
            self._viewer.dims.ndisplay = 2
        if "deformed grid" not in names:
            self._grid = None

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
        self._show_view("checkerboard")
        return self._layer("checkerboard", board, colormap="gray", contrast_limits=(0.0, 1.0))

    def _square_changed(self, *_args: Any) -> None:
        if any(lyr.name == QC_PREFIX + "checkerboard" for lyr in self._viewer.layers):
            guarded(self.checkerboard)()

    def difference(self) -> Any:
        """Fixed - warped (both scaled 0-1): 0 where they agree."""
        inp = self._inputs()
        diff = qc.difference(inp.fixed, inp.warped)
        self._show_view("difference")
        return self._layer("difference", diff, colormap="twilight_shifted",
                           contrast_limits=(-1.0, 1.0))

    def edges(self) -> Any:
        """The fixed image's edges (green) over the warped image."""
        inp = self._inputs()
        self.warped_layer()
        sigma = float(np.max(np.linalg.norm(inp.affine[:-1, :-1], axis=0)))
        mask = qc.edges(inp.fixed, inp.affine, sigma_mm=sigma).astype(np.uint8)
        self._show_view("fixed edges")
        return self._layer("fixed edges", mask, colormap="green", blending="additive",
                           contrast_limits=(0.0, 1.0))

    def local_mismatch(self) -> Any:
        """``1 - |local NCC|`` in a window of about the checker square / 2 (at least 2 voxels):
        0 where structures line up even across modalities (a T2's inverted contrast)."""
        inp = self._inputs()
        radius = max(2.0 * float(qc._spacing(inp.affine).max()), float(self.square.value) / 4)
        mismatch = 1.0 - np.abs(qc.local_ncc_map(inp.fixed, inp.warped, inp.affine, radius))
        self._show_view("local mismatch")
        return self._layer("local mismatch", mismatch.astype(np.float32), colormap="inferno",
                           contrast_limits=(0.0, 1.0))

    def _step_aside(self) -> None:
        """Hide what would cover the QC warped layer (live layers, the moving image)."""
        names = {LIVE_LAYER_NAME, ALIGNMENT_LAYER_NAME}
        moving = self._session.moving_layer
        for lyr in self._viewer.layers:
            if (lyr.name in names or lyr is moving) and lyr.visible:
                self._aside[lyr] = True
                lyr.visible = False
        warped = self._find("warped")
        if warped is not None:  # on top of everything else
            self._viewer.layers.move(self._viewer.layers.index(warped),
                                     len(self._viewer.layers))

    def _step_back(self) -> None:
        for lyr in list(self._aside):
            if lyr in self._viewer.layers:
                lyr.visible = True
        self._aside = {}

    def _flicker(self, on: bool) -> None:
        if on:
            try:
                self.warped_layer()
            except ValueError as exc:
                show_error(str(exc))
                self.flicker.value = False
                return
            self._step_aside()
            self._timer.setInterval(int(self.flicker_ms.value))
            self._timer.start()
        else:
            self._timer.stop()
            layer = self._find("warped")
            if layer is not None:
                layer.visible = True
            if self.fade.value >= 1.0:
                self._step_back()

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
        self._step_aside()

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
        self.status.value = (f"Jacobian {jac.min():.3f} .. {jac.max():.3f}; folded "
                             f"{100 * qc.folding_fraction(jac):.3f} % of voxels")
        self._show_view("Jacobian determinant", "folds", "deformed grid")
        self._grid = (inp.transform, shape, affine)
        view = [upsert_layer(self._viewer, QC_PREFIX + "Jacobian determinant",
                             jac.astype(np.float32), affine, colormap="PiYG",
                             contrast_limits=(0.0, 2.0)),
                upsert_layer(self._viewer, QC_PREFIX + "folds", folds, affine, "labels",
                             colormap=DirectLabelColormap(color_dict={
                                 None: "transparent", 0: "transparent", 1: "red"})),
                self._refresh_grid()]
        return view[0], view[1], view[2]

    def _refresh_grid(self, *_args: Any) -> Any:
        """Draw the deformed grid in the viewed plane (again after a slice change)."""
        if self._grid is None or self._viewer.dims.ndim != 3:
            return None
        transform, shape, affine = self._grid
        normal = (self._viewer.dims.not_displayed or (self._viewer.dims.order[0],))[0]
        position = float(self._viewer.dims.point[normal])
        key = (id(transform), normal, position, bool(self.grid_linear.value),
               float(self.grid_mm.value))
        layer = self._find("deformed grid")
        if layer is not None and key == self._grid_key:
            return layer  # the same plane (a dims event of our own layer change)
        self._grid_key = key
        linear = None
        if self.grid_linear.value:  # the linear part of the map: the result's, else its own
            outcome = self._session.outcome
            linear = (outcome.result.matrix if self.source.value == "result" and outcome
                      else np.asarray(transform.matrix) if transform.is_linear
                      else getattr(transform, "affine_matrix", None))
        lines = qc.grid_lines(transform, shape, affine, float(self.grid_mm.value), normal,
                              position, without=linear)
        if layer is None:
            return self._viewer.add_vectors(lines, name=QC_PREFIX + "deformed grid",
                                            edge_color="yellow", edge_width=0.4,
                                            vector_style="line", length=1.0)
        layer.data = lines
        return layer

    def surfaces_3d(self) -> tuple[Any, Any]:
        """Iso-surfaces of fixed (cyan) and warped (magenta) in a 3D view: where one
        surface shows through the other, the images disagree."""
        inp = self._inputs()
        self._show_view("3D fixed", "3D warped")
        out = []
        for what, data, colour in (("3D fixed", inp.fixed, "cyan"),
                                   ("3D warped", inp.warped, "magenta")):
            level = float(np.percentile(data[data > 0], 40)) if (data > 0).any() else 0.5
            layer = self._layer(what, np.asarray(data, np.float32), colormap=colour,
                                rendering="iso", iso_threshold=level,
                                blending="translucent", opacity=0.6 if "warped" in what else 1.0)
            out.append(layer)
        self._step_aside()
        for lyr in self._viewer.layers:  # only the two surfaces in the 3D view
            if lyr not in out and lyr.visible:
                self._aside[lyr] = True
                lyr.visible = False
        self._viewer.dims.ndisplay = 3
        return out[0], out[1]

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
