"""Seeing a deformation: Jacobian determinant, folds and deformed grids (numpy only).

A transform T maps fixed world RAS mm -> moving world RAS mm. Two grid pictures:

* :func:`deformed_grid` (a raster on the fixed grid): planes at regular moving-space
  positions pulled back onto the fixed grid;
* :func:`grid_lines` (line segments for napari Vectors, crisp at any zoom): a regular
  grid in one viewed world plane, each point x drawn at ``T(x)`` (or at ``A^-1 T(x)``,
  the deformation alone, when the linear part ``A`` is given: the warp an ANTs-style
  pair stores next to its affine).
"""

from __future__ import annotations

import numpy as np

from ._qc_common import QCError, check_affine, same_shape, voxel_spacing
from .image import apply_affine
from .transforms.base import Transform
from .transforms.field import DisplacementField, jacobian_determinant_map

__all__ = ["jacobian_determinant", "folding_fraction", "deformed_grid", "grid_lines"]


def _transform_field(transform: Transform, shape: tuple[int, ...],
                     affine: np.ndarray) -> DisplacementField:
    if isinstance(transform, DisplacementField) and transform.same_grid(shape, affine):
        return transform
    return DisplacementField.from_transform(transform, shape, affine)


def jacobian_determinant(transform: Transform, shape: tuple[int, ...],
                         affine: np.ndarray) -> np.ndarray:
    """``det(dT/dx)`` of a fixed->moving transform at the voxel centres of a grid.

    ``(shape, affine)`` is the grid (voxel->world RAS mm), usually the fixed image's or a
    coarser copy. 1 = volume kept, < 1 shrinks, <= 0 folds. float64 ``shape`` array.
    """
    affine = check_affine(tuple(shape), affine)
    field = _transform_field(transform, tuple(shape), affine)
    return jacobian_determinant_map(field.components, field.affine)


def folding_fraction(jacobian: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of (masked) voxels whose Jacobian determinant is <= 0 (folded)."""
    jac = np.asarray(jacobian)
    if mask is not None:
        same_shape(jac, mask, "Jacobian map and mask")
        jac = jac[np.asarray(mask, bool)]
    return float(np.mean(jac <= 0.0)) if jac.size else 0.0


def deformed_grid(transform: Transform, shape: tuple[int, ...], affine: np.ndarray,
                  spacing_mm: float = 10.0, line_mm: float | None = None) -> np.ndarray:
    """Grid planes of the moving space seen on the fixed grid (float32 0/1 image).

    A voxel at fixed world ``x`` is 1 when ``T(x)`` lies within ``line_mm / 2`` of a
    plane ``y_k = n * spacing_mm`` (any world axis k). For the identity this is a
    regular grid; a deformation bends its lines, a fold makes them cross.
    ``line_mm`` defaults to the largest voxel size of the grid (lines stay visible).
    """
    affine = check_affine(tuple(shape), affine)
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise QCError(f"grid spacing must be a positive number of mm, got {spacing_mm}")
    if line_mm is None:
        line_mm = float(voxel_spacing(affine).max())
    n = int(np.prod(shape))
    out = np.zeros(n, dtype=np.float32)
    flat_shape = tuple(shape)
    chunk = 262144
    for s in range(0, n, chunk):
        vox = np.stack(np.unravel_index(np.arange(s, min(n, s + chunk)), flat_shape), axis=-1)
        y = transform.transform_points(apply_affine(affine, vox))
        dist = np.abs(y / spacing_mm - np.rint(y / spacing_mm)) * spacing_mm
        out[s:s + chunk] = np.any(dist <= line_mm / 2.0, axis=1)
    return out.reshape(flat_shape)


def grid_lines(transform: Transform, shape: tuple[int, ...], affine: np.ndarray,
               spacing_mm: float, normal_axis: int, position_mm: float,
               linear: np.ndarray | None = None, step_mm: float | None = None) -> np.ndarray:
    """A deformed grid in one viewed plane, as line segments for a napari Vectors layer.

    The regular grid (lines every ``spacing_mm`` world mm, on multiples of it) lies in
    the world plane ``x[normal_axis] = position_mm`` over the box of the grid
    ``(shape, affine)`` (voxel->world RAS mm). Each line is sampled every ``step_mm``
    (default ``spacing_mm / 4``) and each sample x is drawn at ``T(x)``, or, with
    ``linear = A`` (the homogeneous linear part of T), at ``A^-1 T(x)``: the deformation
    alone, regular wherever T is affine. Drawn positions are flattened onto the plane
    (the view shows in-plane motion). Returns ``(N, 2, 3)``: segment start and step,
    world mm. 3D grids only.
    """
    affine = check_affine(tuple(shape), affine)
    if len(shape) != 3 or not 0 <= normal_axis < 3:
        raise QCError("grid lines are drawn for 3D images, in one of the three world planes")
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise QCError(f"grid spacing must be a positive number of mm, got {spacing_mm}")
    corners = apply_affine(affine, np.array(np.meshgrid(*[[0, n - 1] for n in shape],
                                                        indexing="ij")).reshape(3, -1).T)
    lo, hi = corners.min(0), corners.max(0)
    step = step_mm or spacing_mm / 4.0
    undo = None if linear is None else np.linalg.inv(np.asarray(linear, dtype=np.float64))
    a, b = [k for k in range(3) if k != normal_axis]
    starts, steps = [], []
    for along, across in ((a, b), (b, a)):
        ticks = np.arange(np.ceil(lo[across] / spacing_mm), np.floor(hi[across] / spacing_mm)
                          + 1) * spacing_mm
        t = np.arange(lo[along], hi[along] + step / 2, step)
        if len(ticks) == 0 or len(t) < 2:
            continue
        pts = np.zeros((len(ticks), len(t), 3))
        pts[..., normal_axis] = position_mm
        pts[..., across] = ticks[:, None]
        pts[..., along] = t[None, :]
        moved = transform.transform_points(pts.reshape(-1, 3))
        if undo is not None:
            moved = apply_affine(undo, moved)
        moved[:, normal_axis] = position_mm
        moved = moved.reshape(pts.shape)
        starts.append(moved[:, :-1].reshape(-1, 3))
        steps.append((moved[:, 1:] - moved[:, :-1]).reshape(-1, 3))
    if not starts:
        return np.zeros((0, 2, 3))
    return np.stack([np.concatenate(starts), np.concatenate(steps)], axis=1)
