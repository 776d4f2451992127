"""Live frames of only the planes on screen, at the display grid's full resolution.

Why: during a run the live layer is redrawn ~10 times a second while the optimiser needs
the CPU (2 cores shared with napari's painting). A 2D view shows one plane of the 3D
volume (ortho views: the three planes through the cursor), so warping the three
orthogonal planes through the current point costs ``n1 n2 + n0 n2 + n0 n1`` voxels
(~130 k for a 1 mm brain) instead of a whole coarse volume (1 M voxels at 2 mm): about
8x less work per frame, at full resolution instead of half. In 3D display, or for a
volume that is not 3D, the caller falls back to a coarse whole volume.

Frames land in one persistent array on the display grid (:class:`PlaneCanvas`); planes
not on screen keep what they last showed until the view moves there, when the next
frame (a tenth of a second later) draws them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["focus_index", "sliced_axes", "plane_grids", "plane_map_step", "PlaneCanvas",
           "PLANE_SAMPLE_MM"]

# A non-linear map is evaluated on a plane every ~4 mm (and interpolated in between), the
# spacing the coarse-volume frames used (every 2nd voxel of a ~2 mm grid): registration
# maps are smooth on that scale (B-spline control points 10 mm apart, SyN's smoothed
# velocity), and evaluating them is what a B-spline frame spends its time on.
PLANE_SAMPLE_MM = 4.0


def plane_map_step(affine: np.ndarray, minimum: int = 2) -> int:
    """Voxels between evaluations of a non-linear map on planes of the grid ``affine``:
    about ``PLANE_SAMPLE_MM`` along its finest axis, at least ``minimum``."""
    spacing = np.linalg.norm(np.asarray(affine, np.float64)[:-1, :-1], axis=0)
    return max(int(minimum), int(PLANE_SAMPLE_MM // max(float(spacing.min()), 1e-6)))


def focus_index(viewer: Any, shape: tuple[int, ...], affine: np.ndarray
                ) -> tuple[int, ...] | None:
    """The voxel of the grid ``(shape, affine)`` (voxel -> world RAS mm, axis-aligned)
    at the viewer's current point, when the viewer shows 2D slices of a 3D grid; else
    None (3D display, or a 2D image: show the whole volume). GUI thread only."""
    dims = viewer.dims
    if len(shape) != 3 or dims.ndisplay != 2 or dims.ndim < 3:
        return None
    world = np.ones(4)
    world[:3] = np.asarray(dims.point, dtype=np.float64)[-3:]  # our layer's world axes
    ijk = (np.linalg.inv(affine) @ world)[:3]
    return tuple(int(np.clip(np.rint(v), 0, n - 1)) for v, n in zip(ijk, shape, strict=True))


def sliced_axes(viewer: Any, affine: np.ndarray) -> set[int]:
    """The voxel axes of the axis-aligned grid ``affine`` that the viewer slices through
    in a 2D view (the plane on screen is orthogonal to them). GUI thread only."""
    dims = viewer.dims
    first = dims.ndim - 3  # our layer's world axes are the viewer's last three
    world = [a - first for a in dims.not_displayed if a >= first]
    columns = np.abs(np.asarray(affine, np.float64)[:3, :3])
    return {int(np.argmax(columns[w])) for w in world}


def plane_grids(shape: tuple[int, ...], affine: np.ndarray, index: tuple[int | None, ...]
                ) -> list[tuple[int, tuple[int, ...], np.ndarray]]:
    """The orthogonal planes through voxel ``index``: ``(axis, plane shape, plane
    affine)`` per voxel axis, each plane one voxel thick along ``axis`` (its affine
    maps the plane's voxels to world RAS mm, so ``warp_to_grid`` draws it directly).
    An axis whose index is None (its plane is on no screen) has no plane."""
    d = len(shape)
    out = []
    for axis in range(d):
        if index[axis] is None:
            continue
        plane_shape = tuple(1 if a == axis else n for a, n in enumerate(shape))
        shift = np.eye(d + 1)
        shift[axis, d] = index[axis]  # plane voxel (.., 0, ..) is grid voxel (.., i, ..)
        out.append((axis, plane_shape, np.asarray(affine, np.float64) @ shift))
    return out


class PlaneCanvas:
    """A float32 volume on the display grid that live planes are written into (GUI
    thread); its ``data`` is what the live layer shows."""

    def __init__(self, shape: tuple[int, ...]):
        self.data = np.zeros(shape, dtype=np.float32)

    def write(self, planes: list[tuple[int, int, np.ndarray]]) -> np.ndarray:
        """Write ``(axis, index, plane)`` planes (plane shaped 1 along ``axis``)."""
        for axis, index, plane in planes:
            where = [slice(None)] * self.data.ndim
            where[axis] = slice(index, index + 1)
            self.data[tuple(where)] = plane
        return self.data
