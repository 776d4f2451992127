"""Linear transform files (ITK text and MATLAB, FSL FLIRT) <-> one RAS matrix.

Internally a linear transform is ONE homogeneous ``(d+1, d+1)`` matrix in world RAS mm
that maps FIXED points to MOVING points (the resampling or "pull" direction:
``warped(x) = moving(M x)``). Each file format only converts to and from that matrix.

* ITK (``.tfm``/``.txt`` text, ``.mat`` MATLAB v4 as written by ITK and ANTs) stores
  the same direction (ITK resampling maps output/fixed physical points to input/moving
  points), but in LPS: ``M_lps = L M_ras L`` with ``L = diag(-1, -1, 1, 1)``. A
  parametric transform becomes ``x -> A (x - c) + c + t`` with centre ``c`` taken from
  ``FixedParameters`` (offset ``t + c - A c``).
* FSL FLIRT (``flirt -in MOVING -ref FIXED -omat f.mat``) stores the opposite direction
  (moving -> fixed) in "scaled voxel" coordinates of each image, so it needs both
  images' grids to convert.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io

from napari_reg.core.image import Volume
from napari_reg.io.atomic import atomic_path

__all__ = ["TransformFileError", "read_fsl_matrix", "read_itk_mat", "read_itk_transform",
           "read_transform", "write_fsl_matrix", "write_itk_transform"]

_ITK_MAGIC = "#Insight Transform File"
_TYPE_RE = re.compile(r"^([A-Za-z0-9]+)_(double|float)_(\d+)_(\d+)$")
# Substrings of ITK transform names that are deformable: we read linear files only.
_NONLINEAR = ("BSpline", "DisplacementField", "Kernel", "Velocity", "Spline", "Warp")


class TransformFileError(ValueError):
    """A transform file that cannot be read or written (the message names file and problem)."""


def _lps_flip(matrix: np.ndarray) -> np.ndarray:
    """RAS <-> LPS for a homogeneous matrix: ``L M L`` (its own inverse)."""
    d = matrix.shape[0] - 1
    flip = np.diag([-1.0, -1.0] + [1.0] * (d - 1))
    return flip @ matrix @ flip


def _homogeneous(a: np.ndarray, t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """ITK's ``x -> A (x - c) + c + t`` as a homogeneous matrix (offset ``t + c - A c``)."""
    d = a.shape[0]
    m = np.eye(d + 1)
    m[:d, :d] = a
    m[:d, d] = t + c - a @ c
    return m


def _check_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)
    if m.shape not in ((3, 3), (4, 4)):
        raise TransformFileError(f"{what}: expected a 3x3 (2D) or 4x4 (3D) homogeneous "
                                 f"matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise TransformFileError(f"{what}: matrix contains NaN or infinite values")
    d = m.shape[0] - 1
    if not np.allclose(m[d], np.r_[np.zeros(d), 1.0], atol=1e-9):
        raise TransformFileError(f"{what}: last row must be (0, ..., 0, 1), got {m[d]}")
    return m


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


def _parse_type(name: str, where: str) -> tuple[str, int]:
    m = _TYPE_RE.match(name)
    if m is None:
        raise TransformFileError(f"{where}: cannot parse transform type {name!r} "
                                 "(expected e.g. AffineTransform_double_3_3)")
    kind, d_in, d_out = m.group(1), int(m.group(3)), int(m.group(4))
    if any(s in kind for s in _NONLINEAR):
        raise TransformFileError(f"{where}: {kind} is a nonlinear (deformable) transform; "
                                 "only linear transforms can be read as a matrix")
    if kind != "CompositeTransform" and kind not in _TYPES:
        raise TransformFileError(f"{where}: unknown or unsupported transform type {kind!r}; "
                                 f"supported: {', '.join(sorted(_TYPES))}")
    if d_in != d_out or d_in not in (2, 3):
        raise TransformFileError(f"{where}: {name} maps {d_in}D to {d_out}D; only 2D->2D and "
                                 "3D->3D transforms are supported")
    return kind, d_in


def _itk_matrix_lps(kind: str, d: int, params: np.ndarray, fixed: np.ndarray,
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
    return _homogeneous(np.asarray(a, float), np.asarray(t, float), np.asarray(c, float))


def _numbers(text: str, where: str) -> np.ndarray:
    try:
        values = np.array([float(tok) for tok in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise TransformFileError(f"{where}: malformed number ({exc})") from None
    if not np.all(np.isfinite(values)):
        raise TransformFileError(f"{where}: NaN or infinite value")
    return values


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TransformFileError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise TransformFileError(f"{path}: cannot read ({exc.strerror})") from None


def _read_text(path: Path, what: str) -> str:
    try:
        return _read_bytes(path, what).decode("utf-8-sig")  # tolerate a BOM
    except UnicodeDecodeError:
        raise TransformFileError(f"{path}: not a text file (is it a binary .mat?)") from None


# ----------------------------------------------------------------- ITK text files
def read_itk_transform(path: str | os.PathLike) -> np.ndarray:
    """Read a linear ITK text transform (``.tfm``/``.txt``) as a RAS fixed->moving matrix.

    The file is in LPS mm and in ITK's resampling direction (fixed/output physical point
    -> moving/input physical point), which is our direction, so no inversion happens.
    A ``CompositeTransform`` followed by linear components ``T1 ... Tn`` (file order) is
    composed the way ITK applies it, the LAST one first: ``M = M1 @ M2 @ ... @ Mn``.
    A plain list of several transforms (e.g. per-volume head motion) is ambiguous and
    rejected. Returns a ``(d+1, d+1)`` float64 matrix, world RAS mm.
    """
    path = Path(path)
    text = _read_text(path, "ITK transform")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if not first.startswith(_ITK_MAGIC):
        raise TransformFileError(f"{path}: not an ITK text transform file (first line must "
                                 f"start with {_ITK_MAGIC!r})")
    entries: list[dict] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # '#Transform N' and free comments: ITK's reader skips them too
        where = f"{path}, line {lineno}"
        key, sep, value = line.partition(":")
        if not sep:
            raise TransformFileError(f"{where}: expected 'Key: value', got {line!r}")
        key = key.strip()
        if key == "Transform":
            kind, d = _parse_type(value.strip(), where)
            entries.append({"kind": kind, "d": d, "where": where})
        elif key in ("Parameters", "FixedParameters"):
            if not entries:
                raise TransformFileError(f"{where}: {key} before any 'Transform:' line")
            if key in entries[-1]:
                raise TransformFileError(f"{where}: {key} given twice for one transform")
            entries[-1][key] = _numbers(value, where)
        else:
            raise TransformFileError(f"{where}: unknown key {key!r}")
    if not entries:
        raise TransformFileError(f"{path}: no 'Transform:' entry found")
    if entries[0]["kind"] == "CompositeTransform":
        components = entries[1:]
        if not components:
            raise TransformFileError(f"{path}: CompositeTransform without components")
    elif len(entries) > 1:
        raise TransformFileError(
            f"{path}: holds {len(entries)} separate transforms (a transform list, not a "
            "CompositeTransform); cannot tell which one to use")
    else:
        components = entries
    d = entries[0]["d"]
    total = np.eye(d + 1)
    for e in components:
        if e["kind"] == "CompositeTransform":
            raise TransformFileError(f"{e['where']}: nested CompositeTransform not supported")
        if e["d"] != d:
            raise TransformFileError(f"{e['where']}: {e['d']}D component in a {d}D composite")
        if "Parameters" not in e:
            raise TransformFileError(f"{e['where']}: missing 'Parameters:' line")
        m = _itk_matrix_lps(e["kind"], d, e["Parameters"],
                            e.get("FixedParameters", np.zeros(0)), e["where"])
        total = total @ m  # ITK applies the last-listed component first
    return _lps_flip(total)


def read_itk_mat(path: str | os.PathLike) -> np.ndarray:
    """Read an ITK/ANTs binary MATLAB transform (``.mat``) as a RAS fixed->moving matrix.

    Layout (ITK's MatlabTransformIO, ANTs ``*GenericAffine.mat``): one variable named
    after the type (e.g. ``AffineTransform_float_3_3``) with the parameters and one named
    ``fixed`` with the FixedParameters (the centre), both in LPS mm.
    """
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
    kind, d = _parse_type(names[0], str(path))
    if kind == "CompositeTransform":
        raise TransformFileError(f"{path}: composite transforms cannot be stored in .mat")
    try:
        params = np.asarray(content[names[0]], dtype=np.float64).ravel()
        fixed = np.asarray(content.get("fixed", np.zeros(0)), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TransformFileError(f"{path}: transform variables are not numeric") from None
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(fixed))):
        raise TransformFileError(f"{path}: NaN or infinite parameter")
    return _lps_flip(_itk_matrix_lps(kind, d, params, fixed, str(path)))


def write_itk_transform(matrix: np.ndarray, path: str | os.PathLike, *,
                        comment: str | None = None) -> None:
    """Write a RAS fixed->moving matrix as an ITK ``AffineTransform_double_d_d``.

    ``.mat`` writes ITK's binary MATLAB v4 layout (what ANTs writes); anything else
    (``.tfm``, ``.txt``) the text format, with comment lines stating the direction and
    convention (ITK, SimpleITK, ANTs and Slicer skip ``#`` lines). Parameters are in LPS
    mm, full float precision, centre 0 (so the translation is the offset). The file maps
    fixed/output physical points to moving/input points: ITK's resampling convention,
    usable directly by ``antsApplyTransforms`` or ``sitk.Resample``.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tfm", ".txt", ".mat"):
        # ITK picks its reader by extension: anything else would be unreadable there.
        raise TransformFileError(f"writing {path}: ITK transform files must end in .tfm, "
                                 f".txt or .mat (got {path.suffix or 'no extension'!r})")
    m = _lps_flip(_check_matrix(matrix, f"writing {path}"))
    d = m.shape[0] - 1
    params = np.r_[m[:d, :d].ravel(), m[:d, d]]
    name = f"AffineTransform_double_{d}_{d}"
    if path.suffix.lower() == ".mat":
        with atomic_path(path) as tmp:
            scipy.io.savemat(str(tmp), {name: params[:, None], "fixed": np.zeros((d, 1))},
                             format="4")  # ITK reads MATLAB v4 only
        return
    lines = [
        "#Insight Transform File V1.0",
        "# napari_reg: maps FIXED physical points to MOVING physical points (LPS, mm),",
        "# ITK resampling convention: warped(x) = moving(T(x)) on the fixed grid",
    ]
    if comment:
        lines += [f"# {ln}".rstrip() for ln in comment.splitlines()]
    lines += [
        "#Transform 0",
        f"Transform: {name}",
        "Parameters: " + " ".join(repr(float(v)) for v in params),
        "FixedParameters: " + " ".join(["0"] * d),
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------- FSL FLIRT
def _fsl_world_to_scaled(volume: Volume, role: str) -> np.ndarray:
    """World RAS mm -> FLIRT scaled-voxel mm of ``volume`` (4x4).

    FLIRT's coordinates are voxel index times voxel size (the affine's column norms),
    with the first axis reversed (``(n_x - 1 - i) * dx``) when the voxel->world affine
    has a positive determinant (FSL's "radiological" storage convention).
    """
    affine = np.asarray(volume.affine, dtype=np.float64)
    if affine.shape != (4, 4) or len(volume.shape) < 3:
        raise TransformFileError(f"FSL FLIRT matrices are 3D; the {role} image is "
                                 f"{len(volume.shape)}D")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    scaled = np.diag(np.r_[zooms, 1.0])
    if np.linalg.det(affine[:3, :3]) > 0:
        scaled[0, 0] = -zooms[0]
        scaled[0, 3] = (volume.shape[0] - 1) * zooms[0]
    return scaled @ np.linalg.inv(affine)


def read_fsl_matrix(path: str | os.PathLike, fixed: Volume, moving: Volume) -> np.ndarray:
    """Read a FLIRT matrix (``flirt -in MOVING -ref FIXED -omat``) as RAS fixed->moving.

    FLIRT's matrix ``F`` maps moving (``-in``) scaled-voxel points to fixed (``-ref``)
    scaled-voxel points: the push direction. Ours is the pull direction, so
    ``M = W_mov^-1 F^-1 W_fix`` with ``W`` each image's world -> scaled-voxel map.
    ``fixed``/``moving`` only lend their shape and affine.
    """
    path = Path(path)
    text = _read_text(path, "FSL matrix")
    rows = [ln for ln in text.splitlines() if ln.strip()]
    values = [_numbers(r, f"{path}, row {i + 1}") for i, r in enumerate(rows)]
    if len(values) != 4 or any(v.size != 4 for v in values):
        raise TransformFileError(f"{path}: an FSL matrix has 4 rows of 4 numbers, found "
                                 f"rows of {[v.size for v in values]} numbers")
    f = _check_matrix(np.array(values), str(path))
    if abs(np.linalg.det(f)) < 1e-12:
        raise TransformFileError(f"{path}: FSL matrix is singular")
    w_fix = _fsl_world_to_scaled(fixed, "fixed (reference)")
    w_mov = _fsl_world_to_scaled(moving, "moving (input)")
    return np.linalg.inv(w_mov) @ np.linalg.inv(f) @ w_fix


def write_fsl_matrix(matrix: np.ndarray, path: str | os.PathLike, fixed: Volume,
                     moving: Volume) -> None:
    """Write a RAS fixed->moving matrix as a FLIRT matrix for ``-in MOVING -ref FIXED``.

    The inverse of :func:`read_fsl_matrix`: ``F = W_fix M^-1 W_mov^-1``, usable with
    ``flirt -in MOVING -ref FIXED -applyxfm -init path``.
    """
    path = Path(path)
    m = _check_matrix(matrix, f"writing {path}")
    if m.shape != (4, 4):
        raise TransformFileError(f"writing {path}: FSL FLIRT matrices are 3D (4x4)")
    w_fix = _fsl_world_to_scaled(fixed, "fixed (reference)")
    w_mov = _fsl_world_to_scaled(moving, "moving (input)")
    f = w_fix @ np.linalg.inv(m) @ np.linalg.inv(w_mov)
    f[3] = (0.0, 0.0, 0.0, 1.0)
    text = "".join("  ".join(repr(float(v)) for v in row) + "\n" for row in f)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ----------------------------------------------------------------- dispatch
def _is_plain_text(head: bytes) -> bool:
    """True for ASCII text (FSL matrices), False for binaries (MATLAB .mat)."""
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head  # MATLAB v4 headers are ASCII-range but full of NULs


def read_transform(path: str | os.PathLike, *, fixed: Volume | None = None,
                   moving: Volume | None = None, format: str = "auto") -> np.ndarray:
    """Read any supported linear transform file as a RAS fixed->moving matrix.

    ``format``: ``"itk"`` (text), ``"itk-mat"`` (binary MATLAB), ``"fsl"`` (needs
    ``fixed`` = FLIRT ``-ref`` and ``moving`` = FLIRT ``-in``) or ``"auto"``, which looks
    at the content: the ITK text header, a MATLAB binary, or a plain 4x4 text matrix
    (FSL). Returns a ``(d+1, d+1)`` float64 matrix in world RAS mm.
    """
    path = Path(path)
    if format == "auto":
        head = _read_bytes(path, "transform")[:4096].removeprefix(b"\xef\xbb\xbf")
        if head.lstrip().startswith(_ITK_MAGIC.encode()):
            format = "itk"
        elif head.startswith(b"\x89HDF") or path.suffix.lower() in (".h5", ".hdf5"):
            raise TransformFileError(f"{path}: HDF5 (.h5) ITK transforms are not supported; "
                                     "save the transform as .tfm or .mat")
        elif not head.strip():
            raise TransformFileError(f"{path}: file is empty")
        else:
            format = "fsl" if _is_plain_text(head) else "itk-mat"
    if format == "itk":
        return read_itk_transform(path)
    if format == "itk-mat":
        return read_itk_mat(path)
    if format == "fsl":
        if fixed is None or moving is None:
            raise TransformFileError(f"{path}: an FSL FLIRT matrix needs the fixed (-ref) "
                                     "and moving (-in) images to be converted")
        return read_fsl_matrix(path, fixed, moving)
    raise TransformFileError(f"unknown transform format {format!r} "
                             "(use 'auto', 'itk', 'itk-mat' or 'fsl')")
