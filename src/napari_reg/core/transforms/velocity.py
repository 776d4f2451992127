"""Stationary velocity fields (SVF): diffeomorphisms ``T = exp(v)``.

``v`` is a vector field in world RAS mm on a reference grid (usually the fixed grid).
``exp(v)`` is the flow of ``v`` for unit time, computed by scaling and squaring
(Arsigny 2006): ``u_0 = v / 2^N`` (small enough to be a diffeomorphism on its own), then
``N`` times ``T <- T o T``, i.e. ``u <- u + u(x + u(x))``. The inverse is exact in the
model: ``exp(v)^-1 = exp(-v)``, which is what makes the SVF registration inverse
consistent.

Direction as everywhere: ``exp(v)`` maps fixed world points (mm) to moving world points.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import Transform
from .field import (
    DisplacementField,
    FieldGridError,
    _check_grid,
    _index_grid,
    _interpolate,
    _to_voxel_vectors,
    _to_world_vectors,
)

__all__ = ["StationaryVelocityField", "exp_velocity", "exp_voxel", "squaring_steps"]


def squaring_steps(velocity_vox: np.ndarray, max_step_voxels: float = 0.25) -> int:
    """Number ``N`` of squarings so that ``|v| / 2^N`` stays below ``max_step_voxels`` voxel.

    A step of a quarter voxel keeps every elementary map invertible and the linear
    interpolation error of the composition small.
    """
    vmax = float(np.sqrt(np.einsum("i...,i...->...", velocity_vox, velocity_vox).max()))
    if vmax <= max_step_voxels:
        return 0
    return int(min(30, np.ceil(np.log2(vmax / max_step_voxels))))


def exp_voxel(velocity_vox: np.ndarray, n_steps: int | None = None,
              max_step_voxels: float = 0.25,
              check: Callable[[], None] | None = None) -> np.ndarray:
    """Scaling and squaring in voxel units: ``(d, *shape)`` velocity -> displacement.

    Both in voxel index units of the same grid (float32). ``n_steps`` defaults to
    :func:`squaring_steps` with ``max_step_voxels``. ``check`` is called before every
    squaring (a cancellation hook: on a 1 mm brain one squaring takes about a second).
    """
    u = np.array(velocity_vox, dtype=np.float32)
    if n_steps is None:
        n_steps = squaring_steps(u, max_step_voxels)
    if n_steps:
        u *= np.float32(0.5 ** n_steps)
        idx = _index_grid(tuple(u.shape[1:]))
        for _ in range(n_steps):
            if check is not None:
                check()
            u += _interpolate(u, idx + u)  # u <- u + u o (Id + u), i.e. T <- T o T
    return u


def exp_velocity(components: np.ndarray, affine: np.ndarray, n_steps: int | None = None,
                 scale: float = 1.0, check: Callable[[], None] | None = None) -> np.ndarray:
    """``exp(scale * v)`` as displacement components ``(d, *shape)`` in world mm.

    ``components`` is ``(d, *shape)`` velocity in world mm on the grid ``affine``.
    The composition is done in voxel units (one conversion in, one out). ``check``: a
    cancellation hook called before every squaring (see :func:`exp_voxel`).
    """
    u = _to_voxel_vectors(components, affine) * np.float32(scale)
    return _to_world_vectors(exp_voxel(u, n_steps, check=check), affine)


class StationaryVelocityField(Transform):
    """``T = exp(v)``: a diffeomorphism, fixed world RAS mm -> moving world RAS mm.

    Parameters
    ----------
    velocity
        ``(*shape, d)`` velocity vectors in world RAS mm (unit-time flow).
    affine
        voxel->world (RAS mm) matrix of the grid.
    n_steps
        Scaling-and-squaring steps; ``None`` chooses them from the largest velocity.

    The exponential is computed on first use and cached (the object is immutable).
    """

    def __init__(self, velocity: np.ndarray, affine: np.ndarray, n_steps: int | None = None):
        velocity = np.asarray(velocity)
        if velocity.ndim < 3 or velocity.shape[-1] != velocity.ndim - 1:
            raise FieldGridError(f"velocity must have shape (*grid, d); got {velocity.shape}")
        comps = np.ascontiguousarray(np.moveaxis(velocity, -1, 0), dtype=np.float32)
        self._init(comps, affine, n_steps)

    def _init(self, comps: np.ndarray, affine: np.ndarray, n_steps: int | None) -> None:
        self.affine = _check_grid(tuple(comps.shape[1:]), affine)
        if not np.all(np.isfinite(comps)):
            raise FieldGridError("velocity field contains NaN or infinite vectors")
        self._v = comps
        self.ndim = comps.shape[0]
        self.n_steps = n_steps
        self._exp: DisplacementField | None = None

    @classmethod
    def from_components(cls, components: np.ndarray, affine: np.ndarray,
                        n_steps: int | None = None) -> StationaryVelocityField:
        """Build from component-first ``(d, *shape)`` world-mm velocities."""
        obj = cls.__new__(cls)
        obj._init(np.ascontiguousarray(components, dtype=np.float32), affine, n_steps)
        return obj

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._v.shape[1:])

    @property
    def components(self) -> np.ndarray:
        """``(d, *shape)`` float32 world-mm velocities (stored array; do not modify)."""
        return self._v

    @property
    def velocity(self) -> np.ndarray:
        """``(*shape, d)`` view of the velocities (world mm)."""
        return np.moveaxis(self._v, 0, -1)

    def exp(self, scale: float = 1.0, check: Callable[[], None] | None = None
            ) -> DisplacementField:
        """``exp(scale * v)`` as a :class:`DisplacementField` on the same grid; ``check``
        (a cancellation hook) is called before every squaring."""
        if scale == 1.0 and self._exp is not None:
            return self._exp
        field = DisplacementField.from_components(
            exp_velocity(self._v, self.affine, self.n_steps, scale, check), self.affine)
        if scale == 1.0:
            self._exp = field
        return field

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Fixed world mm ``(N, d)`` -> moving world mm through ``exp(v)``."""
        return self.exp().transform_points(points)

    def inverse(self) -> StationaryVelocityField:
        """The moving->fixed map ``exp(-v)`` (exact inverse within the model)."""
        return StationaryVelocityField.from_components(-self._v, self.affine.copy(), self.n_steps)

    def to_field(self) -> DisplacementField:
        """The dense displacement of ``exp(v)`` (same grid)."""
        return self.exp()

    def copy(self) -> StationaryVelocityField:
        return StationaryVelocityField.from_components(self._v.copy(), self.affine.copy(),
                                                       self.n_steps)

    def __repr__(self) -> str:
        return f"StationaryVelocityField(shape={self.shape})"
