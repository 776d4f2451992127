"""A run record (input files + parameters) -> outputs on disk.

This is the one path the command line, batch runs and "replay" all take, so whatever
the GUI saves as ``run.json`` can be replayed headless::

    napari-reg register --replay out/run.json -o out2

Outputs go to a hidden temporary folder inside the output directory and are moved into
place only when everything succeeded: a failed or cancelled run leaves no partial
outputs, and an output path that is one of the inputs is refused.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .core.events import ProgressEvent, RegistrationResult
from .core.image import Volume
from .core.optimize import CancelToken
from .core.register import DEFORMABLE_MODELS, register
from .core.resample import resample
from .io.atomic import atomic_path
from .io.displacement_fields import save_displacement_field
from .io.landmarks import read_landmarks
from .io.transform_files import read_transform, write_itk_transform
from .io.volumes import load_volume, save_volume

__all__ = ["Job", "JobError", "run_job", "OUTPUT_NAMES", "RUN_RECORD_VERSION"]

RUN_RECORD_VERSION = 1
OUTPUT_NAMES = {"transform": "transform.tfm", "warped": "warped.nii.gz", "record": "run.json"}
# Written in addition for deformable runs.
DEFORMABLE_OUTPUT_NAMES = {"field": "field.nii.gz", "jacobian": "jacobian.nii.gz"}


class JobError(ValueError):
    """A job that cannot run as described (missing file, output over an input, ...)."""


@dataclass
class Job:
    """Everything needed to run (and re-run) one registration.

    Paths are stored as given; ``parameters`` are keyword arguments of
    :func:`napari_reg.core.register.register` (JSON-serialisable).
    """

    fixed: str
    moving: str
    parameters: dict[str, Any] = field(default_factory=dict)
    fixed_mask: str | None = None
    landmarks: tuple[str, str] | None = None
    initial: str | None = None
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
            "parameters": self.parameters,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Rebuild a job from a ``run.json`` record (or a bare job dict)."""
        data = record.get("job", record)
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
    cost history, timings). Deformable runs add ``field.nii.gz`` (the whole fixed->moving
    map as an ITK/ANTs displacement field on the fixed grid) and ``jacobian.nii.gz`` (its
    Jacobian determinant; values <= 0 are folds).
    """
    output_dir = Path(output_dir)
    names = dict(OUTPUT_NAMES)
    if _is_deformable(job.parameters):
        names.update(DEFORMABLE_OUTPUT_NAMES)
    targets = {key: output_dir / name for key, name in names.items()}
    _check_outputs(job, targets, overwrite)
    fixed, moving = load_volume(job.fixed), load_volume(job.moving)
    kwargs, notes = _register_kwargs(job, fixed, moving)
    result = register(fixed, moving, callback=callback, cancel=cancel, **kwargs)
    field = result.deformable.displacement_field(fixed) if result.deformable else None
    warped = resample(moving, fixed, field or result.transform, interpolation="linear")
    warped = warped.with_data(warped.data.astype(np.float32), name="warped")
    record = run_record(job, result)
    record["notes"] = notes
    if field is not None:
        jacobian = field.jacobian_determinant()
        record["result"]["jacobian"] = {
            "min": float(jacobian.min()), "max": float(jacobian.max()),
            "folded_fraction": float(np.mean(jacobian <= 0))}
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".napari-reg-", dir=output_dir))
    try:
        write_itk_transform(result.matrix, staging / OUTPUT_NAMES["transform"],
                            comment="napari-reg: maps fixed physical points to moving points")
        save_volume(warped, staging / OUTPUT_NAMES["warped"])
        if field is not None:
            save_displacement_field(staging / names["field"], field)
            save_volume(fixed.with_data(jacobian.astype(np.float32), name="jacobian"),
                        staging / names["jacobian"])
        with atomic_path(staging / OUTPUT_NAMES["record"]) as tmp:
            tmp.write_text(json.dumps(record, indent=2))
        # run.json goes last: its presence means every other output is complete.
        for key in sorted(targets, key=lambda k: k == "record"):
            os.replace(staging / targets[key].name, targets[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets


def _is_deformable(parameters: dict[str, Any]) -> bool:
    stages = parameters.get("stages") or [parameters.get("transform", "affine")]
    return stages[-1] in DEFORMABLE_MODELS


def _check_outputs(job: Job, targets: dict[str, Path], overwrite: bool) -> None:
    for path in job.inputs():
        if not Path(path).exists():
            raise JobError(f"input file not found: {path}")
    inputs = {Path(p).resolve() for p in job.inputs()}
    for target in targets.values():
        if target.resolve() in inputs:
            raise JobError(f"refusing to overwrite the input file {target}")
        if target.exists() and not overwrite:
            raise JobError(f"{target} exists; choose another output folder or pass --overwrite")


def _register_kwargs(job: Job, fixed: Volume,
                     moving: Volume) -> tuple[dict[str, Any], list[str]]:
    """register() keyword arguments from the job, and notes for the user."""
    kwargs = dict(job.parameters)
    notes: list[str] = []
    if job.fixed_mask:
        kwargs["fixed_mask"] = load_volume(job.fixed_mask)
    if job.moving_mask:
        kwargs["moving_mask"] = load_volume(job.moving_mask)
    if job.landmarks:
        fixed_lm, moving_lm = (read_landmarks(p) for p in job.landmarks)
        pairs = fixed_lm.pair_with(moving_lm)
        if pairs.unpaired:
            notes.append(f"landmarks without a partner were ignored: {', '.join(pairs.unpaired)}")
        kwargs["landmarks"] = (pairs.fixed, pairs.moving)
        kwargs.setdefault("init", "landmarks")
    if job.initial:
        kwargs["initial"] = read_transform(job.initial, fixed=fixed, moving=moving)
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
