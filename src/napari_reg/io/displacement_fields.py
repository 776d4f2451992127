"""Displacement fields as NIfTI files that ITK, SimpleITK and ANTs read (and back).

File convention (ITK's, which ANTs and Slicer share):

* 5D data of shape ``(X, Y, Z, 1, 3)`` (2D: ``(X, Y, 1, 1, 2)``), float32, NIfTI intent
  code 1007 (``NIFTI_INTENT_VECTOR``); 1006 (``NIFTI_INTENT_DISPVECT``) is also read.
* The image geometry is the ordinary NIfTI sform/qform (RAS, nibabel's convention;
  ITK converts it to LPS on reading).
* The **vectors** are in ITK physical space, i.e. LPS millimetres: the x and y
  components are the negatives of our RAS ones (``L = diag(-1, -1, 1)``).
* A field maps **fixed** world points to **moving** world points: ``T(x) = x + u(x)``
  on the fixed grid, exactly what ``antsApplyTransforms`` / ``sitk.DisplacementFieldTransform``
  expect for warping the moving image onto the fixed grid.

Internally (``DisplacementField``) everything is RAS mm; this module only converts.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from ..core.errors import NapariRegError
from ..core.image import Volume
from ..core.transforms.base import Transform
from ..core.transforms.field import DisplacementField
from .atomic import atomic_path
from .volume_checks import VolumeRefused, check_claimed_size, check_geometry

__all__ = ["DisplacementFieldFileError", "save_displacement_field", "load_displacement_field"]

INTENT_VECTOR = 1007
INTENT_DISPVECT = 1006


class DisplacementFieldFileError(NapariRegError):
    """A displacement-field file with the wrong shape, intent, values or grid."""


def _ras_lps(d: int) -> np.ndarray:
    """Sign flips between RAS and LPS vector components (x, y flip; z kept)."""
    return np.array([-1.0, -1.0, 1.0][:d], dtype=np.float32)


def save_displacement_field(path: str | os.PathLike, field: DisplacementField | Transform,
                            reference: Volume | None = None) -> None:
    """Write a fixed->moving displacement field as an ITK/ANTs-readable NIfTI.

    ``field`` is a :class:`DisplacementField` (written on its own grid) or any
    fixed->moving transform, which is then sampled on ``reference``'s grid (e.g. a
    B-spline + linear composite becomes one self-contained field). Written atomically.
    """
    if not isinstance(field, DisplacementField):
        if reference is None:
            raise DisplacementFieldFileError(
                "saving a non-dense transform as a field needs a reference grid (the fixed image)")
        field = DisplacementField.from_transform(field, reference.shape, reference.affine)
    elif reference is not None and not field.same_grid(reference.shape, reference.affine):
        raise DisplacementFieldFileError(
            f"the field's grid {field.shape} does not match the reference image grid "
            f"{reference.shape} (or their affines differ); resample it with "
            "DisplacementField.from_transform(field, reference.shape, reference.affine)")
    d = field.ndim
    comps = field.components * _ras_lps(d).reshape((d,) + (1,) * d)
    data = np.moveaxis(comps, 0, -1).astype(np.float32)  # (*shape, d)
    if d == 2:
        data = data[:, :, None, None, :]
        affine = np.eye(4)
        affine[:2, :2] = field.affine[:2, :2]
        affine[:2, 3] = field.affine[:2, 2]
    else:
        data = data[:, :, :, None, :]
        affine = field.affine
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_intent(INTENT_VECTOR, (), name="DISPLACEMENT")  # ITK writes the same
    hdr.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def load_displacement_field(path: str | os.PathLike,
                            reference: Volume | None = None) -> DisplacementField:
    """Read an ITK/ANTs/SimpleITK (or our own) NIfTI displacement field.

    Returns a :class:`DisplacementField` in RAS mm on the file's own grid. With
    ``reference``, the file's grid must match that image's grid (shape and affine to
    1e-3 mm), else :class:`DisplacementFieldFileError` explains the mismatch.
    """
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise DisplacementFieldFileError(f"cannot read displacement field '{path}': {exc}") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise DisplacementFieldFileError(f"'{path}' is not a NIfTI file")
    shape = img.shape
    if len(shape) != 5 or shape[3] != 1 or shape[4] not in (2, 3):
        raise DisplacementFieldFileError(
            f"'{path}' has shape {shape}; a displacement field must be (X, Y, Z, 1, 3) "
            "(ITK/ANTs convention: one time point, three vector components)")
    code = int(img.header["intent_code"])
    if code not in (INTENT_VECTOR, INTENT_DISPVECT):
        raise DisplacementFieldFileError(
            f"'{path}' has NIfTI intent code {code}; a displacement field has intent 1007 "
            "(vector) or 1006 (displacement vector)")
    d = shape[4]
    try:  # the header's claims first: a lying header must not allocate gigabytes
        check_claimed_size(img, path)
        check_geometry(np.asarray(img.affine, dtype=np.float64), shape[:3], path)
        data = np.asarray(img.dataobj, dtype=np.float32)[:, :, :, 0, :]
    except VolumeRefused as exc:
        raise DisplacementFieldFileError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - zlib/EOF errors of truncated files
        raise DisplacementFieldFileError(
            f"'{path}': the field data cannot be read (truncated or corrupt file: {exc})"
        ) from None
    if not np.all(np.isfinite(data)):
        raise DisplacementFieldFileError(f"'{path}' contains NaN or infinite vectors")
    affine = img.affine
    if d == 2:
        if shape[2] != 1:
            raise DisplacementFieldFileError(
                f"'{path}' has 2 vector components but {shape[2]} slices; a 2D field has one")
        data = data[:, :, 0, :]
        affine = np.array([[affine[0, 0], affine[0, 1], affine[0, 3]],
                           [affine[1, 0], affine[1, 1], affine[1, 3]], [0, 0, 1.0]])
    data = data * _ras_lps(d)  # LPS vectors -> RAS
    field = DisplacementField(data, affine)
    if reference is not None and not field.same_grid(reference.shape, reference.affine, 1e-3):
        raise DisplacementFieldFileError(
            f"the field in '{path}' is on a grid of shape {field.shape} that does not match "
            f"the reference image (shape {reference.shape}, or a different affine); "
            "it was computed for another fixed image")
    return field
