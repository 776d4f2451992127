"""Cheap stand-ins for expensive transforms, for live display only.

A progress event must carry the *exact* current fixed->moving map (consumers compare it
with the result), but evaluating a stationary velocity field exactly means a full
scaling-and-squaring exponential on its grid (seconds on a 1 mm brain), far too slow for
a live overlay that wants a new frame every ~0.1 s while sharing the CPU with the
optimiser. So a deformable stage can hand out a :class:`PreviewedTransform`: it behaves
exactly like the exact map (``transform_points`` evaluates it, lazily), and carries in
``preview`` a cheap approximation that a display may use instead.

The SyN preview (:class:`HalfMapSquare`) reuses what every SyN iteration computes
anyway: the half map ``h = exp(v/2)`` as a displacement in voxel units of the level grid.
For a stationary flow ``exp(v) = exp(v/2) o exp(v/2)``, so the whole map is
``T(x) = M h(h(x))``: two linear interpolations of ``h`` at the requested points, no
exponential and no work on the optimiser's thread.

Direction as everywhere: fixed world RAS mm -> moving world RAS mm. numpy/scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .transforms.base import Transform

__all__ = ["PreviewedTransform", "HalfMapSquare", "preview_of", "affine_points"]


def affine_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, d)`` points through a homogeneous ``(d+1, d+1)`` matrix, float64.

    The same as :func:`napari_reg.core.image.apply_affine`, written with ``einsum``: a
    ``(N, 3) @ (3, 3)`` product goes to multi-threaded OpenBLAS, which on 2 busy cores
    took 10-60 ms for 125k points (and spun both cores) against ~4 ms here.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    d = matrix.shape[0] - 1
    return np.einsum("ij,nj->ni", matrix[:d, :d], np.asarray(points, dtype=np.float64)) \
        + matrix[:d, d]


class PreviewedTransform(Transform):
    """An exact transform together with a cheap approximation of it for live display.

    ``transform_points`` and ``inverse`` are those of ``exact`` (fixed world RAS mm ->
    moving world RAS mm); ``preview`` is only ever read by displays (see
    :func:`preview_of`). Both must map the same fixed space to the same moving space.
    """

    def __init__(self, exact: Transform, preview: Transform):
        if exact.ndim != preview.ndim:
            raise ValueError(f"the preview ({preview.ndim}D) must have the exact map's "
                             f"dimension ({exact.ndim}D)")
        self.exact = exact
        self.preview = preview
        self.ndim = exact.ndim

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """The exact map at ``(N, d)`` fixed world mm points -> moving world mm."""
        return self.exact.transform_points(points)

    def inverse(self) -> Transform:
        return self.exact.inverse()

    @property
    def is_linear(self) -> bool:
        return self.exact.is_linear

    def __repr__(self) -> str:
        return f"PreviewedTransform(exact={self.exact!r}, preview={type(self.preview).__name__})"


def preview_of(transform: Transform) -> Transform:
    """The cheap display approximation of ``transform`` if it has one, else itself."""
    return transform.preview if isinstance(transform, PreviewedTransform) else transform


class HalfMapSquare(Transform):
    """``T(x) = M h(h(x))`` with ``h = Id + half``, ``half`` a voxel-unit displacement.

    Parameters
    ----------
    half
        ``(d, *shape)`` displacement of the half map ``exp(v/2)`` in voxel index units of
        the grid ``affine`` (as :func:`napari_reg.core.transforms.velocity.exp_voxel`
        returns it). Kept by reference, not copied: the caller hands over a fresh array
        it never modifies again.
    affine
        ``(d+1, d+1)`` voxel->world (RAS mm) matrix of that grid.
    matrix
        ``(d+1, d+1)`` linear fixed->moving world matrix applied after the deformation.

    Outside the grid the border displacement is used (as the SyN loop's own warps do).
    """

    def __init__(self, half: np.ndarray, affine: np.ndarray, matrix: np.ndarray):
        half = np.asarray(half)
        d = half.shape[0] if half.ndim else 0
        if half.ndim < 2 or d != half.ndim - 1:
            raise ValueError(f"half map must have shape (d, *grid); got {half.shape}")
        affine = np.asarray(affine, dtype=np.float64)
        matrix = np.asarray(matrix, dtype=np.float64)
        if affine.shape != (d + 1, d + 1) or matrix.shape != (d + 1, d + 1):
            raise ValueError(f"grid affine {affine.shape} and matrix {matrix.shape} must both "
                             f"be {(d + 1, d + 1)} for a {d}D half map")
        self.half = half
        self.affine = affine
        self._world_to_voxel = np.linalg.inv(affine)
        # voxel index of the grid -> moving world mm, in one matrix
        self._voxel_to_moving = matrix @ affine
        self.ndim = d

    def coarsened(self, max_voxels: int) -> HalfMapSquare:
        """The same map with the half field kept on every ``s``-th voxel per axis (the
        smallest ``s`` leaving at most ``max_voxels`` voxels), itself if it is that small.

        For sending a SyN state to a display in another process: a full-resolution half
        field of a 1 mm brain is ~100 MB, while a display evaluates the map only every
        few mm (``napari_reg.widgets._live_planes.PLANE_SAMPLE_MM``) and SyN's velocity is
        smooth on that scale. Displacements are rescaled to the coarse grid's voxel units.
        """
        n = int(np.prod(self.half.shape[1:]))
        if n <= max_voxels:
            return self
        step = int(np.ceil((n / max(int(max_voxels), 1)) ** (1.0 / self.ndim)))
        while int(np.prod([len(range(0, m, step)) for m in self.half.shape[1:]])) > max_voxels:
            step += 1
        where = (slice(None),) + (slice(None, None, step),) * self.ndim
        half = np.ascontiguousarray(self.half[where], dtype=np.float32) / np.float32(step)
        coarse_affine = self.affine @ np.diag([float(step)] * self.ndim + [1.0])
        matrix = self._voxel_to_moving @ self._world_to_voxel  # the linear part, M
        return HalfMapSquare(half, coarse_affine, matrix)

    def _step(self, vox: np.ndarray) -> np.ndarray:
        """``h`` at ``(d, N)`` voxel coordinates -> ``(d, N)`` voxel coordinates."""
        moved = np.empty_like(vox)
        for a in range(self.ndim):
            moved[a] = vox[a] + ndimage.map_coordinates(self.half[a], vox, order=1,
                                                        mode="nearest", prefilter=False)
        return moved

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """``(N, d)`` fixed world mm -> ``(N, d)`` moving world mm through ``M h(h(x))``."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.ndim:
            raise ValueError(f"expected (N, {self.ndim}) points, got {points.shape}")
        vox = affine_points(self._world_to_voxel, points).T
        return affine_points(self._voxel_to_moving, self._step(self._step(vox)).T)
