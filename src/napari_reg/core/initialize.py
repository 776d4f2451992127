"""Initial alignments and landmark fits.

Every function that returns a matrix returns a homogeneous ``(d+1, d+1)`` numpy array that
maps **fixed** world points (RAS mm) to **moving** world points, the direction of every
registration transform in this package (``warped(x) = moving(T(x))``).

* ``init_geometry``: translation aligning the centres of the two voxel grids.
* ``init_center_of_mass``: translation aligning intensity centres of mass, with weights
  ``I - min(I)`` and world coordinates through the affine (course notes, section 8).
* ``init_moments``: principal axes of the same weights, i.e. a rotation aligning the
  axes of inertia, plus the centre-of-mass translation.
* ``fit_landmarks``: least-squares fit of paired points (Kabsch/Umeyama for rigid and
  similarity, linear least squares for affine).
"""

from __future__ import annotations

from itertools import permutations, product

import numpy as np

from .errors import NapariRegError
from .image import Volume, VolumeError

__all__ = ["LandmarkError", "init_geometry", "center_of_mass", "init_center_of_mass",
           "init_moments", "fit_landmarks", "landmark_residuals", "LANDMARK_KINDS"]

LANDMARK_KINDS = ("translation", "rigid", "similarity", "affine")
_DEGENERATE_RTOL = 1e-3  # spread along the weakest direction / strongest, below = degenerate
_EQUAL_MOMENTS_RTOL = 0.1  # principal moments closer than this may swap their ranks


class LandmarkError(NapariRegError):
    """Landmarks that cannot define the requested transform (with the reason)."""


def _translation(offset: np.ndarray) -> np.ndarray:
    m = np.eye(len(offset) + 1)
    m[:-1, -1] = offset
    return m


def _check_same_dim(fixed: Volume, moving: Volume) -> None:
    if fixed.ndim != moving.ndim:
        raise VolumeError(f"fixed image is {fixed.ndim}D but moving image is {moving.ndim}D")


def init_geometry(fixed: Volume, moving: Volume) -> np.ndarray:
    """Translation mapping the fixed grid centre onto the moving grid centre (world mm)."""
    _check_same_dim(fixed, moving)
    return _translation(moving.center_world() - fixed.center_world())


def _weights(volume: Volume, mask: Volume | np.ndarray | None) -> np.ndarray:
    """``I - min(I)`` over finite (and masked) voxels, 0 elsewhere; float32."""
    data = np.asarray(volume.data, dtype=np.float32)
    if mask is None and np.isfinite(data).all():
        # the common case, kept to two passes over the image (1 mm brain: 8.7 M voxels)
        w = data - data.min()
        return w if w.any() else np.ones_like(w)
    valid = np.isfinite(data)
    if mask is not None:
        if isinstance(mask, Volume):
            if not mask.same_grid(volume):
                raise VolumeError(f"mask '{mask.name}' is not on the grid of image "
                                  f"'{volume.name}' (shape or affine differ)")
            mask = mask.data
        mask = np.asarray(mask)
        if mask.shape != volume.shape:
            raise VolumeError(f"mask shape {mask.shape} does not match image shape "
                              f"{volume.shape}")
        valid &= mask.astype(bool)
    if not valid.any():
        raise VolumeError(f"image '{volume.name}' has no finite voxels inside the mask")
    lowest = np.min(data, where=valid, initial=np.inf)
    w = np.where(valid, data - lowest, np.float32(0))
    if not w.any():
        # a constant image has no intensity centre: fall back to the (masked) grid centre
        w = valid.astype(np.float32)
    return w


def _voxel_moments(w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Total weight, weighted mean voxel index (d,), weighted covariance in voxels (d, d).

    Why projections: sums of ``w i``, ``w i^2`` and ``w i j`` only need the 1D and 2D
    marginals of ``w``, so no (N, d) coordinate array is ever built (8.7 M voxels at 1 mm).
    """
    d = w.ndim
    idx = [np.arange(n, dtype=np.float64) for n in w.shape]
    pairs: dict[tuple[int, int], np.ndarray] = {}
    for a in range(d):
        for b in range(a + 1, d):
            others = tuple(k for k in range(d) if k not in (a, b))
            pairs[a, b] = w.sum(axis=others, dtype=np.float64) if others else w.astype(np.float64)
    marg = []
    for a in range(d):
        b = 1 if a == 0 else 0
        p = pairs[min(a, b), max(a, b)]
        marg.append(p.sum(axis=1 if a < b else 0))
    total = float(marg[0].sum())
    mean = np.array([marg[a] @ idx[a] for a in range(d)]) / total
    cov = np.empty((d, d))
    for a in range(d):
        cov[a, a] = marg[a] @ (idx[a] - mean[a]) ** 2 / total
        for b in range(a + 1, d):
            cov[a, b] = cov[b, a] = (idx[a] - mean[a]) @ pairs[a, b] @ (idx[b] - mean[b]) / total
    return total, mean, cov


def center_of_mass(volume: Volume, mask: Volume | np.ndarray | None = None) -> np.ndarray:
    """Intensity centre of mass in world RAS mm.

    ``c = sum_i (I_i - min I) x_i / sum_i (I_i - min I)`` with ``x_i`` the world position of
    voxel ``i`` (through the affine). With a mask, only voxels inside it count (and the
    minimum is taken there). Non-finite voxels are ignored; a constant image gives the
    centre of its (masked) grid.
    """
    w = _weights(volume, mask)
    _, mean, _ = _voxel_moments(w)
    return volume.voxel_to_world(mean)


def init_center_of_mass(fixed: Volume, moving: Volume,
                        fixed_mask: Volume | np.ndarray | None = None) -> np.ndarray:
    """Translation mapping the fixed centre of mass onto the moving one (world mm)."""
    _check_same_dim(fixed, moving)
    return _translation(center_of_mass(moving) - center_of_mass(fixed, fixed_mask))


def _world_moments(volume: Volume, mask) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass (world mm) and weighted covariance in world mm^2."""
    _, mean, cov = _voxel_moments(_weights(volume, mask))
    lin = volume.affine[:-1, :-1]
    return volume.voxel_to_world(mean), lin @ cov @ lin.T


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _EQUAL_MOMENTS_RTOL * max(abs(a), abs(b))


def init_moments(fixed: Volume, moving: Volume,
                 fixed_mask: Volume | np.ndarray | None = None,
                 moving_mask: Volume | np.ndarray | None = None) -> np.ndarray:
    """Rigid map aligning principal axes of inertia and centres of mass (fixed -> moving).

    ``x -> R (x - c_fixed) + c_moving``, where ``R`` sends each principal axis of the
    fixed image onto the principal axis of the same rank in the moving image (ranks by
    size of the second moment). Eigenvectors have no sign, and ranks whose moments are
    within 10 % of each other (in either image) are ambiguous, so the rule is: among all
    proper rotations (det +1) that map fixed axes to moving axes with any signs and any
    swap of such near-equal ranks, take the one closest to the identity (largest trace,
    i.e. smallest rotation angle). Weights are ``I - min(I)`` as for the centre of mass.
    """
    _check_same_dim(fixed, moving)
    c_f, cov_f = _world_moments(fixed, fixed_mask)
    c_m, cov_m = _world_moments(moving, moving_mask)
    lam_f, vec_f = np.linalg.eigh(cov_f)
    lam_m, vec_m = np.linalg.eigh(cov_m)
    d = fixed.ndim
    best, best_trace = np.eye(d), -np.inf
    for perm in permutations(range(d)):
        if any(perm[k] != k and not (_close(lam_f[k], lam_f[perm[k]])
                                     or _close(lam_m[k], lam_m[perm[k]])) for k in range(d)):
            continue
        for signs in product((1.0, -1.0), repeat=d):
            rot = (vec_m[:, list(perm)] * signs) @ vec_f.T
            if np.linalg.det(rot) > 0 and np.trace(rot) > best_trace + 1e-12:
                best, best_trace = rot, np.trace(rot)
    m = np.eye(d + 1)
    m[:d, :d] = best
    m[:d, d] = c_m - best @ c_f
    return m


# ---------------------------------------------------------------------- landmarks
def _check_pairs(fixed_points, moving_points, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind not in LANDMARK_KINDS:
        raise LandmarkError(f"unknown landmark fit '{kind}': use one of "
                            f"{', '.join(LANDMARK_KINDS)}")
    return check_landmark_pairs(fixed_points, moving_points)


def check_landmark_pairs(fixed_points, moving_points) -> tuple[np.ndarray, np.ndarray]:
    """Paired ``(N, d)`` world-mm landmark arrays as float64, or a LandmarkError saying why."""
    f = np.asarray(fixed_points, dtype=np.float64)
    m = np.asarray(moving_points, dtype=np.float64)
    for name, p in (("fixed", f), ("moving", m)):
        if p.ndim != 2 or p.shape[1] not in (2, 3):
            raise LandmarkError(f"{name} landmarks must be an (N, 2) or (N, 3) array of world "
                                f"coordinates in mm, got shape {p.shape}")
        if not np.all(np.isfinite(p)):
            bad = np.flatnonzero(~np.all(np.isfinite(p), axis=1))
            raise LandmarkError(f"{name} landmarks contain NaN or infinite coordinates "
                                f"(rows {bad.tolist()})")
    if f.shape != m.shape:
        raise LandmarkError(f"landmarks must come in pairs: {len(f)} fixed point(s) "
                            f"({f.shape[1]}D) but {len(m)} moving point(s) ({m.shape[1]}D)")
    return f, m


def _rank_problem(points: np.ndarray, need_rank: int) -> str | None:
    """Why centred points span fewer than ``need_rank`` directions, or None."""
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    scale = max(1.0, float(np.abs(points).max()))
    if need_rank >= 1 and sv[0] <= 1e-9 * scale:
        return "all coincide"
    if need_rank >= 2 and sv[1] <= _DEGENERATE_RTOL * sv[0]:
        return "are (nearly) collinear"
    if need_rank >= 3 and sv[2] <= _DEGENERATE_RTOL * sv[0]:
        return "are (nearly) coplanar"
    return None


def fit_landmarks(fixed_points: np.ndarray, moving_points: np.ndarray,
                  kind: str = "rigid") -> np.ndarray:
    """Least-squares transform mapping paired fixed points onto moving points.

    Parameters
    ----------
    fixed_points, moving_points
        ``(N, d)`` world RAS mm, row ``i`` of both is the same anatomical point.
    kind
        ``"translation"`` (>= 1 pair), ``"rigid"`` / ``"similarity"`` (>= d pairs, not all
        collinear in 3D; Kabsch/Umeyama, proper rotation only), ``"affine"`` (>= d+1 pairs
        spanning the space: not coplanar in 3D, not collinear in 2D).

    Returns
    -------
    ``(d+1, d+1)`` homogeneous matrix, fixed world mm -> moving world mm, minimising
    ``sum_i |T(fixed_i) - moving_i|^2``.

    Raises
    ------
    LandmarkError
        Unpaired or non-finite points, too few pairs, or degenerate configurations.
    """
    f, m = _check_pairs(fixed_points, moving_points, kind)
    n, d = f.shape
    need_n = {"translation": 1, "rigid": d, "similarity": d, "affine": d + 1}[kind]
    if n < need_n:
        raise LandmarkError(f"a {kind} fit in {d}D needs at least {need_n} landmark pairs, "
                            f"got {n}")
    if kind == "translation":
        return _translation(np.mean(m - f, axis=0))
    need_rank = d if kind == "affine" else d - 1
    for name, p in (("fixed", f), ("moving", m)):
        problem = _rank_problem(p, need_rank)
        if problem:
            shape = {1: "distinct", 2: "non-collinear", 3: "non-coplanar"}[need_rank]
            raise LandmarkError(f"the {name} landmarks {problem}: a {kind} fit in {d}D needs "
                                f"{need_n} or more {shape} points")
    mf, mm = f.mean(axis=0), m.mean(axis=0)
    x, y = f - mf, m - mm
    out = np.eye(d + 1)
    if kind == "affine":
        # solve [x 1] P = y in the least-squares sense, on centred points for conditioning
        lin, *_ = np.linalg.lstsq(x, y, rcond=None)
        out[:d, :d] = lin.T
    else:
        # Umeyama (1991): R = U S V^T from the cross-covariance, S fixes det(R) = +1
        u, sv, vt = np.linalg.svd(y.T @ x / n)
        s = np.ones(d)
        s[-1] = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0
        rot = (u * s) @ vt
        scale = 1.0
        if kind == "similarity":
            scale = float(sv @ s) / float(np.mean(np.sum(x * x, axis=1)))
            if scale <= 0:
                raise LandmarkError("the landmarks give a non-positive scale: the moving "
                                    "points look like a mirror image of the fixed ones")
        out[:d, :d] = scale * rot
    out[:d, d] = mm - out[:d, :d] @ mf
    return out


def landmark_residuals(matrix: np.ndarray, fixed_points: np.ndarray,
                       moving_points: np.ndarray) -> np.ndarray:
    """Distance (mm) between ``T(fixed_i)`` and ``moving_i`` for each pair, shape ``(N,)``.

    ``matrix`` is a homogeneous fixed -> moving matrix (world mm).
    """
    f, m = _check_pairs(fixed_points, moving_points, "affine")
    matrix = np.asarray(matrix, dtype=np.float64)
    d = f.shape[1]
    if matrix.shape != (d + 1, d + 1):
        raise LandmarkError(f"expected a {(d + 1, d + 1)} matrix for {d}D landmarks, "
                            f"got {matrix.shape}")
    mapped = f @ matrix[:d, :d].T + matrix[:d, d]
    return np.linalg.norm(mapped - m, axis=1)
