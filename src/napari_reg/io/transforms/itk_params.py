"""ITK's linear transform types (``AffineTransform``, ``Euler3DTransform``, ...) -> matrix.

Shared by the text (``.tfm``), MATLAB (``.mat``) and HDF5 (``.h5``) readers. ITK's
parameters are in LPS mm and map fixed/output physical points to moving/input points;
every type is ``x -> A (x - c) + c + t`` with centre ``c`` from ``FixedParameters``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from ._common import TransformFileError, homogeneous

__all__ = ["NONLINEAR", "affine_parameters", "itk_matrix_lps", "parse_type"]

_TYPE_RE = re.compile(r"^([A-Za-z0-9]+)_(double|float)_(\d+)_(\d+)$")
# Substrings of ITK transform names that are deformable: not readable as a matrix.
NONLINEAR = ("BSpline", "DisplacementField", "Kernel", "Velocity", "Spline", "Warp")


# ----------------------------------------------------------------- ITK parametrisations
def _rot2(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _versor(v: np.ndarray) -> np.ndarray:
    """Rotation matrix of an ITK versor given by its vector part (unit quaternion)."""
    x, y, z = v
    n2 = x * x + y * y + z * z
    if n2 > 1.0 + 1e-12:
        raise ValueError(f"versor vector part has norm {math.sqrt(n2):.6g} > 1")
    w = math.sqrt(max(0.0, 1.0 - n2))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _euler3(ax: float, ay: float, az: float, zyx: bool) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    # ITK's default (ComputeZYX off, 4th fixed parameter 0) is R = Rz Rx Ry.
    return rz @ ry @ rx if zyx else rz @ rx @ ry


def _mat(p: np.ndarray, d: int) -> np.ndarray:
    return p[:d * d].reshape(d, d)


# name -> ({d: number of parameters} for each dimension d the type exists in,
#          function(parameters, centre, d) -> (A, t, c)) for x -> A (x - c) + c + t.
# The centre comes from FixedParameters (0 if absent) except for the Centered* types,
# which carry it among their parameters. Parameter layouts follow ITK's classes.
_Param = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
_TYPES: dict[str, tuple[dict[int, int], _Param]] = {
    "AffineTransform": ({2: 6, 3: 12}, lambda p, c, d: (_mat(p, d), p[d * d:], c)),
    "MatrixOffsetTransformBase": ({2: 6, 3: 12}, lambda p, c, d: (_mat(p, d), p[d * d:], c)),
    "Rigid3DTransform": ({3: 12}, lambda p, c, d: (_mat(p, d), p[9:], c)),
    "CenteredAffineTransform": ({2: 8, 3: 15},
                                lambda p, c, d: (_mat(p, d), p[d * d + d:], p[d * d:-d])),
    "IdentityTransform": ({2: 0, 3: 0}, lambda p, c, d: (np.eye(d), np.zeros(d), c)),
    "TranslationTransform": ({2: 2, 3: 3}, lambda p, c, d: (np.eye(d), p, c)),
    "ScaleTransform": ({2: 2, 3: 3}, lambda p, c, d: (np.diag(p), np.zeros(d), c)),
    "Euler3DTransform": ({3: 6}, lambda p, c, d: (_euler3(*p[:3], zyx=False), p[3:], c)),
    "VersorRigid3DTransform": ({3: 6}, lambda p, c, d: (_versor(p[:3]), p[3:], c)),
    "Similarity3DTransform": ({3: 7}, lambda p, c, d: (p[6] * _versor(p[:3]), p[3:6], c)),
    # ITK's ScaleVersor3D adds the scales to the rotation: A = R + diag(s) - I.
    "ScaleVersor3DTransform": ({3: 9}, lambda p, c, d: (
        _versor(p[:3]) + np.diag(p[6:9]) - np.eye(3), p[3:6], c)),
    "Euler2DTransform": ({2: 3}, lambda p, c, d: (_rot2(p[0]), p[1:], c)),
    "Rigid2DTransform": ({2: 3}, lambda p, c, d: (_rot2(p[0]), p[1:], c)),
    "CenteredRigid2DTransform": ({2: 5}, lambda p, c, d: (_rot2(p[0]), p[3:], p[1:3])),
    "Similarity2DTransform": ({2: 4}, lambda p, c, d: (p[0] * _rot2(p[1]), p[2:], c)),
    "CenteredSimilarity2DTransform": ({2: 6},
                                      lambda p, c, d: (p[0] * _rot2(p[1]), p[4:], p[2:4])),
}


def parse_type(name: str, where: str, allow_nonlinear: bool = False) -> tuple[str, int]:
    """``AffineTransform_double_3_3`` -> (``AffineTransform``, 3), or a clear error."""
    m = _TYPE_RE.match(name)
    if m is None:
        raise TransformFileError(f"{where}: cannot parse transform type {name!r} "
                                 "(expected e.g. AffineTransform_double_3_3)")
    kind, d_in, d_out = m.group(1), int(m.group(3)), int(m.group(4))
    if any(s in kind for s in NONLINEAR) and not allow_nonlinear:
        raise TransformFileError(f"{where}: {kind} is a nonlinear (deformable) transform; "
                                 "only linear transforms can be read as a matrix")
    if kind != "CompositeTransform" and kind not in _TYPES and not (
            allow_nonlinear and any(s in kind for s in NONLINEAR)):
        raise TransformFileError(f"{where}: unknown or unsupported transform type {kind!r}; "
                                 f"supported: {', '.join(sorted(_TYPES))}")
    if d_in != d_out or d_in not in (2, 3):
        raise TransformFileError(f"{where}: {name} maps {d_in}D to {d_out}D; only 2D->2D and "
                                 "3D->3D transforms are supported")
    return kind, d_in


def itk_matrix_lps(kind: str, d: int, params: np.ndarray, fixed: np.ndarray,
                   where: str) -> np.ndarray:
    """One parametric ITK transform -> homogeneous LPS matrix (fixed -> moving)."""
    counts, func = _TYPES[kind]
    if d not in counts:
        raise TransformFileError(f"{where}: {kind} does not exist in {d}D")
    if params.size != counts[d]:
        raise TransformFileError(f"{where}: {kind} in {d}D needs {counts[d]} Parameters, "
                                 f"found {params.size}")
    if fixed.size not in (0, d) and not (kind == "Euler3DTransform" and fixed.size == 4):
        raise TransformFileError(f"{where}: {kind} in {d}D needs 0 or {d} FixedParameters "
                                 f"(the centre), found {fixed.size}")
    centre = fixed[:d] if fixed.size else np.zeros(d)
    try:
        a, t, c = func(params, centre, d)
    except ValueError as exc:
        raise TransformFileError(f"{where}: invalid {kind} parameters: {exc}") from None
    if kind == "Euler3DTransform" and fixed.size == 4:
        a = _euler3(*params[:3], zyx=fixed[3] != 0)  # 4th FixedParameter: ComputeZYX
    return homogeneous(np.asarray(a, float), np.asarray(t, float), np.asarray(c, float))




def affine_parameters(matrix_lps: np.ndarray) -> tuple[str, np.ndarray]:
    """An LPS homogeneous matrix -> (``AffineTransform_double_d_d``, its 12 (3D) or 6 (2D)
    parameters: the matrix row-major, then the translation; centre 0)."""
    d = matrix_lps.shape[0] - 1
    return (f"AffineTransform_double_{d}_{d}",
            np.r_[matrix_lps[:d, :d].ravel(), matrix_lps[:d, d]])
