"""Where a landmark click lands: ids for new points, and 3D clicks put on what is shown.

In a 2D view a click is a point on the displayed slice. In a 3D view napari's Points
layer adds the click at the depth of its ray's entry into the layer's box (or wherever
the camera puts it): an arbitrary depth that looks right only from that angle. Here a 3D
click is moved along its ray onto what the user sees of the image it belongs to:

* a plane depiction: the ray's intersection with the displayed slicing plane;
* MIP / attenuated MIP: the brightest sample along the ray (what the pixel shows);
  MinIP the darkest one;
* iso-surface: the first sample at or above the iso threshold;

and refused, with a message, when the ray misses the image, meets only background, or
the rendering has no surface (translucent, additive, average).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["Ray", "surface_point", "record_ray"]

_STEP_VOXELS = 0.5  # sampling step along a ray, in voxels of the image


@dataclass
class Ray:
    """A click in a 3D view: world position, unit view direction, displayed dims."""

    position: np.ndarray
    direction: np.ndarray
    dims_displayed: list[int]


def record_ray(store: dict, key: Any):
    """A Points-layer mouse callback that keeps the ray of the last press in
    ``store[key]`` (None for a 2D click); it must run before napari's add mode."""

    def on_press(_layer: Any, event: Any) -> None:
        direction = getattr(event, "view_direction", None)
        dims = list(getattr(event, "dims_displayed", ()) or ())
        if direction is not None and len(dims) == 3:
            store[key] = Ray(np.asarray(event.position, dtype=float),
                             np.asarray(direction, dtype=float), dims)
        else:
            store[key] = None

    return on_press


def _plane_point(image: Any, start: np.ndarray, end: np.ndarray,
                 dims: list[int]) -> np.ndarray | None:
    plane = image.plane
    p0, normal = np.asarray(plane.position, float), np.asarray(plane.normal, float)
    a, b = start[dims], end[dims]
    denom = float(np.dot(normal, b - a))
    if abs(denom) < 1e-12:
        return None  # the ray runs along the plane
    t = float(np.dot(normal, p0 - a)) / denom
    if not 0.0 <= t <= 1.0:
        return None
    return start + t * (end - start)


def surface_point(image: Any, ray: Ray) -> tuple[np.ndarray | None, str]:
    """The data coordinates (of ``image``) where ``ray`` meets the displayed image.

    Returns ``(point, "")`` or ``(None, message)`` with the reason the click is refused.
    """
    start, end = image.get_ray_intersections(ray.position, ray.direction, ray.dims_displayed,
                                             world=True)
    if start is None or end is None:
        return None, "That 3D click misses the image; no landmark was added."
    start, end = np.asarray(start, float), np.asarray(end, float)
    dims = list(ray.dims_displayed)
    if getattr(image, "depiction", "volume") == "plane":
        point = _plane_point(image, start, end, dims)
        if point is None:
            return None, ("That 3D click does not meet the displayed plane; no landmark "
                          "was added.")
        return point, ""
    rendering = str(getattr(image, "rendering", ""))
    if rendering not in ("mip", "attenuated_mip", "minip", "iso"):
        return None, (f"A 3D click on an image rendered as '{rendering}' has no surface to "
                      "land on: use MIP, iso-surface or the plane depiction, or click in a "
                      "2D view. No landmark was added.")
    n = max(2, int(np.ceil(np.linalg.norm(end - start) / _STEP_VOXELS)) + 1)
    samples = start[None, :] + np.linspace(0.0, 1.0, n)[:, None] * (end - start)[None, :]
    data = np.asarray(image.data)
    values = ndimage.map_coordinates(data, samples.T, order=1, mode="nearest")
    low = float(image.contrast_limits[0])
    if rendering == "iso":
        hits = np.flatnonzero(values >= float(image.iso_threshold))
        k = int(hits[0]) if hits.size else -1
    elif rendering == "minip":
        k = int(np.argmin(values))
    else:
        k = int(np.argmax(values))
    if k < 0 or (rendering != "minip" and values[k] <= low):
        return None, ("That 3D click meets only background along its ray; no landmark "
                      "was added.")
    return samples[k], ""
