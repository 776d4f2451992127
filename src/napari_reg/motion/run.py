"""``run_motion``: a series file -> a motion-corrected output set (what the CLI calls).

Frames are registered in parallel (local processes by default, this process with
``workers=0``, or a Dask cluster), each one a :class:`~.frames.FrameTask`. Finished frames
stay in the sibling work folder ``.OUTDIR.napari-reg-work``: running the same command
again after a crash, a kill or Ctrl-C redoes only the missing frames (if the series, mask
and settings are unchanged; otherwise the stale work is discarded and the run starts
over). The work folder is removed once the output set is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.motion import MotionSettings, correct_frame, smooth_along_time
from ..io.atomic import atomic_path
from ..runners import as_completed, runner
from .frames import (
    FrameOutcome,
    FrameTask,
    finished_frames,
    prepare_work,
    read_corrected,
    read_frame,
    run_frame_task,
)
from .outputs import plan_output_set, work_dir, write_output_set
from .series import load_mask, load_series, timing_of

__all__ = ["run_motion", "MotionReport", "FrameOutcome", "SMALL_SERIES_VOXELS"]

# Below this many voxels (all frames) the default runs in this process: each spawned
# worker costs ~1-3 s to start (nibabel's functional.nii, 21k voxels: 8.1 s with two
# workers, 1.6 s in-process).
SMALL_SERIES_VOXELS = 3_000_000


@dataclass
class MotionReport:
    """Per-frame outcomes (frame order), where they ran, and the output folder when the
    whole set was written (None when frames failed or the run was interrupted)."""

    outcomes: list[FrameOutcome]
    runner: str
    seconds: float
    output_dir: Path | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.output_dir is not None

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def _plan(series_path: str, mask_path: str | None, settings: MotionSettings) -> dict[str, Any]:
    stat = os.stat(series_path)
    return {"series": series_path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "mask": str(Path(mask_path).resolve()) if mask_path else None,
            "settings": settings.to_dict()}


def _prepared(work: Path, plan: dict[str, Any]) -> bool:
    """True when the work folder holds the frames of an interrupted run of this plan."""
    try:
        return json.loads((work / "plan.json").read_text()) == plan
    except (OSError, ValueError):
        return False


def run_motion(series_path: str | os.PathLike, output_dir: str | os.PathLike,
               settings: MotionSettings | None = None, mask_path: str | None = None,
               workers: int | None = None, scheduler: Any = None,
               fd_threshold_mm: float = 0.5,
               callback: Callable[[FrameOutcome], None] | None = None) -> MotionReport:
    """Motion-correct ``series_path`` into the folder ``output_dir``.

    Bad input (not 4D, one frame, NaN frames, reference out of range, mask on another
    grid, an ``output_dir`` that already holds any of the outputs or would replace an
    input) raises :class:`MotionError` before anything is written. ``workers``: local
    processes (default: CPU count, or this process for a series under
    :data:`SMALL_SERIES_VOXELS`; 0 = this process); ``scheduler``: a Dask scheduler
    address or cluster. ``callback`` receives each frame's outcome as it arrives.
    """
    t0 = time.perf_counter()
    settings = settings or MotionSettings()
    series = load_series(series_path)
    reference = series.reference(settings.reference)
    mask = load_mask(mask_path, reference) if mask_path else None
    outputs = plan_output_set(output_dir, [series.path, mask_path], series.n_frames,
                              settings.deformable)
    work = work_dir(output_dir)
    plan = _plan(series.path, mask_path, settings)
    notes = []
    if not _prepared(work, plan):
        if work.exists():
            notes.append(f"discarded an interrupted run with other inputs or settings in "
                         f"{work}")
            shutil.rmtree(work)
        prepare_work(work, series.data, reference, mask, settings)
        with atomic_path(work / "plan.json") as tmp:
            tmp.write_text(json.dumps(plan))
    done = finished_frames(work, series.n_frames)
    outcomes: dict[int, FrameOutcome] = {}

    def record(outcome: FrameOutcome) -> None:
        outcomes[outcome.index] = outcome
        if callback is not None:
            callback(outcome)

    for index, rec in sorted(done.items()):
        record(FrameOutcome(index, "already done", 0.0, rec.get("cost")))
    write_corrected = settings.smooth_sigma_frames <= 0
    todo = [FrameTask(k, str(work), write_corrected) for k in range(series.n_frames)
            if k not in done]
    description, interrupted = "nothing to run", False
    if workers is None and scheduler is None and series.data.size < SMALL_SERIES_VOXELS:
        workers = 0  # starting worker processes would take longer than the whole series
    if todo:
        with runner(workers, scheduler) as (description, submit):
            futures = {}
            try:
                for task in todo:
                    futures[submit(run_frame_task, task)] = task.index
                for future in as_completed(futures):
                    record(_collect(future, futures[future]))
            except KeyboardInterrupt:
                interrupted = True
                for future in futures:
                    future.cancel()
            except BrokenProcessPool as exc:
                interrupted = True
                notes.append(f"a worker process died: {exc}")
    report = MotionReport([outcomes[k] for k in sorted(outcomes)], description, 0.0,
                          interrupted=interrupted, notes=notes)
    if not interrupted and all(o.status != "failed" for o in outcomes.values()) \
            and len(outcomes) == series.n_frames:
        with outputs:
            _assemble(series, reference, settings, work, outputs, fd_threshold_mm,
                      {"series": series.path, "mask": plan["mask"], "runner": description,
                       "timing": timing_of(series.header)})
        shutil.rmtree(work, ignore_errors=True)
        report.output_dir = outputs.folder
    report.seconds = time.perf_counter() - t0
    return report


def _collect(future: Any, index: int) -> FrameOutcome:
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as exc:  # noqa: BLE001 - a worker-side crash is this frame's failure
        return FrameOutcome(index, "failed", message=f"{type(exc).__name__}: {exc}")


def _assemble(series, reference, settings: MotionSettings, work: Path, outputs,
              fd_threshold_mm: float, record: dict[str, Any]) -> None:
    """All frames finished: (smooth along time,) gather the corrected frames, write."""
    records = finished_frames(work, series.n_frames)
    results = [read_frame(work, records[k], reference.affine) for k in range(series.n_frames)]
    smoothed = settings.smooth_sigma_frames > 0
    if smoothed:
        results = smooth_along_time(results, settings.smooth_sigma_frames,
                                    rigid=settings.transform != "affine")
    corrected = np.empty(series.data.shape, np.float32)
    for r in results:
        stored = None if smoothed else read_corrected(work, r.index)
        corrected[..., r.index] = (stored if stored is not None else
                                   correct_frame(series.frame(r.index), reference, r))
    write_output_set(outputs, reference, corrected, results, settings, series.header,
                     fd_threshold_mm, record)
