"""Atlas panel: segment a subject by registering labelled atlases and fusing their labels.

The user picks the subject (an Image layer), one or more atlases (an Image layer and its
Labels layer each, or a pair of files opened through the plugin's reader) and, optionally,
a ground-truth Labels layer for a Dice report. Run calls
:func:`napari_reg.core.atlas.fusion.segment_with_atlases` on a worker thread (the shared
``_worker`` bridge: progress polled from the GUI thread, Stop honoured within an
iteration) and shows the fused labels as a Labels layer placed exactly on the subject.

Geometry: every layer is taken with its displayed voxel->world matrix (RAS mm), so the
registrations run in the world the user sees; the fused labels live on the subject grid
and get the subject layer's matrix.
"""

from __future__ import annotations

import functools
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from ..core.atlas.fusion import (
    FUSION_METHODS,
    SIMILARITIES,
    AtlasProgress,
    dice_table,
    segment_with_atlases,
)
from ..core.atlas.labels import PROPAGATION_METHODS, Atlas, modality_check
from ..core.engine import presets
from ..layers import volume_to_layer_data
from ..runs import BackgroundRun, RunController, RunEnd, RunStatus
from ._layer_volumes import layer_volume
from ._panel_close import PanelCloseWatcher
from ._session import unwrap_viewer
from ._tooltips import apply_tooltips
from ._worker import RunTicker

__all__ = ["AtlasWidget", "FUSED_LAYER_NAME", "transform_choices"]

FUSED_LAYER_NAME = "fused labels"
_FILE_FILTER = "Images (*.nii *.nii.gz *.mgz *.mgh *.img *.hdr);;All (*)"
_METRICS = [("MI (mutual information)", "mi"), ("NCC (correlation)", "ncc"),
            ("SSD (squared differences)", "ssd")]


def transform_choices() -> list[str]:
    """Models ``register()`` offers now: the linear ones, plus deformable stages once the
    driver exports them (``DEFORMABLE_MODELS`` / ``STAGES`` / ``TRANSFORMS``)."""
    names = list(presets.LINEAR_MODELS)
    for attr in ("DEFORMABLE_MODELS", "STAGES", "TRANSFORMS"):
        names += [n for n in getattr(presets, attr, ()) if n not in names]
    return names


class _AtlasRow(Container):
    """One atlas: its image layer and its labels layer."""

    def __init__(self, images, labels, index: int):
        super().__init__(layout="horizontal", labels=False)
        self.image = ComboBox(choices=images, nullable=True, tooltip=f"atlas {index} image")
        self.labels = ComboBox(choices=labels, nullable=True, tooltip=f"atlas {index} labels")
        self.extend([Label(value=f"{index}."), self.image, self.labels])


class AtlasWidget(Container):
    """Multi-atlas segmentation of the chosen subject (Run/Stop, progress, Dice report)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self.subject = ComboBox(label="Subject", choices=self._image_choices, nullable=True)
        self.rows = Container(labels=False)
        self.add_row = PushButton(text="Add atlas (layers)")
        self.remove_row = PushButton(text="Remove last atlas")
        self.image_file = FileEdit(label="Atlas image file", mode="r", filter=_FILE_FILTER)
        self.labels_file = FileEdit(label="Atlas labels file", mode="r", filter=_FILE_FILTER)
        self.open_files = PushButton(text="Open atlas files")
        self.truth = ComboBox(label="Ground truth", choices=self._label_choices, nullable=True,
                              tooltip="Optional labels on the subject grid: Dice per label")
        self.transform = ComboBox(label="Transform", choices=transform_choices(),
                                  value="affine")
        self.metric = ComboBox(label="Metric", choices=_METRICS)
        self.propagation = ComboBox(label="Label propagation", choices=list(PROPAGATION_METHODS))
        self.fusion = ComboBox(label="Fusion", choices=list(FUSION_METHODS), value="weighted")
        self.similarity = ComboBox(label="Local similarity", choices=list(SIMILARITIES))
        self.radius = FloatSpinBox(label="Window radius (mm)", min=0.5, max=50.0, step=0.5,
                                   value=3.0)
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(value="")
        self.report = Label(value="")
        self.report.native.setStyleSheet("font-family: monospace")
        self.extend([self.subject, Label(value="Atlases (image, labels):"), self.rows,
                     self.add_row, self.remove_row, self.image_file, self.labels_file,
                     self.open_files, self.truth, self.transform, self.metric,
                     self.propagation, self.fusion, self.similarity, self.radius,
                     self.run_button, self.stop_button, self.progress, self.status,
                     self.report])
        self.add_row.clicked.connect(lambda: self.add_atlas_row())
        self.remove_row.clicked.connect(lambda: self.remove_atlas_row())
        self.open_files.clicked.connect(self.open_atlas_files)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.fusion.changed.connect(self._on_fusion)
        self.runs = RunController("napari-reg-atlas")
        self.runs.progress.connect(self._on_progress)
        self.runs.finished.connect(self._on_finished)
        self._ticker = RunTicker(self.runs)
        self._confirmed: tuple | None = None  # settings the user chose to run despite a warning
        self.result = None
        events = viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.connect(self._refresh)
        self.native.destroyed.connect(self._shutdown)
        self._close_watcher = PanelCloseWatcher(self.native, self.runs.abandon)
        self.add_atlas_row()
        self._guess_subject()

    # ------------------------------------------------------------------ choices
        apply_tooltips(self)  # what each control does, in which units
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Image)]

    def _label_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Labels)]

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()

    def _guess_subject(self) -> None:
        images = self._image_choices()
        if self.subject.value is None and images:
            self.subject.value = images[0][1]

    def _on_fusion(self, value: str) -> None:
        self.similarity.enabled = self.radius.enabled = value == "weighted"

    def _shutdown(self, *_args: Any) -> None:
        self.runs.abandon()
        self._ticker.stop()
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.disconnect(self._refresh)

    # ------------------------------------------------------------------ atlases
    def add_atlas_row(self, image: Any = None, labels: Any = None) -> _AtlasRow:
        """Append an atlas row (optionally preset to the given layers)."""
        row = _AtlasRow(self._image_choices, self._label_choices, len(self.rows) + 1)
        self.rows.append(row)
        if image is not None:
            row.image.value = image
        if labels is not None:
            row.labels.value = labels
        return row

    def remove_atlas_row(self) -> None:
        if len(self.rows) > 1:
            self.rows.pop()

    def open_atlas_files(self) -> _AtlasRow | None:
        """Open the chosen image and labels files (plugin reader: file affines kept)."""
        paths = [str(e.value) if e.value else "" for e in (self.image_file, self.labels_file)]
        if any(not p or p == "." for p in paths):
            show_error("Choose both an atlas image file and its labels file first.")
            return None
        try:
            image = self._viewer.open(paths[0], plugin="napari-reg")[0]
            labels = self._as_labels(self._viewer.open(paths[1], plugin="napari-reg")[0])
        except Exception as exc:  # noqa: BLE001 - any reader failure goes to the user
            show_error(f"Cannot open the atlas files: {exc}")
            return None
        self.reset_choices()
        empty = [r for r in self.rows if r.image.value is None and r.labels.value is None]
        row = empty[0] if empty else self.add_atlas_row()
        row.image.value, row.labels.value = image, labels
        return row

    def _as_labels(self, layer: Any) -> Any:
        """A Labels layer for a label file the reader took for an image (float-stored)."""
        if isinstance(layer, Labels):
            return layer
        data = np.asarray(layer.data)
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            self._viewer.layers.remove(layer)
            raise ValueError(f"'{layer.name}' holds non-integer values: not a label map")
        self._viewer.layers.remove(layer)
        return self._viewer.add_labels(data.astype(np.int32), name=layer.name,
                                       affine=layer.affine, metadata=dict(layer.metadata))

    def atlases(self) -> list[Atlas]:
        """The chosen atlases as core objects; clear errors for incomplete rows."""
        out = []
        for k, row in enumerate(self.rows, start=1):
            if row.image.value is None and row.labels.value is None:
                continue
            if row.image.value is None or row.labels.value is None:
                raise ValueError(f"Atlas {k} needs both an image and a labels layer.")
            out.append(Atlas(layer_volume(row.image.value), layer_volume(row.labels.value),
                             row.image.value.name))
        if not out:
            raise ValueError("Choose at least one atlas (an image and its labels layer).")
        return out

    # ------------------------------------------------------------------ run
    @property
    def running(self) -> bool:
        return self.runs.running

    def run(self) -> BackgroundRun | None:
        """Start the segmentation on a worker thread (with messages for bad input)."""
        if self.running:
            show_info("A segmentation is already running: wait for it or press Stop.")
            return None
        if self.subject.value is None:
            show_error("Choose the subject image first.")
            return None
        try:
            subject = layer_volume(self.subject.value)
            atlases = self.atlases()
            truth = layer_volume(self.truth.value) if self.truth.value is not None else None
        except ValueError as exc:
            show_error(str(exc))
            return None
        if not self._metric_confirmed(subject, atlases):
            return None
        target = functools.partial(
            segment_with_atlases, subject, atlases, transform=self.transform.value,
            metric=self.metric.value, propagation=self.propagation.value,
            fusion=self.fusion.value, similarity=self.similarity.value,
            radius_mm=float(self.radius.value), truth=truth)
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.progress.value = 0
        self.status.value = f"Registering atlas 1/{len(atlases)}..."
        return self.runs.start(target)

    def _metric_confirmed(self, subject, atlases) -> bool:
        """Ask (once per setting) before running an intensity metric across contrasts."""
        key = (self.metric.value, self.subject.value.name, tuple(a.name for a in atlases))
        messages = [m for a in atlases
                    if (m := modality_check(subject, a.image, self.metric.value, warn=False))]
        if not messages or self._confirmed == key:
            return True
        self._confirmed = key
        show_warning(messages[0] + ". Press Run again to proceed anyway.")
        self.status.value = "Metric/contrast warning: choose MI, or press Run again."
        return False

    def stop(self) -> None:
        if self.runs.running:
            self.runs.stop()
            self.status.value = "Stopping..."

    def _on_progress(self, events: list) -> None:
        last = events[-1]
        if not isinstance(last, AtlasProgress):
            return
        share = 100.0 / last.n_atlases
        done = last.atlas_index * share
        if last.phase == "register" and last.event is not None:
            e = last.event
            level_part = (e.level + min(1.0, (e.iteration + 1) / max(e.max_iterations, 1)))
            done += 0.9 * share * level_part / max(e.n_levels, 1)
            self.status.value = (f"Registering atlas {last.atlas_index + 1}/{last.n_atlases}: "
                                 f"{e.stage_name}, level {e.level + 1}/{e.n_levels}")
        elif last.phase == "propagate":
            done += 0.95 * share
            self.status.value = f"Propagating atlas {last.atlas_index + 1} labels..."
        elif last.phase in ("fuse", "done"):
            done = 100.0
            self.status.value = "Fusing labels..."
        self.progress.value = int(min(100, done))

    def _on_finished(self, end: RunEnd) -> None:
        self.run_button.enabled, self.stop_button.enabled = True, False
        if end.status is RunStatus.STOPPED:
            self.status.value = "Stopped."
            show_info("Segmentation stopped; nothing was added.")
            return
        if end.status is RunStatus.FAILED:
            self.status.value = "Failed."
            show_error(f"Segmentation failed: {end.error}")
            return
        self.result = result = end.result
        data, meta, _ = volume_to_layer_data(result.labels, "labels", name=FUSED_LAYER_NAME)
        existing = [lyr for lyr in self._viewer.layers
                    if isinstance(lyr, Labels) and lyr.name == FUSED_LAYER_NAME]
        if existing:  # a re-run replaces the previous result in place
            existing[0].data = data
            existing[0].affine = meta["affine"]
        else:
            self._viewer.add_labels(data, **meta)
        for note in result.notes:
            show_warning(note)
        self.progress.value = 100
        self.report.value = dice_table(result.dice) if result.dice else ""
        self.status.value = (f"Done: {len(result.atlas_labels)} atlas(es), {result.method} "
                             f"fusion, labels {result.values.tolist()}.")
