"""Unbiased groupwise template construction (in the manner of ANTs' template scripts).

Every image is registered to the current template (template = FIXED, image = MOVING),
giving ``T_i``: template world RAS mm -> image ``i`` world RAS mm. Then

1. the warped images ``W_i(x) = I_i(T_i(x))`` (template grid) are averaged: ``A``;
2. the average is moved into the *mean* space of the group. If the template sits off
   the group's centre, every ``T_i`` shares that offset; with the mean map
   ``Tbar ~ T_i`` averaged over ``i``, the corrected template is ``N(y) = A(Tbar^-1(y))``,
   so that registering the images to ``N`` gives maps ``T_i o Tbar^-1`` whose mean is
   the identity: no image is privileged (the template is unbiased).

``Tbar`` has a linear and a deformable part, ``T_i(x) = M_i D_i(x)``:

* linear: ``Mbar`` = mean of the matrices ``M_i``, either the log-Euclidean mean
  ``expm(mean_i logm M_i)`` (default: symmetric in scale and rotation: a 10 % shrink and
  its inverse average to the identity) or the arithmetic mean of the entries (ANTs
  averages the affine parameters);
* deformable (when the driver returns one): ``D_i(x) = x + u_i(x)`` sampled on the
  template grid, ``ubar`` the mean displacement, and the update is ``(x + s ubar)^-1``
  with the gradient step ``s`` (ANTs: ``-s * ubar`` as a first-order inverse; here the
  exact fixed-point inverse of the scaled field).

The correction is ``N = A o D_s^-1 o Mbar^-1``. The bias it removes (mean displacement of
``Tbar`` over the template grid) falls fast but not to zero: an intensity average is
blurrier than its images, and a blurred convex shape looks smaller (its half-maximum
contour moves inward), so the registrations to it find a small common scale that every
iteration removes again (a steady state, not a drift: ~0.1 % scale on phantoms). Iterations
therefore stop after ``iterations``, or once the bias is below ``tolerance_mm`` or changes
by less than that between two iterations. Iteration 0 starts from the average of the
images aligned by their centres of mass on the reference grid (so the first template is
already unbiased in translation). An intensity metric (SSD/SAD/NCC) on images that look
like different contrasts gets a :class:`~.labels.ModalityWarning` (and a note in the result).
``mapper`` (like the built-in ``map``) lets a caller register the images in
parallel (processes, a Dask cluster); the core stays free of any executor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg

from ..errors import NapariRegError
from ..image import Volume
from ..initialize import init_center_of_mass
from ..optimize import CancelToken
from ..resample import resample
from ..transforms.base import CompositeTransform, MatrixTransform, Transform
from ..transforms.field import DisplacementField
from .labels import modality_check

__all__ = ["TemplateError", "TemplateIteration", "TemplateProgress", "TemplateResult",
           "mean_affine", "build_template", "register_to_template"]

AFFINE_MEANS = ("log", "arithmetic")


class TemplateError(NapariRegError):
    """Template construction that cannot run (too few images, mixed dimensions, ...)."""


@dataclass(frozen=True)
class TemplateProgress:
    """Progress handed to the callback: ``phase`` is ``register`` (``event`` is the driver's
    ProgressEvent, only when registrations run in this process), ``registered`` (image
    ``image_index`` done), ``average`` (iteration finished) or ``done``."""

    iteration: int
    n_iterations: int
    image_index: int
    n_images: int
    phase: str
    event: Any = None


@dataclass
class TemplateIteration:
    """One iteration: bias removed (mean |Tbar(x) - x| over the template grid, mm), RMS
    change of the template intensities, mean final registration cost, seconds."""

    iteration: int
    bias_mm: float
    template_change: float
    mean_cost: float
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class TemplateResult:
    """The template (on the reference grid) and the maps to every image.

    ``transforms[i]`` maps template world RAS mm -> image ``i`` world RAS mm, for the
    *final* template (the last correction composed in): ``warped_i(x) = I_i(T_i(x))``.
    ``linear_matrices[i]`` is the linear part ``A_i`` of ``T_i`` (the registration's
    affine after the correction's mean affine), so that ``T_i = A_i W_i`` with ``W_i`` a
    deformation of the template space (identity for linear runs).
    """

    template: Volume
    transforms: list[Transform]
    history: list[TemplateIteration] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    linear_matrices: list[np.ndarray] = field(default_factory=list)


def mean_affine(matrices: Sequence[np.ndarray], method: str = "log") -> np.ndarray:
    """Mean of homogeneous ``(d+1, d+1)`` matrices: log-Euclidean or arithmetic."""
    if method not in AFFINE_MEANS:
        raise TemplateError(f"unknown affine mean '{method}'; choose {' or '.join(AFFINE_MEANS)}")
    stack = np.asarray(matrices, dtype=np.float64)
    if method == "arithmetic":
        return stack.mean(axis=0)
    logs = []
    for m in stack:
        if np.linalg.det(m[:-1, :-1]) <= 0:
            raise TemplateError("an affine with a reflection (negative determinant) has no "
                                "real logarithm; use the arithmetic mean")
        logs.append(np.real(linalg.logm(m)))
    out = np.real(linalg.expm(np.mean(logs, axis=0)))
    out[-1] = 0.0
    out[-1, -1] = 1.0
    return out


def register_to_template(template: Volume, image: Volume, options: Mapping[str, Any],
                         register_fn: Callable[..., Any] | None = None,
                         callback: Callable[[Any], None] | None = None,
                         cancel: CancelToken | None = None) -> tuple[Transform, np.ndarray, float]:
    """One registration (template fixed, image moving): ``(T, linear matrix, final cost)``.

    A module-level function so that process pools and Dask workers can run it.
    """
    if register_fn is None:
        from ..engine.register import register as register_fn
    result = register_fn(template, image, callback=callback, cancel=cancel, **dict(options))
    linear = getattr(result, "linear_matrix", None)
    if linear is None:
        linear = result.transform.matrix
    return result.transform, np.asarray(linear, dtype=np.float64), float(result.final_cost)


def _register_star(args: tuple) -> tuple[Transform, np.ndarray, float]:
    return register_to_template(*args)


def _check_images(images: Sequence[Volume]) -> None:
    if len(images) < 2:
        raise TemplateError(f"a template needs at least 2 images, got {len(images)}")
    dims = {im.ndim for im in images}
    if len(dims) != 1:
        raise TemplateError(f"all images must be 2D or all 3D; got dimensions {sorted(dims)}")


def _deformation_field(transform: Transform, linear: np.ndarray,
                       grid: Volume) -> DisplacementField | None:
    """``u_i`` of ``D_i = M_i^-1 T_i`` on the template grid (None for linear results)."""
    if transform.is_linear:
        return None
    chain = CompositeTransform([transform, MatrixTransform(np.linalg.inv(linear))])
    return DisplacementField.from_transform(chain, grid.shape, grid.affine)


def _bias_mm(grid: Volume, matrix: np.ndarray, mean_field: np.ndarray | None) -> float:
    points = grid.world_grid().reshape(-1, grid.ndim)
    moved = points
    if mean_field is not None:
        moved = points + np.moveaxis(mean_field, 0, -1).reshape(-1, grid.ndim)
    moved = moved @ matrix[:-1, :-1].T + matrix[:-1, -1]
    return float(np.linalg.norm(moved - points, axis=1).mean())


def build_template(
    images: Sequence[Volume],
    reference: Volume | None = None,
    iterations: int = 4,
    transform: str = "affine",
    metric: str = "mi",
    affine_mean: str = "log",
    shape_step: float = 0.25,
    tolerance_mm: float = 0.05,
    register_options: Mapping[str, Any] | None = None,
    callback: Callable[[TemplateProgress], None] | None = None,
    cancel: CancelToken | None = None,
    mapper: Callable[[Callable, Iterable], Iterable] | None = None,
    register_fn: Callable[..., Any] | None = None,
) -> TemplateResult:
    """Build an unbiased template of ``images`` on ``reference``'s grid (default: the first).

    ``transform``, ``metric`` and ``register_options`` go to
    :func:`napari_reg.register` unchanged (deformable stages are used when
    the driver offers them). ``shape_step`` scales the deformable correction (ANTs'
    gradient step); the linear correction is always applied in full. ``mapper(fn, items)``
    runs the registrations of one iteration (default: in this process, in order; then
    ``callback`` also receives the driver's events).
    """
    _check_images(images)
    if iterations < 1:
        raise TemplateError(f"iterations must be >= 1, got {iterations}")
    if not 0 < shape_step <= 1:
        raise TemplateError(f"shape_step must be in (0, 1], got {shape_step}")
    mean_affine(np.eye(images[0].ndim + 1)[None], affine_mean)  # validate the name early
    reference = reference if reference is not None else images[0]
    if reference.ndim != images[0].ndim:
        raise TemplateError(f"reference is {reference.ndim}D but the images are "
                            f"{images[0].ndim}D")
    grid = Volume(np.zeros(reference.shape, np.float32), reference.affine, "template")
    cancel = cancel or CancelToken()
    options = {"transform": transform, "metric": metric, **dict(register_options or {})}
    n = len(images)

    def emit(iteration: int, index: int, phase: str, event: Any = None) -> None:
        if callback is not None:
            callback(TemplateProgress(iteration, iterations, index, n, phase, event))

    # Iteration 0's template: centres of mass aligned, then unbiased like any other.
    start = [init_center_of_mass(reference, image) for image in images]
    notes = [note for image, m in zip(images, start, strict=True)
             if (note := modality_check(reference, image, metric, transform=m))]
    transforms: list[Transform] = [MatrixTransform(m) for m in start]
    template, correction, _ = _average_and_correct(images, grid, transforms, start,
                                                   affine_mean, shape_step)
    history: list[TemplateIteration] = []
    linears = start
    for iteration in range(iterations):
        cancel.raise_if_cancelled()
        t0 = time.perf_counter()
        outcomes = _register_all(template, images, options, register_fn, mapper, emit,
                                 iteration, cancel)
        transforms = [o[0] for o in outcomes]
        linears = [o[1] for o in outcomes]
        previous = template
        template, correction, bias = _average_and_correct(images, grid, transforms, linears,
                                                          affine_mean, shape_step)
        change = float(np.sqrt(np.mean((template.data - previous.data) ** 2)))
        history.append(TemplateIteration(iteration, bias, change,
                                         float(np.mean([o[2] for o in outcomes])),
                                         time.perf_counter() - t0))
        emit(iteration, n - 1, "average")
        if bias < tolerance_mm or (len(history) > 1
                                    and abs(bias - history[-2].bias_mm) < tolerance_mm):
            break
    final = [_compose(correction, t) for t in transforms]
    # the correction is C = Mbar^-1 (then a deformation): T_i = M_i D_i C has A_i = M_i Mbar^-1
    mbar_inv = (correction.transforms[0] if isinstance(correction, CompositeTransform)
                else correction).matrix
    final_linears = [np.asarray(m) @ mbar_inv for m in linears]
    emit(len(history) - 1, n - 1, "done")
    params = {"iterations": iterations, "iterations_run": len(history), "affine_mean":
              affine_mean, "shape_step": shape_step, "tolerance_mm": tolerance_mm, **options}
    return TemplateResult(template.with_data(template.data, name="template"), final, history,
                          params, notes, final_linears)


def _register_all(template: Volume, images: Sequence[Volume], options: dict[str, Any],
                  register_fn, mapper, emit, iteration: int,
                  cancel: CancelToken) -> list[tuple[Transform, np.ndarray, float]]:
    if mapper is not None:
        items = [(template, image, options, register_fn) for image in images]
        outcomes = []
        for index, outcome in enumerate(mapper(_register_star, items)):
            cancel.raise_if_cancelled()
            outcomes.append(outcome)
            emit(iteration, index, "registered")
        return outcomes
    outcomes = []
    for index, image in enumerate(images):
        def forward(event: Any, index: int = index) -> None:
            emit(iteration, index, "register", event)

        outcomes.append(register_to_template(template, image, options, register_fn,
                                             forward, cancel))
        emit(iteration, index, "registered")
    return outcomes


def _average_and_correct(images: Sequence[Volume], grid: Volume, transforms: list[Transform],
                         linears: list[np.ndarray], affine_mean: str,
                         shape_step: float) -> tuple[Volume, Transform, float]:
    """Average the warped images and move the average into the group's mean space.

    Returns the corrected template, the correction ``C`` (new template world -> old
    template world, so ``N(y) = A(C(y))``) and the bias it removed (mm).
    """
    total = np.zeros(grid.shape, dtype=np.float64)
    mean_u = None
    for image, t, m in zip(images, transforms, linears, strict=True):
        total += resample(image, grid, t, "linear").data
        field_i = _deformation_field(t, m, grid)
        if field_i is not None:
            mean_u = field_i.components.astype(np.float64) if mean_u is None \
                else mean_u + field_i.components
    average = grid.with_data((total / len(images)).astype(np.float32))
    if mean_u is not None:
        mean_u /= len(images)
    mbar = mean_affine(linears, affine_mean)
    bias = _bias_mm(grid, mbar, mean_u)
    correction: Transform = MatrixTransform(np.linalg.inv(mbar))
    if mean_u is not None:
        step = DisplacementField.from_components((shape_step * mean_u).astype(np.float32),
                                                 grid.affine)
        correction = CompositeTransform([correction, step.inverse()])
    return resample(average, grid, correction, "linear"), correction, bias


def _compose(first: Transform, then: Transform) -> Transform:
    """``x -> then(first(x))``; linear pairs collapse to one matrix."""
    return first.then(then)
