"""2D images from files: 2D NIfTI and one-slice volumes register as 2D.

:func:`napari_reg.io.volumes.load_volume` keeps a 2D file's world z by returning it as a
one-slice 3D volume. Registration of two such images is a 2D problem: the slice has no
thickness to align, and the core's pyramids, metrics and transforms are dimension-generic.
This module maps a one-slice volume to a true 2D :class:`Volume` and back:

* the slice's two in-plane voxel axes must span a world coordinate plane (axial x-y,
  coronal x-z or sagittal y-z); the 2D world coordinates are those two world axes, in mm
  (RAS), and the 2D affine is the corresponding block of the 3D one;
* results on the fixed 2D grid go back onto the fixed file's own 3D grid (same shape and
  affine), and a 2D file is written back as a 2D file;
* a 2D fixed->moving matrix ``M2`` becomes the 3D matrix that does ``M2`` in the plane and
  moves the fixed slice onto the moving one along the plane's normal, so 3D tools
  (ITK/ANTs/Slicer) resample the one-slice files with it exactly as we did.
"""

from __future__ import annotations

import os

import numpy as np

from napari_reg.core.image import Volume

from ..core.errors import NapariRegError

__all__ = ["FlatError", "PlanarPair", "embed_matrix", "flatten", "is_flat", "plane_of",
           "reduce_matrix", "reduce_points", "unflatten", "was_2d_file"]

_TOL = 1e-6


class FlatError(NapariRegError):
    """A one-slice volume that cannot be treated as a 2D image (the message says why)."""


def is_flat(volume: Volume) -> bool:
    """True for a 3D volume with exactly one axis of length 1 (a 2D file or one slice)."""
    return volume.ndim == 3 and sorted(volume.shape)[0] == 1 and sorted(volume.shape)[1] > 1


def plane_of(volume: Volume) -> tuple[int, tuple[int, int], int]:
    """``(slice_axis, (world_u, world_v), world_normal)`` of a flat volume.

    Raises :class:`FlatError` when the slice is oblique to the world axes.
    """
    k = volume.shape.index(1)
    a, b = (ax for ax in range(3) if ax != k)
    cols = volume.affine[:3, [a, b]]
    normal = np.cross(cols[:, 0], cols[:, 1])
    normal = normal / np.linalg.norm(normal)
    w = int(np.argmax(np.abs(normal)))
    if abs(abs(normal[w]) - 1.0) > _TOL:
        name = volume.metadata.get("source_path", volume.name)
        raise FlatError(f"{name}: a one-slice image whose slice is oblique to the world axes "
                        "cannot be registered as 2D; reslice it to an axial, coronal or "
                        "sagittal plane")
    u, v = (ax for ax in range(3) if ax != w)
    return k, (u, v), w


def flatten(volume: Volume) -> Volume:
    """The 2D image of a flat volume: world coordinates ``(u, v)`` of its plane, RAS mm."""
    k, (u, v), _ = plane_of(volume)
    a, b = (ax for ax in range(3) if ax != k)
    affine = np.eye(3)
    affine[:2, :2] = volume.affine[np.ix_([u, v], [a, b])]
    affine[:2, 2] = volume.affine[[u, v], 3]
    data = np.take(np.asarray(volume.data), 0, axis=k)
    return Volume(data, affine, volume.name, dict(volume.metadata))


def unflatten(image: Volume, like: Volume) -> Volume:
    """A 2D image on ``flatten(like)``'s grid, back on ``like``'s own 3D grid."""
    k = like.shape.index(1)
    data = np.expand_dims(np.asarray(image.data), axis=k)
    return Volume(data, like.affine.copy(), image.name, dict(like.metadata))


def was_2d_file(volume: Volume) -> bool:
    """True when ``volume`` was read from a file that is itself 2D (NIfTI dim[0] = 2)."""
    header = volume.metadata.get("header") if isinstance(volume.metadata, dict) else None
    try:
        return len(header.get_data_shape()) == 2
    except AttributeError:
        return False


def embed_matrix(matrix2d: np.ndarray, fixed: Volume, moving: Volume) -> np.ndarray:
    """3D fixed->moving matrix (RAS mm) of a 2D one between the planes of two flat volumes."""
    _, (u, v), w = plane_of(fixed)
    m = np.eye(4)
    m[np.ix_([u, v], [u, v])] = matrix2d[:2, :2]
    m[[u, v], 3] = matrix2d[:2, 2]
    m[w, 3] = moving.affine[w, 3] - fixed.affine[w, 3]  # fixed slice -> moving slice
    return m


def reduce_matrix(matrix: np.ndarray, fixed: Volume, source: str | os.PathLike = "",
                  role: str = "transform") -> np.ndarray:
    """The 2D (3x3) part of a 3D fixed->moving matrix in ``fixed``'s plane.

    Refused when the matrix tilts the plane (mixes the normal into it): a 2D registration
    cannot represent that.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (3, 3):
        return matrix
    _, (u, v), w = plane_of(fixed)
    mixing = max(abs(matrix[w, u]), abs(matrix[w, v]), abs(matrix[u, w]), abs(matrix[v, w]))
    if mixing > 1e-6:
        raise FlatError(f"{role} {os.fspath(source)}: rotates out of the images' plane; a 2D "
                        "registration needs an in-plane transform")
    out = np.eye(3)
    out[:2, :2] = matrix[np.ix_([u, v], [u, v])]
    out[:2, 2] = matrix[[u, v], 3]
    return out


def reduce_points(points: np.ndarray, fixed: Volume) -> np.ndarray:
    """World (RAS mm) points ``(n, 3)`` as 2D points ``(n, 2)`` of ``fixed``'s plane."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] == 2:
        return points
    _, (u, v), _ = plane_of(fixed)
    return points[:, [u, v]]


class PlanarPair:
    """A fixed/moving pair as the registration sees it: 2D when both files are flat.

    ``fixed``/``moving`` are what to register; the ``*_for_file`` methods turn 2D results
    back into what is written next to 3D (one-slice) or 2D files. For a 3D pair every
    method is the identity.
    """

    def __init__(self, fixed: Volume, moving: Volume) -> None:
        self.fixed3, self.moving3 = fixed, moving
        flat = (is_flat(fixed), is_flat(moving))
        self.active = all(flat)
        if any(flat) and not self.active:
            which = "fixed" if flat[0] else "moving"
            other = "moving" if flat[0] else "fixed"
            raise FlatError(f"the {which} image {_source(fixed if flat[0] else moving)} is one "
                            f"slice (2D) but the {other} image is a 3D volume; register 2D "
                            "with 2D, 3D with 3D")
        if self.active and plane_of(fixed)[2] != plane_of(moving)[2]:
            raise FlatError(f"the fixed image {_source(fixed)} and the moving image "
                            f"{_source(moving)} are slices of different planes (e.g. axial "
                            "and coronal)")
        self.fixed = flatten(fixed) if self.active else fixed
        self.moving = flatten(moving) if self.active else moving
        self.file_2d = self.active and was_2d_file(fixed)

    def mask(self, mask: Volume, role: str = "fixed mask") -> Volume:
        if not self.active:
            return mask
        if not is_flat(mask) or plane_of(mask)[2] != plane_of(self.fixed3)[2]:
            raise FlatError(f"the {role} {_source(mask)} is not a slice of the images' "
                            "plane")
        return flatten(mask)

    def points(self, points: np.ndarray) -> np.ndarray:
        return reduce_points(points, self.fixed3) if self.active else points

    def initial(self, matrix: np.ndarray, source: str | os.PathLike = "") -> np.ndarray:
        if not self.active:
            return matrix
        return reduce_matrix(matrix, self.fixed3, source, "initial transform")

    def matrix_for_file(self, matrix: np.ndarray) -> np.ndarray:
        if not self.active or self.file_2d:
            return np.asarray(matrix)
        return embed_matrix(matrix, self.fixed3, self.moving3)

    def volume_for_file(self, image: Volume) -> Volume:
        return unflatten(image, self.fixed3) if self.active else image

    def field_for_file(self, field):
        """A 2D displacement field as a 3D one on the fixed file's one-slice grid (its
        normal component moves the fixed slice onto the moving one); 2D files keep 2D."""
        from napari_reg.core.transforms.field import DisplacementField

        if not self.active or self.file_2d:
            return field
        k, (u, v), w = plane_of(self.fixed3)
        comps = np.zeros((3, *self.fixed3.shape), dtype=np.float32)
        comps[u] = np.expand_dims(field.components[0], axis=k)
        comps[v] = np.expand_dims(field.components[1], axis=k)
        comps[w] = self.moving3.affine[w, 3] - self.fixed3.affine[w, 3]
        return DisplacementField.from_components(comps, self.fixed3.affine)


    def transform_from_file(self, transform, source: str | os.PathLike = ""):
        """A transform read from a file (a matrix or a displacement field) for the 2D
        images: 3D ones are reduced to the plane (refused if they tilt it)."""
        from napari_reg.core.transforms.base import MatrixTransform
        from napari_reg.core.transforms.field import DisplacementField

        if not self.active:
            return MatrixTransform(transform) if isinstance(transform, np.ndarray) else transform
        if isinstance(transform, np.ndarray):
            return MatrixTransform(reduce_matrix(transform, self.fixed3, source))
        if isinstance(transform, DisplacementField) and transform.ndim == 3:
            if not transform.same_grid(self.fixed3.shape, self.fixed3.affine, 1e-3):
                raise FlatError(f"the field {os.fspath(source)} is not on the reference grid")
            k, (u, v), _ = plane_of(self.fixed3)
            comps = np.take(transform.components, 0, axis=1 + k)[[u, v]]
            return DisplacementField.from_components(comps, self.fixed.affine)
        return transform


def _source(volume: Volume) -> str:
    meta = volume.metadata if isinstance(volume.metadata, dict) else {}
    return str(meta.get("source_path", volume.name))
