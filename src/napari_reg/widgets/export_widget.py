"""Export panel: save the transform, the warped image and the run record; apply to layers.

Every write goes through the io writers, which write to a temporary file beside the
target and rename it (atomic). A target that is one of the run's input files, or any
file an open layer was read from, is refused: an export never overwrites an input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from ..core.errors import NapariRegError
from ..core.image import Volume
from ..core.resample import resample
from ..core.transforms.base import Transform
from ..core.transforms.field import DisplacementField
from ..io.atomic import atomic_path
from ..io.displacement_fields import save_displacement_field
from ..io.transform_files import write_itk_transform, write_transform
from ..io.volumes import save_volume
from ..job import Job, run_record
from ..layers import volume_to_layer_data
from ._alignment import get_alignment
from ._layer_volumes import layer_volume, points_world, source_path
from ._notify import guarded
from ._session import RunOutcome, get_session, unwrap_viewer
from ._session_io import restore_viewer_session, save_viewer_session
from ._tooltips import apply_tooltips

__all__ = ["ExportWidget", "ExportError"]


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


class ExportError(NapariRegError):
    """An export that cannot be done (no result, target is an input file, ...)."""


NO_RESULT_TEXT = ("No registration yet (a manual or landmark alignment can be saved: "
                  "Transform from).")
# What each tool's users load: ITK/ANTs/Slicer (.tfm/.mat/.h5 or a .nii.gz field), FSL
# FLIRT (flirt -in MOVING -ref FIXED -applyxfm -init), greedy/c3d/ITK-SNAP (RAS text).
FORMAT_CHOICES = [("ITK / ANTs / Slicer (.tfm .mat .h5; .nii.gz field)", "itk"),
                  ("FSL FLIRT matrix", "fsl"), ("greedy / c3d / ITK-SNAP matrix", "ras")]
SOURCE_CHOICES = [("Last registration", "result"),
                  ("Current manual / landmark alignment", "alignment")]


class ExportWidget(Container):
    """Save or apply the session's last registration result (fixed->moving, RAS mm)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.summary = Label(value=NO_RESULT_TEXT)
        self.transform_file = FileEdit(label="Transform", mode="w",
                                       filter="ITK transform (*.tfm *.txt *.mat *.h5);;"
                                              "Displacement field (*.nii.gz *.nii);;"
                                              "FSL / greedy matrix (*.mat *.txt)",
                                       tooltip="Maps fixed points to moving points. .tfm: "
                                               "ITK affine; .nii.gz: displacement field")
        self.transform_format = ComboBox(
            label="Format", choices=FORMAT_CHOICES, value="itk",
            tooltip="Same map in every format (fixed -> moving). FSL FLIRT: for flirt -in "
                    "MOVING -ref FIXED; greedy / c3d: RAS text, e.g. greedy -it")
        self.transform_source = ComboBox(
            label="Transform from", choices=SOURCE_CHOICES, value="result",
            tooltip="The last registration, or the alignment made by hand or fitted to "
                    "landmarks (Manual and Landmarks panels), without running a registration")
        self.save_transform_button = PushButton(text="Save transform")
        self.warped_file = FileEdit(label="Warped image", mode="w",
                                    filter="NIfTI (*.nii.gz *.nii)")
        self.save_warped_button = PushButton(text="Save warped image")
        self.record_file = FileEdit(label="Run record", mode="w", filter="JSON (*.json)")
        self.save_record_button = PushButton(text="Save run record")
        self.apply_layer = ComboBox(label="Apply to layer", choices=self._layers, nullable=True,
                                    tooltip="A layer in the MOVING image's space: images and "
                                            "labels (nearest neighbour) are resampled onto "
                                            "the fixed grid, points are mapped by T^-1")
        self.apply_button = PushButton(text="Apply transform")
        self.save_session_button = PushButton(
            text="Save session...", tooltip="Inputs, alignment, landmarks, settings and the "
                                             "result in a folder; 'napari-reg register "
                                             "--replay FOLDER' re-runs it")
        self.open_session_button = PushButton(text="Open session...")
        self.extend([self.summary, self.transform_file, self.transform_format,
                     self.transform_source,
                     self.save_transform_button,
                     self.warped_file, self.save_warped_button, self.record_file,
                     self.save_record_button, self.apply_layer, self.apply_button,
                     Container(widgets=[self.save_session_button, self.open_session_button],
                               layout="horizontal", labels=False)])
        self.save_session_button.clicked.connect(guarded(self._save_session_dialog))
        self.open_session_button.clicked.connect(guarded(self._open_session_dialog))
        self.save_transform_button.clicked.connect(guarded(self.save_transform))
        self.save_warped_button.clicked.connect(guarded(self.save_warped))
        self.save_record_button.clicked.connect(guarded(self.save_record))
        self.apply_button.clicked.connect(guarded(self.apply_to_layer))
        self._session.result_changed.connect(self._on_result)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.connect(self.reset_choices)
        self.native.destroyed.connect(self._shutdown)
        self._on_result(self._session.outcome)
        apply_tooltips(self)  # what each control does, in which units

    def _shutdown(self, *_args: Any) -> None:
        """The panel is going away: stop listening to the session and the viewer."""
        self._session.result_changed.disconnect(self._on_result)
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.disconnect(self.reset_choices)

    def _layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers
                if isinstance(lyr, Image | Labels | Points)]

    def _on_result(self, outcome: RunOutcome | None) -> None:
        if outcome is None:
            self.summary.value = NO_RESULT_TEXT
        else:
            self.summary.value = (f"{outcome.moving_layer_name} -> {outcome.fixed_layer_name}, "
                                  f"cost {outcome.result.final_cost:.5g}")

    # ------------------------------------------------------------------ checks
    def _outcome(self) -> RunOutcome:
        if self._session.outcome is None:
            raise ExportError("No registration result yet: run a registration first.")
        return self._session.outcome

    def _target(self, edit: FileEdit, what: str) -> Path:
        value = edit.value
        if not value or str(value) in ("", "."):
            raise ExportError(f"Choose a file name for the {what} first.")
        target = Path(value).expanduser()
        if target.is_dir():
            raise ExportError(f"{target} is a folder; choose a file name for the {what}.")
        protected = {Path(p).resolve() for p in self._input_paths()}
        if target.resolve() in protected:
            raise ExportError(f"Refusing to overwrite the input file {target}; choose another "
                              "name.")
        return target

    def _input_paths(self) -> list[str]:
        paths = [source_path(lyr) for lyr in self._viewer.layers]
        if self._session.outcome is not None:
            paths += list(self._session.outcome.inputs.values())
        return [p for p in paths if p]

    # ------------------------------------------------------------------ actions
    def save_transform(self) -> Path:
        """Write the fixed->moving transform in the chosen format: ITK affine (.tfm/.txt/
        .mat, LPS inside the file), ITK HDF5 (.h5), a displacement field on the fixed grid
        (.nii/.nii.gz, the single-file form of a deformable result), a FLIRT matrix or a
        greedy/c3d RAS matrix."""
        if self.transform_source.value == "alignment":
            transform, fixed, moving = self._current_alignment()
        else:
            outcome = self._outcome()
            transform, fixed, moving = outcome.result.transform, outcome.fixed, outcome.moving
        target = self._target(self.transform_file, "transform")
        fmt = self.transform_format.value
        if fmt == "itk" and _is_nifti(target):
            save_displacement_field(target, transform, reference=fixed)
            show_info(f"Displacement field (fixed -> moving) saved to {target}")
            return target
        if fmt == "itk" and target.suffix.lower() == ".h5":
            if not transform.is_linear:  # the whole map as one DisplacementFieldTransform
                transform = DisplacementField.from_transform(transform, fixed.shape,
                                                             fixed.affine)
            write_transform(transform, target, format="itk-h5")
            show_info(f"ITK HDF5 transform (fixed -> moving) saved to {target}")
            return target
        if not transform.is_linear:
            raise ExportError("This transform is deformable; a matrix file would hold only "
                              "its linear part. Use a .nii.gz (displacement field) or .h5 "
                              "name with the ITK format.")
        if fmt == "itk":
            write_itk_transform(np.asarray(transform.matrix), target)
        else:
            write_transform(np.asarray(transform.matrix), target, format=fmt, fixed=fixed,
                            moving=moving)
        show_info(f"Transform saved to {target}")
        return target

    def _current_alignment(self) -> tuple[Transform, Volume, Volume]:
        """The hand/landmark alignment (fixed file world -> moving file world, RAS mm),
        the fixed image (the field's grid) and the moving image (with its file affine)."""
        fixed_layer, moving_layer = self._session.fixed_layer, self._session.moving_layer
        if fixed_layer is None or moving_layer is None:
            raise ExportError("Choose the fixed and the moving image (Load panel) first.")
        transform = get_alignment(self._viewer).transform
        fixed = layer_volume(fixed_layer, use_file_affine=True)
        return transform, fixed, layer_volume(moving_layer, use_file_affine=True)

    def save_warped(self) -> Path:
        """Write moving(T(x)) on the fixed grid, with the fixed image's affine, as NIfTI."""
        outcome = self._outcome()
        target = self._target(self.warped_file, "warped image")
        if not _is_nifti(target):
            raise ExportError(f"{target.name}: the warped image is saved as NIfTI; use a "
                              ".nii or .nii.gz name.")
        save_volume(outcome.warped, target, header=outcome.fixed.metadata.get("header"))
        show_info(f"Warped image saved to {target}")
        return target

    def save_record(self) -> Path:
        """Write the run record JSON that ``napari-reg register --replay`` re-runs."""
        outcome = self._outcome()
        target = self._target(self.record_file, "run record")
        inputs = outcome.inputs
        missing = [role for role in ("fixed", "moving") if not inputs.get(role)]
        job = Job(fixed=inputs.get("fixed") or f"<layer {outcome.fixed_layer_name}>",
                  moving=inputs.get("moving") or f"<layer {outcome.moving_layer_name}>",
                  parameters=dict(outcome.result.parameters),
                  fixed_mask=inputs.get("fixed_mask"), moving_mask=inputs.get("moving_mask"))
        record = run_record(job, outcome.result)
        record["gui"] = {"fixed_layer": outcome.fixed_layer_name,
                         "moving_layer": outcome.moving_layer_name}
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        if missing:
            show_warning(f"Run record saved to {target}, but the {' and '.join(missing)} "
                         "image was not read from a file, so the record cannot be replayed "
                         "as is.")
        elif outcome.settings.get("landmarks") is not None:
            show_warning(f"Run record saved to {target}; the landmarks came from Points "
                         "layers and are not in it (save them as CSV to replay).")
        else:
            show_info(f"Run record saved to {target}")
        return target

    def apply_to_layer(self) -> Any:
        """Resample a layer from moving space onto the fixed grid as a new layer."""
        outcome = self._outcome()
        layer = self.apply_layer.value
        if layer is None:
            raise ExportError("Choose the layer to apply the transform to.")
        if isinstance(layer, Points):
            return self._apply_to_points(outcome, layer)
        labels = isinstance(layer, Labels)
        volume = layer_volume(layer, use_file_affine=True)
        warped = resample(volume, outcome.fixed, outcome.result.transform,
                          interpolation="nearest" if labels else "linear")
        warped.name = f"{layer.name} (registered)"
        warped.metadata = {}  # no longer the source file's voxels
        data, kwargs, kind = volume_to_layer_data(warped, "labels" if labels else "image")
        if not labels:
            kwargs.update(colormap=layer.colormap, contrast_limits=layer.contrast_limits)
        new = self._viewer.add_labels(data, **kwargs) if kind == "labels" else \
            self._viewer.add_image(data, **kwargs)
        show_info(f"Added '{new.name}' on the fixed grid.")
        return new

    def _apply_to_points(self, outcome: RunOutcome, layer: Any) -> Any:
        """Points are pushed, not pulled: moving-space points go to T^-1(p) in fixed space."""
        transform = outcome.result.transform
        try:
            inverse = transform.inverse()
        except NotImplementedError:
            raise ExportError("This result has no inverse, so points cannot be mapped from "
                              "the moving to the fixed image.") from None
        moving_world = points_world(layer)
        fixed_world = inverse.transform_points(moving_world) if len(moving_world) else \
            moving_world
        new = self._viewer.add_points(fixed_world, name=f"{layer.name} (registered)",
                                      features=layer.features, size=layer.size,
                                      face_color=layer.face_color)
        show_info(f"Added '{new.name}' in the fixed image's space.")
        return new

    # ------------------------------------------------------------------ sessions
    def save_session(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Save the whole session as a folder (see :mod:`napari_reg.session_folder`)."""
        out = save_viewer_session(self._viewer, folder, overwrite=overwrite)
        show_info(f"Session saved to {out} (replay: napari-reg register --replay {out})")
        return out

    def open_session(self, folder: str | Path) -> None:
        """Restore a saved session into this viewer."""
        restore_viewer_session(self._viewer, folder)
        show_info(f"Session {Path(folder).name} restored")

    def _save_session_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.native, "Save the session in a new "
                                                  "(or empty) folder")
        if folder:
            self.save_session(folder)

    def _open_session_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.native, "Open a saved session folder")
        if folder:
            self.open_session(folder)

