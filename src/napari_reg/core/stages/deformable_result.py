"""What a deformable stage returns: the whole map, its parts, dense export and inverse.

Both deformable stages take the linear result as a fixed->moving matrix ``M`` and find a
deformation ``D`` of the fixed space, so the whole map is

    T(x) = M D(x)      (fixed world RAS mm -> moving world RAS mm)

``D`` is a chain of cubic B-spline FFDs (:mod:`napari_reg.core.stages.bspline`) or the
exponential of a stationary velocity field (:mod:`napari_reg.core.stages.syn`).
:class:`DeformableResult` carries ``T``, ``D``, ``M`` and the per-level cost histories;
:meth:`DeformableResult.displacement_field` turns ``T`` into one dense field on the fixed
grid that maps fixed->moving on its own (what the field writer saves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..engine.errors import RegistrationError
from ..engine.result import StageResult
from ..image import Volume
from ..optimize import CancelToken
from ..transforms.base import CompositeTransform, MatrixTransform, Transform
from ..transforms.bspline import BSplineTransform
from ..transforms.bspline_chain import BSplineChain
from ..transforms.field import DisplacementField
from ..transforms.velocity import StationaryVelocityField

__all__ = ["DeformableResult", "compose_linear", "regrid"]

_SLAB_VOXELS = 1 << 20  # voxels per slab of compose_linear (a cancel check between slabs)


@dataclass(kw_only=True)
class DeformableResult(StageResult):
    """Outcome of a deformable stage (a :class:`StageResult` with the map's parts).

    ``transform`` maps fixed world RAS mm -> moving world RAS mm: the deformation
    ``deformation`` (fixed -> fixed) followed by ``linear_matrix`` (fixed -> moving).
    ``levels`` holds one :class:`LevelRecord` (cost history) per pyramid level;
    ``fixed_shape``/``fixed_affine`` the fixed grid the dense export defaults to.
    """

    deformation: Transform
    linear_matrix: np.ndarray
    fixed_shape: tuple[int, ...] = ()
    fixed_affine: np.ndarray | None = None

    def inverse_transform(self) -> Transform:
        """The moving->fixed map ``y -> D^-1(M^-1 y)`` (world RAS mm).

        Exact within the model for the SVF (``exp(-v)``); for a B-spline FFD the inverse
        is computed as a dense field on the fixed grid by fixed-point iteration.
        """
        deform = self.deformation
        if isinstance(deform, StationaryVelocityField | DisplacementField):
            inv = deform.inverse()
        elif isinstance(deform, BSplineTransform | BSplineChain):
            if self.fixed_affine is None:
                raise RegistrationError("no fixed grid recorded to invert the FFD on")
            inv = deform.to_field(self.fixed_shape, self.fixed_affine).inverse()
        else:
            inv = deform.inverse()
        return CompositeTransform([MatrixTransform(np.linalg.inv(self.linear_matrix)), inv])

    def displacement_field(self, reference: Volume | None = None,
                           cancel: CancelToken | None = None) -> DisplacementField:
        """The whole fixed->moving map (linear part included) as one dense field.

        Sampled on ``reference``'s grid (default: the fixed image grid), world RAS mm:
        ``T(x) = x + u(x)``. Ready for
        :func:`napari_reg.io.displacement_fields.save_displacement_field`.
        ``cancel`` (a CancelToken) is checked between the steps and slabs of the work
        (several seconds on a 1 mm brain), so Stop ends it with
        :class:`~napari_reg.core.optimize.Cancelled`.
        """
        check = cancel.raise_if_cancelled if cancel is not None else None
        if check is not None:
            check()
        if reference is not None:
            shape, affine = reference.shape, reference.affine
        else:
            shape, affine = self.fixed_shape, self.fixed_affine
        if affine is None:
            raise RegistrationError("no reference grid: pass the fixed image")
        deform = self.deformation
        if isinstance(deform, BSplineTransform | BSplineChain):
            dfield = deform.to_field(shape, affine, check=check)
        elif isinstance(deform, StationaryVelocityField | DisplacementField):
            # dense models: interpolate the stored grid onto the reference grid in one
            # affine_transform per component (no per-point world conversions)
            dense = (deform.exp(check=check) if isinstance(deform, StationaryVelocityField)
                     else deform)
            comps = regrid(dense.components, dense.affine, tuple(shape), affine, check)
            dfield = DisplacementField.from_components(comps, affine)
        else:
            dfield = DisplacementField.from_transform(deform, shape, affine)
        return compose_linear(dfield, self.linear_matrix, check)


def compose_linear(dfield: DisplacementField, matrix: np.ndarray,
                   check: Callable[[], None] | None = None) -> DisplacementField:
    """Field of ``x -> M (x + u(x))`` on ``dfield``'s grid (vectorised, world mm).

    Computed in slabs along the first voxel axis (bounded temporaries); ``check`` (a
    cancellation hook) is called before each slab."""
    d = dfield.ndim
    m = np.asarray(matrix, np.float64)
    lin = m[:d, :d].astype(np.float32)
    shift = m[:d, d].astype(np.float32).reshape((d,) + (1,) * d)
    shape = dfield.shape
    out = np.empty((d,) + tuple(shape), np.float32)
    axes = [np.arange(n, dtype=np.float64) for n in shape[1:]]
    rows = max(1, _SLAB_VOXELS // max(int(np.prod(shape[1:])), 1))
    for start in range(0, shape[0], rows):
        if check is not None:
            check()
        stop = min(start + rows, shape[0])
        ijk = np.stack(np.meshgrid(np.arange(start, stop, dtype=np.float64), *axes,
                                   indexing="ij"), axis=-1)
        x = np.moveaxis(ijk @ dfield.affine[:d, :d].T + dfield.affine[:d, d], -1,
                        0).astype(np.float32)  # world mm of the slab's voxels, (d, ...)
        y = x + dfield.components[:, start:stop]
        out[:, start:stop] = np.tensordot(lin, y, axes=1) + shift - x
    return DisplacementField.from_components(out, dfield.affine)


# ----------------------------------------------------------------------------- helpers
def regrid(components: np.ndarray, affine_from: np.ndarray, shape_to: tuple[int, ...],
           affine_to: np.ndarray, check: Callable[[], None] | None = None) -> np.ndarray:
    """A world-mm vector field ``(d, *shape)`` linearly interpolated onto another grid.

    The vectors themselves are kept (they are world mm, not voxels); outside the source
    grid the nearest border vector is used, as in :class:`DisplacementField`. ``check``
    (a cancellation hook) is called before each component.
    """
    d = components.shape[0]
    vv = np.linalg.inv(affine_from) @ np.asarray(affine_to, np.float64)
    if tuple(shape_to) == tuple(components.shape[1:]) and np.allclose(
            vv, np.eye(d + 1), rtol=0.0, atol=1e-9):
        # the same grid (SyN's finest level is the fixed grid): a copy, not an
        # interpolation (1.6 s for a 1 mm brain)
        return np.array(components, dtype=np.float32)
    out = np.empty((d,) + tuple(shape_to), np.float32)
    for c in range(d):
        if check is not None:
            check()
        ndimage.affine_transform(components[c], vv[:d, :d], offset=vv[:d, d],
                                 output_shape=tuple(shape_to), order=1, mode="nearest",
                                 output=out[c])
    return out
