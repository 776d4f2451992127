"""Plausibility of transforms, landmarks and results read from files, with the file's role.

A file can parse cleanly and still be absurd: a singular ITK matrix given as the initial
transform, landmarks a kilometre away from either image, a result that maps the fixed
field of view entirely outside the moving image. Each check raises :class:`InputError`
whose one-line message names the file and its role (fixed, moving, initial transform,
fixed landmarks, ...). All coordinates are world RAS mm; matrices map FIXED points to
MOVING points.
"""

from __future__ import annotations

import os

import numpy as np

from napari_reg.core.image import Volume

from ..core.errors import NapariRegError

__all__ = ["InputError", "check_landmarks", "check_linear_transform", "check_warped"]

# A registration between images of one subject or species never scales beyond 1000x, and
# never translates beyond 100 m (images themselves stay within 100 m: volume_checks.py);
# an axis squeezed below 1/1000 is as good as a singular matrix.
MAX_SCALE, MIN_SCALE = 1e3, 1e-3
MAX_TRANSLATION_MM = 1e5


class InputError(NapariRegError):
    """An input that parses but cannot be meant: the message names the file and its role."""


def _label(source: str | os.PathLike | None, role: str) -> str:
    return f"{role} {os.fspath(source)}" if source else role


def check_linear_transform(matrix: np.ndarray, source: str | os.PathLike | None = None,
                           role: str = "transform") -> np.ndarray:
    """Return ``matrix`` (homogeneous, fixed->moving, RAS mm) or raise :class:`InputError`.

    Refused: non-finite entries, a linear part that is singular or scales any direction by
    more than :data:`MAX_SCALE` (or less than :data:`MIN_SCALE`), a translation beyond
    :data:`MAX_TRANSLATION_MM`.
    """
    m = np.asarray(matrix, dtype=np.float64)
    what = _label(source, role)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] not in (3, 4):
        raise InputError(f"{what}: not a 2D or 3D homogeneous matrix (shape {m.shape})")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{what}: contains NaN or infinite values")
    d = m.shape[0] - 1
    with np.errstate(all="ignore"):
        singular = np.linalg.svd(m[:d, :d], compute_uv=False)
    if singular.min() < MIN_SCALE * 1e-3 or not np.all(np.isfinite(singular)):
        raise InputError(f"{what}: the matrix is singular (it flattens space; smallest "
                         f"scale {singular.min():.3g})")
    if singular.max() > MAX_SCALE or singular.min() < MIN_SCALE:
        raise InputError(f"{what}: implausible scaling (factors {singular.min():.3g} to "
                         f"{singular.max():.3g}; allowed {MIN_SCALE:g} to {MAX_SCALE:g})")
    if np.abs(m[:d, d]).max() > MAX_TRANSLATION_MM:
        raise InputError(f"{what}: implausible translation "
                         f"({np.abs(m[:d, d]).max():.3g} mm)")
    return m


def _distance_to_box(points: np.ndarray, volume: Volume) -> np.ndarray:
    low, high = volume.bounds_world()
    below, above = np.maximum(low - points, 0.0), np.maximum(points - high, 0.0)
    return np.linalg.norm(below + above, axis=-1)


def check_landmarks(points: np.ndarray, images: list[Volume],
                    source: str | os.PathLike | None = None, role: str = "landmarks") -> None:
    """Refuse landmarks (``(n, d)`` world RAS mm) that lie far outside every image.

    "Far" is more than the largest image's diagonal from its bounding box: a landmark
    there cannot mark anatomy of either image (a wrong unit, an LPS/RAS mix-up with
    huge offsets, a corrupt file).
    """
    points = np.asarray(points, dtype=np.float64)
    what = _label(source, role)
    if points.size == 0:
        return
    if not np.all(np.isfinite(points)):
        raise InputError(f"{what}: coordinates contain NaN or infinite values")
    d = points.shape[-1]
    usable = [v for v in images if v.ndim == d]
    if not usable:
        return
    margin = max(float(np.linalg.norm(np.subtract(*v.bounds_world()[::-1]))) for v in usable)
    margin = max(margin, 10.0)
    nearest = np.min([_distance_to_box(points, v) for v in usable], axis=0)
    far = np.flatnonzero(nearest > margin)
    if far.size:
        k = int(far[0])
        where = ", ".join(f"{v:.4g}" for v in points[k])
        raise InputError(
            f"{what}: {far.size} landmark(s) lie far outside both images (e.g. #{k + 1} at "
            f"({where}) mm, {nearest[k]:.3g} mm away); "
            "check the coordinate system (RAS vs LPS) and units (mm)")


def _varies(data: np.ndarray) -> bool:
    data = np.asarray(data)
    finite = data[np.isfinite(data)]
    return bool(finite.size) and float(np.ptp(finite)) > 0.0


def check_warped(warped: Volume, moving: Volume, moving_source: str | os.PathLike | None,
                 fixed_source: str | os.PathLike | None, suspects: list[str],
                 roles: tuple[str, str] = ("fixed image", "moving image")) -> None:
    """Refuse a result whose warped image is constant while ``moving`` is not: the
    transform maps the fixed field of view outside the moving image (or onto one value).
    ``suspects``: inputs that shaped the transform (initial transform, landmarks), named
    in the message; ``roles``: what the command calls the fixed and moving images."""
    if _varies(warped.data) or not _varies(moving.data):
        return
    data = np.asarray(warped.data)
    finite = data[np.isfinite(data)]
    if finite.size and float(np.ptp(finite)) > 0.0:
        return
    hint = f"; check {', '.join(suspects)}" if suspects else ""
    raise InputError(
        f"the result maps the {roles[0]} {fixed_source or ''} outside the {roles[1]} "
        f"{moving_source or ''} (the warped image is constant){hint}; nothing was written")
