"""FSL: FLIRT matrices <-> a RAS fixed->moving matrix; FNIRT warp fields -> a field.

FSL works in "scaled voxel" coordinates of each image: voxel index times voxel size,
with the first axis reversed when the voxel->world affine has a positive determinant
(FSL's radiological convention). So every conversion needs both images' grids.

* FLIRT (``flirt -in MOVING -ref FIXED -omat f.mat``) stores the push direction
  (moving -> fixed) in those coordinates.
* FNIRT relative warp fields (``fnirt --fout``, ``convertwarp --relout``): a 4D NIfTI
  ``(X, Y, Z, 3)`` on the fixed (``--ref``) grid, NIfTI intent 2006; the vector at a
  fixed voxel is added to its scaled-voxel position to give the position in the
  moving (``--in``) image's scaled-voxel coordinates (the pull direction).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ...core.image import Volume
from ...core.transforms.field import DisplacementField
from ._common import TransformFileError, check_matrix, text_rows, write_text

__all__ = ["FNIRT_INTENT", "read_fnirt_warp", "read_fsl_matrix", "write_fsl_matrix"]

FNIRT_INTENT = 2006  # NIFTI_INTENT_FSL_FNIRT_DISPLACEMENT_FIELD
# FSL's spline / DCT coefficient intents (fnirt --cout, topup): not displacement fields.
_FSL_COEFFICIENT_INTENTS = {2007: "cubic spline", 2008: "DCT", 2009: "quadratic spline",
                            2016: "topup cubic spline", 2017: "topup quadratic spline"}


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
    f = check_matrix(text_rows(path, "FSL FLIRT matrix"), str(path))
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
    m = check_matrix(matrix, f"writing {path}")
    if m.shape != (4, 4):
        raise TransformFileError(f"writing {path}: FSL FLIRT matrices are 3D (4x4)")
    w_fix = _fsl_world_to_scaled(fixed, "fixed (reference)")
    w_mov = _fsl_world_to_scaled(moving, "moving (input)")
    f = w_fix @ np.linalg.inv(m) @ np.linalg.inv(w_mov)
    f[3] = (0.0, 0.0, 0.0, 1.0)
    text = "".join("  ".join(repr(float(v)) for v in row) + "\n" for row in f)
    write_text(path, text)



def read_fnirt_warp(path: str | os.PathLike, moving: Volume) -> DisplacementField:
    """Read an FNIRT relative warp field as a fixed->moving field (world RAS mm).

    The field's own grid is the fixed (``--ref``) grid; ``moving`` is the ``--in``
    image, whose scaled-voxel coordinates the displaced points are in:
    ``T(x) = W_mov^-1 (W_fix x + d(x))``. Coefficient files (``--cout``) are refused.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise TransformFileError(f"FNIRT warp file not found: {path}") from None
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise TransformFileError(f"{path}: not a readable NIfTI warp ({exc})") from None
    code = int(img.header.get("intent_code", 0))
    if code in _FSL_COEFFICIENT_INTENTS:
        raise TransformFileError(
            f"{path}: an FSL {_FSL_COEFFICIENT_INTENTS[code]} coefficient file (fnirt "
            "--cout), not a displacement field; convert it first: convertwarp "
            "--ref=FIXED --warp1=COEF --relout --out=warp_field")
    if len(img.shape) != 4 or img.shape[3] != 3:
        raise TransformFileError(f"{path}: an FNIRT warp field is 4D (X, Y, Z, 3), "
                                 f"found shape {img.shape}")
    data = np.asarray(img.dataobj, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise TransformFileError(f"{path}: NaN or infinite vectors")
    grid = Volume(np.zeros(img.shape[:3], np.uint8), img.affine)
    w_fix = _fsl_world_to_scaled(grid, "warp field (fixed)")
    w_mov = _fsl_world_to_scaled(moving, "moving (input)")
    extent = np.abs(w_fix[:3, :3] @ (np.array(img.shape[:3]) - 1.0)).max()
    if np.abs(data).mean() > 0.25 * extent:
        raise TransformFileError(
            f"{path}: looks like an absolute warp (coordinates, not displacements); "
            "write a relative one: convertwarp --ref=FIXED --warp1=WARP --relout --out=rel")
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in img.shape[:3]], indexing="ij"), -1)
    world = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    scaled = world @ w_fix[:3, :3].T + w_fix[:3, 3] + data
    inv = np.linalg.inv(w_mov)
    moved = scaled @ inv[:3, :3].T + inv[:3, 3]
    return DisplacementField((moved - world).astype(np.float32), img.affine)
