"""Transform files of every tool <-> our fixed->moving transforms (world RAS mm).

One module per format, each converting to and from one RAS matrix that maps FIXED
world points to MOVING world points (or, for warps, a :class:`DisplacementField` in
that direction); this module picks the module. No convention is guessed: a format is
taken from the file's own markers (ITK header, HDF5 groups, MATLAB binary, LTA keys,
NIfTI intent codes, AFNI's ``.1D``) or named by the caller, and a plain 4x4 text matrix,
which could be FSL FLIRT or greedy/c3d, is refused until the format is named.

============  ==================================================  ====================
format        files                                               needs
============  ==================================================  ====================
``itk``       ITK/ANTs/Slicer text ``.tfm``/``.txt``
``itk-mat``   ITK/ANTs binary MATLAB ``.mat`` (``0GenericAffine``)
``itk-h5``    ITK/ANTs HDF5 ``.h5`` (``Composite.h5``), warps too
``ras``       greedy / c3d / ITK-SNAP 4x4 text (RAS fixed->moving)
``fsl``       FSL FLIRT ``-omat`` 4x4 text                        fixed and moving
``lta``       FreeSurfer ``.lta``
``afni``      AFNI ``*.aff12.1D``                                 images if oblique
``x5``        NiPreps X5 ``.x5`` (linear)
``field``     ITK/ANTs NIfTI displacement field (``1Warp.nii.gz``)
``fnirt``     FSL FNIRT relative warp field (``fnirt --fout``)    moving
============  ==================================================  ====================
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ...core.image import Volume
from ...core.transforms.base import CompositeTransform, MatrixTransform, Transform
from ._common import TransformFileError, read_bytes
from .afni import read_afni_matrix
from .fsl import FNIRT_INTENT, read_fnirt_warp, read_fsl_matrix, write_fsl_matrix
from .itk_h5 import HDF5_MAGIC, read_itk_h5, write_itk_h5
from .itk_mat import read_itk_mat, write_itk_mat
from .itk_text import ITK_MAGIC, read_itk_transform, write_itk_text
from .lta import read_lta
from .ras_matrix import read_ras_matrix, write_ras_matrix
from .x5 import read_x5

__all__ = ["FORMATS", "LINEAR_FORMATS", "TransformFileError", "detect_format",
           "load_transform", "read_afni_matrix", "read_fnirt_warp", "read_fsl_matrix",
           "read_itk_h5", "read_itk_mat", "read_itk_transform", "read_lta",
           "read_ras_matrix", "read_transform", "read_x5", "write_fsl_matrix",
           "write_itk_h5", "write_itk_transform", "write_ras_matrix", "write_transform"]

LINEAR_FORMATS = ("itk", "itk-mat", "itk-h5", "ras", "fsl", "lta", "afni", "x5")
FORMATS = (*LINEAR_FORMATS, "field", "fnirt")
_AMBIGUOUS = ("a plain 4x4 text matrix does not say its convention: name it, "
              "--format fsl (FSL FLIRT -omat; needs the fixed and moving images) or "
              "--format ras (greedy / c3d / ITK-SNAP: RAS, fixed -> moving); "
              "register takes it as --initial-format, Python as format=")
_NIFTI = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def _nifti_format(path: Path) -> str:
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise TransformFileError(f"{path}: not a readable NIfTI file ({exc})") from None
    code = int(header.get("intent_code", 0))
    if code in (1006, 1007):
        return "field"
    if FNIRT_INTENT <= code <= 2017:
        return "fnirt"
    raise TransformFileError(
        f"{path}: a NIfTI image with intent code {code} is not marked as a warp; an "
        "ITK/ANTs field has intent 1007 (vector) and shape (X, Y, Z, 1, 3), an FSL FNIRT "
        "field intent 2006; name the format (--format field or --format fnirt)")


def _h5_format(path: Path) -> str:
    import h5py

    try:
        f = h5py.File(str(path), "r")
    except OSError as exc:
        raise TransformFileError(f"{path}: a damaged HDF5 file ({exc})") from None
    with f:
        if f.attrs.get("Format") == "X5":
            return "x5"
        if "TransformGroup" in f:
            return "itk-h5"
    raise TransformFileError(f"{path}: an HDF5 file that is neither an ITK transform "
                             "(/TransformGroup) nor X5")


def detect_format(path: str | os.PathLike) -> str:
    """The format a file declares itself (one of :data:`FORMATS`), or a refusal.

    Only markers count: the ITK text header, an HDF5 file's groups, a MATLAB binary,
    FreeSurfer LTA keys, AFNI's ``.1D`` suffix with 12 numbers, a NIfTI intent code.
    A plain 4x4 text matrix (FSL FLIRT or greedy/c3d) is refused: it must be named.
    """
    path = Path(path)
    head = read_bytes(path, "transform")[:4096].removeprefix(b"\xef\xbb\xbf")
    if not head.strip():
        raise TransformFileError(f"{path}: file is empty")
    if head.lstrip().startswith(ITK_MAGIC.encode()):
        return "itk"
    if head.startswith(HDF5_MAGIC):
        return _h5_format(path)
    if _is_nifti(path) or head[:2] == b"\x1f\x8b" or head[344:348] in (b"n+1\0", b"ni1\0"):
        return _nifti_format(path)
    if b"\0" in head or not _is_ascii(head):
        if path.suffix.lower() == ".mat":
            return "itk-mat"
        raise TransformFileError(f"{path}: a binary file that is not a transform format "
                                 f"we know (choices: {', '.join(FORMATS)})")
    text = head.decode("ascii")
    if re.search(r"^\s*type\s*=", text, re.M) and re.search(r"^\s*nxforms\s*=", text, re.M):
        return "lta"
    if re.search(r"^\s*\(Transform\s", text, re.M):
        raise TransformFileError(
            f"{path}: an elastix TransformParameters file, which is not read; convert it to "
            "an ITK transform (itk-elastix: ConvertToItkTransform, then write a .tfm)")
    rows = [r.split() for r in text.splitlines() if r.strip() and not r.startswith("#")]
    if path.name.lower().endswith(".1d") and rows and all(len(r) == 12 for r in rows):
        return "afni"
    if len(rows) == 4 and all(len(r) == 4 for r in rows):
        raise TransformFileError(f"{path}: {_AMBIGUOUS}")
    if rows and len(rows[0]) == 12:
        raise TransformFileError(f"{path}: one row of 12 numbers looks like an AFNI affine "
                                 "but the name does not end in .1D; name it: --format afni")
    raise TransformFileError(f"{path}: not a transform file we recognise (choices: "
                             f"{', '.join(FORMATS)}; a format can be named with --format)")


def _is_ascii(head: bytes) -> bool:
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        return False
    return True


def _check_format(format: str) -> None:
    if format != "auto" and format not in FORMATS:
        raise TransformFileError(f"unknown transform format {format!r} (choices: auto, "
                                 f"{', '.join(FORMATS)})")


def read_transform(path: str | os.PathLike, *, fixed: Volume | None = None,
                   moving: Volume | None = None, format: str = "auto") -> np.ndarray:
    """Read a linear transform file as a RAS fixed->moving ``(d+1, d+1)`` matrix.

    ``format``: one of :data:`LINEAR_FORMATS`, or ``"auto"`` (only what the file itself
    declares; a plain 4x4 matrix is refused). ``fsl`` needs ``fixed`` (FLIRT ``-ref``)
    and ``moving`` (FLIRT ``-in``); ``afni`` uses them when they are oblique.
    """
    path = Path(path)
    _check_format(format)
    if format == "auto":
        format = detect_format(path)
    if format == "itk":
        return read_itk_transform(path)
    if format == "itk-mat":
        return read_itk_mat(path)
    if format == "ras":
        return read_ras_matrix(path)
    if format == "lta":
        return read_lta(path)
    if format == "afni":
        return read_afni_matrix(path, fixed, moving)
    if format == "x5":
        return read_x5(path)
    if format == "fsl":
        if fixed is None or moving is None:
            raise TransformFileError(f"{path}: an FSL FLIRT matrix needs the fixed (-ref) "
                                     "and moving (-in) images to be converted")
        return read_fsl_matrix(path, fixed, moving)
    if format == "itk-h5":
        t = read_itk_h5(path)
        if not _all_linear(t):
            raise TransformFileError(f"{path}: holds a displacement field, not only a "
                                     "linear transform; apply it with napari-reg apply "
                                     "(or load_transform in Python)")
        return _composed_matrix(t)
    raise TransformFileError(f"{path}: a {format} file is a warp, not a matrix; apply it "
                             "with napari-reg apply (or load_transform in Python)")


def _all_linear(t: Transform) -> bool:
    parts = t.transforms if isinstance(t, CompositeTransform) else [t]
    return all(isinstance(p, MatrixTransform) for p in parts)


def _composed_matrix(t: Transform) -> np.ndarray:
    if isinstance(t, CompositeTransform):
        total = np.eye(t.ndim + 1)
        for part in t.transforms:  # list order: the first is applied first
            total = np.asarray(part.matrix) @ total
        return total
    return np.asarray(t.matrix)


def load_transform(path: str | os.PathLike, *, fixed: Volume | None = None,
                   moving: Volume | None = None, format: str = "auto") -> Transform:
    """Read any supported transform file, linear or warp, as a fixed->moving transform.

    Warps (``field``, ``fnirt``, an ``itk-h5`` composite with a displacement field) come
    back as :class:`DisplacementField` (or a composite); matrices as
    :class:`MatrixTransform`. ``fnirt`` needs ``moving``.
    """
    from ..displacement_fields import DisplacementFieldFileError, load_displacement_field

    path = Path(path)
    _check_format(format)
    if format == "auto":
        format = detect_format(path)
    if format == "field":
        try:
            return load_displacement_field(path)
        except DisplacementFieldFileError as exc:
            raise TransformFileError(str(exc)) from None
    if format == "fnirt":
        if moving is None:
            raise TransformFileError(f"{path}: an FNIRT warp is in FSL's voxel coordinates "
                                     "of the moving (--in) image too; pass the moving image")
        return read_fnirt_warp(path, moving)
    if format == "itk-h5":
        t = read_itk_h5(path)
        return MatrixTransform(_composed_matrix(t)) if _all_linear(t) else t
    return MatrixTransform(read_transform(path, fixed=fixed, moving=moving, format=format))


def write_itk_transform(matrix: np.ndarray, path: str | os.PathLike) -> None:
    """Write a RAS fixed->moving matrix as an ITK affine: ``.tfm``/``.txt`` text or
    ``.mat`` binary MATLAB (what ANTs writes). LPS mm inside the file, ITK's
    resampling direction (fixed/output points -> moving/input points)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        write_itk_mat(matrix, path)
    elif suffix in (".tfm", ".txt"):
        write_itk_text(matrix, path)
    else:
        # ITK picks its reader by extension: anything else would be unreadable there.
        raise TransformFileError(f"writing {path}: ITK transform files must end in .tfm, "
                                 f".txt or .mat (got {path.suffix or 'no extension'!r})")


def write_transform(transform: Transform | np.ndarray, path: str | os.PathLike, *,
                    format: str | None = None, fixed: Volume | None = None,
                    moving: Volume | None = None) -> None:
    """Write a fixed->moving transform (or RAS matrix) in one tool's format.

    ``format`` defaults from the name only where the name is unambiguous: ``.tfm`` ITK
    text, ``.h5`` ITK HDF5, ``.nii``/``.nii.gz`` ITK/ANTs displacement field (sampled on
    ``fixed``'s grid). ``.mat``/``.txt`` are written by ITK, FSL and greedy alike: name
    ``itk`` / ``itk-mat``, ``fsl`` (needs ``fixed`` and ``moving``) or ``ras``.
    """
    from ..displacement_fields import save_displacement_field

    path = Path(path)
    if format is None:
        suffix = path.suffix.lower()
        format = ("itk" if suffix == ".tfm" else "itk-h5" if suffix == ".h5" else
                  "field" if _is_nifti(path) else "")
        if not format:
            raise TransformFileError(
                f"writing {path}: the name does not say the format; name it: itk (ITK "
                "text), itk-mat (ITK/ANTs binary .mat), fsl (FLIRT), ras (greedy/c3d)")
    if format == "field":
        save_displacement_field(path, transform if not isinstance(transform, np.ndarray)
                                else MatrixTransform(transform), reference=fixed)
        return
    if format == "itk-h5":
        parts = [MatrixTransform(transform)] if isinstance(transform, np.ndarray) else (
            transform.transforms[::-1] if isinstance(transform, CompositeTransform)
            else [transform])
        write_itk_h5(parts, path)
        return
    if not isinstance(transform, np.ndarray):
        if not transform.is_linear:
            raise TransformFileError(f"writing {path}: a deformable transform does not fit "
                                     f"a {format} matrix; write a .nii.gz field or an .h5")
        transform = np.asarray(transform.matrix)
    if format == "itk":
        write_itk_text(transform, path)
    elif format == "itk-mat":
        write_itk_mat(transform, path)
    elif format == "ras":
        write_ras_matrix(transform, path)
    elif format == "fsl":
        if fixed is None or moving is None:
            raise TransformFileError(f"writing {path}: an FSL FLIRT matrix needs the fixed "
                                     "(-ref) and moving (-in) images")
        write_fsl_matrix(transform, path, fixed, moving)
    else:
        raise TransformFileError(f"writing {path}: cannot write {format!r} (writable: itk, "
                                 "itk-mat, itk-h5, ras, fsl, field)")
