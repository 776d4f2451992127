"""A run record (input files + parameters) -> outputs on disk.

This is the one path the command line, batch runs and "replay" all take, so whatever
the GUI saves as ``run.json`` can be replayed headless::

    napari-reg register --replay out/run.json -o out2

Outputs are written as one :class:`napari_reg.io.output_set.OutputSet`: staged, then moved
into place whole (a new folder in one rename; into an existing folder under a journal,
``run.json`` last); a failed, cancelled or killed run leaves no partial outputs, and an
output path that is one of the inputs is refused before any work.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .core.engine.events import ProgressEvent
from .core.engine.presets import DEFORMABLE_MODELS
from .core.engine.register import register
from .core.engine.result import RegistrationResult
from .core.errors import NapariRegError
from .core.image import Volume
from .core.optimize import CancelToken
from .core.transforms.field import DisplacementField
from .core.warp_result import warp_result
from .io.flat import PlanarPair, plane_of
from .io.input_checks import check_landmarks, check_linear_transform, check_warped
from .io.landmarks import read_landmarks
from .io.output_set import OutputSet
from .io.result_layout import (
    AFFINE_MAT,
    FILE_DIRECTIONS,
    INVERSE_WARP,
    JACOBIAN,
    WARP,
    WHOLE_MAP,
    deformation_fields,
    write_ants_layout,
)
from .io.transform_files import read_transform, write_itk_transform
from .io.volumes import VolumeReadError, load_volume, save_volume

__all__ = ["Job", "JobError", "run_job", "OUTPUT_NAMES", "RUN_RECORD_VERSION"]

RUN_RECORD_VERSION = 1
OUTPUT_NAMES = {"transform": "transform.tfm", "warped": "warped.nii.gz", "record": "run.json"}
# Written in addition for deformable runs.
# the ANTs layout: affine (transform.tfm) + deformation-only warp and its inverse, and the
# whole map under a name that says so (io/result_layout.py says what each file maps)
DEFORMABLE_OUTPUT_NAMES = {"affine_mat": AFFINE_MAT, "warp": WARP,
                           "inverse_warp": INVERSE_WARP, "whole_map": WHOLE_MAP,
                           "jacobian": JACOBIAN}


class JobError(NapariRegError):
    """A job that cannot run as described (missing file, output over an input, ...)."""


@dataclass
class Job:
    """Everything needed to run (and re-run) one registration.

    Paths are stored as given; ``parameters`` are keyword arguments of
    :func:`napari_reg.register` (JSON-serialisable).
    """

    fixed: str
    moving: str
    parameters: dict[str, Any] = field(default_factory=dict)
    fixed_mask: str | None = None
    landmarks: tuple[str, str] | None = None
    initial: str | None = None
    # the format of ``initial`` when the file does not say it (plain 4x4: "fsl" or "ras")
    initial_format: str | None = None
    moving_mask: str | None = None

    def inputs(self) -> list[str]:
        paths = [self.fixed, self.moving, self.fixed_mask, self.moving_mask, self.initial]
        paths += list(self.landmarks or ())
        return [p for p in paths if p]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fixed": self.fixed,
            "moving": self.moving,
            "fixed_mask": self.fixed_mask,
            "moving_mask": self.moving_mask,
            "landmarks": list(self.landmarks) if self.landmarks else None,
            "initial": self.initial,
            "initial_format": self.initial_format,
            "parameters": self.parameters,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Rebuild a job from a ``run.json`` record (or a bare job dict)."""
        if not isinstance(record, dict) or not isinstance(record.get("job", record), dict):
            raise JobError("a run record must be a JSON object with the job's fields")
        data = record.get("job", record)
        if not isinstance(data.get("parameters") or {}, dict):
            raise JobError("the run record's 'parameters' must be a JSON object")
        try:
            landmarks = data.get("landmarks")
            return cls(
                fixed=data["fixed"],
                moving=data["moving"],
                parameters=dict(data.get("parameters") or {}),
                fixed_mask=data.get("fixed_mask"),
                moving_mask=data.get("moving_mask"),
                landmarks=tuple(landmarks) if landmarks else None,  # type: ignore[arg-type]
                initial=data.get("initial"),
                initial_format=data.get("initial_format"),
            )
        except (KeyError, TypeError) as exc:
            raise JobError(f"run record is missing the field {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike) -> Job:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise JobError(f"cannot read run record {path}: {exc}") from exc
        job = cls.from_record(record)
        # Relative input paths in a record are relative to the record's folder.
        base = Path(path).resolve().parent
        job.fixed, job.moving = (_rebase(p, base) for p in (job.fixed, job.moving))
        job.fixed_mask = _rebase(job.fixed_mask, base) if job.fixed_mask else None
        job.moving_mask = _rebase(job.moving_mask, base) if job.moving_mask else None
        job.initial = _rebase(job.initial, base) if job.initial else None
        if job.landmarks:
            job.landmarks = (_rebase(job.landmarks[0], base), _rebase(job.landmarks[1], base))
        return job


def _rebase(path: str, base: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() or p.exists() else base / p)


def run_job(
    job: Job,
    output_dir: str | os.PathLike,
    callback: Callable[[ProgressEvent], None] | None = None,
    cancel: CancelToken | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Run ``job`` and write its outputs into ``output_dir``; return their paths.

    Writes ``transform.tfm`` (ITK, maps fixed physical points to moving physical
    points; for deformable runs the linear stage), ``warped.nii.gz`` (moving resampled
    on the fixed grid) and ``run.json`` (the job, the parameters actually used, versions,
    cost history, timings). Deformable runs ``T(x) = A(W(x))`` add, in ANTs' layout:
    ``warp.nii.gz`` (the deformation ``W`` only, fixed grid; ``antsApplyTransforms -t
    warp.nii.gz -t transform.tfm`` reproduces ``warped.nii.gz``), ``inverse_warp.nii.gz``
    (``W^-1``, for ``-t [transform.tfm,1] -t inverse_warp.nii.gz``),
    ``whole_map_field.nii.gz`` (all of ``T`` as one field: use it alone) and
    ``jacobian.nii.gz`` (Jacobian determinant of ``T``; values <= 0 are folds).
    """
    output_dir = Path(output_dir)
    names = dict(OUTPUT_NAMES)
    if _is_deformable(job.parameters):
        names.update(DEFORMABLE_OUTPUT_NAMES)
    targets = {key: output_dir / name for key, name in names.items()}
    for path in job.inputs():
        if not Path(path).exists():
            broken = " (a broken or looping symbolic link)" if Path(path).is_symlink() else ""
            raise JobError(f"input file not found: {path}{broken}")
    # Checked now, before any work: no output over an input, no existing output replaced.
    outputs = OutputSet(output_dir, inputs=job.inputs(), overwrite=overwrite,
                        marker=OUTPUT_NAMES["record"], planned=names.values())
    # 2D files and one-slice volumes register as 2D images (written back as they came).
    pair = PlanarPair(load_role(job.fixed, "fixed image"), load_role(job.moving, "moving image"))
    fixed, moving = pair.fixed, pair.moving
    kwargs, notes = _register_kwargs(job, pair)
    _check_parameter_names(kwargs)
    try:
        result = register(fixed, moving, callback=callback, cancel=cancel, **kwargs)
    except TypeError as exc:  # a value of the wrong type (a hand-edited run.json, say)
        raise JobError(f"the registration parameters are not usable: {exc}") from None
    warped, field = warp_result(moving, fixed, result, cancel=cancel)
    suspects = [f"the initial transform {job.initial}"] if job.initial else []
    suspects += [f"the landmarks {' and '.join(job.landmarks)}"] if job.landmarks else []
    check_warped(warped, moving, job.moving, job.fixed, suspects)
    record = run_record(job, result)
    record["notes"] = notes
    record["files"] = {name: FILE_DIRECTIONS[name] for name in names.values()
                       if name in FILE_DIRECTIONS}
    if pair.active:
        record["result"]["dimension"] = 2
        record["result"]["matrix_ras_fixed_to_moving"] = \
            pair.matrix_for_file(result.matrix).tolist()
    if field is not None:
        jacobian = field.jacobian_determinant()
        record["result"]["jacobian"] = {
            "min": float(jacobian.min()), "max": float(jacobian.max()),
            "folded_fraction": float(np.mean(jacobian <= 0))}
    # Staged, then moved into place as one set; run.json last (it marks a complete set).
    with outputs:
        if field is None:  # a deformable result's affine is written with its warps below
            write_itk_transform(pair.matrix_for_file(result.matrix),
                                outputs.path(names["transform"]))
        save_volume(pair.volume_for_file(warped), outputs.path(names["warped"]))
        if field is not None:
            warp, inverse_warp = deformation_fields(result.deformable, fixed)
            write_ants_layout(outputs.path, {**names, "affine": names["transform"]},
                              pair.matrix_for_file(result.matrix), _warp_for_file(pair, warp),
                              _warp_for_file(pair, inverse_warp), pair.field_for_file(field))
            save_volume(pair.volume_for_file(
                fixed.with_data(jacobian.astype(np.float32), name="jacobian")),
                outputs.path(names["jacobian"]))
        outputs.path(names["record"]).write_text(json.dumps(record, indent=2))
    return targets


def load_role(path: str | os.PathLike, role: str) -> Volume:
    """:func:`load_volume` whose errors also say which input the file was (its role)."""
    try:
        return load_volume(path)
    except VolumeReadError as exc:
        raise VolumeReadError(f"{role}: {exc}") from None


def _warp_for_file(pair: PlanarPair, warp: DisplacementField) -> DisplacementField:
    """A deformation-only warp as written: like the whole map, but for one-slice 3D files
    without the slice-to-slice offset along the normal, which transform.tfm carries."""
    out = pair.field_for_file(warp)
    if out.ndim == warp.ndim:
        return out
    comps = np.array(out.components)
    comps[plane_of(pair.fixed3)[2]] = 0.0
    return DisplacementField.from_components(comps, out.affine)


def _check_parameter_names(kwargs: dict[str, Any]) -> None:
    import inspect

    known = set(inspect.signature(register).parameters)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise JobError(f"unknown registration parameter(s) {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(known - {'fixed', 'moving', 'callback', 'cancel'}))}")


def _is_deformable(parameters: dict[str, Any]) -> bool:
    stages = parameters.get("stages") or [parameters.get("transform", "affine")]
    return stages[-1] in DEFORMABLE_MODELS


def _register_kwargs(job: Job, pair: PlanarPair) -> tuple[dict[str, Any], list[str]]:
    """register() keyword arguments from the job, and notes for the user."""
    kwargs = dict(job.parameters)
    notes: list[str] = []
    fixed, moving = pair.fixed3, pair.moving3
    if job.fixed_mask:
        kwargs["fixed_mask"] = pair.mask(load_role(job.fixed_mask, "fixed mask"))
    if job.moving_mask:
        kwargs["moving_mask"] = pair.mask(load_role(job.moving_mask, "moving mask"),
                                          "moving mask")
    if job.landmarks:
        fixed_lm, moving_lm = (read_landmarks(p) for p in job.landmarks)
        for lm, path, role in ((fixed_lm, job.landmarks[0], "fixed landmarks"),
                               (moving_lm, job.landmarks[1], "moving landmarks")):
            check_landmarks(lm.points, [fixed, moving], path, role)
        pairs = fixed_lm.pair_with(moving_lm)
        if pairs.unpaired:
            notes.append(f"landmarks without a partner were ignored: {', '.join(pairs.unpaired)}")
        kwargs["landmarks"] = (pair.points(pairs.fixed), pair.points(pairs.moving))
        kwargs.setdefault("init", "landmarks")
    if job.initial:
        kwargs["initial"] = pair.initial(check_linear_transform(
            read_transform(job.initial, fixed=fixed, moving=moving,
                           format=job.initial_format or "auto"), job.initial,
            "initial transform"), job.initial)
    elif kwargs.get("initial") is not None:
        kwargs["initial"] = np.asarray(kwargs["initial"], dtype=np.float64)
    return kwargs, notes


def run_record(job: Job, result: RegistrationResult) -> dict[str, Any]:
    """The JSON-serialisable record of a finished run (replayable with ``--replay``)."""
    job_dict = job.to_dict()
    # Replay the parameters that were actually used, but an initial matrix that came
    # from a file is read from that file again rather than stored twice.
    used = dict(result.parameters)
    if job.initial:
        used["initial"] = None
        used.pop("init", None)
    job_dict["parameters"] = {k: v for k, v in used.items() if v is not None}
    return {
        "napari_reg_run_record": RUN_RECORD_VERSION,
        "direction": "transform maps fixed world (RAS mm) points to moving world points",
        "job": job_dict,
        "result": {
            "matrix_ras_fixed_to_moving": np.asarray(result.matrix).tolist(),
            **result.to_dict(),
        },
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import nibabel
    import scipy

    return {
        "napari_reg": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nibabel": nibabel.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
