"""ITK/ANTs binary MATLAB transforms (``.mat``, e.g. ANTs ``0GenericAffine.mat``) <-> matrix.

Layout (ITK's MatlabTransformIO): one variable named after the type (e.g.
``AffineTransform_float_3_3``) with the parameters and one named ``fixed`` with the
FixedParameters (the centre), both LPS mm, fixed -> moving (ITK's resampling direction).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from ..atomic import atomic_path
from ._common import TransformFileError, check_matrix, lps_flip
from .itk_params import affine_parameters, itk_matrix_lps, parse_type

__all__ = ["read_itk_mat", "write_itk_mat"]


def read_itk_mat(path: str | os.PathLike) -> np.ndarray:
    """Read an ITK/ANTs binary MATLAB transform as a RAS fixed->moving matrix."""
    path = Path(path)
    if not path.is_file():
        raise TransformFileError(f"ITK .mat transform file not found: {path}")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-MATLAB input
        raise TransformFileError(f"{path}: not a readable MATLAB transform file ({exc})"
                                 ) from None
    names = [k for k in content if not k.startswith("__") and k != "fixed"]
    if len(names) != 1:
        raise TransformFileError(f"{path}: expected one transform variable besides "
                                 f"'fixed', found {names}")
    kind, d = parse_type(names[0], str(path))
    if kind == "CompositeTransform":
        raise TransformFileError(f"{path}: composite transforms cannot be stored in .mat")
    try:
        params = np.asarray(content[names[0]], dtype=np.float64).ravel()
        fixed = np.asarray(content.get("fixed", np.zeros(0)), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TransformFileError(f"{path}: transform variables are not numeric") from None
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(fixed))):
        raise TransformFileError(f"{path}: NaN or infinite parameter")
    return lps_flip(itk_matrix_lps(kind, d, params, fixed, str(path)))


def write_itk_mat(matrix: np.ndarray, path: str | os.PathLike) -> None:
    """Write a RAS fixed->moving matrix in ITK's binary MATLAB v4 layout (what ANTs writes)."""
    m = lps_flip(check_matrix(matrix, f"writing {path}"))
    name, params = affine_parameters(m)
    d = m.shape[0] - 1
    with atomic_path(path) as tmp:
        scipy.io.savemat(str(tmp), {name: params[:, None], "fixed": np.zeros((d, 1))},
                         format="4")  # ITK reads MATLAB v4 only
