"""Motion correction of a series: every frame registered to one reference volume.

Qt-free and file-free: the command line (:mod:`napari_reg.motion`) and the Motion panel
both drive these pieces.

Direction (GUIDE §2): a frame's transform maps **reference** world points (RAS mm) to
**that frame's** world points, the pull direction resampling needs, so the corrected
frame is ``corrected_k(x) = frame_k(T_k(x))`` on the reference grid.

Motion parameters (per frame, from the linear part of ``T_k``): three rotations in degrees
(``R = Rz Ry Rx``, the angles of :func:`~.transforms.linear.matrix_to_euler`) and three
translations in mm, the displacement ``T_k(c) - c`` of the reference grid's centre ``c``
(as MCFLIRT reports them about the volume centre). Framewise displacement (Power et al.
2012, NeuroImage 59:2142): the sum of the absolute frame-to-frame differences of the six
parameters, rotations converted to arc length on a 50 mm sphere; 0 for the first frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .engine.errors import RegistrationError
from .engine.events import ProgressEvent
from .engine.register import register
from .errors import NapariRegError
from .image import Volume
from .intensity_drift import apply_gain, fit_gain
from .optimize import CancelToken
from .pyramid import default_schedule
from .resample import resample
from .transforms.base import MatrixTransform
from .transforms.field import DisplacementField
from .transforms.linear import matrix_to_euler, nearest_rotation

__all__ = ["MotionError", "MotionSettings", "FrameResult", "MOTION_TRANSFORMS",
           "FD_RADIUS_MM", "PARAMETER_NAMES", "check_series", "reference_index",
           "make_reference", "check_mask", "register_frame", "correct_frame",
           "motion_parameters", "framewise_displacement", "smooth_along_time"]

MOTION_TRANSFORMS = ("rigid", "affine", "bspline", "syn")
DEFORMABLE = ("bspline", "syn")
FD_RADIUS_MM = 50.0
PARAMETER_NAMES = ("rot_x_deg", "rot_y_deg", "rot_z_deg", "trans_x_mm", "trans_y_mm",
                   "trans_z_mm")
_MIN_AXIS = 4  # register() needs 4 voxels along every axis


class MotionError(NapariRegError):
    """A series (or its reference, mask, settings) that cannot be motion corrected."""


@dataclass
class MotionSettings:
    """How every frame is registered to the reference (JSON-serialisable).

    ``reference``: ``"first"``, ``"mean"`` or a 0-based frame index. ``transform``: the
    model of each frame's map (``bspline``/``syn`` run after a rigid stage).
    ``smooth_sigma_frames``: Gaussian smoothing of the transforms along time (sigma in
    frames, 0 = off), for cardiac/respiratory series whose motion is smooth in time.
    ``intensity_drift``: model each frame's smooth (first-order in space) intensity drift
    relative to the reference and refine the alignment against it (linear models only;
    :mod:`.intensity_drift`). Levels, iterations and samples: per pyramid level, coarse
    to fine (benchmarks/bench_motion.py measures the defaults).
    """

    transform: str = "rigid"
    metric: str = "ncc"
    reference: str | int = "first"
    smooth_sigma_frames: float = 0.0
    levels: int = 3
    iterations: list[int] = field(default_factory=lambda: [100, 50, 30])
    samples: list[int] = field(default_factory=lambda: [2000, 5000, 50000])
    deformable_options: dict[str, Any] = field(default_factory=dict)
    intensity_drift: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.transform = str(self.transform).lower()
        if self.transform not in MOTION_TRANSFORMS:
            raise MotionError(f"unknown transform '{self.transform}' for motion correction; "
                              f"choose one of {', '.join(MOTION_TRANSFORMS)}")
        if isinstance(self.reference, str) and self.reference not in ("first", "mean"):
            try:
                self.reference = int(self.reference)
            except ValueError:
                raise MotionError(f"--reference must be first, mean or a frame number, "
                                  f"got '{self.reference}'") from None
        if not np.isfinite(self.smooth_sigma_frames) or self.smooth_sigma_frames < 0:
            raise MotionError("the smoothing along time must be a sigma >= 0 (frames)")

    @property
    def deformable(self) -> bool:
        return self.transform in DEFORMABLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def register_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~.register.register` for one frame."""
        stages = ["rigid", self.transform] if self.deformable else [self.transform]
        options = dict(self.deformable_options)
        if self.transform == "bspline":
            # The B-spline stage's do-no-harm check keeps a deformation only if edges align
            # better in most control-point cells: right between subjects, but a heart or a
            # diaphragm moves locally, so most cells rightly stay as they were.
            options.setdefault("structure_check", False)
        return {"stages": stages, "transform": self.transform, "metric": self.metric,
                "init": "none", "levels": self.levels, "iterations": list(self.iterations),
                "samples": list(self.samples), "seed": self.seed,
                "deformable_options": options}


@dataclass
class FrameResult:
    """One registered frame: ``matrix`` is the linear reference->frame world map (RAS mm);
    ``field`` the whole deformable map on the reference grid (None for linear runs)."""

    index: int
    matrix: np.ndarray
    cost: float = float("nan")
    seconds: float = 0.0
    field: DisplacementField | None = None

    @property
    def transform(self):
        return self.field if self.field is not None else MatrixTransform(self.matrix)


# -------------------------------------------------------------------- checks
def check_series(data: np.ndarray) -> None:
    """Refuse what cannot be corrected: not 4D, one frame, non-finite voxels."""
    if data.ndim != 4:
        raise MotionError(f"motion correction needs a 4D series (X, Y, Z, time); this one has "
                          f"shape {tuple(data.shape)}")
    if data.shape[3] < 2:
        raise MotionError("the series has only one frame: there is no motion to correct")
    if data.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(data).all(axis=(0, 1, 2)))
        if bad.size:
            listed = ", ".join(str(int(k)) for k in bad[:10]) + (" ..." if bad.size > 10 else "")
            raise MotionError(f"frames with NaN or infinite voxels: {listed} (0-based); "
                              "replace them (e.g. by 0) or cut those frames first")


def reference_index(reference: str | int, n_frames: int) -> int | None:
    """The 0-based frame used as reference, or None for the mean of all frames."""
    if reference == "mean":
        return None
    if reference == "first":
        return 0
    index = int(reference)
    if not 0 <= index < n_frames:
        raise MotionError(f"reference frame {index} is out of range: the series has "
                          f"{n_frames} frames (0 to {n_frames - 1})")
    return index


def make_reference(data: np.ndarray, affine: np.ndarray, reference: str | int) -> Volume:
    """The reference volume on the series grid: one frame, or the mean over time."""
    index = reference_index(reference, data.shape[3])
    values = data.mean(axis=3, dtype=np.float64) if index is None else data[..., index]
    return Volume(np.asarray(values, dtype=np.float32), affine, name="reference")


def check_mask(mask: Volume, reference: Volume) -> np.ndarray:
    """A mask must be on the series grid (same shape and affine) and not empty."""
    if mask.ndim != 3 or not mask.same_grid(reference):
        raise MotionError(f"the mask's grid (shape {tuple(mask.shape)}) is not the series grid "
                          f"(shape {tuple(reference.shape)}, same voxel->world affine needed); "
                          "resample the mask onto one frame of the series first")
    values = np.asarray(mask.data) != 0
    if not values.any():
        raise MotionError("the mask is empty (no non-zero voxel)")
    return values


# -------------------------------------------------------------------- one frame
def _padded(volume: Volume) -> Volume:
    """Edge-replicate axes thinner than 4 voxels (thick-slab EPI with 3 slices); the
    affine keeps world positions, so the transform found is the same map."""
    pad = [max(0, _MIN_AXIS - s) for s in volume.shape]
    if not any(pad):
        return volume
    before = np.array([p // 2 + p % 2 for p in pad])
    data = np.pad(volume.data, [(b, p - b) for b, p in zip(before, pad, strict=True)],
                  mode="edge")
    shift = np.eye(4)
    shift[:3, 3] = -before
    return Volume(data, volume.affine @ shift, name=volume.name)


def register_frame(reference: Volume, frame: Volume, settings: MotionSettings, index: int = 0,
                   mask: np.ndarray | None = None, cancel: CancelToken | None = None,
                   callback: Callable[[ProgressEvent], None] | None = None) -> FrameResult:
    """Register one frame (moving) to the reference (fixed): the reference->frame map.

    A frame identical to the reference (the reference frame itself) is the identity,
    not a registration. Raises :class:`MotionError` naming the frame when it fails.
    """
    t0 = time.perf_counter()
    if np.array_equal(np.asarray(frame.data), np.asarray(reference.data)):
        identity = (DisplacementField.identity(reference.shape, reference.affine)
                    if settings.deformable else None)
        return FrameResult(index, np.eye(4), 0.0, time.perf_counter() - t0, identity)
    fixed, moving = reference, frame
    if min(reference.shape) < _MIN_AXIS:
        if settings.deformable:
            raise MotionError(f"deformable motion correction needs at least {_MIN_AXIS} voxels "
                              f"along every axis; the series is {tuple(reference.shape)}")
        fixed, moving = _padded(reference), _padded(frame)
        if mask is not None:
            mask = _padded(reference.with_data(mask.astype(np.uint8))).data > 0
    mask_volume = None if mask is None else fixed.with_data(mask.astype(np.uint8))
    kwargs = settings.register_kwargs()
    kwargs["levels"] = _useful_levels(fixed, settings.levels)
    try:
        result = register(fixed, moving, fixed_mask=mask_volume, callback=callback,
                          cancel=cancel, **kwargs)
        if settings.intensity_drift and not settings.deformable:
            result = _refine_with_drift(fixed, moving, result, settings, mask, mask_volume,
                                        callback, cancel)
    except RegistrationError as exc:
        raise MotionError(f"frame {index}: {exc}") from exc
    dense = None
    if result.deformable is not None:
        dense = result.deformable.displacement_field(reference)
    return FrameResult(index, np.asarray(result.matrix, dtype=np.float64),
                       float(result.final_cost), time.perf_counter() - t0, dense)


def _useful_levels(volume: Volume, levels: int) -> int:
    """Pyramid levels that differ: a small volume (thick-slab EPI) reaches its coarsest
    size early, and repeating a level only costs time (the finest levels are kept)."""
    factors, _ = default_schedule(volume, n_levels=max(1, levels))
    return max(1, len({tuple(f) for f in factors}))


def _refine_with_drift(fixed: Volume, moving: Volume, result, settings: MotionSettings,
                       mask: np.ndarray | None, mask_volume: Volume | None, callback,
                       cancel: CancelToken | None):
    """Fit the frame's smooth intensity drift at the found alignment, then refine the
    alignment at the finest level against the reference times that gain."""
    aligned = resample(moving, fixed, MatrixTransform(result.matrix), fill=np.nan)
    gain = fit_gain(fixed, np.asarray(aligned.data), mask)
    kwargs = settings.register_kwargs()
    kwargs.update(init="none", initial=np.asarray(result.matrix), levels=1,
                  iterations=[kwargs["iterations"][-1]], samples=[kwargs["samples"][-1]],
                  seed=settings.seed + 1)
    return register(apply_gain(fixed, gain), moving, fixed_mask=mask_volume,
                    callback=callback, cancel=cancel, **kwargs)


def correct_frame(frame: Volume, reference: Volume, result: FrameResult) -> np.ndarray:
    """The frame resampled on the reference grid through its map (float32, linear)."""
    warped = resample(frame, reference, result.transform, interpolation="linear")
    return np.asarray(warped.data, dtype=np.float32)


# -------------------------------------------------------------------- parameters
def motion_parameters(matrix: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(6,) rotations x, y, z (degrees) and translations x, y, z (mm) of a
    reference->frame matrix; the rotation of a non-rigid matrix is its nearest one."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rotation, _ = nearest_rotation(matrix[:3, :3])
    angles = np.rad2deg(matrix_to_euler(rotation))
    center = np.asarray(center, dtype=np.float64)
    translation = matrix[:3, :3] @ center + matrix[:3, 3] - center
    return np.r_[angles, translation]


def framewise_displacement(parameters: np.ndarray, radius_mm: float = FD_RADIUS_MM
                           ) -> np.ndarray:
    """Power et al. (2012) FD per frame (mm) from (T, 6) parameters (degrees, mm)."""
    p = np.asarray(parameters, dtype=np.float64)
    if len(p) < 2:
        return np.zeros(len(p))
    steps = np.abs(np.diff(p, axis=0))
    fd = np.deg2rad(steps[:, :3]).sum(axis=1) * radius_mm + steps[:, 3:].sum(axis=1)
    return np.r_[0.0, fd]


def smooth_along_time(results: Sequence[FrameResult], sigma_frames: float,
                      rigid: bool = True) -> list[FrameResult]:
    """Gaussian smoothing of the frames' maps along time (sigma in frames; ends mirrored).

    Matrices are smoothed entry by entry (projected back onto rotations for rigid runs);
    whole-map fields, when present, component by component on their common grid. The
    inputs are not changed.
    """
    ordered = sorted(results, key=lambda r: r.index)
    if sigma_frames <= 0 or len(ordered) < 2:
        return list(ordered)
    matrices = ndimage.gaussian_filter1d(np.stack([r.matrix for r in ordered]), sigma_frames,
                                         axis=0, mode="nearest")
    if rigid:
        for m in matrices:
            m[:3, :3] = nearest_rotation(m[:3, :3])[0]
    fields: list[DisplacementField | None] = [None] * len(ordered)
    if all(r.field is not None for r in ordered):
        first = ordered[0].field
        stack = np.stack([r.field.components for r in ordered])  # type: ignore[union-attr]
        stack = ndimage.gaussian_filter1d(stack, sigma_frames, axis=0, mode="nearest")
        fields = [DisplacementField.from_components(c, first.affine) for c in stack]
    return [FrameResult(r.index, m, r.cost, r.seconds, f)
            for r, m, f in zip(ordered, matrices, fields, strict=True)]
