"""ITK HDF5 transform files (``.h5``, e.g. ANTs ``Composite.h5``) <-> transforms.

Layout (ITK's HDF5TransformIO): groups ``/TransformGroup/0``, ``/1``, ... each with
``TransformType`` (a string such as ``AffineTransform_double_3_3``),
``TransformFixedParameters`` and ``TransformParameters`` (old ITK spelled them
``Tranform...``). A ``CompositeTransform`` in group 0 is followed by its components in
ITK's queue order: the point mapping is ``C1(C2(...Cn(x)))``, the LAST one first (ANTs'
``Composite.h5`` holds the affine, then the warp: ``x -> Affine(Warp(x))``).
Everything is LPS mm and maps fixed/output points to moving/input points. A
``DisplacementFieldTransform`` stores size, origin, spacing and direction (row-major) as
fixed parameters and the LPS vectors, interleaved per voxel with x fastest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...core.transforms.base import CompositeTransform, MatrixTransform, Transform
from ...core.transforms.field import DisplacementField
from ..atomic import atomic_path
from ._common import TransformFileError, check_matrix, lps_flip
from .itk_params import affine_parameters, itk_matrix_lps, parse_type

__all__ = ["read_itk_h5", "write_itk_h5"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise TransformFileError("reading or writing .h5 transforms needs h5py "
                                 "(pip install h5py)") from None
    return h5py


def _field_from_itk(fixed: np.ndarray, params: np.ndarray, d: int,
                    where: str) -> DisplacementField:
    if fixed.size != d * (3 + d):
        raise TransformFileError(f"{where}: a {d}D displacement field needs {d * (3 + d)} "
                                 f"FixedParameters (size, origin, spacing, direction)")
    size = fixed[:d].astype(int)
    origin, spacing = fixed[d:2 * d], fixed[2 * d:3 * d]
    direction = fixed[3 * d:].reshape(d, d)
    if params.size != d * int(np.prod(size)):
        raise TransformFileError(f"{where}: {params.size} field values for a grid of "
                                 f"{tuple(size)} x {d} components")
    lps = np.eye(d + 1)
    lps[:d, :d] = direction * spacing
    lps[:d, d] = origin
    flip = np.diag([-1.0, -1.0] + [1.0] * (d - 1))
    ras_affine = flip @ lps
    vectors = params.reshape((d, *size), order="F")  # component fastest, then x, y, z
    vectors = vectors * np.diag(flip)[:d].reshape((d,) + (1,) * d)  # LPS -> RAS
    return DisplacementField.from_components(vectors.astype(np.float32), ras_affine)


def _field_to_itk(field: DisplacementField) -> tuple[np.ndarray, np.ndarray]:
    d = field.ndim
    flip = np.diag([-1.0, -1.0] + [1.0] * (d - 1))
    lps = flip @ field.affine
    spacing = np.linalg.norm(lps[:d, :d], axis=0)
    direction = lps[:d, :d] / spacing
    fixed = np.r_[np.array(field.shape, float), lps[:d, d], spacing, direction.ravel()]
    vectors = field.components.astype(np.float64) * np.diag(flip)[:d].reshape(
        (d,) + (1,) * d)
    return fixed, vectors.ravel(order="F")


def read_itk_h5(path: str | os.PathLike) -> Transform:
    """Read an ITK/ANTs ``.h5`` transform as one fixed->moving transform (world RAS mm).

    Linear components become :class:`MatrixTransform`, displacement fields
    :class:`DisplacementField` on their own grid; a composite keeps ITK's order.
    """
    h5py = _h5py()
    path = Path(path)
    try:
        f = h5py.File(str(path), "r")
    except FileNotFoundError:
        raise TransformFileError(f"ITK .h5 transform file not found: {path}") from None
    except OSError as exc:
        raise TransformFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "TransformGroup" not in f:
            hint = " (it is an X5 file: use --format x5)" if f.attrs.get("Format") == "X5" else ""
            raise TransformFileError(f"{path}: no /TransformGroup, not an ITK HDF5 transform"
                                     + hint)
        group = f["TransformGroup"]
        parts = []
        for key in sorted(group, key=lambda k: int(k) if k.isdigit() else -1):
            g, where = group[key], f"{path}, TransformGroup/{key}"
            raw = g["TransformType"][0]
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            prefix = "Transform" if "TransformParameters" in g else "Tranform"
            params = np.asarray(g.get(f"{prefix}Parameters", np.zeros(0)), np.float64).ravel()
            fixed = np.asarray(g.get(f"{prefix}FixedParameters", np.zeros(0)),
                               np.float64).ravel()
            parts.append((name, params, fixed, where))
    if not parts:
        raise TransformFileError(f"{path}: no transforms in /TransformGroup")
    kind0, _ = parse_type(parts[0][0], parts[0][3], allow_nonlinear=True)
    if kind0 == "CompositeTransform":
        parts = parts[1:]
    elif len(parts) > 1:
        raise TransformFileError(f"{path}: holds {len(parts)} separate transforms (a list, "
                                 "not a CompositeTransform); cannot tell which one to use")
    if not parts:
        raise TransformFileError(f"{path}: CompositeTransform without components")
    transforms: list[Transform] = []
    for name, params, fixed, where in parts:
        kind, d = parse_type(name, where, allow_nonlinear=True)
        if kind == "CompositeTransform":
            raise TransformFileError(f"{where}: nested CompositeTransform not supported")
        if kind == "DisplacementFieldTransform":
            transforms.append(_field_from_itk(fixed, params, d, where))
        elif kind in ("AffineTransform", "MatrixOffsetTransformBase") or not any(
                s in kind for s in ("Field", "Spline", "Velocity", "Kernel", "Warp")):
            transforms.append(MatrixTransform(lps_flip(itk_matrix_lps(kind, d, params,
                                                                      fixed, where))))
        else:
            raise TransformFileError(
                f"{where}: {kind} is not supported (linear transforms and "
                "DisplacementFieldTransform are); convert it to a displacement field, e.g. "
                "with antsApplyTransforms -o [field.nii.gz,1]")
    # ITK applies the last component first; CompositeTransform applies list order.
    return transforms[0] if len(transforms) == 1 else CompositeTransform(transforms[::-1])


def write_itk_h5(transforms: list[Transform], path: str | os.PathLike) -> None:
    """Write fixed->moving transforms as an ITK ``CompositeTransform`` ``.h5``.

    ``transforms`` are in ITK/ANTs command-line order (the LAST is applied to a point
    first): ``[affine, warp]`` stores ``x -> affine(warp(x))``, like ANTs' Composite.h5.
    Each is a linear transform (``.matrix``) or a :class:`DisplacementField`.
    """
    h5py = _h5py()
    path = Path(path)
    if not transforms:
        raise TransformFileError(f"writing {path}: no transforms to write")
    d = transforms[0].ndim
    groups = [(f"CompositeTransform_double_{d}_{d}", np.zeros(0), np.zeros(0))]
    for t in transforms:
        if isinstance(t, DisplacementField):
            fixed, params = _field_to_itk(t)
            groups.append((f"DisplacementFieldTransform_double_{d}_{d}", fixed, params))
        elif getattr(t, "is_linear", False):
            name, params = affine_parameters(lps_flip(check_matrix(t.matrix,
                                                                   f"writing {path}")))
            groups.append((name, np.zeros(d), params))
        else:
            raise TransformFileError(f"writing {path}: {type(t).__name__} is neither linear "
                                     "nor a displacement field; sample it on the fixed grid "
                                     "first (DisplacementField.from_transform)")
    with atomic_path(path) as tmp, h5py.File(str(tmp), "w") as f:
        f.create_dataset("ITKVersion", data=np.array([b"napari-reg"]))
        f.create_dataset("HDFVersion", data=np.array([h5py.version.hdf5_version.encode()]))
        root = f.create_group("TransformGroup")
        for i, (name, fixed, params) in enumerate(groups):
            g = root.create_group(str(i))
            g.create_dataset("TransformType", data=np.array([name.encode()]),
                             dtype=h5py.string_dtype("ascii"))
            if i:  # ITK writes only the type for the composite itself
                g.create_dataset("TransformFixedParameters", data=fixed.astype(np.float64))
                g.create_dataset("TransformParameters", data=params.astype(np.float64))
