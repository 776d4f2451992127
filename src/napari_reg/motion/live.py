"""A series in memory corrected frame by frame: what the Motion panel drives.

No Qt and no threads here: :meth:`MotionCorrection.run` is a plain call taking
``callback`` and ``cancel`` (the shape :class:`napari_reg.runs.RunController` runs on a
background thread); it reports one :class:`FrameStep` per finished frame, with the
corrected frame and the frame's motion parameters, so a viewer can fill in the corrected
series and grow the traces as frames arrive. :meth:`export` writes the same output set as
``napari-reg motion``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.motion import (
    FrameResult,
    MotionSettings,
    check_mask,
    check_series,
    correct_frame,
    framewise_displacement,
    make_reference,
    motion_parameters,
    register_frame,
    smooth_along_time,
)
from ..core.optimize import CancelToken
from .outputs import plan_output_set, write_output_set

__all__ = ["FrameStep", "MotionCorrection"]


@dataclass(frozen=True)
class FrameStep:
    """One finished frame (``kind="frame"``), or a frame re-done after the smoothing
    along time (``kind="smoothed"``). ``corrected`` is the frame on the reference grid,
    ``parameters`` its rotations (degrees) and translations (mm)."""

    kind: str
    index: int
    n_frames: int
    corrected: np.ndarray
    parameters: np.ndarray
    seconds: float


class MotionCorrection:
    """Correct ``data`` (X, Y, Z, T) on ``affine`` (voxel -> world RAS mm).

    Checks happen here (a 3D array, one frame, NaN frames, a reference out of range, a
    mask on another grid raise :class:`~napari_reg.core.motion.MotionError`).
    ``corrected`` is filled in as frames finish; ``results`` holds each frame's map
    (reference world -> frame world).
    """

    def __init__(self, data: np.ndarray, affine: np.ndarray, settings: MotionSettings,
                 mask: Volume | None = None, header: Any = None, source: str = "") -> None:
        data = np.asarray(data)
        check_series(data)
        self.data = data
        self.affine = np.asarray(affine, dtype=np.float64)
        self.settings = settings
        self.reference = make_reference(data, self.affine, settings.reference)
        self.mask = None if mask is None else check_mask(mask, self.reference)
        self.header = header
        self.source = source
        self.n_frames = int(data.shape[3])
        self.results: dict[int, FrameResult] = {}
        self.corrected = np.zeros(data.shape, np.float32)
        self.center = self.reference.center_world()

    def frame(self, index: int) -> Volume:
        return Volume(np.asarray(self.data[..., index], dtype=np.float32), self.affine,
                      name=f"frame_{index:04d}")

    @property
    def complete(self) -> bool:
        return len(self.results) == self.n_frames

    def run(self, callback: Callable[[FrameStep], None] | None = None,
            cancel: CancelToken | None = None) -> MotionCorrection:
        """Register every frame not done yet, in time order; then smooth along time if
        the settings ask for it (every frame is resampled again and reported)."""
        cancel = cancel or CancelToken()
        for index in range(self.n_frames):
            if index in self.results:
                continue
            cancel.raise_if_cancelled()
            frame = self.frame(index)
            result = register_frame(self.reference, frame, self.settings, index, self.mask,
                                    cancel)
            self._store(result, frame, "frame", callback)
        if self.settings.smooth_sigma_frames > 0:
            smoothed = smooth_along_time(list(self.results.values()),
                                         self.settings.smooth_sigma_frames,
                                         rigid=self.settings.transform != "affine")
            for result in smoothed:
                cancel.raise_if_cancelled()
                self._store(result, self.frame(result.index), "smoothed", callback)
        return self

    def _store(self, result: FrameResult, frame: Volume, kind: str,
               callback: Callable[[FrameStep], None] | None) -> None:
        t0 = time.perf_counter()
        self.corrected[..., result.index] = correct_frame(frame, self.reference, result)
        self.results[result.index] = result
        if callback is not None:
            callback(FrameStep(kind, result.index, self.n_frames,
                               self.corrected[..., result.index],
                               motion_parameters(result.matrix, self.center),
                               result.seconds + time.perf_counter() - t0))

    def parameters(self) -> np.ndarray:
        """(T, 6) rotations (degrees) and translations (mm); NaN for frames not done."""
        table = np.full((self.n_frames, 6), np.nan)
        for index, result in self.results.items():
            table[index] = motion_parameters(result.matrix, self.center)
        return table

    def framewise_displacement(self) -> np.ndarray:
        """(T,) Power et al. (2012) FD in mm; NaN where a frame or its predecessor is
        not done yet (0 for the first frame)."""
        return framewise_displacement(self.parameters())

    def export(self, output_dir: str | os.PathLike, fd_threshold_mm: float = 0.5) -> Path:
        """Write the output set of ``napari-reg motion`` into ``output_dir`` (whole or not
        at all; never over an existing output or the source file)."""
        if not self.complete:
            raise ValueError(f"only {len(self.results)} of {self.n_frames} frames are "
                             "corrected: run the correction to the end before exporting")
        outputs = plan_output_set(output_dir, [self.source or None], self.n_frames,
                                  self.settings.deformable)
        results = [self.results[k] for k in range(self.n_frames)]
        with outputs:
            write_output_set(outputs, self.reference, self.corrected, results, self.settings,
                             self.header, fd_threshold_mm,
                             {"series": self.source or None, "runner": "napari panel"})
        return outputs.folder
