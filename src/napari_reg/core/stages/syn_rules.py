"""Rules of the SyN stage outside its iteration: the default schedule, the convergence
test, the choice of metric for a pair, and the end-of-run structure judge (do no harm).
Arrays are ``(d, *shape)`` vector fields or images on one level's voxel grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..engine.errors import RegistrationError
from ..image import Volume
from ..resample import resample
from ..structure_check import StructureCheck, check_structure
from ..transforms.field import _index_grid, _to_voxel_vectors
from .deformable_result import regrid
from .syn_ops import half_maps

__all__ = ["BORDER_MM", "JUDGE_BLOCK_MM", "MULTIMODAL_CORRELATION", "choose_metric", "converged",
           "default_iterations", "default_radius", "judged_on_fixed_grid", "per_level_float",
           "structure_check"]

# Block edge of the do-no-harm sign test: the B-spline's default control-point spacing,
# about the scale of the smallest deformation SyN's smoothing lets through.
JUDGE_BLOCK_MM = 10.0
# Below this correlation of the two images' intensities (after the linear map, inside the
# fixed foreground less its border) a pair counts as two contrasts: the atlas module's
# modality check uses the same bound. Measured (benchmarks/bench_real.py pairs): T1 vs T1
# of different subjects +0.59 to +0.79; Colin27 T1 vs a T2-like ICBM -0.74; the shipped
# T1 / T2-like sample pair -0.97.
MULTIMODAL_CORRELATION = 0.3
# How much of the foreground's border the correlation leaves out (see choose_metric).
BORDER_MM = 6.0


def choose_metric(metric: str, fixed: Volume, moving: Volume, matrix: np.ndarray,
                  mask: np.ndarray | None = None, moving_mask: Volume | None = None
                  ) -> tuple[str, float | None]:
    """The dense metric to use and the correlation it was chosen by (None if given).

    ``"auto"``: local NCC for one contrast, as ANTs' and greedy's SyN; mutual information
    when the intensities of ``fixed`` and ``moving`` under the linear fixed->moving
    ``matrix`` correlate below :data:`MULTIMODAL_CORRELATION` inside the fixed
    foreground (``mask``, else the voxels above 5 % of the fixed range) eroded by
    :data:`BORDER_MM`, on a grid of at most ~1 M voxels (every k-th fixed voxel).
    Why eroded: tissue against air correlates positively in any two modalities; with
    the head's border in, Colin27 T1 vs a T2-like ICBM correlated +0.58, without it
    -0.74 (T1 vs T1 of different subjects: +0.59 to +0.79). Why MI: local NCC fits a T1
    vs T2 difference instead of the anatomy (that pair: tissue Dice 0.583, the affine's;
    MI 0.69).
    """
    if metric.lower() != "auto":
        return metric, None
    d = fixed.ndim
    stride = max(1, int(np.ceil((fixed.data.size / 1e6) ** (1.0 / d))))
    step = (slice(None, None, stride),) * d
    affine = fixed.affine.copy()
    affine[:d, :d] = fixed.affine[:d, :d] * stride
    f = np.asarray(fixed.data, np.float64)[step]
    grid = Volume(f, affine)
    m = resample(moving, grid, matrix, "linear", fill=np.nan).data.astype(np.float64)
    if mask is None:
        lo, hi = np.percentile(f, [1, 99])
        keep = f > lo + 0.05 * (hi - lo)
    else:
        keep = np.asarray(mask, bool)[step]
    border = int(np.ceil(BORDER_MM / float(grid.spacing.min())))
    inner = ndimage.binary_erosion(keep, iterations=border) if border else keep
    if np.count_nonzero(inner) >= 20:
        keep = inner
    keep &= np.isfinite(m)
    if moving_mask is not None:
        keep &= resample(moving_mask, grid, matrix, "nearest").data != 0
    if np.count_nonzero(keep) < 20 or f[keep].std() == 0 or m[keep].std() == 0:
        return "lncc", None
    r = float(np.corrcoef(f[keep], m[keep])[0, 1])
    return ("mi" if r < MULTIMODAL_CORRELATION else "lncc"), r


def structure_check(v: np.ndarray, grid_affine: np.ndarray, spacing: np.ndarray,
                    fimg: np.ndarray, warped_lin: np.ndarray, mask: np.ndarray | None,
                    exp_shrink: int, check) -> StructureCheck | None:
    """Edges of the fixed image vs the moving one under the linear map and under the
    whole map ``exp(v)`` (on v's grid, the fixed image untouched): the sign test over
    all blocks (v is smooth everywhere) and the mirror test against ``-u`` where the map
    moves voxels; None if v is zero.
    ``exp(v) = exp(v/2) o exp(v/2)`` from the iterations' half map."""
    if not np.any(v):
        return None
    (half,) = half_maps(_to_voxel_vectors(v, grid_affine), exp_shrink, check, signs=(1.0,))
    at_half = _index_grid(fimg.shape) + half
    full = np.empty_like(half)  # built in place: on a 1 mm brain each field is 105 MB
    for c in range(len(half)):
        ndimage.map_coordinates(half[c], at_half, order=1, mode="nearest", prefilter=False,
                                output=full[c])
    full += half
    del at_half, half
    check()
    region = np.ones(fimg.shape, bool) if mask is None else mask
    return check_structure(fimg, warped_lin, None, spacing, region, block_mm=JUDGE_BLOCK_MM,
                           displacement_vox=full)


def judged_on_fixed_grid(v: np.ndarray, grid_affine: np.ndarray, fixed: Volume,
                         moving: Volume, matrix: np.ndarray, mask: np.ndarray | None,
                         moving_mask: np.ndarray | None, exp_shrink: int, check
                         ) -> StructureCheck | None:
    """:func:`structure_check` on the fixed grid for a velocity ``v`` left on a coarser
    one (the finest levels skipped): on a pyramid level's grid, smoothed and 2-4x
    coarser, a correction of a few mm is a fraction of a voxel and its edge gain cannot
    be told from its mirror's loss (3 mm smooth phantom field on 4 mm voxels: gain 0.08
    of the mirror's loss; on the fixed grid 0.62). ``mask``, ``moving_mask``: the fixed
    foreground and the moving mask (weights in [0, 1]) on the fixed grid, or None."""
    v_fine = regrid(v, grid_affine, fixed.shape, fixed.affine)
    warped_lin = resample(moving, fixed, matrix).data.astype(np.float32, copy=False)
    region = mask if moving_mask is None else (
        (moving_mask >= 0.5) if mask is None else mask & (moving_mask >= 0.5))
    return structure_check(v_fine, fixed.affine, fixed.spacing,
                           fixed.data.astype(np.float32, copy=False), warped_lin, region,
                           exp_shrink, check)


def default_radius(ndim: int) -> int:
    """The local NCC window's radius (voxels): greedy's recommended ``NCC 2x2x2`` in 3D
    (5 x 5 x 5 = 125 voxels), and in 2D the radius whose window holds about as many
    pixels (11 x 11 = 121), so the local correlation rests on as many samples. The
    3D radius in 2D (25 pixels) trailed greedy on real slices; measured on all six
    ordered pairs of the three 2D brain slices (benchmarks/real_pairs.py), mean tissue
    Dice 0.811 (radius 2) -> 0.822 (3), 0.825 (4), 0.826 (5), every pair better, no
    folds (min J >= 0.02); Colin27 -> ICBM 2 mm with radius 3: 0.774 -> 0.772."""
    reference = 2 * 2 + 1  # greedy's 3D window edge
    return max(1, int(round((reference ** 3) ** (1.0 / ndim) - 1) // 2))


def default_iterations(shrink: list[list[int]]) -> list[int]:
    """greedy's recommended 100x50x10 (coarse to full resolution), right-aligned: 100 on
    any extra coarse level, 10 at the finest. The few full-resolution iterations are
    where the fine anatomy aligns (2D slices of different subjects: mean tissue Dice
    0.760 -> 0.782 for 10 of them; with greedy's smoothing and step, 0.813; Colin27 ->
    ICBM at 1 mm 0.728 -> 0.769)."""
    n = len(shrink)
    return [100] if n == 1 else ([100] * n + [50, 10])[-n:]


def converged(costs: list[float], window: int, tolerance: float) -> bool:
    """ANTs-style: the cost's fitted slope over the last ``window`` iterations has flattened."""
    if window < 2 or len(costs) < window:
        return False
    y = np.asarray(costs[-window:], dtype=np.float64)
    scale = max(float(np.abs(y).mean()), 1e-12)
    slope = np.polyfit(np.arange(window, dtype=np.float64), y / scale, 1)[0]
    return bool(slope > -tolerance)


def per_level_float(value: float | Sequence[float], n_levels: int) -> list[float]:
    """One number per level, coarse to fine, by the engine's per-level rule
    (:func:`~napari_reg.core.engine.context.per_level`): a list is right-aligned to the
    finest level, its first value repeated on extra coarse levels."""
    values = [float(value)] if np.ndim(value) == 0 else [float(v) for v in value]  # type: ignore[union-attr]
    if not values:
        raise RegistrationError("update_sigma_voxels needs at least one value")
    if len(values) > n_levels:
        return values[-n_levels:]
    return [values[0]] * (n_levels - len(values)) + values
