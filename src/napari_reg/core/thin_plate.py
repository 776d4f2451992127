"""Thin-plate-spline (TPS) warp from paired landmarks, as a :class:`Transform`.

Direction (never drift): the spline maps **fixed** world RAS mm to **moving** world RAS
mm, like every registration transform here, so ``warped(x) = moving(T(x))``.

The model (Bookstein 1989; course notes, landmark-based registration)::

    T(x) = a + A x + sum_i w_i U(|x - p_i|)

with ``p_i`` the fixed landmarks, ``U(r) = r`` in 3D and ``U(r) = r^2 log r`` in 2D (the
fundamental solutions of the biharmonic operator, so ``T`` minimises the bending
energy among all maps that interpolate the landmarks). ``a + A x`` is the affine part;
the weights ``w_i`` satisfy ``sum w_i = 0`` and ``sum w_i p_i^T = 0`` so that the
non-affine part carries no affine motion. With ``smoothing = 0`` the map is exact at
every landmark; ``smoothing > 0`` (mm for ``U = r``) adds ``smoothing * I`` to the
kernel matrix and trades exactness for a smoother map (useful with noisy clicks).

Degenerate input fails loudly: the affine part needs ``d + 1`` landmarks spanning the
space (not all collinear in 2D, not all coplanar in 3D); without that the linear system
is singular and any "solution" would be arbitrary.
"""

from __future__ import annotations

import numpy as np

from .initialize import LandmarkError, check_landmark_pairs
from .transforms.base import Transform

__all__ = ["ThinPlateSpline", "fit_thin_plate"]

_DEGENERATE_RTOL = 1e-3  # weakest / strongest singular value of the centred points
_CHUNK = 65536  # points per kernel block: bounds memory at chunk x n_landmarks doubles


def _kernel(r: np.ndarray, ndim: int) -> np.ndarray:
    """The TPS radial basis ``U(r)`` for ``ndim`` dimensions (``r`` in scaled units)."""
    if ndim == 3:
        return r
    with np.errstate(divide="ignore", invalid="ignore"):
        out = r * r * np.log(r)
    return np.where(r > 0, out, 0.0)


def _check(fixed_points: np.ndarray, moving_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, m = check_landmark_pairs(fixed_points, moving_points)
    n, d = f.shape
    if n < d + 1:
        raise LandmarkError(f"a thin-plate spline in {d}D needs at least {d + 1} landmark "
                            f"pairs, got {n}")
    for name, p in (("fixed", f), ("moving", m)):
        sv = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
        tiny = sv[0] <= 1e-9 * max(1.0, float(np.abs(p).max()))
        if tiny or sv[d - 1] <= _DEGENERATE_RTOL * sv[0]:
            shape = "collinear" if d == 2 else "coplanar"
            raise LandmarkError(f"the {name} landmarks are (nearly) {shape}: a thin-plate "
                                f"spline in {d}D needs {d + 1} or more points that are not "
                                f"all {shape}")
    # Two fixed landmarks at one place with different targets cannot be interpolated.
    diff = np.linalg.norm(f[:, None, :] - f[None, :, :], axis=-1)
    i, j = np.nonzero(np.triu(diff < 1e-6, k=1))
    if len(i):
        raise LandmarkError(f"fixed landmarks {int(i[0])} and {int(j[0])} (0-based rows) are "
                            "at the same position; remove one of them")
    return f, m


class ThinPlateSpline(Transform):
    """A thin-plate spline fixed world RAS mm -> moving world RAS mm (see module docstring).

    Build with :func:`fit_thin_plate`. Attributes: ``fixed_points`` / ``moving_points``
    (the landmarks, world mm), ``smoothing`` (0 = exact interpolation),
    ``affine_matrix`` (homogeneous ``(d+1, d+1)`` affine part, fixed -> moving).
    """

    def __init__(self, fixed_points: np.ndarray, moving_points: np.ndarray,
                 smoothing: float = 0.0):
        f, m = _check(fixed_points, moving_points)
        if not np.isfinite(smoothing) or smoothing < 0:
            raise LandmarkError(f"thin-plate smoothing must be >= 0 (mm), got {smoothing}")
        self.fixed_points, self.moving_points = f, m
        self.smoothing = float(smoothing)
        n, d = f.shape
        self.ndim = d
        # Centre and scale for conditioning: |x| ~ 1 keeps the kernel and the affine
        # columns of the system at similar magnitudes.
        self._center = f.mean(axis=0)
        self._scale = float(np.sqrt(np.mean(np.sum((f - self._center) ** 2, axis=1)))) or 1.0
        q = (f - self._center) / self._scale
        k = _kernel(np.linalg.norm(q[:, None, :] - q[None, :, :], axis=-1), d)
        # Regularised fit (Wahba): the bending energy is w^T K w for r^2 log r (2D) but
        # -w^T K w for U = r (3D, where -r is the conditionally positive kernel), so the
        # ridge enters with the kernel's sign. smoothing is in mm; in scaled units U = r
        # shrinks by 1/scale (2D uses the same division, r^2 log r has no single scale).
        sign = 1.0 if d == 2 else -1.0
        k += np.eye(n) * (sign * self.smoothing / self._scale)
        p = np.hstack([np.ones((n, 1)), q])
        system = np.zeros((n + d + 1, n + d + 1))
        system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
        rhs = np.zeros((n + d + 1, d))
        rhs[:n] = m
        try:
            sol = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:
            raise LandmarkError("the thin-plate system is singular: the landmarks do not "
                                "determine a spline (duplicates or degenerate layout?)") from None
        if not np.all(np.isfinite(sol)):
            raise LandmarkError("the thin-plate fit produced non-finite weights "
                                "(degenerate landmark layout)")
        self._weights = sol[:n]  # (n, d)
        self._lin = sol[n:]  # (d + 1, d): row 0 offset, rows 1.. linear in scaled coords
        self._q = q

    @property
    def affine_matrix(self) -> np.ndarray:
        """Homogeneous affine part (fixed world mm -> moving world mm)."""
        d = self.ndim
        lin = self._lin[1:].T / self._scale  # y = off + L (x - c) / s
        out = np.eye(d + 1)
        out[:d, :d] = lin
        out[:d, d] = self._lin[0] - lin @ self._center
        return out

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, d)`` fixed world points (mm) to moving world points (mm)."""
        x = np.asarray(points, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.ndim:
            raise ValueError(f"expected (N, {self.ndim}) points, got {x.shape}")
        out = np.empty_like(x)
        for s in range(0, len(x), _CHUNK):
            q = (x[s:s + _CHUNK] - self._center) / self._scale
            r = np.sqrt(np.maximum(
                np.sum(q * q, axis=1)[:, None] - 2.0 * q @ self._q.T
                + np.sum(self._q * self._q, axis=1)[None, :], 0.0))
            out[s:s + _CHUNK] = (self._lin[0] + q @ self._lin[1:]
                                 + _kernel(r, self.ndim) @ self._weights)
        return out

    def inverse(self) -> ThinPlateSpline:
        """The spline fitted the other way (moving -> fixed): exact at the landmarks,
        an approximation of the true inverse between them."""
        return ThinPlateSpline(self.moving_points, self.fixed_points, self.smoothing)

    def bending_energy(self) -> float:
        """``trace(W^T K W)`` in scaled units: 0 for a purely affine map (a size check)."""
        n, d = self._q.shape
        k = _kernel(np.linalg.norm(self._q[:, None, :] - self._q[None, :, :], axis=-1), d)
        return float(np.abs(np.trace(self._weights.T @ k @ self._weights)))

    def __repr__(self) -> str:
        return (f"ThinPlateSpline({len(self.fixed_points)} landmarks, {self.ndim}D, "
                f"smoothing={self.smoothing:g} mm)")


def fit_thin_plate(fixed_points: np.ndarray, moving_points: np.ndarray,
                   smoothing: float = 0.0) -> ThinPlateSpline:
    """Fit a thin-plate spline with ``T(fixed_i) = moving_i`` (exactly when ``smoothing=0``).

    ``fixed_points`` / ``moving_points``: paired ``(N, d)`` world RAS mm, N >= d + 1, not
    all collinear (2D) / coplanar (3D). Raises :class:`LandmarkError` otherwise.
    """
    return ThinPlateSpline(fixed_points, moving_points, smoothing)
