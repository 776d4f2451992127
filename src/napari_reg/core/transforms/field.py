"""Dense displacement fields: ``T(x) = x + u(x)`` sampled on a reference grid.

Conventions (never drift):

* ``u`` is stored on a reference grid (usually the fixed image grid) given by its shape
  and its voxel->world affine (RAS mm). ``u(x)`` is a vector in world RAS **mm**, so
  ``T(x) = x + u(x)`` maps fixed world points to moving world points.
* Between grid points ``u`` is interpolated linearly; outside the grid the value at the
  nearest border voxel is used (constant extension), so ``T`` is defined everywhere.
  (ITK's ``DisplacementFieldTransform`` uses zero displacement outside its grid instead;
  inside the grid both agree.)
* Components are stored first, ``(d, *shape)`` float32, because every interpolation
  works on one component at a time; :attr:`DisplacementField.displacement` gives the
  usual ``(*shape, d)`` view.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from ..errors import NapariRegError
from ..image import apply_affine
from .base import CompositeTransform, Transform

__all__ = ["DisplacementField", "FieldGridError", "jacobian_determinant_map"]


class FieldGridError(NapariRegError):
    """A displacement field whose grid does not fit (shape, affine or vector length)."""


def _check_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    d = len(shape)
    if d not in (2, 3):
        raise FieldGridError(f"a displacement field grid must be 2D or 3D, got shape {shape}")
    affine = np.array(affine, dtype=np.float64)
    if affine.shape != (d + 1, d + 1):
        raise FieldGridError(f"grid affine has shape {affine.shape}, expected {(d + 1, d + 1)}")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:d, :d])) < 1e-12:
        raise FieldGridError("grid affine is not finite and invertible")
    return affine


_POOL: ThreadPoolExecutor | None = None
# Below this many points a thread hand-off costs more than it saves.
_PARALLEL_POINTS = 200_000
_POOL_PREFIX = "napari-reg-field"


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(3, os.cpu_count() or 1),
                                   thread_name_prefix=_POOL_PREFIX)
    return _POOL


def _interpolate(components: np.ndarray, coords_vox: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``(d, *shape)`` components at ``(d, ...)`` voxel coordinates.

    Outside the grid the nearest border value is used (``mode='nearest'``). Large
    fields interpolate their components on parallel threads: scipy releases the GIL, and
    this is where scaling and squaring spends most of its time (benchmarks/, SyN profile).
    """
    # results go straight into one output array: stacking them afterwards copied the
    # whole field again (1.1 s of an 8.6 s exponential on a 1 mm brain)
    out = np.empty((len(components),) + tuple(coords_vox.shape[1:]),
                   dtype=np.result_type(components.dtype, np.float32))

    def one(c: int) -> None:
        ndimage.map_coordinates(components[c], coords_vox, order=1, mode="nearest",
                                prefilter=False, output=out[c])

    if coords_vox[0].size < _PARALLEL_POINTS or (os.cpu_count() or 1) < 2 or in_pool():
        for c in range(len(components)):
            one(c)
    else:
        list(_pool().map(one, range(len(components))))
    return out


def in_pool() -> bool:
    """True on one of the pool's own threads. A task there must not wait for more pool
    tasks: with every worker busy they would never start (SyN's two half maps run on the
    pool and interpolate fields of their own; on grids of 1.6 M voxels and up that
    deadlocked)."""
    return threading.current_thread().name.startswith(_POOL_PREFIX)


def _index_grid(shape: tuple[int, ...]) -> np.ndarray:
    """Voxel indices ``(d, *shape)`` float32."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                indexing="ij"))


def _to_voxel_vectors(components: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World-mm vectors ``(d, *shape)`` -> voxel-index vectors (``A^-1 u``)."""
    d = components.shape[0]
    inv = np.linalg.inv(affine[:d, :d]).astype(np.float32)
    return np.tensordot(inv, components, axes=1).astype(np.float32, copy=False)


def _to_world_vectors(components: np.ndarray, affine: np.ndarray) -> np.ndarray:
    d = components.shape[0]
    lin = affine[:d, :d].astype(np.float32)
    return np.tensordot(lin, components, axes=1).astype(np.float32, copy=False)


def jacobian_determinant_map(components: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``det(I + du/dx)`` at every grid point (central differences, one-sided at borders).

    ``components`` is ``(d, *shape)`` displacement in world mm on a grid with the given
    voxel->world ``affine``. Derivatives are taken w.r.t. world mm (chain rule through the
    affine), so the determinant is the local volume change of ``T(x) = x + u(x)``.
    """
    d = components.shape[0]
    inv = np.linalg.inv(affine[:d, :d])
    # du_c/d(ijk)_a, then du_c/dx_b = sum_a du_c/d(ijk)_a * inv[a, b]
    grads = np.empty((d, d) + components.shape[1:], dtype=np.float64)
    for c in range(d):
        g = np.gradient(components[c].astype(np.float64))
        for b in range(d):
            grads[c, b] = sum(g[a] * inv[a, b] for a in range(d))
    for c in range(d):
        grads[c, c] += 1.0
    if d == 2:
        return grads[0, 0] * grads[1, 1] - grads[0, 1] * grads[1, 0]
    j = grads
    return (j[0, 0] * (j[1, 1] * j[2, 2] - j[1, 2] * j[2, 1])
            - j[0, 1] * (j[1, 0] * j[2, 2] - j[1, 2] * j[2, 0])
            + j[0, 2] * (j[1, 0] * j[2, 1] - j[1, 1] * j[2, 0]))


class DisplacementField(Transform):
    """``T(x) = x + u(x)``, fixed world RAS mm -> moving world RAS mm, ``u`` on a grid.

    Parameters
    ----------
    displacement
        ``(*shape, d)`` vectors in world RAS mm (converted to float32).
    affine
        ``(d+1, d+1)`` voxel->world (RAS mm) matrix of the grid the vectors sit on.
    """

    def __init__(self, displacement: np.ndarray, affine: np.ndarray):
        displacement = np.asarray(displacement)
        if displacement.ndim < 3 or displacement.shape[-1] != displacement.ndim - 1:
            raise FieldGridError(
                f"displacement must have shape (*grid, d) with d = grid dimensions; "
                f"got {displacement.shape}")
        shape = tuple(displacement.shape[:-1])
        self.affine = _check_grid(shape, affine)
        comps = np.ascontiguousarray(np.moveaxis(displacement, -1, 0), dtype=np.float32)
        if not np.all(np.isfinite(comps)):
            raise FieldGridError("displacement field contains NaN or infinite vectors")
        self._u = comps
        self.ndim = len(shape)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_components(cls, components: np.ndarray, affine: np.ndarray) -> DisplacementField:
        """Build from component-first ``(d, *shape)`` world-mm vectors (no copy if float32)."""
        obj = cls.__new__(cls)
        components = np.ascontiguousarray(components, dtype=np.float32)
        obj.affine = _check_grid(tuple(components.shape[1:]), affine)
        if components.shape[0] != components.ndim - 1:
            raise FieldGridError(f"components must be (d, *grid); got {components.shape}")
        obj._u = components
        obj.ndim = components.shape[0]
        return obj

    @classmethod
    def identity(cls, shape: tuple[int, ...], affine: np.ndarray) -> DisplacementField:
        """Zero displacement on the given grid."""
        return cls.from_components(np.zeros((len(shape),) + tuple(shape), np.float32), affine)

    @classmethod
    def from_transform(cls, transform: Transform, shape: tuple[int, ...], affine: np.ndarray,
                       chunk: int = 262144) -> DisplacementField:
        """Sample any fixed->moving ``transform`` on a grid: ``u(x) = T(x) - x`` (world mm).

        This is how composites (linear part included) become one self-contained field.
        """
        affine = _check_grid(tuple(shape), affine)
        d = len(shape)
        if transform.ndim != d:
            raise FieldGridError(f"a {transform.ndim}D transform cannot fill a {d}D grid")
        n = int(np.prod(shape))
        out = np.empty((d, n), dtype=np.float32)
        flat = np.stack(np.unravel_index(np.arange(n), shape), axis=-1)
        for s in range(0, n, chunk):
            x = apply_affine(affine, flat[s:s + chunk])
            out[:, s:s + chunk] = (transform.transform_points(x) - x).T
        return cls.from_components(out.reshape((d,) + tuple(shape)), affine)

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._u.shape[1:])

    @property
    def components(self) -> np.ndarray:
        """``(d, *shape)`` float32 world-mm vectors (the stored array; do not modify)."""
        return self._u

    @property
    def displacement(self) -> np.ndarray:
        """``(*shape, d)`` float32 world-mm vectors (a view)."""
        return np.moveaxis(self._u, 0, -1)

    def grid_points(self) -> np.ndarray:
        """World RAS mm of every grid point, ``(*shape, d)``."""
        return apply_affine(self.affine, np.moveaxis(_index_grid(self.shape), 0, -1))

    def same_grid(self, shape: tuple[int, ...], affine: np.ndarray, atol: float = 1e-4) -> bool:
        return self.shape == tuple(shape) and np.allclose(self.affine, affine, atol=atol)

    def copy(self) -> DisplacementField:
        return DisplacementField.from_components(self._u.copy(), self.affine.copy())

    # ------------------------------------------------------------------ evaluation
    def displacement_at(self, points: np.ndarray) -> np.ndarray:
        """``u`` at ``(N, d)`` world points (mm), linear interpolation -> ``(N, d)``."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.ndim:
            raise ValueError(f"expected (N, {self.ndim}) points, got {points.shape}")
        vox = apply_affine(np.linalg.inv(self.affine), points).T
        return _interpolate(self._u, vox).T.astype(np.float64)

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Fixed world mm ``(N, d)`` -> moving world mm ``x + u(x)``."""
        points = np.asarray(points, dtype=np.float64)
        return points + self.displacement_at(points)

    # ------------------------------------------------------------------ algebra
    def compose(self, other: Transform) -> DisplacementField:
        """The field of ``x -> other(self(x))`` on this field's grid (apply ``self`` first)."""
        chain = CompositeTransform([self, other])
        return DisplacementField.from_transform(chain, self.shape, self.affine)

    def inverse(self, shape: tuple[int, ...] | None = None, affine: np.ndarray | None = None,
                max_iterations: int = 50, tolerance_voxels: float = 1e-3) -> DisplacementField:
        """Moving->fixed field ``w`` with ``T(y + w(y)) = y``, by fixed-point iteration.

        Solves ``w(y) = -u(y + w(y))`` on the grid ``(shape, affine)`` (default: this
        field's grid) until the largest update is below ``tolerance_voxels`` voxels. It
        converges where ``T`` is invertible with ``|du/dx| < 1`` (diffeomorphic fields).
        """
        shape = self.shape if shape is None else tuple(shape)
        affine = self.affine if affine is None else _check_grid(shape, affine)
        d = self.ndim
        # work in this field's voxel units: y_vox(target) and u_vox
        to_src = np.linalg.inv(self.affine) @ affine
        idx = _index_grid(shape)
        y_src = (np.tensordot(to_src[:d, :d].astype(np.float32), idx, axes=1)
                 + to_src[:d, d].astype(np.float32).reshape((d,) + (1,) * d))
        u_vox = _to_voxel_vectors(self._u, self.affine)
        w = -_interpolate(u_vox, y_src)
        for _ in range(max_iterations):
            w_new = -_interpolate(u_vox, y_src + w)
            change = float(np.abs(w_new - w).max())
            w = w_new
            if change < tolerance_voxels:
                break
        return DisplacementField.from_components(_to_world_vectors(w, self.affine), affine)

    # ------------------------------------------------------------------ quality
    def jacobian_determinant(self) -> np.ndarray:
        """``det(dT/dx)`` at every grid point (``(*shape,)`` float64, 1 = no volume change)."""
        return jacobian_determinant_map(self._u, self.affine)

    def folding_fraction(self) -> float:
        """Fraction of grid points where ``T`` folds (Jacobian determinant <= 0)."""
        return float(np.mean(self.jacobian_determinant() <= 0.0))

    def __repr__(self) -> str:
        mag = float(np.sqrt((self._u.astype(np.float64) ** 2).sum(axis=0)).max())
        return f"DisplacementField(shape={self.shape}, max |u|={mag:.3g} mm)"

