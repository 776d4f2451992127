"""One frame as a task that a worker process (or a Dask worker) runs on its own.

The work folder (inside the run's staging folder) holds what every task reads:
``series.npy`` (the frames, ``(T, X, Y, Z)`` float32 so that a frame is one contiguous
block a worker memory-maps), ``reference.npy``, ``mask.npy`` (optional) and ``grid.json``
(the voxel->world affine, RAS mm, and the settings). Each task writes its results there,
``frame_NNNN.json`` last, so a frame is **finished** exactly when its ``.json`` exists:
a resumed run skips those frames.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.motion import FrameResult, MotionSettings, correct_frame, register_frame
from ..core.transforms.field import DisplacementField
from ..io.atomic import atomic_path

__all__ = ["FrameTask", "FrameOutcome", "prepare_work", "run_frame_task", "finished_frames",
           "read_frame", "read_corrected"]


@dataclass
class FrameTask:
    """Register frame ``index`` of the series prepared in ``work_dir``; also resample it
    onto the reference grid when ``write_corrected`` (no smoothing along time to wait for)."""

    index: int
    work_dir: str
    write_corrected: bool = True


@dataclass
class FrameOutcome:
    """What happened to one frame: status ``done``, ``already done`` or ``failed``."""

    index: int
    status: str
    seconds: float = 0.0
    cost: float | None = None
    message: str = ""


def _name(index: int, what: str = "") -> str:
    return f"frame_{index:04d}{what}"


def prepare_work(work_dir: Path, data: np.ndarray, reference: Volume,
                 mask: np.ndarray | None, settings: MotionSettings) -> None:
    """Write what the tasks read; ``grid.json`` goes last (its presence = prepared)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(work_dir / "series.npy") as tmp:
        np.save(tmp, np.ascontiguousarray(np.moveaxis(data, 3, 0), dtype=np.float32))
    with atomic_path(work_dir / "reference.npy") as tmp:
        np.save(tmp, np.asarray(reference.data, dtype=np.float32))
    if mask is not None:
        with atomic_path(work_dir / "mask.npy") as tmp:
            np.save(tmp, mask.astype(bool))
    with atomic_path(work_dir / "grid.json") as tmp:
        tmp.write_text(json.dumps({"affine": np.asarray(reference.affine).tolist(),
                                   "settings": settings.to_dict()}))


def _load_work(work_dir: Path) -> tuple[np.ndarray, Volume, np.ndarray | None,
                                        MotionSettings]:
    grid = json.loads((work_dir / "grid.json").read_text())
    affine = np.asarray(grid["affine"], dtype=np.float64)
    series = np.load(work_dir / "series.npy", mmap_mode="r")
    reference = Volume(np.load(work_dir / "reference.npy"), affine, name="reference")
    mask_path = work_dir / "mask.npy"
    mask = np.load(mask_path) if mask_path.is_file() else None
    return series, reference, mask, MotionSettings(**grid["settings"])


def run_frame_task(task: FrameTask) -> FrameOutcome:
    """Register one frame and keep its results in the work folder (module-level, so that
    process pools and Dask can ship it). Errors become a ``failed`` outcome."""
    t0 = time.perf_counter()
    work = Path(task.work_dir)
    try:
        series, reference, mask, settings = _load_work(work)
        frame = Volume(np.asarray(series[task.index]), reference.affine,
                       name=_name(task.index))
        result = register_frame(reference, frame, settings, task.index, mask)
        if result.field is not None:
            with atomic_path(work / (_name(task.index, "_field") + ".npy")) as tmp:
                np.save(tmp, result.field.components)
        if task.write_corrected:
            with atomic_path(work / (_name(task.index, "_corrected") + ".npy")) as tmp:
                np.save(tmp, correct_frame(frame, reference, result))
        with atomic_path(work / (_name(task.index) + ".json")) as tmp:
            tmp.write_text(json.dumps({"index": task.index, "matrix": result.matrix.tolist(),
                                       "cost": result.cost, "seconds": result.seconds}))
        return FrameOutcome(task.index, "done", time.perf_counter() - t0, result.cost)
    except Exception as exc:  # noqa: BLE001 - one frame's failure is reported, not raised
        return FrameOutcome(task.index, "failed", time.perf_counter() - t0,
                            message=f"{type(exc).__name__}: {exc}")


def finished_frames(work_dir: Path, n_frames: int) -> dict[int, dict[str, Any]]:
    """Records of the frames an earlier (interrupted) run finished."""
    done = {}
    for index in range(n_frames):
        path = work_dir / (_name(index) + ".json")
        if path.is_file():
            try:
                done[index] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # unreadable: the frame is simply run again
    return done


def read_frame(work_dir: Path, record: dict[str, Any], affine: np.ndarray) -> FrameResult:
    """A finished frame's result (with its whole-map field for deformable runs)."""
    index = int(record["index"])
    field_path = work_dir / (_name(index, "_field") + ".npy")
    field = (DisplacementField.from_components(np.load(field_path), affine)
             if field_path.is_file() else None)
    return FrameResult(index, np.asarray(record["matrix"], dtype=np.float64),
                       float(record["cost"]), float(record["seconds"]), field)


def read_corrected(work_dir: Path, index: int) -> np.ndarray | None:
    path = work_dir / (_name(index, "_corrected") + ".npy")
    return np.load(path) if path.is_file() else None
