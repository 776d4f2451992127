"""AFNI affine matrices (``*.aff12.1D``) -> a RAS fixed->moving matrix (via nitransforms)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ...core.image import Volume
from ._common import TransformFileError, check_matrix, nitransforms_io, read_text

__all__ = ["read_afni_matrix"]


def _nifti(volume: Volume | None) -> nib.Nifti1Image | None:
    if volume is None:
        return None
    return nib.Nifti1Image(np.zeros(volume.shape[:3], np.uint8), volume.affine)


def read_afni_matrix(path: str | os.PathLike, fixed: Volume | None = None,
                     moving: Volume | None = None) -> np.ndarray:
    """An AFNI affine (``3dAllineate -1Dmatrix_save``, ``*.aff12.1D``: 12 numbers, DICOM/
    LPS, base (fixed) -> source (moving)) as a RAS fixed->moving matrix.

    AFNI silently deobliques oblique images; for an oblique fixed or moving image pass it,
    so that its rotation is put back (nitransforms' ``_cardinal_rotation``)."""
    path = Path(path)
    text = read_text(path, "AFNI affine")
    rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(rows) != 1 or len(rows[0].split()) != 12:
        raise TransformFileError(
            f"{path}: an AFNI affine has one row of 12 numbers (found {len(rows)} rows); "
            "a file with one row per volume (3dvolreg) holds a series: split it first")
    io = nitransforms_io()
    try:
        xfm = io.afni.AFNILinearTransform.from_string(text)
        m = xfm.to_ras(moving=_nifti(moving), reference=_nifti(fixed))
    except Exception as exc:  # nitransforms raises several types on bad input
        raise TransformFileError(f"{path}: not a readable AFNI affine ({exc})") from None
    return check_matrix(m, str(path))
