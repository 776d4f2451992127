"""Modality-independent structure: MIND descriptors and the structural gain of a map.

MIND (modality independent neighbourhood descriptor, Heinrich et al. 2012) describes each
voxel by how much its small patch resembles the patches one voxel away along each axis,
``MIND(x, r) = exp(-D(x, r) / V(x))`` with ``D`` the Gaussian-weighted squared patch
difference to the neighbour ``x + r`` and ``V`` its mean over the ``2d`` neighbours (the
local noise / contrast scale). The descriptor follows edges and their geometry, not
their intensities: a T1 and a T2 of the same anatomy have nearly the same MIND.

:func:`structural_gain` uses it to judge a deformable stage ("do no harm"): how much of
the structural mismatch left by the linear map the deformation removes. On real pairs of
different subjects the SyN deformation removed 40-61 % of it (2D slices, Colin27 ->
ICBM 2009a); on the shipped sample pair, whose truth is affine (T1 vs a T2-like
contrast), the deformation that fits the contrast made it 14 % worse while moving the
map by 1.4 mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mind_descriptor", "structural_mismatch", "structural_gain"]

# Voxels above which the judgement runs on every 2nd voxel per axis (a 1 mm brain has
# ~8.7 M; the descriptor of a 2 mm one takes ~0.3 s).
MAX_JUDGE_VOXELS = 2_000_000


def _shifted_difference(img: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``(img(x) - img(x + step e_axis))**2`` with the edge repeated (float32)."""
    n = img.shape[axis]
    idx = np.clip(np.arange(n) + step, 0, n - 1)
    return (img - np.take(img, idx, axis=axis)) ** 2


def mind_descriptor(data: np.ndarray, spacing: np.ndarray | None = None,
                    sigma_mm: float | None = None) -> np.ndarray:
    """MIND of an image: ``(2d, *shape)`` float32 in (0, 1], one channel per neighbour.

    ``sigma_mm`` is the patch weight's Gaussian (default: one voxel of the finest axis,
    isotropic in mm on anisotropic grids).
    """
    img = np.asarray(data, np.float32)
    spacing = (np.ones(img.ndim) if spacing is None
               else np.asarray(spacing, np.float64).reshape(img.ndim))
    sigma = (float(spacing.min()) if sigma_mm is None else float(sigma_mm)) / spacing
    dist = np.stack([ndimage.gaussian_filter(_shifted_difference(img, a, s), sigma,
                                             mode="nearest")
                     for a in range(img.ndim) for s in (-1, 1)])
    var = dist.mean(axis=0)
    positive = var[var > 0]
    scale = float(positive.mean()) if positive.size else 1.0
    # bounded so flat regions (air, var ~ 0) and single bright voxels do not dominate
    var = np.clip(var, 1e-3 * scale, 1e3 * scale)
    out = np.exp(-dist / var)
    out /= out.max(axis=0, keepdims=True)
    return out.astype(np.float32, copy=False)


def _subsampled(arrays: list[np.ndarray], spacing: np.ndarray
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Every 2nd voxel per axis when the grid is large (same field of view)."""
    if arrays[0].size <= MAX_JUDGE_VOXELS:
        return arrays, spacing
    step = (slice(None, None, 2),) * arrays[0].ndim
    return [np.ascontiguousarray(a[step]) for a in arrays], spacing * 2.0


def structural_mismatch(a: np.ndarray, b: np.ndarray, spacing: np.ndarray,
                        mask: np.ndarray | None = None) -> float:
    """Mean squared MIND difference of two images on one grid, over ``mask`` (boolean)
    or the whole grid."""
    arrays = [a, b] if mask is None else [a, b, mask]
    arrays, spacing = _subsampled(arrays, np.asarray(spacing, np.float64))
    sq = ((mind_descriptor(arrays[0], spacing) - mind_descriptor(arrays[1], spacing)) ** 2
          ).sum(axis=0)
    region = arrays[2] if mask is not None else None
    return float(sq[region].mean() if region is not None and region.any() else sq.mean())


def structural_gain(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray],
                    spacing: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of the structural (MIND) mismatch of the image pair ``before`` that the
    pair ``after`` (the same images, deformed) removes: ``1 - mismatch(after) /
    mismatch(before)``; negative when ``after`` is worse. All four on one grid."""
    m_before = structural_mismatch(*before, spacing, mask)
    m_after = structural_mismatch(*after, spacing, mask)
    return 1.0 - m_after / m_before if m_before > 0 else 0.0

