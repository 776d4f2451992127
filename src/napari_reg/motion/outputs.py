"""The output set of a motion correction, whole or not at all.

``OUTDIR/`` receives ``corrected.nii.gz`` (the series on the reference grid, the input's
header timing kept: ``pixdim[4]``, ``xyzt_units``), ``reference.nii.gz``,
``transforms/frame_NNNN.tfm`` (ITK, LPS: maps REFERENCE physical points to FRAME k
physical points, the linear part), ``motion.tsv`` and ``run.json`` (the marker: written
last). A deformable frame ``T_k(x) = A_k(W_k(x))`` is written in the ANTs layout of
``napari-reg register`` (:func:`napari_reg.io.result_layout.write_ants_layout`):
``frame_NNNN.tfm`` / ``.mat`` (``A_k``), ``frame_NNNN_warp.nii.gz`` (``W_k`` only, on the
reference grid: ``antsApplyTransforms -t frame_NNNN_warp.nii.gz -t frame_NNNN.tfm``),
``frame_NNNN_inverse_warp.nii.gz`` (``W_k^-1``) and ``frame_NNNN_whole_map_field.nii.gz``
(all of ``T_k`` as one field: use it alone, never followed by the ``.tfm``).

The set is written as one :class:`napari_reg.io.output_set.OutputSet` (staged beside
``OUTDIR`` and moved into place with one rename when ``OUTDIR`` is new; never replacing
an input or an existing file). The finished frames of an unfinished run are kept apart,
in the sibling work folder ``.OUTDIR.napari-reg-work`` (see :func:`work_dir`), so that a
run killed at any point resumes.
"""

from __future__ import annotations

import json
import os
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
from ..io.output_set import OutputSet, OutputSetError
from ..io.result_layout import ants_layout_names, split_whole_map, write_ants_layout
from ..io.transforms import write_itk_transform
from ..io.volumes import save_volume, save_volume_stack

__all__ = ["OUTPUT_NAMES", "RECORD_VERSION", "work_dir", "planned_names", "plan_output_set",
           "motion_table", "write_output_set", "DIRECTION"]

OUTPUT_NAMES = {"corrected": "corrected.nii.gz", "reference": "reference.nii.gz",
                "transforms": "transforms", "motion": "motion.tsv", "record": "run.json"}
RECORD_VERSION = 1
DIRECTION = ("frame k's transform maps REFERENCE world points (RAS mm; LPS in the ITK "
             "files) to FRAME k world points: corrected_k(x) = frame_k(T_k(x))")


def work_dir(output_dir: str | os.PathLike) -> Path:
    """The sibling folder where a run keeps its finished frames until the set is written."""
    out = Path(output_dir).absolute()
    return out.parent / f".{out.name}.napari-reg-work"


def planned_names(n_frames: int, deformable: bool) -> list[str]:
    """Every file of the set, relative to ``OUTDIR``, ``run.json`` last."""
    stems = [_frame_stem(k) for k in range(n_frames)]
    frames = [name for stem in stems for name in
              (ants_layout_names(stem).values() if deformable else [f"{stem}.tfm"])]
    return [OUTPUT_NAMES[k] for k in ("corrected", "reference")] + frames + \
        [OUTPUT_NAMES["motion"], OUTPUT_NAMES["record"]]


def _frame_stem(index: int) -> str:
    return f"{OUTPUT_NAMES['transforms']}/frame_{index:04d}"


def plan_output_set(output_dir: str | os.PathLike, inputs: Sequence[str | None],
                    n_frames: int, deformable: bool) -> OutputSet:
    """Check the output folder before any work: refused (:class:`MotionError`, nothing
    written) when it is a file or already holds any file of the set."""
    out = Path(output_dir).absolute()
    if out.exists() and not out.is_dir():
        raise MotionError(f"{out} is a file, not an output folder")
    names = planned_names(n_frames, deformable)
    existing = [n for n in names if (out / n).exists()]
    if existing or (out / OUTPUT_NAMES["transforms"]).is_file():
        raise MotionError(f"{out} already holds {', '.join(existing[:3]) or 'transforms'}; "
                          "choose a new output folder (nothing is ever overwritten)")
    try:
        return OutputSet(out, inputs=[p for p in inputs if p], marker=OUTPUT_NAMES["record"],
                         planned=names)
    except OutputSetError as exc:
        raise MotionError(str(exc)) from exc


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


def write_output_set(outputs: OutputSet, reference: Volume, corrected: np.ndarray,
                     results: Sequence[FrameResult], settings: MotionSettings, header: Any,
                     fd_threshold_mm: float = 0.5,
                     record: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every output through ``outputs`` (inside its ``with`` block), ``run.json`` last.

    ``corrected`` is ``(X, Y, Z, T)`` on the reference grid, ``results`` one per frame in
    frame order, ``header`` the series' NIfTI header (timing kept). ``record`` adds
    fields to ``run.json``. Returns the final paths (valid once the set is committed).
    """
    results = sorted(results, key=lambda r: r.index)
    if [r.index for r in results] != list(range(corrected.shape[3])):
        raise MotionError("internal: the frame results do not cover every frame")
    save_volume_stack(corrected, reference.affine, outputs.path(OUTPUT_NAMES["corrected"]),
                      dtype=np.float32, header=header)
    save_volume(reference, outputs.path(OUTPUT_NAMES["reference"]), dtype=np.float32)
    for r in results:
        # ITK's direction: fixed/output (the reference) points -> moving/input (the frame)
        stem = _frame_stem(r.index)
        if r.field is None:
            write_itk_transform(r.matrix, outputs.path(f"{stem}.tfm"))
        else:
            warp, inverse_warp = split_whole_map(r.field, r.matrix, reference)
            write_ants_layout(outputs.path, ants_layout_names(stem), r.matrix, warp,
                              inverse_warp, r.field)
    params, fd = motion_table(results, reference.center_world())
    with atomic_path(outputs.path(OUTPUT_NAMES["motion"])) as tmp:
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
    with atomic_path(outputs.path(OUTPUT_NAMES["record"])) as tmp:
        tmp.write_text(json.dumps(body, indent=2))
    return {k: outputs.final(v) for k, v in OUTPUT_NAMES.items()}
