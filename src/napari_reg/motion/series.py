"""A 4D series on disk -> checked data, grid and timing (nothing is written here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.motion import MotionError, check_mask, check_series, make_reference
from ..io.volumes import load_volume, load_volume_stack

__all__ = ["Series", "load_series", "load_mask", "timing_of"]


@dataclass
class Series:
    """``data`` (X, Y, Z, T) float32, ``affine`` voxel->world RAS mm, ``header`` the file's
    NIfTI header (its timing fields are written back unchanged), ``path`` the source."""

    data: np.ndarray
    affine: np.ndarray
    header: Any
    path: str

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3])

    def frame(self, index: int) -> Volume:
        return Volume(self.data[..., index], self.affine, name=f"frame_{index:04d}")

    def reference(self, spec: str | int) -> Volume:
        return make_reference(self.data, self.affine, spec)


def load_series(path: str | os.PathLike) -> Series:
    """Read and check a 4D series; :class:`MotionError` with a one-line reason otherwise."""
    try:
        data, affine, metadata = load_volume_stack(path)
    except ValueError as exc:  # VolumeReadError: the message names the file
        raise MotionError(str(exc)) from exc
    header = metadata.get("header")
    stored = tuple(header.get_data_shape()) if hasattr(header, "get_data_shape") else ()
    if data.ndim == 3 and len(stored) == 4 and stored[3] == 1:
        raise MotionError(f"{path}: the series has only one frame: there is no motion to "
                          "correct")
    try:
        check_series(data)
    except MotionError as exc:
        raise MotionError(f"{path}: {exc}") from exc
    return Series(np.asarray(data, dtype=np.float32), affine, header,
                  str(Path(path).resolve()))


def load_mask(path: str | os.PathLike, reference: Volume) -> np.ndarray:
    """A mask file on the series grid as a boolean array."""
    try:
        mask = load_volume(path)
    except ValueError as exc:
        raise MotionError(str(exc)) from exc
    try:
        return check_mask(mask, reference)
    except MotionError as exc:
        raise MotionError(f"{path}: {exc}") from exc


def timing_of(header: Any) -> dict[str, Any]:
    """The header's time step (``pixdim[4]``) and units, for the run record."""
    try:
        zooms = header.get_zooms()
        space, time = header.get_xyzt_units()
        step = float(zooms[3]) if len(zooms) > 3 else None
    except (AttributeError, TypeError, ValueError):
        return {}
    return {"pixdim4": step, "xyzt_units": [space, time],
            "tr_s": None if step is None else step * {"msec": 1e-3, "usec": 1e-6}.get(time, 1.0)}
