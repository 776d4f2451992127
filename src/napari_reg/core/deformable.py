"""Deformable registration: the result type and the helpers both loops share.

Both deformable stages take the linear result as a fixed->moving matrix ``M`` and find a
deformation ``D`` of the fixed space, so the whole map is

    T(x) = M D(x)      (fixed world RAS mm -> moving world RAS mm)

``D`` is a cubic B-spline FFD (:func:`napari_reg.core.ffd.register_bspline`) or the
exponential of a stationary velocity field (:func:`napari_reg.core.syn.register_syn`).
:class:`DeformableResult` carries ``T``, ``D``, ``M`` and the per-level cost histories;
:meth:`DeformableResult.displacement_field` turns ``T`` into one dense field on the fixed
grid that maps fixed->moving on its own (what the field writer saves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .events import LevelRecord, ProgressEvent
from .image import Volume, VolumeError
from .pyramid import default_schedule
from .transforms.base import CompositeTransform, MatrixTransform, Transform
from .transforms.bspline import BSplineTransform
from .transforms.field import DisplacementField
from .transforms.velocity import StationaryVelocityField

__all__ = ["DeformableResult", "DeformableError", "compose_linear", "regrid"]

Callback = Callable[[ProgressEvent], None]


class DeformableError(ValueError):
    """Bad deformable-registration input (images, parameters, no overlap)."""


@dataclass
class DeformableResult:
    """Outcome of a deformable stage.

    ``transform`` maps fixed world RAS mm -> moving world RAS mm: the deformation
    ``deformation`` (fixed -> fixed) followed by ``linear_matrix`` (fixed -> moving).
    ``levels`` holds one :class:`LevelRecord` (cost history) per pyramid level.
    """

    transform: Transform
    deformation: Transform
    linear_matrix: np.ndarray
    levels: list[LevelRecord]
    final_cost: float
    parameters: dict[str, Any]
    timings: dict[str, float]
    fixed_shape: tuple[int, ...] = ()
    fixed_affine: np.ndarray | None = None
    n_iterations: int = 0  # iterations run by this stage (all levels)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def inverse_transform(self) -> Transform:
        """The moving->fixed map ``y -> D^-1(M^-1 y)`` (world RAS mm).

        Exact within the model for the SVF (``exp(-v)``); for a B-spline FFD the inverse
        is computed as a dense field on the fixed grid by fixed-point iteration.
        """
        deform = self.deformation
        if isinstance(deform, StationaryVelocityField | DisplacementField):
            inv = deform.inverse()
        elif isinstance(deform, BSplineTransform):
            if self.fixed_affine is None:
                raise DeformableError("no fixed grid recorded to invert the FFD on")
            inv = deform.to_field(self.fixed_shape, self.fixed_affine).inverse()
        else:
            inv = deform.inverse()
        return CompositeTransform([MatrixTransform(np.linalg.inv(self.linear_matrix)), inv])

    def displacement_field(self, reference: Volume | None = None) -> DisplacementField:
        """The whole fixed->moving map (linear part included) as one dense field.

        Sampled on ``reference``'s grid (default: the fixed image grid), world RAS mm:
        ``T(x) = x + u(x)``. Ready for
        :func:`napari_reg.io.displacement_fields.save_displacement_field`.
        """
        if reference is not None:
            shape, affine = reference.shape, reference.affine
        else:
            shape, affine = self.fixed_shape, self.fixed_affine
        if affine is None:
            raise DeformableError("no reference grid: pass the fixed image")
        deform = self.deformation
        if isinstance(deform, BSplineTransform):
            dfield = deform.to_field(shape, affine)
        elif isinstance(deform, StationaryVelocityField | DisplacementField):
            # dense models: interpolate the stored grid onto the reference grid in one
            # affine_transform per component (no per-point world conversions)
            dense = deform.exp() if isinstance(deform, StationaryVelocityField) else deform
            comps = regrid(dense.components, dense.affine, tuple(shape), affine)
            dfield = DisplacementField.from_components(comps, affine)
        else:
            dfield = DisplacementField.from_transform(deform, shape, affine)
        return compose_linear(dfield, self.linear_matrix)

    def cost_history(self) -> list[float]:
        return [c for level in self.levels for c in level.costs]


def compose_linear(dfield: DisplacementField, matrix: np.ndarray) -> DisplacementField:
    """Field of ``x -> M (x + u(x))`` on ``dfield``'s grid (vectorised, world mm)."""
    d = dfield.ndim
    m = np.asarray(matrix, np.float64)
    x = np.moveaxis(dfield.grid_points(), -1, 0).astype(np.float32)  # (d, *shape)
    y = x + dfield.components
    out = (np.tensordot(m[:d, :d].astype(np.float32), y, axes=1)
           + m[:d, d].astype(np.float32).reshape((d,) + (1,) * d) - x)
    return DisplacementField.from_components(out, dfield.affine)


# ----------------------------------------------------------------------------- helpers
def regrid(components: np.ndarray, affine_from: np.ndarray, shape_to: tuple[int, ...],
           affine_to: np.ndarray) -> np.ndarray:
    """A world-mm vector field ``(d, *shape)`` linearly interpolated onto another grid.

    The vectors themselves are kept (they are world mm, not voxels); outside the source
    grid the nearest border vector is used, as in :class:`DisplacementField`.
    """
    d = components.shape[0]
    vv = np.linalg.inv(affine_from) @ np.asarray(affine_to, np.float64)
    return np.stack([
        ndimage.affine_transform(c, vv[:d, :d], offset=vv[:d, d], output_shape=tuple(shape_to),
                                 order=1, mode="nearest", output=np.float32)
        for c in components])


def check_pair(fixed: Volume, moving: Volume, initial: np.ndarray | Transform | None
               ) -> tuple[Volume, Volume, np.ndarray]:
    """float32 copies of both images and the initial fixed->moving matrix (validated)."""
    if fixed.ndim != moving.ndim:
        raise DeformableError(f"fixed image is {fixed.ndim}D but moving image is {moving.ndim}D")
    d = fixed.ndim
    if initial is None:
        matrix = np.eye(d + 1)
    elif isinstance(initial, Transform):
        if not initial.is_linear:
            raise DeformableError("the initial transform of a deformable stage must be linear")
        matrix = np.asarray(initial.matrix, np.float64)  # type: ignore[attr-defined]
    else:
        matrix = np.asarray(initial, np.float64)
    if matrix.shape != (d + 1, d + 1) or not np.all(np.isfinite(matrix)):
        raise DeformableError(f"initial matrix must be a finite {(d + 1, d + 1)} homogeneous "
                              f"fixed->moving matrix, got shape {matrix.shape}")
    if abs(np.linalg.det(matrix[:d, :d])) < 1e-9:
        raise DeformableError("initial matrix is singular")
    try:
        return fixed.as_float(), moving.as_float(), matrix
    except VolumeError as exc:
        raise DeformableError(str(exc)) from exc


def level_schedule(fixed: Volume, levels: int, shrink_factors, sigmas_mm
                   ) -> tuple[list[list[int]], list[float]]:
    """Shrink factors and sigmas (mm) per level, coarse to fine (defaults: pyramid.py)."""
    d = fixed.ndim
    if shrink_factors is None or sigmas_mm is None:
        auto_shrink, auto_sigma = default_schedule(fixed, n_levels=levels)
        shrink_factors = shrink_factors if shrink_factors is not None else auto_shrink
        sigmas_mm = sigmas_mm if sigmas_mm is not None else auto_sigma
    shrink = [[int(f) for f in np.broadcast_to(s, (d,))] for s in shrink_factors]
    sigmas = [float(s) for s in sigmas_mm]
    if len(shrink) != len(sigmas) or not shrink:
        raise DeformableError("give one shrink factor and one sigma per level")
    return shrink, sigmas


def per_level(value: int | Sequence[int], n: int, what: str) -> list[int]:
    values = [int(value)] * n if np.ndim(value) == 0 else [int(v) for v in value]  # type: ignore
    if len(values) != n or min(values) < 0:
        raise DeformableError(f"{what}: need one non-negative value per level ({n}), got {value}")
    return values


class Emitter:
    """Builds and sends :class:`ProgressEvent` s for one stage (cheap when no callback)."""

    def __init__(self, callback: Callback | None, stage: int, stage_name: str,
                 n_levels: int, t_start: float, total_iterations: int):
        self.callback, self.stage, self.name = callback, stage, stage_name
        self.n_levels, self.t_start, self.total = n_levels, t_start, total_iterations

    def __call__(self, kind: str, level: int, iteration: int, max_iterations: int, cost: float,
                 make_transform: Callable[[], Transform]) -> None:
        if kind == "iteration":
            self.total += 1
        if self.callback is None:
            return
        self.callback(ProgressEvent(
            kind=kind, stage=self.stage, stage_name=self.name, level=level,
            n_levels=self.n_levels, iteration=iteration, max_iterations=max_iterations,
            cost=float(cost), transform=make_transform(),
            elapsed=time.perf_counter() - self.t_start, total_iterations=self.total))


def mask_at_level(mask: np.ndarray | Volume | None, fixed: Volume, shrink: Sequence[int]
                  ) -> np.ndarray | None:
    """Boolean fixed-grid mask subsampled like the pyramid level (every f-th voxel)."""
    if mask is None:
        return None
    data = mask.data if isinstance(mask, Volume) else np.asarray(mask)
    if data.shape != fixed.shape:
        raise DeformableError(f"fixed mask shape {data.shape} does not match the fixed image "
                              f"{fixed.shape}")
    data = np.asarray(data) > 0
    if not data.any():
        raise DeformableError("the fixed mask is empty")
    return data[tuple(slice(None, None, int(f)) for f in shrink)]

