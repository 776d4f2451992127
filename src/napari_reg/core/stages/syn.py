"""Symmetric diffeomorphic registration with a stationary velocity field (SyN-like).

Model: the deformation of the fixed space is ``D = exp(v)`` (scaling and squaring), the
whole map ``T(x) = M D(x)`` with ``M`` the linear fixed->moving matrix. Both images meet
in the middle, as in ANTs SyN: on the fixed (level) grid we compare

    I_mid = F o exp(-v/2)      and      J_mid = (moving o M) o exp(+v/2),

which agree exactly when ``F = (moving o M) o exp(v)``. Perturbing ``v`` by ``w`` moves
the two half-maps by ``+w/2`` and ``-w/2`` (first order), so the cost gradient is

    g = 1/2 (dC/dJ grad J_mid - dC/dI grad I_mid)        (world mm^-1, per voxel)

One iteration: ``w = -G_fluid * g`` (Gaussian of ``update_sigma_voxels``: fluid-like
regularisation of the update), rescaled so its largest vector is ``step_voxels`` voxels
(ANTs' gradient step), ``v <- G_elastic * (v + w)`` (``field_sigma_voxels``: elastic-like
regularisation of the field). ``v`` stays smooth and the exponential of a smooth field
is a diffeomorphism, so nothing folds, and ``exp(-v)`` is the inverse (inverse
consistency by construction). Coarse-to-fine: ``v`` (world mm) is interpolated onto the
next level's grid.

Defaults follow greedy's documentation (3 levels, 100x50x10 iterations, update and field
smoothing 2.0 and 0.5 voxels, local NCC over 5-voxel windows, ``radius=2`` as its ``NCC
2x2x2``; in 2D a window of as many pixels, 11 x 11:
:func:`~napari_reg.core.stages.syn_rules.default_radius`); a pair of two contrasts gets
mutual information instead (``metric="auto"``,
:func:`~napari_reg.core.stages.syn_rules.choose_metric`). A moving-image mask is warped
with the moving image each iteration, and the similarity ignores what it leaves out.

At the end a deformation that does not really improve the structural alignment
is dropped (``no_harm``, the B-spline's judge: :mod:`napari_reg.core.structure_check`):
a deformable stage must not move a pair it cannot improve, e.g. fit the contrast
difference of two modalities.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.context import RunContext, level_schedule, per_level
from ..engine.errors import RegistrationError
from ..engine.events import EventKind
from ..engine.result import LevelRecord
from ..engine.sampling import mask_for_level
from ..engine.stage import Stage
from ..image import Volume
from ..metrics.dense import make_dense_metric
from ..preview import HalfMapSquare, PreviewedTransform
from ..pyramid import smooth
from ..resample import resample
from ..transforms.base import CompositeTransform, MatrixTransform, Transform
from ..transforms.field import _index_grid
from ..transforms.velocity import StationaryVelocityField
from .deformable_result import DeformableResult, regrid
from .standalone import run_alone
from .syn_ops import (
    intersect_masks,
    moving_mask_on,
    parallel_imap,
    smooth_components,
    symmetric_gradient,
)
from .syn_rules import (
    choose_metric,
    converged,
    default_iterations,
    default_radius,
    judged_on_fixed_grid,
    per_level_float,
    structure_check,
)

__all__ = ["SyNStage", "register_syn"]

# Above this many fixed voxels (a 1 mm brain: 8.7 M) SyN runs 4 levels and a 100x finer
# convergence test (1e-6): the levels stop much earlier there. With greedy's 10
# iterations at full resolution as well (was 0: the velocity stayed on the half-resolution
# grid) the synthetic 1 mm case went 0.459 -> 0.318 mm and Colin27 -> ICBM at 1 mm tissue
# Dice 0.728 -> 0.769, at 121-134 s CPU (greedy: 147 s on the synthetic case).
FULL_RESOLUTION_VOXELS = 2_000_000
LARGE_GRID_TOLERANCE = 1e-6


class SyNStage(Stage):
    """Symmetric SVF registration after the linear map it starts from (options: see
    :func:`register_syn`). The metric is averaged over the user's fixed mask, if any, and
    ignores what the moving mask leaves out."""

    name = "syn"

    def __init__(self, *, metric: str = "auto", radius: int | None = None,
                 metric_options: dict | None = None, levels: int | None = None,
                 shrink_factors: Sequence[Sequence[int] | int] | None = None,
                 sigmas_mm: Sequence[float] | None = None,
                 iterations: int | Sequence[int] | None = None, step_voxels: float = 0.5,
                 update_sigma_voxels: float | Sequence[float] = 2.0,
                 field_sigma_voxels: float = 0.5,
                 exp_shrink: int = 2, convergence_window: int = 10,
                 convergence_tolerance: float | None = None, no_harm: bool = True):
        for name, value in (("step_voxels", step_voxels),
                            *(("update_sigma_voxels", u) for u in np.atleast_1d(
                                np.asarray(update_sigma_voxels, np.float64))),
                            ("field_sigma_voxels", field_sigma_voxels)):
            if not np.isfinite(value) or value < 0 or (name == "step_voxels" and value == 0):
                raise RegistrationError(f"{name} must be a finite positive number, got {value}")
        if int(exp_shrink) != exp_shrink or exp_shrink < 1:
            raise RegistrationError(f"exp_shrink must be a positive integer, got {exp_shrink}")
        self.metric = metric
        self.radius = None if radius is None else int(radius)
        self.metric_options = dict(metric_options or {})
        self.levels, self.shrink_factors, self.sigmas_mm = levels, shrink_factors, sigmas_mm
        self.iterations, self.step_voxels = iterations, float(step_voxels)
        self.update_sigma_voxels = (float(update_sigma_voxels)
                                    if np.ndim(update_sigma_voxels) == 0
                                    else [float(u) for u in update_sigma_voxels])  # type: ignore[union-attr]
        self.field_sigma_voxels = float(field_sigma_voxels)
        self.exp_shrink = int(exp_shrink)
        self.convergence_window = int(convergence_window)
        self.convergence_tolerance = (None if convergence_tolerance is None
                                      else float(convergence_tolerance))
        self.no_harm = bool(no_harm)

    def run(self, fixed: Volume, moving: Volume, transform: Transform,
            ctx: RunContext) -> DeformableResult:
        t_begin = time.perf_counter()
        d = fixed.ndim
        matrix = np.asarray(transform.matrix, np.float64)  # type: ignore[attr-defined]
        large = fixed.data.size > FULL_RESOLUTION_VOXELS
        radius = default_radius(d) if self.radius is None else self.radius
        levels = self.levels if self.levels is not None else (4 if large else 3)
        schedule = level_schedule(fixed, levels, self.shrink_factors, self.sigmas_mm)
        shrink, sigmas, n_levels = schedule.shrink_factors, schedule.sigmas_mm, schedule.n_levels
        tolerance = (self.convergence_tolerance if self.convergence_tolerance is not None
                     else LARGE_GRID_TOLERANCE if large else 1e-4)
        iters = per_level(default_iterations(shrink) if self.iterations is None
                          else self.iterations, n_levels, "iterations")
        update_sigmas = per_level_float(self.update_sigma_voxels, n_levels)
        ctx.release_pyramids()  # the linear stages' (1 mm brain: ~200 MB); SyN has its own
        fixed_pyr = ctx.pyramid(fixed, shrink, sigmas)
        dense = None  # chosen at the first level when the metric is "auto"
        metric, correlation = self.metric, None
        cancel = ctx.cancel
        check = cancel.raise_if_cancelled  # called between the expensive steps of an iteration
        n_start = ctx.reporter.total_iterations
        records: list[LevelRecord] = []
        v: np.ndarray | None = None
        grid_affine = fixed_pyr[0].affine
        cost = float("nan")

        # The latest half map exp(v/2) (voxel units) and its grid: a fresh array every
        # iteration, never modified after, so events can share it without a copy.
        latest_half: tuple[np.ndarray, np.ndarray] | None = None

        def snapshot() -> Transform:
            # Exact map for consumers (exponentiated lazily, only if someone evaluates it)
            # and a cheap preview for live displays: exp(v) = exp(v/2) o exp(v/2) from the
            # half map this iteration computed anyway (it lags the update of v by one step).
            assert v is not None
            svf = StationaryVelocityField.from_components(v.copy(), grid_affine)
            exact = CompositeTransform([svf, MatrixTransform(matrix)])
            if latest_half is None:  # before the first iteration v is zero: the linear part
                return PreviewedTransform(exact, MatrixTransform(matrix))
            return PreviewedTransform(exact, HalfMapSquare(*latest_half, matrix))

        def emit(kind: EventKind, record: LevelRecord, iteration: int, value: float) -> None:
            ctx.report(kind, record, n_levels, iteration, iters[record.level], value, snapshot)

        for level in range(n_levels):
            grid = fixed_pyr[level]
            if iters[level] == 0 and v is not None:
                # ANTs "SyNQuick" style: no work at this level; v stays on the coarser grid
                # (it is smooth there) and is only interpolated when the field is sampled.
                record = ctx.record(self.name, level, schedule, 0)
                record.stop_reason = "skipped"
                records.append(record)
                continue
            v = (np.zeros((d,) + grid.shape, np.float32) if v is None
                 else regrid(v, grid_affine, grid.shape, grid.affine))
            grid_affine = grid.affine
            check()
            mov_s = smooth(moving, sigmas[level]) if sigmas[level] > 0 else moving
            check()
            warped_lin = resample(mov_s, grid, matrix).data.astype(np.float32, copy=False)
            fimg = grid.data.astype(np.float32, copy=False)
            mask = mask_for_level(ctx.fixed_mask, shrink[level])
            # cost-function masking (as ANTs' moving mask): the moving mask under the
            # linear map, warped with the images each iteration; None without one
            moving_in = moving_mask_on(ctx.moving_mask, grid, matrix)
            last_spacing, last_shrink = grid.spacing, shrink[level]  # v's grid, for the judge
            if dense is None:
                metric, correlation = choose_metric(self.metric, fixed, moving, matrix,
                                                    ctx.fixed_mask, ctx.moving_mask)
                dense = make_dense_metric(metric, radius=radius, **(
                    self.metric_options if metric == self.metric else {}))
            # the metric's independent filters on the pool, for this level's grid size
            dense.map = lambda fn, items, size=fimg.size: parallel_imap(fn, items, size)
            dense.setup(fimg, warped_lin)
            record = ctx.record(self.name, level, schedule, int(fimg.size))
            records.append(record)
            emit(EventKind.LEVEL_START, record, 0, float("nan"))
            t_level = time.perf_counter()
            step_mm = self.step_voxels * float(grid.spacing.min())
            update_sigma = update_sigmas[level]
            idx = _index_grid(grid.shape)
            record.stop_reason = "max_iterations"
            for it in range(iters[level]):
                cancel.raise_if_cancelled()
                latest_half = None  # the last half map goes before the next is made
                cost, update, half = symmetric_gradient(
                    v, grid_affine, self.exp_shrink, warped_lin, fimg, idx, mask, moving_in,
                    dense, metric, radius, check)
                latest_half = (half, grid_affine)
                smooth_components(update, update_sigma, grid.spacing, in_place=True)
                norm = float(np.sqrt(np.einsum("i...,i...->...", update, update).max()))
                check()
                record.costs.append(cost)
                if norm <= 0 or not np.isfinite(norm):
                    record.stop_reason = "zero_gradient"
                    emit(EventKind.ITERATION, record, it, cost)
                    break
                update *= np.float32(step_mm / norm)
                v -= update
                del update  # (in place from here on: v and its update are the big arrays)
                smooth_components(v, self.field_sigma_voxels, grid.spacing, in_place=True)
                emit(EventKind.ITERATION, record, it, cost)
                if converged(record.costs, self.convergence_window,
                              tolerance):
                    record.stop_reason = "converged"
                    break
            record.seconds = time.perf_counter() - t_level
            emit(EventKind.LEVEL_END, record, len(record.costs), cost)

        assert v is not None
        # the iterations' arrays go before the judge builds its own (1 mm brain: ~400 MB)
        latest_half = idx = mov_s = None  # type: ignore[assignment]
        # Do no harm: keep the deformation only if it removes a real part of the structural
        # (modality-independent) mismatch the linear map left; else the linear map stands.
        if v.shape[1:] == fixed.shape:
            judged = structure_check(v, grid_affine, last_spacing, fimg, warped_lin,
                                     intersect_masks(
                                         mask_for_level(ctx.sampling_mask(fixed), last_shrink),
                                         None if moving_in is None else moving_in >= 0.5),
                                     self.exp_shrink, check)
        else:  # the finest levels were skipped: judge on the fixed grid all the same
            judged = judged_on_fixed_grid(v, grid_affine, fixed, moving, matrix,
                                          ctx.sampling_mask(fixed),
                                          moving_mask_on(ctx.moving_mask, fixed, matrix),
                                          self.exp_shrink, check)
        kept = judged is None or judged.accepted or not self.no_harm
        if not kept:
            v = np.zeros_like(v)
        svf = StationaryVelocityField.from_components(v, grid_affine)
        parameters: dict[str, Any] = {
            "metric": metric, "metric_requested": self.metric, "radius": radius,
            "metric_options": dict(self.metric_options), "shrink_factors": shrink,
            "sigmas_mm": sigmas, "iterations": iters, "step_voxels": self.step_voxels,
            "update_sigma_voxels": update_sigmas,
            "field_sigma_voxels": self.field_sigma_voxels, "exp_shrink": self.exp_shrink,
            "convergence_window": self.convergence_window,
            "convergence_tolerance": tolerance,
            "no_harm": self.no_harm,
        }
        return DeformableResult(
            transform=CompositeTransform([svf, MatrixTransform(matrix)]), deformation=svf,
            linear_matrix=matrix, levels=records, final_cost=cost, parameters=parameters,
            timings={"syn_s": time.perf_counter() - t_begin},
            fixed_shape=fixed.shape, fixed_affine=fixed.affine.copy(),
            n_iterations=ctx.reporter.total_iterations - n_start,
            diagnostics={"velocity_grid": list(svf.shape), "deformation_kept": bool(kept),
                         "metric": metric, "intensity_correlation": correlation,
                         "structure_check": None if judged is None else judged.as_dict()})


def register_syn(fixed: Volume, moving: Volume, initial: np.ndarray | Transform | None = None,
                 *, fixed_mask: np.ndarray | Volume | None = None,
                 moving_mask: np.ndarray | Volume | None = None, callback=None,
                 cancel=None, stage: int = 0, **options: Any) -> DeformableResult:
    """Symmetric SVF registration of ``moving`` to ``fixed`` after the linear ``initial``,
    as a run of its own (``register(..., transform="syn")`` runs it after an affine stage).

    Parameters
    ----------
    fixed, moving
        Images in world RAS mm (any affines).
    initial
        Linear fixed->moving matrix ``M`` (or linear Transform); ``T(x) = M exp(v)(x)``.
    metric, radius, metric_options
        ``"auto"`` (default): ``"lncc"`` for one contrast, ``"mi"`` when the images'
        intensities correlate below 0.3 after the linear map (two contrasts:
        :func:`~napari_reg.core.stages.syn_rules.choose_metric`; the choice and the
        correlation are in ``result.diagnostics``). ``"lncc"``: local NCC, box window of
        ``2*radius+1`` voxels (squared, so a locally inverted contrast matches too, but it
        fits a T1 vs T2 difference rather than anatomy; default radius 2 in 3D, 5 in 2D:
        :func:`~napari_reg.core.stages.syn_rules.default_radius`); or ``"ssd"``, ``"mi"``,
        ``"nmi"``, ``"ncc"`` (dense versions of :mod:`napari_reg.core.metrics`).
        ``metric_options`` go to the metric named, not to one ``"auto"`` picks.
    levels, shrink_factors, sigmas_mm
        Pyramid schedule (defaults from :func:`napari_reg.core.pyramid.default_schedule`;
        ``levels`` 3, or 4 above 2 M voxels); the velocity lives on each level's grid.
    iterations
        Maximum iterations per level (the engine's one per-level rule). The default is
        greedy's recommended 100x50x10 over 3 levels (4x, 2x, full resolution): the few
        full-resolution iterations align the fine anatomy of different subjects. Above
        2 M fixed voxels (a 1 mm brain) 4 levels, 100x100x50x10.
    step_voxels
        Largest update per iteration, in voxels of the current level (ANTs' gradient step,
        greedy's epsilon).
    update_sigma_voxels, field_sigma_voxels
        Gaussian sigmas for the update (fluid) and the field (elastic), in voxels of the
        level's finest axis (the kernels are isotropic in mm on anisotropic grids). The
        defaults, 2.0 and 0.5, are greedy's recommended ``-s 2.0vox 0.5vox``.
        ``update_sigma_voxels`` may be a list, one per level (coarse to fine, the finest
        at the end). Real anatomy of different subjects prefers 2.0 (2D slices and
        Colin27 -> ICBM at 2 mm: tissue Dice 0.803, 0.794 with 3.0 on the coarse levels).
    exp_shrink
        The iterations' exponentials ``exp(+-v/2)`` run on every ``exp_shrink``-th voxel
        and are interpolated back (default 2: on the 1 mm MNI benchmark SyN went from
        15.2 to 9.5 s with the same error, 0.36 -> 0.34 mm); 1 computes them on the full
        level grid. The returned transform's exponential is exact either way.
    convergence_window, convergence_tolerance
        Stop a level when the cost's least-squares slope over the last ``window``
        iterations, relative to its mean magnitude, is above ``-tolerance`` per iteration
        (default 1e-4; 1e-6 above 2 M fixed voxels, where the levels otherwise stopped
        after 12-20 iterations, short of the alignment).
    no_harm
        Do no harm (default True): the deformation is kept only if the fixed image's edges
        align better with it than with the linear map alone in a clear majority of 10 mm
        blocks, and its edge gain is at least a set share of what its mirror ``-u`` loses
        (:func:`napari_reg.core.structure_check.check_structure`, the B-spline's judge: a
        modality-independent question the stage did not optimise, and a null of the same
        size and smoothness, so a fit of contrast or noise under any metric, MI included,
        is not kept); otherwise the result is the linear map itself
        (``result.diagnostics``: ``deformation_kept``, ``structure_check``). Real pairs of
        different subjects pass both; the shipped sample pair, whose truth is affine (T1
        vs T2-like), fails them. Corrections of about a millimetre or less score below
        the mirror share and are dropped too.
    fixed_mask
        Optional fixed-grid mask; the metric is averaged over it.
    moving_mask
        Optional moving-image mask (a Volume on any grid, or an array on the moving
        grid; non-zero = use): cost-function masking as in ANTs. Each iteration the mask
        is warped with the moving image, and the similarity ignores every voxel whose
        value (or local NCC window) reads moving voxels outside it, so missing tissue
        (a resection) pulls nothing into its hole; the field there follows its
        neighbours through the smoothing.
    callback, cancel, stage
        As :func:`napari_reg.core.stages.bspline.register_bspline` (``stage_name="syn"``).
    """
    return run_alone(SyNStage(**options), fixed, moving, initial, fixed_mask=fixed_mask,
                     moving_mask=moving_mask, callback=callback, cancel=cancel,
                     stage_index=stage)

