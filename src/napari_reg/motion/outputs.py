"""The output set of a motion correction, whole or not at all.

``OUTDIR/`` holds ``corrected.nii.gz`` (the series on the reference grid, the input's
header timing kept: ``pixdim[4]``, ``xyzt_units``), ``reference.nii.gz``,
``transforms/frame_NNNN.tfm`` (ITK, LPS: maps REFERENCE physical points to FRAME k
physical points, the linear part; deformable runs add ``frame_NNNN_whole_field.nii.gz``,
the whole reference->frame map as an ITK/ANTs displacement field, which already contains
the linear part: use it alone), ``motion.tsv`` and ``run.json`` (written last).

Everything is written into a staging folder beside ``OUTDIR``
(``.OUTDIR.napari-reg-partial``, also where an interrupted run keeps its finished frames)
and moved into place with one ``rename``: a reader never sees a partial set, and an
existing non-empty ``OUTDIR`` (which may hold inputs) is refused, never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.motion import (
    PARAMETER_NAMES,
    FrameResult,
    MotionError,
    MotionSettings,
    framewise_displacement,
    motion_parameters,
)
from ..io.atomic import atomic_path
from ..io.displacement_fields import save_displacement_field
from ..io.transform_files import write_itk_transform
from ..io.volumes import save_volume, save_volume_stack

__all__ = ["OUTPUT_NAMES", "RECORD_VERSION", "staging_dir", "check_output_dir",
           "motion_table", "write_output_set", "commit", "DIRECTION"]

OUTPUT_NAMES = {"corrected": "corrected.nii.gz", "reference": "reference.nii.gz",
                "transforms": "transforms", "motion": "motion.tsv", "record": "run.json"}
RECORD_VERSION = 1
DIRECTION = ("frame k's transform maps REFERENCE world points (RAS mm; LPS in the ITK "
             "files) to FRAME k world points: corrected_k(x) = frame_k(T_k(x))")


def staging_dir(output_dir: str | os.PathLike) -> Path:
    """The sibling folder an output set is built in (and an interrupted run resumes from)."""
    out = Path(output_dir).absolute()
    return out.parent / f".{out.name}.napari-reg-partial"


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """``OUTDIR`` must not exist yet (or be an empty folder); its parent must be writable."""
    out = Path(output_dir).absolute()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        what = "folder is not empty" if out.is_dir() else "is a file"
        raise MotionError(f"{out} exists and {what}; choose a new output folder "
                          "(nothing is ever overwritten)")
    parent = out.parent
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise MotionError(f"cannot create the output folder's parent {parent}: "
                              f"{exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK):
        raise MotionError(f"cannot write in {parent} (permission denied)")
    return out


def motion_table(results: Sequence[FrameResult], center: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(T, 6) motion parameters (degrees, mm) and (T,) framewise displacement (mm)."""
    params = np.stack([motion_parameters(r.matrix, center) for r in results])
    return params, framewise_displacement(params)


def _tsv(params: np.ndarray, fd: np.ndarray, threshold: float) -> str:
    lines = ["\t".join(("frame", *PARAMETER_NAMES, "fd_mm", "flagged"))]
    for k, (p, d) in enumerate(zip(params, fd, strict=True)):
        lines.append("\t".join([str(k), *(f"{v:.6f}" for v in p), f"{d:.6f}",
                                str(int(d > threshold))]))
    return "\n".join(lines) + "\n"


def write_output_set(folder: str | os.PathLike, reference: Volume, corrected: np.ndarray,
                     results: Sequence[FrameResult], settings: MotionSettings, header: Any,
                     fd_threshold_mm: float = 0.5,
                     record: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every output into ``folder`` (a staging folder), ``run.json`` last.

    ``corrected`` is ``(X, Y, Z, T)`` on the reference grid, ``results`` one per frame in
    frame order, ``header`` the series' NIfTI header (timing kept). ``record`` adds
    fields to ``run.json``. Returns the written paths.
    """
    folder = Path(folder)
    results = sorted(results, key=lambda r: r.index)
    if [r.index for r in results] != list(range(corrected.shape[3])):
        raise MotionError("internal: the frame results do not cover every frame")
    names = {k: folder / v for k, v in OUTPUT_NAMES.items()}
    save_volume_stack(corrected, reference.affine, names["corrected"], dtype=np.float32,
                      header=header)
    save_volume(reference, names["reference"], dtype=np.float32)
    names["transforms"].mkdir(parents=True, exist_ok=True)
    for r in results:
        write_itk_transform(r.matrix, names["transforms"] / f"frame_{r.index:04d}.tfm",
                            comment=f"napari-reg motion: maps REFERENCE physical points to "
                            f"FRAME {r.index} physical points")
        if r.field is not None:
            save_displacement_field(
                names["transforms"] / f"frame_{r.index:04d}_whole_field.nii.gz", r.field)
    params, fd = motion_table(results, reference.center_world())
    with atomic_path(names["motion"]) as tmp:
        tmp.write_text(_tsv(params, fd, fd_threshold_mm))
    from ..job import _versions

    body = {
        "napari_reg_motion_record": RECORD_VERSION,
        "direction": DIRECTION,
        "settings": settings.to_dict(),
        "n_frames": len(results),
        "parameters": {"columns": list(PARAMETER_NAMES), "center_mm":
                       reference.center_world().tolist(),
                       "fd": "Power et al. 2012: sum of |diff| of the 6 parameters, "
                             "rotations as arc length on a 50 mm sphere"},
        "fd_threshold_mm": fd_threshold_mm,
        "flagged_frames": [int(k) for k in np.flatnonzero(fd > fd_threshold_mm)],
        "mean_fd_mm": float(fd.mean()),
        "frames": [{"index": r.index, "cost": r.cost, "seconds": r.seconds,
                    "matrix_ras_reference_to_frame": np.asarray(r.matrix).tolist()}
                   for r in results],
        **(record or {}),
        "versions": _versions(),
    }
    with atomic_path(names["record"]) as tmp:
        tmp.write_text(json.dumps(body, indent=2))
    return names


def commit(staging: Path, output_dir: Path) -> Path:
    """Drop the work files and move the staged set into place with one rename."""
    shutil.rmtree(staging / "work", ignore_errors=True)
    for leftover in staging.iterdir():
        if leftover.name not in OUTPUT_NAMES.values():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    try:
        os.rename(staging, output_dir)  # onto an absent or empty folder: atomic on POSIX
    except OSError as exc:
        raise MotionError(f"cannot move the finished outputs from {staging} to {output_dir}: "
                          f"{exc.strerror or exc}; they are complete in {staging}") from exc
    return output_dir
