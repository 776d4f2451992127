"""Misalignment maps that also read for two modalities (numpy/scipy only).

The plain difference of a T1 and a T2 shows their contrast, not their misalignment. A
windowed correlation does not care about contrast: where the same structures lie in the
same place, the two images are locally (anti-)correlated, ``|NCC| ~ 1``, even with
inverted contrasts; a shifted edge breaks that. Both images are on ONE grid (the
fixed image's, or the display grid), voxel->world ``affine`` in RAS mm; windows are
sized in world mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._qc_common import check_affine, normalize_intensity, same_shape, voxel_spacing

__all__ = ["local_ncc_map", "local_mismatch", "FLAT_STD"]

# A window whose intensities (each image scaled 0-1 by robust percentiles) vary less
# than this standard deviation holds no structure: background, or a flat tissue core.
FLAT_STD = 0.03


def _window(affine: np.ndarray, radius_mm: float) -> list[int]:
    return [2 * max(1, int(round(radius_mm / s))) + 1 for s in voxel_spacing(affine)]


def _local_moments(f: np.ndarray, w: np.ndarray, size: list[int]):
    def mean(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, size=size, mode="nearest")

    mf, mw = mean(f), mean(w)
    vf = np.maximum(mean(f * f) - mf * mf, 0.0)
    vw = np.maximum(mean(w * w) - mw * mw, 0.0)
    return vf, vw, mean(f * w) - mf * mw


def local_ncc_map(fixed_data: np.ndarray, warped_data: np.ndarray, affine: np.ndarray,
                  radius_mm: float = 4.0) -> np.ndarray:
    """Normalised cross-correlation in a box of half-width ``radius_mm`` (world mm) around
    every voxel (float32 in [-1, 1]).

    Aligned structures give |NCC| near 1 whatever the contrasts (a T1 against a T2 gives
    -1 where edges coincide); misalignment and noise give values near 0. Windows where
    either image is flat (variance < 1e-6 of the image's) are 0: no evidence either way.
    """
    same_shape(fixed_data, warped_data)
    affine = check_affine(np.shape(fixed_data), affine)
    f = np.asarray(fixed_data, np.float32)
    w = np.asarray(warped_data, np.float32)
    vf, vw, cov = _local_moments(f, w, _window(affine, radius_mm))
    ok = (vf > 1e-6 * (float(f.var()) or 1.0)) & (vw > 1e-6 * (float(w.var()) or 1.0))
    out = np.zeros(f.shape, np.float32)
    out[ok] = np.clip(cov[ok] / np.sqrt(vf[ok] * vw[ok]), -1.0, 1.0)
    return out


def local_mismatch(fixed_data: np.ndarray, warped_data: np.ndarray, affine: np.ndarray,
                   radius_mm: float = 4.0, flat_std: float = FLAT_STD) -> np.ndarray:
    """How badly structures disagree around each voxel, 0 (agree) .. 1, float32.

    Both images are first scaled to 0-1 (1st-99th percentile), then in a box of
    half-width ``radius_mm`` world mm: ``1 - |local NCC|`` where both hold structure
    (local standard deviation >= ``flat_std``), else 0: a flat window (background, the
    inside of a ventricle, a tissue one contrast does not show) is no evidence either
    way. Contrast differences between modalities do not count, misplaced edges do.
    """
    same_shape(fixed_data, warped_data)
    affine = check_affine(np.shape(fixed_data), affine)
    f = normalize_intensity(fixed_data)
    w = normalize_intensity(warped_data)
    vf, vw, cov = _local_moments(f, w, _window(affine, radius_mm))
    flat = float(flat_std) ** 2
    both = (vf >= flat) & (vw >= flat)
    out = np.zeros(f.shape, np.float32)
    out[both] = 1.0 - np.clip(np.abs(cov[both]) / np.sqrt(vf[both] * vw[both]), 0.0, 1.0)
    return out
