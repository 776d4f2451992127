"""Volumes: an array of samples plus the voxel->world affine that places them in space.

Conventions (never drift, see GUIDE §2):

* ``data`` is indexed by voxel indices ``(i, j, k)`` (NIfTI order, *not* napari's
  display order, which is the same for arrays read by nibabel).
* ``affine`` is the homogeneous ``(ndim+1, ndim+1)`` matrix mapping voxel indices to
  world coordinates, RAS+, in millimetres (the NIfTI sform, else qform). Voxel centres
  sit at integer indices. Anisotropic spacing, flipped axes and oblique (rotated or
  sheared) affines are all normal.
* All geometry in the core happens in world mm; voxel indices appear only when an
  array is read or written.

The class is dimension-generic: 2D images (``affine`` 3x3) and 3D volumes (4x4) go
through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import NapariRegError

__all__ = ["Volume", "VolumeError", "apply_affine"]


class VolumeError(NapariRegError):
    """Raised for an image that cannot be used for registration (with the reason)."""


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a homogeneous ``(d+1, d+1)`` matrix to ``(..., d)`` points.

    Works for any leading shape; returns float64 points of the same shape.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    d = matrix.shape[0] - 1
    return points @ matrix[:d, :d].T + matrix[:d, d]


@dataclass(eq=False)
class Volume:
    """An image with its voxel->world (RAS mm) affine.

    Parameters
    ----------
    data
        Array of shape ``(nx, ny)`` or ``(nx, ny, nz)``, indexed by voxel ``(i, j[, k])``.
    affine
        ``(ndim+1, ndim+1)`` voxel->world matrix (RAS, mm). Must be invertible.
    name
        Free text used in messages and layer names.
    metadata
        Anything the I/O layer wants to keep (e.g. the original NIfTI header).
    """

    data: np.ndarray
    affine: np.ndarray
    name: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.affine = np.array(self.affine, dtype=np.float64)
        if self.data.ndim not in (2, 3):
            raise VolumeError(
                f"{self._label()}has {self.data.ndim} dimensions (shape {self.data.shape}); "
                "registration needs a 2D image or a 3D volume"
            )
        d = self.data.ndim
        if self.affine.shape != (d + 1, d + 1):
            raise VolumeError(
                f"{self._label()}affine has shape {self.affine.shape}, expected "
                f"{(d + 1, d + 1)} for a {d}D image"
            )
        if not np.all(np.isfinite(self.affine)):
            raise VolumeError(f"{self._label()}affine contains NaN or infinite values")
        if abs(np.linalg.det(self.affine[:d, :d])) < 1e-12:
            raise VolumeError(f"{self._label()}affine is not invertible (zero voxel size?)")
        if self.data.size == 0:
            raise VolumeError(f"{self._label()}is empty (shape {self.data.shape})")

    def _label(self) -> str:
        return f"image '{self.name}' " if self.name else "image "

    # ------------------------------------------------------------------ geometry
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.data.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each voxel axis, in mm (norms of the affine's columns)."""
        d = self.ndim
        return np.linalg.norm(self.affine[:d, :d], axis=0)

    @property
    def inverse_affine(self) -> np.ndarray:
        """World (RAS mm) -> voxel index matrix."""
        return np.linalg.inv(self.affine)

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(..., ndim)`` -> world RAS mm ``(..., ndim)``."""
        return apply_affine(self.affine, ijk)

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """World RAS mm ``(..., ndim)`` -> continuous voxel indices ``(..., ndim)``."""
        return apply_affine(self.inverse_affine, xyz)

    def voxel_grid(self) -> np.ndarray:
        """All voxel indices as an ``(*shape, ndim)`` float array (memory: 8*ndim B/voxel)."""
        axes = [np.arange(n, dtype=np.float64) for n in self.shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    def world_grid(self) -> np.ndarray:
        """World RAS mm of every voxel centre, shape ``(*shape, ndim)``."""
        return self.voxel_to_world(self.voxel_grid())

    def corners_world(self) -> np.ndarray:
        """World coordinates of the ``2**ndim`` corner voxel centres, ``(2**ndim, ndim)``."""
        ranges = [(0.0, n - 1.0) for n in self.shape]
        corners = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(self.ndim, -1).T
        return self.voxel_to_world(corners)

    def center_world(self) -> np.ndarray:
        """World position (mm) of the centre of the voxel grid."""
        return self.voxel_to_world((np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0)

    def bounds_world(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box (min, max) of the voxel centres, in mm."""
        c = self.corners_world()
        return c.min(axis=0), c.max(axis=0)

    def contains_voxel(self, ijk: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Boolean mask of continuous voxel positions inside ``[-margin, n-1+margin]``."""
        ijk = np.asarray(ijk)
        upper = np.asarray(self.shape, dtype=np.float64) - 1.0 + margin
        return np.all((ijk >= -margin) & (ijk <= upper), axis=-1)

    # ------------------------------------------------------------------ helpers
    def with_data(self, data: np.ndarray, name: str | None = None) -> Volume:
        """A new Volume on the same grid with other samples."""
        if data.shape != self.shape:
            raise VolumeError(f"data shape {data.shape} does not match grid {self.shape}")
        return Volume(data, self.affine.copy(), self.name if name is None else name,
                      dict(self.metadata))

    def as_float(self) -> Volume:
        """A float32 copy (the registration working type), checked for usable content."""
        data = np.asarray(self.data, dtype=np.float32)
        finite = np.isfinite(data)
        if not finite.any():
            raise VolumeError(f"{self._label()}has no finite voxel values")
        if not finite.all():
            # NaN/Inf voxels are treated as "no data": replaced by the minimum so they
            # cannot poison sums; callers that care use `finite_mask`.
            data = np.where(finite, data, np.nanmin(np.where(finite, data, np.nan)))
        return Volume(data, self.affine.copy(), self.name, dict(self.metadata))

    def same_grid(self, other: Volume, atol: float = 1e-6) -> bool:
        """True when both volumes share shape and affine (to ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)
