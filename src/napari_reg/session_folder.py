"""A registration session as a folder: inputs, alignment, landmarks, settings, result.

The folder is both a session (``session.json``: what the GUI shows, restored by the
Export panel's "Open session") and a run record (``run.json``: the job with its inputs
as relative paths, replayed by ``napari-reg register --replay FOLDER``)::

    session.json                  roles, Register panel settings, alignment, result info
    run.json                      the job: inputs/..., parameters, landmarks, initial
    inputs/fixed.nii.gz           the images as registered (file affines), so the folder
    inputs/moving.nii.gz          stands alone; inputs/fixed_mask.nii.gz and
                                  inputs/moving_mask.nii.gz if there are masks
    landmarks/fixed.csv, moving.csv   paired landmarks, id,x,y,z world RAS mm
    initial.tfm                   the manual / landmark alignment (ITK, fixed -> moving)
    result/transform.tfm          the kept result: its linear part (ITK),
    result/field.nii.gz           the whole map of a deformable result (ITK/ANTs field),
    result/warped.nii.gz          moving(T(x)) on the fixed grid, result/result.json

Every transform maps FIXED world points to MOVING world points (RAS mm in memory; ITK
files hold LPS). The folder is written whole or not at all (:class:`OutputSet`); no Qt.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .core.engine.result import LevelRecord, RegistrationResult
from .core.errors import NapariRegError
from .core.image import Volume
from .core.transforms.base import MatrixTransform
from .io.displacement_fields import load_displacement_field, save_displacement_field
from .io.landmarks import Landmarks, read_landmarks, write_landmarks
from .io.output_set import OutputSet
from .io.transforms import read_transform, write_itk_transform
from .io.volumes import load_volume, save_volume
from .job import RUN_RECORD_VERSION, Job

__all__ = ["SessionState", "save_session", "load_session", "SESSION_FILE", "SessionError"]

SESSION_FILE = "session.json"
SESSION_VERSION = 1


class SessionError(NapariRegError):
    """A folder that is not a readable session."""


@dataclass
class SessionState:
    """Everything a session restores. Volumes carry their *file* affines (voxel -> world
    RAS mm); ``alignment`` and the result's transform map fixed -> moving world."""

    fixed: Volume
    moving: Volume
    fixed_mask: Volume | None = None
    moving_mask: Volume | None = None  # on its own grid (non-zero = moving voxels to use)
    names: dict[str, str] = field(default_factory=dict)  # role -> layer name
    register_settings: dict[str, Any] = field(default_factory=dict)  # the panel's fields
    parameters: dict[str, Any] = field(default_factory=dict)  # register() keywords
    alignment: np.ndarray | None = None
    landmarks: tuple[Landmarks, Landmarks] | None = None
    result: RegistrationResult | None = None
    warped: Volume | None = None


def _is_identity(matrix: np.ndarray | None) -> bool:
    return matrix is None or bool(np.allclose(matrix, np.eye(len(matrix)), atol=1e-12))


def _planned(state: SessionState) -> list[str]:
    names = [SESSION_FILE, "run.json", "inputs/fixed.nii.gz", "inputs/moving.nii.gz"]
    if state.fixed_mask is not None:
        names.append("inputs/fixed_mask.nii.gz")
    if state.moving_mask is not None:
        names.append("inputs/moving_mask.nii.gz")
    if state.landmarks is not None:
        names += ["landmarks/fixed.csv", "landmarks/moving.csv"]
    if not _is_identity(state.alignment):
        names.append("initial.tfm")
    if state.result is not None:
        names += ["result/transform.tfm", "result/warped.nii.gz", "result/result.json"]
        if not state.result.transform.is_linear:
            names.append("result/field.nii.gz")
    return names


def save_session(folder: str | os.PathLike, state: SessionState, overwrite: bool = False,
                 inputs: list[str] | None = None) -> Path:
    """Write ``state`` as a session folder (whole or not at all); returns the folder.

    ``inputs``: files that must never be replaced (the layers' source files)."""
    folder = Path(folder)
    plan = OutputSet(folder, inputs=inputs or [], overwrite=overwrite, marker=SESSION_FILE,
                     planned=_planned(state))
    job = Job(fixed="inputs/fixed.nii.gz", moving="inputs/moving.nii.gz",
              parameters={k: v for k, v in state.parameters.items()
                          if k not in ("landmarks", "initial", "fixed_mask", "moving_mask")})
    with plan as out:
        save_volume(state.fixed, out.path("inputs/fixed.nii.gz"))
        save_volume(state.moving, out.path("inputs/moving.nii.gz"))
        if state.fixed_mask is not None:
            save_volume(state.fixed_mask, out.path("inputs/fixed_mask.nii.gz"))
            job.fixed_mask = "inputs/fixed_mask.nii.gz"
        if state.moving_mask is not None:  # replayed as register(..., moving_mask=...)
            save_volume(state.moving_mask, out.path("inputs/moving_mask.nii.gz"))
            job.moving_mask = "inputs/moving_mask.nii.gz"
        if state.landmarks is not None:
            for side, lm in zip(("fixed", "moving"), state.landmarks, strict=True):
                write_landmarks(lm, out.path(f"landmarks/{side}.csv"))
            job.landmarks = ("landmarks/fixed.csv", "landmarks/moving.csv")
        if not _is_identity(state.alignment):
            write_itk_transform(np.asarray(state.alignment), out.path("initial.tfm"))
            if job.parameters.get("init") == "manual":
                job.initial = "initial.tfm"
                job.parameters["init"] = "none"
        if job.parameters.get("init") == "manual":  # identity alignment: start from it
            job.parameters["init"] = "none"
        result_info = None
        if state.result is not None:
            result_info = _save_result(out, state.result, state.warped, state.fixed)
        record = {"napari_reg_run_record": RUN_RECORD_VERSION,
                  "direction": "transform maps fixed world (RAS mm) points to moving world "
                               "points", "job": job.to_dict(),
                  "versions": {"napari_reg": __version__}}
        out.path("run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        session = {"napari_reg_session": SESSION_VERSION, "names": state.names,
                   "register_settings": state.register_settings,
                   "parameters": state.parameters,
                   "alignment_fixed_to_moving": None if state.alignment is None
                   else np.asarray(state.alignment).tolist(),
                   "result": result_info}
        out.path(SESSION_FILE).write_text(json.dumps(session, indent=2, default=_jsonable),
                                          encoding="utf-8")
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _save_result(out: OutputSet, result: RegistrationResult, warped: Volume | None,
                 fixed: Volume) -> dict[str, Any]:
    write_itk_transform(np.asarray(result.matrix), out.path("result/transform.tfm"))
    deformable = not result.transform.is_linear
    if deformable:
        save_displacement_field(out.path("result/field.nii.gz"), result.transform,
                                reference=fixed)
    if warped is not None:
        save_volume(warped, out.path("result/warped.nii.gz"))
    info = {"matrix_ras_fixed_to_moving": np.asarray(result.matrix).tolist(),
            "deformable": deformable, **result.to_dict()}
    out.path("result/result.json").write_text(json.dumps(info, indent=2, default=_jsonable),
                                              encoding="utf-8")
    return {"deformable": deformable, "final_cost": result.final_cost}


def load_session(folder: str | os.PathLike) -> SessionState:
    """Read a session folder written by :func:`save_session`."""
    folder = Path(folder)
    try:
        session = json.loads((folder / SESSION_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SessionError(f"{folder} is not a napari-reg session folder ({exc})") from exc
    if session.get("napari_reg_session") != SESSION_VERSION:
        raise SessionError(f"{folder / SESSION_FILE}: unknown session version "
                           f"{session.get('napari_reg_session')!r}")
    fixed = load_volume(folder / "inputs/fixed.nii.gz")
    moving = load_volume(folder / "inputs/moving.nii.gz")
    mask_path = folder / "inputs/fixed_mask.nii.gz"
    moving_mask_path = folder / "inputs/moving_mask.nii.gz"
    state = SessionState(fixed=fixed, moving=moving,
                         fixed_mask=load_volume(mask_path) if mask_path.exists() else None,
                         moving_mask=(load_volume(moving_mask_path)
                                      if moving_mask_path.exists() else None),
                         names=dict(session.get("names") or {}),
                         register_settings=dict(session.get("register_settings") or {}),
                         parameters=dict(session.get("parameters") or {}))
    matrix = session.get("alignment_fixed_to_moving")
    state.alignment = None if matrix is None else np.asarray(matrix, dtype=np.float64)
    if (folder / "initial.tfm").exists():  # the file is the exact alignment (LPS inside)
        state.alignment = read_transform(folder / "initial.tfm", fixed=fixed, moving=moving)
    if (folder / "landmarks/fixed.csv").exists():
        state.landmarks = (read_landmarks(folder / "landmarks/fixed.csv"),
                           read_landmarks(folder / "landmarks/moving.csv"))
    if session.get("result"):
        state.result, state.warped = _load_result(folder / "result", fixed)
    return state


def _load_result(folder: Path, fixed: Volume) -> tuple[RegistrationResult, Volume | None]:
    info = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    matrix = np.asarray(info["matrix_ras_fixed_to_moving"], dtype=np.float64)
    transform = (load_displacement_field(folder / "field.nii.gz", reference=fixed)
                 if info.get("deformable") else MatrixTransform(matrix))
    levels = [LevelRecord(**lv) for lv in info.get("levels", [])]
    d = matrix.shape[0]
    result = RegistrationResult(transform=transform,
                                initial_transform=MatrixTransform(np.eye(d)), levels=levels,
                                parameters=dict(info.get("parameters") or {}),
                                timings=dict(info.get("timings") or {}),
                                linear_matrix=matrix,
                                final_cost=float(info.get("final_cost", float("nan"))),
                                diagnostics=dict(info.get("diagnostics") or {}))
    warped_path = folder / "warped.nii.gz"
    warped = load_volume(warped_path) if warped_path.exists() else None
    if warped is not None:
        warped = warped.with_data(np.asarray(warped.data, dtype=np.float32))
    return result, warped
