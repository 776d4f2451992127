"""Axis-aligned display copies of volumes whose voxel axes are not world axes.

Why: released napari (0.9) does not slice a layer whose affine rotates out of the viewed
plane (napari issue #7310): it draws the slice without that rotation, in the wrong place,
and warns on every slice. ITK-SNAP and 3D Slicer show an oblique scan resliced onto
world-aligned axes, so the user sees the true geometry; this module does the same, once,
when the layer is created.

Three cases, by the voxel->world matrix ``A`` (RAS mm):

* diagonal (each voxel axis along its own world axis, flips allowed): shown as is;
* a permutation of world axes (e.g. a sagittal acquisition stored (y, z, x)): the array
  is transposed (a view, no interpolation) so that voxel axis k runs along world axis k;
* oblique: resampled (linear; nearest for label maps) onto an axis-aligned world grid
  covering the volume's voxel centres, each world axis sampled at the spacing of the voxel
  axis most aligned with it, coarsened uniformly if that would exceed
  ``MAX_VOXEL_FACTOR`` times the original voxel count.

The registration never sees these copies: the layer keeps the original array and affine
in its metadata (see :mod:`napari_reg.layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_reg.core.image import Volume
from napari_reg.core.resample import resample

__all__ = ["DisplayGrid", "MAX_VOXEL_FACTOR", "axis_aligned_grid", "axis_permutation",
           "display_copy", "is_axis_aligned"]

# An oblique volume's display copy may have at most this many times its voxel count
# (the world-aligned box around a rotated grid is larger than the grid).
MAX_VOXEL_FACTOR = 4.0
# Direction cosines below this (relative to the column's length) count as zero.
_TOLERANCE = 1e-6


@dataclass
class DisplayGrid:
    """How a volume is shown: ``data`` on the axis-aligned grid ``affine`` (voxel ->
    world RAS mm). ``kind`` is ``"as_is"``, ``"transposed"`` or ``"resliced"``."""

    data: np.ndarray
    affine: np.ndarray
    kind: str


def axis_permutation(affine: np.ndarray) -> tuple[int, ...] | None:
    """``perm`` with voxel axis ``perm[w]`` running along world axis ``w``, or None when
    some voxel axis is oblique (has a direction cosine off its world axis)."""
    linear = np.asarray(affine, dtype=np.float64)[:-1, :-1]
    d = linear.shape[0]
    perm = [-1] * d
    for column in range(d):
        values = np.abs(linear[:, column])
        world = int(np.argmax(values))
        if values[world] == 0 or np.any(np.delete(values, world) > _TOLERANCE * values[world]):
            return None
        if perm[world] != -1:
            return None
        perm[world] = column
    return tuple(perm)


def is_axis_aligned(affine: np.ndarray) -> bool:
    """True when every voxel axis runs along world axis of the same index (flips and
    anisotropic spacing allowed): what napari slices correctly."""
    perm = axis_permutation(affine)
    return perm is not None and perm == tuple(range(len(perm)))


def _world_aligned_grid(volume: Volume) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of an axis-aligned grid covering ``volume``'s voxel centres."""
    affine = volume.affine
    d = volume.ndim
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in volume.shape], indexing="ij"))
    corners = corners.reshape(d, -1).T.astype(np.float64)
    world = corners @ affine[:d, :d].T + affine[:d, d]
    low, high = world.min(axis=0), world.max(axis=0)
    # world axis w sampled at the spacing of the voxel axis pointing most along it
    columns = affine[:d, :d]
    lengths = np.linalg.norm(columns, axis=0)
    cosines = np.abs(columns) / lengths
    spacing = np.array([lengths[int(np.argmax(cosines[w]))] for w in range(d)])
    budget = MAX_VOXEL_FACTOR * float(np.prod(volume.shape))
    while True:
        shape = np.floor((high - low) / spacing + 1e-6).astype(int) + 1
        if np.prod(shape.astype(float)) <= budget:
            break
        spacing = spacing * 1.1
    grid = np.eye(d + 1)
    grid[:d, :d] = np.diag(spacing)
    grid[:d, d] = low
    return tuple(int(n) for n in shape), grid


def axis_aligned_grid(volume: Volume) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, voxel->world affine)`` of the grid :func:`display_copy` shows ``volume``
    on: its own grid when axis-aligned, else an axis-aligned grid covering it. A warp
    meant for display (e.g. a live overlay on an oblique fixed image) can be computed
    straight onto this grid, at no extra cost."""
    if volume.ndim != 3 or is_axis_aligned(volume.affine):
        return tuple(volume.shape), volume.affine.copy()
    perm = axis_permutation(volume.affine)
    if perm is not None:
        permuted = volume.affine.copy()
        permuted[:3, :3] = volume.affine[:3, :3][:, list(perm)]
        return tuple(volume.shape[p] for p in perm), permuted
    return _world_aligned_grid(volume)


def display_copy(volume: Volume, labels: bool = False) -> DisplayGrid:
    """What to give napari for ``volume``: the data and an axis-aligned affine.

    ``labels`` selects nearest-neighbour reslicing (label values stay exact). 2D volumes
    and axis-aligned ones are returned unchanged (``kind="as_is"``).
    """
    if volume.ndim != 3 or is_axis_aligned(volume.affine):
        return DisplayGrid(volume.data, volume.affine, "as_is")
    perm = axis_permutation(volume.affine)
    if perm is not None:
        permuted = volume.affine.copy()
        permuted[:3, :3] = volume.affine[:3, :3][:, list(perm)]
        return DisplayGrid(np.transpose(volume.data, perm), permuted, "transposed")
    shape, grid = _world_aligned_grid(volume)
    reference = Volume(np.broadcast_to(np.float32(0), shape), grid, "display grid")
    fill = 0 if labels else float(np.nanmin(volume.data)) if volume.data.size else 0.0
    warped = resample(volume, reference, np.eye(4),
                      interpolation="nearest" if labels else "linear", fill=fill)
    return DisplayGrid(warped.data, grid, "resliced")
