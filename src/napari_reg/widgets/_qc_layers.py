"""The QC panel's layers: one view at a time, drawn above the images, nothing left behind.

Each QC view (checkerboard, difference, compare = flicker / fade, ...) owns a few layers
named ``"QC <what>"``. Showing a view replaces the previous one's layers (running a view
twice updates its layers in place), so the layer list never piles up. A view's layers go
just above the topmost image or label layer that is not a QC layer: the "warped (live)"
overlay, the moving image and any other image drawn above the fixed one end up under
them and cannot cover or tint them, while landmarks (points) stay on top. The user's
layers keep their order. The 2D views also set the user's images aside (hidden: flicker
and fade show the fixed image under the warped one, and the moving image may reach past
the fixed one, where it would tint the view's edges), the 3D view every other layer (a
volume rendering would mix them in); when the view ends they are shown again exactly as
they were.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels

__all__ = ["QC_PREFIX", "QCLayers"]

QC_PREFIX = "QC "


class QCLayers:
    """The QC layers of one viewer; ``view`` names the view shown (None: none)."""

    def __init__(self, viewer: Any):
        self.viewer = viewer
        self.view: str | None = None
        self._hidden: dict[Any, bool] = {}  # user layers set aside -> their visibility
        self._ndisplay: int | None = None  # the user's ndisplay before the 3D view
        viewer.layers.events.removed.connect(self._on_removed)

    def close(self) -> None:
        """Stop following the viewer's layer list (the panel is gone)."""
        self.viewer.layers.events.removed.disconnect(self._on_removed)

    def _on_removed(self, _event: Any = None) -> None:
        """The user deleted the shown view's last layer: the view has ended."""
        if self.view is not None and not self.names():
            self.view = None
            self._restore()

    def find(self, what: str) -> Any:
        return next((lyr for lyr in self.viewer.layers if lyr.name == QC_PREFIX + what), None)

    def names(self) -> list[str]:
        return [lyr.name for lyr in self.viewer.layers if lyr.name.startswith(QC_PREFIX)]

    def show(self, view: str, specs: list[tuple[str, np.ndarray, np.ndarray, str, dict]],
             aside: str = "none") -> list[Any]:
        """Show ``view`` as the layers ``(what, data, affine, kind, style)``, bottom first:
        other QC layers go, these are updated in place or added, above the images.
        ``aside``: which of the user's visible layers to hide while the view is shown,
        ``"none"``, ``"images"`` (image and label layers) or ``"all"``."""
        if view != self.view:  # the same view again keeps its layers (and any added)
            self._end()
        self.view = view
        layers = [self._upsert(QC_PREFIX + what, data, affine, kind, style)
                  for what, data, affine, kind, style in specs]
        self.raise_above_images(layers)
        if aside != "none":
            self._set_aside(aside == "all")
        return layers

    def add(self, layer: Any) -> Any:
        """A layer made elsewhere (e.g. Vectors) that joins the current view, on top of it."""
        self.raise_above_images([*[lyr for lyr in self.viewer.layers
                                   if lyr.name.startswith(QC_PREFIX) and lyr is not layer],
                                 layer])
        return layer

    def clear(self) -> None:
        """Remove every QC layer; the user's layers are as they were before."""
        self._end()
        self.view = None

    def _end(self) -> None:
        """Remove the shown view's layers and bring back what it set aside."""
        for lyr in [lyr for lyr in self.viewer.layers if lyr.name.startswith(QC_PREFIX)]:
            self.viewer.layers.remove(lyr)
        self._restore()

    def _upsert(self, name: str, data: np.ndarray, affine: np.ndarray, kind: str,
                style: dict) -> Any:
        layer = next((lyr for lyr in self.viewer.layers if lyr.name == name), None)
        if layer is not None:  # same view again: new data, the user's style kept
            layer.data = data
            layer.affine = affine
            if kind == "image" and "contrast_limits" in style:
                layer.contrast_limits = style["contrast_limits"]
            layer.visible = True
            return layer
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        return add(data, name=name, affine=affine, **style)

    def raise_above_images(self, layers: list[Any]) -> None:
        """Move ``layers`` (in this order) just above the topmost non-QC image/labels."""
        listed = self.viewer.layers
        for n, layer in enumerate(layers):
            below = layers[:n]  # placed already: this one goes above them
            anchor = max([-1, *[i for i, lyr in enumerate(listed) if lyr in below or (
                isinstance(lyr, Image | Labels) and not lyr.name.startswith(QC_PREFIX))]])
            here = listed.index(layer)
            if here != anchor + 1:  # move() counts the destination before the removal
                listed.move(here, anchor + 1)

    # ------------------------------------------------------------------ set aside
    def _set_aside(self, everything: bool) -> None:
        """Hide the user's visible layers (image and label layers, or ``everything``);
        remembered until the view ends."""
        for lyr in self.viewer.layers:
            if (lyr.name.startswith(QC_PREFIX) or not lyr.visible or lyr in self._hidden
                    or not (everything or isinstance(lyr, Image | Labels))):
                continue
            self._hidden[lyr] = True
            lyr.visible = False

    def enter_3d(self) -> None:
        """Switch to a 3D view (the user's ndisplay comes back when the view ends)."""
        if self._ndisplay is None:
            self._ndisplay = int(self.viewer.dims.ndisplay)
        self.viewer.dims.ndisplay = 3

    def _restore(self) -> None:
        for lyr, visible in self._hidden.items():
            if lyr in self.viewer.layers:
                lyr.visible = visible
        self._hidden = {}
        if self._ndisplay is not None:
            self.viewer.dims.ndisplay = self._ndisplay
            self._ndisplay = None
