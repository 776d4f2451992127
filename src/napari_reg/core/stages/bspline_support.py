"""The B-spline stage's helpers: the metric's curvature, a scaled metric, the structure check.

* :func:`metric_curvature`: how fast the similarity rises when the sample points move,
  ``kappa = d^2 C / dh^2`` per mm^2 of RMS displacement, by central differences along
  random control-point directions at the FFD's start. ``C / kappa`` is then in mm^2 for
  every metric (SSD's intensity^2, NCC's and MI's pure numbers alike), so one bending
  weight means the same smoothness under each (a Gauss-Newton view: the misfit's
  Hessian is ``kappa`` times the same geometric matrix whatever the metric).
* :class:`ScaledMetric`: a metric multiplied by a constant.
* :func:`structure_verdict`: the do-no-harm check of a finished deformation on the fixed
  grid (:mod:`napari_reg.core.structure_check`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..engine.sampling import foreground_mask
from ..image import Volume
from ..metrics import Metric
from ..resample import resample
from ..structure_check import StructureCheck, check_structure
from ..transforms.base import MatrixTransform
from ..transforms.bspline_chain import BSplineChain
from .deformable_result import compose_linear

__all__ = ["ScaledMetric", "metric_curvature", "noise_displacement_mm2",
           "structure_verdict"]

# Random directions averaged for the curvature (each costs two metric evaluations).
CURVATURE_DIRECTIONS = 2
# The noise estimate needs this many background voxels (else: no estimate, 0).
MIN_BACKGROUND_VOXELS = 1000
# Above this many voxels the noise estimate reads every other voxel.
NOISE_FULL_GRID_VOXELS = 1 << 22
# Above this many fixed voxels the structure check runs on every other voxel.
CHECK_FULL_GRID_VOXELS = 1 << 22


class ScaledMetric:
    """``scale * metric``: value and derivative (same interface as a metric)."""

    def __init__(self, metric: Metric, scale: float):
        self.metric, self.scale = metric, float(scale)

    def setup(self, fixed_values: np.ndarray, moving_values: np.ndarray) -> None:
        self.metric.setup(fixed_values, moving_values)

    def value(self, fixed_samples: np.ndarray, moving_samples: np.ndarray) -> float:
        return self.scale * self.metric.value(fixed_samples, moving_samples)

    def value_and_derivative(self, fixed_samples: np.ndarray, moving_samples: np.ndarray
                             ) -> tuple[float, np.ndarray]:
        value, derivative = self.metric.value_and_derivative(fixed_samples, moving_samples)
        return self.scale * value, self.scale * derivative


def metric_curvature(similarity: Callable[[np.ndarray], float], n_parameters: int, ndim: int,
                     rng: np.random.Generator, step_mm: float) -> float:
    """``kappa``: the similarity's second derivative per mm^2 of RMS sample displacement.

    ``similarity(p)`` is the metric at control-point displacements ``p`` (mm). Central
    differences ``(C(+h v) + C(-h v) - 2 C(0)) / h^2`` along ``CURVATURE_DIRECTIONS``
    random directions ``v`` whose displacement of the samples has RMS ``h = step_mm``:
    i.i.d. coefficients of standard deviation ``s`` move a point by RMS
    ``s sqrt(d (151/315)^d)`` (the mean over a cell of the summed squared cubic basis
    values is 151/315 per axis).
    """
    zero = np.zeros(n_parameters)
    c0 = similarity(zero)
    per_unit = np.sqrt(ndim * (151.0 / 315.0) ** ndim)
    estimates = []
    for _ in range(CURVATURE_DIRECTIONS):
        v = rng.standard_normal(n_parameters) * (step_mm / per_unit)
        estimates.append((similarity(v) + similarity(-v) - 2.0 * c0) / step_mm**2)
    similarity(zero)
    kappa = float(np.mean(estimates))
    if not np.isfinite(kappa) or kappa <= 0:
        # a similarity that is not convex where the FFD starts (rare): its size only
        kappa = float(np.mean(np.abs(estimates)))
    return kappa if np.isfinite(kappa) and kappa > 0 else 1.0


def noise_displacement_mm2(volume: Volume) -> float:
    """The image's noise in displacement units: ``sigma_n^2 / mean |grad I|^2`` (mm^2).

    ``sigma_n``: the robust standard deviation (1.4826 MAD) of the intensities outside
    the head (voxels more than 3 voxels from the foreground of the lightly smoothed
    image), where an MR magnitude image holds nothing but noise; ``|grad I|`` (intensity
    per mm) averaged over the foreground. A misfit of one noise standard deviation is
    then worth this many mm^2 of displacement. 0 when the image has no background of at
    least ``MIN_BACKGROUND_VOXELS`` voxels (cropped, skull-stripped or noise-free
    images: exactly 0 outside). Large images are read on every other voxel.
    """
    data = np.asarray(volume.data, np.float32)
    spacing = np.asarray(volume.spacing, np.float64)
    if data.size > NOISE_FULL_GRID_VOXELS:
        data = data[tuple(slice(None, None, 2) for _ in range(data.ndim))]
        spacing = spacing * 2
    foreground = foreground_mask(ndimage.gaussian_filter(data, 1.0))
    if foreground is None:
        return 0.0
    background = ~ndimage.binary_dilation(foreground, iterations=3)
    values = data[background].astype(np.float64)
    if values.size < MIN_BACKGROUND_VOXELS:
        return 0.0
    sigma = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    gradient = np.gradient(data.astype(np.float64), *spacing)
    power = float(np.mean(sum(g**2 for g in gradient)[foreground]))
    return sigma**2 / power if power > 0 else 0.0


def structure_verdict(fixed: Volume, moving: Volume, matrix: np.ndarray, chain: BSplineChain,
                      mask: np.ndarray | None, block_mm: float,
                      check: Callable[[], None] | None = None) -> StructureCheck:
    """Do the deformed map's edges line up better than the linear map's? (fixed grid)
    ``check`` (a cancellation hook) is called between the steps and slabs."""
    step = 1 if fixed.data.size <= CHECK_FULL_GRID_VOXELS else 2
    sub = tuple(slice(None, None, step) for _ in range(fixed.ndim))
    affine = fixed.affine.copy()
    affine[:-1, :-1] *= step
    grid = Volume(fixed.data[sub], affine, fixed.name)
    if mask is None:
        mask = foreground_mask(fixed.data)
    region = (np.ones(grid.shape, bool) if mask is None else np.asarray(mask, bool)[sub])
    linear = resample(moving, grid, MatrixTransform(matrix)).data
    deformation = chain.to_field(grid.shape, grid.affine, check)
    moved = np.sqrt(np.sum(deformation.components.astype(np.float64) ** 2, axis=0))
    deformed = resample(moving, grid, compose_linear(deformation, matrix, check),
                        check=check).data
    # the deformation in this grid's voxels, for the mirror test (structure_check)
    d = grid.ndim
    voxels = np.tensordot(np.linalg.inv(grid.affine[:d, :d]).astype(np.float32),
                          deformation.components, axes=1)
    return check_structure(grid.data, linear, deformed, grid.spacing, region, block_mm,
                           moved_mm=moved, displacement_vox=voxels)
