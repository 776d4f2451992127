"""Motion panel: correct a 4D Image layer frame by frame, live in napari's time axis.

Thin on purpose: the work is :class:`napari_reg.motion.live.MotionCorrection` (Qt-free),
run on a background thread by the shared :class:`~napari_reg.runs.RunController`. Each
finished frame arrives as a ``FrameStep``: its corrected volume goes into the
"<series> corrected" layer (a view of the correction's own array, so only a refresh is
needed), the rotation/translation/FD traces grow, frames above the FD threshold are
listed, and (with "Follow") the time slider moves to it. Clicking a trace moves the time
slider to that frame. Export writes the same output set as ``napari-reg motion``.

Geometry: the series layer's displayed data->world matrix must keep time apart from space
(what the reader gives a 4D file: a 5x5 affine whose first axis is time); every frame is
registered to the reference in world RAS mm, transforms map reference -> frame.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from ..core.image import Volume
from ..core.motion import MOTION_TRANSFORMS, MotionSettings
from ..core.resample import resample
from ..layers import shows_display_copy, stack_from_layer_data, state_world_affine
from ..motion.live import FrameStep, MotionCorrection
from ..runs import BackgroundRun, RunController, RunEnd, RunStatus
from ._layer_volumes import layer_volume, source_path
from ._panel_close import PanelCloseWatcher
from ._session import unwrap_viewer
from ._tooltips import apply_tooltips
from ._worker import RunTicker
from .motion_plot import MotionPlot

__all__ = ["MotionWidget", "CORRECTED_SUFFIX"]

CORRECTED_SUFFIX = " corrected"
_REFERENCES = [("first frame", "first"), ("mean of all frames", "mean"),
               ("frame number below", "index")]
_METRICS = [("NCC (robust to drift)", "ncc"), ("MI (mutual information)", "mi"),
            ("SSD (squared differences)", "ssd")]


def _series_of(layer: Image) -> tuple[np.ndarray, np.ndarray]:
    """``(data (X, Y, Z, T), 4x4 voxel->world RAS mm)`` of a 4D layer as displayed."""
    meta = {"name": layer.name, "affine": layer.affine.affine_matrix, "scale": layer.scale,
            "translate": layer.translate, "rotate": layer.rotate, "shear": layer.shear,
            # an oblique series is shown as an axis-aligned copy: the metadata leads back
            # to the file's own voxels, which are what gets registered
            "metadata": layer.metadata}
    return stack_from_layer_data(layer.data, meta)


def _display_grid_of(layer: Image) -> tuple[tuple[int, ...], np.ndarray]:
    """``(spatial shape, voxel->world RAS mm)`` of the grid a 4D layer is displayed on."""
    matrix = state_world_affine(4, layer.affine.affine_matrix, layer.scale, layer.translate,
                                layer.rotate, layer.shear)
    return tuple(np.shape(layer.data)[1:]), matrix[1:, 1:]


class MotionWidget(Container):
    """Run / Stop, per-frame progress, live traces, flagged frames, export."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self.series = ComboBox(label="4D series", choices=self._image_choices, nullable=True,
                               tooltip="The time series (a 4D Image layer, time first)")
        self.reference = ComboBox(label="Reference", choices=_REFERENCES,
                                  tooltip="What every frame is registered to")
        self.reference_frame = SpinBox(label="Reference frame", min=0, max=100000, value=0,
                                       tooltip="0-based frame number, with 'frame number "
                                       "below' as Reference")
        self.transform = ComboBox(label="Transform", choices=list(MOTION_TRANSFORMS),
                                  value="rigid", tooltip="Model of each frame's map: rigid "
                                  "(head motion), affine, or bspline / syn after a rigid "
                                  "stage (cardiac, respiratory)")
        self.metric = ComboBox(label="Metric", choices=_METRICS,
                               tooltip="Similarity between a frame and the reference")
        self.mask = ComboBox(label="Mask (optional)", choices=self._label_choices,
                             nullable=True, tooltip="Labels on the series grid: sample only "
                             "where non-zero")
        self.smooth = FloatSpinBox(label="Smooth along time (frames)", min=0.0, max=20.0,
                                   step=0.5, value=0.0, tooltip="Gaussian sigma of the "
                                   "transforms along time (cardiac/respiratory); 0 = off")
        self.threshold = FloatSpinBox(label="FD threshold (mm)", min=0.01, max=100.0,
                                      step=0.1, value=0.5, tooltip="Frames whose "
                                      "framewise displacement (Power 2012, mm) exceeds "
                                      "this are flagged")
        self.follow = CheckBox(label="Follow frames", value=True,
                               tooltip="Move the time slider to each frame as it finishes")
        self.run_button = PushButton(text="Run", tooltip="Register every frame to the "
                                     "reference on a worker thread")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="Stop within a second; frames done are kept")
        self.progress = ProgressBar(label="Frames", min=0, max=1, value=0)
        self.status = Label(value="")
        self.flagged_label = Label(value="")
        self.export_dir = FileEdit(label="Export folder", mode="d",
                                   tooltip="Folder for corrected.nii.gz, transforms/, "
                                   "motion.tsv, run.json (no existing file is replaced)")
        self.export_button = PushButton(text="Export (corrected, transforms, motion.tsv)",
                                        enabled=False, tooltip="Write the output set of "
                                        "napari-reg motion into the export folder")
        self.extend([self.series, self.reference, self.reference_frame, self.transform,
                     self.metric, self.mask, self.smooth, self.threshold, self.follow,
                     self.run_button, self.stop_button, self.progress, self.status,
                     self.flagged_label, self.export_dir, self.export_button])
        self.plot = MotionPlot()
        self.native.layout().addWidget(self.plot)
        self.correction: MotionCorrection | None = None
        self.corrected_layer: Image | None = None
        # (shape, voxel->world) of the displayed grid when the series is an oblique copy
        self._display_target: tuple[tuple[int, ...], np.ndarray] | None = None
        self.runs = RunController("napari-reg-motion")
        self.runs.progress.connect(self._on_progress)
        self.runs.finished.connect(self._on_finished)
        self.exports = RunController("napari-reg-motion-export")
        self.exports.finished.connect(self._on_exported)
        self._tickers = [RunTicker(self.runs), RunTicker(self.exports)]
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.export_button.clicked.connect(self.export)
        self.threshold.changed.connect(self._redraw)
        self.plot.frame_clicked.connect(self.go_to_frame)
        viewer.dims.events.current_step.connect(self._on_step)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._refresh)
        self.native.destroyed.connect(self._shutdown)
        self._close_watcher = PanelCloseWatcher(self.native, self.runs.abandon)
        self._guess_series()

    # ------------------------------------------------------------------ choices
        apply_tooltips(self)  # what each control does, in which units
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Image)
                and not lyr.name.endswith(CORRECTED_SUFFIX)]

    def _label_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Labels)]

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()
        self._guess_series()

    def _guess_series(self) -> None:
        if self.series.value is None:
            four_d = [lyr for _, lyr in self._image_choices() if lyr.ndim == 4]
            if four_d:
                self.series.value = four_d[0]

    def _shutdown(self, *_args: Any) -> None:
        self.runs.abandon()
        for ticker in self._tickers:
            ticker.stop()
        self._viewer.dims.events.current_step.disconnect(self._on_step)
        for ev in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            ev.disconnect(self._refresh)

    # ------------------------------------------------------------------ run
    @property
    def running(self) -> bool:
        return self.runs.running

    def settings(self) -> MotionSettings:
        reference = (int(self.reference_frame.value) if self.reference.value == "index"
                     else self.reference.value)
        return MotionSettings(transform=self.transform.value, metric=self.metric.value,
                              reference=reference,
                              smooth_sigma_frames=float(self.smooth.value))

    def run(self) -> BackgroundRun | None:
        """Start correcting the chosen series (bad input: one notification, nothing run)."""
        if self.running:
            show_info("A motion correction is already running: wait for it or press Stop.")
            return None
        layer = self.series.value
        if layer is None:
            show_error("Choose a 4D Image layer (a time series) first.")
            return None
        try:
            data, affine = _series_of(layer)
            mask = layer_volume(self.mask.value) if self.mask.value is not None else None
            correction = MotionCorrection(data, affine, self.settings(), mask,
                                          header=(layer.metadata or {}).get("header"),
                                          source=source_path(layer) or "")
        except ValueError as exc:
            show_error(f"{layer.name}: {exc}")
            return None
        self.correction = correction
        self._show_corrected(layer, correction)
        self.plot.set_frames(correction.n_frames)
        self.plot.set_current(int(self._viewer.dims.current_step[0]))
        self.progress.max, self.progress.value = correction.n_frames, 0
        self.flagged_label.value = ""
        self.status.value = f"Registering frame 1/{correction.n_frames}..."
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.export_button.enabled = False
        return self.runs.start(functools.partial(correction.run))

    def _show_corrected(self, layer: Image, correction: MotionCorrection) -> None:
        """The corrected series as a layer that views the correction's array (T first).

        An oblique series is registered on the file's voxels but shown resliced on an
        axis-aligned grid; its corrected frames are resliced the same way as they arrive
        (:meth:`_fill_display`), so both layers sit on the same displayed grid.
        """
        view = np.moveaxis(correction.corrected, 3, 0)
        self._display_target = None
        if shows_display_copy(layer):
            shape, grid = _display_grid_of(layer)
            self._display_target = (shape, grid)
            view = np.zeros((correction.n_frames, *shape), np.float32)
        name = layer.name + CORRECTED_SUFFIX
        existing = [lyr for lyr in self._viewer.layers if lyr.name == name]
        if existing:
            self.corrected_layer = existing[0]
            self.corrected_layer.data = view
        else:
            self.corrected_layer = self._viewer.add_image(
                view, name=name, affine=layer.affine.affine_matrix, scale=layer.scale,
                translate=layer.translate, contrast_limits=layer.contrast_limits,
                colormap="gray", blending="translucent",
                metadata={"source_series": layer.name})

    def stop(self) -> None:
        if self.runs.running:
            self.runs.stop()
            self.status.value = "Stopping..."

    def _on_progress(self, events: list) -> None:
        steps = [e for e in events if isinstance(e, FrameStep)]
        if not steps or self.correction is None:
            return
        if self.corrected_layer is not None:
            self._fill_display(steps)
            self.corrected_layer.refresh()
        last = steps[-1]
        done = len(self.correction.results)
        self.progress.value = done
        verb = "Smoothed" if last.kind == "smoothed" else "Registered"
        self.status.value = (f"{verb} frame {last.index + 1}/{last.n_frames} "
                             f"({last.seconds:.1f} s); {done} done")
        self._redraw()
        if self.follow.value:
            self.go_to_frame(last.index, follow=True)

    def _fill_display(self, steps: list[FrameStep]) -> None:
        """Reslice finished frames of an oblique series onto the displayed grid."""
        if self._display_target is None or self.correction is None:
            return
        shape, grid = self._display_target
        target = Volume(np.broadcast_to(np.float32(0), shape), grid, "display grid")
        shown = np.asarray(self.corrected_layer.data)
        for step in steps:
            frame = Volume(step.corrected, self.correction.affine, "corrected frame")
            fill = float(np.nanmin(step.corrected)) if step.corrected.size else 0.0
            shown[step.index] = resample(frame, target, np.eye(4), fill=fill).data

    def _redraw(self, _value: Any = None) -> None:
        if self.correction is None:
            return
        self.plot.set_data(self.correction.parameters(),
                           self.correction.framewise_displacement(), self.threshold.value)
        flagged = self.plot.flagged()
        self.flagged_label.value = (
            f"Flagged (FD > {self.threshold.value:g} mm): "
            + (", ".join(map(str, flagged)) if flagged else "none"))

    def _on_finished(self, end: RunEnd) -> None:
        self.run_button.enabled, self.stop_button.enabled = True, False
        self._redraw()
        if end.status is RunStatus.STOPPED:
            self.status.value = "Stopped: the frames done so far are shown."
            return
        if end.status is RunStatus.FAILED:
            self.status.value = "Failed."
            show_error(f"Motion correction failed: {end.error}")
            return
        self.progress.value = self.progress.max
        fd = self.correction.framewise_displacement()
        self.status.value = (f"Done: {self.correction.n_frames} frames in {end.seconds:.1f} s, "
                             f"mean FD {np.nanmean(fd):.3f} mm.")
        self.export_button.enabled = True

    # ------------------------------------------------------------------ time axis
    def go_to_frame(self, frame: int, follow: bool = False) -> None:
        """Show ``frame`` (the time slider, axis 0); a click stops following the run."""
        if not follow:
            self.follow.value = False
        self._viewer.dims.set_current_step(0, int(frame))

    def _on_step(self, _event: Any = None) -> None:
        if self._viewer.dims.ndim >= 4:
            self.plot.set_current(int(self._viewer.dims.current_step[0]))

    # ------------------------------------------------------------------ export
    def export(self) -> BackgroundRun | None:
        """Write the output set into the chosen folder on a background thread."""
        if self.correction is None or not self.correction.complete:
            show_error("Run the motion correction to the end first.")
            return None
        folder = Path(str(self.export_dir.value or ""))
        if not str(self.export_dir.value or "").strip() or str(folder) == ".":
            show_error("Choose an export folder first.")
            return None
        correction, threshold = self.correction, float(self.threshold.value)
        self.export_button.enabled = False
        self.status.value = f"Exporting to {folder}..."
        return self.exports.start(
            lambda callback, cancel: correction.export(folder, threshold))

    def _on_exported(self, end: RunEnd) -> None:
        self.export_button.enabled = True
        if end.status is RunStatus.DONE:
            self.status.value = f"Exported to {end.result}."
            show_info(f"Motion correction saved in {end.result}")
        else:
            self.status.value = "Export failed."
            show_error(f"Export failed: {end.error}")
