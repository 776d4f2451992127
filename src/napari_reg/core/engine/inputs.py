"""The one check of what a registration is given, and the transform it starts from.

Every entry point (``register()``, and the deformable stages run on their own) goes
through :func:`check_pair` and :func:`mask_on_fixed`; :func:`start_matrix` validates a
given start and :func:`initial_matrix` computes one by an ``init`` method.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..image import Volume, VolumeError
from ..initialize import fit_landmarks, init_center_of_mass, init_geometry, init_moments
from ..resample import resample
from ..transforms.base import MatrixTransform, Transform
from .errors import RegistrationError
from .presets import INIT_METHODS

__all__ = ["check_pair", "mask_on_fixed", "start_matrix", "initial_matrix", "landmark_kind"]


def check_pair(fixed: Volume, moving: Volume) -> tuple[Volume, Volume]:
    """float32 copies of both images, after checking they can be registered at all:
    same dimension (2D or 3D), at least 4 voxels per axis, not constant."""
    if fixed.ndim != moving.ndim:
        raise RegistrationError(
            f"fixed image is {fixed.ndim}D but moving image is {moving.ndim}D; "
            "both must be 2D or both 3D")
    checked = []
    for role, volume in (("fixed", fixed), ("moving", moving)):
        try:
            as_float = volume.as_float()
        except VolumeError as exc:
            raise RegistrationError(f"{role} image: {exc}") from exc
        if min(as_float.shape) < 4:
            raise RegistrationError(
                f"{role} image is too small to register (shape {as_float.shape}); every axis "
                "needs at least 4 voxels")
        if float(np.ptp(as_float.data)) == 0.0:
            raise RegistrationError(
                f"{role} image is constant (every voxel is {float(as_float.data.flat[0])}); "
                "there is nothing to align")
        checked.append(as_float)
    return checked[0], checked[1]


def moving_mask_volume(mask: Volume | np.ndarray | None, moving: Volume) -> Volume | None:
    """The moving-image mask as a Volume on its own grid (non-zero = use), or None.

    Stages look it up at the moving world positions their sample points map to
    (nearest voxel), so it may sit on any grid; a bare array must have the moving
    image's shape (and takes its grid). An empty mask is an error.
    """
    if mask is None:
        return None
    if not isinstance(mask, Volume):
        data = np.asarray(mask)
        if data.shape != moving.shape:
            raise RegistrationError(f"moving mask shape {data.shape} does not match the moving "
                                    f"image {moving.shape}")
        mask = moving.with_data(data)
    if mask.ndim != moving.ndim:
        raise RegistrationError(f"moving mask is {mask.ndim}D but the moving image is "
                                f"{moving.ndim}D")
    values = np.asarray(mask.data) != 0
    if not values.any():
        raise RegistrationError("the moving mask is empty (no non-zero voxel)")
    return mask.with_data(values.astype(np.uint8))


def mask_on_fixed(mask: Volume | np.ndarray | None, fixed: Volume) -> np.ndarray | None:
    """A boolean mask on the fixed grid (non-zero = inside), or None.

    A Volume on another grid is resampled onto the fixed one (nearest); a bare array must
    have the fixed image's shape. An empty mask is an error.
    """
    if mask is None:
        return None
    if isinstance(mask, Volume):
        if mask.ndim != fixed.ndim:
            raise RegistrationError(f"mask is {mask.ndim}D but the fixed image is "
                                    f"{fixed.ndim}D")
        if not mask.same_grid(fixed):
            mask = resample(mask, fixed, MatrixTransform(np.eye(fixed.ndim + 1)),
                            interpolation="nearest")
        data = np.asarray(mask.data)
    else:
        data = np.asarray(mask)
        if data.shape != fixed.shape:
            raise RegistrationError(f"fixed mask shape {data.shape} does not match the fixed "
                                    f"image {fixed.shape}")
    values = data != 0
    if not values.any():
        raise RegistrationError("the fixed mask is empty (no non-zero voxel on the fixed grid)")
    return values


def start_matrix(initial: np.ndarray | Transform | Any | None, ndim: int) -> np.ndarray:
    """A given start as a finite, invertible ``(d+1, d+1)`` fixed->moving matrix
    (identity for None; a Transform must be linear)."""
    if initial is None:
        return np.eye(ndim + 1)
    if isinstance(initial, Transform):
        if not initial.is_linear:
            raise RegistrationError("the initial transform must be linear (a matrix)")
        initial = initial.matrix  # type: ignore[attr-defined]
    matrix = np.asarray(initial, dtype=np.float64)
    if matrix.shape != (ndim + 1, ndim + 1) or not np.all(np.isfinite(matrix)):
        raise RegistrationError(
            f"the initial transform must be a finite {ndim + 1}x{ndim + 1} matrix, "
            f"got shape {matrix.shape}")
    if abs(np.linalg.det(matrix[:ndim, :ndim])) < 1e-9:
        raise RegistrationError("the initial matrix is singular (it flattens space)")
    return matrix


def landmark_kind(model: str, landmarks: tuple[np.ndarray, np.ndarray] | None) -> str:
    """The landmark fit that starts a ``model`` run."""
    # An affine fit needs d+1 well-spread pairs; with fewer a similarity is the best
    # honest start, and the intensity stages add the rest.
    if model != "affine" or landmarks is None:
        return model
    n, d = np.asarray(landmarks[0]).shape
    return "affine" if n >= 2 * (d + 1) else "similarity"


def initial_matrix(init: str, fixed: Volume, moving: Volume, initial: Any,
                   landmarks: tuple[np.ndarray, np.ndarray] | None,
                   mask: np.ndarray | None, fit: str) -> np.ndarray:
    """The start of a run (fixed->moving matrix): ``initial`` when ``init="initial"``,
    else computed by the ``init`` method (``mask`` limits the centre of mass; ``fit`` is
    the landmark fit's model)."""
    d = fixed.ndim
    if init == "initial":
        return start_matrix(initial, d)
    if init == "none":
        return np.eye(d + 1)
    if init == "geometry":
        return init_geometry(fixed, moving)
    if init == "com":
        mask_volume = None if mask is None else fixed.with_data(mask.astype(np.uint8))
        return init_center_of_mass(fixed, moving, fixed_mask=mask_volume)
    if init == "moments":
        return init_moments(fixed, moving)
    if init == "landmarks":
        if landmarks is None:
            raise RegistrationError("init='landmarks' needs landmark pairs (fixed, moving)")
        fixed_points, moving_points = (np.asarray(p, dtype=np.float64) for p in landmarks)
        return fit_landmarks(fixed_points, moving_points, kind=fit)
    raise RegistrationError(f"unknown init '{init}'; choose one of {', '.join(INIT_METHODS)}")
