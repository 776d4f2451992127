"""QC panel: is the registration right? Views to look at and numbers to compare.

Views, one at a time (layers named "QC ...", see :mod:`._qc_layers`: showing a view
replaces the previous one's layers, and they are drawn above every image, so the
"warped (live)" overlay cannot cover them): a checkerboard of fixed and warped with
squares of a given size in mm; the plain difference; for two modalities the local
mismatch (``1 - |local NCC|``, contrast does not count); the fixed image's edges over
the warped one; a compare view of fixed and warped in grey for flicker (a timer
toggling the warped image) and fade (its opacity); for deformable results the Jacobian
determinant with folds (det <= 0) and a deformed grid drawn as line segments (a Vectors
layer, crisp at any zoom) in the viewed plane, optionally without the affine part;
iso-surfaces of both images in contrasting colours in a 3D view. Views are drawn on the
axis-aligned grid the fixed image is shown on (:mod:`._qc_inputs`). Numbers: a
before/after table of NCC, MI, landmark TRE (mm) and, given label maps, Dice per label.
"Before" is the identity (the images where their files put them). The maths is
:mod:`napari_reg.core.qc`; this panel only gathers inputs and shows layers.
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
from napari.utils.colormaps import Colormap, DirectLabelColormap
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QSizePolicy, QTableWidget, QTableWidgetItem

from ..core import qc
from ._alignment import get_alignment
from ._notify import guarded
from ._qc_inputs import QCInputs, before_after, gather
from ._qc_layers import QC_PREFIX, QCLayers
from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips

__all__ = ["QCWidget", "SOURCE_CHOICES", "QC_PREFIX"]

SOURCE_CHOICES = [("Last registration result", "result"),
                  ("Current alignment (manual / landmarks)", "alignment")]
_DEFORMATION_VOXELS = 1_000_000  # Jacobian on a coarse copy: a field per voxel
# Jacobian determinant over the fixed image: shrinking purple, growing green, kept volume
# (1, the middle of the contrast range) transparent, so the anatomy shows through.
JACOBIAN_COLORMAP = Colormap([[0.56, 0.0, 0.56, 1.0], [1.0, 1.0, 1.0, 0.0],
                              [0.0, 0.55, 0.15, 1.0]], name="jacobian (1 clear)")


def _row(*widgets: Any) -> Container:
    row = Container(widgets=list(widgets), layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)  # no gaps around buttons side by side
    return row


class QCWidget(Container):
    """Checkerboard, difference, mismatch, edges, flicker/fade, Jacobian, grid, 3D, numbers."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.qc_layers = QCLayers(viewer)
        self.source = ComboBox(label="Inspect", choices=SOURCE_CHOICES, value="result")
        self.square = FloatSpinBox(label="Checker square (mm)", min=0.5, max=500.0, step=1.0,
                                   value=10.0)
        self.show_checker = PushButton(text="Checkerboard")
        self.show_difference = PushButton(text="Difference")
        self.show_local = PushButton(text="Mismatch (local NCC)")
        self.show_edges = PushButton(text="Fixed edges over warped")
        self.flicker = CheckBox(text="Flicker warped / fixed")
        self.flicker_ms = SpinBox(label="Flicker period (ms)", min=100, max=5000, step=50,
                                  value=500)
        self.fade = FloatSlider(label="Fade (warped opacity)", min=0.0, max=1.0, step=0.05,
                                value=1.0)
        self.grid_mm = FloatSpinBox(label="Grid spacing (mm)", min=1.0, max=200.0, value=8.0)
        self.grid_linear = CheckBox(text="Grid without the affine part", value=False)
        self.show_deformation = PushButton(text="Jacobian, folds and deformed grid")
        self.show_3d = PushButton(text="3D surfaces")
        self.clear_button = PushButton(text="Clear QC views")
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
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumHeight(2 * self.status.native.fontMetrics().height())
        # magicgui's fixed width would keep the width of the empty text it started with
        self.status.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.extend([self.source, self.square, _row(self.show_checker, self.show_difference),
                     _row(self.show_local, self.show_edges), self.flicker, self.flicker_ms,
                     self.fade, self.grid_mm, self.grid_linear, self.show_deformation,
                     _row(self.show_3d, self.clear_button), self.fixed_points,
                     self.moving_points, self.fixed_labels, self.moving_labels, self.compute])
        self.native.layout().addWidget(self.status.native)  # full width, wrapped
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
        self._grid_key: tuple | None = None  # the plane the deformed grid shows
        self._compared: QCInputs | None = None  # the inputs the compare view shows
        for button, view in ((self.show_checker, self.checkerboard),
                             (self.show_difference, self.difference),
                             (self.show_local, self.local_mismatch),
                             (self.show_edges, self.edges),
                             (self.show_deformation, self.deformation),
                             (self.show_3d, self.surfaces_3d), (self.compute, self.before_after)):
            button.clicked.connect(guarded(view))
        self.clear_button.clicked.connect(self.clear_views)
        self.grid_linear.changed.connect(self._linear_part_changed)
        self.grid_mm.changed.connect(lambda _v: self._refresh_grid())
        for event in ("current_step", "order"):  # the viewed plane moved or turned
            getattr(viewer.dims.events, event).connect(self._refresh_grid)
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
        self._timer.stop()
        self.qc_layers.close()
        for event in ("current_step", "order"):
            getattr(self._viewer.dims.events, event).disconnect(self._refresh_grid)
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
                                if isinstance(lyr, kind) and not lyr.name.startswith(QC_PREFIX)]

    def _drop_inputs(self, *_args: Any) -> None:
        self.inputs = None

    def _inputs(self) -> QCInputs:
        if self.inputs is None:
            self.inputs = gather(self._viewer, self.source.value)
        return self.inputs

    def _show(self, view: str, *specs: tuple[str, np.ndarray, str, dict],
              aside: str = "images") -> list[Any]:
        """Replace the shown QC view by ``specs`` ``(what, data, kind, style)`` on the
        display grid; the user's images are set aside meanwhile (``aside``: see
        :meth:`QCLayers.show`). Stops flicker unless this is the compare view."""
        if view != "compare":
            self._stop_flicker()
        affine = self._inputs().on_display_grid()[2]
        return self.qc_layers.show(view, [(w, d, affine, k, s) for w, d, k, s in specs],
                                   aside)

    def clear_views(self) -> None:
        """Remove every QC layer (flicker stops; the user's layers are as they were)."""
        self._stop_flicker()
        self.qc_layers.clear()

    # ------------------------------------------------------------------ views
    def checkerboard(self) -> Any:
        """Squares of ``square`` mm (world), alternating fixed and warped (both scaled 0-1)."""
        fixed, warped, affine = self._inputs().on_display_grid()
        board = qc.checkerboard(fixed, warped, float(self.square.value), affine)
        return self._show("checkerboard", ("checkerboard", board, "image", {
            "colormap": "gray", "contrast_limits": (0.0, 1.0)}))[0]

    def _square_changed(self, *_args: Any) -> None:
        if self.qc_layers.view == "checkerboard":
            guarded(self.checkerboard)()

    def difference(self) -> Any:
        """Fixed - warped (both scaled 0-1): 0 where they agree (one modality)."""
        fixed, warped, _ = self._inputs().on_display_grid()
        return self._show("difference", ("difference", qc.difference(fixed, warped), "image",
                                         {"colormap": "twilight_shifted",
                                          "contrast_limits": (-1.0, 1.0)}))[0]

    def local_mismatch(self) -> Any:
        """``1 - |local NCC|`` in a window of about 2 voxels (at least 4 mm): dark where
        structures line up whatever the contrasts (a T2's inverted one), bright where
        edges are misplaced (:func:`napari_reg.core.qc.local_mismatch`)."""
        fixed, warped, affine = self._inputs().on_display_grid()
        radius = max(4.0, 2.0 * float(np.linalg.norm(affine[:-1, :-1], axis=0).max()))
        mismatch = qc.local_mismatch(fixed, warped, affine, radius)
        self.status.value = f"Mismatch: window half-width {radius:.1f} mm"
        return self._show("local mismatch", ("local mismatch", mismatch, "image", {
            "colormap": "inferno", "contrast_limits": (0.0, 1.0)}))[0]

    def _grey(self, which: str) -> tuple[str, np.ndarray, str, dict]:
        fixed, warped, _ = self._inputs().on_display_grid()
        data = qc.normalize_intensity(fixed if which == "fixed" else warped, (0.5, 99.5))
        return which, data, "image", {"colormap": "gray", "contrast_limits": (0.0, 1.0)}

    def edges(self) -> Any:
        """The fixed image's edges (green) over the warped image (grey)."""
        fixed, _, affine = self._inputs().on_display_grid()
        sigma = float(np.max(np.linalg.norm(affine[:-1, :-1], axis=0)))
        mask = qc.edges(fixed, affine, sigma_mm=sigma).astype(np.uint8)
        return self._show("edges", self._grey("warped"), ("fixed edges", mask, "image", {
            "colormap": "green", "blending": "additive", "contrast_limits": (0.0, 1.0)}))[1]

    def compare(self) -> tuple[Any, Any]:
        """Fixed and warped (grey, each scaled 0-1) above every other image, which is set
        aside (hidden) meanwhile: flicker toggles the warped one, fade sets its opacity
        (0 = fixed, 1 = warped)."""
        shown = (self.qc_layers.find("fixed"), self.qc_layers.find("warped"))
        if (self.qc_layers.view == "compare" and None not in shown
                and self._compared is self.inputs is not None):
            return shown  # the same images: keep the layers (and the flicker state)
        fixed, warped = self._show("compare", self._grey("fixed"), self._grey("warped"))
        self._compared = self.inputs
        warped.opacity = float(self.fade.value)
        return fixed, warped

    def _flicker(self, on: bool) -> None:
        if not on:
            self._stop_flicker()
            return
        try:
            self.compare()
        except ValueError as exc:
            show_error(str(exc))
            self.flicker.value = False
            return
        self._timer.setInterval(int(self.flicker_ms.value))
        self._timer.start()

    def _stop_flicker(self) -> None:
        self._timer.stop()
        if self.flicker.value:
            self.flicker.value = False
        warped = self.qc_layers.find("warped") if self.qc_layers.view == "compare" else None
        if warped is not None:
            warped.visible = True

    def _toggle(self) -> None:
        warped = self.qc_layers.find("warped") if self.qc_layers.view == "compare" else None
        if warped is None:  # the user removed it or showed another view
            self._stop_flicker()
            return
        warped.visible = not warped.visible

    def _fade(self, value: float) -> None:
        try:
            _, warped = self.compare()
        except ValueError as exc:
            show_error(str(exc))
            return
        warped.opacity = float(value)

    def deformation(self) -> tuple[Any, Any, Any]:
        """Jacobian determinant (1 = volume kept), folds (det <= 0) and a deformed grid,
        on an axis-aligned copy of the fixed grid of at most ~1 M voxels."""
        inp = self._inputs()
        if inp.transform.is_linear:
            raise ValueError("This transform is linear: its Jacobian is one number "
                             f"({np.linalg.det(np.asarray(inp.transform.matrix)[:-1, :-1]):.4f})"
                             " everywhere and nothing can fold.")
        shape, affine = inp.display_reference(_DEFORMATION_VOXELS)
        jac = qc.jacobian_determinant(inp.transform, shape, affine)
        alone = bool(self.grid_linear.value) and inp.linear is not None
        if alone:  # T = A o W: det dT = det A * det dW, so the deformation's own is J / det A
            jac = jac / float(np.linalg.det(np.asarray(inp.linear)[:-1, :-1]))
        spread = max(0.05, float(np.percentile(np.abs(jac - 1.0), 99.5)))
        self.status.value = (f"Jacobian{' of the deformation alone' if alone else ''} "
                             f"{jac.min():.3f} .. {jac.max():.3f}; folded "
                             f"{100 * qc.folding_fraction(jac):.3f} % of voxels")
        self._stop_flicker()
        folds = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                                1: "red"})
        what, data, _, style = self._grey("fixed")  # the anatomy under the maps
        _, jac_layer, fold_layer = self.qc_layers.show("deformation", [
            (what, data, self._inputs().on_display_grid()[2], "image", style),
            ("Jacobian determinant", jac.astype(np.float32), affine, "image",
             {"colormap": JACOBIAN_COLORMAP, "contrast_limits": (1 - spread, 1 + spread),
              "opacity": 0.7}),
            ("folds", (jac <= 0).astype(np.uint8), affine, "labels", {"colormap": folds})],
            aside="images")
        self._grid_key = None
        return jac_layer, fold_layer, self._refresh_grid()

    def _linear_part_changed(self, *_args: Any) -> None:
        if self.qc_layers.view == "deformation":  # the Jacobian changes too
            guarded(self.deformation)()

    def _refresh_grid(self, *_args: Any) -> Any:
        """Draw the deformed grid in the viewed plane, or the three planes through the
        point with the ortho views (again after a slice change).

        Only while the deformation view is shown; never re-adds a grid the user (or the
        viewer closing) removed."""
        dims = self._viewer.dims
        if self.qc_layers.view != "deformation" or self.inputs is None or dims.ndim != 3:
            return None
        layer = self.qc_layers.find("deformed grid")
        if layer is None and self._grid_key is not None:
            return None  # removed: stays removed until the view is shown again
        # the viewed plane; with the ortho views the three planes through the point
        normals = (range(3) if self._session.ortho_views
                   else [(dims.not_displayed or (dims.order[0],))[0]])
        planes = tuple((a, float(dims.point[a])) for a in normals)
        key = (planes, bool(self.grid_linear.value), float(self.grid_mm.value))
        if layer is not None and key == self._grid_key:
            return layer  # the same plane (a dims event of our own layer change)
        self._grid_key = key
        inp = self.inputs
        grid = inp.display_reference(_DEFORMATION_VOXELS)
        lines = np.concatenate([
            qc.grid_lines(inp.transform, *grid, float(self.grid_mm.value), normal, position,
                          linear=inp.linear if self.grid_linear.value else None)
            for normal, position in planes])
        if layer is None:
            return self.qc_layers.add(self._viewer.add_vectors(
                lines, name=QC_PREFIX + "deformed grid", edge_color="darkorange",
                edge_width=0.3, vector_style="line", length=1.0))
        layer.data = lines
        return layer

    def surfaces_3d(self) -> tuple[Any, Any]:
        """Iso-surfaces of fixed (cyan) and warped (orange) in a 3D view, every other layer
        hidden until another view is shown: where the colours interleave, they disagree."""
        fixed, warped, _ = self._inputs().on_display_grid()
        specs = [(what, data, "image", {
            "colormap": colour, "rendering": "iso", "iso_threshold": qc.surface_level(data),
            "blending": "translucent", "contrast_limits": (0.0, float(data.max()) or 1.0)})
            for what, data, colour in (("3D fixed", fixed, "cyan"),
                                       ("3D warped", warped, "orange"))]
        layers = self._show("3D", *specs, aside="all")
        self.qc_layers.enter_3d()
        self._viewer.reset_view()  # the whole head, not the 2D view's zoom
        return layers[0], layers[1]

    # ------------------------------------------------------------------ numbers
    def before_after(self) -> dict[str, tuple[float, float]]:
        """NCC, MI, TRE (mean mm) and Dice per label, before (identity) and after."""
        out = before_after(self._inputs(), self.fixed_points.value, self.moving_points.value,
                           self.fixed_labels.value, self.moving_labels.value)
        self.numbers = out
        self.table.setRowCount(len(out))
        for r, (name, (b, a)) in enumerate(out.items()):
            for c, text in enumerate((name, f"{b:.4f}", f"{a:.4f}")):
                self.table.setItem(r, c, QTableWidgetItem(text))
        show_info("QC numbers updated (before = images as loaded).")
        return out
