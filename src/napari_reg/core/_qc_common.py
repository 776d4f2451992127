"""Checks and grid helpers shared by the QC modules (numpy only)."""

from __future__ import annotations

import numpy as np

from .errors import NapariRegError

__all__ = ["QCError", "check_affine", "normalize_intensity", "same_shape", "voxel_spacing"]


class QCError(NapariRegError):
    """Inputs a QC view cannot be built from (the message says which and why)."""


def same_shape(a: np.ndarray, b: np.ndarray, what: str = "fixed and warped images") -> None:
    if np.shape(a) != np.shape(b):
        raise QCError(f"{what} must be on the same grid: shapes {np.shape(a)} and "
                      f"{np.shape(b)} differ (resample the moving image onto the fixed grid)")


def check_affine(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    d = len(shape)
    affine = np.asarray(affine, dtype=np.float64)
    if d not in (2, 3) or affine.shape != (d + 1, d + 1):
        raise QCError(f"expected a 2D or 3D image with a {(d + 1, d + 1)} voxel->world affine, "
                      f"got shape {shape} and affine {affine.shape}")
    return affine


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    d = affine.shape[0] - 1
    return np.linalg.norm(affine[:d, :d], axis=0)


def normalize_intensity(data: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0),
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Map robust ``percentiles`` of ``data`` (inside ``mask``) to 0 and 1 (float32, clipped).

    Two modalities (T1 vs T2) then share one display scale; a constant image maps to 0.
    """
    values = np.asarray(data, dtype=np.float32)
    sample = values[mask.astype(bool)] if mask is not None else values
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(values.shape, np.float32)
    lo, hi = np.percentile(sample, percentiles)
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
