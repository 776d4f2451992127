"""Load panel: choose the fixed and moving images (open layers or files) and a mask.

The fixed image is shown grey, the moving one magenta with additive blending, so
aligned structures look white and misaligned ones grey or magenta. Files go through
napari's reader (``viewer.open``), hence through the plugin's NIfTI reader, so the layer
gets the file's voxel->world affine (RAS mm).
"""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips

__all__ = ["LoadWidget", "style_fixed", "style_moving"]

_FILE_FILTER = "Images (*.nii *.nii.gz *.mgz *.mgh *.img *.hdr *.nrrd *.tif *.tiff);;All (*)"


def style_fixed(layer: Any) -> None:
    """Show ``layer`` as the fixed image: grey, opaque."""
    layer.colormap = "gray"
    layer.blending = "translucent"


def style_moving(layer: Any, opacity: float) -> None:
    """Show ``layer`` as the moving image: magenta, added on top of the fixed one."""
    layer.colormap = "magenta"
    layer.blending = "additive"
    layer.opacity = opacity


class LoadWidget(Container):
    """Pick fixed / moving images and an optional fixed-image mask (a Labels layer)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.fixed = ComboBox(label="Fixed", choices=self._image_choices, nullable=True)
        self.moving = ComboBox(label="Moving", choices=self._image_choices, nullable=True)
        self.mask = ComboBox(label="Fixed mask", choices=self._label_choices, nullable=True,
                             tooltip="Optional Labels layer: only voxels > 0 drive the metric")
        self.moving_mask = ComboBox(
            label="Moving mask", choices=self._label_choices, nullable=True,
            tooltip="Optional Labels layer on the moving image: points mapped where it is 0 "
                    "(missing tissue, a lesion) leave the metric")
        self.fixed_file = FileEdit(label="Fixed file", mode="r", filter=_FILE_FILTER)
        self.open_fixed = PushButton(text="Open as fixed")
        self.moving_file = FileEdit(label="Moving file", mode="r", filter=_FILE_FILTER)
        self.open_moving = PushButton(text="Open as moving")
        self.swap = PushButton(text="Swap fixed / moving")
        self.opacity = FloatSlider(label="Moving opacity", min=0.0, max=1.0, step=0.05,
                                   value=0.7)
        self.info = Label(value="")
        self.extend([self.fixed, self.moving, self.mask, self.moving_mask, self.fixed_file,
                     self.open_fixed, self.moving_file, self.open_moving, self.swap,
                     self.opacity, self.info])

        self.fixed.changed.connect(self._on_roles)
        self.moving.changed.connect(self._on_roles)
        self.mask.changed.connect(self._on_roles)
        self.moving_mask.changed.connect(
            lambda layer: setattr(self._session, "moving_mask_layer", layer))
        self.opacity.changed.connect(self._on_opacity)
        self.swap.clicked.connect(self.swap_roles)
        self.open_fixed.clicked.connect(lambda: self.open_file("fixed"))
        self.open_moving.clicked.connect(lambda: self.open_file("moving"))
        # Works undocked too (tests, scripts); napari also connects these when docked.
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self._refresh)
        self.native.destroyed.connect(self._shutdown)
        self._guess_roles()
        apply_tooltips(self)  # what each control does, in which units

    def _shutdown(self, *_args: Any) -> None:
        """The panel is going away: stop listening to the viewer."""
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.disconnect(self._refresh)

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Image)]

    def _label_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Labels)]

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()
        self._on_roles()

    def _guess_roles(self) -> None:
        """With exactly two images open, take the first as fixed and the second as moving."""
        images = [lyr for _, lyr in self._image_choices()]
        if self.fixed.value is None and self.moving.value is None and len(images) >= 2:
            self.fixed.value, self.moving.value = images[0], images[1]

    # ------------------------------------------------------------------ actions
    def _on_roles(self, _value: Any = None) -> None:
        fixed, moving, mask = self.fixed.value, self.moving.value, self.mask.value
        if fixed is not None and fixed is moving:
            self.info.value = "Fixed and moving are the same layer: choose two images."
        else:
            self.info.value = ""
            if fixed is not None:
                style_fixed(fixed)
            if moving is not None:
                style_moving(moving, self.opacity.value)
        self._session.set_roles(fixed, moving, mask)

    def _on_opacity(self, value: float) -> None:
        if self.moving.value is not None:
            self.moving.value.opacity = float(value)

    def swap_roles(self) -> None:
        """Exchange the fixed and moving images."""
        if self._session.running:
            show_info("A registration is running: stop it before swapping the images.")
            return
        fixed, moving = self.fixed.value, self.moving.value
        self.fixed.value, self.moving.value = moving, fixed
        self._on_roles()

    def open_file(self, role: str) -> Any:
        """Read the chosen file through napari's readers and make it the ``role`` image."""
        edit = self.fixed_file if role == "fixed" else self.moving_file
        path = str(edit.value) if edit.value else ""
        if not path or path == ".":
            show_error(f"Choose a {role} image file first.")
            return None
        try:
            # our reader, explicitly: it keeps the file's voxel->world affine (RAS mm)
            layers = self._viewer.open(path, plugin="napari-reg")
        except Exception as exc:  # noqa: BLE001 - any reader failure goes to the user
            show_error(f"Cannot open {path}: {exc}")
            return None
        images = [lyr for lyr in layers if isinstance(lyr, Image)]
        if not layers:
            return None  # the reader refused the file and already said why
        if not images:
            show_error(f"{path} did not give an image layer.")
            return None
        self.reset_choices()
        combo = self.fixed if role == "fixed" else self.moving
        combo.value = images[0]
        self._on_roles()
        return images[0]
